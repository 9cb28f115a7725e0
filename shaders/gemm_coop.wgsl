// The prefill GEMM on cooperative matrices (f16 CM x CM inputs, f32 accumulators), one body for
// every mode and weight format, with the mode hooks of the tiled body (gemm.wgsl):
//   C[m, n] = sum_k A[m, k] * W[row(n), k]
// A workgroup of NSG subgroups owns a BM x BN block: BM = 4 CM rows, BN = NSG * 4 CM columns, each
// subgroup keeping 4x4 accumulator tiles of its 4 CM columns. Each K-step of BK = CM stages A
// (f32 -> f16) and the BN weight rows (one word, W_EPV values, per load -> f16) in workgroup
// memory once for all subgroups, zero past the edges. The epilogue goes tile by tile through
// workgroup memory, which masks the edges and hands each output to the mode's mm_store (or, paired,
// a subgroup's gate tile j and up tile j + 2 to mm_store_pair). CmA / CmB / CmC are the adapter's
// CM x CM cooperative-matrix types; CWG (NSG subgroups) is the workgroup size.
enable f16;
enable wgpu_cooperative_matrix;

// A: BM rows x BK, row-major. B: BK x BN columns, column-major (each column's BK values
// contiguous, as W's rows are). C: two CM x CM tiles per subgroup (a gate and an up tile).
var<workgroup> ca: array<f16, BM * BK>;
var<workgroup> cb: array<f16, BN * BK>;
var<workgroup> cc: array<f32, NSG * 2u * CM * CM>;
var<workgroup> block_rows: u32;

// Block column n's output and part: paired, subgroup s's 4 CM columns are the gate rows of
// outputs 2 CM s .. 2 CM (s + 1), then their up rows.
fn coop_column(n: u32) -> vec2<u32> {
    if mm_paired() {
        let s = n / (4u * CM);
        let r = n % (4u * CM);
        return vec2<u32>(s * 2u * CM + r % (2u * CM), u32(r >= 2u * CM));
    }
    return vec2<u32>(n, 0u);
}

@compute @workgroup_size(CWG)
fn gemm_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
) {
    // Blocks with no rows exit before any cooperative op.
    // Through workgroup memory, so that the count is uniform as WGSL's analysis sees it (barriers
    // and cooperative ops follow; it does not look through mm_tile's result).
    let tile_rows = mm_tile(wid, lid, select(BN, BN / 2u, mm_paired()), CWG);
    if lid == 0u {
        block_rows = tile_rows;
    }
    let rows = workgroupUniformLoad(&block_rows);
    if rows == 0u {
        return;
    }
    // Subgroups past NSG (a driver that splits the workgroup finer) redo subgroup sg % NSG's
    // columns: no control flow may depend on the subgroup, cooperative ops need it uniform.
    let sg = sg_id % NSG;
    let k_len = mm_k();
    var acc: array<CmC, 16>;
    for (var k0 = 0u; k0 < k_len; k0 += BK) {
        for (var e = lid; e < BM * BK; e += CWG) {
            ca[e] = f16(mm_a(e / BK, k0 + e % BK));
        }
        // BK / W_EPV words per row; past the row's words (and K) reads as zero.
        for (var e = lid; e < BN * (BK / W_EPV); e += CWG) {
            let n = e / (BK / W_EPV);
            let part = e % (BK / W_EPV);
            let col = coop_column(n);
            let row = mm_w_row(col.x, col.y == 1u);
            let word = k0 / W_EPV + part;
            var v: array<f32, 8>;
            if row != NO_ROW && word < mm_kw() {
                v = w_load(row * mm_kw() + word);
            }
            for (var c = 0u; c < W_EPV; c++) {
                cb[n * BK + part * W_EPV + c] = f16(v[c]);
            }
        }
        workgroupBarrier();
        for (var i = 0u; i < 4u; i++) {
            let a = coopLoadT<CmA>(&ca[i * CM * BK], BK);
            for (var j = 0u; j < 4u; j++) {
                let b = coopLoad<CmB>(&cb[(sg * 4u + j) * CM * BK], BK);
                acc[i * 4u + j] = coopMultiplyAdd(a, b, acc[i * 4u + j]);
            }
        }
        workgroupBarrier();
    }
    if mm_paired() {
        // Tiles (i, j) (gate) and (i, j + 2) (up) of every subgroup at once.
        for (var ij = 0u; ij < 8u; ij++) {
            let i = ij / 2u;
            let j = ij % 2u;
            coopStoreT(acc[i * 4u + j], &cc[sg * 2u * CM * CM], CM);
            coopStoreT(acc[i * 4u + j + 2u], &cc[(sg * 2u + 1u) * CM * CM], CM);
            workgroupBarrier();
            for (var e = lid; e < NSG * CM * CM; e += CWG) {
                let s = e / (CM * CM);
                let r = (e / CM) % CM;
                let c = e % CM;
                let m = i * CM + r;
                if m < rows {
                    let g = cc[(s * 2u) * CM * CM + r * CM + c];
                    let u = cc[(s * 2u + 1u) * CM * CM + r * CM + c];
                    mm_store_pair(m, s * 2u * CM + j * CM + c, g, u);
                }
            }
            workgroupBarrier();
        }
    } else {
        // Tile (i, j) of every subgroup at once.
        for (var ij = 0u; ij < 16u; ij++) {
            let i = ij / 4u;
            let j = ij % 4u;
            coopStoreT(acc[ij], &cc[sg * CM * CM], CM);
            workgroupBarrier();
            for (var e = lid; e < NSG * CM * CM; e += CWG) {
                let s = e / (CM * CM);
                let m = i * CM + (e / CM) % CM;
                if m < rows {
                    mm_store(m, (s * 4u + j) * CM + e % CM, cc[e]);
                }
            }
            workgroupBarrier();
        }
    }
}
