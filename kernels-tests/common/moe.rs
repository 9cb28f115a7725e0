//! The routed-experts test fixture of kernels-tests/moe.rs (its tiled and cooperative-matrix tests):
//! random blocks (weights already rounded to their dtype), the f64 reference, and one run on the GPU.

use super::Rng;
use wgmoe::internals::gpu::{Context, DType, Tensor, Weight};
use wgmoe::internals::kernels::moe::{moe, moe_decode, moe_prefill, Act, Experts, GateUpLayout, MoeSpec};

pub const GPT_OSS: Act = Act::Clamped {
    limit: 1.0,
    alpha: 1.702,
};

#[derive(Clone, Copy, PartialEq)]
pub enum Path {
    Auto,
    Decode,
    Prefill,
}

/// Host copies of one block's inputs: weights as f32 values already rounded to their dtype.
pub struct Data {
    pub x: Vec<f32>,
    pub ids: Vec<u32>,
    pub w: Vec<f32>,
    pub gate_up: Vec<f32>,
    pub down: Vec<f32>,
    /// The checkpoint bytes of gate_up and down in the weight dtype (what is uploaded).
    pub gate_up_bytes: Vec<u8>,
    pub down_bytes: Vec<u8>,
    pub gate_up_bias: Option<Vec<f32>>,
    pub down_bias: Option<Vec<f32>>,
    pub y0: Vec<f32>,
}

pub fn act(a: Act, g: f64, u: f64) -> f64 {
    match a {
        Act::Silu => g / (1.0 + (-g).exp()) * u,
        Act::Clamped { limit, alpha } => {
            let (l, al) = (limit as f64, alpha as f64);
            let g = g.min(l);
            let u = u.clamp(-l, l);
            (u + 1.0) * g / (1.0 + (-al * g).exp())
        }
    }
}

pub fn dot(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| a as f64 * b).sum()
}

/// One expert on one token row, in f64.
pub fn expert(s: &MoeSpec, d: &Data, e: usize, x: &[f64]) -> Vec<f64> {
    let (dim, i_n) = (s.hidden, s.inter);
    let gu = &d.gate_up[e * 2 * i_n * dim..][..2 * i_n * dim];
    let h: Vec<f64> = (0..i_n)
        .map(|i| {
            let (gr, ur) = match s.gate_up {
                GateUpLayout::Concatenated => (i, i_n + i),
                GateUpLayout::Interleaved => (2 * i, 2 * i + 1),
            };
            let gb = d.gate_up_bias.as_ref().map_or(0.0, |b| b[e * 2 * i_n + gr] as f64);
            let ub = d.gate_up_bias.as_ref().map_or(0.0, |b| b[e * 2 * i_n + ur] as f64);
            let g = dot(&gu[gr * dim..][..dim], x) + gb;
            let u = dot(&gu[ur * dim..][..dim], x) + ub;
            act(s.act, g, u)
        })
        .collect();
    (0..dim)
        .map(|r| {
            dot(&d.down[(e * dim + r) * i_n..][..i_n], &h) + d.down_bias.as_ref().map_or(0.0, |b| b[e * dim + r] as f64)
        })
        .collect()
}

pub fn reference(s: &MoeSpec, d: &Data) -> Vec<f64> {
    let dim = s.hidden;
    let mut y: Vec<f64> = if s.accumulate {
        d.y0.iter().map(|&v| v as f64).collect()
    } else {
        vec![0.0; s.tokens * dim]
    };
    for t in 0..s.tokens {
        let x: Vec<f64> = d.x[t * dim..][..dim].iter().map(|&v| v as f64).collect();
        for j in 0..s.top_k {
            let out = expert(s, d, d.ids[t * s.top_k + j] as usize, &x);
            let w = d.w[t * s.top_k + j] as f64;
            for r in 0..dim {
                y[t * dim + r] += w * out[r];
            }
        }
    }
    y
}

/// `k` distinct experts out of `allowed`, shuffled.
pub fn pick(rng: &mut Rng, allowed: &[u32], k: usize) -> Vec<u32> {
    let mut v = allowed.to_vec();
    for i in 0..k {
        let j = i + rng.below(v.len() - i);
        v.swap(i, j);
    }
    v.truncate(k);
    v
}

/// Random inputs: experts `idle` receive no token; token 2 (if any) copies token 0's experts.
pub fn make_data(s: &MoeSpec, dtype: DType, bias: bool, idle: &[u32], seed: u64) -> Data {
    let mut rng = Rng::new(seed);
    let (e, d, i) = (s.experts, s.hidden, s.inter);
    let allowed: Vec<u32> = (0..e as u32).filter(|x| !idle.contains(x)).collect();
    let mut ids: Vec<u32> = (0..s.tokens).flat_map(|_| pick(&mut rng, &allowed, s.top_k)).collect();
    if s.tokens > 2 {
        let first = ids[..s.top_k].to_vec();
        ids[2 * s.top_k..][..s.top_k].copy_from_slice(&first);
    }
    // Biases of block-quantised experts are f32.
    let bias_dtype = bias_dtype(dtype);
    let round = |v: Vec<f32>| v.into_iter().map(|x| bias_dtype.round(x)).collect::<Vec<f32>>();
    let ga = 3.0 / (d as f32).sqrt();
    let da = 3.0 / (i as f32).sqrt();
    let x = rng.vec(s.tokens * d, 1.0);
    let w = (0..s.tokens * s.top_k).map(|_| 0.05 + rng.unit() as f32).collect();
    let (gate_up, gate_up_bytes) = weight_values(&mut rng, dtype, e * 2 * i, d, ga);
    let (down, down_bytes) = weight_values(&mut rng, dtype, e * d, i, da);
    Data {
        x,
        ids,
        w,
        gate_up,
        down,
        gate_up_bytes,
        down_bytes,
        gate_up_bias: bias.then(|| round(rng.vec(e * 2 * i, 0.5))),
        down_bias: bias.then(|| round(rng.vec(e * d, 0.5))),
        y0: rng.vec(s.tokens * d, 1.0),
    }
}

/// The dtype of the experts' biases: f32 beside block-quantised experts.
pub fn bias_dtype(dtype: DType) -> DType {
    if dtype.is_packed() {
        DType::F32
    } else {
        dtype
    }
}

/// Random `[rows, cols]` weights of `dtype` about `scale` in size: the values the GPU sees and
/// their checkpoint bytes. Block formats dequantise random blocks on the CPU (ggml's formulas).
pub fn weight_values(rng: &mut Rng, dtype: DType, rows: usize, cols: usize, scale: f32) -> (Vec<f32>, Vec<u8>) {
    if dtype.is_packed() {
        let bytes = wgmoe::internals::gpu::Format::of(dtype)
            .random_rows(rows, cols, rng.next_u64(), scale)
            .expect("whole blocks");
        (wgmoe::internals::model::source::f32_values(dtype, &bytes), bytes)
    } else {
        let v: Vec<f32> = rng
            .vec(rows * cols, scale)
            .into_iter()
            .map(|x| dtype.round(x))
            .collect();
        let bytes = dtype.encode(&v);
        (v, bytes)
    }
}

/// Per-weight binding limits making chunks of two experts each (`None`: one chunk).
pub fn upload(
    ctx: &Context,
    dtype: DType,
    rows: usize,
    cols: usize,
    group: usize,
    bytes: &[u8],
    chunked: bool,
) -> Weight {
    let group_bytes = (wgmoe::internals::gpu::Format::of(dtype).row_stride(cols) * group) as u64;
    let limit = if chunked {
        2 * group_bytes + 32
    } else {
        ctx.caps.max_storage_binding
    };
    Weight::upload_with_binding_limit(ctx, "w", dtype, rows, cols, group, bytes, limit).unwrap()
}

/// The block on the GPU: `y`, and whether its expert GEMMs ran on cooperative matrices.
pub fn run_gpu(ctx: &Context, s: &MoeSpec, dtype: DType, d: &Data, chunked: bool, path: Path) -> (Vec<f32>, bool) {
    let (e, dim, i) = (s.experts, s.hidden, s.inter);
    let gu = upload(ctx, dtype, e * 2 * i, dim, 2 * i, &d.gate_up_bytes, chunked);
    let dn = upload(ctx, dtype, e * dim, i, dim, &d.down_bytes, chunked);
    if chunked {
        assert!(gu.chunks.len() >= 3 && dn.chunks.len() >= 3, "chunking not exercised");
    }
    let gub = d
        .gate_up_bias
        .as_ref()
        .map(|b| Weight::from_f32(ctx, "gub", bias_dtype(dtype), e, 2 * i, b).unwrap());
    let dnb = d
        .down_bias
        .as_ref()
        .map(|b| Weight::from_f32(ctx, "dnb", bias_dtype(dtype), e, dim, b).unwrap());
    let x = Tensor::from_f32(ctx, "x", &d.x);
    let ids = Tensor::from_u32(ctx, "ids", &d.ids);
    let w = Tensor::from_f32(ctx, "w", &d.w);
    let y = Tensor::from_f32(ctx, "y", &d.y0);
    let f = match path {
        Path::Auto => moe,
        Path::Decode => moe_decode,
        Path::Prefill => moe_prefill,
    };
    let experts = Experts {
        gate_up: &gu,
        down: &dn,
        gate_up_bias: gub.as_ref(),
        down_bias: dnb.as_ref(),
    };
    let ds = f(ctx, *s, experts, &x, &ids, &w, &y).unwrap();
    ctx.submit(&ds.iter().collect::<Vec<_>>());
    let coop = ds.iter().any(|d| d.label.contains("coop"));
    (y.read_f32(ctx).unwrap(), coop)
}

pub fn spec(tokens: usize, experts: usize, top_k: usize, hidden: usize, inter: usize) -> MoeSpec {
    MoeSpec {
        tokens,
        experts,
        top_k,
        hidden,
        inter,
        gate_up: GateUpLayout::Concatenated,
        act: Act::Silu,
        accumulate: false,
    }
}

/// The bound for expert GEMMs on cooperative matrices: x and h enter the tiles as f16 (relative
/// error 2^-11 each, NMSE ~(2^-11)^2 / 3 ~ 8e-8 per rounding, two roundings on the way to y):
/// <= 1e-6 with margin, while an indexing error still shows up as NMSE >= 1e-4.
pub const COOP_NMSE: f64 = 1e-6;
