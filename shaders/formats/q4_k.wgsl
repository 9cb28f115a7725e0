// Q4_K: super-blocks of 256 = f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of
// nibbles (144 bytes). Sub-block s (32 elements) is the low (s even) or high nibbles of
// qs[32(s / 2) ..]; x = (d * sc) * q - dmin * m.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 5u) * 144u;
    let s = (i & 31u) >> 2u;
    let dm = unpack2x16float(w_u32(b));
    let sm = kquant_scale_min(b + 4u, s);
    let q = w_fields8(b + 16u + 32u * (s >> 1u) + (i & 3u) * 8u, 4u * (s & 1u), 4u);
    return w_affine(q, dm.x * sm.x, -(dm.y * sm.y));
}
