// IEEE half weights: eight per word, element 2j in the low half of u32 j.
fn w_load(i: u32) -> array<f32, 8> {
    let v = w[i];
    let a = unpack2x16float(v.x);
    let b = unpack2x16float(v.y);
    let c = unpack2x16float(v.z);
    let d = unpack2x16float(v.w);
    return array<f32, 8>(a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y);
}
