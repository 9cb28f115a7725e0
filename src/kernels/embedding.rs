//! Token embedding (MODELS.md §1: `x = embed_tokens[ids]`, no scaling): gather rows of a table in
//! its checkpoint precision into f32 activations, with ids read from a GPU buffer.

use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{grid, Context, Dispatch, Format, Tensor, Weight};

const BODY: &str = include_str!("../../shaders/embedding.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        dim: u32,
        /// vec4<u32> words per stored row.
        row_words: u32,
        /// Words of a row that hold data: ceil(dim / W_EPV).
        data_words: u32,
        first_row: u32,
        chunk_rows: u32,
        vocab: u32,
        /// Workgroups per token along the row.
        groups_per_token: u32,
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
        /// This dispatch writes zero rows for ids past the vocabulary (the first chunk's does).
        ZERO_OOB: bool = false,
    }
}

crate::wgsl_interface! {
    family: "embedding",
    structs: [Params],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [tokens]
        ids: read "array<u32>",
        /// [chunk_rows, row_words] words of the table's chunk
        w: read "array<vec4<u32>>",
        /// [tokens, dim]
        out: read_write "array<f32>",
    },
}

/// The source for tables of `format`.
pub(crate) fn compose(format: &'static Format) -> Compose<'static> {
    let mut c = Compose::new(&INTERFACE, vec![BODY]);
    format.apply(&mut c);
    c
}

/// Gather `out[t, :] = table[ids[t], :]` (widened to f32) for `t < tokens`.
///
/// `table` is `[V, D]` in f32/f16/bf16, possibly in several chunks: one dispatch per chunk, each
/// copying only the rows inside it (record them all, in any order, in one pass). `ids` is a u32
/// buffer of at least `tokens` entries that the GPU may have written (the sampled token). An id
/// `>= V` reads nothing and yields a zero row; the host is expected to validate ids it supplies.
pub fn embedding(ctx: &Context, table: &Weight, ids: &Tensor, tokens: usize, out: &Tensor) -> Result<Vec<Dispatch>> {
    let op = "embedding";
    table.require_uniform(op)?;
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
    let data_words = dim.div_ceil(table.format().elems_per_word) as u32;
    let groups_per_token = data_words.div_ceil(WG);
    let groups = groups_per_token as u64 * tokens as u64;
    if groups > 65535 * 65535 {
        return Err(shape_err(op, format!("{tokens} tokens x {dim} is too many workgroups")));
    }
    let mut dispatches = Vec::with_capacity(table.chunks.len());
    let shader = ctx.shader(&compose(table.format()));
    for (i, chunk) in table.chunks.iter().enumerate() {
        let params = ctx.params(&Params {
            tokens: tokens as u32,
            dim: dim as u32,
            row_words: table.words_per_row() as u32,
            data_words,
            first_row: chunk.first_row,
            chunk_rows: chunk.rows,
            vocab: table.rows as u32,
            groups_per_token,
        });
        let consts = Consts { ZERO_OOB: i == 0 };
        let pipeline = ctx.pipeline(&shader, "embedding", &consts.constants());
        let res = [
            (bind::p, params.as_entire_binding()),
            (bind::ids, ids.binding()),
            (bind::w, chunk.buffer.as_entire_binding()),
            (bind::out, out.binding()),
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
