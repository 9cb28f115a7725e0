// Q5_K: super-blocks of 256 = f16 d, f16 dmin, 12 bytes of scales and mins (as Q4_K), 32 bytes
// qh, 128 bytes of nibbles (as Q4_K) (176 bytes); bit s of qh[l] is the fifth bit of element l of
// sub-block s; x = (d * sc) * q - dmin * m.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 5u) * 176u;
    let s = (i & 31u) >> 2u;
    let l0 = (i & 3u) * 8u;
    let dm = unpack2x16float(w_u32(b));
    let sm = kquant_scale_min(b + 4u, s);
    let lo = w_fields8(b + 48u + 32u * (s >> 1u) + l0, 4u * (s & 1u), 4u);
    let hi = w_fields8(b + 16u + l0, s, 1u);
    var q: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        q[k] = lo[k] + 16.0 * hi[k];
    }
    return w_affine(q, dm.x * sm.x, -(dm.y * sm.y));
}
