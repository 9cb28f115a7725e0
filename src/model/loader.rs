//! The checkpoint loader: fills a model's GPU weights from tensors named as transformers saves
//! them. It walks the physical layout ([`layout`]), checks every source tensor's shape before it is
//! uploaded and builds fused forms (stacks, MLA's per-head absorbed blocks, gpt-oss's transposed
//! experts, folded shared experts) piece by piece, so host memory stays at one source tensor.

use super::config::{Ffn, ModelConfig};
use super::experts::{self, HostPart, HostRows, Offload, RowSink};
use super::layout::{self, FoldedPart, Make, Routed, Source, Spec};
use super::source::{RawTensor, TensorSource};
use super::synthetic::Footprint;
use super::weights::ModelWeights;
use crate::error::{Error, Result};
use crate::gpu::{Context, DType, Tensor, Weight};

/// Load every weight `cfg` describes from `src`, as [`layout::layout`] lays them out.
pub fn load(
    ctx: &Context,
    cfg: &ModelConfig,
    src: &dyn TensorSource,
    progress: &dyn Fn(usize, usize),
) -> Result<(ModelWeights, Footprint)> {
    let (w, fp, _) = load_offloaded(ctx, cfg, src, None, progress)?;
    Ok((w, fp))
}

/// The layout of `cfg` as `src` fills it (a checkpoint without a logits head ties it to the
/// embedding).
pub fn source_layout(cfg: &ModelConfig, src: &dyn TensorSource) -> layout::Layout {
    let mut layout = layout::layout(cfg);
    if layout.lm_head.as_ref().is_some_and(|h| !src.contains(&h.label)) {
        layout.lm_head = None;
    }
    layout
}

/// The format each spec of `layout` loads in from `src` (an estimate where parts differ: what
/// sizing the expert cache needs).
pub fn spec_dtype(src: &dyn TensorSource, s: &Spec) -> DType {
    let first = match &s.source {
        Source::Tensor { name, .. } | Source::KvB { name, .. } => Some(name.as_str()),
        Source::Stacked(parts) => parts.first().map(|p| p.0.as_str()),
        Source::Biases(_) => None,
        Source::Experts { routed, .. } => match routed {
            Routed::PerExpert { fused, .. } if src.contains(fused) => Some(fused.as_str()),
            Routed::PerExpert { parts, .. } => parts.first().map(|p| p.0.as_str()),
            Routed::Transposed(name) => Some(name.as_str()),
        },
    };
    let d = first.and_then(|n| src.gpu_dtype_of(n).ok()).unwrap_or(DType::F32);
    s.dtype(d)
}

/// The weights, their footprint, and the offloaded experts' host parts by layer.
pub type Loaded = (ModelWeights, Footprint, Vec<(usize, HostPart)>);

/// [`load`], with the routed experts of the layers `offload` names kept in host memory and a pool
/// of slots for them on the GPU: the weights, their footprint and the offloaded experts' host
/// parts, in layer order (gate|up, down, biases).
pub fn load_offloaded(
    ctx: &Context,
    cfg: &ModelConfig,
    src: &dyn TensorSource,
    offload: Option<&Offload>,
    progress: &dyn Fn(usize, usize),
) -> Result<Loaded> {
    let layout = source_layout(cfg, src);
    let mut l = Loader {
        ctx,
        cfg,
        src,
        progress,
        done: 0,
        total: 0,
        footprint: Footprint::default(),
        offload,
        host: Vec::new(),
    };
    let mut total = 0;
    layout.for_each(|s, _| total += l.reads(s));
    l.total = total;
    // Every weight takes at least 16 bits an element on the GPU: what that comes to must fit
    // where the adapter's memory is known, before anything is allocated (host memory, for an
    // adapter on the CPU: offloaded experts take it too).
    let mut least = 0;
    layout.for_each(|s, leaf| least += s.gpu_bytes(DType::F16, leaf));
    // Block-quantised weights kept packed take the file's bytes.
    if let Some(file) = src.stored_bytes() {
        least = least.min(file);
    }
    if let Some(limit) = ctx.memory_limit().filter(|&l| least > l) {
        return Err(Error::OutOfMemory {
            what: format!(
                "the {} model's weights, at least {} on the adapter, but it runs on the CPU and the host has {} \
                 available",
                cfg.model_type,
                crate::model::synthetic::human_bytes(least),
                crate::model::synthetic::human_bytes(limit)
            ),
            needed: Some(least),
            available: Some(limit),
        });
    }
    let weights = layout.make(&mut l)?;
    Ok((weights, l.footprint, l.host))
}

/// Loads tensors from one source, checking shapes and reporting progress.
struct Loader<'a> {
    ctx: &'a Context,
    cfg: &'a ModelConfig,
    src: &'a dyn TensorSource,
    /// Called with (tensors read, tensors to read) after each source tensor.
    progress: &'a dyn Fn(usize, usize),
    done: usize,
    total: usize,
    /// What the weights made so far take, in the formats they were loaded in.
    footprint: Footprint,
    offload: Option<&'a Offload>,
    /// The offloaded experts' host parts, by layer.
    host: Vec<(usize, HostPart)>,
}

// Each tensor is made inside GPU error scopes: a checkpoint that does not fit is an error naming
// the tensor that did not, not wgpu's panic.
impl Make for Loader<'_> {
    type W = Weight;
    type T = Tensor;

    fn weight(&mut self, s: &Spec) -> Result<Weight> {
        let ctx = self.ctx;
        let w = ctx.scoped(&s.label, || self.make_weight(s))?;
        self.release(s);
        self.count(s, w.gpu_bytes(), w.data_bytes(), w.data_bytes());
        Ok(w)
    }

    fn experts(&mut self, layer: usize, s: &Spec) -> Result<Weight> {
        let (Some(slots), Ffn::Moe { experts, .. }) =
            (self.offload.and_then(|o| o.slots(layer)), &self.cfg.layers[layer].ffn)
        else {
            return self.weight(s);
        };
        let host = self.fill(s, |_, parts| HostRows::new(&s.label, parts, s.cols, s.group_rows))?;
        let ctx = self.ctx;
        self.release(s);
        let (pool, part) = ctx.scoped(&s.label, || experts::offload(ctx, s, host, *experts, slots))?;
        // A decode step reads its experts' share of the host copy (through the pool).
        self.count(s, pool.gpu_bytes(), pool.data_bytes(), part.bytes());
        self.host.push((layer, part));
        Ok(pool)
    }

    fn tensor(&mut self, s: &Spec) -> Result<Tensor> {
        let ctx = self.ctx;
        let t = ctx.scoped(&s.label, || self.make_tensor(s))?;
        self.count(s, t.buffer.size(), s.params() * 4, s.params() * 4);
        Ok(t)
    }
}

impl Loader<'_> {
    /// Add what `s` was made into to the footprint: `gpu` bytes on the adapter, `data` of them real
    /// data, of which a decode step reads `read`'s share ([`Spec::read_fraction`]).
    fn count(&mut self, s: &Spec, gpu: u64, data: u64, read: u64) {
        let fp = &mut self.footprint;
        fp.gpu_bytes += gpu;
        fp.data_bytes += data;
        fp.params += s.params();
        fp.read_bytes_per_token += read as f64 * s.read_fraction();
    }

    fn make_weight(&mut self, s: &Spec) -> Result<Weight> {
        if let Source::Experts { .. } = &s.source {
            return self.fill(s, |l, parts| match parts {
                [(_, dtype)] => l.alloc(s, *dtype),
                _ => Weight::alloc_grouped(
                    l.ctx,
                    &s.label,
                    parts,
                    s.cols,
                    s.group_rows,
                    l.ctx.caps.max_storage_binding,
                ),
            });
        }
        match &s.source {
            Source::Tensor { name, shape } => self.matrix(name, shape),
            Source::Stacked(parts) => {
                let dtypes = self.dtypes_of(parts.iter().map(|p| p.0.as_str()))?;
                // Parts in different block formats (Q4_K_M's Q6_K attn_v) stay packed, each in its
                // own chunks; otherwise one dtype for the stack.
                let mixed_blocks = dtypes.iter().any(|d| d.is_packed()) && dtypes.iter().any(|&d| d != dtypes[0]);
                let w = if mixed_blocks {
                    let layout: Vec<(usize, DType)> = parts.iter().map(|p| p.1).zip(dtypes).collect();
                    Weight::alloc_stacked(self.ctx, &s.label, &layout, s.cols, self.ctx.caps.max_storage_binding)?
                } else {
                    self.alloc(s, common_dtype(&dtypes))?
                };
                self.write_stacked(&w, parts)?;
                Ok(w)
            }
            Source::Biases(parts) => self.biases(s, parts),
            Source::KvB {
                name,
                heads,
                nope,
                v,
                rank,
                uk,
            } => {
                // Transposed per head: values, not rows of blocks.
                let kvb = self.raw(name, &[heads * (nope + v), *rank])?.widened()?;
                let dtype = kvb.gpu_dtype()?;
                let e = dtype.bytes();
                let mut out = Vec::with_capacity(s.rows * s.cols * e);
                for head in 0..*heads {
                    let base = head * (nope + v) * rank * e;
                    let (uk_rows, v_rows) = kvb.bytes[base..base + (nope + v) * rank * e].split_at(nope * rank * e);
                    if *uk {
                        out.extend(transpose(uk_rows, *nope, *rank, e));
                    } else {
                        out.extend_from_slice(v_rows);
                    }
                }
                drop(kvb);
                let w = Weight::upload(self.ctx, &s.label, dtype, s.rows, s.cols, s.group_rows, &out)?;
                self.tick();
                Ok(w)
            }
            Source::Experts { .. } => unreachable!("made by fill"),
        }
    }

    /// Stacked experts (or an experts' bias matrix) written into what `sink` makes for their
    /// parts (rows, format): a GPU weight, or host memory for offloaded experts.
    fn fill<S: RowSink>(&mut self, s: &Spec, sink: impl Fn(&Self, &[(usize, DType)]) -> Result<S>) -> Result<S> {
        match &s.source {
            Source::Experts {
                experts,
                routed,
                shared,
            } => {
                // gpt-oss's experts where the source has them as packed `[out, in]` rows already.
                if shared.is_none() {
                    if let Some(t) = self.rows_of_transposed(routed) {
                        let t = t?;
                        t.expect_shape(&[*experts, s.group_rows, s.cols])?;
                        let w = sink(self, &[(s.rows, t.gpu_dtype()?)])?;
                        w.write_rows(self.ctx, 0, &t.bytes)?;
                        drop(t);
                        self.tick();
                        return Ok(w);
                    }
                }
                let (dtype, shared_dtype) = self.experts_dtypes(routed, shared.as_ref())?;
                let e = *experts;
                // Routed and shared experts in different formats: each in chunks of their own.
                let parts = match shared_dtype {
                    Some(sd) if sd != dtype => vec![(e * s.group_rows, dtype), (s.rows - e * s.group_rows, sd)],
                    _ => vec![(s.rows, dtype)],
                };
                let w = sink(self, &parts)?;
                self.routed_experts(s, e, routed, dtype, &w)?;
                if let Some(f) = shared {
                    self.write_shared_experts(&w, e, f.slots, f.inter, &f.part)?;
                }
                Ok(w)
            }
            // An experts' bias matrix `[E, cols]` (gpt-oss).
            Source::Tensor { name, shape } if shape.len() == 2 => {
                let t = self.raw(name, shape)?;
                let w = sink(self, &[(s.rows, t.gpu_dtype()?)])?;
                w.write_rows(self.ctx, 0, &t.bytes)?;
                drop(t);
                self.tick();
                Ok(w)
            }
            _ => Err(Error::unsupported(format!(
                "{}: not a weight of routed experts",
                s.label
            ))),
        }
    }

    fn make_tensor(&mut self, s: &Spec) -> Result<Tensor> {
        match &s.source {
            Source::Tensor { name, shape } if shape.len() == 1 => self.vector_f32(name, shape[0]),
            _ => Err(Error::unsupported(format!(
                "{}: an activation-side tensor is one checkpoint vector",
                s.label
            ))),
        }
    }
}

/// A tensor's values in `dtype` (its own bytes when it already is; converted otherwise).
fn bytes_as<'a>(t: &'a RawTensor<'_>, dtype: DType) -> Result<std::borrow::Cow<'a, [u8]>> {
    let have = t.gpu_dtype()?;
    if have == dtype {
        return Ok(std::borrow::Cow::Borrowed(&t.bytes));
    }
    if dtype.is_packed() {
        return Err(Error::unsupported(format!(
            "{}: tensor {} is {}, but the weight it joins is {} (a quantiser would be needed)",
            t.file,
            t.name,
            have.name(),
            dtype.name()
        )));
    }
    Ok(std::borrow::Cow::Owned(dtype.encode(&t.to_f32()?)))
}

/// The dtype one weight made of parts in `dtypes` is stored in: theirs when they agree; when they
/// differ, the first part's float type, or, when one is block-quantised (two block formats cannot
/// share rows of one weight), the float type they all widen to ([`DType::widened`]), else f32 if
/// one is f32, else f16.
fn common_dtype(dtypes: &[DType]) -> DType {
    let first = dtypes[0];
    if dtypes.iter().all(|&d| d == first) {
        first
    } else if dtypes.iter().any(|d| d.is_packed()) {
        let wide = first.widened();
        if dtypes.iter().all(|d| d.widened() == wide) {
            wide
        } else if dtypes.contains(&DType::F32) {
            DType::F32
        } else {
            DType::F16
        }
    } else {
        first
    }
}

/// `[rows, cols]` row-major bytes transposed to `[cols, rows]`.
fn transpose(bytes: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for r in 0..rows {
        for c in 0..cols {
            let s = (r * cols + c) * elem;
            let d = (c * rows + r) * elem;
            out[d..d + elem].copy_from_slice(&bytes[s..s + elem]);
        }
    }
    out
}

impl Loader<'_> {
    /// Let the source drop its pages of `s`'s tensors ([`TensorSource::release`]).
    fn release(&self, s: &Spec) {
        let mut names: Vec<&str> = Vec::new();
        match &s.source {
            Source::Tensor { name, .. } | Source::KvB { name, .. } => names.push(name),
            Source::Stacked(parts) => names.extend(parts.iter().map(|p| p.0.as_str())),
            Source::Biases(parts) => names.extend(parts.iter().filter_map(|p| p.0.as_deref())),
            Source::Experts { routed, shared, .. } => {
                match routed {
                    Routed::PerExpert { parts, fused } => {
                        names.push(fused);
                        names.extend(parts.iter().map(|p| p.0.as_str()));
                    }
                    Routed::Transposed(name) => names.push(name),
                }
                match shared.as_ref().map(|f| &f.part) {
                    Some(FoldedPart::GateUp { gate, up }) => names.extend([gate.as_str(), up.as_str()]),
                    Some(FoldedPart::Down(name)) => names.push(name),
                    None => {}
                }
            }
        }
        for n in names {
            self.src.release(n);
        }
    }

    fn tick(&mut self) {
        self.done += 1;
        (self.progress)(self.done, self.total);
    }

    /// Source tensors the loader reads for `s` (each one a tick of the progress).
    fn reads(&self, s: &Spec) -> usize {
        match &s.source {
            Source::Tensor { .. } | Source::KvB { .. } => 1,
            Source::Stacked(parts) => parts.len(),
            Source::Biases(parts) => parts.iter().filter(|p| p.0.is_some()).count(),
            Source::Experts { routed, shared, .. } => {
                let routed = match routed {
                    Routed::PerExpert { fused, .. } if self.src.contains(fused) => 1,
                    Routed::PerExpert { parts, .. } => parts.len(),
                    Routed::Transposed(_) => 1,
                };
                routed
                    + shared.as_ref().map_or(0, |f| match f.part {
                        FoldedPart::GateUp { .. } => 2,
                        FoldedPart::Down(_) => 1,
                    })
            }
        }
    }

    fn raw(&self, name: &str, shape: &[usize]) -> Result<RawTensor<'_>> {
        let t = self.src.get(name)?;
        t.expect_shape(shape)?;
        t.gpu_dtype()?;
        Ok(t)
    }

    /// Transposed experts (gpt-oss) the source holds as `[out, in]` rows already, packed.
    fn rows_of_transposed(&self, routed: &Routed) -> Option<Result<RawTensor<'_>>> {
        match routed {
            Routed::Transposed(name) => self.src.get_transposed(name),
            _ => None,
        }
    }

    /// The GPU dtypes of tensors `names`, as the source would serve them (shapes are checked when
    /// each is written).
    fn dtypes_of<'n>(&self, names: impl IntoIterator<Item = &'n str>) -> Result<Vec<DType>> {
        names.into_iter().map(|n| self.src.gpu_dtype_of(n)).collect()
    }

    /// The formats of a stacked-experts weight: the routed experts' (packed where they are), and,
    /// with folded shared experts, theirs. Block formats stay as they are, in chunks of their own
    /// where the two differ ([`Weight::alloc_stacked`]); the shared down projection is cut into
    /// column ranges of I, so it is widened where I is not whole blocks.
    fn experts_dtypes(&self, routed: &Routed, shared: Option<&layout::Folded>) -> Result<(DType, Option<DType>)> {
        let routed_names: Vec<&str> = match routed {
            Routed::PerExpert { fused, .. } if self.src.contains(fused) => vec![fused.as_str()],
            Routed::PerExpert { parts, .. } => parts.iter().map(|p| p.0.as_str()).collect(),
            // Transposed: values, not rows of blocks.
            Routed::Transposed(name) => {
                let d = self.src.gpu_dtype_of(name)?.widened();
                return Ok((d, shared.map(|_| d)));
            }
        };
        let routed_dtype = common_dtype(&self.dtypes_of(routed_names)?);
        let Some(f) = shared else {
            return Ok((routed_dtype, None));
        };
        let shared_names: Vec<&str> = match &f.part {
            FoldedPart::GateUp { gate, up } => vec![gate.as_str(), up.as_str()],
            FoldedPart::Down(name) => vec![name.as_str()],
        };
        let mut shared_dtype = common_dtype(&self.dtypes_of(shared_names)?);
        let cut = matches!(f.part, FoldedPart::Down(_));
        if cut && !f.inter.is_multiple_of(crate::gpu::Format::of(shared_dtype).block_elems) {
            shared_dtype = shared_dtype.widened();
        }
        // Float formats of both sides meet in one, as before packed weights: the routed one.
        if !routed_dtype.is_packed() && !shared_dtype.is_packed() {
            shared_dtype = routed_dtype;
        }
        Ok((routed_dtype, Some(shared_dtype)))
    }

    /// A matrix `[rows, cols]` (a vector is `[1, n]`).
    fn matrix(&mut self, name: &str, shape: &[usize]) -> Result<Weight> {
        let mut t = self.raw(name, shape)?;
        // Vectors (norm gains, biases) are read by kernels that take float weights only.
        if shape.len() == 1 {
            t = t.widened()?;
        }
        let dtype = t.gpu_dtype()?;
        let (rows, cols) = match shape {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => return Err(Error::unsupported(format!("{name}: unexpected rank {}", shape.len()))),
        };
        let w = Weight::upload(self.ctx, name, dtype, rows, cols, 1, &t.bytes)?;
        self.tick();
        Ok(w)
    }

    /// An f32 activation-side vector (sinks, selection bias).
    fn vector_f32(&mut self, name: &str, len: usize) -> Result<Tensor> {
        let t = self.raw(name, &[len])?;
        let v = Tensor::from_f32(self.ctx, name, &t.to_f32()?);
        self.tick();
        Ok(v)
    }

    /// A zeroed weight of `s`'s shape in `dtype`, for the parts to be written into.
    fn alloc(&self, s: &Spec, dtype: DType) -> Result<Weight> {
        let limit = self.ctx.caps.max_storage_binding;
        Weight::alloc(self.ctx, &s.label, dtype, s.rows, s.cols, s.group_rows, limit)
    }

    /// `[rows_i, cols]` tensors written one after the other from row 0 (in `w`'s dtype), each
    /// uploaded as it is read.
    fn write_stacked(&mut self, w: &dyn RowSink, parts: &[(String, usize)]) -> Result<()> {
        let mut row = 0;
        for (name, r) in parts {
            let t = self.raw(name, &[*r, w.cols()])?;
            // A mixed stack's rows are in the part's own format ([`Weight::alloc_stacked`]).
            w.write_rows(self.ctx, row, &bytes_as(&t, w.dtype_at(row))?)?;
            drop(t);
            self.src.release(name);
            row += r;
            self.tick();
        }
        Ok(())
    }

    /// Vectors stacked into one f32 `[1, sum]` weight; unnamed parts are zeros.
    fn biases(&mut self, s: &Spec, parts: &[(Option<String>, usize)]) -> Result<Weight> {
        let mut values = Vec::with_capacity(s.cols);
        for (name, n) in parts {
            match name {
                Some(name) => {
                    values.extend(self.raw(name, &[*n])?.to_f32()?);
                    self.tick();
                }
                None => values.resize(values.len() + n, 0.0),
            }
        }
        Weight::from_f32(self.ctx, &s.label, DType::F32, 1, values.len(), &values)
    }

    /// The `e` routed experts of `s` written into the first `e` groups of `w` (the rest are for
    /// folded shared experts).
    fn routed_experts(&mut self, s: &Spec, e: usize, routed: &Routed, dtype: DType, w: &dyn RowSink) -> Result<()> {
        let (group, cols) = (s.group_rows, s.cols);
        match routed {
            // transformers 5 in-memory names: `experts.gate_up_proj [E, 2I, D]`,
            // `experts.down_proj [E, D, I]`.
            Routed::PerExpert { fused, .. } if self.src.contains(fused) => {
                let t = self.raw(fused, &[e, group, cols])?;
                w.write_rows(self.ctx, 0, &bytes_as(&t, dtype)?)?;
                drop(t);
                self.tick();
                Ok(())
            }
            Routed::PerExpert { parts, .. } => self.write_stacked(w, parts),
            // gpt-oss stores experts as `x @ W`: `gate_up_proj [E, D, 2I]` (interleaved columns)
            // and `down_proj [E, I, D]`; each expert is transposed to `[out, in]` rows, keeping the
            // interleave.
            Routed::Transposed(name) => {
                let t = self.raw(name, &[e, cols, group])?.widened()?;
                let el = dtype.bytes();
                for x in 0..e {
                    let block = &t.bytes[x * cols * group * el..(x + 1) * cols * group * el];
                    w.write_rows(self.ctx, x * group, &transpose(block, cols, group, el))?;
                }
                drop(t);
                self.tick();
                Ok(())
            }
        }
    }

    /// A shared MLP (width `slots * i_`) written as experts `e..e + slots` of `w`, converted to its
    /// dtype: shared expert `j` takes gate and up rows `j*I..(j+1)*I` and down columns
    /// `j*I..(j+1)*I`.
    fn write_shared_experts(
        &mut self,
        w: &dyn RowSink,
        e: usize,
        slots: usize,
        i_: usize,
        part: &FoldedPart,
    ) -> Result<()> {
        // The shared experts' chunks' format; bytes of `n` elements of a row: whole blocks for block
        // formats (experts_dtypes saw to it).
        let dtype = w.dtype_at(e * w.group_rows());
        let f = crate::gpu::Format::of(dtype);
        let span = |n: usize| n / f.block_elems * f.block_bytes;
        match part {
            FoldedPart::GateUp { gate, up } => {
                let d = w.cols();
                for (half, name) in [gate, up].into_iter().enumerate() {
                    let t = self.raw(name, &[slots * i_, d])?;
                    let bytes = bytes_as(&t, dtype)?;
                    for j in 0..slots {
                        let rows = &bytes[j * i_ * span(d)..][..i_ * span(d)];
                        w.write_rows(self.ctx, (e + j) * 2 * i_ + half * i_, rows)?;
                    }
                    self.tick();
                }
            }
            FoldedPart::Down(name) => {
                let d = w.group_rows();
                let t = self.raw(name, &[d, slots * i_])?;
                let bytes = bytes_as(&t, dtype)?;
                let mut block = vec![0u8; d * span(i_)];
                for j in 0..slots {
                    for r in 0..d {
                        let src = &bytes[span(r * slots * i_ + j * i_)..][..span(i_)];
                        block[r * span(i_)..][..span(i_)].copy_from_slice(src);
                    }
                    w.write_rows(self.ctx, (e + j) * d, &block)?;
                }
                self.tick();
            }
        }
        Ok(())
    }
}
