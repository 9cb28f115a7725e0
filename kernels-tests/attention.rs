//! Attention against an f64 reference: causal prefill and decode over a filled cache, GQA at real
//! shapes (Qwen3, gpt-oss), sliding windows, sinks, absorbed MLA (V2-Lite dims), odd head dims,
//! v_dim != k_dim, strided queries, kv_store + attention replayed through the step buffer, bad
//! shapes; then each kernel path pinned through `AttnSpec::tuning`: split-KV decode across chunk
//! edges, replayed at growing positions, with windows, sinks and MLA, GQA key sharing, and tiled
//! prefill with partial tiles and windows that mask whole tiles. Cache positions past the visible range hold random values, so a mask that lets them in
//! shows up as an error.
//!
//! Every check runs with an f32 cache, again with an f16 cache (k and v packed two halves to a
//! word), whose reference reads the f16-rounded cache values, and, wherever the layout is whole q8
//! blocks, with a q8 cache (8-bit blocks, scales after the data) whose reference reads the
//! dequantised values; f16 caches also at odd element offsets (odd head dims, values at an odd
//! offset in a shared row). kv_store writes exactly `f16(value)`.
//!
//! Bound: NMSE 1e-7 (f32 math) for every cache precision: the kernel widens halves and bytes to f32
//! exactly, so the rounding is in the inputs, which the reference sees too. The kernel pre-scales q in
//! f32, accumulates dot products, exp and the running sums in f32 (flash-style rescaling adds a few
//! roundings per key block); the reference does everything in f64.

mod common;
use common::*;
use wgmoe::internals::gpu::{Context, Tensor};
use wgmoe::internals::kernels::attention::{
    attention, kv_store, plan, AttnKernel, AttnPlan, AttnSpec, AttnTuning, KvDtype, KvStoreSpec,
};
use wgmoe::internals::kernels::step;

fn reference(s: &AttnSpec, q: &[f32], k: &[f32], v: &[f32], sinks: Option<&[f32]>, pos0: usize) -> Vec<f64> {
    let group = s.heads / s.kv_heads;
    let mut out = vec![0.0; s.tokens * s.heads * s.v_dim];
    for t in 0..s.tokens {
        let pos = pos0 + t;
        let lo = s.window.map_or(0, |w| (pos + 1).saturating_sub(w as usize));
        for h in 0..s.heads {
            let g = h / group;
            let qv = &q[t * s.q_row_stride + h * s.q_head_stride..][..s.k_dim];
            let scores: Vec<f64> = (lo..=pos)
                .map(|j| {
                    let kv = &k[j * s.k_stride + g * s.k_head_stride..][..s.k_dim];
                    s.scale as f64 * qv.iter().zip(kv).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
                })
                .collect();
            let sink = sinks.map(|sk| sk[h] as f64);
            let m = scores.iter().copied().chain(sink).fold(f64::NEG_INFINITY, f64::max);
            let den: f64 = scores.iter().chain(sink.as_ref()).map(|x| (x - m).exp()).sum();
            let o = &mut out[(t * s.heads + h) * s.v_dim..][..s.v_dim];
            for (j, sc) in (lo..=pos).zip(&scores) {
                let p = (sc - m).exp() / den;
                let vv = &v[s.v_offset + j * s.v_stride + g * s.v_head_stride..][..s.v_dim];
                for d in 0..s.v_dim {
                    o[d] += p * vv[d] as f64;
                }
            }
        }
    }
    out
}

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    sinks: Option<Vec<f32>>,
}

/// The cache precisions every check runs with (q8 where the layout allows, [`q8_layout`]).
const DTYPES: [KvDtype; 3] = [KvDtype::F32, KvDtype::F16, KvDtype::Q8];
/// What kv_store writes.
const STORE_DTYPES: [KvDtype; 2] = [KvDtype::F32, KvDtype::F16];

/// Whether `s` lays its caches out in whole q8 blocks (what `attention` accepts for q8).
fn q8_layout(s: &AttnSpec) -> bool {
    let block = KvDtype::q8_block(s.kv_row);
    s.kv_row.is_multiple_of(4)
        && [s.k_stride, s.k_head_stride, s.v_stride, s.v_head_stride, s.v_offset]
            .iter()
            .all(|v| v.is_multiple_of(block))
}

/// The words of a cache of `x`, of `s.kv_dtype`: a q8 cache is exactly `max_seq` rows of
/// `stride` (the kernel finds the scales after them; `x` past them is never read).
fn cache_words(s: &AttnSpec, x: &[f32], stride: usize) -> Vec<u32> {
    let mut x = x.to_vec();
    if s.kv_dtype == KvDtype::Q8 {
        x.resize(s.max_seq * stride, 0.0);
    }
    s.kv_dtype.encode(&x, s.kv_row)
}

/// What a cache of `s.kv_dtype` holds for `x`: the values the reference reads.
fn rounded_cache(s: &AttnSpec, x: &[f32], stride: usize) -> Vec<f32> {
    let n = if s.kv_dtype == KvDtype::Q8 {
        s.max_seq * stride
    } else {
        x.len()
    };
    let mut held = s.kv_dtype.decode(&cache_words(s, x, stride), n, s.kv_row);
    held.resize(x.len(), 0.0);
    if x.len() > n {
        held[n..].copy_from_slice(&x[n..]);
    }
    held
}

/// `inp` with k and v as the caches of `s` hold them.
fn as_cache(inp: &Inputs, s: &AttnSpec) -> Inputs {
    Inputs {
        q: inp.q.clone(),
        k: rounded_cache(s, &inp.k, s.k_stride),
        v: rounded_cache(s, &inp.v, s.v_stride),
        sinks: inp.sinks.clone(),
    }
}

fn inputs(s: &AttnSpec, shared_kv: bool, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let q_len = (s.tokens - 1) * s.q_row_stride + (s.heads - 1) * s.q_head_stride + s.k_dim;
    let k_len = (s.max_seq - 1) * s.k_stride + (s.kv_heads - 1) * s.k_head_stride + s.k_dim;
    let v_len = s.v_offset + (s.max_seq - 1) * s.v_stride + (s.kv_heads - 1) * s.v_head_stride + s.v_dim;
    // Scores of a few units: peaked enough that a wrong mask or a wrong max shows.
    let q = rng.vec(q_len, 1.0);
    let k = rng.vec(k_len.max(v_len), 2.0);
    let v = if shared_kv { k.clone() } else { rng.vec(v_len, 1.0) };
    let sinks = s.sinks.then(|| rng.vec(s.heads, 2.0));
    Inputs { q, k, v, sinks }
}

fn run(ctx: &Context, s: AttnSpec, inp: &Inputs, shared_kv: bool, pos0: usize) -> Vec<f32> {
    let q = Tensor::from_f32(ctx, "q", &inp.q);
    let k = Tensor::from_u32(ctx, "k", &cache_words(&s, &inp.k, s.k_stride));
    let v = if shared_kv {
        k.clone()
    } else {
        Tensor::from_u32(ctx, "v", &cache_words(&s, &inp.v, s.v_stride))
    };
    let sinks = inp.sinks.as_ref().map(|sk| Tensor::from_f32(ctx, "sinks", sk));
    let st = step::new(ctx, pos0 as u32, s.tokens as u32);
    let o = Tensor::zeros(ctx, "o", s.tokens * s.heads * s.v_dim);
    let d = attention(ctx, s, &q, &k, &v, sinks.as_ref(), &st, &o).unwrap();
    ctx.submit(&[&d]);
    o.read_f32(ctx).unwrap()
}

/// Both cache precisions: the f16 run's reference reads the f16-rounded k and v.
fn check_shared(what: &str, s: AttnSpec, pos0: usize, shared_kv: bool, seed: u64) {
    assert!(pos0 + s.tokens <= s.max_seq);
    let inp0 = inputs(&s, shared_kv, seed);
    for dtype in DTYPES {
        let s = AttnSpec { kv_dtype: dtype, ..s };
        if dtype == KvDtype::Q8 && !q8_layout(&s) {
            continue;
        }
        let inp = as_cache(&inp0, &s);
        let want = reference(&s, &inp.q, &inp.k, &inp.v, inp.sinks.as_deref(), pos0);
        for (name, ctx) in contexts() {
            let got = run(ctx, s, &inp, shared_kv, pos0);
            assert_nmse(&format!("{name} {what} pos0={pos0} {s:?}"), &got, &want, 1e-7);
        }
    }
}

fn check(what: &str, s: AttnSpec, pos0: usize, seed: u64) {
    check_shared(what, s, pos0, false, seed);
}

#[test]
fn prefill_causal_gqa() {
    for t in [1, 7, 70] {
        check("prefill", AttnSpec::gqa(t, 4, 2, 16, t + 3), 0, t as u64);
    }
    // A prefill continuing a cache (chunked prompt): queries at 9..14 see 0..=pos.
    check("prefill after cache", AttnSpec::gqa(5, 4, 2, 16, 20), 9, 11);
}

#[test]
fn prefill_qwen3_shape() {
    // Qwen3-30B-A3B: H=32, KV=4, hd=128.
    check("qwen3", AttnSpec::gqa(5, 32, 4, 128, 8), 0, 12);
}

#[test]
fn decode_against_filled_cache() {
    for pos0 in [0, 5, 300] {
        check("decode", AttnSpec::gqa(1, 4, 2, 32, 320), pos0, 20 + pos0 as u64);
    }
    // OLMoE: no GQA (KV = H), hd 128, a sequence longer than one key block.
    check("olmoe decode", AttnSpec::gqa(1, 16, 16, 128, 150), 139, 21);
}

#[test]
fn sliding_window() {
    let s = AttnSpec {
        window: Some(4),
        ..AttnSpec::gqa(20, 4, 2, 16, 24)
    };
    check("window 4 prefill", s, 0, 30);
    let s = AttnSpec {
        window: Some(128),
        ..AttnSpec::gqa(1, 8, 2, 64, 310)
    };
    check("window 128 decode", s, 299, 31);
    check("window 128 decode, fewer positions than W", s, 50, 32);
}

#[test]
fn sinks_with_and_without_window_gpt_oss() {
    // gpt-oss-20b attention shape, scaled down in heads: hd 64, H 8, KV 2.
    let base = AttnSpec {
        sinks: true,
        ..AttnSpec::gqa(6, 8, 2, 64, 16)
    };
    check("sinks", base, 0, 40);
    check(
        "sinks + window",
        AttnSpec {
            window: Some(4),
            ..base
        },
        3,
        41,
    );
    check(
        "sinks decode + window",
        AttnSpec {
            tokens: 1,
            window: Some(5),
            ..base
        },
        12,
        42,
    );
}

#[test]
fn large_sink_does_not_overflow() {
    // A sink logit far above every score: softmax mass goes to the sink, outputs shrink, no inf/NaN.
    let s = AttnSpec {
        sinks: true,
        ..AttnSpec::gqa(3, 2, 1, 8, 4)
    };
    let mut inp = inputs(&s, false, 43);
    inp.sinks = Some(vec![95.0, -95.0]);
    for (dtype, (name, ctx)) in DTYPES.into_iter().flat_map(|d| contexts().map(|c| (d, c))) {
        let s = AttnSpec { kv_dtype: dtype, ..s };
        let inp = as_cache(&inp, &s);
        let want = reference(&s, &inp.q, &inp.k, &inp.v, inp.sinks.as_deref(), 0);
        let got = run(ctx, s, &inp, false, 0);
        // Head 0 is ~e^-90 of the values: compare the absolute values, which must be ~0.
        for t in 0..3 {
            for d in 0..8 {
                assert!(
                    got[t * 16 + d].abs() < 1e-30,
                    "{name}: head 0 should be swamped by its sink"
                );
            }
        }
        let head1 = |v: &[f32]| -> Vec<f32> { (0..3).flat_map(|t| v[t * 16 + 8..t * 16 + 16].to_vec()).collect() };
        let want1: Vec<f64> = (0..3).flat_map(|t| want[t * 16 + 8..t * 16 + 16].to_vec()).collect();
        assert_nmse(&format!("{name} negligible sink"), &head1(&got), &want1, 1e-7);
    }
}

#[test]
fn mla_absorbed() {
    // DeepSeek-V2-Lite: r = 512, dr = 64, H = 16, scale = 0.114721 (MODELS.md §6.3); the cache rows
    // [c | k_pe] are bound as keys and (their first 512 floats) as values.
    let s = AttnSpec::mla(4, 16, 512, 64, 0.114721, 8);
    check_shared("mla v2-lite prefill", s, 2, true, 50);
    check_shared("mla v2-lite decode", AttnSpec { tokens: 1, ..s }, 7, true, 51);
    let tiny = AttnSpec::mla(3, 2, 8, 4, 0.3, 5);
    check_shared("mla tiny", tiny, 0, true, 52);
}

#[test]
fn odd_head_dims_and_v_dim_differs() {
    for hd in [12, 20, 13, 1] {
        check("odd hd", AttnSpec::gqa(3, 6, 3, hd, 5), 1, 60 + hd as u64);
    }
    // k_dim 24, v_dim 12 and the reverse, values in their own cache.
    for (kd, vd) in [(24, 12), (12, 40)] {
        let s = AttnSpec {
            k_dim: kd,
            v_dim: vd,
            q_row_stride: 4 * kd,
            q_head_stride: kd,
            k_stride: 2 * kd,
            k_head_stride: kd,
            v_stride: 2 * vd,
            v_head_stride: vd,
            ..AttnSpec::gqa(7, 4, 2, kd, 9)
        };
        check("v_dim != k_dim", s, 2, 70 + kd as u64);
    }
}

#[test]
fn strided_queries_and_values_in_a_shared_row() {
    // q read straight out of a fused qkv row ([T, (H + 2KV) * hd]); K and V interleaved in one cache
    // row [k heads | v heads] bound twice, the values at an offset.
    let (h, kv, hd) = (4, 2, 16);
    let s = AttnSpec {
        q_row_stride: (h + 2 * kv) * hd,
        k_stride: 2 * kv * hd,
        v_stride: 2 * kv * hd,
        v_offset: kv * hd,
        ..AttnSpec::gqa(5, h, kv, hd, 11)
    };
    check_shared("fused rows", s, 3, true, 80);
    // Odd element offsets everywhere: hd 5, values 5 elements into each row (in an f16 cache,
    // mid-word), odd row strides.
    let (h, kv, hd) = (2, 1, 5);
    let s = AttnSpec {
        q_row_stride: (h + 2 * kv) * hd,
        k_stride: 2 * kv * hd + 1,
        v_stride: 2 * kv * hd + 1,
        v_offset: kv * hd,
        ..AttnSpec::gqa(9, h, kv, hd, 13)
    };
    check_shared("fused rows, odd offsets", s, 2, true, 81);
    check_shared(
        "fused rows, odd offsets, decode",
        AttnSpec { tokens: 1, ..s },
        12,
        true,
        82,
    );
    let s = tuned(s, AttnKernel::Tiled, 0, 256);
    check_shared("tiled fused rows, odd offsets", s, 2, true, 83);
}

/// Prefill 5 tokens, then 3 decode steps, every K/V written by kv_store from a fused qkv-shaped
/// source and every position taken from the step buffer; the decode dispatches are recorded once
/// and replayed.
#[test]
fn kv_store_then_attention_over_steps() {
    let (h, kv, hd, max_seq) = (4, 2, 16, 12);
    let row = (h + 2 * kv) * hd;
    let (prefill, decode_steps) = (5, 3);
    let total = prefill + decode_steps;
    for (dtype, (name, ctx)) in STORE_DTYPES.into_iter().flat_map(|d| contexts().map(|c| (d, c))) {
        let name = format!("{name} {dtype} cache");
        let qkv = Rng::new(90).vec(total * row, 1.0);
        let k_cache = Tensor::zeros(ctx, "k", dtype.words(max_seq * kv * hd, hd));
        let v_cache = Tensor::zeros(ctx, "v", dtype.words(max_seq * kv * hd, hd));
        let st = step::new(ctx, 0, prefill as u32);
        let store = |tokens: usize, src: &Tensor, offset: usize, cache: &Tensor| {
            let spec = KvStoreSpec {
                tokens,
                width: kv * hd,
                src_stride: row,
                src_offset: offset,
                dst_stride: kv * hd,
                dst_offset: 0,
                max_seq,
                dtype,
            };
            kv_store(ctx, src, cache, spec, &st).unwrap()
        };
        let attn_spec = |tokens: usize| AttnSpec {
            q_row_stride: row,
            kv_dtype: dtype,
            ..AttnSpec::gqa(tokens, h, kv, hd, max_seq)
        };
        let check_step = |pos0: usize, tokens: usize, got: Vec<f32>| {
            // The reference's cache: the K/V parts of every token so far, packed.
            let slice = |off: usize| -> Vec<f32> {
                (0..pos0 + tokens)
                    .flat_map(|t| rounded_cache(&attn_spec(1), &qkv[t * row + off..][..kv * hd], kv * hd))
                    .collect()
            };
            let (k, v) = (slice(h * hd), slice((h + kv) * hd));
            let q = &qkv[pos0 * row..(pos0 + tokens) * row];
            let want = reference(&attn_spec(tokens), q, &k, &v, None, pos0);
            assert_nmse(&format!("{name} step pos0={pos0} tokens={tokens}"), &got, &want, 1e-7);
        };

        let src = Tensor::from_f32(ctx, "qkv", &qkv[..prefill * row]);
        let o = Tensor::zeros(ctx, "o", prefill * h * hd);
        let dispatches = [
            store(prefill, &src, h * hd, &k_cache),
            store(prefill, &src, (h + kv) * hd, &v_cache),
            attention(ctx, attn_spec(prefill), &src, &k_cache, &v_cache, None, &st, &o).unwrap(),
        ];
        ctx.submit(&dispatches.iter().collect::<Vec<_>>());
        check_step(0, prefill, o.read_f32(ctx).unwrap());

        let src1 = Tensor::zeros(ctx, "qkv1", row);
        let o1 = Tensor::zeros(ctx, "o1", h * hd);
        let decode = [
            store(1, &src1, h * hd, &k_cache),
            store(1, &src1, (h + kv) * hd, &v_cache),
            attention(ctx, attn_spec(1), &src1, &k_cache, &v_cache, None, &st, &o1).unwrap(),
        ];
        for pos0 in prefill..total {
            src1.write_f32(ctx, &qkv[pos0 * row..(pos0 + 1) * row]);
            ctx.queue
                .write_buffer(&st.buffer, 0, bytemuck::cast_slice(&[pos0 as u32, 1]));
            ctx.submit(&decode.iter().collect::<Vec<_>>());
            check_step(pos0, 1, o1.read_f32(ctx).unwrap());
        }
    }
}

#[test]
fn kv_store_copies_exactly() {
    // MLA: the whole normed-and-roped kv_a row (576 floats) into a cache at an offset (a layer's
    // slice of a shared buffer); other rows stay as they were.
    // An f16 cache gets exactly f16(value) (round to nearest even), two halves per word.
    let (width, max_seq, offset) = (576, 6, 100);
    for (dtype, (name, ctx)) in STORE_DTYPES.into_iter().flat_map(|d| contexts().map(|c| (d, c))) {
        // Some values just off the halfway points between f16 neighbours, and some ties.
        let mut src = Rng::new(95).vec(3 * width, 1.0);
        src[1] = 1.0 + 2f32.powi(-11); // a tie: rounds to even (1.0)
        src[2] = 1.0 + 3.0 * 2f32.powi(-11); // a tie: rounds to even (1 + 2^-9)
        src[3] = 1.0 + 2f32.powi(-11) + 2f32.powi(-20); // just above a tie
        src[4] = -3.0e-6; // an f16 subnormal
        let cache0 = Rng::new(96).vec(offset + max_seq * width, 1.0);
        let s = Tensor::from_f32(ctx, "src", &src);
        let cache = Tensor::from_u32(ctx, "cache", &dtype.encode(&cache0, width));
        let st = step::new(ctx, 2, 3);
        let spec = KvStoreSpec {
            dst_offset: offset,
            dtype,
            ..KvStoreSpec::packed(3, width, max_seq)
        };
        let d = kv_store(ctx, &s, &cache, spec, &st).unwrap();
        ctx.submit(&[&d]);
        let got = dtype.decode(&cache.read_u32(ctx).unwrap(), cache0.len(), width);
        let round = |x: &[f32]| dtype.decode(&dtype.encode(x, width), x.len(), width);
        let mut want = round(&cache0);
        want[offset + 2 * width..offset + 5 * width].copy_from_slice(&round(&src));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&got[..want.len()]) == bits(&want),
            "{name} {dtype}: kv_store wrote the wrong values"
        );
    }
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = native();
    let s = AttnSpec::gqa(2, 4, 2, 8, 4);
    let q = Tensor::zeros(ctx, "q", 2 * 4 * 8);
    let k = Tensor::zeros(ctx, "k", 4 * 2 * 8);
    let o = Tensor::zeros(ctx, "o", 2 * 4 * 8);
    let st = step::new(ctx, 0, 2);
    let sinks = Tensor::zeros(ctx, "sinks", 4);
    let go = |s: AttnSpec, q: &Tensor, k: &Tensor, sk: Option<&Tensor>| attention(ctx, s, q, k, k, sk, &st, &o);
    assert!(go(s, &q, &k, None).is_ok());
    assert!(
        go(AttnSpec { kv_heads: 3, ..s }, &q, &k, None).is_err(),
        "kv heads do not divide heads"
    );
    assert!(go(AttnSpec { kv_heads: 0, ..s }, &q, &k, None).is_err(), "no kv heads");
    assert!(
        go(AttnSpec { max_seq: 5, ..s }, &q, &k, None).is_err(),
        "cache too small"
    );
    assert!(go(AttnSpec { tokens: 3, ..s }, &q, &k, None).is_err(), "q too small");
    assert!(
        go(
            AttnSpec {
                tokens: 5,
                max_seq: 4,
                ..s
            },
            &q,
            &k,
            None
        )
        .is_err(),
        "more tokens than cache"
    );
    assert!(
        go(AttnSpec { v_offset: 1, ..s }, &q, &k, None).is_err(),
        "values past the cache"
    );
    assert!(
        go(AttnSpec { window: Some(0), ..s }, &q, &k, None).is_err(),
        "empty window"
    );
    assert!(
        go(AttnSpec { sinks: true, ..s }, &q, &k, None).is_err(),
        "sinks missing"
    );
    assert!(go(s, &q, &k, Some(&sinks)).is_err(), "sinks not asked for");
    assert!(go(AttnSpec { sinks: true, ..s }, &q, &k, Some(&sinks)).is_ok());
    let short = Tensor::zeros(ctx, "sinks", 2);
    assert!(
        go(AttnSpec { sinks: true, ..s }, &q, &k, Some(&short)).is_err(),
        "sinks too short"
    );
    assert!(go(AttnSpec { k_dim: 0, ..s }, &q, &k, None).is_err(), "zero head dim");
    // Query and accumulator would not fit in workgroup memory (every buffer is large enough).
    let big = AttnSpec::mla(1, 1, 16384, 64, 0.1, 1);
    let (qb, ob) = (Tensor::zeros(ctx, "qb", 16448), Tensor::zeros(ctx, "ob", 16384));
    let r = attention(ctx, big, &qb, &qb, &qb, None, &st, &ob);
    assert!(
        matches!(r, Err(wgmoe::internals::error::Error::Limit { .. })),
        "workgroup memory over the limit"
    );

    let src = Tensor::zeros(ctx, "src", 16);
    let cache = Tensor::zeros(ctx, "cache", 32);
    assert!(kv_store(ctx, &src, &cache, KvStoreSpec::packed(2, 8, 4), &st).is_ok());
    assert!(
        kv_store(ctx, &src, &cache, KvStoreSpec::packed(3, 8, 4), &st).is_err(),
        "source too small"
    );
    assert!(
        kv_store(ctx, &src, &cache, KvStoreSpec::packed(2, 8, 5), &st).is_err(),
        "cache too small"
    );
    assert!(
        kv_store(
            ctx,
            &src,
            &cache,
            KvStoreSpec {
                dst_stride: 4,
                ..KvStoreSpec::packed(2, 8, 4)
            },
            &st
        )
        .is_err(),
        "rows overlap"
    );
    assert!(
        kv_store(ctx, &src, &cache, KvStoreSpec::packed(5, 2, 4), &st).is_err(),
        "more tokens than cache"
    );
    // f16: the cache is sized in words; rows must start and end on word boundaries.
    let f16 = |s: KvStoreSpec| KvStoreSpec {
        dtype: KvDtype::F16,
        ..s
    };
    let half_cache = Tensor::zeros(ctx, "cache16", 16);
    assert!(kv_store(ctx, &src, &half_cache, f16(KvStoreSpec::packed(2, 8, 4)), &st).is_ok());
    assert!(
        kv_store(ctx, &src, &half_cache, f16(KvStoreSpec::packed(2, 8, 5)), &st).is_err(),
        "f16 cache too small"
    );
    for (what, spec) in [
        (
            "odd width",
            KvStoreSpec {
                width: 7,
                ..KvStoreSpec::packed(2, 8, 4)
            },
        ),
        (
            "odd offset",
            KvStoreSpec {
                dst_offset: 1,
                ..KvStoreSpec::packed(2, 6, 4)
            },
        ),
        (
            "odd stride",
            KvStoreSpec {
                dst_stride: 7,
                ..KvStoreSpec::packed(2, 6, 4)
            },
        ),
    ] {
        assert!(kv_store(ctx, &src, &cache, spec, &st).is_ok(), "f32 {what}");
        assert!(kv_store(ctx, &src, &half_cache, f16(spec), &st).is_err(), "f16 {what}");
    }
    // Attention over an f16 cache needs half the words.
    let k16 = Tensor::zeros(ctx, "k16", 4 * 2 * 8 / 2);
    let s16 = AttnSpec {
        kv_dtype: KvDtype::F16,
        ..s
    };
    assert!(go(s16, &q, &k16, None).is_ok());
    assert!(go(s, &q, &k16, None).is_err(), "f32 cache in an f16-sized buffer");
    assert!(
        go(AttnSpec { max_seq: 5, ..s16 }, &q, &k16, None).is_err(),
        "f16 cache too small"
    );
}

// ---- Each path pinned ----

fn tuned(s: AttnSpec, kernel: AttnKernel, max_chunks: usize, min_chunk: usize) -> AttnSpec {
    AttnSpec {
        tuning: AttnTuning {
            kernel,
            max_chunks,
            min_chunk,
            heads_per_group: 0,
        },
        ..s
    }
}

/// Whether the plan splits decode's keys unasked: on Vulkan only (lavapipe), not on GL (llvmpipe
/// with `WGMOE_DEVICE=gl`); the tests that pin a split through tuning run everywhere.
fn splits_by_default() -> bool {
    native().info.backend == wgpu::Backend::Vulkan
}

fn rows_chunks(s: &AttnSpec) -> usize {
    match plan(native(), s).unwrap() {
        AttnPlan::Rows { chunks, .. } => chunks,
        p => panic!("expected the rows kernel for {s:?}, got {p:?}"),
    }
}

#[test]
fn plan_picks_paths() {
    for (_, ctx) in contexts() {
        // Decode: rows, split across the cache on Vulkan only (split-KV needs device-scope
        // barriers; GL, Metal and DX12 get one chunk).
        let d = AttnSpec::gqa(1, 32, 4, 128, 4096);
        match plan(ctx, &d).unwrap() {
            AttnPlan::Rows { heads, chunks, .. } => {
                assert_eq!(heads, 8, "a KV group's 8 heads share one workgroup");
                assert_eq!(
                    chunks > 1,
                    splits_by_default(),
                    "decode splits the keys on Vulkan: {chunks}"
                );
            }
            p => panic!("decode: {p:?}"),
        }
        // Prefill: tiles, within the portable 16 KiB at hd 128.
        let p = plan(ctx, &AttnSpec::gqa(512, 32, 4, 128, 4096)).unwrap();
        assert!(matches!(p, AttnPlan::Tiled { .. }), "prefill: {p:?}");
        if let AttnPlan::Tiled { workgroup_bytes, .. } = p {
            assert!(workgroup_bytes <= ctx.caps.max_workgroup_storage as u64);
        }
        // MLA (v_dim 512): rows for prefill too, heads of the one latent group sharing keys.
        let m = plan(ctx, &AttnSpec::mla(64, 16, 512, 64, 0.1, 4096)).unwrap();
        assert!(matches!(m, AttnPlan::Rows { heads, .. } if heads >= 2), "mla: {m:?}");
    }
    // No split asked: one chunk.
    let s = tuned(AttnSpec::gqa(1, 8, 2, 64, 4096), AttnKernel::Rows, 1, 256);
    assert_eq!(rows_chunks(&s), 1);
}

#[test]
fn split_kv_decode_across_chunk_edges() {
    // Default 256-key chunks: 255 keys fit one chunk, 257 need two (the second holds one key).
    let s = AttnSpec::gqa(1, 8, 2, 32, 1100);
    assert_eq!(rows_chunks(&s) > 1, splits_by_default());
    for pos0 in [0, 1, 255, 256, 257, 1000] {
        check("split decode", s, pos0, 100 + pos0 as u64);
    }
    // Chunk size grows past min_chunk once every chunk is in use: 4 chunks of >= 16 keys.
    let s = tuned(AttnSpec::gqa(1, 4, 4, 24, 400), AttnKernel::Rows, 4, 16);
    for pos0 in [15, 16, 63, 64, 65, 399] {
        check("split decode, 4 chunks", s, pos0, 110 + pos0 as u64);
    }
}

#[test]
fn split_kv_gqa_groups() {
    // R = 1 (OLMoE-like), 2, 8 (Qwen3-like); and R = 8 spread over workgroups of 2 heads.
    for (h, kv) in [(8, 8), (8, 4), (16, 2)] {
        let s = tuned(AttnSpec::gqa(1, h, kv, 64, 800), AttnKernel::Rows, 0, 128);
        check(&format!("split gqa R={}", h / kv), s, 700, 120 + h as u64 + kv as u64);
    }
    let mut s = tuned(AttnSpec::gqa(1, 16, 2, 64, 800), AttnKernel::Rows, 0, 128);
    s.tuning.heads_per_group = 2;
    check("split gqa R=8 by 2", s, 650, 130);
    // A short batch (speculative / chunked decode) through the split kernel.
    let s = tuned(AttnSpec::gqa(3, 8, 2, 32, 600), AttnKernel::Rows, 6, 64);
    check("split 3 tokens", s, 500, 131);
}

#[test]
fn split_kv_windows_and_sinks() {
    let base = AttnSpec {
        sinks: true,
        ..tuned(AttnSpec::gqa(1, 8, 2, 64, 1200), AttnKernel::Rows, 8, 64)
    };
    check("split sinks", base, 1100, 140);
    for (w, pos0) in [(700, 1100), (128, 1100), (40, 1100), (700, 300)] {
        let s = AttnSpec {
            window: Some(w),
            ..base
        };
        check(&format!("split sinks + window {w}"), s, pos0, 141 + w as u64);
        let s = AttnSpec { sinks: false, ..s };
        check(&format!("split window {w}"), s, pos0, 142 + w as u64);
    }
    // A sink that dominates every chunk's max.
    let s = AttnSpec {
        heads: 2,
        kv_heads: 1,
        q_row_stride: 2 * 16,
        k_stride: 16,
        v_stride: 16,
        k_dim: 16,
        v_dim: 16,
        q_head_stride: 16,
        k_head_stride: 16,
        v_head_stride: 16,
        ..tuned(AttnSpec::gqa(1, 2, 1, 16, 300), AttnKernel::Rows, 4, 32)
    };
    let s = AttnSpec { sinks: true, ..s };
    let mut inp = inputs(&s, false, 150);
    inp.sinks = Some(vec![40.0, -40.0]);
    for (dtype, (name, ctx)) in DTYPES.into_iter().flat_map(|d| contexts().map(|c| (d, c))) {
        let s = AttnSpec { kv_dtype: dtype, ..s };
        let inp = as_cache(&inp, &s);
        let want = reference(&s, &inp.q, &inp.k, &inp.v, inp.sinks.as_deref(), 250);
        let got = run(ctx, s, &inp, false, 250);
        assert_nmse(&format!("{name} split large sink"), &got, &want, 1e-7);
    }
}

#[test]
fn split_kv_mla_decode() {
    // DeepSeek-V2-Lite absorbed decode: 16 heads of the one latent group share each 576-float key.
    let s = AttnSpec::mla(1, 16, 512, 64, 0.114721, 600);
    assert_eq!(rows_chunks(&s) > 1, splits_by_default());
    check_shared("mla split decode", s, 550, true, 160);
    let s = tuned(s, AttnKernel::Rows, 5, 32);
    check_shared("mla split decode, 5 chunks", s, 170, true, 161);
}

/// One decode dispatch recorded once and replayed as step[POS0] grows over a filled cache: the
/// live chunk count changes between replays and the arrival counters must come back to zero.
#[test]
fn split_kv_replayed_at_growing_positions() {
    let s0 = tuned(AttnSpec::gqa(1, 8, 2, 32, 600), AttnKernel::Rows, 6, 64);
    let inp0 = inputs(&s0, false, 170);
    for (dtype, (name, ctx)) in DTYPES.into_iter().flat_map(|d| contexts().map(|c| (d, c))) {
        let s = AttnSpec { kv_dtype: dtype, ..s0 };
        let inp = as_cache(&inp0, &s);
        let q = Tensor::from_f32(ctx, "q", &inp.q);
        let k = Tensor::from_u32(ctx, "k", &cache_words(&s, &inp.k, s.k_stride));
        let v = Tensor::from_u32(ctx, "v", &cache_words(&s, &inp.v, s.v_stride));
        let st = step::new(ctx, 0, 1);
        let o = Tensor::zeros(ctx, "o", s.heads * s.v_dim);
        let d = attention(ctx, s, &q, &k, &v, None, &st, &o).unwrap();
        for pos0 in [0, 63, 64, 65, 200, 200, 383, 384, 385, 599, 10] {
            ctx.queue
                .write_buffer(&st.buffer, 0, bytemuck::cast_slice(&[pos0 as u32, 1]));
            ctx.submit(&[&d]);
            let want = reference(&s, &inp.q, &inp.k, &inp.v, None, pos0);
            assert_nmse(
                &format!("{name} {dtype} replay pos0={pos0}"),
                &o.read_f32(ctx).unwrap(),
                &want,
                1e-7,
            );
        }
    }
}

#[test]
fn tiled_prefill_partial_tiles() {
    // T not a multiple of any tile; heads of a group share tiles (R = 4, 1, 8).
    for (t, h, kv) in [(1, 8, 2), (13, 8, 2), (37, 4, 4), (45, 16, 2)] {
        let s = tuned(AttnSpec::gqa(t, h, kv, 64, t + 5), AttnKernel::Tiled, 0, 256);
        check(&format!("tiled T={t}"), s, 0, 200 + t as u64);
        check(&format!("tiled T={t} after cache"), s, 5, 201 + t as u64);
    }
    // Qwen3 head shape, and odd / unequal head dims (scalar loads).
    let s = tuned(AttnSpec::gqa(21, 32, 4, 128, 30), AttnKernel::Tiled, 0, 256);
    check("tiled qwen3", s, 3, 210);
    for hd in [13, 1] {
        let s = tuned(AttnSpec::gqa(11, 6, 3, hd, 14), AttnKernel::Tiled, 0, 256);
        check(&format!("tiled hd={hd}"), s, 2, 211 + hd as u64);
    }
    let (kd, vd) = (24, 40);
    let s = AttnSpec {
        k_dim: kd,
        v_dim: vd,
        q_row_stride: 4 * kd,
        q_head_stride: kd,
        k_stride: 2 * kd,
        k_head_stride: kd,
        v_stride: 2 * vd,
        v_head_stride: vd,
        ..tuned(AttnSpec::gqa(19, 4, 2, kd, 25), AttnKernel::Tiled, 0, 256)
    };
    check("tiled v_dim != k_dim", s, 4, 215);
    let (h, kv, hd) = (4, 2, 16);
    let s = AttnSpec {
        q_row_stride: (h + 2 * kv) * hd,
        k_stride: 2 * kv * hd,
        v_stride: 2 * kv * hd,
        v_offset: kv * hd,
        ..tuned(AttnSpec::gqa(17, h, kv, hd, 20), AttnKernel::Tiled, 0, 256)
    };
    check_shared("tiled fused rows", s, 3, true, 216);
}

#[test]
fn tiled_prefill_windows_and_sinks() {
    // Windows far shorter than the prompt: most key tiles of a query tile are masked whole.
    for (w, pos0) in [(3, 0), (5, 50), (40, 7)] {
        let s = AttnSpec {
            window: Some(w),
            ..tuned(AttnSpec::gqa(100, 4, 2, 32, 160), AttnKernel::Tiled, 0, 256)
        };
        check(&format!("tiled window {w}"), s, pos0, 220 + w as u64);
        let s = AttnSpec { sinks: true, ..s };
        check(&format!("tiled window {w} + sinks"), s, pos0, 221 + w as u64);
    }
    let s = AttnSpec {
        sinks: true,
        ..tuned(AttnSpec::gqa(30, 8, 2, 64, 40), AttnKernel::Tiled, 0, 256)
    };
    check("tiled sinks", s, 2, 230);
}

#[test]
fn rows_without_split_matches() {
    // The plain per-row kernel (one chunk) for decode and prefill, as on non-Vulkan backends.
    let s = tuned(AttnSpec::gqa(1, 8, 2, 64, 700), AttnKernel::Rows, 1, 256);
    check("rows decode, one chunk", s, 650, 240);
    let s = tuned(AttnSpec::gqa(20, 8, 2, 64, 30), AttnKernel::Rows, 1, 256);
    check("rows prefill, one chunk", s, 4, 241);
}

/// Continuous batching: one cache holds several sequences (`slots` of `len` rows); a table step
/// puts each query token at its own (first row, position), and a contiguous step with a base runs
/// one sequence's prefill in its rows. Each token must see exactly its sequence's rows 0..=pos:
/// the reference is the same token alone over that sequence's slice of the cache.
#[test]
fn tokens_of_several_sequences_read_their_own_cache_rows() {
    let (slots, len) = (3, 300);
    let one = AttnSpec::gqa(1, 4, 2, 32, len);
    let all = AttnSpec::gqa(1, 4, 2, 32, slots * len);
    // (slot, position): a long one across split-KV chunks, a short one, a first token, and two
    // tokens of one sequence (a table may hold both).
    let places = [(0, 299), (1, 5), (2, 0), (1, 100)];
    let inp0 = inputs(
        &AttnSpec {
            tokens: places.len(),
            ..all
        },
        false,
        77,
    );
    for dtype in DTYPES {
        let s = AttnSpec {
            tokens: places.len(),
            kv_dtype: dtype,
            ..all
        };
        if dtype == KvDtype::Q8 && !q8_layout(&s) {
            continue;
        }
        let inp = as_cache(&inp0, &s);
        let mut want = Vec::new();
        for (t, &(slot, pos)) in places.iter().enumerate() {
            let rows = |x: &[f32], stride: usize| x[slot * len * stride..][..len * stride].to_vec();
            let q = inp.q[t * s.q_row_stride..][..s.q_row_stride].to_vec();
            let (k, v) = (rows(&inp.k, s.k_stride), rows(&inp.v, s.v_stride));
            want.extend(reference(&AttnSpec { kv_dtype: dtype, ..one }, &q, &k, &v, None, pos));
        }
        let table = step::table(&places.map(|(slot, pos)| (slot * len, pos)));
        for (name, ctx) in contexts() {
            let q = Tensor::from_f32(ctx, "q", &inp.q);
            let k = Tensor::from_u32(ctx, "k", &cache_words(&s, &inp.k, s.k_stride));
            let v = Tensor::from_u32(ctx, "v", &cache_words(&s, &inp.v, s.v_stride));
            let st = Tensor::from_u32(ctx, "step", &table);
            let o = Tensor::zeros(ctx, "o", s.tokens * s.heads * s.v_dim);
            let spec = tuned(s, AttnKernel::Rows, 0, 64);
            ctx.submit(&[&attention(ctx, spec, &q, &k, &v, None, &st, &o).unwrap()]);
            assert_nmse(
                &format!("{name} table {dtype:?}"),
                &o.read_f32(ctx).unwrap(),
                &want,
                1e-7,
            );
        }
        // One sequence's prefill in its slot, tiled: 9 tokens from position 20 of slot 1.
        let (slot, pos0, n) = (1, 20, 9);
        let s = AttnSpec { tokens: n, ..s };
        let inp = as_cache(&inputs(&s, false, 78), &s);
        let rows = |x: &[f32], stride: usize| x[slot * len * stride..][..len * stride].to_vec();
        let sub = AttnSpec {
            tokens: n,
            kv_dtype: dtype,
            ..one
        };
        let want = reference(
            &sub,
            &inp.q,
            &rows(&inp.k, s.k_stride),
            &rows(&inp.v, s.v_stride),
            None,
            pos0,
        );
        for (name, ctx) in contexts() {
            let q = Tensor::from_f32(ctx, "q", &inp.q);
            let k = Tensor::from_u32(ctx, "k", &cache_words(&s, &inp.k, s.k_stride));
            let v = Tensor::from_u32(ctx, "v", &cache_words(&s, &inp.v, s.v_stride));
            let st = Tensor::from_u32(ctx, "step", &step::contiguous(pos0, n, slot * len));
            for kernel in [AttnKernel::Tiled, AttnKernel::Rows] {
                let o = Tensor::zeros(ctx, "o", n * s.heads * s.v_dim);
                let spec = tuned(s, kernel, 0, 64);
                ctx.submit(&[&attention(ctx, spec, &q, &k, &v, None, &st, &o).unwrap()]);
                assert_nmse(
                    &format!("{name} slot prefill {kernel:?} {dtype:?}"),
                    &o.read_f32(ctx).unwrap(),
                    &want,
                    1e-7,
                );
            }
        }
    }
}
