// Q5_0: blocks of 32 = f16 d, u32 qh (bit j: the fifth bit of element j), 16 bytes of nibbles as
// Q4_0 (22 bytes); x = d * (q - 16). Word i holds elements 8(i % 4) .. 8(i % 4) + 8.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 2u) * 22u;
    let d = w_f16(b);
    let qh = w_bytes4(b + 2u) >> ((i & 3u) * 8u);
    var q = w_fields8(b + 6u + (i & 1u) * 8u, (i & 2u) * 2u, 4u);
    for (var k = 0u; k < 8u; k++) {
        q[k] = d * (q[k] + f32(((qh >> k) & 1u) << 4u) - 16.0);
    }
    return q;
}
