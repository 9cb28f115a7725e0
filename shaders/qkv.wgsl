// Everything between the fused q|k|v projection and attention, in one dispatch (DESIGN.md
// principle 4): for each token and each head of the fused row [q heads | k heads | v heads]:
//   q, k: optional RMSNorm, per head (Qwen3 q_norm / k_norm) or over all q heads and over all k
//         heads (OLMoE), optional clamp (OLMoE clip_qkv), RoPE at position token_pos(t)
//         (half-split or interleaved, amplitude af);
//   q stays in place for attention; k and v go to the KV cache at that position.
// prepare_qkv: one workgroup per (token, head). prepare_qkv_full (OLMoE's whole-projection norms):
// one workgroup per (token, section q / k / v), which sums its section's squares before it writes
// any of it, then takes its heads in turn. A head's values live in workgroup memory.
// The caches are u32 words: f32 bits, or with KV16 f16 pairs (element 2i in the low half of word
// i), or with KV8 signed bytes in blocks scaled by their largest magnitude (src/kernels/attention.rs
// KvDtype); each invocation writes whole words (heads start on whole words and blocks).

// Params, bindings, MAX_HEAD and overrides: src/kernels/qkv.rs.

var<workgroup> hv: array<f32, MAX_HEAD>;
// Q8: each block's largest magnitude (blocks of at least 4).
var<workgroup> q8a: array<f32, MAX_HEAD / 4u>;
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

fn wg_sum(v: f32, lid: u32) -> f32 {
    workgroupBarrier();
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    return red[0];
}

fn sum_squares(lid: u32) -> f32 {
    var acc = 0.0;
    for (var i = lid; i < p.head_dim; i += WG) {
        acc += hv[i] * hv[i];
    }
    return wg_sum(acc, lid);
}

@compute @workgroup_size(WG)
fn prepare_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let slots = p.heads + 2u * p.kv_heads;
    let g = flat_group(wid);
    let t = g / slots;
    if t >= p.tokens {
        return;
    }
    head(t, g % slots, lid, 1.0);
}

@compute @workgroup_size(WG)
fn prepare_qkv_full(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = flat_group(wid);
    let t = g / 3u;
    let section = g % 3u;
    if t >= p.tokens {
        return;
    }
    let first = select(select(p.heads + p.kv_heads, p.heads, section == 1u), 0u, section == 0u);
    let count = select(p.kv_heads, p.heads, section == 0u);
    // The section's RMS before any of it is overwritten (only this workgroup touches it).
    let start = t * p.row_stride + first * p.head_dim;
    let len = count * p.head_dim;
    var acc = 0.0;
    for (var i = lid; i < len; i += WG) {
        let v = qkv[start + i];
        acc += v * v;
    }
    let scale = inverseSqrt(wg_sum(acc, lid) / f32(len) + p.eps);
    for (var j = 0u; j < count; j++) {
        head(t, first + j, lid, scale);
    }
}

// One head of token t's fused row: norm (per head, or with the section's `full_scale`), clamp,
// RoPE, then q back in place, k and v into the caches.
fn head(t: u32, slot: u32, lid: u32, full_scale: f32) {
    let hd = p.head_dim;
    let base = t * p.row_stride + slot * hd;
    // The previous head (prepare_qkv_full) may still be reading hv.
    workgroupBarrier();
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
    if FULL_NORM {
        if is_q || is_k {
            let offset = select(slot - p.heads, slot, is_q) * hd;
            for (var i = lid; i < hd; i += WG) {
                hv[i] = hv[i] * full_scale * norm_weight(is_q, offset + i);
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
    let pos = token_pos(t);
    let row = token_base(t) + pos;
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
    if row >= p.max_seq {
        return;
    }
    let kvh = select(slot - p.heads - p.kv_heads, slot - p.heads, is_k);
    let dst = (row * p.kv_heads + kvh) * hd;
    if KV8 {
        // Each block's largest magnitude (its scale), then whole words of four signed bytes.
        let block = 1u << p.q8_shift;
        for (var b = lid; b < hd / block; b += WG) {
            var a = 0.0;
            for (var i = 0u; i < block; i++) {
                a = max(a, abs(hv[b * block + i]));
            }
            q8a[b] = a;
            let at = p.q8_scales + (dst >> p.q8_shift) + b;
            if is_k {
                k_cache[at] = bitcast<u32>(a);
            } else {
                v_cache[at] = bitcast<u32>(a);
            }
        }
        workgroupBarrier();
        for (var i = lid; i < hd / 4u; i += WG) {
            let a = q8a[(4u * i) >> p.q8_shift];
            let x = vec4<f32>(hv[4u * i], hv[4u * i + 1u], hv[4u * i + 2u], hv[4u * i + 3u]);
            let w = pack4x8snorm(select(vec4<f32>(0.0), x / a, a > 0.0));
            if is_k {
                k_cache[dst / 4u + i] = w;
            } else {
                v_cache[dst / 4u + i] = w;
            }
        }
        return;
    }
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
