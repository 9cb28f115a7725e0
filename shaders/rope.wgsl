// Rotary position embedding, in place (MODELS.md §2). `x` is viewed as rows of `row_stride` floats
// (one per token), each holding `heads` heads of `head_stride` floats; inside every head the
// `2*half` values from `rot_offset` on are rotated. Token t sits at position step[0] + t (the step
// buffer, so a recorded dispatch replays at every decode position).
//   half-split (NeoX):    pair (i, i + half) turns by pos * inv[i]
//   interleaved (GPT-J):  pair (2i, 2i + 1) turns by pos * inv[i]
// cos and sin carry the amplitude `af` (yarn's attention factor). One invocation per pair.

struct Params {
    tokens: u32,
    heads: u32,
    head_stride: u32,
    row_stride: u32,
    rot_offset: u32,
    half: u32,
    af: f32,
    _pad: u32,
}

override WG: u32 = 64u;
override INTERLEAVED: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;

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

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = flat_group(wid) * WG + lid;
    let pairs_per_token = p.heads * p.half;
    if id >= p.tokens * pairs_per_token {
        return;
    }
    let t = id / pairs_per_token;
    let rem = id - t * pairs_per_token;
    let head = rem / p.half;
    let i = rem - head * p.half;
    let pos = step[0] + t;
    let cs = cos_sin(f32(pos) * inv_freq[i]) * p.af;
    let base = t * p.row_stride + head * p.head_stride + p.rot_offset;
    var a = base + i;
    var b = base + i + p.half;
    if INTERLEAVED {
        a = base + 2u * i;
        b = a + 1u;
    }
    let xa = x[a];
    let xb = x[b];
    x[a] = xa * cs.x - xb * cs.y;
    x[b] = xb * cs.x + xa * cs.y;
}
