// Prefill projection on cooperative matrices (f16 CMxCM inputs, f32 accumulators):
//   y[t, n] (+)= sum_k x[t, k] * W[n, k] (+ bias[n])
// A workgroup of NSG subgroups owns a BM x BN block of y: BM = 4 CM token rows, and 4 CM output
// columns per subgroup, each subgroup keeping its 4x4 accumulator tiles. Each K-step of CM stages x
// (f32 -> f16) and the BN weight rows (f16/bf16 words, 8 per vec4 load -> f16) in workgroup memory
// once for all subgroups, zero past the edges. The epilogue goes tile by tile through workgroup
// memory so edges are masked and bias / accumulate match the portable gemm. Selected where
// Caps.coop_f16 is set. CmA / CmB / CmC are the adapter's CM x CM cooperative-matrix types.
enable f16;
enable wgpu_cooperative_matrix;

// Params, bindings and overrides: src/kernels/gemm_coop.rs; the tile side CM, NSG (subgroups per
// workgroup) and the block (BM tokens x BN outputs, K-steps of BK) come with the variant.

// A: BM token rows x BK, row-major. B: BK x BN output columns, stored column-major (each output
// column's BK values contiguous), as W's rows are. C: one CM x CM tile per subgroup.
var<workgroup> a_tile: array<f16, BM * BK>;
var<workgroup> b_tile: array<f16, BN * BK>;
var<workgroup> c_tile: array<f32, NSG * CM * CM>;

fn bias_at(n: u32) -> f32 {
    if p.bias_dtype == NO_BIAS {
        return 0.0;
    }
    if p.bias_dtype == DT_F32 {
        return bitcast<f32>(bias[n]);
    }
    return pick_half(bias[n >> 1u], n, p.bias_dtype);
}

@compute @workgroup_size(WG)
fn gemm_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
) {
    let n_tiles = (p.rows + BN - 1u) / BN;
    let flat = flat_group(wid);
    let m0 = (flat / n_tiles) * BM;
    let n0 = (flat % n_tiles) * BN;
    // Subgroups past NSG (a driver that splits the workgroup finer) redo subgroup sg % NSG's
    // columns: no control flow may depend on the subgroup, cooperative ops need it uniform.
    let sg = sg_id % NSG;
    let vecs = p.row_words / 4u;
    // No early return for blocks past the last token (the grid's spill-over): every load and
    // store below is masked anyway.
    var acc: array<CmC, 16>;
    let steps = (p.k + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * BK;
        for (var e = lid; e < BM * BK; e += WG) {
            let t = m0 + e / BK;
            let k = k0 + e % BK;
            var xv = 0.0;
            if t < p.tokens && k < p.k {
                xv = x[t * p.x_stride + k];
            }
            a_tile[e] = f16(xv);
        }
        // 8 halves per vec4: BK / 8 vec4s per row; past the row's words (and K) reads as zero.
        for (var e = lid; e < BN * (BK / 8u); e += WG) {
            let r = e / (BK / 8u);
            let q = k0 / 8u + e % (BK / 8u);
            let n = n0 + r;
            var v = vec4<u32>(0u);
            if n < p.rows && q < vecs {
                v = w[n * vecs + q];
            }
            let base = r * BK + (e % (BK / 8u)) * 8u;
            for (var c = 0u; c < 4u; c++) {
                let h = unpack_half2(v[c], W_DTYPE);
                b_tile[base + 2u * c] = f16(h.x);
                b_tile[base + 2u * c + 1u] = f16(h.y);
            }
        }
        workgroupBarrier();
        for (var i = 0u; i < 4u; i++) {
            let a = coopLoadT<CmA>(&a_tile[i * CM * BK], BK);
            for (var j = 0u; j < 4u; j++) {
                let b = coopLoad<CmB>(&b_tile[(sg * 4u + j) * CM * BK], BK);
                acc[i * 4u + j] = coopMultiplyAdd(a, b, acc[i * 4u + j]);
            }
        }
        workgroupBarrier();
    }
    // Tile (i, j) of every subgroup at once: stored, then written out by the whole workgroup.
    for (var ij = 0u; ij < 16u; ij++) {
        let i = ij / 4u;
        let j = ij % 4u;
        coopStoreT(acc[ij], &c_tile[sg * CM * CM], CM);
        workgroupBarrier();
        for (var e = lid; e < NSG * CM * CM; e += WG) {
            let tile = e / (CM * CM);
            let r = (e / CM) % CM;
            let t = m0 + i * CM + r;
            let n = n0 + (tile * 4u + j) * CM + e % CM;
            if t < p.tokens && n < p.rows {
                let col = p.first_row + n;
                let at = t * p.y_stride + col;
                var out = c_tile[e] + bias_at(col);
                if p.accumulate != 0u {
                    out += y[at];
                }
                y[at] = out;
            }
        }
        workgroupBarrier();
    }
}
