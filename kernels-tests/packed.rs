//! Block-quantised weights read packed by every matrix kernel (GGUF Q8_0 .. Q6_K and MXFP4, as the
//! file stores them), against an f64 reference over the values ggml's formulas give for the same
//! bytes (the CPU dequantisers of `model::gguf::dequant`, themselves checked against gguf-py in
//! kernels-tests/gguf.rs).
//!
//! Bounds: the GPU dequantises in f32 with ggml's order of operations, so each weight is the CPU's
//! value (to an FMA's rounding) and only f32 summation error remains: the f32 bound of
//! kernels-tests/matmul.rs, NMSE <= 1e-9, for matvec, the tiled GEMM, the expert GEMVs and GEMMs.
//! Cooperative matrices round weights and activations to f16: 1e-5 there (the f16 formats'
//! cooperative bound in kernels-tests/moe.rs). The embedding gather does no arithmetic past the
//! dequantisation: 1e-12.
//!
//! Shapes: rows that are an odd number of blocks (so blocks of 18, 22, 34, 110, 210 and 17 bytes
//! start at every byte alignment), odd row counts, token counts on both sides of the matvec/GEMM
//! switch, weights split over several bindings, and real model shapes.

mod common;
use common::moe::{make_data, reference as moe_reference, run_gpu, spec, Path};
use common::*;
use wgmoe::internals::gpu::{Context, DType, Format, Tensor, Weight};
use wgmoe::internals::kernels::embedding::embedding;
use wgmoe::internals::kernels::matmul::{coop_enabled, gemm, matmul, matvec, MatmulSpec};
use wgmoe::internals::model::source::f32_values;

const BOUND: f64 = 1e-9;
const COOP_BOUND: f64 = 1e-5;

/// A K of `blocks` blocks of `dtype`.
fn k_of(dtype: DType, blocks: usize) -> usize {
    Format::of(dtype).block_elems * blocks
}

/// Random packed `[n, k]` weights of `dtype`: (bytes, dequantised values).
fn random(dtype: DType, n: usize, k: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    let bytes = Format::of(dtype)
        .random_rows(n, k, seed, 1.0 / (k as f32).sqrt())
        .unwrap();
    let values = f32_values(dtype, &bytes);
    assert!(
        values.iter().all(|v| v.is_finite()),
        "{}: random blocks decode finite",
        dtype.name()
    );
    (bytes, values)
}

fn reference(t: usize, n: usize, k: usize, x: &[f32], w: &[f32]) -> Vec<f64> {
    let mut out = vec![0.0; t * n];
    for ti in 0..t {
        for r in 0..n {
            out[ti * n + r] = (0..k).map(|c| x[ti * k + c] as f64 * w[r * k + c] as f64).sum();
        }
    }
    out
}

#[derive(Clone, Copy, Debug)]
enum Kernel {
    Matvec,
    Gemm,
    Matmul,
}

/// `t` tokens through `[n, k]` weights of `dtype` with `kernel`, split at `limit` bytes per
/// binding if given. Returns the number of chunks.
#[allow(clippy::too_many_arguments)]
fn check(
    ctx: &Context,
    name: &str,
    kernel: Kernel,
    dtype: DType,
    t: usize,
    n: usize,
    k: usize,
    limit: Option<u64>,
    seed: u64,
) -> usize {
    let (bytes, wv) = random(dtype, n, k, seed);
    let mut rng = Rng::new(seed);
    let x = rng.vec(t * k, 1.0);
    let limit = limit.unwrap_or(ctx.caps.max_storage_binding);
    let w = Weight::upload_with_binding_limit(ctx, "w", dtype, n, k, 1, &bytes, limit).unwrap();
    let xt = Tensor::from_f32(ctx, "x", &x);
    let yt = Tensor::zeros(ctx, "y", t * n);
    let f = match kernel {
        Kernel::Matvec => matvec,
        Kernel::Gemm => gemm,
        Kernel::Matmul => matmul,
    };
    let ds = f(ctx, MatmulSpec::packed(t, &w), &xt, &w, None, &yt).unwrap();
    ctx.submit(&ds.iter().collect::<Vec<_>>());
    let got = yt.read_f32(ctx).unwrap();
    let coop = !matches!(kernel, Kernel::Matvec) && ds.iter().any(|d| d.label.contains("coop"));
    // Where the adapter has cooperative matrices, prefill of packed weights runs on them.
    assert_eq!(
        coop,
        !matches!(kernel, Kernel::Matvec) && coop_enabled(ctx, &w),
        "{name} {kernel:?}: cooperative path"
    );
    let bound = if coop { COOP_BOUND } else { BOUND };
    let what = format!(
        "{name} {kernel:?} {} T={t} N={n} K={k} chunks={} coop={coop}",
        dtype.name(),
        w.chunks.len()
    );
    assert_nmse(&what, &got, &reference(t, n, k, &x, &wv), bound);
    w.chunks.len()
}

#[test]
fn matvec_and_gemm_every_format_odd_shapes() {
    for (name, ctx) in contexts() {
        for (i, dtype) in DType::PACKED.into_iter().enumerate() {
            let seed = 100 + i as u64;
            // Three blocks a row: rows start at every alignment the block size allows.
            let k = k_of(dtype, 3);
            check(ctx, name, Kernel::Matvec, dtype, 1, 13, k, None, seed);
            check(ctx, name, Kernel::Matvec, dtype, 3, 7, k, None, seed + 1);
            check(ctx, name, Kernel::Gemm, dtype, 37, 13, k, None, seed + 2);
            check(ctx, name, Kernel::Matmul, dtype, 20, 70, k_of(dtype, 1), None, seed + 3);
        }
    }
}

#[test]
fn chunked_weights_every_format() {
    let ctx = native();
    for (i, dtype) in DType::PACKED.into_iter().enumerate() {
        let k = k_of(dtype, 5);
        let row = Format::of(dtype).row_bytes(k).unwrap() as u64;
        // Seven rows a binding: chunks start mid-word for the odd block sizes.
        let limit = 7 * row + 32;
        for (kernel, t) in [(Kernel::Matvec, 2), (Kernel::Gemm, 19)] {
            let chunks = check(ctx, "native", kernel, dtype, t, 23, k, Some(limit), 200 + i as u64);
            assert!(chunks >= 3, "{}: chunking not exercised", dtype.name());
        }
    }
}

#[test]
fn real_shapes() {
    // OLMoE's q_proj (2048 x 2048) and Qwen3-30B-A3B's expert down rows (I = 768, three Q6_K /
    // Q4_K super-blocks), as Q4_K_M files store them.
    let ctx = native();
    for (dtype, n, k) in [
        (DType::Q4_K, 2048, 2048),
        (DType::Q6_K, 2048, 768),
        (DType::Q8_0, 1024, 2048),
        (DType::MXFP4, 720, 2880),
    ] {
        check(ctx, "native", Kernel::Matvec, dtype, 1, n, k, None, 7);
        check(ctx, "native", Kernel::Matmul, dtype, 40, n, k, None, 8);
    }
}

#[test]
fn experts_every_format_decode_and_prefill() {
    for (name, ctx) in contexts() {
        for (i, dtype) in DType::PACKED.into_iter().enumerate() {
            let b = Format::of(dtype).block_elems;
            // D of three blocks, I of one: odd block counts on both sides.
            let s = spec(5, 4, 2, 3 * b, b);
            let d = make_data(&s, dtype, i % 2 == 0, &[], 300 + i as u64);
            let want = moe_reference(&s, &d);
            for path in [Path::Decode, Path::Prefill] {
                let (got, coop) = run_gpu(ctx, &s, dtype, &d, false, path);
                let bound = if coop { COOP_BOUND } else { BOUND };
                assert_nmse(
                    &format!("{name} {} experts {:?}", dtype.name(), path as u8),
                    &got,
                    &want,
                    bound,
                );
            }
        }
    }
}

#[test]
fn experts_chunked() {
    let ctx = native();
    for dtype in [DType::Q4_0, DType::Q6_K, DType::MXFP4] {
        let b = Format::of(dtype).block_elems;
        let s = spec(7, 7, 3, b, b);
        let d = make_data(&s, dtype, true, &[2], 400);
        let want = moe_reference(&s, &d);
        for path in [Path::Decode, Path::Prefill] {
            let (got, coop) = run_gpu(ctx, &s, dtype, &d, true, path);
            let bound = if coop { COOP_BOUND } else { BOUND };
            assert_nmse(&format!("{} chunked experts", dtype.name()), &got, &want, bound);
        }
    }
}

#[test]
fn embedding_rows_every_format() {
    for (name, ctx) in contexts() {
        for (i, dtype) in DType::PACKED.into_iter().enumerate() {
            let (vocab, dim) = (29, k_of(dtype, 3));
            let (bytes, values) = random(dtype, vocab, dim, 500 + i as u64);
            let row = Format::of(dtype).row_bytes(dim).unwrap() as u64;
            let table =
                Weight::upload_with_binding_limit(ctx, "table", dtype, vocab, dim, 1, &bytes, 5 * row + 32).unwrap();
            assert!(table.chunks.len() >= 5);
            let ids: Vec<u32> = vec![0, 28, 5, 5, 13, 31, 6];
            let id_buf = Tensor::from_u32(ctx, "ids", &ids);
            let out = Tensor::from_f32(ctx, "out", &vec![f32::NAN; ids.len() * dim]);
            let ds = embedding(ctx, &table, &id_buf, ids.len(), &out).unwrap();
            ctx.submit(&ds.iter().collect::<Vec<_>>());
            let got = out.read_f32(ctx).unwrap();
            let want: Vec<f64> = ids
                .iter()
                .flat_map(|&id| match (id as usize) < vocab {
                    true => values[id as usize * dim..][..dim].iter().map(|&v| v as f64).collect(),
                    false => vec![0.0; dim],
                })
                .collect();
            assert_nmse(&format!("{name} {} embedding", dtype.name()), &got, &want, 1e-12);
        }
    }
}

#[test]
fn packed_weights_take_the_files_bytes() {
    let ctx = native();
    for dtype in DType::PACKED {
        let k = k_of(dtype, 7);
        let (bytes, _) = random(dtype, 33, k, 1);
        let w = Weight::upload(ctx, "w", dtype, 33, k, 1, &bytes).unwrap();
        assert_eq!(w.data_bytes(), bytes.len() as u64);
        // One 16-byte tail word and the round-up to whole words: nothing per row.
        assert!(
            w.gpu_bytes() <= bytes.len() as u64 + 32,
            "{}: {} GPU bytes for {}",
            dtype.name(),
            w.gpu_bytes(),
            bytes.len()
        );
    }
}

#[test]
fn rows_that_are_not_whole_blocks_are_errors() {
    let ctx = native();
    for dtype in DType::PACKED {
        let k = k_of(dtype, 2) + 8;
        let e = Weight::alloc(
            ctx,
            "blk.0.ffn_down.weight",
            dtype,
            4,
            k,
            1,
            ctx.caps.max_storage_binding,
        )
        .err()
        .unwrap_or_else(|| panic!("{}: accepted rows of {k}", dtype.name()))
        .to_string();
        assert!(e.contains("blk.0.ffn_down.weight") && e.contains(dtype.name()), "{e}");
        let err = Weight::upload(ctx, "w", dtype, 4, k_of(dtype, 2), 1, &[0u8; 10])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected"), "{err}");
    }
}

/// A stack of parts in different formats (a Q4_K_M file's q|k|v: Q4_K q and k, Q6_K v; here with
/// an f16 part too), each in its own chunks, through matvec and the GEMM; kernels that need one
/// format refuse it.
#[test]
fn stacked_parts_of_different_formats() {
    for (name, ctx) in contexts() {
        let k = 512;
        // q and k (Q4_K, one part here), v (Q6_K) and an f16 part.
        let layout = [(64usize, DType::Q4_K), (24, DType::Q6_K), (8, DType::F16)];
        let w = Weight::alloc_stacked(ctx, "qkv", &layout, k, ctx.caps.max_storage_binding).unwrap();
        assert!(!w.is_uniform());
        // Rows 60..68 would be Q4_K bytes running into the Q6_K part.
        assert!(
            w.write_rows(ctx, 60, &[0u8; 288 * 8]).is_err(),
            "a write across formats"
        );
        let mut values = Vec::new();
        let mut row = 0;
        for (i, &(rows, dtype)) in layout.iter().enumerate() {
            let (v, bytes) = common::moe::weight_values(&mut Rng::new(600 + i as u64), dtype, rows, k, 0.05);
            w.write_rows(ctx, row, &bytes).unwrap();
            values.extend(v);
            row += rows;
        }
        let n = w.rows;
        for (kernel, t) in [(Kernel::Matvec, 3), (Kernel::Gemm, 33)] {
            let x = Rng::new(t as u64).vec(t * k, 1.0);
            let (xt, yt) = (Tensor::from_f32(ctx, "x", &x), Tensor::zeros(ctx, "y", t * n));
            let f = match kernel {
                Kernel::Matvec => matvec,
                _ => gemm,
            };
            let ds = f(ctx, MatmulSpec::packed(t, &w), &xt, &w, None, &yt).unwrap();
            assert_eq!(ds.len(), w.chunks.len());
            ctx.submit(&ds.iter().collect::<Vec<_>>());
            let coop = ds.iter().any(|d| d.label.contains("coop"));
            let bound = if coop { COOP_BOUND } else { BOUND };
            assert_nmse(
                &format!("{name} {kernel:?} mixed stack"),
                &yt.read_f32(ctx).unwrap(),
                &reference(t, n, k, &x, &values),
                bound,
            );
        }
        let table = embedding(
            ctx,
            &w,
            &Tensor::from_u32(ctx, "ids", &[0]),
            1,
            &Tensor::zeros(ctx, "out", k),
        );
        assert!(table.err().unwrap().to_string().contains("different formats"));
    }
}

/// Rows whose bytes are not whole u32s (Q4_0: 54 bytes for three blocks; MXFP4: 51), written one
/// or a few at a time in shuffled order as a loader may: every byte lands where it belongs (the
/// queue writes whole u32s; the words two writes share are merged), over several chunks.
#[test]
fn rows_written_piecewise_at_any_alignment() {
    let ctx = native();
    for dtype in [DType::Q4_0, DType::MXFP4, DType::Q3_K] {
        let f = Format::of(dtype);
        let (rows, k) = (37, k_of(dtype, 3));
        let row = f.row_bytes(k).unwrap();
        let (bytes, _) = random(dtype, rows, k, 9);
        let w = Weight::upload_with_binding_limit(
            ctx,
            "w",
            dtype,
            rows,
            k,
            1,
            &vec![0u8; rows * row],
            11 * row as u64 + 32,
        )
        .unwrap();
        assert!(w.chunks.len() >= 3);
        // Runs of 1..=3 rows, in an order that writes both neighbours of a shared word in turn.
        let mut runs = Vec::new();
        let mut r = 0;
        while r < rows {
            let n = (1 + r % 3).min(rows - r);
            runs.push((r, n));
            r += n;
        }
        let mut rng = Rng::new(5);
        for i in (1..runs.len()).rev() {
            runs.swap(i, rng.below(i + 1));
        }
        for (r, n) in runs {
            w.write_rows(ctx, r, &bytes[r * row..(r + n) * row]).unwrap();
        }
        let mut got = Vec::new();
        for c in &w.chunks {
            let words = ctx.read_u32(&c.buffer, 0, (c.buffer.size() / 4) as usize).unwrap();
            let b: Vec<u8> = bytemuck::cast_slice(&words).to_vec();
            got.extend_from_slice(&b[..c.rows as usize * row]);
            assert!(
                b[c.rows as usize * row..].iter().all(|&x| x == 0),
                "{}: the tail stays zero",
                dtype.name()
            );
        }
        assert!(got == bytes, "{}: bytes differ after piecewise writes", dtype.name());
    }
}

/// A binding limit that fits exactly one row with its tail word makes one chunk a row (the limit
/// holds exactly, and allocation ends).
#[test]
fn chunks_fill_the_binding_limit_exactly() {
    let ctx = native();
    for dtype in [DType::Q4_0, DType::MXFP4, DType::Q4_K] {
        let k = k_of(dtype, 1);
        let row = Format::of(dtype).row_bytes(k).unwrap() as u64;
        let one = (row + 16).next_multiple_of(16);
        for (limit, per_chunk) in [(one, 1), (one + 15, 1), ((2 * row + 16).next_multiple_of(16), 2)] {
            let (bytes, _) = random(dtype, 5, k, 1);
            let w = Weight::upload_with_binding_limit(ctx, "w", dtype, 5, k, 1, &bytes, limit).unwrap();
            assert!(
                w.chunks.iter().all(|c| c.buffer.size() <= limit),
                "{}: a chunk over {limit}",
                dtype.name()
            );
            assert_eq!(w.chunks[0].rows as u64, per_chunk, "{} at {limit}", dtype.name());
        }
        let e = Weight::alloc(ctx, "w", dtype, 5, k, 1, one - 1)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("max_storage_buffer_binding_size"), "{e}");
    }
}
