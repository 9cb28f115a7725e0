// The tiled GEMM of prefill, one body for every mode and weight format (src/kernels/matmul.rs:
// the variant table). Each workgroup computes a BM x BN block of
//   C[m, n] = sum_k A[m, k] * W[row(n), k]
// in K-steps of BK staged in workgroup memory (both tiles transposed, [BK][64] as vec4s along M or
// N, so an invocation's 4x4 outputs read one vec4 of each per k); BWG = 256 invocations of 4x4
// outputs.
// Every output is summed in k order.
//
// The mode part before this body (matmul.wgsl: dense; moe.wgsl: gathered experts) says where A's
// rows and W's rows come from and where C goes:
//   mm_tile(wid, lid, outs, wg) -> u32  set up the block (outs outputs wide, wg invocations); its
//                                    rows (0: skip it; uniform across the workgroup)
//   mm_k() -> u32, mm_kw() -> u32    K, and W's vec4 words per row
//   mm_a4(m, k) -> vec4<f32>         A[m, k..k + 4] of block row m, 0 past K and past the rows
//   mm_w_row(o, up) -> u32           W's chunk row for block output o (with mm_paired: its gate or
//                                    up row), or NO_ROW (reads 0)
//   mm_paired() -> bool              outputs come in (gate, up) column pairs
//   mm_store(m, o, v)                C of block row m, output o
//   mm_store_pair(m, o, g, u)        with mm_paired: output o's gate and up sums
// W's words are read by the weight format's w_load.

var<workgroup> a_tile: array<vec4<f32>, BK * BM / 4u>;
var<workgroup> block_rows: u32;
var<workgroup> b_tile: array<vec4<f32>, BK * BN / 4u>;

// Block column n's output and part: paired, the four columns of invocation column tx are
// (gate, gate, up, up) of outputs 2 tx and 2 tx + 1, so each invocation holds both sums.
fn gemm_column(n: u32) -> vec2<u32> {
    if mm_paired() {
        return vec2<u32>(2u * (n / 4u) + (n % 4u) % 2u, u32(n % 4u >= 2u));
    }
    return vec2<u32>(n, 0u);
}

// BWG = 256 invocations: each loads 4 consecutive k of one of the 64 rows.
fn gemm_load_a(k0: u32, lid: u32) {
    let m = lid / 4u;
    let kq = (lid % 4u) * 4u;
    let v = mm_a4(m, k0 + kq);
    for (var e = 0u; e < 4u; e++) {
        a_tile[(kq + e) * 16u + m / 4u][m % 4u] = v[e];
    }
}

// One weight word per invocation: BN rows x BK / W_EPV words. Words past the row's end (the K-step
// overhangs the padded row) or rows past the chunk read as zero.
fn gemm_load_b(k0: u32, lid: u32) {
    let wpr = BK / W_EPV;
    if lid >= BN * wpr {
        return;
    }
    let n = lid / wpr;
    let q = lid % wpr;
    let word = k0 / W_EPV + q;
    let col = gemm_column(n);
    let row = mm_w_row(col.x, col.y == 1u);
    var v: array<f32, 8>;
    if row != NO_ROW && word < mm_kw() {
        v = w_load(row * mm_kw() + word);
    }
    let kq = q * W_EPV;
    for (var e = 0u; e < W_EPV; e++) {
        b_tile[(kq + e) * 16u + n / 4u][n % 4u] = v[e];
    }
}

@compute @workgroup_size(BWG)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Through workgroup memory, so that the count is uniform as WGSL's analysis sees it (barriers
    // and cooperative ops follow; it does not look through mm_tile's result).
    let tile_rows = mm_tile(wid, lid, select(BN, BN / 2u, mm_paired()), BWG);
    if lid == 0u {
        block_rows = tile_rows;
    }
    let rows = workgroupUniformLoad(&block_rows);
    if rows == 0u {
        return;
    }
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<vec4<f32>, 4>;
    let steps = (mm_k() + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        gemm_load_a(s * BK, lid);
        gemm_load_b(s * BK, lid);
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
        let m = ty * 4u + i;
        if m >= rows {
            continue;
        }
        if mm_paired() {
            for (var j = 0u; j < 2u; j++) {
                mm_store_pair(m, tx * 2u + j, acc[i][j], acc[i][j + 2u]);
            }
        } else {
            for (var j = 0u; j < 4u; j++) {
                mm_store(m, tx * 4u + j, acc[i][j]);
            }
        }
    }
}
