//! The correctness half of `wgmoe bench-kernels`, as llama.cpp's test-backend-ops shares cases
//! between its perf and eval modes: each timed case names its kernel and timed shape in a
//! [`Probe`]; [`check`] runs the same kernel (same weight format, same path choice: matvec or
//! gemm, cooperative matrices where the timed case has them, decode or prefill experts, the
//! attention plan) at a reduced shape on deterministic random inputs, reads the output back and
//! compares it with an f64 CPU reference: NMSE = sum((gpu - ref)^2) / sum(ref^2).
//!
//! Weights are random checkpoint rows ([`Format::random_rows`]); the reference reads the same
//! bytes through the library's dequantisers (`model::source::f32_values`), so a packed format is
//! held to the bound of f32 arithmetic, not to its quantisation error.
//!
//! Exact kernels (argmax, sample) report `nmse: None`: their check is a token, not a vector. argmax
//! must return the CPU's argmax; sample (fixed seed and position, so a known uniform number) must
//! return the token an f64 implementation of the same top-k / top-p / inverse-CDF draw picks, or,
//! where that draw lies within 1e-5 of a boundary f32 rounding could move, a token the top-k /
//! top-p filter keeps.
//!
//! Tolerances (per kernel, [`Check::tolerance`]): the kernel tests' own bounds (kernels-tests/*.rs)
//! with a margin of 10 for adapters whose exp / sin / reduction order differ from lavapipe's. An
//! indexing or formula error gives NMSE >= 1e-4 (the test that perturbs outputs by 1% shows it).
//!
//! | kernel | bound | why |
//! |---|---|---|
//! | rmsnorm, matvec, gemm, lm_head, router, moe | 1e-8 | f32 sums (tests: 1e-9; lavapipe ~1e-13) |
//! | gemm, moe on cooperative matrices | 1e-5 | x and the experts' h rounded to f16 in the tiles (tests: 1e-6) |
//! | attention, rope, swiglu | 1e-6 | f32 exp / sin / cos (tests: 1e-7; lavapipe ~1e-14) |
//! | embedding | 1e-12 | a gather of the same dequantised values (tests: exact) |
//! | argmax, sample | exact | the token (nmse null) |

use crate::error::{Error, Result};
use crate::gpu::{Context, DType, Format, Tensor, Weight};
use crate::kernels;
use kernels::attention::{AttnKernel, AttnPlan, AttnSpec, AttnTuning};
use kernels::moe::MoeSpec;
use kernels::rope::RopeSpec;
use kernels::router::{RouterSpec, Scoring};
use kernels::sampling::SampleSpec;
use kernels::swiglu::{Act, GateUpLayout, SwigluSpec};

/// Token rows a check runs where the timed case has more than [`DECODE_TOKENS`]: still above every
/// switch to a prefill path (matvec -> gemm, expert GEMVs -> grouped GEMMs, rows -> tiled attention).
pub const REDUCED_PREFILL: usize = 16;
/// The most token rows the decode paths take (`MATVEC_MAX_TOKENS`, `DECODE_MAX_TOKENS`; attention
/// tiles from `TILE_MIN_TOKENS`): a timed case at or below it keeps its token count.
const DECODE_TOKENS: usize = 8;
/// Matrix rows a check keeps at most: odd, so no workgroup's row count divides it.
const REDUCED_ROWS: usize = 75;
/// Columns (K) a check keeps at most (then the fewest that keep the timed row's format).
const REDUCED_COLS: usize = 512;
/// Keys a decode attention check sees, and the cache it has room for.
const REDUCED_CONTEXT: usize = 48;
const REDUCED_MAX_SEQ: usize = 64;
/// Logits an argmax or sample check reduces.
const REDUCED_VOCAB: usize = 8191;

/// f32 arithmetic against f64 (rmsnorm, the matrix products off cooperative matrices, router weights).
const F32_NMSE: f64 = 1e-8;
/// Kernels with exp / sin / cos in f32 (attention, rope, swiglu).
const TRANSCENDENTAL_NMSE: f64 = 1e-6;
/// Cooperative matrices: x (and the experts' h) rounded to f16 in the tiles.
const COOP_NMSE: f64 = 1e-5;
/// A gather: the same dequantised values on both sides.
const GATHER_NMSE: f64 = 1e-12;

/// What a timed case runs, at its timed shape; [`check`] reduces it.
#[derive(Clone, Debug)]
pub enum Probe {
    /// RMSNorm of `tokens` rows of `dim` with a gain of `gain` precision.
    Rmsnorm {
        tokens: usize,
        dim: usize,
        eps: f32,
        gain: DType,
    },
    /// `y = x @ W^T`, W `[rows, cols]` in the case's format (its fallback for such rows).
    Matmul {
        rows: usize,
        cols: usize,
        tokens: usize,
    },
    Router(RouterSpec),
    /// The experts in the case's format (down in its fallback where `inter` is not whole blocks).
    Moe(MoeSpec),
    /// Attention of `spec.tokens` queries from position `pos0`; `shared`: keys and values are one
    /// cache (MLA's latent rows).
    Attention {
        spec: AttnSpec,
        pos0: usize,
        shared: bool,
    },
    Rope {
        spec: RopeSpec,
        pos0: u32,
    },
    /// Gather one row of a `[vocab, dim]` table in the case's format.
    Embedding {
        vocab: usize,
        dim: usize,
    },
    Swiglu(SwigluSpec),
    Argmax {
        vocab: usize,
    },
    Sample {
        spec: SampleSpec,
        pos0: u32,
    },
}

/// The verdict of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// NMSE against the f64 reference; `None` for exact checks (argmax, sample) and where the
    /// output was not finite (then `passed` is false).
    pub nmse: Option<f64>,
    /// The bound `nmse` is held to (0 for exact checks).
    pub tolerance: f64,
    /// The reduced shape it ran at, and what was compared.
    pub detail: String,
    pub passed: bool,
}

impl Check {
    /// A vector check: passed when `nmse` is finite and within `tolerance`.
    pub fn from_nmse(nmse: f64, tolerance: f64, detail: String) -> Self {
        Self {
            nmse: nmse.is_finite().then_some(nmse),
            tolerance,
            detail,
            passed: nmse.is_finite() && nmse <= tolerance,
        }
    }

    /// An exact check (a token): no NMSE.
    pub fn exact(passed: bool, detail: String) -> Self {
        Self {
            nmse: None,
            tolerance: 0.0,
            detail,
            passed,
        }
    }
}

/// `sum((got - want)^2) / sum(want^2)` (the plain sum of squares where the reference is all
/// zeros); infinite when an output is not finite or the lengths differ.
pub fn nmse(got: &[f32], want: &[f64]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0.0, 0.0);
    for (&g, &w) in got.iter().zip(want) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

/// Run `probe`'s kernel with weights of `dtype` at its reduced shape and compare it with the f64
/// reference. `perturb` scales the GPU's output by `1 + perturb` before the comparison (and moves
/// an exact check's token by one): the check of the check.
pub fn check(ctx: &Context, probe: &Probe, dtype: DType, perturb: Option<f32>) -> Result<Check> {
    let c = Checker { ctx, perturb };
    ctx.scoped("bench-kernels correctness check", || match probe {
        Probe::Rmsnorm { tokens, dim, eps, gain } => c.rmsnorm(reduce_tokens(*tokens), *dim, *eps, *gain),
        Probe::Matmul { rows, cols, tokens } => c.matmul(dtype, *rows, *cols, *tokens),
        Probe::Router(spec) => c.router(spec),
        Probe::Moe(spec) => c.moe(dtype, spec),
        Probe::Attention { spec, pos0, shared } => c.attention(spec, *pos0, *shared),
        Probe::Rope { spec, pos0 } => c.rope(spec, *pos0),
        Probe::Embedding { vocab, dim } => c.embedding(dtype, *vocab, *dim),
        Probe::Swiglu(spec) => c.swiglu(spec),
        Probe::Argmax { vocab } => c.argmax(*vocab),
        Probe::Sample { spec, pos0 } => c.sample(spec, *pos0),
    })
}

/// The token rows a check runs for a timed case of `t`.
pub fn reduce_tokens(t: usize) -> usize {
    if t <= DECODE_TOKENS {
        t
    } else {
        REDUCED_PREFILL
    }
}

/// The columns (K) a check runs for a timed row of `cols` in `dtype`: `cols` up to
/// [`REDUCED_COLS`], else the fewest from 256 up whose row takes the same format
/// ([`DType::for_row`]: whole 256-blocks for k-quants, or their 32-block fallback).
pub fn reduce_cols(dtype: DType, cols: usize) -> usize {
    if cols <= REDUCED_COLS {
        return cols;
    }
    let want = dtype.for_row(cols);
    (256..=REDUCED_COLS)
        .step_by(32)
        .find(|&c| dtype.for_row(c) == want)
        .unwrap_or(cols)
}

/// xorshift64*: deterministic inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) as f32
    }
    /// `n` values uniform in [-a, a).
    fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| (self.unit() * 2.0 - 1.0) * a).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// `k` distinct values below `n`, in random order.
    fn distinct(&mut self, n: usize, k: usize) -> Vec<u32> {
        let mut v: Vec<u32> = (0..n as u32).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            v.swap(i, j);
        }
        v.truncate(k);
        v
    }
}

/// A random `[rows, cols]` weight of `dtype` (checkpoint rows about `scale` in size, groups of
/// `group` rows) and the values the GPU reads from it, as the CPU dequantises them.
fn random_weight(
    ctx: &Context,
    label: &str,
    dtype: DType,
    (rows, cols, group): (usize, usize, usize),
    seed: u64,
    scale: f32,
) -> Result<(Weight, Vec<f64>)> {
    let bytes = Format::of(dtype)
        .random_rows(rows, cols, seed, scale)
        .ok_or_else(|| Error::unsupported(format!("{label}: {cols} columns are not whole {} blocks", dtype.name())))?;
    let w = Weight::upload(ctx, label, dtype, rows, cols, group, &bytes)?;
    let values = crate::model::source::f32_values(dtype, &bytes)
        .into_iter()
        .map(f64::from)
        .collect();
    Ok((w, values))
}

fn dot(x: &[f32], w: &[f64]) -> f64 {
    x.iter().zip(w).map(|(&a, &b)| a as f64 * b).sum()
}

fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

/// Whether a dispatch runs on cooperative matrices (their pipelines' labels say so).
pub fn coop(dispatches: &[crate::gpu::Dispatch]) -> bool {
    dispatches.iter().any(|d| d.label.contains("coop"))
}

struct Checker<'a> {
    ctx: &'a Context,
    perturb: Option<f32>,
}

impl Checker<'_> {
    /// Submit, read `out` back (its first `len` values) and compare.
    fn compare(
        &self,
        dispatches: &[crate::gpu::Dispatch],
        out: &Tensor,
        want: &[f64],
        tolerance: f64,
        detail: String,
    ) -> Result<Check> {
        self.ctx.submit(&dispatches.iter().collect::<Vec<_>>());
        let mut got = out.read_f32(self.ctx)?;
        got.truncate(want.len());
        if let Some(p) = self.perturb {
            got.iter_mut().for_each(|v| *v *= 1.0 + p);
        }
        Ok(Check::from_nmse(nmse(&got, want), tolerance, detail))
    }

    /// Submit and read token `out[0]`, moved by one when perturbed.
    fn token(&self, d: &crate::gpu::Dispatch, out: &Tensor, vocab: usize) -> Result<usize> {
        self.ctx.submit(&[d]);
        let t = out.read_u32(self.ctx)?[0] as usize;
        Ok(if self.perturb.is_some() { (t + 1) % vocab } else { t })
    }

    fn rmsnorm(&self, rows: usize, dim: usize, eps: f32, gain: DType) -> Result<Check> {
        use kernels::rmsnorm::{rmsnorm, NormOut, NormShape};
        let ctx = self.ctx;
        let mut rng = Rng::new(1);
        let x = rng.vec(rows * dim, 2.0);
        let g: Vec<f32> = (0..dim).map(|_| 1.0 + (rng.unit() - 0.5) * 0.6).collect();
        let w = Weight::from_f32(ctx, "check.gain", gain, 1, dim, &g)?;
        let (xt, yt) = (
            Tensor::from_f32(ctx, "check.x", &x),
            Tensor::zeros(ctx, "check.y", rows * dim),
        );
        let d = rmsnorm(ctx, NormShape::new(rows, dim, eps), &xt, None, &w, NormOut::To(&yt))?;
        let mut want = vec![0.0; rows * dim];
        for (r, out) in want.chunks_exact_mut(dim).enumerate() {
            let row = &x[r * dim..][..dim];
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / dim as f64;
            let scale = 1.0 / (ms + eps as f64).sqrt();
            for i in 0..dim {
                out[i] = gain.round(g[i]) as f64 * row[i] as f64 * scale;
            }
        }
        self.compare(&[d], &yt, &want, F32_NMSE, format!("T={rows} D={dim}"))
    }

    fn matmul(&self, dtype: DType, rows: usize, cols: usize, tokens: usize) -> Result<Check> {
        use kernels::matmul::{matmul, MatmulSpec};
        let ctx = self.ctx;
        let wd = dtype.for_row(cols);
        let (n, k, t) = (rows.min(REDUCED_ROWS), reduce_cols(dtype, cols), reduce_tokens(tokens));
        let mut rng = Rng::new(2);
        let x = rng.vec(t * k, 1.0);
        let (w, wv) = random_weight(ctx, "check.w", wd, (n, k, 1), 2, 1.0 / (k as f32).sqrt())?;
        let (xt, yt) = (
            Tensor::from_f32(ctx, "check.x", &x),
            Tensor::zeros(ctx, "check.y", t * n),
        );
        let ds = matmul(ctx, MatmulSpec::packed(t, &w), &xt, &w, None, &yt)?;
        let want: Vec<f64> = (0..t * n)
            .map(|i| dot(&x[i / n * k..][..k], &wv[i % n * k..][..k]))
            .collect();
        let on_coop = coop(&ds);
        let detail = format!("{} [{n}, {k}] T={t}{}", wd.name(), if on_coop { " (coop)" } else { "" });
        let tol = if on_coop { COOP_NMSE } else { F32_NMSE };
        self.compare(&ds, &yt, &want, tol, detail)
    }

    fn router(&self, timed: &RouterSpec) -> Result<Check> {
        if timed.groups.is_some() || timed.shared.is_some() {
            return Err(Error::unsupported(
                "the router check covers softmax / sigmoid scores without groups or shared slots",
            ));
        }
        let ctx = self.ctx;
        let spec = RouterSpec {
            tokens: reduce_tokens(timed.tokens),
            ..*timed
        };
        let (t, e, k) = (spec.tokens, spec.experts, spec.top_k);
        // Each token's logits a shuffled ladder 0.05 apart: no two experts within f32 rounding of a tie.
        let mut rng = Rng::new(3);
        let logits: Vec<f32> = (0..t)
            .flat_map(|_| rng.distinct(e, e).into_iter().map(|r| r as f32 * 0.05 - 1.0))
            .collect();
        let lt = Tensor::from_f32(ctx, "check.logits", &logits);
        let (ids, weights) = (
            Tensor::zeros(ctx, "check.ids", t * k),
            Tensor::zeros(ctx, "check.w", t * k),
        );
        let d = kernels::router::router(ctx, &spec, &lt, None, &ids, &weights)?;
        ctx.submit(&[&d]);
        // Weights scattered per (token, expert): a wrong id moves weight to another expert.
        let (gi, gw) = (ids.read_u32(ctx)?, weights.read_f32(ctx)?);
        let mut got = vec![0f32; t * e];
        for i in 0..t * k {
            match got.get_mut(i / k * e + gi[i] as usize) {
                Some(slot) if (gi[i] as usize) < e => *slot += gw[i],
                _ => got[0] = f32::NAN,
            }
        }
        if let Some(p) = self.perturb {
            got.iter_mut().for_each(|v| *v *= 1.0 + p);
        }
        let mut want = vec![0f64; t * e];
        for (row, out) in logits.chunks_exact(e).zip(want.chunks_exact_mut(e)) {
            let s: Vec<f64> = match spec.scoring {
                Scoring::Softmax => {
                    let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
                    let z: f64 = row.iter().map(|&l| (l as f64 - m).exp()).sum();
                    row.iter().map(|&l| (l as f64 - m).exp() / z).collect()
                }
                Scoring::Sigmoid => row.iter().map(|&l| 1.0 / (1.0 + (-(l as f64)).exp())).collect(),
            };
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
            let chosen = &order[..k];
            let z = if spec.renormalize {
                chosen.iter().map(|&i| s[i]).sum::<f64>() + if spec.scoring == Scoring::Sigmoid { 1e-20 } else { 0.0 }
            } else {
                1.0
            };
            for &i in chosen {
                out[i] = s[i] / z * spec.scale as f64;
            }
        }
        Ok(Check::from_nmse(
            nmse(&got, &want),
            F32_NMSE,
            format!("E={e} k={k} T={t}: weights per (token, expert)"),
        ))
    }

    fn moe(&self, dtype: DType, timed: &MoeSpec) -> Result<Check> {
        use kernels::moe::{moe, Experts};
        let ctx = self.ctx;
        let (gu_dtype, down_dtype) = (dtype.for_row(timed.hidden), dtype.for_row(timed.inter));
        let s = MoeSpec {
            tokens: reduce_tokens(timed.tokens),
            experts: timed.experts.min(timed.top_k + 2),
            hidden: reduce_cols(dtype, timed.hidden),
            inter: reduce_cols(dtype, timed.inter),
            ..*timed
        };
        let (t, e, k, dim, i_n) = (s.tokens, s.experts, s.top_k, s.hidden, s.inter);
        let mut rng = Rng::new(4);
        let x = rng.vec(t * dim, 1.0);
        let ids: Vec<u32> = (0..t).flat_map(|_| rng.distinct(e, k)).collect();
        let w: Vec<f32> = (0..t * k).map(|_| 0.05 + rng.unit()).collect();
        let y0 = rng.vec(t * dim, 1.0);
        let (gu, guv) = random_weight(
            ctx,
            "check.gate_up",
            gu_dtype,
            (e * 2 * i_n, dim, 2 * i_n),
            5,
            2.0 / (dim as f32).sqrt(),
        )?;
        let (dn, dnv) = random_weight(
            ctx,
            "check.down",
            down_dtype,
            (e * dim, i_n, dim),
            6,
            2.0 / (i_n as f32).sqrt(),
        )?;
        let yt = Tensor::from_f32(ctx, "check.y", &y0);
        let experts = Experts {
            gate_up: &gu,
            down: &dn,
            gate_up_bias: None,
            down_bias: None,
        };
        let (xt, it, wt) = (
            Tensor::from_f32(ctx, "check.x", &x),
            Tensor::from_u32(ctx, "check.ids", &ids),
            Tensor::from_f32(ctx, "check.w", &w),
        );
        let ds = moe(ctx, s, experts, &xt, &it, &wt, &yt)?;
        let mut want: Vec<f64> = if s.accumulate {
            y0.iter().map(|&v| v as f64).collect()
        } else {
            vec![0.0; t * dim]
        };
        for tok in 0..t {
            let xr = &x[tok * dim..][..dim];
            for j in 0..k {
                let ex = ids[tok * k + j] as usize;
                let gate_up = &guv[ex * 2 * i_n * dim..][..2 * i_n * dim];
                let h = expert_h(s.act, s.gate_up, xr, gate_up, dim, i_n);
                for r in 0..dim {
                    let down = &dnv[(ex * dim + r) * i_n..][..i_n];
                    let out: f64 = h.iter().zip(down).map(|(a, b)| a * b).sum();
                    want[tok * dim + r] += w[tok * k + j] as f64 * out;
                }
            }
        }
        let on_coop = coop(&ds);
        let detail = format!(
            "{}{} E={e} k={k} D={dim} I={i_n} T={t}{}",
            gu_dtype.name(),
            if down_dtype != gu_dtype {
                format!(" (down {})", down_dtype.name())
            } else {
                String::new()
            },
            if on_coop { " (coop)" } else { "" }
        );
        self.compare(&ds, &yt, &want, if on_coop { COOP_NMSE } else { F32_NMSE }, detail)
    }

    fn attention(&self, timed: &AttnSpec, timed_pos0: usize, shared: bool) -> Result<Check> {
        use kernels::attention::{attention, plan};
        let ctx = self.ctx;
        let t = reduce_tokens(timed.tokens);
        let pos0 = if timed_pos0 > 0 { REDUCED_CONTEXT - t } else { 0 };
        // The timed case's kernel: rows (with split-KV where it splits, at 12-key chunks) or tiles.
        let tuning = match plan(ctx, timed)? {
            AttnPlan::Rows { heads, chunks, .. } => AttnTuning {
                kernel: AttnKernel::Rows,
                max_chunks: chunks.min(4),
                min_chunk: REDUCED_CONTEXT / 4,
                heads_per_group: heads,
            },
            AttnPlan::Tiled { .. } => AttnTuning {
                kernel: AttnKernel::Tiled,
                ..AttnTuning::default()
            },
        };
        let s = AttnSpec {
            tokens: t,
            max_seq: REDUCED_MAX_SEQ,
            tuning,
            ..*timed
        };
        if s.sinks || s.window.is_some() {
            return Err(Error::unsupported("the attention check covers no sinks and no window"));
        }
        let mut rng = Rng::new(7);
        let q = rng.vec(
            (t - 1) * s.q_row_stride + (s.heads - 1) * s.q_head_stride + s.k_dim,
            1.0,
        );
        let cache_len = |stride: usize| s.max_seq * stride;
        let k = rng.vec(cache_len(s.k_stride), 2.0);
        let v = if shared {
            k.clone()
        } else {
            rng.vec(cache_len(s.v_stride), 1.0)
        };
        let words = |x: &[f32]| s.kv_dtype.encode(x, s.kv_row);
        let held = |x: &[f32]| s.kv_dtype.decode(&words(x), x.len(), s.kv_row);
        let (kh, vh) = (held(&k), if shared { held(&k) } else { held(&v) });
        let kt = Tensor::from_u32(ctx, "check.k", &words(&k));
        let vt = if shared {
            kt.clone()
        } else {
            Tensor::from_u32(ctx, "check.v", &words(&v))
        };
        let (qt, ot) = (
            Tensor::from_f32(ctx, "check.q", &q),
            Tensor::zeros(ctx, "check.o", t * s.heads * s.v_dim),
        );
        let step = kernels::step::new(ctx, pos0 as u32, t as u32);
        let d = attention(ctx, s, &qt, &kt, &vt, None, &step, &ot)?;
        let group = s.heads / s.kv_heads;
        let mut want = vec![0.0; t * s.heads * s.v_dim];
        for tok in 0..t {
            let pos = pos0 + tok;
            for h in 0..s.heads {
                let g = h / group;
                let qv = &q[tok * s.q_row_stride + h * s.q_head_stride..][..s.k_dim];
                let scores: Vec<f64> = (0..=pos)
                    .map(|j| {
                        let kv = &kh[j * s.k_stride + g * s.k_head_stride..][..s.k_dim];
                        s.scale as f64 * qv.iter().zip(kv).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                    })
                    .collect();
                let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let den: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                let o = &mut want[(tok * s.heads + h) * s.v_dim..][..s.v_dim];
                for (j, sc) in scores.iter().enumerate() {
                    let p = (sc - m).exp() / den;
                    let vv = &vh[s.v_offset + j * s.v_stride + g * s.v_head_stride..][..s.v_dim];
                    for (od, &x) in o.iter_mut().zip(vv) {
                        *od += p * x as f64;
                    }
                }
            }
        }
        let how = match tuning.kernel {
            AttnKernel::Tiled => "tiled".to_string(),
            _ => format!("rows, up to {} key chunks", tuning.max_chunks.max(1)),
        };
        let detail = format!(
            "H={} T={t} ctx={} {} cache, {how}",
            s.heads,
            pos0 + t,
            s.kv_dtype.name()
        );
        self.compare(&[d], &ot, &want, TRANSCENDENTAL_NMSE, detail)
    }

    fn rope(&self, spec: &RopeSpec, pos0: u32) -> Result<Check> {
        let ctx = self.ctx;
        let half = spec.rot_dims / 2;
        // The default table (theta 10000); the angle is the f32 product `pos * inv`, as HF forms it.
        let inv: Vec<f32> = (0..half)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / spec.rot_dims as f32))
            .collect();
        let len = (spec.tokens - 1) * spec.row_stride + spec.heads * spec.head_stride;
        let x = Rng::new(8).vec(len, 1.0);
        let (xt, it) = (
            Tensor::from_f32(ctx, "check.x", &x),
            Tensor::from_f32(ctx, "check.inv", &inv),
        );
        let step = kernels::step::new(ctx, pos0, spec.tokens as u32);
        let d = kernels::rope::rope(ctx, &xt, *spec, &it, &step)?;
        let mut want: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let af = spec.attention_factor as f64;
        for t in 0..spec.tokens {
            let p = (pos0 as usize + t) as f32;
            for h in 0..spec.heads {
                let base = t * spec.row_stride + h * spec.head_stride + spec.rot_offset;
                for (i, &f) in inv.iter().enumerate() {
                    let angle = (p * f) as f64;
                    let (c, sn) = (angle.cos() * af, angle.sin() * af);
                    let (a, b) = match spec.layout {
                        kernels::rope::RopeLayout::Half => (base + i, base + i + half),
                        kernels::rope::RopeLayout::Interleaved => (base + 2 * i, base + 2 * i + 1),
                    };
                    let (xa, xb) = (x[a] as f64, x[b] as f64);
                    want[a] = xa * c - xb * sn;
                    want[b] = xb * c + xa * sn;
                }
            }
        }
        let detail = format!("H={} hd={} T={} pos={pos0}", spec.heads, spec.rot_dims, spec.tokens);
        self.compare(&[d], &xt, &want, TRANSCENDENTAL_NMSE, detail)
    }

    fn embedding(&self, dtype: DType, vocab: usize, dim: usize) -> Result<Check> {
        let ctx = self.ctx;
        let wd = dtype.for_row(dim);
        let rows = vocab.min(REDUCED_ROWS);
        let (table, values) = random_weight(ctx, "check.embed", wd, (rows, dim, 1), 9, 0.5)?;
        let id = rows - 2;
        let (ids, out) = (
            Tensor::from_u32(ctx, "check.ids", &[id as u32]),
            Tensor::zeros(ctx, "check.out", dim),
        );
        let ds = kernels::embedding::embedding(ctx, &table, &ids, 1, &out)?;
        let want = values[id * dim..][..dim].to_vec();
        self.compare(
            &ds,
            &out,
            &want,
            GATHER_NMSE,
            format!("{} V={rows} D={dim} id={id}", wd.name()),
        )
    }

    fn swiglu(&self, spec: &SwigluSpec) -> Result<Check> {
        let ctx = self.ctx;
        let s = *spec;
        let gu = Rng::new(10).vec((s.tokens - 1) * s.in_stride + 2 * s.inter, 4.0);
        let (gt, ot) = (
            Tensor::from_f32(ctx, "check.gu", &gu),
            Tensor::zeros(ctx, "check.out", (s.tokens - 1) * s.out_stride + s.inter),
        );
        let d = kernels::swiglu::swiglu(ctx, s, &gt, &ot)?;
        let mut want = vec![0.0; (s.tokens - 1) * s.out_stride + s.inter];
        for t in 0..s.tokens {
            let row = &gu[t * s.in_stride..];
            for i in 0..s.inter {
                let (g, u) = match s.layout {
                    GateUpLayout::Concatenated => (row[i] as f64, row[s.inter + i] as f64),
                    GateUpLayout::Interleaved => (row[2 * i] as f64, row[2 * i + 1] as f64),
                };
                want[t * s.out_stride + i] = act(s.act, g, u);
            }
        }
        self.compare(
            &[d],
            &ot,
            &want,
            TRANSCENDENTAL_NMSE,
            format!("I={} T={}", s.inter, s.tokens),
        )
    }

    fn argmax(&self, vocab: usize) -> Result<Check> {
        let ctx = self.ctx;
        let v = vocab.min(REDUCED_VOCAB);
        let logits = Rng::new(11).vec(v, 8.0);
        let (lt, out) = (
            Tensor::from_f32(ctx, "check.logits", &logits),
            Tensor::zeros(ctx, "check.token", 4),
        );
        let spec = kernels::sampling::ArgmaxSpec { vocab: v, row: 0 };
        let d = kernels::sampling::argmax(ctx, &lt, spec, &out, 0)?;
        let got = self.token(&d, &out, v)?;
        let want = cpu_argmax(&logits);
        Ok(Check::exact(
            got == want,
            format!("V={v}: token {got} == CPU argmax {want}"),
        ))
    }

    fn sample(&self, timed: &SampleSpec, pos0: u32) -> Result<Check> {
        let ctx = self.ctx;
        let v = timed.vocab.min(REDUCED_VOCAB);
        let spec = SampleSpec { vocab: v, ..*timed };
        // A language model's few plausible tokens: 64 lifted well above the rest.
        let mut rng = Rng::new(12);
        let mut logits = rng.vec(v, 2.0);
        for _ in 0..64 {
            let i = rng.below(v);
            logits[i] += 15.0;
        }
        let (lt, out) = (
            Tensor::from_f32(ctx, "check.logits", &logits),
            Tensor::zeros(ctx, "check.token", 4),
        );
        let step = kernels::step::new(ctx, pos0, 1);
        let d = kernels::sampling::sample(ctx, &lt, spec, &step, &out, 0)?;
        let got = self.token(&d, &out, v)?;
        let u = kernels::sampling::sample_uniform(spec.seed, pos0);
        let (kept, draw) = cpu_sample(&logits, &spec, u);
        let allowed = kept.get(got).is_some_and(|&m| m > 0.0);
        let (passed, what) = match draw {
            Some(want) => (got == want, format!("token {got} == f64 draw {want}")),
            None => (allowed, format!("token {got} kept by top-k/top-p (draw at a boundary)")),
        };
        Ok(Check::exact(
            passed && allowed,
            format!(
                "V={v} T={} top-k {} top-p {} seed {} pos {pos0}: {what}",
                spec.temperature, spec.top_k, spec.top_p, spec.seed
            ),
        ))
    }
}

/// The gated activation (SiLU, or gpt-oss's clamped form) of gate `g` and up `u`.
fn act(a: Act, g: f64, u: f64) -> f64 {
    match a {
        Act::Silu => silu(g) * u,
        Act::Clamped { limit, alpha } => {
            let (l, al) = (limit as f64, alpha as f64);
            let g = g.min(l);
            let u = u.clamp(-l, l);
            (u + 1.0) * g / (1.0 + (-al * g).exp())
        }
    }
}

/// One expert's activations `act(gate . x, up . x)` in f64, from `gate_up [2I, dim]`.
fn expert_h(a: Act, layout: GateUpLayout, x: &[f32], gate_up: &[f64], dim: usize, inter: usize) -> Vec<f64> {
    (0..inter)
        .map(|i| {
            let (gr, ur) = match layout {
                GateUpLayout::Concatenated => (i, inter + i),
                GateUpLayout::Interleaved => (2 * i, 2 * i + 1),
            };
            act(
                a,
                dot(x, &gate_up[gr * dim..][..dim]),
                dot(x, &gate_up[ur * dim..][..dim]),
            )
        })
        .collect()
}

/// The first index of the largest value.
fn cpu_argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// The sampler in f64: the mass each token keeps after temperature, top-k and top-p (0 where
/// dropped), and the token uniform `u` draws, or `None` where the draw or the top-p cut lies within
/// 1e-5 (relative) of a boundary that f32 rounding could move. The exponent's argument is formed in
/// f32 as the shader forms it. Ties enter top-k and top-p together.
fn cpu_sample(row: &[f32], spec: &SampleSpec, u: f32) -> (Vec<f64>, Option<usize>) {
    if spec.temperature <= 0.0 {
        let mut kept = vec![0.0; row.len()];
        let best = cpu_argmax(row);
        kept[best] = 1.0;
        return (kept, Some(best));
    }
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let inv_t = 1.0 / spec.temperature;
    let mass = |l: f32| (((l - m) * inv_t) as f64).exp();
    let mut sorted: Vec<f32> = row.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = if spec.top_k > 0 && spec.top_k < row.len() {
        sorted[spec.top_k - 1]
    } else {
        f32::NEG_INFINITY
    };
    let mut floor = kth;
    let mut ambiguous = false;
    if spec.top_p < 1.0 {
        let z: f64 = row.iter().filter(|&&l| l >= kth).map(|&l| mass(l)).sum();
        let goal = spec.top_p as f64 * z;
        let (mut cum, mut i) = (0.0, 0);
        while i < sorted.len() {
            let v = sorted[i];
            let prev = cum;
            while i < sorted.len() && sorted[i] == v {
                cum += mass(v);
                i += 1;
            }
            if cum >= goal {
                floor = v;
                ambiguous = (cum - goal).abs() <= 1e-5 * z || (goal - prev).abs() <= 1e-5 * z;
                break;
            }
        }
    }
    let kept: Vec<f64> = row.iter().map(|&l| if l >= floor { mass(l) } else { 0.0 }).collect();
    let total: f64 = kept.iter().sum();
    let goal = u as f64 * total;
    let mut c = 0.0;
    for (i, &wi) in kept.iter().enumerate() {
        if wi == 0.0 {
            continue;
        }
        let prev = c;
        c += wi;
        if c > goal {
            let near = (c - goal).abs() <= 1e-5 * total || (goal - prev).abs() <= 1e-5 * total;
            let draw = (!ambiguous && !near).then_some(i);
            return (kept, draw);
        }
    }
    (kept, None)
}
