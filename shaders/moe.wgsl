// Routed experts (MODELS.md §3, §7): y[t] (+)= sum_j w[t,j] * Expert_{ids[t,j]}(x[t]), where
//   Expert_e(x) = down_e @ act(gate_e @ x + gb_e, up_e @ x + ub_e) + db_e
// Expert ids and weights are read from the router's GPU buffers; nothing comes back to the CPU.
//
// Decode (few tokens):
//   moe_gate_up_decode  one workgroup per (token, slot, 4 outputs): gate+up GEMV, activation fused -> h
//   moe_down_decode     one workgroup per (token, 8 rows): down GEMV summed over the k slots inside the
//                       workgroup, weighted, + residual -> y
// Prefill (any token count):
//   moe_count           one workgroup per expert: its (token*k + slot) pairs in order, and their count
//   gemm / gemm_coop    the prefill GEMM bodies in the gathered-experts modes (the hooks at the end
//                       and in moe_gate_up.wgsl / moe_down.wgsl), per (output block, pair block,
//                       expert): gathered x rows @ gate/up, act -> h[pair] (gate_up);
//                       h[pair] @ down, * w[pair] -> y_slots[pair] (down)
//   moe_reduce          y[t] (+)= sum_j y_slots[t*k + j]
// Weights are stacked experts split into chunks of whole experts; one dispatch per chunk handles the
// experts in [first_expert, first_expert + n_experts) and skips the others.
//
// Lines tagged `subgroups-only` and the regions between subgroup markers are stripped for adapters
// without subgroups (src/gpu/shader.rs: without_subgroups).

// Params, bindings, constants and overrides: src/kernels/moe.rs.

// A weight word's values (w_load, the weight format's part) dotted with the matching activations.
fn dot8(w: array<f32, 8>, v: array<f32, 8>) -> f32 {
    var s = w[0] * v[0] + w[1] * v[1] + w[2] * v[2] + w[3] * v[3];
    if W_EPV == 8u {
        s += w[4] * v[4] + w[5] * v[5] + w[6] * v[6] + w[7] * v[7];
    }
    return s;
}

// Bias element `col` of expert row `e` (bias rows are whole experts: [E, cols]).
fn bias_at(e: u32, col: u32) -> f32 {
    if !HAS_BIAS {
        return 0.0;
    }
    let base = e * p.bias_words;
    if B_DTYPE == DT_F32 {
        return bitcast<f32>(bias[base + col]);
    }
    return pick_half(bias[base + (col >> 1u)], col, B_DTYPE);
}

// Gate/up row of output i within expert `local` of the chunk.
fn gate_row(local: u32, i: u32) -> u32 {
    if INTERLEAVED {
        return local * 2u * p.inter + 2u * i;
    }
    return local * 2u * p.inter + i;
}
fn up_row(local: u32, i: u32) -> u32 {
    if INTERLEAVED {
        return local * 2u * p.inter + 2u * i + 1u;
    }
    return local * 2u * p.inter + p.inter + i;
}
fn gate_col(i: u32) -> u32 {
    return select(i, 2u * i, INTERLEAVED);
}
fn up_col(i: u32) -> u32 {
    return select(p.inter + i, 2u * i + 1u, INTERLEAVED);
}

fn act(g0: f32, u0: f32) -> f32 {
    if CLAMPED {
        let g = min(g0, p.limit);
        let u = clamp(u0, -p.limit, p.limit);
        return (u + 1.0) * g / (1.0 + exp(-p.alpha * g));
    }
    return g0 / (1.0 + exp(-g0)) * u0;
}

fn in_chunk(e: u32) -> bool {
    return e >= p.first_expert && e < p.first_expert + p.n_experts;
}

// ---------------------------------------------------------------------------------------------
// Decode GEMVs: each invocation accumulates 8 partial dot products, reduced across the workgroup.

var<workgroup> red: array<f32, 8 * WG>;
var<private> sg_lane: u32;
var<private> sg_size: u32;

// Portable twin: a tree over workgroup memory. Returns sum n in invocation n < 8.
fn wg_reduce8(v: array<f32, 8>, lid: u32) -> f32 {
    for (var n = 0u; n < 8u; n++) {
        red[n * WG + lid] = v[n];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            for (var n = 0u; n < 8u; n++) {
                red[n * WG + lid] += red[n * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
    return red[min(lid, 7u) * WG];
}

// subgroups:begin
fn sg_reduce8(v: array<f32, 8>, lid: u32) -> f32 {
    let nsg = WG / sg_size;
    for (var n = 0u; n < 8u; n++) {
        let s = subgroupAdd(v[n]);
        if sg_lane == 0u {
            red[n * nsg + lid / sg_size] = s;
        }
    }
    workgroupBarrier();
    var total = 0.0;
    let n = min(lid, 7u);
    for (var k = 0u; k < nsg; k++) {
        total += red[n * nsg + k];
    }
    return total;
}
// subgroups:end

fn reduce8(v: array<f32, 8>, lid: u32) -> f32 {
    if SUBGROUPS { return sg_reduce8(v, lid); } // subgroups-only
    return wg_reduce8(v, lid);
}

// x[t] elements 4q.. or 8q.. (matching one weight vec4), zero past the row.
fn x_vec(t: u32, q: u32) -> array<f32, 8> {
    let n = W_EPV;
    let base = t * p.dim;
    var v: array<f32, 8>;
    for (var c = 0u; c < n; c++) {
        let i = q * n + c;
        v[c] = select(0.0, x[base + min(i, p.dim - 1u)], i < p.dim);
    }
    return v;
}

// One workgroup per (pair = token*k + slot, 4 consecutive outputs i): gate and up dots (8 rows).
// Batched decode groups the step's tokens by expert: the first pair of the step routed to an
// expert computes every pair routed to it, one after another, so the expert's rows come from
// memory once and from cache for the others (the other pairs' workgroups exit); each pair's sums
// are the same as alone.
fn gate_up_decode(wid: vec3<u32>, lid: u32) {
    let tiles = (p.inter + 3u) / 4u;
    let g = flat_group(wid);
    let pair = g / tiles;
    let pairs = p.tokens * p.top_k;
    if pair >= pairs {
        return;
    }
    let e = ids[pair];
    if !in_chunk(e) {
        return;
    }
    for (var before = 0u; before < pair; before++) {
        if ids[before] == e {
            return;
        }
    }
    let i0 = (g % tiles) * 4u;
    for (var other = pair; other < pairs; other++) {
        if ids[other] == e {
            gate_up_pair(other, e, i0, lid);
        }
    }
}

fn gate_up_pair(pair: u32, e: u32, i0: u32, lid: u32) {
    let local = e - p.first_expert;
    let t = pair / p.top_k;
    let rw = p.w_words;
    var rows: array<u32, 8>;
    for (var n = 0u; n < 4u; n++) {
        let i = min(i0 + n, p.inter - 1u);
        rows[n] = gate_row(local, i) * rw;
        rows[4u + n] = up_row(local, i) * rw;
    }
    var acc: array<f32, 8>;
    for (var q = lid; q < rw; q += WG) {
        let xv = x_vec(t, q);
        for (var n = 0u; n < 8u; n++) {
            acc[n] += dot8(w_load(rows[n] + q), xv);
        }
    }
    let s = reduce8(acc, lid);
    // Invocation n < 4 holds gate n, invocation 4 + n holds up n: pair them through `red`.
    workgroupBarrier();
    if lid < 8u {
        red[lid] = s;
    }
    workgroupBarrier();
    if lid < 4u && i0 + lid < p.inter {
        let i = i0 + lid;
        let gv = red[lid] + bias_at(e, gate_col(i));
        let uv = red[4u + lid] + bias_at(e, up_col(i));
        h_out[pair * p.h_stride + i] = act(gv, uv);
    }
    // `red` is read again by the next pair's reduction.
    workgroupBarrier();
}

// h[pair] elements 4q.. or 8q.. (matching one weight vec4); h rows are padded with zeros to 8.
fn h_vec(pair: u32, q: u32) -> array<f32, 8> {
    let base = pair * p.h_stride / 4u;
    if W_EPV == 4u {
        let a = h_in[base + q];
        return array<f32, 8>(a.x, a.y, a.z, a.w, 0.0, 0.0, 0.0, 0.0);
    }
    let a = h_in[base + 2u * q];
    let b = h_in[base + 2u * q + 1u];
    return array<f32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
}

// One workgroup per (token, 8 consecutive rows r of y): sum over the k slots of
// w * (down[e, r] . h[t, j] + db[e, r]), for the slots whose expert is in this chunk. The tokens'
// workgroups of the same rows are neighbours in the grid, so tokens routed to the same expert
// read its rows while they are in cache.
fn down_decode(wid: vec3<u32>, lid: u32) {
    let tiles = (p.dim + 7u) / 8u;
    let g = flat_group(wid);
    let t = g % p.tokens;
    if g / p.tokens >= tiles {
        return;
    }
    let r0 = (g / p.tokens) * 8u;
    let rw = p.w_words;
    var acc: array<f32, 8>;
    for (var j = 0u; j < p.top_k; j++) {
        let pair = t * p.top_k + j;
        let e = ids[pair];
        if !in_chunk(e) {
            continue;
        }
        let w = route_w[pair];
        let row0 = (e - p.first_expert) * p.dim;
        for (var q = lid; q < rw; q += WG) {
            let hv = h_vec(pair, q);
            for (var n = 0u; n < 8u; n++) {
                let r = row0 + min(r0 + n, p.dim - 1u);
                acc[n] += w * dot8(w_load(r * rw + q), hv);
            }
        }
    }
    let s = reduce8(acc, lid);
    let r = r0 + lid;
    if lid < 8u && r < p.dim {
        var b = 0.0;
        if HAS_BIAS {
            for (var j = 0u; j < p.top_k; j++) {
                let pair = t * p.top_k + j;
                let e = ids[pair];
                if in_chunk(e) {
                    b += route_w[pair] * bias_at(e, r);
                }
            }
        }
        let o = t * p.dim + r;
        let prev = select(0.0, y[o], p.add_into != 0u);
        y[o] = prev + s + b;
    }
}

@compute @workgroup_size(WG)
fn moe_gate_up_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    gate_up_decode(wid, lid);
}

@compute @workgroup_size(WG)
fn moe_down_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    down_decode(wid, lid);
}

// subgroups:begin
@compute @workgroup_size(WG)
fn moe_gate_up_decode_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
) {
    sg_lane = lane;
    sg_size = size;
    gate_up_decode(wid, lid);
}

@compute @workgroup_size(WG)
fn moe_down_decode_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_size) size: u32,
) {
    sg_lane = lane;
    sg_size = size;
    down_decode(wid, lid);
}
// subgroups:end

// ---------------------------------------------------------------------------------------------
// Prefill: per-expert pair lists.

var<workgroup> scan: array<u32, SCAN_WG>;

// One workgroup per expert: the pairs routed to it in increasing order (a stable counting sort,
// so results do not depend on scheduling), capped at `cap` (a token names an expert at most once).
@compute @workgroup_size(SCAN_WG)
fn moe_count(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let e = flat_group(wid);
    if e >= p.experts {
        return;
    }
    let total = p.tokens * p.top_k;
    var found = 0u;
    for (var start = 0u; start < total; start += SCAN_WG) {
        let pair = start + lid;
        let hit = pair < total && ids[min(pair, total - 1u)] == e;
        scan[lid] = u32(hit);
        workgroupBarrier();
        // Inclusive Hillis-Steele scan of the hits.
        for (var off = 1u; off < SCAN_WG; off <<= 1u) {
            let v = scan[lid] + select(0u, scan[lid - min(off, lid)], lid >= off);
            workgroupBarrier();
            scan[lid] = v;
            workgroupBarrier();
        }
        let pos = found + scan[lid] - 1u;
        if hit && pos < p.cap {
            lists[e * p.cap + pos] = pair;
        }
        found += scan[SCAN_WG - 1u];
        workgroupBarrier();
    }
    if lid == 0u {
        counts[e] = min(found, p.cap);
    }
}

// y[t] (+)= sum_j y_slots[t*k + j]: one invocation per output element.
@compute @workgroup_size(SCAN_WG)
fn moe_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o = flat_group(wid) * SCAN_WG + lid;
    if o >= p.tokens * p.dim {
        return;
    }
    let t = o / p.dim;
    let r = o % p.dim;
    var s = select(0.0, y[o], p.add_into != 0u);
    for (var j = 0u; j < p.top_k; j++) {
        s += y_slots_in[(t * p.top_k + j) * p.dim + r];
    }
    y[o] = s;
}

// ---------------------------------------------------------------------------------------------
// The gathered-experts modes of the prefill GEMMs (gemm.wgsl tiles, gemm_coop.wgsl cooperative
// matrices), on a grid of (output blocks, pair blocks, experts of the bound chunk): A's rows are
// the expert's (token, slot) pairs from its list, W's rows are the expert's. What A's rows hold and
// where the outputs go is moe_gate_up.wgsl's or moe_down.wgsl's (one module each, so that each
// GEMM binds only what it reads).

var<workgroup> mm_pairs: array<u32, BM>;
var<workgroup> mm_count: u32;
var<private> mm_rows: u32;
var<private> mm_local: u32;
var<private> mm_n0: u32;

// The expert's count and this block's pairs (`stride`: the workgroup size); returns the rows in the
// block, uniformly (0: nothing to do).
fn mm_tile(wid: vec3<u32>, lid: u32, outs: u32, stride: u32) -> u32 {
    mm_local = wid.z;
    mm_n0 = wid.x * outs;
    let e = p.first_expert + mm_local;
    let m0 = wid.y * BM;
    if lid == 0u {
        let count = counts_in[e];
        mm_count = select(0u, min(BM, count - m0), m0 < count);
    }
    workgroupBarrier();
    mm_rows = workgroupUniformLoad(&mm_count);
    for (var m = lid; m < BM; m += stride) {
        if mm_rows > 0u {
            mm_pairs[m] = lists_in[e * p.cap + m0 + min(m, mm_rows - 1u)];
        }
    }
    workgroupBarrier();
    return mm_rows;
}

fn mm_kw() -> u32 {
    return p.w_words;
}
