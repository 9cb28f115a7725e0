//! Embedding gather against a CPU reference: every table precision, odd row widths, repeated ids,
//! ids out of range, chunked tables (ids in every chunk), gpt-oss's row width, both adapters.

mod common;
use common::*;
use wgmoe::internals::gpu::{Context, DType, Tensor, Weight};
use wgmoe::internals::kernels::embedding::embedding;

/// The rows of `table` (rounded to `dtype`) picked by `ids`; zeros for ids past the vocabulary.
fn reference(dtype: DType, table: &[f32], vocab: usize, dim: usize, ids: &[u32]) -> Vec<f64> {
    let rows = rounded(dtype, table);
    ids.iter()
        .flat_map(|&id| {
            let id = id as usize;
            if id < vocab {
                rows[id * dim..][..dim].to_vec()
            } else {
                vec![0.0; dim]
            }
        })
        .collect()
}

/// Embed `ids` from a random `[vocab, dim]` table, optionally chunked at `binding_limit` bytes, and
/// require the exact rows (a gather widens without arithmetic, so the error must be zero).
fn check(
    ctx: &Context,
    name: &str,
    dtype: DType,
    vocab: usize,
    dim: usize,
    ids: &[u32],
    binding_limit: Option<u64>,
) -> usize {
    let mut rng = Rng::new((vocab * 1000 + dim) as u64);
    let values = rng.vec(vocab * dim, 3.0);
    let bytes = dtype.encode(&values);
    let limit = binding_limit.unwrap_or(ctx.caps.max_storage_binding);
    let table = Weight::upload_with_binding_limit(ctx, "table", dtype, vocab, dim, 1, &bytes, limit).unwrap();
    let id_buf = Tensor::from_u32(ctx, "ids", ids);
    // Pre-fill with NaN so rows the kernel forgets to write show up.
    let out = Tensor::from_f32(ctx, "out", &vec![f32::NAN; ids.len() * dim]);
    let dispatches = embedding(ctx, &table, &id_buf, ids.len(), &out).unwrap();
    assert_eq!(dispatches.len(), table.chunks.len());
    ctx.submit(&dispatches.iter().collect::<Vec<_>>());
    let got = out.read_f32(ctx).unwrap();
    let want = reference(dtype, &values, vocab, dim, ids);
    let what = format!(
        "{name} {} V={vocab} D={dim} ids={ids:?} chunks={}",
        dtype.name(),
        table.chunks.len()
    );
    assert_nmse(&what, &got, &want, 0.0);
    table.chunks.len()
}

#[test]
fn odd_widths_every_dtype() {
    for (name, ctx) in contexts() {
        for dtype in DTYPES {
            for dim in [1, 7, 129] {
                check(ctx, name, dtype, 11, dim, &[3], None);
                check(ctx, name, dtype, 11, dim, &[10, 0, 4, 4, 10], None);
            }
        }
    }
}

#[test]
fn ids_past_the_vocabulary_give_zero_rows() {
    for (name, ctx) in contexts() {
        for dtype in DTYPES {
            check(ctx, name, dtype, 6, 9, &[2, 6, 5, u32::MAX, 0], None);
        }
    }
}

#[test]
fn chunked_tables_ids_in_every_chunk() {
    for (name, ctx) in contexts() {
        for dtype in DTYPES {
            let (vocab, dim) = (50, 37);
            // About 8 rows per chunk: 7 chunks, ids in each, plus repeats and one past the end.
            let row_bytes = Weight::row_words(dtype, dim) as u64 * 4;
            let ids: Vec<u32> = vec![49, 0, 7, 8, 15, 16, 23, 24, 31, 32, 40, 41, 48, 8, 49, 50];
            let chunks = check(ctx, name, dtype, vocab, dim, &ids, Some(8 * row_bytes));
            assert!(chunks >= 6, "expected several chunks, got {chunks}");
        }
    }
}

#[test]
fn gpt_oss_row_width() {
    // gpt-oss-20b: D = 2880 (vocab cut to 300 rows to stay cheap; the gather is per row).
    for (name, ctx) in contexts() {
        for dtype in [DType::BF16, DType::F32] {
            check(ctx, name, dtype, 300, 2880, &[299], None);
            check(ctx, name, dtype, 300, 2880, &[17, 299, 0, 17, 150], None);
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = native();
    let table = Weight::from_f32(ctx, "t", DType::F32, 4, 8, &[0.5; 32]).unwrap();
    let ids = Tensor::from_u32(ctx, "ids", &[0, 1]);
    let out = Tensor::zeros(ctx, "out", 16);
    assert!(embedding(ctx, &table, &ids, 2, &out).is_ok());
    assert!(embedding(ctx, &table, &ids, 3, &out).is_err(), "too few ids");
    assert!(embedding(ctx, &table, &ids, 0, &out).is_err(), "no tokens");
    let small = Tensor::zeros(ctx, "small", 15);
    assert!(embedding(ctx, &table, &ids, 2, &small).is_err(), "output too small");
}
