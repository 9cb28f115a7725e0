//! Rotary position embedding (MODELS.md §2): the frequency tables of HF's `default`, `yarn` and
//! `llama3` rope types, computed on the host exactly as transformers does (f32 where it is f32),
//! and one in-place rotation kernel for both layouts that reads positions from the step buffer.

use super::step;
use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{grid, Context, Dispatch, Tensor};

const BODY: &str = include_str!("../../shaders/rope.wgsl");

/// How the base frequencies are rescaled: HF's `rope_type` with its parameters. `Option` fields
/// are the config keys that may be absent or null; they take HF's defaults.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `inv[i] = theta^(-2i/d)`, amplitude 1.
    Default,
    /// YaRN (`_compute_yarn_parameters`).
    Yarn {
        /// `factor`; null means `max_position / original_max_position`.
        factor: Option<f32>,
        /// `original_max_position_embeddings`; absent means `max_position`.
        original_max_position: Option<usize>,
        /// `beta_fast` (default 32) and `beta_slow` (default 1); 0 counts as absent, like Python's `or`.
        beta_fast: Option<f32>,
        beta_slow: Option<f32>,
        mscale: Option<f32>,
        mscale_all_dim: Option<f32>,
        /// An explicit amplitude overrides the mscale rule.
        attention_factor: Option<f32>,
        /// Round the correction range outward to whole dims (HF default true; gpt-oss sets false).
        truncate: bool,
    },
    /// Llama 3.1 (`_compute_llama3_parameters`).
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position: usize,
    },
}

/// Default inverse frequencies as HF computes them: the exponent `2i/d` in f32, the power, then
/// the reciprocal in f32.
fn default_inv_freq(dim: usize, theta: f32) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| {
            let e = (2 * i) as f32 / dim as f32;
            let pow = (theta as f64).powf(e as f64) as f32;
            1.0 / pow
        })
        .collect()
}

/// YaRN's `get_mscale`.
fn yarn_mscale(scale: f64, m: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * m * scale.ln() + 1.0
    }
}

/// YaRN's dimension range `(lo, hi)` between extrapolated and interpolated frequencies
/// (`find_correction_range`, then the clamps of MODELS.md §2.1), in Python's f64.
pub fn yarn_correction_range(
    dim: usize,
    theta: f32,
    original_max_position: usize,
    beta_fast: f64,
    beta_slow: f64,
    truncate: bool,
) -> (f64, f64) {
    let d = dim as f64;
    let corr = |n: f64| {
        d * (original_max_position as f64 / (n * 2.0 * std::f64::consts::PI)).ln() / (2.0 * (theta as f64).ln())
    };
    let (mut lo, mut hi) = (corr(beta_fast), corr(beta_slow));
    if truncate {
        lo = lo.floor();
        hi = hi.ceil();
    }
    (lo.max(0.0), hi.min(d - 1.0))
}

fn yarn(dim: usize, theta: f32, max_position: usize, s: &RopeScaling) -> (Vec<f32>, f32) {
    let RopeScaling::Yarn {
        factor,
        original_max_position,
        beta_fast,
        beta_slow,
        mscale,
        mscale_all_dim,
        attention_factor,
        truncate,
    } = s
    else {
        unreachable!("yarn() is only called for RopeScaling::Yarn");
    };
    let l0 = original_max_position.unwrap_or(max_position);
    let factor = factor.map_or(max_position as f64 / l0 as f64, |f| f as f64);
    let truthy = |v: &Option<f32>| v.filter(|&x| x != 0.0).map(|x| x as f64);
    let af = match (attention_factor, truthy(mscale), truthy(mscale_all_dim)) {
        (Some(a), _, _) => *a as f64,
        (None, Some(m), Some(ma)) => yarn_mscale(factor, m) / yarn_mscale(factor, ma),
        _ => yarn_mscale(factor, 1.0),
    };
    let bf = truthy(beta_fast).unwrap_or(32.0);
    let bs = truthy(beta_slow).unwrap_or(1.0);
    let (lo, mut hi) = yarn_correction_range(dim, theta, l0, bf, bs, *truncate);
    if lo == hi {
        hi += 0.001;
    }
    let span = (hi - lo) as f32;
    let factor32 = factor as f32;
    let inv = (0..dim / 2)
        .map(|i| {
            // pos_freqs, 1/pos_freqs and 1/(factor*pos_freqs) are f32 tensors in HF.
            let pos_freq = (theta as f64).powf(((2 * i) as f32 / dim as f32) as f64) as f32;
            let extrapolation = 1.0 / pos_freq;
            let interpolation = 1.0 / (factor32 * pos_freq);
            let ramp = ((i as f32 - lo as f32) / span).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect();
    (inv, af as f32)
}

fn llama3(dim: usize, theta: f32, factor: f32, low: f32, high: f32, original: usize) -> Vec<f32> {
    let old = original as f32;
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    default_inv_freq(dim, theta)
        .into_iter()
        .map(|inv| {
            let wavelen = 2.0 * std::f32::consts::PI / inv;
            if wavelen > low_wavelen {
                inv / factor
            } else if wavelen < high_wavelen {
                inv
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 - smooth) * inv / factor + smooth * inv
            }
        })
        .collect()
}

/// The `dim / 2` inverse frequencies and the cos/sin amplitude `af` of a rotary embedding over
/// `dim` dims (MODELS.md §2.1). `max_position` is the config's `max_position_embeddings`, used
/// where YaRN's `factor` or `original_max_position_embeddings` is missing.
pub fn rope_frequencies(dim: usize, theta: f32, scaling: &RopeScaling, max_position: usize) -> (Vec<f32>, f32) {
    match scaling {
        RopeScaling::Default => (default_inv_freq(dim, theta), 1.0),
        RopeScaling::Yarn { .. } => yarn(dim, theta, max_position, scaling),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position,
        } => (
            llama3(
                dim,
                theta,
                *factor,
                *low_freq_factor,
                *high_freq_factor,
                *original_max_position,
            ),
            1.0,
        ),
    }
}

/// Which values pair up (MODELS.md §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// NeoX / rotate_half: `(i, i + d/2)`.
    Half,
    /// GPT-J / DeepSeek MLA: `(2i, 2i + 1)`.
    Interleaved,
}

/// Where the rotated values sit: `tokens` rows of `row_stride` floats, each holding `heads` heads
/// of `head_stride` floats, rotating `rot_dims` values from `rot_offset` inside every head.
///
/// Examples: q and k heads of a fused qkv row are `heads = H + KV` at `head_stride = hd`,
/// `row_stride = (H + 2KV) * hd`; MLA's `q_pe` is `rot_offset = nope`; the shared `k_pe` inside a
/// `kv_a` row of width `r + dr` is one head with `rot_offset = r`, `row_stride = r + dr`.
#[derive(Clone, Copy, Debug)]
pub struct RopeSpec {
    pub tokens: usize,
    pub heads: usize,
    pub head_stride: usize,
    pub row_stride: usize,
    pub rot_offset: usize,
    pub rot_dims: usize,
    pub layout: RopeLayout,
    /// The amplitude from [`rope_frequencies`].
    pub attention_factor: f32,
}

impl RopeSpec {
    /// Whole contiguous heads: `[tokens, heads, head_dim]`, all dims rotated.
    pub fn heads(tokens: usize, heads: usize, head_dim: usize, layout: RopeLayout, attention_factor: f32) -> Self {
        Self {
            tokens,
            heads,
            head_stride: head_dim,
            row_stride: heads * head_dim,
            rot_offset: 0,
            rot_dims: head_dim,
            layout,
            attention_factor,
        }
    }
}

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        heads: u32,
        head_stride: u32,
        row_stride: u32,
        rot_offset: u32,
        half: u32,
        af: f32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// Invocations per workgroup.
        WG: u32 = 64,
    }
}

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        INTERLEAVED: bool = false,
    }
}

crate::wgsl_interface! {
    family: "rope",
    structs: [Params],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        x: read_write "array<f32>",
        inv_freq: read "array<f32>",
        step: read "array<u32>",
    },
}

pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![super::step::WGSL, BODY])
}

fn validate(spec: &RopeSpec, x: &Tensor, inv_freq: &Tensor, step_buf: &Tensor) -> Result<()> {
    let op = "rope";
    let s = spec;
    if s.rot_dims == 0 || !s.rot_dims.is_multiple_of(2) {
        return Err(shape_err(
            op,
            format!("rot_dims {} must be even and positive", s.rot_dims),
        ));
    }
    if s.rot_offset + s.rot_dims > s.head_stride {
        return Err(shape_err(
            op,
            format!(
                "rotated dims {}..{} exceed the head stride {}",
                s.rot_offset,
                s.rot_offset + s.rot_dims,
                s.head_stride
            ),
        ));
    }
    if s.heads * s.head_stride > s.row_stride {
        return Err(shape_err(
            op,
            format!(
                "{} heads of {} floats exceed the row stride {}",
                s.heads, s.head_stride, s.row_stride
            ),
        ));
    }
    let need = if s.tokens == 0 || s.heads == 0 {
        0
    } else {
        (s.tokens - 1) * s.row_stride + (s.heads - 1) * s.head_stride + s.rot_offset + s.rot_dims
    };
    if need > x.len {
        return Err(shape_err(
            op,
            format!("x holds {} floats, the layout needs {need}", x.len),
        ));
    }
    if inv_freq.len < s.rot_dims / 2 {
        return Err(shape_err(
            op,
            format!(
                "inv_freq holds {} values, need rot_dims/2 = {}",
                inv_freq.len,
                s.rot_dims / 2
            ),
        ));
    }
    if step_buf.len < step::LEN {
        return Err(shape_err(
            op,
            format!("the step buffer holds {} words, need {}", step_buf.len, step::LEN),
        ));
    }
    let pairs = s.tokens as u64 * s.heads as u64 * (s.rot_dims / 2) as u64;
    if pairs > u32::MAX as u64 {
        return Err(shape_err(op, format!("{pairs} pairs overflow a u32 index")));
    }
    Ok(())
}

/// Rotate `x` in place as `spec` says, token t at position `step[POS0] + t`, with the frequencies
/// `inv_freq` (the [`rope_frequencies`] table uploaded once as a Tensor).
pub fn rope(ctx: &Context, x: &Tensor, spec: RopeSpec, inv_freq: &Tensor, step_buf: &Tensor) -> Result<Dispatch> {
    validate(&spec, x, inv_freq, step_buf)?;
    let half = spec.rot_dims / 2;
    let params = ctx.params(&Params {
        tokens: spec.tokens as u32,
        heads: spec.heads as u32,
        head_stride: spec.head_stride as u32,
        row_stride: spec.row_stride as u32,
        rot_offset: spec.rot_offset as u32,
        half: half as u32,
        af: spec.attention_factor,
    });
    let consts = Consts {
        INTERLEAVED: spec.layout == RopeLayout::Interleaved,
    };
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), "rope", &consts.constants());
    let pairs = (spec.tokens * spec.heads * half) as u32;
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::x, x.binding()),
        (bind::inv_freq, inv_freq.binding()),
        (bind::step, step_buf.binding()),
    ];
    Ok(Dispatch::new(
        ctx,
        "rope",
        pipeline,
        &res,
        grid(pairs.div_ceil(WG)),
        vec![params.clone()],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yarn(factor: f32, l0: usize, mscale: Option<f32>, mscale_all_dim: Option<f32>, truncate: bool) -> RopeScaling {
        RopeScaling::Yarn {
            factor: Some(factor),
            original_max_position: Some(l0),
            beta_fast: Some(32.0),
            beta_slow: Some(1.0),
            mscale,
            mscale_all_dim,
            attention_factor: None,
            truncate,
        }
    }

    /// Worked values of MODELS.md §2.1, from an independent implementation.
    #[test]
    fn yarn_worked_values() {
        let (lo, hi) = yarn_correction_range(64, 150000.0, 4096, 32.0, 1.0, false);
        assert!(
            (lo - 8.093).abs() < 5e-4 && (hi - 17.398).abs() < 5e-4,
            "gpt-oss lo {lo} hi {hi}"
        );
        let (_, af) = rope_frequencies(64, 150000.0, &yarn(32.0, 4096, None, None, false), 131072);
        assert!((af - 1.34657).abs() < 1e-5, "gpt-oss af {af}");
        let (lo, hi) = yarn_correction_range(64, 10000.0, 4096, 32.0, 1.0, true);
        assert_eq!((lo, hi), (10.0, 23.0));
        let (_, af) = rope_frequencies(64, 10000.0, &yarn(40.0, 4096, Some(0.707), Some(0.707), true), 163840);
        assert_eq!(af, 1.0, "V2-Lite af");
    }

    #[test]
    fn yarn_ramp_ends() {
        // Below lo the frequencies are the default ones, above hi divided by the factor.
        let (def, _) = rope_frequencies(64, 10000.0, &RopeScaling::Default, 4096);
        let (inv, _) = rope_frequencies(64, 10000.0, &yarn(40.0, 4096, Some(1.0), Some(1.0), true), 163840);
        assert_eq!(inv[..10], def[..10]);
        for i in 23..32 {
            assert!((inv[i] - def[i] / 40.0).abs() <= 1e-6 * def[i], "dim {i}");
        }
    }

    #[test]
    fn llama3_bands() {
        let s = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192,
        };
        let (def, _) = rope_frequencies(128, 500000.0, &RopeScaling::Default, 131072);
        let (inv, af) = rope_frequencies(128, 500000.0, &s, 131072);
        assert_eq!(af, 1.0);
        for i in 0..64 {
            let wavelen = 2.0 * std::f64::consts::PI / def[i] as f64;
            if wavelen < 8192.0 / 4.0 {
                assert_eq!(inv[i], def[i], "high-frequency dim {i} unchanged");
            } else if wavelen > 8192.0 {
                assert!(
                    (inv[i] - def[i] / 8.0).abs() <= 1e-6 * def[i],
                    "low-frequency dim {i} divided"
                );
            } else {
                assert!(inv[i] < def[i] && inv[i] > def[i] / 8.0, "medium dim {i} in between");
            }
        }
    }
}
