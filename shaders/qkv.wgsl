// Everything between the fused q|k|v projection and attention, in one dispatch (DESIGN.md
// principle 4): for each token and each head of the fused row [q heads | k heads | v heads]:
//   q, k: optional per-head RMSNorm (Qwen3 q_norm / k_norm), optional clamp (OLMoE clip_qkv),
//         RoPE at position step[0] + t (half-split or interleaved, amplitude af);
//   q stays in place for attention; k and v go to the KV cache at that position.
// One workgroup per (token, head); the head's values live in workgroup memory.
// The caches are u32 words: f32 bits, or with KV16 f16 pairs (element 2i in the low half of word
// i); each invocation writes whole words (a head starts at an even element: head_dim is even).

struct Params {
    tokens: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    row_stride: u32,
    max_seq: u32,
    eps: f32,
    clip: f32,
    af: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

override WG: u32 = 64u;
override QK_NORM: bool = false;
override CLIP: bool = false;
override INTERLEAVED: bool = false;
override NORM_DTYPE: u32 = 0u;
override KV16: bool = false;
// The largest head this kernel holds in workgroup memory.
const MAX_HEAD: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read> step: array<u32>;
@group(0) @binding(4) var<storage, read> q_norm: array<u32>;
@group(0) @binding(5) var<storage, read> k_norm: array<u32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<u32>;

var<workgroup> hv: array<f32, MAX_HEAD>;
var<workgroup> red: array<f32, WG>;

fn norm_weight(is_q: bool, i: u32) -> f32 {
    var word: u32;
    if NORM_DTYPE == DT_F32 {
        word = select(k_norm[i], q_norm[i], is_q);
        return bitcast<f32>(word);
    }
    word = select(k_norm[i >> 1u], q_norm[i >> 1u], is_q);
    return pick_half(word, i, NORM_DTYPE);
}

fn sum_squares(lid: u32) -> f32 {
    var acc = 0.0;
    for (var i = lid; i < p.head_dim; i += WG) {
        acc += hv[i] * hv[i];
    }
    red[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    return red[0];
}

@compute @workgroup_size(WG)
fn prepare_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let slots = p.heads + 2u * p.kv_heads;
    let g = flat_group(wid);
    let t = g / slots;
    let slot = g % slots;
    if t >= p.tokens {
        return;
    }
    let hd = p.head_dim;
    let base = t * p.row_stride + slot * hd;
    for (var i = lid; i < hd; i += WG) {
        hv[i] = qkv[base + i];
    }
    workgroupBarrier();
    let is_q = slot < p.heads;
    let is_k = !is_q && slot < p.heads + p.kv_heads;
    // Every invocation takes part in the reduction (barriers must be uniform), v heads included.
    if QK_NORM {
        let scale = inverseSqrt(sum_squares(lid) / f32(hd) + p.eps);
        if is_q || is_k {
            for (var i = lid; i < hd; i += WG) {
                hv[i] = hv[i] * scale * norm_weight(is_q, i);
            }
        }
        workgroupBarrier();
    }
    if CLIP {
        for (var i = lid; i < hd; i += WG) {
            hv[i] = clamp(hv[i], -p.clip, p.clip);
        }
        workgroupBarrier();
    }
    let pos = step[0] + t;
    if is_q || is_k {
        let half = hd / 2u;
        for (var i = lid; i < half; i += WG) {
            let cs = cos_sin(f32(pos) * inv_freq[i]) * p.af;
            var a = i;
            var b = i + half;
            if INTERLEAVED {
                a = 2u * i;
                b = a + 1u;
            }
            let xa = hv[a];
            let xb = hv[b];
            hv[a] = xa * cs.x - xb * cs.y;
            hv[b] = xb * cs.x + xa * cs.y;
        }
        workgroupBarrier();
    }
    if is_q {
        for (var i = lid; i < hd; i += WG) {
            qkv[base + i] = hv[i];
        }
        return;
    }
    if pos >= p.max_seq {
        return;
    }
    let kvh = select(slot - p.heads - p.kv_heads, slot - p.heads, is_k);
    let dst = (pos * p.kv_heads + kvh) * hd;
    if KV16 {
        // Clamped to the finite f16 range, where pack2x16float is defined.
        let lim = vec2<f32>(65504.0);
        for (var i = lid; i < hd / 2u; i += WG) {
            let w = pack2x16float(clamp(vec2<f32>(hv[2u * i], hv[2u * i + 1u]), -lim, lim));
            if is_k {
                k_cache[dst / 2u + i] = w;
            } else {
                v_cache[dst / 2u + i] = w;
            }
        }
        return;
    }
    for (var i = lid; i < hd; i += WG) {
        if is_k {
            k_cache[dst + i] = bitcast<u32>(hv[i]);
        } else {
            v_cache[dst + i] = bitcast<u32>(hv[i]);
        }
    }
}
