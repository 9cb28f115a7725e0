// Q2_K: super-blocks of 256 = 16 scale bytes (low nibble scale, high nibble min, per 16
// elements), 64 bytes of 2-bit quants, f16 d, f16 dmin (84 bytes). Element 128n + 32j + 16h + l
// is bits 2j.. of qs[32n + 16h + l], scale byte 8n + 2j + h; x = (d * sc) * q - dmin * m.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 5u) * 84u;
    let e = (i & 31u) * 8u;
    let n = e >> 7u;
    let j = (e >> 5u) & 3u;
    let h = (e >> 4u) & 1u;
    let sc = w_byte(b + 8u * n + 2u * j + h);
    let dm = unpack2x16float(w_u32(b + 80u));
    let q = w_fields8(b + 16u + 32u * n + 16u * h + (e & 15u), 2u * j, 2u);
    return w_affine(q, dm.x * f32(sc & 15u), -(dm.y * f32(sc >> 4u)));
}
