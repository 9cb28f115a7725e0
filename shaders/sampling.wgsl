// Next-token selection on the GPU (DESIGN.md principle 2): one workgroup reads one row of logits
// and writes a token id into out[out_index], where the next step's embedding reads it.
//
// argmax: the largest logit, lowest index on ties.
// sample: p_i ∝ exp((l_i - max) / T) over the tokens that survive top-k (every logit >= the k-th
// largest, ties kept, as transformers' TopKLogitsWarper) and then top-p (every logit >= the largest
// value v whose tokens {l >= v} carry >= top_p of the top-k mass). A uniform u from a counter-based
// hash of (seed, position of the batch's last token) picks the first token, in index order, whose cumulative mass exceeds
// u * total. Every sum runs in a fixed order, so a draw is reproducible on a given adapter.
//
// Thresholds are found on order-preserving u32 keys of the logits by a 9-ary search: each pass
// sums count (top-k) or mass (top-p) above 8 probe keys at once, so <= 11 passes cover 2^32 keys.
//
// The region between the subgroup markers is the fast path; it is stripped for adapters without
// subgroups (a module that merely mentions subgroup ops fails there: src/gpu/shader.rs).

// Params, bindings and overrides: src/kernels/sampling.rs.

const NONE: u32 = 0xffffffffu;

var<workgroup> red_v: array<f32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> acc_a: array<vec4<f32>, WG>;
var<workgroup> acc_b: array<vec4<f32>, WG>;
var<workgroup> prefix: array<f32, WG>;
var<workgroup> sh_lo: u32;
var<workgroup> sh_hi: u32;
var<workgroup> sh_f: f32;
var<workgroup> sh_choice: atomic<u32>;
var<workgroup> sh_last: atomic<u32>;

struct Best {
    v: f32,
    i: u32,
}

// Larger value wins, then lower index; NaN never wins.
fn better(a: Best, b: Best) -> Best {
    if b.v > a.v || (b.v == a.v && b.i < a.i) {
        return b;
    }
    return a;
}

// This invocation's best over its strided share of the row. A NaN or +infinity (a corrupt model;
// -infinity is a masked token) wins as NONFINITE, which the token's reader reports as an error: the
// check costs two compares per logit this pass reads anyway.
fn local_best(lid: u32) -> Best {
    var b = Best(-bitcast<f32>(0x7f800000u), NONE);
    let base = p.row * p.vocab;
    for (var i = lid; i < p.vocab; i += WG) {
        let l = logits[base + i];
        let bits = bitcast<u32>(l);
        if (bits & 0x7fffffffu) > 0x7f800000u || bits == 0x7f800000u {
            b = better(b, Best(bitcast<f32>(0x7f7fffffu), NONFINITE));
        } else {
            b = better(b, Best(l, i));
        }
    }
    return b;
}

// Portable twin: tree reduction in workgroup memory; every invocation gets the result.
fn reduce_best_tree(b: Best, lid: u32) -> Best {
    red_v[lid] = b.v;
    red_i[lid] = b.i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let r = better(Best(red_v[lid], red_i[lid]), Best(red_v[lid + s], red_i[lid + s]));
            red_v[lid] = r.v;
            red_i[lid] = r.i;
        }
        workgroupBarrier();
    }
    let r = Best(red_v[0], red_i[0]);
    workgroupBarrier();
    return r;
}

fn write_token(token: u32) {
    // All-NaN rows find nothing; token 0 keeps the next embedding in range.
    out[p.out_index] = select(token, 0u, token == NONE);
}

@compute @workgroup_size(WG)
fn argmax(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let b = reduce_best_tree(local_best(lid3.x), lid3.x);
    if lid3.x == 0u {
        write_token(b.i);
    }
}

// Order-preserving map of f32 to u32: a < b (as floats) <=> key(a) < key(b).
fn key_of(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(~b, b | 0x80000000u, (b & 0x80000000u) == 0u);
}

fn mass(l: f32, m: f32) -> f32 {
    return exp((l - m) * p.inv_temp);
}

// PCG hash (O'Neill; Jarzynski & Olano 2020); src/kernels/sampling.rs has the same in Rust.
fn pcg(x: u32) -> u32 {
    let state = x * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn uniform_draw(pos: u32) -> f32 {
    let h = pcg(pcg(pcg(pos) ^ p.seed_lo) ^ p.seed_hi);
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

struct Sums {
    a: vec4<f32>,
    b: vec4<f32>,
}

// For each of 8 probe keys, the sum over the row of 1 (counting) or mass(l) over logits whose key
// is >= the probe. Same order every call, so a sum is a deterministic, monotone function of the key.
// Ends with the result in acc_a[0] / acc_b[0], read by invocation 0 only.
fn probe_sums(lid: u32, pa: vec4<u32>, pb: vec4<u32>, counting: bool, m: f32) {
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    let base = p.row * p.vocab;
    for (var i = lid; i < p.vocab; i += WG) {
        let l = logits[base + i];
        let k = vec4<u32>(key_of(l));
        var w = 1.0;
        if !counting {
            w = mass(l, m);
        }
        a += select(vec4<f32>(0.0), vec4<f32>(w), k >= pa);
        b += select(vec4<f32>(0.0), vec4<f32>(w), k >= pb);
    }
    acc_a[lid] = a;
    acc_b[lid] = b;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            acc_a[lid] += acc_a[lid + s];
            acc_b[lid] += acc_b[lid + s];
        }
        workgroupBarrier();
    }
}

fn probe(lo: u32, span: u32, stride: u32, j: u32) -> u32 {
    let off = stride * j;
    return select(lo + span, lo + off, off <= span);
}

// The largest key K in [lo, hi] whose sum (see probe_sums) is >= goal; the sum at lo must be.
fn search(lid: u32, lo0: u32, hi0: u32, counting: bool, goal: f32, m: f32) -> u32 {
    if lid == 0u {
        sh_lo = lo0;
        sh_hi = hi0;
    }
    var lo = workgroupUniformLoad(&sh_lo);
    var hi = workgroupUniformLoad(&sh_hi);
    while lo < hi {
        let span = hi - lo;
        let stride = span / 9u + 1u;
        let pa = vec4<u32>(probe(lo, span, stride, 1u), probe(lo, span, stride, 2u), probe(lo, span, stride, 3u), probe(lo, span, stride, 4u));
        let pb = vec4<u32>(probe(lo, span, stride, 5u), probe(lo, span, stride, 6u), probe(lo, span, stride, 7u), probe(lo, span, stride, 8u));
        probe_sums(lid, pa, pb, counting, m);
        if lid == 0u {
            let sa = acc_a[0];
            let sb = acc_b[0];
            let keys = array<u32, 8>(pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w);
            let sums = array<f32, 8>(sa.x, sa.y, sa.z, sa.w, sb.x, sb.y, sb.z, sb.w);
            var nlo = lo;
            var nhi = hi;
            for (var j = 0u; j < 8u; j++) {
                if sums[j] >= goal {
                    nlo = max(nlo, keys[j]);
                } else {
                    nhi = min(nhi, keys[j] - 1u);
                }
            }
            sh_lo = nlo;
            sh_hi = nhi;
        }
        lo = workgroupUniformLoad(&sh_lo);
        hi = workgroupUniformLoad(&sh_hi);
    }
    return lo;
}

// Mass of the tokens with key >= floor, summed by invocation 0 in a fixed order (probe_sums).
fn mass_above(lid: u32, floor: u32, m: f32) -> f32 {
    probe_sums(lid, vec4<u32>(floor), vec4<u32>(floor), false, m);
    if lid == 0u {
        sh_f = acc_a[0].x;
    }
    return workgroupUniformLoad(&sh_f);
}

// Everything after the maximum: thresholds, then the draw. `best` is the row's argmax.
fn sample_rest(lid: u32, best: Best) {
    if lid == 0u {
        atomicStore(&sh_choice, NONE);
        atomicStore(&sh_last, 0u);
    }
    workgroupBarrier();
    let m = best.v;
    let top = key_of(m);
    var floor = 0u;
    if p.top_k != 0u {
        floor = search(lid, 0u, top, true, f32(p.top_k), m);
    }
    if p.top_p < 1.0 {
        let z = mass_above(lid, floor, m);
        floor = search(lid, floor, top, false, p.top_p * z, m);
    }
    draw(lid, floor, m, best.i);
}

// Walk the surviving tokens in index order: each invocation owns one contiguous block, block masses
// are prefix-summed by invocation 0, and the block holding the crossing walks itself.
fn draw(lid: u32, floor: u32, m: f32, argmax_i: u32) {
    let block = (p.vocab + WG - 1u) / WG;
    let start = min(lid * block, p.vocab);
    let end = min(start + block, p.vocab);
    let base = p.row * p.vocab;
    var part = 0.0;
    var last = 0u;
    for (var i = start; i < end; i++) {
        let l = logits[base + i];
        if key_of(l) >= floor {
            let w = mass(l, m);
            part += w;
            if w > 0.0 {
                last = i + 1u;
            }
        }
    }
    red_v[lid] = part;
    atomicMax(&sh_last, last);
    workgroupBarrier();
    if lid == 0u {
        var total = 0.0;
        for (var t = 0u; t < WG; t++) {
            prefix[t] = total;
            total += red_v[t];
        }
        // The draw is keyed on the position of the token whose successor is drawn: the batch's
        // last (a prompt gets the same draws whether or not its start was cached), or in a table
        // step (continuous batching) the sampled row's own.
        var at = step_buf[POS0] + max(step_buf[1], 1u) - 1u;
        if step_buf[3] == 1u {
            at = step_buf[5u + 2u * p.row];
        }
        sh_f = uniform_draw(at) * total;
    }
    let goal = workgroupUniformLoad(&sh_f);
    let r = goal - prefix[lid];
    if r >= 0.0 && r < part {
        var c = 0.0;
        for (var i = start; i < end; i++) {
            let l = logits[base + i];
            if key_of(l) >= floor {
                c += mass(l, m);
                if c > r {
                    atomicMin(&sh_choice, i);
                    break;
                }
            }
        }
    }
    workgroupBarrier();
    if lid == 0u {
        var choice = atomicLoad(&sh_choice);
        if choice == NONE {
            // Rounding put u * total at or past the last cumulative sum: take the last token.
            let l = atomicLoad(&sh_last);
            choice = select(argmax_i, l - 1u, l > 0u);
        }
        // A non-finite row was sampled as garbage: report it instead.
        write_token(select(choice, NONFINITE, argmax_i == NONFINITE));
    }
}

@compute @workgroup_size(WG)
fn sample(@builtin(local_invocation_id) lid3: vec3<u32>) {
    let lid = lid3.x;
    sample_rest(lid, reduce_best_tree(local_best(lid), lid));
}

// subgroups:begin
// Fast path: reduce within each subgroup, then invocation 0 combines the subgroups' winners.

fn reduce_best_subgroup(b: Best, lid: u32, lane: u32, sg: u32, n_sg: u32) -> Best {
    let m = subgroupMax(b.v);
    let i = subgroupMin(select(NONE, b.i, b.v == m));
    if lane == 0u {
        red_v[sg] = m;
        red_i[sg] = i;
    }
    workgroupBarrier();
    if lid == 0u {
        var r = Best(red_v[0], red_i[0]);
        for (var s = 1u; s < n_sg; s++) {
            r = better(r, Best(red_v[s], red_i[s]));
        }
        red_v[0] = r.v;
        red_i[0] = r.i;
    }
    workgroupBarrier();
    let r = Best(red_v[0], red_i[0]);
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn argmax_sg(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
) {
    let b = reduce_best_subgroup(local_best(lid3.x), lid3.x, lane, sg, n_sg);
    if lid3.x == 0u {
        write_token(b.i);
    }
}

@compute @workgroup_size(WG)
fn sample_sg(
    @builtin(local_invocation_id) lid3: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) n_sg: u32,
) {
    let lid = lid3.x;
    sample_rest(lid, reduce_best_subgroup(local_best(lid), lid, lane, sg, n_sg));
}
// subgroups:end
