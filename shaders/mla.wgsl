// Per-head matrix-vector products of absorbed multi-head latent attention (MODELS.md §6.5):
//   y[t, h, o] = sum_i W[h*out + o, i] * x[t, h, i]
// with W stacked per head ([heads*out, in], e.g. W_UK_h^T or W_UV_h). One invocation per output,
// a workgroup covering WG outputs of one (token, head).

struct Params {
    tokens: u32,
    heads: u32,
    in_dim: u32,
    out_dim: u32,
    x_row_stride: u32,
    x_head_stride: u32,
    x_offset: u32,
    y_row_stride: u32,
    y_head_stride: u32,
    y_offset: u32,
    w_row_words: u32,
    blocks: u32,
}

override WG: u32 = 64u;
override W_DTYPE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

fn weight(row: u32, i: u32) -> f32 {
    let base = row * p.w_row_words;
    if W_DTYPE == DT_F32 {
        return bitcast<f32>(w[base + i]);
    }
    return pick_half(w[base + (i >> 1u)], i, W_DTYPE);
}

@compute @workgroup_size(WG)
fn head_matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = flat_group(wid);
    let th = g / p.blocks;
    if th >= p.tokens * p.heads {
        return;
    }
    let t = th / p.heads;
    let h = th % p.heads;
    let o = (g % p.blocks) * WG + lid.x;
    if o >= p.out_dim {
        return;
    }
    let xb = t * p.x_row_stride + h * p.x_head_stride + p.x_offset;
    let row = h * p.out_dim + o;
    var acc = 0.0;
    for (var i = 0u; i < p.in_dim; i++) {
        acc += weight(row, i) * x[xb + i];
    }
    y[t * p.y_row_stride + h * p.y_head_stride + p.y_offset + o] = acc;
}
