// Prepended to every shader family, after the constants Rust shares with it (GRID_X, the DT_*
// weight precision codes: src/gpu/shader.rs, prelude_consts).

// Dispatches larger than the per-dimension limit spill into y; a kernel's flat group index is this.
fn flat_group(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * GRID_X;
}

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

// π/2 split so that k * C1 and k * C2 are exact in f32 for k < 2^17 (angles up to ~2e5 radians,
// i.e. positions past 131072 at inv = 1); the remainder is then good to ~1e-6 absolute.
const C1: f32 = 1.5625;
const C2: f32 = 0.0081787109375;
const C3: f32 = 0.00011761585483327508;
const C4: f32 = 2.5633440682570896e-12;

// (cos a, sin a) of the f32 angle `a` with our own range reduction and Cephes polynomials, so the
// result does not depend on how a driver evaluates cos/sin far from zero (Vulkan only bounds them
// on [-π, π]). HF computes the angle in f32 and then an accurate f32 cos/sin; this matches that.
fn cos_sin(a: f32) -> vec2<f32> {
    let k = round(a * 0.636619772367581343);
    let r = (((a - k * C1) - k * C2) - k * C3) - k * C4;
    let z = r * r;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z - 0.5 * z + 1.0;
    switch (i32(k) & 3) {
        case 0: { return vec2<f32>(c, s); }
        case 1: { return vec2<f32>(-s, c); }
        case 2: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}
