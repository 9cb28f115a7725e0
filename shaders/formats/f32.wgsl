// f32 weights: four per word.
fn w_load(i: u32) -> array<f32, 8> {
    let f = bitcast<vec4<f32>>(w[i]);
    return array<f32, 8>(f.x, f.y, f.z, f.w, 0.0, 0.0, 0.0, 0.0);
}
