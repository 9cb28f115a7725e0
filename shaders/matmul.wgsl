// y[t, n] (+)= sum_k x[t, k] * W[n, k] (+ bias[n]) for f32 activations x [T, K] and a weight W
// [N, K] stored in its checkpoint precision (packed u32 words, rows padded to whole vec4<u32>s).
// One dispatch covers one chunk of W: rows first_row .. first_row + rows of the whole matrix, so
// y columns and bias entries are offset by first_row while weight rows are chunk-local.
//
// matvec: decode (T <= 8). Each workgroup owns ROWS output rows; its threads stride along K one
// vec4<u32> weight word (4 f32 or 8 halves) at a time, keeping ROWS*T accumulators, then reduce
// across the workgroup (through workgroup memory here; subgroupAdd in matvec_sg at the end).
// gemm: prefill. 64x64 output tiles, K-steps of 16 staged in workgroup memory, 4x4 per thread.

// Params, bindings, constants and overrides: src/kernels/matmul.rs.

// Per token, 1/rms of x (the prologue's result); the epilogue applies it.
var<workgroup> norm_scale: array<f32, 8>;

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

// Elements per vec4<u32> weight word.
fn elems_per_word() -> u32 {
    return elems_per_vec4(W_DTYPE);
}

// The first four weights of a word (all of them for f32) and, for 16-bit weights, the last four.
fn w_lo(v: vec4<u32>) -> vec4<f32> {
    if W_DTYPE == DT_F32 {
        return bitcast<vec4<f32>>(v);
    }
    return vec4<f32>(unpack_half2(v.x, W_DTYPE), unpack_half2(v.y, W_DTYPE));
}
fn w_hi(v: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack_half2(v.z, W_DTYPE), unpack_half2(v.w, W_DTYPE));
}

// ---------------------------------------------------------------------------------------------
// matvec

var<workgroup> red: array<f32, RED>;

// This thread's share of the ROWS x T dot products of the workgroup starting at row0. Rows past
// the chunk's end re-read its last row (always in bounds); their sums are never stored.
fn partial_sums(row0: u32, lid: u32) -> array<f32, MAX_ACC> {
    var acc: array<f32, MAX_ACC>;
    let last = p.rows - 1u;
    let epw = elems_per_word();
    for (var i = lid; i < p.kw; i += WG) {
        // Issue every row's load before any math so they are in flight together.
        var words: array<vec4<u32>, MAX_ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            words[r] = w[min(row0 + r, last) * p.kw + i];
        }
        let full = i < p.kw_full;
        let k = i * epw;
        for (var t = 0u; t < T; t++) {
            let xl = x_quad(t, k, full);
            if W_DTYPE == DT_F32 {
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
// gemm

// Tiles transposed, [BK][64] as vec4s along M (a) or N (b), so a thread's 4x4 micro-tile reads one
// vec4 of each per k.
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

// 256 threads: each loads 4 consecutive k of one of the 64 token rows.
fn load_a(m0: u32, k0: u32, lid: u32) {
    let m = lid / 4u;
    let kq = (lid % 4u) * 4u;
    let t = m0 + m;
    var v = vec4<f32>(0.0);
    if t < p.tokens {
        v = x_quad(t, k0 + kq, k0 + kq + 4u <= p.k);
    }
    for (var e = 0u; e < 4u; e++) {
        a_tile[(kq + e) * 16u + m / 4u][m % 4u] = v[e];
    }
}

// One vec4<u32> word per thread: 64 rows x BK/4 words (f32) or x BK/8 words (16-bit). Words past the
// row's end (the K-step overhangs the padded row) or rows past the chunk read as zero.
fn load_b(n0: u32, k0: u32, lid: u32) {
    let wpr = BK / elems_per_word();
    if lid >= BN * wpr {
        return;
    }
    let n = lid / wpr;
    let q = lid % wpr;
    let word = k0 / elems_per_word() + q;
    var v = vec4<u32>(0u);
    if n0 + n < p.rows && word < p.kw {
        v = w[(n0 + n) * p.kw + word];
    }
    let kq = q * elems_per_word();
    let lo = w_lo(v);
    for (var e = 0u; e < 4u; e++) {
        b_tile[(kq + e) * 16u + n / 4u][n % 4u] = lo[e];
    }
    if W_DTYPE != DT_F32 {
        let hi = w_hi(v);
        for (var e = 0u; e < 4u; e++) {
            b_tile[(kq + 4u + e) * 16u + n / 4u][n % 4u] = hi[e];
        }
    }
}

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_tiles = (p.rows + BN - 1u) / BN;
    let flat = flat_group(wid);
    let m0 = (flat / n_tiles) * BM;
    let n0 = (flat % n_tiles) * BN;
    if m0 >= p.tokens {
        return;
    }
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<vec4<f32>, 4>;
    let steps = (p.k + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        load_a(m0, s * BK, lid);
        load_b(n0, s * BK, lid);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let a = a_tile[kk * 16u + ty];
            let b = b_tile[kk * 16u + tx];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let t = m0 + ty * 4u + i;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + tx * 4u + j;
            if t < p.tokens && n < p.rows {
                store(t, n, acc[i][j]);
            }
        }
    }
}

// subgroups:begin (to the end of the file: see `without_subgroups` in src/kernels/mod.rs)

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
