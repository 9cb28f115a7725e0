//! Tensors on the GPU. Activations are plain f32 buffers ([`Tensor`]). Weights ([`Weight`]) stay
//! in the checkpoint's precision, packed in `u32` words (DESIGN.md principle 5), with every row
//! padded to a whole number of 16-byte `vec4<u32>` groups so kernels can use vector loads, and split
//! into chunks of whole row groups when larger than the adapter's storage-binding limit.

use super::{Context, Format};
use crate::error::{Error, Result};
use std::sync::Arc;

/// The precision weights are stored and read in. Activations are always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    pub const ALL: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// The shaders' code for this precision (`DT_F32` ... in the prelude, generated from this).
    pub fn code(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::BF16 => 2,
        }
    }

    /// Bytes of one element in a checkpoint row (its [`Format`] row says).
    pub fn bytes(self) -> usize {
        Format::of(self).elem_bytes
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
        }
    }

    /// Elements per 16-byte `vec4<u32>` word: rows are padded to a multiple of this.
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

/// One binding-sized piece of a [`Weight`]: rows `first_row .. first_row + rows`.
pub struct WeightChunk {
    pub buffer: wgpu::Buffer,
    pub first_row: u32,
    pub rows: u32,
}

/// A weight matrix `[rows, cols]` (row-major, `y = x @ W^T` convention) in its checkpoint precision.
/// Stacked expert tensors `[E, R, C]` are `rows = E*R` with `group_rows = R`: chunks never split a
/// group, so one expert is always inside one binding.
pub struct Weight {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub group_rows: usize,
    /// Words (u32) from one row to the next, a multiple of 4.
    pub row_words: usize,
    pub chunks: Vec<WeightChunk>,
}

impl Weight {
    /// u32 words of one stored row of `cols` elements of `dtype` (a multiple of 4).
    pub fn row_words(dtype: DType, cols: usize) -> usize {
        Format::of(dtype).row_words(cols)
    }

    /// How the rows are stored and read.
    pub fn format(&self) -> &'static Format {
        Format::of(self.dtype)
    }

    /// Upload `bytes` (little-endian, `rows*cols` elements of `dtype`, unpadded). Host memory used
    /// beyond `bytes` is one chunk's padded copy.
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
        if bytes.len() != rows * cols * dtype.bytes() {
            return Err(Error::Invalid(format!(
                "{label}: expected {} bytes for [{rows}, {cols}] {}, got {}",
                rows * cols * dtype.bytes(),
                dtype.name(),
                bytes.len()
            )));
        }
        let w = Self::alloc(ctx, label, dtype, rows, cols, group_rows, binding_limit)?;
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
            return Err(Error::Invalid(format!(
                "{label}: [{rows}, {cols}] does not split into groups of {group_rows} rows"
            )));
        }
        let row_words = Self::row_words(dtype, cols);
        let row_bytes = row_words as u64 * 4;
        let group_bytes = row_bytes * group_rows as u64;
        let limit = binding_limit.min(ctx.caps.max_buffer);
        if group_bytes > limit {
            return Err(Error::Limit {
                what: format!("{label} (one group of {group_rows} rows)"),
                needed: group_bytes,
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        let rows_per_chunk = (limit / group_bytes) as usize * group_rows;
        let mut chunks = Vec::new();
        let mut first = 0usize;
        while first < rows {
            let n = rows_per_chunk.min(rows - first);
            let buffer = ctx.storage(&format!("{label}[{first}..]"), n as u64 * row_bytes);
            chunks.push(WeightChunk {
                buffer,
                first_row: first as u32,
                rows: n as u32,
            });
            first += n;
        }
        Ok(Self {
            dtype,
            rows,
            cols,
            group_rows,
            row_words,
            chunks,
        })
    }

    /// Write whole rows starting at `first_row` from unpadded little-endian `bytes` of this
    /// weight's dtype, padding each row to `row_words` on the way.
    pub fn write_rows(&self, ctx: &Context, first_row: usize, bytes: &[u8]) -> Result<()> {
        let src_row = self.cols * self.dtype.bytes();
        let n = bytes.len() / src_row;
        if !bytes.len().is_multiple_of(src_row) || first_row + n > self.rows {
            return Err(Error::Invalid(format!(
                "{} bytes are not whole rows of {} bytes fitting at row {first_row} of {}",
                bytes.len(),
                src_row,
                self.rows
            )));
        }
        let row_bytes = self.row_words * 4;
        let repack = self.format().repack_row;
        let mut row = first_row;
        while row < first_row + n {
            let chunk = self
                .chunks
                .iter()
                .find(|c| (c.first_row as usize..(c.first_row + c.rows) as usize).contains(&row))
                .ok_or_else(|| Error::Invalid(format!("row {row} is in no chunk")))?;
            let in_chunk = ((chunk.first_row + chunk.rows) as usize).min(first_row + n) - row;
            let src = &bytes[(row - first_row) * src_row..][..in_chunk * src_row];
            let offset = (row - chunk.first_row as usize) as u64 * row_bytes as u64;
            if row_bytes == src_row && repack.is_none() {
                ctx.upload(&chunk.buffer, offset, src)?;
            } else {
                let mut packed = vec![0u8; in_chunk * row_bytes];
                for (dst, s) in packed.chunks_exact_mut(row_bytes).zip(src.chunks_exact(src_row)) {
                    match repack {
                        Some(f) => f(s, dst),
                        None => dst[..src_row].copy_from_slice(s),
                    }
                }
                ctx.upload(&chunk.buffer, offset, &packed)?;
            }
            row += in_chunk;
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
        (self.rows * self.row_words * 4) as u64
    }

    /// Bytes of real data (what a kernel that reads every element must move).
    pub fn data_bytes(&self) -> u64 {
        (self.rows * self.cols * self.dtype.bytes()) as u64
    }
}
