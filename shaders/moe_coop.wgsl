// Prefill grouped expert GEMMs on cooperative matrices (f16 CMxCM inputs, f32 accumulators), the
// same contract as moe_gate_up_gemm / moe_down_gemm in moe.wgsl: this file is appended to moe.wgsl
// (src/kernels/moe_coop.rs), so bindings, parameters and the helpers (gate_row, act, bias_at, ...)
// are moe.wgsl's.
//
// One subgroup per workgroup owns a tile of CBM gathered pairs (rows of one expert's list) by
// 4 x CM weight rows as 4x4 accumulator tiles. Each K-step of CM stages the gathered activations
// (f32 -> f16) and the weight rows (f16/bf16 -> f16) in workgroup memory, zero past the edges; the
// epilogue goes through workgroup memory, where it applies the activation (gate_up) or the
// routing weight (down) and scatters rows to their pairs. Tiles past an expert's count exit
// before any cooperative op (the exit is uniform: the count comes from workgroupUniformLoad).
// Written for CM = 16; src/kernels/mod.rs: coop_source rewrites it for 8x8 adapters.
enable f16;
enable wgpu_cooperative_matrix;

const CM: u32 = 16u;
const CBM: u32 = 4u * CM;
const CBK: u32 = CM;
// Weight rows per tile: gate_up stages 2 CM gate rows then their 2 CM up rows; down 4 CM rows.
const CBN: u32 = 4u * CM;

// Only the cooperative kernels' workgroup size; the subgroup size (one subgroup per workgroup).
override CWG: u32 = 32u;

var<workgroup> ca: array<f16, CBM * CBK>;
var<workgroup> cb: array<f16, CBN * CBK>;
var<workgroup> cc: array<f32, CBM * CBN>;
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

// Word `q` (two 16-bit values) of weight row `row` of the bound chunk.
fn weight_word(row: u32, q: u32) -> u32 {
    let v = wq[row * (p.row_words / 4u) + q / 4u];
    return v[q % 4u];
}

// Stage CBN weight rows x CBK columns from k0, zero past `k_len`. gate_up: tile rows 0..2CM are
// the gate rows of outputs n0.., 2CM..4CM their up rows; down: the rows n0.. of the expert.
fn stage_b(local: u32, n0: u32, k0: u32, k_len: u32, gate_up: bool, lid: u32) {
    for (var idx = lid; idx < CBN * CBK / 2u; idx += CWG) {
        let n = idx / (CBK / 2u);
        let kk = 2u * (idx % (CBK / 2u));
        var row: u32;
        if gate_up {
            let i = min(n0 + n % (2u * CM), p.inter - 1u);
            row = select(up_row(local, i), gate_row(local, i), n < 2u * CM);
        } else {
            row = local * p.dim + min(n0 + n, p.dim - 1u);
        }
        let k = k0 + kk;
        var v = vec2<f32>(0.0);
        if k < k_len {
            v = unpack_half2(weight_word(row, k / 2u), W_DTYPE);
            if k + 1u >= k_len {
                v.y = 0.0;
            }
        }
        cb[n * CBK + kk] = f16(v.x);
        cb[n * CBK + kk + 1u] = f16(v.y);
    }
}

// The 4x4 tiles of one K-step: ca (CBM x CBK, row-major) times cb (stored column-major).
fn multiply(acc: ptr<function, array<coop_mat16x16<f32, C>, 16>>) {
    for (var i = 0u; i < 4u; i++) {
        let a = coopLoadT<coop_mat16x16<f16, A>>(&ca[i * CM * CBK], CBK);
        for (var j = 0u; j < 4u; j++) {
            let b = coopLoad<coop_mat16x16<f16, B>>(&cb[j * CM * CBK], CBK);
            (*acc)[i * 4u + j] = coopMultiplyAdd(a, b, (*acc)[i * 4u + j]);
        }
    }
}

fn store_acc(acc: ptr<function, array<coop_mat16x16<f32, C>, 16>>) {
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            coopStoreT((*acc)[i * 4u + j], &cc[i * CM * CBN + j * CM], CBN);
        }
    }
    workgroupBarrier();
}

// h[pair, i0 + n] = act(x[token] . gate_i + gb, x[token] . up_i + ub) for the tile's pairs.
@compute @workgroup_size(CWG)
fn moe_gate_up_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let local = wid.z;
    let e = p.first_expert + local;
    let rows = coop_tile(e, wid.y, lid);
    if rows == 0u {
        return;
    }
    let i0 = wid.x * 2u * CM;
    var acc: array<coop_mat16x16<f32, C>, 16>;
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
        multiply(&acc);
        workgroupBarrier();
    }
    store_acc(&acc);
    for (var idx = lid; idx < CBM * 2u * CM; idx += CWG) {
        let m = idx / (2u * CM);
        let n = idx % (2u * CM);
        let i = i0 + n;
        if m < rows && i < p.inter {
            let g = cc[m * CBN + n] + bias_at(e, gate_col(i));
            let u = cc[m * CBN + 2u * CM + n] + bias_at(e, up_col(i));
            h_out[c_pairs[m] * p.h_stride + i] = act(g, u);
        }
    }
}

// y_slots[pair, r0 + n] = w[pair] * (h[pair] . down_r + db) for the tile's pairs.
@compute @workgroup_size(CWG)
fn moe_down_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let local = wid.z;
    let e = p.first_expert + local;
    let rows = coop_tile(e, wid.y, lid);
    if rows == 0u {
        return;
    }
    let r0 = wid.x * CBN;
    var acc: array<coop_mat16x16<f32, C>, 16>;
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
        multiply(&acc);
        workgroupBarrier();
    }
    store_acc(&acc);
    for (var idx = lid; idx < CBM * CBN; idx += CWG) {
        let m = idx / CBN;
        let r = r0 + idx % CBN;
        if m < rows && r < p.dim {
            let pair = c_pairs[m];
            y_slots[pair * p.dim + r] = route_w[pair] * (cc[idx] + bias_at(e, r));
        }
    }
}
