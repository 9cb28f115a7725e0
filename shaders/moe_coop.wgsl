// Prefill grouped expert GEMMs on cooperative matrices (f16 CMxCM inputs, f32 accumulators), the
// same contract as moe_gate_up_gemm / moe_down_gemm in moe.wgsl: this file is appended to moe.wgsl
// (src/kernels/moe_coop.rs), so bindings, parameters and the helpers (gate_row, act, bias_at, ...)
// are moe.wgsl's.
//
// A workgroup of NSG subgroups owns CBM gathered pairs (rows of one expert's list) by NSG * 4 CM
// weight rows; each subgroup keeps 4x4 accumulator tiles of its 4 CM rows (gate_up: the gate rows
// of 2 CM outputs, then their up rows; down: 4 CM output rows). Each K-step of CM stages the
// gathered activations (f32 -> f16) and the weight rows (f16/bf16, 8 per vec4 load -> f16) in
// workgroup memory once for all subgroups, zero past the edges. The epilogue goes tile by tile
// through workgroup memory, where it applies the activation (gate_up) or the routing weight (down)
// and scatters rows to their pairs. Tiles past an expert's count exit before any cooperative op
// (the exit is uniform: the count comes from workgroupUniformLoad).
// CmA / CmB / CmC are the adapter's CM x CM cooperative-matrix types.
enable f16;
enable wgpu_cooperative_matrix;

// CM, NSG and the tile (CBM pairs x CBN weight rows, K-steps of CBK) come with the variant;
// CWG, the workgroup size (NSG subgroups), is an override (src/kernels/moe.rs).

var<workgroup> ca: array<f16, CBM * CBK>;
var<workgroup> cb: array<f16, CBN * CBK>;
// Two CM x CM tiles per subgroup (gate_up's gate and up tiles of the same outputs).
var<workgroup> cc: array<f32, NSG * 2u * CM * CM>;
var<workgroup> c_pairs: array<u32, CBM>;
var<workgroup> c_rows: u32;

// The expert's count and this tile's pairs; returns the rows in the tile (0: nothing to do).
fn coop_tile(e: u32, mtile: u32, lid: u32) -> u32 {
    if lid == 0u {
        let count = counts_in[e];
        c_rows = select(0u, min(CBM, count - mtile * CBM), mtile * CBM < count);
    }
    workgroupBarrier();
    let rows = workgroupUniformLoad(&c_rows);
    for (var m = lid; m < CBM; m += CWG) {
        if rows > 0u {
            c_pairs[m] = lists_in[e * p.cap + mtile * CBM + min(m, rows - 1u)];
        }
    }
    workgroupBarrier();
    return rows;
}

// Stage the CBN weight rows x CBK columns from k0, zero past `k_len`. gate_up: subgroup s's rows
// are the gate rows of outputs n0 + 2CM s .. + 2CM, then their up rows; down: rows n0.. of the
// expert.
fn stage_b(local: u32, n0: u32, k0: u32, k_len: u32, gate_up: bool, lid: u32) {
    let vecs = p.row_words / 4u;
    for (var idx = lid; idx < CBN * (CBK / 8u); idx += CWG) {
        let n = idx / (CBK / 8u);
        let part = idx % (CBK / 8u);
        var row: u32;
        if gate_up {
            let s = n / (4u * CM);
            let r = n % (4u * CM);
            let i = min(n0 + s * 2u * CM + r % (2u * CM), p.inter - 1u);
            row = select(up_row(local, i), gate_row(local, i), r < 2u * CM);
        } else {
            row = local * p.dim + min(n0 + n, p.dim - 1u);
        }
        let k = k0 + part * 8u;
        var v = vec4<u32>(0u);
        if k < k_len {
            v = wq[row * vecs + k / 8u];
        }
        // Halves past k_len inside the last word group are the row's zero padding.
        for (var c = 0u; c < 4u; c++) {
            let h = unpack_half2(v[c], W_DTYPE);
            cb[n * CBK + part * 8u + 2u * c] = f16(h.x);
            cb[n * CBK + part * 8u + 2u * c + 1u] = f16(h.y);
        }
    }
}

// One K-step of subgroup sg's 4x4 tiles: ca (CBM x CBK, row-major) times its cb rows
// (column-major).
fn multiply(sg: u32, acc: ptr<function, array<CmC, 16>>) {
    for (var i = 0u; i < 4u; i++) {
        let a = coopLoadT<CmA>(&ca[i * CM * CBK], CBK);
        for (var j = 0u; j < 4u; j++) {
            let b = coopLoad<CmB>(&cb[(sg * 4u + j) * CM * CBK], CBK);
            (*acc)[i * 4u + j] = coopMultiplyAdd(a, b, (*acc)[i * 4u + j]);
        }
    }
}

// h[pair, i0 + n] = act(x[token] . gate_i + gb, x[token] . up_i + ub) for the tile's pairs.
@compute @workgroup_size(CWG)
fn moe_gate_up_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
) {
    let local = wid.z;
    let e = p.first_expert + local;
    let rows = coop_tile(e, wid.y, lid);
    if rows == 0u {
        return;
    }
    // Subgroups past NSG (a driver that splits the workgroup finer) redo subgroup sg % NSG's rows:
    // no control flow may depend on the subgroup.
    let sg = sg_id % NSG;
    let i0 = wid.x * NSG * 2u * CM;
    var acc: array<CmC, 16>;
    for (var k0 = 0u; k0 < p.dim; k0 += CBK) {
        for (var idx = lid; idx < CBM * CBK; idx += CWG) {
            let m = idx / CBK;
            let k = k0 + idx % CBK;
            var v = 0.0;
            if m < rows && k < p.dim {
                v = x[(c_pairs[m] / p.top_k) * p.dim + k];
            }
            ca[idx] = f16(v);
        }
        stage_b(local, i0, k0, p.dim, true, lid);
        workgroupBarrier();
        multiply(sg, &acc);
        workgroupBarrier();
    }
    // Tiles (i, j) (gate) and (i, j + 2) (up) of every subgroup at once.
    for (var ij = 0u; ij < 8u; ij++) {
        let i = ij / 2u;
        let j = ij % 2u;
        coopStoreT(acc[i * 4u + j], &cc[sg * 2u * CM * CM], CM);
        coopStoreT(acc[i * 4u + j + 2u], &cc[(sg * 2u + 1u) * CM * CM], CM);
        workgroupBarrier();
        for (var idx = lid; idx < NSG * CM * CM; idx += CWG) {
            let s = idx / (CM * CM);
            let r = (idx / CM) % CM;
            let c = idx % CM;
            let m = i * CM + r;
            let out = i0 + s * 2u * CM + j * CM + c;
            if m < rows && out < p.inter {
                let g = cc[(s * 2u) * CM * CM + r * CM + c] + bias_at(e, gate_col(out));
                let u = cc[(s * 2u + 1u) * CM * CM + r * CM + c] + bias_at(e, up_col(out));
                h_out[c_pairs[m] * p.h_stride + out] = act(g, u);
            }
        }
        workgroupBarrier();
    }
}

// y_slots[pair, r0 + n] = w[pair] * (h[pair] . down_r + db) for the tile's pairs.
@compute @workgroup_size(CWG)
fn moe_down_coop(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_id) sg_id: u32,
) {
    let local = wid.z;
    let e = p.first_expert + local;
    let rows = coop_tile(e, wid.y, lid);
    if rows == 0u {
        return;
    }
    let sg = sg_id % NSG;
    let r0 = wid.x * CBN;
    var acc: array<CmC, 16>;
    for (var k0 = 0u; k0 < p.inter; k0 += CBK) {
        for (var idx = lid; idx < CBM * CBK; idx += CWG) {
            let m = idx / CBK;
            let k = k0 + idx % CBK;
            var v = 0.0;
            if m < rows && k < p.inter {
                let at = c_pairs[m] * p.h_stride + k;
                v = h_in[at / 4u][at % 4u];
            }
            ca[idx] = f16(v);
        }
        stage_b(local, r0, k0, p.inter, false, lid);
        workgroupBarrier();
        multiply(sg, &acc);
        workgroupBarrier();
    }
    for (var ij = 0u; ij < 16u; ij++) {
        let i = ij / 4u;
        let j = ij % 4u;
        coopStoreT(acc[ij], &cc[sg * CM * CM], CM);
        workgroupBarrier();
        for (var idx = lid; idx < NSG * CM * CM; idx += CWG) {
            let s = idx / (CM * CM);
            let m = i * CM + (idx / CM) % CM;
            let r = r0 + (s * 4u + j) * CM + idx % CM;
            if m < rows && r < p.dim {
                let pair = c_pairs[m];
                y_slots[pair * p.dim + r] = route_w[pair] * (cc[idx] + bias_at(e, r));
            }
        }
        workgroupBarrier();
    }
}
