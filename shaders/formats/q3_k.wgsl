// Q3_K: super-blocks of 256 = 32 bytes hmask, 64 bytes of 2-bit low quants, 12 bytes of 6-bit
// scales, f16 d (110 bytes). Element 128n + 32j + 16h + l: bits 2j.. of qs[32n + 16h + l], high
// bit 4n + j of hmask[16h + l] (clear: -4), scale s = 8n + 2j + h (low 4 bits from the nibbles of
// bytes 0..8, high 2 from bytes 8..12, minus 32); x = (d * sc) * q.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 5u) * 110u;
    let e = (i & 31u) * 8u;
    let n = e >> 7u;
    let j = (e >> 5u) & 3u;
    let h = (e >> 4u) & 1u;
    let l0 = e & 15u;
    let s = 8u * n + 2u * j + h;
    let lo = (w_byte(b + 96u + (s & 7u)) >> (4u * (s >> 3u))) & 15u;
    let hi = (w_byte(b + 104u + (s & 3u)) >> (2u * (s >> 2u))) & 3u;
    let dl = w_f16(b + 108u) * (f32(lo | (hi << 4u)) - 32.0);
    let low = w_fields8(b + 32u + 32u * n + 16u * h + l0, 2u * j, 2u);
    let high = w_fields8(b + 16u * h + l0, 4u * n + j, 1u);
    var v: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        v[k] = dl * (low[k] - 4.0 + 4.0 * high[k]);
    }
    return v;
}
