//! Token embedding (MODELS.md §1: `x = embed_tokens[ids]`, no scaling): gather rows of a table in
//! its checkpoint precision into f32 activations, with ids read from a GPU buffer.

use super::{grid, Dispatch};
use crate::error::{shape_err, Result};
use crate::gpu::{Context, DType, Tensor, Weight};

pub const SHADER: &str = include_str!("../../shaders/embedding.wgsl");

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tokens: u32,
    dim: u32,
    row_words: u32,
    data_words: u32,
    first_row: u32,
    chunk_rows: u32,
    vocab: u32,
    groups_per_token: u32,
}

const WG: u32 = 64;

/// Gather `out[t, :] = table[ids[t], :]` (widened to f32) for `t < tokens`.
///
/// `table` is `[V, D]` in f32/f16/bf16, possibly in several chunks: one dispatch per chunk, each
/// copying only the rows inside it (record them all, in any order, in one pass). `ids` is a u32
/// buffer of at least `tokens` entries that the GPU may have written (the sampled token). An id
/// `>= V` reads nothing and yields a zero row; the host is expected to validate ids it supplies.
pub fn embedding(ctx: &Context, table: &Weight, ids: &Tensor, tokens: usize, out: &Tensor) -> Result<Vec<Dispatch>> {
    let op = "embedding";
    let dim = table.cols;
    if tokens == 0 {
        return Err(shape_err(op, "no tokens"));
    }
    if dim == 0 || table.rows == 0 {
        return Err(shape_err(op, format!("empty table [{}, {dim}]", table.rows)));
    }
    if ids.len < tokens {
        return Err(shape_err(op, format!("ids hold {} entries, need {tokens}", ids.len)));
    }
    if out.len < tokens * dim {
        return Err(shape_err(
            op,
            format!("out holds {} values, need {tokens} x {dim}", out.len),
        ));
    }
    if table.rows > u32::MAX as usize || tokens * dim > u32::MAX as usize {
        return Err(shape_err(op, "sizes exceed 32-bit indexing"));
    }
    let data_words = match table.dtype {
        DType::F32 => dim,
        DType::F16 | DType::BF16 => dim.div_ceil(2),
    } as u32;
    let groups_per_token = data_words.div_ceil(WG);
    let groups = groups_per_token as u64 * tokens as u64;
    if groups > 65535 * 65535 {
        return Err(shape_err(op, format!("{tokens} tokens x {dim} is too many workgroups")));
    }
    let mut dispatches = Vec::with_capacity(table.chunks.len());
    for (i, chunk) in table.chunks.iter().enumerate() {
        let params = ctx.uniform(
            "embedding.params",
            &Params {
                tokens: tokens as u32,
                dim: dim as u32,
                row_words: table.row_words as u32,
                data_words,
                first_row: chunk.first_row,
                chunk_rows: chunk.rows,
                vocab: table.rows as u32,
                groups_per_token,
            },
        );
        let constants = [
            ("WG", WG as f64),
            ("W_DTYPE", table.dtype.code()),
            ("ZERO_OOB", (i == 0) as u32 as f64),
        ];
        let pipeline = ctx.pipeline("embedding", SHADER, "embedding", &constants);
        let res = [
            (0, params.as_entire_binding()),
            (1, ids.binding()),
            (2, chunk.buffer.as_entire_binding()),
            (3, out.binding()),
        ];
        let label = format!("embedding[{}..]", chunk.first_row);
        dispatches.push(Dispatch::new(
            ctx,
            label,
            pipeline,
            &res,
            grid(groups as u32),
            vec![params.clone()],
        ));
    }
    Ok(dispatches)
}
