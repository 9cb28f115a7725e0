// Q8_0: blocks of 32 = f16 d, 32 x i8 q (34 bytes); x = d * q. Word i: bytes 8(i % 4) .. of the
// quants of block i / 4.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 2u) * 34u;
    return w_affine(w_i8x8(b + 2u + (i & 3u) * 8u), w_f16(b), 0.0);
}
