// Prepended to every shader family (src/kernels/mod.rs: with_prelude).

// Dispatches larger than the per-dimension limit spill into y; a kernel's flat group index is this.
const GRID_X: u32 = 65535u;
fn flat_group(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * GRID_X;
}

// Weight precision codes (src/gpu/buffer.rs DType::code).
const DT_F32: u32 = 0u;
const DT_F16: u32 = 1u;
const DT_BF16: u32 = 2u;

// Two 16-bit weights packed in one word, element 2i in the low half; bf16 widens by a shift.
fn unpack_bf16x2(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}
fn unpack_half2(w: u32, dtype: u32) -> vec2<f32> {
    if dtype == DT_F16 {
        return unpack2x16float(w);
    }
    return unpack_bf16x2(w);
}
// Element `i` of a row of packed words, given the word holding it.
fn pick_half(w: u32, i: u32, dtype: u32) -> f32 {
    let p = unpack_half2(w, dtype);
    return select(p.x, p.y, (i & 1u) == 1u);
}
