// Q5_1: blocks of 32 = f16 d, f16 m, u32 qh, 16 bytes of nibbles (24 bytes), as Q5_0; x = d * q + m.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 2u) * 24u;
    let d = w_f16(b);
    let m = w_f16(b + 2u);
    let qh = w_u32(b + 4u) >> ((i & 3u) * 8u);
    var q = w_fields8(b + 8u + (i & 1u) * 8u, (i & 2u) * 2u, 4u);
    for (var k = 0u; k < 8u; k++) {
        q[k] = d * (q[k] + f32(((qh >> k) & 1u) << 4u)) + m;
    }
    return q;
}
