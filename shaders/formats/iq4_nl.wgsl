// IQ4_NL: blocks of 32 = f16 d, 16 bytes of nibbles as Q4_0 (18 bytes); x = d * kvalues[q].
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 2u) * 18u;
    return iq4_values(w_fields8(b + 2u + (i & 1u) * 8u, (i & 2u) * 2u, 4u), w_f16(b));
}
