//! ggml's reference quantisers for the formats `--quantize` offers: Q8_0, Q4_0, Q5_0 (bit for bit
//! what llama.cpp's `quantize_row_*_ref` and gguf-py write) and Q4_K (`quantize_row_q4_K_ref`: the
//! weighted least-squares search over scales and mins of `make_qkx2_quants`). A 16/32-bit
//! checkpoint quantised at load this way is what a user without a GGUF can run in the memory a
//! GGUF would take.

use crate::gpu::{DType, Format};

/// `values` (whole blocks) in `dtype`'s blocks; `None` for a type without a quantiser here or a
/// length that is not whole blocks.
pub fn quantize(dtype: DType, values: &[f32]) -> Option<Vec<u8>> {
    let f = Format::of(dtype);
    if !f.is_blocked() || !values.len().is_multiple_of(f.block_elems) {
        return None;
    }
    let mut out = Vec::with_capacity(values.len() / f.block_elems * f.block_bytes);
    match dtype {
        DType::Q8_0 => values.chunks_exact(32).for_each(|b| q8_0_block(b, &mut out)),
        DType::Q4_0 => values.chunks_exact(32).for_each(|b| q4_0_block(b, &mut out)),
        DType::Q5_0 => values.chunks_exact(32).for_each(|b| q5_0_block(b, &mut out)),
        DType::Q4_K => values.chunks_exact(256).for_each(|b| q4_k_block(b, &mut out)),
        _ => return None,
    }
    Some(out)
}

/// The formats [`quantize`] writes: Q5_0 is also what Q4_K rows that are not whole super-blocks
/// take ([`DType::for_row`]).
pub const QUANTIZERS: [DType; 4] = [DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_K];

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// `d = amax / 127`, `q = round(x / d)` (half away from zero, C's `roundf`).
fn q8_0_block(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16_bytes(d));
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
}

/// `d = max / -8` (max: the first value of largest magnitude), `q = min(15, trunc(x / d + 8.5))`;
/// element j in the low nibble of byte j, element j + 16 in its high nibble.
fn q4_0_block(x: &[f32], out: &mut Vec<u8>) {
    let max = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend(f16_bytes(d));
    let q = |v: f32| ((v * id + 8.5) as u8).min(15);
    out.extend((0..16).map(|j| q(x[j]) | (q(x[j + 16]) << 4)));
}

/// As Q4_0 with 5 bits: `d = max / -16`, `q = min(31, trunc(x / d + 16.5))`, the fifth bits in
/// `qh` (bit j for element j).
fn q5_0_block(x: &[f32], out: &mut Vec<u8>) {
    let max = x.iter().fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q: Vec<u8> = x.iter().map(|&v| ((v * id + 16.5) as i8).min(31) as u8).collect();
    let qh = q
        .iter()
        .enumerate()
        .fold(0u32, |h, (j, &l)| h | (((l as u32) >> 4) << j));
    out.extend(f16_bytes(d));
    out.extend(qh.to_le_bytes());
    out.extend((0..16).map(|j| (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4)));
}

/// ggml's `nearest_int`: round half to even.
fn nearest(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// ggml's `make_qkx2_quants(32, 15, x, w, L, &min, Laux, -1, 0.1, 20, false)`: the scale and
/// (negated) min of one 32-element sub-block and its 4-bit levels, minimising the weighted
/// squared error over 21 candidate scales.
fn qkx2(x: &[f32], w: &[f32], levels: &mut [u8]) -> (f32, f32) {
    const NMAX: f32 = 15.0;
    let (rmin, rdelta, nstep) = (-1.0f32, 0.1f32, 20);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..x.len() {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let mut iscale = NMAX / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best = 0.0;
    for i in 0..x.len() {
        let l = nearest(iscale * (x[i] - min)).clamp(0, NMAX as i32);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best += w[i] * diff * diff;
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + NMAX) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..x.len() {
            let l = nearest(iscale * (x[i] - min)).clamp(0, NMAX as i32);
            aux[i] = l as u8;
            let l = l as f32;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut err = 0.0;
            for i in 0..x.len() {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                err += w[i] * diff * diff;
            }
            if err < best {
                levels[..x.len()].copy_from_slice(&aux[..x.len()]);
                best = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `quantize_row_q4_K_ref` for one super-block of 256: per 32-element sub-block a scale
/// and min from [`qkx2`] (weights `rms(x) + |x|`), both quantised to 6 bits against the largest,
/// then every level recomputed against the rounded scales.
fn q4_k_block(x: &[f32], out: &mut Vec<u8>) {
    let mut levels = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let av = (xs.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
        let w: Vec<f32> = xs.iter().map(|v| av + v.abs()).collect();
        let (s, m) = qkx2(xs, &w, &mut levels[32 * j..32 * j + 32]);
        scales[j] = s;
        mins[j] = m;
        max_scale = max_scale.max(s);
        max_min = max_min.max(m);
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..8 {
        let ls = (nearest(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d = half::f16::from_f32(max_scale / 63.0);
    let dmin = half::f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let (s, m) = if j < 4 {
            (sc[j] & 63, sc[j + 4] & 63)
        } else {
            (
                (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4),
                (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4),
            )
        };
        let dl = d.to_f32() * s as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for i in 0..32 {
            levels[32 * j + i] = nearest((x[32 * j + i] + dm) / dl).clamp(0, 15) as u8;
        }
    }
    out.extend(d.to_le_bytes());
    out.extend(dmin.to_le_bytes());
    out.extend(sc);
    for c in 0..4 {
        out.extend((0..32).map(|l| levels[64 * c + l] | (levels[64 * c + l + 32] << 4)));
    }
}

/// A tensor source whose 16/32-bit matrices come quantised to one block format (see
/// [`crate::model::LoadOptions::quantize`]); everything else passes through.
pub struct Quantized<'a> {
    inner: &'a dyn crate::model::source::TensorSource,
    dtype: DType,
    /// gpt-oss: its experts are stored `x @ W` and transposed as values at load.
    transposed_experts: bool,
}

impl<'a> Quantized<'a> {
    pub fn new(
        inner: &'a dyn crate::model::source::TensorSource,
        dtype: DType,
        config: &crate::model::config::ModelConfig,
    ) -> Self {
        Self {
            inner,
            dtype,
            transposed_experts: config.model_type == "gpt_oss",
        }
    }

    /// Whether `name` stays as it is: MoE routers (llama.cpp keeps `ffn_gate_inp` in float), the
    /// shared-expert gate, and what the loader rearranges as values (MLA's `kv_b_proj`, cut into
    /// absorbed per-head blocks; gpt-oss's experts, transposed).
    fn kept(&self, name: &str) -> bool {
        name.ends_with(".gate.weight")
            || name.contains("router")
            || name.ends_with("shared_expert_gate.weight")
            || name.contains("kv_b_proj")
            || (self.transposed_experts && name.contains("mlp.experts."))
    }

    /// The block format tensor `name` is quantised to, if it is: a float matrix that is not
    /// [`Quantized::kept`], in `dtype` or its fallback for its rows.
    fn target(&self, name: &str, t: &crate::model::source::RawTensor<'_>) -> Option<DType> {
        use crate::model::source::SrcDType;
        let float = matches!(t.dtype, SrcDType::F32 | SrcDType::F16 | SrcDType::BF16);
        let dtype = self.dtype.for_row(t.shape.last().copied().unwrap_or(0));
        (float && t.shape.len() >= 2 && !self.kept(name) && dtype.is_packed()).then_some(dtype)
    }
}

impl crate::model::source::TensorSource for Quantized<'_> {
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }

    fn release(&self, name: &str) {
        self.inner.release(name)
    }

    fn get(&self, name: &str) -> crate::error::Result<crate::model::source::RawTensor<'_>> {
        use crate::model::source::SrcDType;
        let t = self.inner.get(name)?;
        let Some(dtype) = self.target(name, &t) else {
            return Ok(t);
        };
        let bytes = quantize(dtype, &t.to_f32()?).ok_or_else(|| {
            crate::error::Error::unsupported(format!("{}: tensor {name}: no {} quantiser", t.file, dtype.name()))
        })?;
        Ok(crate::model::source::RawTensor {
            dtype: SrcDType::Packed(dtype),
            bytes: std::borrow::Cow::Owned(bytes),
            ..t
        })
    }

    fn names(&self) -> Vec<String> {
        self.inner.names()
    }

    fn gpu_dtype_of(&self, name: &str) -> crate::error::Result<DType> {
        let t = self.inner.get(name)?;
        match self.target(name, &t) {
            Some(dtype) => Ok(dtype),
            None => t.gpu_dtype(),
        }
    }

    fn get_transposed(&self, name: &str) -> Option<crate::error::Result<crate::model::source::RawTensor<'_>>> {
        self.inner.get_transposed(name)
    }

    fn stored_bytes(&self) -> Option<u64> {
        self.inner.stored_bytes()
    }
}
