// Prefill projection on cooperative matrices (f16 CMxCM inputs, f32 accumulators):
//   y[t, n] (+)= sum_k x[t, k] * W[n, k] (+ bias[n])
// One subgroup per workgroup owns a 4CM x 4CM block of y as 4x4 accumulator tiles. Each K-step of
// CM stages x (f32 -> f16) and W (f16/bf16 words -> f16) into workgroup memory, zero-padded past
// the edges, and multiplies tile by tile; the epilogue goes through workgroup memory so edges are
// masked and bias / accumulate match the portable gemm. Selected only where Caps.coop_f16 is set.
// Written for CM = 16; src/kernels/mod.rs: coop_source rewrites it for 8x8 adapters.
enable f16;
enable wgpu_cooperative_matrix;

struct Params {
    tokens: u32,
    rows: u32,
    k: u32,
    // u32 words per weight row (16-bit weights: two per word).
    row_words: u32,
    x_stride: u32,
    y_stride: u32,
    first_row: u32,
    bias_dtype: u32,
    accumulate: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const NO_BIAS: u32 = 0xffffffffu;
const CM: u32 = 16u;
const BM: u32 = 4u * CM;
const BN: u32 = 4u * CM;
const BK: u32 = CM;

override W_DTYPE: u32 = 1u;
// The subgroup size: one subgroup is the whole workgroup.
override WG: u32 = 32u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> bias: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// A: BM token rows x BK, row-major. B: BK x BN output columns, stored column-major (each output
// column's BK values contiguous), as W's rows are. C: BM x BN f32, row-major.
var<workgroup> a_tile: array<f16, BM * BK>;
var<workgroup> b_tile: array<f16, BN * BK>;
var<workgroup> c_tile: array<f32, BM * BN>;

fn weight(n: u32, k: u32) -> f32 {
    let word = w[n * p.row_words + k / 2u];
    return pick_half(word, k, W_DTYPE);
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

@compute @workgroup_size(WG)
fn gemm_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_tiles = (p.rows + BN - 1u) / BN;
    let flat = flat_group(wid);
    let m0 = (flat / n_tiles) * BM;
    let n0 = (flat % n_tiles) * BN;
    // No early return for blocks past the last token (the grid's spill-over): cooperative ops need
    // uniform control flow, and every load and store below is masked anyway.
    var acc: array<coop_mat16x16<f32, C>, 16>;
    let steps = (p.k + BK - 1u) / BK;
    for (var s = 0u; s < steps; s++) {
        let k0 = s * BK;
        for (var e = lid; e < BM * BK; e += WG) {
            let r = e / BK;
            let kk = e % BK;
            let t = m0 + r;
            let k = k0 + kk;
            var xv = 0.0;
            if t < p.tokens && k < p.k {
                xv = x[t * p.x_stride + k];
            }
            a_tile[r * BK + kk] = f16(xv);
            let n = n0 + r;
            var wv = 0.0;
            if n < p.rows && k < p.k {
                wv = weight(n, k);
            }
            b_tile[r * BK + kk] = f16(wv);
        }
        workgroupBarrier();
        for (var i = 0u; i < 4u; i++) {
            let a = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[i * CM * BK], BK);
            for (var j = 0u; j < 4u; j++) {
                let b = coopLoad<coop_mat16x16<f16, B>>(&b_tile[j * CM * BK], BK);
                acc[i * 4u + j] = coopMultiplyAdd(a, b, acc[i * 4u + j]);
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            coopStoreT(acc[i * 4u + j], &c_tile[i * CM * BN + j * CM], BN);
        }
    }
    workgroupBarrier();
    for (var e = lid; e < BM * BN; e += WG) {
        let t = m0 + e / BN;
        let n = n0 + e % BN;
        if t < p.tokens && n < p.rows {
            let col = p.first_row + n;
            let i = t * p.y_stride + col;
            var out = c_tile[e] + bias_at(col);
            if p.accumulate != 0u {
                out += y[i];
            }
            y[i] = out;
        }
    }
}
