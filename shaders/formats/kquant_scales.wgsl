// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j (0..8) of a Q4_K / Q5_K
// super-block from its 12 packed bytes at offset b.
fn kquant_scale_min(b: u32, j: u32) -> vec2<f32> {
    if j < 4u {
        return vec2<f32>(f32(w_byte(b + j) & 63u), f32(w_byte(b + j + 4u) & 63u));
    }
    let q = w_byte(b + j + 4u);
    let sc = (q & 15u) | ((w_byte(b + j - 4u) >> 6u) << 4u);
    let m = (q >> 4u) | ((w_byte(b + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}
