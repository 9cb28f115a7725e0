// IQ4_XS: super-blocks of 256 = f16 d, u16 scales_h, 4 bytes scales_l, 128 bytes of nibbles (136
// bytes). Sub-block s has the 6-bit scale ls (nibble s of scales_l, bits 2s.. of scales_h on top)
// and its nibbles in qs[16s ..] as IQ4_NL's; x = (d * (ls - 32)) * kvalues[q].
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 5u) * 136u;
    let s = (i & 31u) >> 2u;
    let head = w_u32(b);
    let d = unpack2x16float(head).x;
    let lo = (w_byte(b + 4u + (s >> 1u)) >> (4u * (s & 1u))) & 15u;
    let hi = (head >> (16u + 2u * s)) & 3u;
    let dl = d * f32(i32(lo | (hi << 4u)) - 32);
    return iq4_values(w_fields8(b + 8u + 16u * s + (i & 1u) * 8u, (i & 2u) * 2u, 4u), dl);
}
