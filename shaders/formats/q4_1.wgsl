// Q4_1: blocks of 32 = f16 d, f16 m, 16 bytes of nibbles as Q4_0 (20 bytes); x = d * q + m.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 2u) * 20u;
    return w_affine(w_fields8(b + 4u + (i & 1u) * 8u, (i & 2u) * 2u, 4u), w_f16(b), w_f16(b + 2u));
}
