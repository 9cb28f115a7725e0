// Causal attention over a KV cache, one kernel for prefill and decode, GQA / MQA / absorbed MLA
// (MODELS.md §1, §6.5, §7). One workgroup per (query token, head). Query t sits at position
// pos = step[0] + t and sees cache positions lo..=pos, lo = pos + 1 - window with a sliding window.
// Keys are walked in blocks of WG with an online (flash-style) softmax: each invocation scores one
// key of the block, the block max and sum are workgroup reductions, and each invocation owns a
// slice of the output dims, rescaled by exp(m_old - m_new) whenever the running max grows.
// gpt-oss sinks add exp(sink[h] - m) to the denominator and contribute no value.
//
// Cache addressing (floats): k[j, g, d] = j*k_stride + g*k_head_stride + d,
// v[j, g, d] = v_offset + j*v_stride + g*v_head_stride + d. The v binding may be the k buffer
// (MLA: values are the first r floats of each [c | k_pe] row).
//
// The subgroup reductions are marked for `without_subgroups` (src/kernels/mod.rs).

struct Params {
    tokens: u32,
    heads: u32,
    // Query heads per KV head.
    group: u32,
    k_dim: u32,
    v_dim: u32,
    q_row_stride: u32,
    q_head_stride: u32,
    k_stride: u32,
    k_head_stride: u32,
    v_stride: u32,
    v_head_stride: u32,
    v_offset: u32,
    // 0: no sliding window.
    window: u32,
    max_seq: u32,
    scale: f32,
    _pad: u32,
}

override WG: u32 = 64u;
// ceil(k_dim / 4): the query is kept as vec4s.
override KQ: u32 = 32u;
override VMAX: u32 = 128u;
override SINKS: bool = false;
override SG: bool = false;
// k_dim, k_stride and k_head_stride are multiples of 4: score with vec4 loads through kc4.
override VEC4: bool = false;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read> sinks: array<f32>;
@group(0) @binding(5) var<storage, read> step: array<u32>;
@group(0) @binding(6) var<storage, read_write> o: array<f32>;
// The key buffer again, viewed as vec4s (bound to the same buffer).
@group(0) @binding(10) var<storage, read> kc4: array<vec4<f32>>;

// Finite stand-in for -inf: WGSL lets implementations assume no infinities.
const NEG_BIG: f32 = -3.0e38;

var<workgroup> qs: array<vec4<f32>, KQ>;
var<workgroup> acc: array<f32, VMAX>;
var<workgroup> ps: array<f32, WG>;
var<workgroup> red: array<f32, WG>;

// Set by the subgroup entry point.
var<private> sg_lane: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;

// Workgroup-wide max / sum (WG is a power of two). Every invocation gets the result.
fn red_max(x: f32, lid: u32) -> f32 {
    if SG { return red_max_sg(x); } // subgroups-only
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn red_sum(x: f32, lid: u32) -> f32 {
    if SG { return red_sum_sg(x); } // subgroups-only
    red[lid] = x;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// q . k for the key starting at float `kb`.
fn score(kb: u32) -> f32 {
    if VEC4 {
        let kb4 = kb >> 2u;
        var acc4 = vec4<f32>(0.0);
        for (var i = 0u; i < KQ; i++) {
            acc4 += qs[i] * kc4[kb4 + i];
        }
        return (acc4.x + acc4.y) + (acc4.z + acc4.w);
    }
    var dot = 0.0;
    for (var d = 0u; d < p.k_dim; d++) {
        dot += qs[d >> 2u][d & 3u] * kc[kb + d];
    }
    return dot;
}

fn attend(gid: u32, lid: u32) {
    if gid >= p.tokens * p.heads {
        return;
    }
    let t = gid / p.heads;
    let h = gid - t * p.heads;
    let g = h / p.group;
    let pos = step[0] + t;
    // Clamped so a position past the cache reads nothing out of bounds (the host checks T <= max_seq).
    let hi = min(pos, p.max_seq - 1u);
    var lo = 0u;
    if p.window > 0u && pos + 1u > p.window {
        lo = pos + 1u - p.window;
    }

    // The query, pre-scaled, is read by every invocation for every key: keep it in workgroup memory.
    let qb = t * p.q_row_stride + h * p.q_head_stride;
    for (var d = lid; d < 4u * KQ; d += WG) {
        // Zero padding past k_dim keeps the last vec4 exact.
        var x = 0.0;
        if d < p.k_dim {
            x = q[qb + d] * p.scale;
        }
        qs[d >> 2u][d & 3u] = x;
    }
    for (var d = lid; d < p.v_dim; d += WG) {
        acc[d] = 0.0;
    }
    workgroupBarrier();

    let kh = g * p.k_head_stride;
    let vh = p.v_offset + g * p.v_head_stride;
    var m = NEG_BIG;
    var l = 0.0;
    for (var base = lo; base <= hi; base += WG) {
        let j = base + lid;
        let valid = j <= hi;
        var s = NEG_BIG;
        if valid {
            s = score(j * p.k_stride + kh);
        }
        let m_new = max(m, red_max(s, lid));
        let pj = select(0.0, exp(s - m_new), valid);
        let corr = exp(m - m_new);
        ps[lid] = pj;
        // red_sum's barriers also publish ps.
        l = l * corr + red_sum(pj, lid);
        let n = min(WG, hi + 1u - base);
        for (var d = lid; d < p.v_dim; d += WG) {
            var a = acc[d] * corr;
            var vi = base * p.v_stride + vh + d;
            for (var i = 0u; i < n; i++) {
                a += ps[i] * vc[vi];
                vi += p.v_stride;
            }
            acc[d] = a;
        }
        // ps is rewritten by the next block.
        workgroupBarrier();
        m = m_new;
    }

    var fin = 1.0;
    var total = l;
    if SINKS {
        // Rescale to max(m, sink) so a large sink cannot overflow exp.
        let sk = sinks[h];
        let m2 = max(m, sk);
        fin = exp(m - m2);
        total = l * fin + exp(sk - m2);
    }
    let inv = select(0.0, fin / total, total > 0.0);
    let ob = (t * p.heads + h) * p.v_dim;
    for (var d = lid; d < p.v_dim; d += WG) {
        o[ob + d] = acc[d] * inv;
    }
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    attend(flat_group(wid), lid);
}

// Copy `tokens` rows of `width` floats (source rows `src_stride` apart from `src_offset`) into the
// cache rows at positions step[0] + t (`dst_stride` apart, from `dst_offset`).
struct StoreParams {
    tokens: u32,
    width: u32,
    src_stride: u32,
    src_offset: u32,
    dst_stride: u32,
    dst_offset: u32,
    max_seq: u32,
    _pad: u32,
}

@group(0) @binding(7) var<uniform> sp: StoreParams;
@group(0) @binding(8) var<storage, read> src: array<f32>;
@group(0) @binding(9) var<storage, read_write> cache: array<f32>;

@compute @workgroup_size(64)
fn kv_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = flat_group(wid) * 64u + lid;
    if id >= sp.tokens * sp.width {
        return;
    }
    let t = id / sp.width;
    let i = id - t * sp.width;
    let pos = step[0] + t;
    if pos >= sp.max_seq {
        return;
    }
    cache[pos * sp.dst_stride + sp.dst_offset + i] = src[t * sp.src_stride + sp.src_offset + i];
}

// subgroups:begin
fn red_max_sg(x: f32) -> f32 {
    let s = subgroupMax(x);
    if sg_lane == 0u {
        red[sg_id] = s;
    }
    workgroupBarrier();
    var r = red[0];
    for (var i = 1u; i < sg_count; i++) {
        r = max(r, red[i]);
    }
    workgroupBarrier();
    return r;
}

fn red_sum_sg(x: f32) -> f32 {
    let s = subgroupAdd(x);
    if sg_lane == 0u {
        red[sg_id] = s;
    }
    workgroupBarrier();
    var r = red[0];
    for (var i = 1u; i < sg_count; i++) {
        r += red[i];
    }
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn attention_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) count: u32,
) {
    sg_lane = lane;
    sg_id = sid;
    sg_count = count;
    attend(flat_group(wid), lid);
}
// subgroups:end
