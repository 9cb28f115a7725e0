// y[t, n] (+)= sum_k x[t, k] * W[n, k] (+ bias[n]) for f32 activations x [T, K] and a weight W
// [N, K] stored in its checkpoint precision (packed u32 words, rows padded to whole vec4<u32>s).
// One dispatch covers one chunk of W: rows first_row .. first_row + rows of the whole matrix, so
// y columns and bias entries are offset by first_row while weight rows are chunk-local.
//
// matvec: decode (T <= 8). Each workgroup owns ROWS output rows; its threads stride along K one
// weight word (W_EPV values, from the format's w_load) at a time, keeping ROWS*T accumulators, then
// reduce across the workgroup (through workgroup memory here; subgroupAdd in matvec_sg at the end).
// Prefill: the dense mode of the GEMM bodies (gemm.wgsl tiles, gemm_coop.wgsl cooperative
// matrices), whose hooks are below.

// Params, bindings, constants and overrides: src/kernels/matmul.rs.

// Per token, 1/rms of x (the prologue's result); the epilogue applies it.
var<workgroup> norm_scale: array<f32, MAX_T>;

fn norm_weight(k: u32) -> f32 {
    let i = min(k, p.k - 1u);
    if p.norm_dtype == DT_F32 {
        return bitcast<f32>(norm_w[i]);
    }
    return pick_half(norm_w[i >> 1u], i, p.norm_dtype);
}

fn bias_at(n: u32) -> f32 {
    if p.bias_dtype == NO_BIAS {
        return 0.0;
    }
    if p.bias_dtype == DT_F32 {
        return bitcast<f32>(bias[n]);
    }
    return pick_half(bias[n >> 1u], n, p.bias_dtype);
}

// The epilogue shared by both kernels: bias, then overwrite or accumulate (fused residual add).
fn store(t: u32, n: u32, v: f32) {
    let col = p.first_row + n;
    let i = t * p.y_stride + col;
    var s = v;
    if p.norm_dtype != NO_NORM {
        // y = W (g * x * scale) = scale * (W (g * x)): the prologue's per-token factor.
        s *= norm_scale[t];
    }
    var out = s + bias_at(col);
    if p.accumulate != 0u {
        out += y[i];
    }
    y[i] = out;
}

// Four consecutive x values of token t from column k; `full` says all four are below K, otherwise
// the ones past K read as zero (x holds only K values per row: never read past them).
fn x_quad(t: u32, k: u32, full: bool) -> vec4<f32> {
    var v = x_quad_raw(t, k, full);
    if p.norm_dtype != NO_NORM {
        v *= vec4<f32>(norm_weight(k), norm_weight(k + 1u), norm_weight(k + 2u), norm_weight(k + 3u));
    }
    return v;
}

fn x_quad_raw(t: u32, k: u32, full: bool) -> vec4<f32> {
    let base = t * p.x_stride + k;
    if full {
        if X_VEC {
            return x4[base >> 2u];
        }
        return vec4<f32>(x[base], x[base + 1u], x[base + 2u], x[base + 3u]);
    }
    var v = vec4<f32>(0.0);
    for (var e = 0u; e < 4u; e++) {
        if k + e < p.k {
            v[e] = x[base + e];
        }
    }
    return v;
}

// The first and the last four weights of a word's values (w_load: the weight format's part).
fn w_lo(a: array<f32, 8>) -> vec4<f32> {
    return vec4<f32>(a[0], a[1], a[2], a[3]);
}
fn w_hi(a: array<f32, 8>) -> vec4<f32> {
    return vec4<f32>(a[4], a[5], a[6], a[7]);
}

// ---------------------------------------------------------------------------------------------
// matvec

var<workgroup> red: array<f32, RED>;

// This thread's share of the ROWS x T dot products of the workgroup starting at row0. Rows past
// the chunk's end re-read its last row (always in bounds); their sums are never stored.
fn partial_sums(row0: u32, lid: u32) -> array<f32, MAX_ACC> {
    var acc: array<f32, MAX_ACC>;
    let last = p.rows - 1u;
    for (var i = lid; i < p.kw; i += WG) {
        // Issue every row's load before any math so they are in flight together.
        var words: array<array<f32, 8>, MAX_ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            words[r] = w_load(min(row0 + r, last) * p.kw + i);
        }
        let full = i < p.kw_full;
        let k = i * W_EPV;
        for (var t = 0u; t < T; t++) {
            let xl = x_quad(t, k, full);
            if W_EPV == 4u {
                for (var r = 0u; r < ROWS; r++) {
                    acc[r * T + t] += dot(w_lo(words[r]), xl);
                }
            } else {
                let xh = x_quad(t, k + 4u, full);
                for (var r = 0u; r < ROWS; r++) {
                    acc[r * T + t] += dot(w_lo(words[r]), xl) + dot(w_hi(words[r]), xh);
                }
            }
        }
    }
    return acc;
}

// The RMSNorm prologue (norm fused into the projection, DESIGN.md principle 4): every workgroup
// computes each token's 1/rms itself (x is a few KiB, the weights are what matter); workgroup 0
// of the first chunk also writes the normalised rows when another kernel reads them next.
fn norm_prologue(lid: u32, group: u32) {
    if p.norm_dtype == NO_NORM {
        return;
    }
    for (var t = 0u; t < T; t++) {
        var acc = 0.0;
        for (var k = lid; k < p.k; k += WG) {
            let v = x[t * p.x_stride + k];
            acc += v * v;
        }
        red[lid] = acc;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if lid < s {
                red[lid] += red[lid + s];
            }
            workgroupBarrier();
        }
        if lid == 0u {
            norm_scale[t] = inverseSqrt(red[0] / f32(p.k) + p.eps);
        }
        workgroupBarrier();
    }
    if p.store_normed != 0u && group == 0u {
        for (var t = 0u; t < T; t++) {
            for (var k = lid; k < p.k; k += WG) {
                xn[t * p.k + k] = norm_weight(k) * (x[t * p.x_stride + k] * norm_scale[t]);
            }
        }
    }
}

// Thread j < ROWS*T of the workgroup writes output (row0 + j / T, token j % T).
fn store_sum(row0: u32, j: u32, v: f32) {
    let n = row0 + j / T;
    if n < p.rows {
        store(j % T, n, v);
    }
}

// Portable twin: a tree over workgroup memory, all ROWS*T sums at once (WG is a power of two).
@compute @workgroup_size(WG)
fn matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = flat_group(wid) * ROWS;
    if row0 >= p.rows {
        return;
    }
    norm_prologue(lid, flat_group(wid));
    let acc = partial_sums(row0, lid);
    let rt = ROWS * T;
    for (var j = 0u; j < rt; j++) {
        red[j * WG + lid] = acc[j];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        for (var q = lid; q < rt * s; q += WG) {
            let at = (q / s) * WG + q % s;
            red[at] += red[at + s];
        }
        workgroupBarrier();
    }
    if lid < rt {
        store_sum(row0, lid, red[lid * WG]);
    }
}

// ---------------------------------------------------------------------------------------------
// The dense mode of the prefill GEMMs (gemm.wgsl, gemm_coop.wgsl): A is x's token rows, W's rows
// are this chunk's, C goes through `store` (bias, residual add). A grid of m-blocks by n-blocks.

var<private> mm_m0: u32;
var<private> mm_n0: u32;

// The rows come from the workgroup id alone, so they are uniform (gemm_coop needs that).
fn mm_tile(wid: vec3<u32>, lid: u32, outs: u32, stride: u32) -> u32 {
    let n_tiles = (p.rows + outs - 1u) / outs;
    let flat = flat_group(wid);
    let m0 = (flat / n_tiles) * BM;
    mm_m0 = m0;
    mm_n0 = (flat % n_tiles) * outs;
    if m0 >= p.tokens {
        return 0u;
    }
    return min(BM, p.tokens - m0);
}

fn mm_k() -> u32 {
    return p.k;
}

fn mm_kw() -> u32 {
    return p.kw;
}

fn mm_paired() -> bool {
    return false;
}

fn mm_a4(m: u32, k: u32) -> vec4<f32> {
    let t = mm_m0 + m;
    if t >= p.tokens {
        return vec4<f32>(0.0);
    }
    return x_quad(t, k, k + 4u <= p.k);
}

fn mm_a(m: u32, k: u32) -> f32 {
    let t = mm_m0 + m;
    if t >= p.tokens || k >= p.k {
        return 0.0;
    }
    return x[t * p.x_stride + k];
}

fn mm_w_row(o: u32, up: bool) -> u32 {
    let n = mm_n0 + o;
    return select(NO_ROW, n, n < p.rows);
}

fn mm_store(m: u32, o: u32, v: f32) {
    let n = mm_n0 + o;
    if n < p.rows {
        store(mm_m0 + m, n, v);
    }
}

fn mm_store_pair(m: u32, o: u32, g: f32, u: f32) {}

// subgroups:begin (to the end of the file: see `without_subgroups` in src/gpu/shader.rs)

// Fast path: subgroupAdd, then one partial per subgroup through workgroup memory.
@compute @workgroup_size(WG)
fn matvec_sg(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) sg: u32,
    @builtin(num_subgroups) nsg: u32,
) {
    let row0 = flat_group(wid) * ROWS;
    if row0 >= p.rows {
        return;
    }
    norm_prologue(lid, flat_group(wid));
    let acc = partial_sums(row0, lid);
    let rt = ROWS * T;
    for (var j = 0u; j < rt; j++) {
        let s = subgroupAdd(acc[j]);
        if lane == 0u {
            red[sg * rt + j] = s;
        }
    }
    workgroupBarrier();
    if lid < rt {
        var v = 0.0;
        for (var g = 0u; g < nsg; g++) {
            v += red[g * rt + lid];
        }
        store_sum(row0, lid, v);
    }
}
// subgroups:end
