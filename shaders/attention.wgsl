// Causal attention over a KV cache, GQA / MQA / absorbed MLA (MODELS.md §1, §6.5, §7). Query token t
// sits at position pos = token_pos(t) of its sequence and sees positions lo..=pos, lo = pos + 1 -
// window with a sliding window; its sequence's cache rows start at token_base(t) (step.wgsl: one
// sequence, or a table of several for continuous batching). gpt-oss sinks add exp(sink[h] - m) to the denominator and contribute no value.
// Two kernels (src/kernels/attention.rs picks one per shape):
//
// * Rows (`attention*`): one workgroup per (query token, RW query heads of one KV group, key chunk).
//   The RW heads share every key and value load. Keys are walked in blocks of WG with an online
//   (flash-style) softmax: each invocation scores one key for all RW heads, the block max and sum
//   are workgroup reductions, and each invocation owns a slice of the output dims, rescaled by
//   exp(m_old - m_new) whenever the running max grows. With `chunks` > 1 (split-KV, decode) the
//   visible range is cut into at most `chunks` chunks of >= min_chunk keys, sized at run time from
//   step[0]: chunks past the live count exit at once, a live chunk writes its partial
//   (max, sum, unnormalised output) to `part`, and the last chunk of a (token, head slice) to
//   arrive (an atomic counter, reset by that chunk) merges the partials, sinks included. One
//   dispatch, so a recorded decode step replays unchanged as step[0] grows.
// * Tile (`attention_tile`, prefill): one workgroup per (BQ rows, BK-key tiles), where the rows are
//   (token, head) pairs of one KV group, heads fastest (RH heads by BQ / RH tokens). The query rows
//   and each K then V tile are staged in workgroup memory; key tiles outside the union of the rows'
//   visible ranges (causal future, before the window) are never visited, masked keys inside a
//   visited tile score -inf. Each row's online softmax is kept by its TPR = WG / BQ owners.
//
// Cache addressing (elements): k[j, g, d] = j*k_stride + g*k_head_stride + d,
// v[j, g, d] = v_offset + j*v_stride + g*v_head_stride + d. The v binding may be the k buffer
// (MLA: values are the first r floats of each [c | k_pe] row). The caches are u32 words: f32 bits,
// or with KV16 half pairs (element e in half e & 1 of word e >> 1, unpack2x16float), or with KV8
// signed bytes (byte e & 3 of word e >> 2, unpack4x8snorm) times their block's scale, the f32 at
// word k_scales (v_scales) + (e >> q8_shift); widened to f32 as they are loaded. f32 and f16 take
// any element offset; q8 layouts are whole blocks (src/kernels/attention.rs checks).
//
// The subgroup reductions are marked for `without_subgroups` (src/gpu/shader.rs).

// Params, StoreParams, bindings, RMAX, NACC_MAX and overrides: src/kernels/attention.rs.

// Finite stand-in for -inf: WGSL lets implementations assume no infinities.
const NEG_BIG: f32 = -3.0e38;

// Rows kernel workgroup memory.
var<workgroup> qs: array<vec4<f32>, RW * KQ>;
var<workgroup> acc: array<f32, RW * VMAX>;
var<workgroup> ps: array<f32, RW * WG>;
var<workgroup> red: array<f32, RW * WG>;
var<workgroup> smax: array<f32, RMAX>;
var<workgroup> ssum: array<f32, RMAX>;
var<workgroup> arrived: u32;

// Tile kernel workgroup memory.
var<workgroup> tq: array<vec4<f32>, BQ * KQ>;
var<workgroup> tkv: array<vec4<f32>, BK * KT4>;
var<workgroup> ts: array<f32, BQ * BK>;

// Per-invocation values of the RW heads (scores, then probabilities) fed to the reductions.
var<private> vals: array<f32, RMAX>;

// Set by the subgroup entry points.
var<private> sg_lane: u32;
var<private> sg_id: u32;
var<private> sg_count: u32;

// Key / value cache element e as f32.
fn k_at(e: u32) -> f32 {
    if KV16 {
        return unpack2x16float(kc[e >> 1u])[e & 1u];
    }
    if KV8 {
        return unpack4x8snorm(kc[e >> 2u])[e & 3u] * bitcast<f32>(kc[p.k_scales + (e >> p.q8_shift)]);
    }
    return bitcast<f32>(kc[e]);
}

fn v_at(e: u32) -> f32 {
    if KV16 {
        return unpack2x16float(vc[e >> 1u])[e & 1u];
    }
    if KV8 {
        return unpack4x8snorm(vc[e >> 2u])[e & 3u] * bitcast<f32>(vc[p.v_scales + (e >> p.q8_shift)]);
    }
    return bitcast<f32>(vc[e]);
}

// q8: the four elements from e (a multiple of 4, so one word of one block).
fn quad8_k(e: u32) -> vec4<f32> {
    return unpack4x8snorm(kc[e >> 2u]) * bitcast<f32>(kc[p.k_scales + (e >> p.q8_shift)]);
}

fn quad8_v(e: u32) -> vec4<f32> {
    return unpack4x8snorm(vc[e >> 2u]) * bitcast<f32>(vc[p.v_scales + (e >> p.q8_shift)]);
}

// Four halves from the two words at word index w.
fn halves4_k(w: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(kc[w]), unpack2x16float(kc[w + 1u]));
}

fn halves4_v(w: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(vc[w]), unpack2x16float(vc[w + 1u]));
}

// First visible cache position for a query at `pos`.
fn window_lo(pos: u32) -> u32 {
    if p.window > 0u && pos + 1u > p.window {
        return pos + 1u - p.window;
    }
    return 0u;
}

// Per-head workgroup max (into smax) or sum (into ssum) of `vals[r]`, r < RW (WG a power of two).
fn reduce_rows(lid: u32, is_max: bool) {
    if SG { reduce_rows_sg(is_max); return; } // subgroups-only
    for (var r = 0u; r < RW; r++) {
        red[r * WG + lid] = vals[r];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            for (var r = 0u; r < RW; r++) {
                let a = red[r * WG + lid];
                let b = red[r * WG + lid + s];
                red[r * WG + lid] = select(a + b, max(a, b), is_max);
            }
        }
        workgroupBarrier();
    }
    if lid < RW {
        if is_max {
            smax[lid] = red[lid * WG];
        } else {
            ssum[lid] = red[lid * WG];
        }
    }
    workgroupBarrier();
}

// Scores of the key starting at float `kb` against the RW (pre-scaled) queries, into vals.
fn score_rows(kb: u32) {
    for (var r = 0u; r < RW; r++) {
        vals[r] = 0.0;
    }
    if KV8 && VEC16 {
        let kb16 = kb >> 4u;
        for (var i = 0u; i < KQ / 4u; i++) {
            let w = kc4[kb16 + i];
            let a = bitcast<f32>(kc[p.k_scales + ((kb + 16u * i) >> p.q8_shift)]);
            let k0 = unpack4x8snorm(w.x) * a;
            let k1 = unpack4x8snorm(w.y) * a;
            let k2 = unpack4x8snorm(w.z) * a;
            let k3 = unpack4x8snorm(w.w) * a;
            for (var r = 0u; r < RW; r++) {
                let q0 = r * KQ + 4u * i;
                vals[r] += dot(qs[q0], k0) + dot(qs[q0 + 1u], k1) + dot(qs[q0 + 2u], k2) + dot(qs[q0 + 3u], k3);
            }
        }
        return;
    }
    if KV16 && VEC8 {
        // 8 halves per 16-byte load (KQ even).
        let kb8 = kb >> 3u;
        for (var i = 0u; i < KQ / 2u; i++) {
            let w = kc4[kb8 + i];
            let k0 = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
            let k1 = vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
            for (var r = 0u; r < RW; r++) {
                vals[r] += dot(qs[r * KQ + 2u * i], k0) + dot(qs[r * KQ + 2u * i + 1u], k1);
            }
        }
        return;
    }
    if VEC4 {
        for (var i = 0u; i < KQ; i++) {
            var k: vec4<f32>;
            if KV16 {
                k = halves4_k((kb >> 1u) + 2u * i);
            } else if KV8 {
                k = quad8_k(kb + 4u * i);
            } else {
                k = bitcast<vec4<f32>>(kc4[(kb >> 2u) + i]);
            }
            for (var r = 0u; r < RW; r++) {
                vals[r] += dot(qs[r * KQ + i], k);
            }
        }
        return;
    }
    for (var d = 0u; d < p.k_dim; d++) {
        let k = k_at(kb + d);
        for (var r = 0u; r < RW; r++) {
            vals[r] += qs[r * KQ + (d >> 2u)][d & 3u] * k;
        }
    }
}

// What one rows workgroup does; `live` = 0 when it has nothing to do.
struct Job {
    t: u32,
    slice: u32,
    h0: u32,
    chunk: u32,
    live: u32,
    kb: u32,
    ke: u32,
}

fn job(gid: u32) -> Job {
    var j: Job;
    j.live = 0u;
    if gid >= p.tokens * p.slices * p.chunks {
        return j;
    }
    j.chunk = gid % p.chunks;
    let rest = gid / p.chunks;
    j.slice = rest % p.slices;
    j.t = rest / p.slices;
    j.h0 = j.slice * RW;
    let pos = token_pos(j.t);
    let base = token_base(j.t);
    // Clamped so a position past the cache reads nothing out of bounds (the host checks T <= max_seq).
    let hi = min(pos, p.max_seq - 1u - min(base, p.max_seq - 1u));
    let lo = window_lo(pos);
    let n = select(0u, hi + 1u - lo, hi + 1u > lo);
    let cs = max(p.min_chunk, (n + p.chunks - 1u) / p.chunks);
    // An empty range still has one chunk, which writes zeros (or nothing but the sink).
    let live = max(1u, (n + cs - 1u) / cs);
    if j.chunk >= live {
        return j;
    }
    j.live = live;
    // Key positions become cache rows of the token's sequence.
    j.kb = base + lo + j.chunk * cs;
    j.ke = min(j.kb + cs, base + lo + n);
    return j;
}

// Online softmax of the RW heads over keys kb..ke; leaves acc (unnormalised) and each head's
// running max and sum in m / l (identical in every invocation).
var<private> m_run: array<f32, RMAX>;
var<private> l_run: array<f32, RMAX>;

fn rows(jb: Job, lid: u32) {
    let g = jb.h0 / p.group;
    // The queries, pre-scaled, are read by every invocation for every key: workgroup memory.
    for (var i = lid; i < RW * 4u * KQ; i += WG) {
        let r = i / (4u * KQ);
        let d = i - r * 4u * KQ;
        // Zero padding past k_dim keeps the last vec4 exact.
        var x = 0.0;
        if d < p.k_dim {
            x = q[jb.t * p.q_row_stride + (jb.h0 + r) * p.q_head_stride + d] * p.scale;
        }
        qs[r * KQ + (d >> 2u)][d & 3u] = x;
    }
    for (var i = lid; i < RW * VMAX; i += WG) {
        acc[i] = 0.0;
    }
    for (var r = 0u; r < RW; r++) {
        m_run[r] = NEG_BIG;
        l_run[r] = 0.0;
    }
    workgroupBarrier();

    let kh = g * p.k_head_stride;
    let vh = p.v_offset + g * p.v_head_stride;
    var corr: array<f32, RMAX>;
    var a: array<f32, RMAX>;
    for (var base = jb.kb; base < jb.ke; base += WG) {
        let j = base + lid;
        let valid = j < jb.ke;
        if valid {
            score_rows(j * p.k_stride + kh);
        } else {
            for (var r = 0u; r < RW; r++) {
                vals[r] = NEG_BIG;
            }
        }
        reduce_rows(lid, true);
        for (var r = 0u; r < RW; r++) {
            let m_new = max(m_run[r], smax[r]);
            corr[r] = exp(m_run[r] - m_new);
            m_run[r] = m_new;
            let pj = select(0.0, exp(vals[r] - m_new), valid);
            vals[r] = pj;
            ps[r * WG + lid] = pj;
        }
        // The reduction's barriers also publish ps.
        reduce_rows(lid, false);
        for (var r = 0u; r < RW; r++) {
            l_run[r] = l_run[r] * corr[r] + ssum[r];
        }
        let n = min(WG, jb.ke - base);
        for (var d = lid; d < VMAX; d += WG) {
            for (var r = 0u; r < RW; r++) {
                a[r] = acc[r * VMAX + d] * corr[r];
            }
            var vi = base * p.v_stride + vh + d;
            for (var i = 0u; i < n; i++) {
                let v = v_at(vi);
                for (var r = 0u; r < RW; r++) {
                    a[r] += ps[r * WG + i] * v;
                }
                vi += p.v_stride;
            }
            for (var r = 0u; r < RW; r++) {
                acc[r * VMAX + d] = a[r];
            }
        }
        // ps is rewritten by the next block.
        workgroupBarrier();
    }
}

// Normalise acc by l (and the sink) into o.
fn finish_direct(jb: Job, lid: u32) {
    for (var r = 0u; r < RW; r++) {
        let h = jb.h0 + r;
        var fin = 1.0;
        var total = l_run[r];
        if SINKS {
            // Rescale to max(m, sink) so a large sink cannot overflow exp.
            let sk = sinks[h];
            let m2 = max(m_run[r], sk);
            fin = exp(m_run[r] - m2);
            total = l_run[r] * fin + exp(sk - m2);
        }
        let inv = select(0.0, fin / total, total > 0.0);
        let ob = (jb.t * p.heads + h) * VMAX;
        for (var d = lid; d < VMAX; d += WG) {
            o[ob + d] = acc[r * VMAX + d] * inv;
        }
    }
}

// Merge the `live` partials of the RW heads (every chunk has at least one visible key, so each m is
// finite). Chunk weights go through ps (live <= chunks <= WG, checked by the host).
fn combine(jb: Job, lid: u32) {
    let stride = VMAX + 2u;
    for (var r = 0u; r < RW; r++) {
        let h = jb.h0 + r;
        let slot = jb.t * p.heads + h;
        let b0 = slot * p.chunks * stride;
        var mx = NEG_BIG;
        for (var c = 0u; c < jb.live; c++) {
            mx = max(mx, part_load(b0 + c * stride));
        }
        var sk = NEG_BIG;
        if SINKS {
            sk = sinks[h];
            mx = max(mx, sk);
        }
        var total = 0.0;
        for (var c = 0u; c < jb.live; c++) {
            total += part_load(b0 + c * stride + 1u) * exp(part_load(b0 + c * stride) - mx);
        }
        if SINKS {
            total += exp(sk - mx);
        }
        let inv = select(0.0, 1.0 / total, total > 0.0);
        if lid < jb.live {
            ps[lid] = exp(part_load(b0 + lid * stride) - mx) * inv;
        }
        workgroupBarrier();
        let ob = slot * VMAX;
        for (var d = lid; d < VMAX; d += WG) {
            var x = 0.0;
            for (var c = 0u; c < jb.live; c++) {
                x += ps[c] * part_load(b0 + c * stride + 2u + d);
            }
            o[ob + d] = x;
        }
        workgroupBarrier();
    }
}

fn part_load(i: u32) -> f32 {
    return bitcast<f32>(atomicLoad(&part[i]));
}

fn part_store(i: u32, x: f32) {
    atomicStore(&part[i], bitcast<u32>(x));
}

fn finish_split(jb: Job, lid: u32) {
    if jb.live == 1u {
        finish_direct(jb, lid);
        return;
    }
    let stride = VMAX + 2u;
    for (var r = 0u; r < RW; r++) {
        let pb = ((jb.t * p.heads + jb.h0 + r) * p.chunks + jb.chunk) * stride;
        if lid == 0u {
            part_store(pb, m_run[r]);
            part_store(pb + 1u, l_run[r]);
        }
        for (var d = lid; d < VMAX; d += WG) {
            part_store(pb + 2u + d, acc[r * VMAX + d]);
        }
    }
    // Release this chunk's partial device-wide, then count it; the last arrival acquires them all.
    storageBarrier();
    let ci = p.arrivals_at + jb.t * p.slices + jb.slice;
    if lid == 0u {
        arrived = atomicAdd(&part[ci], 1u);
    }
    let before = workgroupUniformLoad(&arrived);
    if before + 1u == jb.live {
        storageBarrier();
        combine(jb, lid);
        if lid == 0u {
            atomicStore(&part[ci], 0u);
        }
    }
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let jb = job(flat_group(wid));
    if jb.live == 0u {
        return;
    }
    rows(jb, lid);
    finish_direct(jb, lid);
}

@compute @workgroup_size(WG)
fn attention_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let jb = job(flat_group(wid));
    if jb.live == 0u {
        return;
    }
    rows(jb, lid);
    finish_split(jb, lid);
}

// ---- Tile kernel (prefill) ----

// K (or V) vec4 i of cache row `row` at float offset `base` (+ the head offset), zero past `dim`.
fn load_k4(row: u32, base: u32, i: u32) -> vec4<f32> {
    let b = row * p.k_stride + base;
    if VEC4 {
        if KV16 {
            return halves4_k((b >> 1u) + 2u * i);
        }
        if KV8 {
            return quad8_k(b + 4u * i);
        }
        return bitcast<vec4<f32>>(kc4[(b >> 2u) + i]);
    }
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let d = 4u * i + e;
        if d < p.k_dim {
            v[e] = k_at(b + d);
        }
    }
    return v;
}

fn load_v4(row: u32, base: u32, i: u32) -> vec4<f32> {
    let b = row * p.v_stride + base;
    if VVEC4 {
        if KV16 {
            return halves4_v((b >> 1u) + 2u * i);
        }
        if KV8 {
            return quad8_v(b + 4u * i);
        }
        return bitcast<vec4<f32>>(vc4[(b >> 2u) + i]);
    }
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        let d = 4u * i + e;
        if d < p.v_dim {
            v[e] = v_at(b + d);
        }
    }
    return v;
}

@compute @workgroup_size(WG)
fn attention_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let gid = flat_group(wid);
    let tq_tokens = BQ / RH;
    let slice = gid % p.slices;
    let t0 = (gid / p.slices) * tq_tokens;
    if t0 >= p.tokens {
        return;
    }
    let h0 = slice * RH;
    let g = h0 / p.group;
    // Tiles serve one sequence (contiguous steps): its positions from step[0], rows from step[2].
    let pos0 = step[0];
    let base = step[2];
    let t_last = min(t0 + tq_tokens, p.tokens) - 1u;
    // The union of the rows' visible ranges (contiguous: consecutive tokens, sliding windows).
    let k_lo = window_lo(pos0 + t0);
    let k_hi = min(pos0 + t_last, p.max_seq - 1u);

    for (var i = lid; i < BQ * KQ; i += WG) {
        let r = i / KQ;
        let c = i - r * KQ;
        let t = t0 + r / RH;
        var x = vec4<f32>(0.0);
        if t < p.tokens {
            let qb = t * p.q_row_stride + (h0 + r % RH) * p.q_head_stride;
            for (var e = 0u; e < 4u; e++) {
                let d = 4u * c + e;
                if d < p.k_dim {
                    x[e] = q[qb + d] * p.scale;
                }
            }
        }
        tq[i] = x;
    }

    // This invocation owns dims sub + k * TPR of row `orow`.
    let tpr = WG / BQ;
    let orow = lid / tpr;
    let sub = lid - orow * tpr;
    var m = NEG_BIG;
    var l = 0.0;
    var acc_r: array<f32, NACC_MAX>;
    for (var k = 0u; k < NACC; k++) {
        acc_r[k] = 0.0;
    }
    let kh = g * p.k_head_stride;
    let vh = p.v_offset + g * p.v_head_stride;
    let vq = (VMAX + 3u) / 4u;

    for (var kb = k_lo; kb <= k_hi; kb += BK) {
        let nk = min(BK, k_hi + 1u - kb);
        for (var i = lid; i < BK * KQ; i += WG) {
            let j = i / KQ;
            let c = i - j * KQ;
            var x = vec4<f32>(0.0);
            if j < nk {
                x = load_k4(base + kb + j, kh, c);
            }
            tkv[j * KT4 + c] = x;
        }
        workgroupBarrier();
        for (var i = lid; i < BQ * BK; i += WG) {
            let r = i / BK;
            let j = i - r * BK;
            let t = t0 + r / RH;
            let pos = pos0 + t;
            let kp = kb + j;
            var s = NEG_BIG;
            if j < nk && t < p.tokens && kp <= pos && kp >= window_lo(pos) {
                var a4 = vec4<f32>(0.0);
                for (var c = 0u; c < KQ; c++) {
                    a4 += tq[r * KQ + c] * tkv[j * KT4 + c];
                }
                s = (a4.x + a4.y) + (a4.z + a4.w);
            }
            ts[i] = s;
        }
        workgroupBarrier();
        // Values over the keys.
        for (var i = lid; i < BK * vq; i += WG) {
            let j = i / vq;
            let c = i - j * vq;
            var x = vec4<f32>(0.0);
            if j < nk {
                x = load_v4(base + kb + j, vh, c);
            }
            tkv[j * KT4 + c] = x;
        }
        workgroupBarrier();
        var mt = NEG_BIG;
        for (var j = 0u; j < BK; j++) {
            mt = max(mt, ts[orow * BK + j]);
        }
        let m_new = max(m, mt);
        let corr = exp(m - m_new);
        for (var k = 0u; k < NACC; k++) {
            acc_r[k] *= corr;
        }
        var sum = 0.0;
        for (var j = 0u; j < nk; j++) {
            let s = ts[orow * BK + j];
            let pj = select(0.0, exp(s - m_new), s != NEG_BIG);
            sum += pj;
            for (var k = 0u; k < NACC; k++) {
                let d = sub + k * tpr;
                if d < VMAX {
                    acc_r[k] += pj * tkv[j * KT4 + (d >> 2u)][d & 3u];
                }
            }
        }
        l = l * corr + sum;
        m = m_new;
        // tkv and ts are rewritten by the next tile.
        workgroupBarrier();
    }

    let t = t0 + orow / RH;
    if t >= p.tokens {
        return;
    }
    let h = h0 + orow % RH;
    var fin = 1.0;
    var total = l;
    if SINKS {
        let sk = sinks[h];
        let m2 = max(m, sk);
        fin = exp(m - m2);
        total = l * fin + exp(sk - m2);
    }
    let inv = select(0.0, fin / total, total > 0.0);
    let ob = (t * p.heads + h) * VMAX;
    for (var k = 0u; k < NACC; k++) {
        let d = sub + k * tpr;
        if d < VMAX {
            o[ob + d] = acc_r[k] * inv;
        }
    }
}

// Copy `tokens` rows of `width` floats (source rows `src_stride` apart from `src_offset`) into the
// cache rows of their positions (token_base(t) + token_pos(t); `dst_stride` apart, from `dst_offset`; all in elements).
// Each invocation writes one whole cache word: with KV16 (width, dst_stride and dst_offset even,
// checked by the host) the pair of elements 2i, 2i + 1, rounded to f16 (clamped to the finite
// f16 range, where pack2x16float is defined).

// The largest finite f16.
const F16_MAX: f32 = 65504.0;

@compute @workgroup_size(STORE_WG)
fn kv_store(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = flat_group(wid) * STORE_WG + lid;
    // Words per row.
    let wpr = select(sp.width, sp.width / 2u, KV16);
    if id >= sp.tokens * wpr {
        return;
    }
    let t = id / wpr;
    let i = id - t * wpr;
    let row = token_base(t) + token_pos(t);
    if row >= sp.max_seq {
        return;
    }
    let dst = row * sp.dst_stride + sp.dst_offset;
    let s0 = t * sp.src_stride + sp.src_offset;
    if KV16 {
        let e = 2u * i;
        let x = clamp(vec2<f32>(src[s0 + e], src[s0 + e + 1u]), vec2<f32>(-F16_MAX), vec2<f32>(F16_MAX));
        cache[(dst >> 1u) + i] = pack2x16float(x);
        return;
    }
    cache[dst + i] = bitcast<u32>(src[s0 + i]);
}

// subgroups:begin
fn reduce_rows_sg(is_max: bool) {
    for (var r = 0u; r < RW; r++) {
        let x = vals[r];
        let s = select(subgroupAdd(x), subgroupMax(x), is_max);
        if sg_lane == 0u {
            red[r * WG + sg_id] = s;
        }
    }
    workgroupBarrier();
    for (var r = 0u; r < RW; r++) {
        var v = red[r * WG];
        for (var i = 1u; i < sg_count; i++) {
            let b = red[r * WG + i];
            v = select(v + b, max(v, b), is_max);
        }
        if is_max {
            smax[r] = v;
        } else {
            ssum[r] = v;
        }
    }
    workgroupBarrier();
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
    let jb = job(flat_group(wid));
    if jb.live == 0u {
        return;
    }
    rows(jb, lid);
    finish_direct(jb, lid);
}

@compute @workgroup_size(WG)
fn attention_split_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sid: u32,
    @builtin(num_subgroups) count: u32,
) {
    sg_lane = lane;
    sg_id = sid;
    sg_count = count;
    let jb = job(flat_group(wid));
    if jb.live == 0u {
        return;
    }
    rows(jb, lid);
    finish_split(jb, lid);
}
// subgroups:end
