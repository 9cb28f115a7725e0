// The whole MoE router tail in one kernel, one workgroup per token, one invocation per expert
// (MODELS.md §3, §5, §6.6, §7):
//   s = softmax(logits) or sigmoid(logits)                 (f32)
//   c = s + bias                                           (selection only, DeepSeek-V3)
//   groups: score each group (max of c, or sum of its top-2 c), keep the topk_group best groups,
//           mask the others out of the selection
//   idx = top_k of c, in descending order (ties: lower expert index first)
//   w = s[idx]; renormalize: w /= sum(w) + eps; w *= scale
//   shared slots (folded shared experts): ids E.., weight 1 or sigmoid(the row's gate logit)
// Lines tagged `subgroups-only` and the region between the subgroup markers are stripped for adapters
// without subgroups (src/gpu/shader.rs: without_subgroups), because wgpu validates a whole module
// against the device's features.

// Params, bindings, MAX_E and overrides: src/kernels/router.rs.

// Below every real score: lanes past the expert count and experts already chosen.
const NONE: f32 = -3.4e38;
// Experts of a group that was not kept: below every real score, above NONE.
const MASKED: f32 = -3.0e38;

// Reduction scratch: the portable twin uses one slot per invocation, the subgroup path one per subgroup.
var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> sel: array<f32, MAX_E>;
var<workgroup> gscore: array<f32, MAX_E>;
var<workgroup> top_w: array<f32, MAX_E>;

var<private> sg_lane: u32;
var<private> sg_size: u32;

struct Best {
    v: f32,
    i: u32,
}

fn better(a: Best, b: Best) -> bool {
    return b.v > a.v || (b.v == a.v && b.i < a.i);
}

fn wg_argmax(v: f32, i: u32, lid: u32) -> Best {
    workgroupBarrier();
    red_v[lid] = v;
    red_i[lid] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let a = Best(red_v[lid], red_i[lid]);
            let b = Best(red_v[lid + s], red_i[lid + s]);
            if better(a, b) {
                red_v[lid] = b.v;
                red_i[lid] = b.i;
            }
        }
        workgroupBarrier();
    }
    return Best(red_v[0], red_i[0]);
}

fn wg_sum(v: f32, lid: u32) -> f32 {
    workgroupBarrier();
    red_v[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red_v[lid] += red_v[lid + s];
        }
        workgroupBarrier();
    }
    return red_v[0];
}

// subgroups:begin
fn sg_argmax(v: f32, i: u32, lid: u32) -> Best {
    let m = subgroupMax(v);
    let mi = subgroupMin(select(0xffffffffu, i, v == m));
    workgroupBarrier();
    if sg_lane == 0u {
        red_v[lid / sg_size] = m;
        red_i[lid / sg_size] = mi;
    }
    workgroupBarrier();
    var b = Best(red_v[0], red_i[0]);
    for (var s = 1u; s < WG / sg_size; s++) {
        let o = Best(red_v[s], red_i[s]);
        if better(b, o) {
            b = o;
        }
    }
    return b;
}

fn sg_sum(v: f32, lid: u32) -> f32 {
    let s = subgroupAdd(v);
    workgroupBarrier();
    if sg_lane == 0u {
        red_v[lid / sg_size] = s;
    }
    workgroupBarrier();
    var total = 0.0;
    for (var k = 0u; k < WG / sg_size; k++) {
        total += red_v[k];
    }
    return total;
}
// subgroups:end

fn argmax(v: f32, i: u32, lid: u32) -> Best {
    if SUBGROUPS { return sg_argmax(v, i, lid); } // subgroups-only
    return wg_argmax(v, i, lid);
}

fn sum(v: f32, lid: u32) -> f32 {
    if SUBGROUPS { return sg_sum(v, lid); } // subgroups-only
    return wg_sum(v, lid);
}

// Unbiased routing score of this lane's expert.
fn score(t: u32, lid: u32, valid: bool) -> f32 {
    let l = logits[t * p.logit_stride + min(lid, p.experts - 1u)];
    if SIGMOID {
        return 1.0 / (1.0 + exp(-l));
    }
    let m = argmax(select(NONE, l, valid), lid, lid).v;
    let e = select(0.0, exp(l - m), valid);
    return e / sum(e, lid);
}

// Selection score of one group from the lanes' scores in `sel`.
fn group_score(g: u32) -> f32 {
    var top1 = NONE;
    var top2 = NONE;
    for (var i = g * p.group_size; i < (g + 1u) * p.group_size; i++) {
        let c = sel[i];
        if c > top1 {
            top2 = top1;
            top1 = c;
        } else if c > top2 {
            top2 = c;
        }
    }
    if TOP2 {
        return top1 + top2;
    }
    return top1;
}

// `c` for experts of kept groups, MASKED for the others.
fn mask_groups(c: f32, lid: u32, valid: bool) -> f32 {
    if valid {
        sel[lid] = c;
    }
    workgroupBarrier();
    if lid < p.n_group {
        gscore[lid] = group_score(lid);
    }
    workgroupBarrier();
    let g = min(lid, p.experts - 1u) / p.group_size;
    let mine = gscore[g];
    var rank = 0u;
    for (var h = 0u; h < p.n_group; h++) {
        let o = gscore[h];
        rank += u32(o > mine || (o == mine && h < g));
    }
    return select(MASKED, c, rank < p.topk_group);
}

fn route(wid: vec3<u32>, lid: u32) {
    let t = flat_group(wid);
    if t >= p.tokens {
        return;
    }
    let valid = lid < p.experts;
    let s = score(t, lid, valid);
    var c = s;
    if HAS_BIAS {
        c += bias[min(lid, p.experts - 1u)];
    }
    if GROUPS {
        c = mask_groups(c, lid, valid);
    }
    var v = select(NONE, c, valid);
    let out = t * (p.top_k + p.shared_slots);
    for (var r = 0u; r < p.top_k; r++) {
        let b = argmax(v, lid, lid);
        if lid == b.i {
            top_w[r] = s;
            ids[out + r] = lid;
            v = NONE;
        }
    }
    workgroupBarrier();
    if lid == 0u {
        var total = 0.0;
        for (var r = 0u; r < p.top_k; r++) {
            total += top_w[r];
        }
        for (var r = 0u; r < p.top_k; r++) {
            var w = top_w[r];
            if p.renormalize != 0u {
                w = w / (total + p.eps);
            }
            weights[out + r] = w * p.scale;
        }
        var shared_w = 1.0;
        if p.shared_gate != 0u {
            shared_w = 1.0 / (1.0 + exp(-logits[t * p.logit_stride + p.experts]));
        }
        for (var j = 0u; j < p.shared_slots; j++) {
            ids[out + p.top_k + j] = p.experts + j;
            weights[out + p.top_k + j] = shared_w;
        }
    }
}

@compute @workgroup_size(WG)
fn router(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    route(wid, lid);
}

// subgroups:begin
@compute @workgroup_size(WG)
fn router_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
) {
    sg_lane = lane;
    sg_size = size;
    route(wid, lid);
}
// subgroups:end
