// Q6_K: super-blocks of 256 = 128 bytes ql (low nibbles), 64 bytes qh (2 high bits each), 16 i8
// scales, f16 d (210 bytes). Element 128n + 32k + l: low nibble of ql[64n + 32(k % 2) + l] (k < 2)
// or its high nibble, bits 2k.. of qh[32n + l], scale 8n + l / 16 + 2k; x = (d * sc) * (q - 32).
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 5u) * 210u;
    let e = (i & 31u) * 8u;
    let n = e >> 7u;
    let k = (e >> 5u) & 3u;
    let l0 = e & 31u;
    let lo = w_fields8(b + 64u * n + 32u * (k & 1u) + l0, 4u * (k >> 1u), 4u);
    let hi = w_fields8(b + 128u + 32u * n + l0, 2u * k, 2u);
    let dl = w_f16(b + 208u) * w_i8(b + 192u + 8u * n + (l0 >> 4u) + 2u * k);
    var v: array<f32, 8>;
    for (var c = 0u; c < 8u; c++) {
        v[c] = dl * (lo[c] + 16.0 * hi[c] - 32.0);
    }
    return v;
}
