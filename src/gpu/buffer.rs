//! Tensors on the GPU. Activations are plain f32 buffers ([`Tensor`]). Weights ([`Weight`]) stay
//! in the checkpoint's precision, packed in `u32` words (DESIGN.md principle 5), with every row
//! padded to a whole number of 16-byte `vec4<u32>` groups so kernels can use vector loads, and split
//! into chunks of whole row groups when larger than the adapter's storage-binding limit.

use super::{Context, Format};
use crate::error::{Error, Result};
use std::sync::Arc;

/// The precision weights are stored and read in. Activations are always f32. Past the three
/// float types, the block-quantised formats stay packed as the checkpoint stores them (GGUF's
/// blocks, named as ggml names them; see [`Format`]).
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
    MXFP4,
    /// DeepSeek-V3's block-scaled float8 e4m3fn: 128 values of a row with their tile's f32 scale.
    FP8,
}

impl DType {
    /// The float types: what biases, norm gains and every other non-matrix weight may be.
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// The block-quantised types, kept packed on the GPU.
    pub const PACKED: [DType; 14] = [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_NL,
        DType::IQ4_XS,
        DType::MXFP4,
        DType::FP8,
    ];

    /// The shaders' code for this precision (`DT_F32` ... in the prelude, generated from this):
    /// its row in [`crate::gpu::FORMATS`].
    pub fn code(self) -> u32 {
        super::FORMATS
            .iter()
            .position(|f| f.dtype == self)
            .expect("every DType has a row in FORMATS") as u32
    }

    /// The type named `name` (`f16`, `q4_k`, ...; case-insensitive).
    pub fn parse(name: &str) -> Option<DType> {
        super::FORMATS
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
            .map(|f| f.dtype)
    }

    /// The type a row of `cols` elements takes when this one is asked for: itself when the row is
    /// whole blocks, else llama.cpp's quantiser's fallback for such rows (`llama-quant.cpp`:
    /// Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K / Q3_K / IQ4_XS -> IQ4_NL), and f16 when even
    /// that does not fit.
    pub fn for_row(self, cols: usize) -> DType {
        if self.row_bytes(cols).is_some() {
            return self;
        }
        let fallback = match self {
            DType::Q2_K | DType::Q3_K | DType::IQ4_XS => DType::IQ4_NL,
            DType::Q4_K => DType::Q5_0,
            DType::Q5_K => DType::Q5_1,
            DType::Q6_K => DType::Q8_0,
            _ => DType::F16,
        };
        if fallback.row_bytes(cols).is_some() {
            fallback
        } else {
            DType::F16
        }
    }

    /// The float type block-quantised values are expanded to where they cannot stay packed: bf16
    /// for MXFP4 and FP8 (whose checkpoints' own dequantisation is bf16; MXFP4 is exact in it), f16
    /// for GGUF's other formats (ggml's scales are f16); float types are themselves.
    pub fn widened(self) -> DType {
        match self {
            DType::MXFP4 | DType::FP8 => DType::BF16,
            d if d.is_packed() => DType::F16,
            d => d,
        }
    }

    /// The `--dtype` value `s`, or an error listing the formats.
    pub fn from_arg(s: &str) -> Result<DType> {
        DType::parse(s).ok_or_else(|| {
            let names: Vec<&str> = super::FORMATS.iter().map(|f| f.name).collect();
            Error::bad_input(format!("unknown --dtype {s:?}: use one of {}", names.join(", ")))
        })
    }

    /// Whether this is a block-quantised type (read by [`Format::row_bytes`], not per element).
    pub fn is_packed(self) -> bool {
        Format::of(self).block_elems > 1
    }

    /// Bytes of one element in a checkpoint row, for the float types. Block-quantised types have
    /// no per-element size: use [`DType::row_bytes`].
    pub fn bytes(self) -> usize {
        let f = Format::of(self);
        assert!(f.block_elems == 1, "{} has no per-element size", f.name);
        f.block_bytes
    }

    /// Bytes of a checkpoint row of `cols` elements (`None` when `cols` is not a whole number of
    /// blocks).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        Format::of(self).row_bytes(cols)
    }

    pub fn name(self) -> &'static str {
        Format::of(self).name
    }

    /// `x` rounded to this precision (round-to-nearest-even), as the GPU will see it.
    pub fn round(self, x: f32) -> f32 {
        match self {
            DType::F32 => x,
            DType::F16 => half::f16::from_f32(x).to_f32(),
            DType::BF16 => half::bf16::from_f32(x).to_f32(),
            d => panic!("{} rounds block by block, not element by element", d.name()),
        }
    }

    /// Little-endian bytes of `values` in this precision.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            DType::F32 => bytemuck::cast_slice(values).to_vec(),
            DType::F16 => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            DType::BF16 => values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            d => panic!("{} is encoded by a quantiser, not element by element", d.name()),
        }
    }

    /// Elements per weight word (one `w_load`): rows are a whole number of them.
    pub fn elems_per_vec4(self) -> usize {
        Format::of(self).elems_per_word
    }
}

/// An f32 activation buffer (or a window of one).
#[derive(Clone)]
pub struct Tensor {
    pub buffer: Arc<wgpu::Buffer>,
    /// Length in f32 (or u32) elements.
    pub len: usize,
}

impl Tensor {
    pub fn zeros(ctx: &Context, label: &str, len: usize) -> Self {
        Self {
            buffer: Arc::new(ctx.storage(label, len as u64 * 4)),
            len,
        }
    }

    pub fn from_f32(ctx: &Context, label: &str, data: &[f32]) -> Self {
        let t = Self::zeros(ctx, label, data.len());
        ctx.queue.write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        t
    }

    pub fn from_u32(ctx: &Context, label: &str, data: &[u32]) -> Self {
        let t = Self::zeros(ctx, label, data.len());
        ctx.queue.write_buffer(&t.buffer, 0, bytemuck::cast_slice(data));
        t
    }

    pub fn write_f32(&self, ctx: &Context, data: &[f32]) {
        ctx.queue.write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
    }

    pub fn read_f32(&self, ctx: &Context) -> Result<Vec<f32>> {
        ctx.read_f32(&self.buffer, 0, self.len)
    }

    pub fn read_u32(&self, ctx: &Context) -> Result<Vec<u32>> {
        ctx.read_u32(&self.buffer, 0, self.len)
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        self.buffer.as_entire_binding()
    }
}

/// One binding-sized piece of a [`Weight`]: rows `first_row .. first_row + rows`, in one format.
pub struct WeightChunk {
    pub buffer: wgpu::Buffer,
    pub first_row: u32,
    pub rows: u32,
    /// This chunk's format: the weight's, except in a stack of parts of different block formats
    /// ([`Weight::alloc_stacked`]).
    pub dtype: DType,
    /// Weight words and bytes from one of its rows to the next.
    pub words_per_row: usize,
    pub row_bytes: usize,
}

impl WeightChunk {
    pub fn format(&self) -> &'static Format {
        Format::of(self.dtype)
    }
}

/// A weight matrix `[rows, cols]` (row-major, `y = x @ W^T` convention) in its checkpoint precision.
/// Stacked expert tensors `[E, R, C]` are `rows = E*R` with `group_rows = R`: chunks never split a
/// group, so one expert is always inside one binding.
pub struct Weight {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub group_rows: usize,
    pub chunks: Vec<WeightChunk>,
    /// Block-quantised rows need not be whole u32s, but the queue writes whole ones: the known
    /// bytes of each word a write began or ended inside, keyed by (chunk, byte offset), merged
    /// with the next write into that word ([`Weight::write_rows`]).
    edges: std::sync::Mutex<std::collections::HashMap<(usize, u64), [u8; 4]>>,
}

impl Weight {
    /// u32 words of one stored row of `cols` elements of a float `dtype` (a multiple of 4).
    pub fn row_words(dtype: DType, cols: usize) -> usize {
        Format::of(dtype).row_stride(cols) / 4
    }

    /// How the rows are stored and read.
    pub fn format(&self) -> &'static Format {
        Format::of(self.dtype)
    }

    /// Weight words (one `w_load` index, [`Format::elems_per_word`] elements) from one row to the
    /// next in the weight's format: what kernels multiply a row by (a mixed stack's chunks carry
    /// their own, [`WeightChunk::words_per_row`]).
    pub fn words_per_row(&self) -> usize {
        self.format().words_per_row(self.cols)
    }

    /// Bytes from one stored row to the next in the weight's format.
    pub fn row_bytes(&self) -> usize {
        self.format().row_stride(self.cols)
    }

    /// The format row `row` is stored in: the weight's, or in a mixed stack its part's.
    pub fn dtype_at(&self, row: usize) -> DType {
        self.chunks
            .iter()
            .find(|c| (c.first_row as usize..(c.first_row + c.rows) as usize).contains(&row))
            .map_or(self.dtype, |c| c.dtype)
    }

    /// u32s from one row to the next, for weights read as u32 rows (biases: float types).
    pub fn row_u32s(&self) -> usize {
        self.row_bytes() / 4
    }

    /// Upload `bytes` (little-endian, `rows` checkpoint rows of `cols` elements of `dtype`,
    /// unpadded). Host memory used beyond `bytes` is one chunk's padded copy.
    pub fn upload(
        ctx: &Context,
        label: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        group_rows: usize,
        bytes: &[u8],
    ) -> Result<Self> {
        Self::upload_with_binding_limit(
            ctx,
            label,
            dtype,
            rows,
            cols,
            group_rows,
            bytes,
            ctx.caps.max_storage_binding,
        )
    }

    /// As [`Weight::upload`], with an explicit per-chunk byte limit (tests use a small one to
    /// exercise chunking cheaply).
    #[allow(clippy::too_many_arguments)]
    pub fn upload_with_binding_limit(
        ctx: &Context,
        label: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        group_rows: usize,
        bytes: &[u8],
        binding_limit: u64,
    ) -> Result<Self> {
        let w = Self::alloc(ctx, label, dtype, rows, cols, group_rows, binding_limit)?;
        let want = rows * w.format().row_bytes(cols).unwrap_or(0);
        if bytes.len() != want {
            return Err(Error::bad_input(format!(
                "{label}: expected {want} bytes for [{rows}, {cols}] {}, got {}",
                dtype.name(),
                bytes.len()
            )));
        }
        w.write_rows(ctx, 0, bytes)?;
        Ok(w)
    }

    /// A zeroed weight, chunked for `binding_limit`; fill it with [`Weight::write_rows`]. Loading
    /// a checkpoint piece by piece this way keeps host memory at one source tensor.
    pub fn alloc(
        ctx: &Context,
        label: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        group_rows: usize,
        binding_limit: u64,
    ) -> Result<Self> {
        if rows == 0 || cols == 0 || group_rows == 0 || !rows.is_multiple_of(group_rows) {
            return Err(Error::bad_input(format!(
                "{label}: [{rows}, {cols}] does not split into groups of {group_rows} rows"
            )));
        }
        let format = Format::of(dtype);
        if format.row_bytes(cols).is_none() {
            return Err(Error::unsupported(format!(
                "{label}: rows of {cols} elements are not a whole number of {}-element {} blocks",
                format.block_elems, format.name
            )));
        }
        let row_bytes = format.row_stride(cols) as u64;
        let group_bytes = row_bytes * group_rows as u64;
        // Block formats read a word past a block that ends inside one: each chunk keeps a word of
        // zeros after its rows, and is a whole number of 16-byte words.
        let tail = if format.block_elems > 1 { 16 } else { 0 };
        let size = |rows: u64| (rows * row_bytes + tail).next_multiple_of(16);
        let limit = binding_limit.min(ctx.caps.max_buffer);
        if size(group_rows as u64) > limit {
            return Err(Error::Limit {
                what: format!("{label} (one group of {group_rows} rows)"),
                needed: size(group_rows as u64),
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        // The most groups whose rows and tail, rounded up to whole words, fit the limit: at least
        // one (checked above).
        let rows_per_chunk = (((limit & !15) - tail) / group_bytes) as usize * group_rows;
        let mut chunks = Vec::new();
        let mut first = 0usize;
        while first < rows {
            let n = rows_per_chunk.min(rows - first);
            let buffer = ctx.storage(&format!("{label}[{first}..]"), size(n as u64));
            chunks.push(WeightChunk {
                buffer,
                first_row: first as u32,
                rows: n as u32,
                dtype,
                words_per_row: format.words_per_row(cols),
                row_bytes: row_bytes as usize,
            });
            first += n;
        }
        Ok(Self {
            dtype,
            rows,
            cols,
            group_rows,
            chunks,
            edges: Default::default(),
        })
    }

    /// A zeroed weight stacking `parts` (rows, dtype) of `cols` columns, each part in its own
    /// format and its own chunks: a GGUF's q|k|v when `attn_v` has another block format than
    /// `attn_q` and `attn_k` (llama.cpp's Q4_K_M does that), kept packed instead of widened. Only the
    /// dense projections ([`crate::kernels::matmul`]) read such a weight; `dtype` is the first
    /// part's.
    pub fn alloc_stacked(
        ctx: &Context,
        label: &str,
        parts: &[(usize, DType)],
        cols: usize,
        binding_limit: u64,
    ) -> Result<Self> {
        Self::alloc_grouped(ctx, label, parts, cols, 1, binding_limit)
    }

    /// [`Weight::alloc_stacked`] in groups of `group_rows` (stacked experts: routed experts in one
    /// format, folded shared experts in another); each part is whole groups. The dense
    /// projections and the expert kernels read such a weight.
    pub fn alloc_grouped(
        ctx: &Context,
        label: &str,
        parts: &[(usize, DType)],
        cols: usize,
        group_rows: usize,
        binding_limit: u64,
    ) -> Result<Self> {
        let first = parts
            .first()
            .map(|p| p.1)
            .ok_or_else(|| Error::bad_input(format!("{label}: no parts to stack")))?;
        let mut chunks = Vec::new();
        let mut row = 0;
        for (i, &(rows, dtype)) in parts.iter().enumerate() {
            let part = Self::alloc(
                ctx,
                &format!("{label}.{i}"),
                dtype,
                rows,
                cols,
                group_rows,
                binding_limit,
            )?;
            for mut c in part.chunks {
                c.first_row += row as u32;
                chunks.push(c);
            }
            row += rows;
        }
        Ok(Self {
            dtype: first,
            rows: row,
            cols,
            group_rows,
            chunks,
            edges: Default::default(),
        })
    }

    /// Whether every chunk is in the weight's format (all but [`Weight::alloc_grouped`]'s mixed
    /// stacks); kernels other than the dense projections and the expert kernels take only such
    /// weights.
    pub fn is_uniform(&self) -> bool {
        self.chunks.iter().all(|c| c.dtype == self.dtype)
    }

    /// An error for kernel `op` unless [`Weight::is_uniform`].
    pub fn require_uniform(&self, op: &'static str) -> Result<()> {
        if self.is_uniform() {
            return Ok(());
        }
        Err(Error::Shape {
            op,
            msg: "the weight stacks parts of different formats; only the dense projections and the expert kernels read those".into(),
        })
    }

    /// Write whole rows starting at `first_row` from unpadded little-endian checkpoint `bytes` of
    /// the format of the chunks they land in (one format), padding each row to its stored size.
    pub fn write_rows(&self, ctx: &Context, first_row: usize, bytes: &[u8]) -> Result<()> {
        let dtype = self.dtype_at(first_row);
        let format = Format::of(dtype);
        let src_row = format.row_bytes(self.cols).unwrap_or(0);
        let n = bytes.len() / src_row.max(1);
        if src_row == 0 || !bytes.len().is_multiple_of(src_row) || first_row + n > self.rows {
            return Err(Error::bad_input(format!(
                "{} bytes are not whole rows of {} bytes fitting at row {first_row} of {}",
                bytes.len(),
                src_row,
                self.rows
            )));
        }
        // Checked before anything is written: one format from the first row to the last.
        let end = first_row + n;
        if let Some(c) = self
            .chunks
            .iter()
            .find(|c| (c.first_row as usize) < end && first_row < (c.first_row + c.rows) as usize && c.dtype != dtype)
        {
            return Err(Error::bad_input(format!(
                "rows {first_row}..{end} of {} reach rows stored as {}",
                dtype.name(),
                c.dtype.name()
            )));
        }
        let repack = format.repack_row;
        let mut row = first_row;
        while row < first_row + n {
            let (c, chunk) = self
                .chunks
                .iter()
                .enumerate()
                .find(|(_, c)| (c.first_row as usize..(c.first_row + c.rows) as usize).contains(&row))
                .ok_or_else(|| Error::bad_input(format!("row {row} is in no chunk")))?;
            let row_bytes = chunk.row_bytes;
            let in_chunk = ((chunk.first_row + chunk.rows) as usize).min(first_row + n) - row;
            let src = &bytes[(row - first_row) * src_row..][..in_chunk * src_row];
            let offset = (row - chunk.first_row as usize) as u64 * row_bytes as u64;
            if row_bytes == src_row && repack.is_none() {
                self.upload_bytes(ctx, c, offset, src)?;
            } else {
                let mut packed = vec![0u8; in_chunk * row_bytes];
                for (dst, s) in packed.chunks_exact_mut(row_bytes).zip(src.chunks_exact(src_row)) {
                    match repack {
                        Some(f) => f(s, dst),
                        None => dst[..src_row].copy_from_slice(s),
                    }
                }
                self.upload_bytes(ctx, c, offset, &packed)?;
            }
            row += in_chunk;
        }
        Ok(())
    }

    /// Write `data` at byte `offset` of chunk `c`. The queue writes whole u32s: a word that `data`
    /// starts or ends inside is written with the bytes known so far (this write's, merged with
    /// those of the write that shared it; every byte is written once, the rest are zero).
    fn upload_bytes(&self, ctx: &Context, c: usize, offset: u64, data: &[u8]) -> Result<()> {
        let buffer = &self.chunks[c].buffer;
        let end = offset + data.len() as u64;
        let at = |b: u64| (b - offset) as usize;
        let mut pos = offset;
        while pos < end {
            let word = pos & !3;
            if pos == word && end - pos >= 4 {
                let body_end = end & !3;
                ctx.upload(buffer, pos, &data[at(pos)..at(body_end)])?;
                pos = body_end;
            } else {
                let to = (word + 4).min(end);
                let bytes = {
                    let mut edges = self.edges.lock().unwrap_or_else(|e| e.into_inner());
                    let known = edges.entry((c, word)).or_default();
                    known[(pos - word) as usize..(to - word) as usize].copy_from_slice(&data[at(pos)..at(to)]);
                    *known
                };
                ctx.upload(buffer, word, &bytes)?;
                pos = to;
            }
        }
        Ok(())
    }

    /// Upload f32 `values`, rounded to `dtype` (tests and synthetic models).
    pub fn from_f32(
        ctx: &Context,
        label: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<Self> {
        Self::upload(ctx, label, dtype, rows, cols, 1, &dtype.encode(values))
    }

    /// Bytes on the GPU, padding included.
    pub fn gpu_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.buffer.size()).sum()
    }

    /// Bytes of real data (what a kernel that reads every element must move).
    pub fn data_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| (c.rows as usize * c.format().row_bytes(self.cols).unwrap_or(0)) as u64)
            .sum()
    }
}
