// bfloat16 weights: eight per word, element 2j in the low half of u32 j; a bf16 is the top half
// of an f32, so widening is a shift.
fn w_load(i: u32) -> array<f32, 8> {
    let v = w[i];
    let a = unpack_bf16x2(v.x);
    let b = unpack_bf16x2(v.y);
    let c = unpack_bf16x2(v.z);
    let d = unpack_bf16x2(v.w);
    return array<f32, 8>(a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y);
}
