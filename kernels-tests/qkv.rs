//! The fused q|k|v preparation (per-head or whole-projection norm, clamp, RoPE, KV-cache store)
//! against an f64 CPU reference of the same steps; with an f16 cache, every stored k and v is
//! exactly the f16 rounding (to nearest even) of what the f32 cache gets; with a q8 cache, every
//! block's scale is its largest magnitude and every element within half a step of the f32 cache's.

mod common;
use common::*;
use wgmoe::internals::gpu::{DType, Tensor, Weight};
use wgmoe::internals::kernels::attention::KvDtype;
use wgmoe::internals::kernels::qkv::{prepare_qkv, QkNorms, QkvSpec};
use wgmoe::internals::kernels::rope::RopeLayout;
use wgmoe::internals::kernels::step;

struct Case {
    spec: QkvSpec,
    norm: Option<DType>,
    /// The norms span all q heads and all k heads (OLMoE) instead of one head.
    full: bool,
    pos0: usize,
}

/// Reference: (q rows after, k cache, v cache).
fn reference(c: &Case, qkv: &[f32], qn: &[f64], kn: &[f64], inv: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let s = c.spec;
    let (h, kv, hd) = (s.heads, s.kv_heads, s.head_dim);
    let w = s.row_width();
    let mut q = vec![0.0; s.tokens * h * hd];
    let mut kc = vec![0.0; s.max_seq * kv * hd];
    let mut vc = vec![0.0; s.max_seq * kv * hd];
    for t in 0..s.tokens {
        let pos = c.pos0 + t;
        // OLMoE: one scale over all q heads, one over all k heads.
        let section_scale = |from: usize, n: usize| {
            let ms = qkv[t * w + from..][..n]
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum::<f64>()
                / n as f64;
            1.0 / (ms + s.eps as f64).sqrt()
        };
        let (q_scale, k_scale) = (section_scale(0, h * hd), section_scale(h * hd, kv * hd));
        for slot in 0..h + 2 * kv {
            let mut x: Vec<f64> = qkv[t * w + slot * hd..][..hd].iter().map(|&v| v as f64).collect();
            let is_q = slot < h;
            let is_k = !is_q && slot < h + kv;
            if c.norm.is_some() && (is_q || is_k) {
                let ms = x.iter().map(|v| v * v).sum::<f64>() / hd as f64;
                let (scale, nw) = match (c.full, is_q) {
                    (false, q) => (1.0 / (ms + s.eps as f64).sqrt(), if q { qn } else { kn }),
                    (true, true) => (q_scale, &qn[slot * hd..]),
                    (true, false) => (k_scale, &kn[(slot - h) * hd..]),
                };
                for i in 0..hd {
                    x[i] *= scale * nw[i];
                }
            }
            if let Some(cl) = s.clip {
                x.iter_mut().for_each(|v| *v = v.clamp(-cl as f64, cl as f64));
            }
            if is_q || is_k {
                for i in 0..hd / 2 {
                    // HF's angle: f32 position times f32 frequency, then cos/sin.
                    let angle = (pos as f32 * inv[i]) as f64;
                    let (sn, cs) = angle.sin_cos();
                    let (cs, sn) = (cs * s.attention_factor as f64, sn * s.attention_factor as f64);
                    let (a, b) = match s.layout {
                        RopeLayout::Half => (i, i + hd / 2),
                        RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                    };
                    let (xa, xb) = (x[a], x[b]);
                    x[a] = xa * cs - xb * sn;
                    x[b] = xb * cs + xa * sn;
                }
            }
            if is_q {
                q[(t * h + slot) * hd..][..hd].copy_from_slice(&x);
            } else {
                let kvh = if is_k { slot - h } else { slot - h - kv };
                let dst = if is_k { &mut kc } else { &mut vc };
                dst[(pos * kv + kvh) * hd..][..hd].copy_from_slice(&x);
            }
        }
    }
    (q, kc, vc)
}

fn check(c: Case) {
    for (name, ctx) in contexts() {
        let s = c.spec;
        let mut rng = Rng::new((s.head_dim * 31 + s.tokens * 7 + c.pos0) as u64);
        let qkv = rng.vec(s.tokens * s.row_width(), 3.0);
        let inv: Vec<f32> = (0..s.head_dim / 2)
            .map(|i| 10000f32.powf(-2.0 * i as f32 / s.head_dim as f32))
            .collect();
        let (qn_len, kn_len) = if c.full {
            (s.heads * s.head_dim, s.kv_heads * s.head_dim)
        } else {
            (s.head_dim, s.head_dim)
        };
        let qn_v: Vec<f32> = (0..qn_len).map(|_| 1.0 + rng.uniform(0.3)).collect();
        let kn_v: Vec<f32> = (0..kn_len).map(|_| 1.0 + rng.uniform(0.3)).collect();
        let dt = c.norm.unwrap_or(DType::F32);
        let (qn_w, kn_w) = (
            Weight::from_f32(ctx, "qn", dt, 1, qn_len, &qn_v).unwrap(),
            Weight::from_f32(ctx, "kn", dt, 1, kn_len, &kn_v).unwrap(),
        );
        let t_inv = Tensor::from_f32(ctx, "inv", &inv);
        let st = step::new(ctx, c.pos0 as u32, s.tokens as u32);
        let (cache, hd) = (s.max_seq * s.kv_heads * s.head_dim, s.head_dim);
        // prepare_qkv on a fresh copy of the rows, into caches of `kv`: (the rows, k, v).
        let run = |kv: KvDtype| {
            let t_qkv = Tensor::from_f32(ctx, "qkv", &qkv);
            let words = kv.words(cache, hd);
            let (kc, vc) = (Tensor::zeros(ctx, "k", words), Tensor::zeros(ctx, "v", words));
            let norms = c.norm.map(|_| QkNorms {
                q: &qn_w,
                k: &kn_w,
                full: c.full,
            });
            let spec = QkvSpec { kv_dtype: kv, ..s };
            let d = prepare_qkv(ctx, spec, &t_qkv, norms, &t_inv, &st, &kc, &vc).unwrap();
            ctx.submit(&[&d]);
            (t_qkv, kc, vc)
        };
        let (t_qkv, kc, vc) = run(KvDtype::F32);
        let (want_q, want_k, want_v) = reference(&c, &qkv, &rounded(dt, &qn_v), &rounded(dt, &kn_v), &inv);
        let got = t_qkv.read_f32(ctx).unwrap();
        let w = s.row_width();
        let got_q: Vec<f32> = (0..s.tokens)
            .flat_map(|t| got[t * w..][..s.heads * s.head_dim].to_vec())
            .collect();
        let what = format!("{name} {:?} norm={:?} full={} pos0={}", s, c.norm, c.full, c.pos0);
        assert_nmse(&format!("{what} q"), &got_q, &want_q, 1e-10);
        assert_nmse(&format!("{what} k"), &kc.read_f32(ctx).unwrap(), &want_k, 1e-10);
        let (k32, v32) = (kc.read_f32(ctx).unwrap(), vc.read_f32(ctx).unwrap());
        assert_nmse(&format!("{what} v"), &v32, &want_v, 1e-12);

        // The same into f16 caches: exactly f16(the f32 cache's values), two halves per word.
        let f16 = KvDtype::F16;
        let (t_qkv, kc, vc) = run(f16);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (part, got, want) in [("k", &kc, &k32), ("v", &vc, &v32)] {
            let got = f16.decode(&got.read_u32(ctx).unwrap(), cache, hd);
            assert!(
                bits(&got) == bits(&f16.decode(&f16.encode(want, hd), cache, hd)),
                "{what} {part}: the f16 cache is not f16(the f32 cache)"
            );
        }

        // A q8 cache: each block's scale is exactly its largest magnitude, and every element is
        // within half a step (scale / 254) of the f32 cache's.
        let q8 = KvDtype::Q8;
        if hd.is_multiple_of(4) {
            let (_, kc, vc) = run(q8);
            let block = KvDtype::q8_block(hd);
            for (part, got, want) in [("k", &kc, &k32), ("v", &vc, &v32)] {
                let words = got.read_u32(ctx).unwrap();
                let held = q8.decode(&words, cache, hd);
                for (b, chunk) in want.chunks(block).enumerate() {
                    let a = chunk.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let scale = f32::from_bits(words[cache.div_ceil(4) + b]);
                    assert_eq!(scale, a, "{what} {part}: block {b}'s q8 scale");
                    for (i, &x) in chunk.iter().enumerate() {
                        let err = (held[b * block + i] - x).abs();
                        assert!(
                            err <= a / 254.0 * 1.001,
                            "{what} {part}: q8 element {} off by {err} (scale {a})",
                            b * block + i
                        );
                    }
                }
            }
        }
        assert_eq!(
            t_qkv.read_f32(ctx).unwrap(),
            got,
            "{what}: q is the same with an f16 cache"
        );
    }
}

fn spec(tokens: usize, heads: usize, kv_heads: usize, head_dim: usize) -> QkvSpec {
    QkvSpec {
        tokens,
        heads,
        kv_heads,
        head_dim,
        layout: RopeLayout::Half,
        attention_factor: 1.0,
        eps: 1e-6,
        clip: None,
        max_seq: 64,
        kv_dtype: KvDtype::F32,
    }
}

#[test]
fn plain_gqa_decode_and_prefill() {
    check(Case {
        spec: spec(1, 4, 2, 16),
        norm: None,
        full: false,
        pos0: 7,
    });
    check(Case {
        spec: spec(5, 4, 2, 16),
        norm: None,
        full: false,
        pos0: 0,
    });
    // Llama/Mixtral-like head at a late position, a yarn-like amplitude.
    check(Case {
        spec: QkvSpec {
            attention_factor: 1.34657,
            ..spec(3, 8, 2, 128)
        },
        norm: None,
        full: false,
        pos0: 50,
    });
}

#[test]
fn qwen3_per_head_norm_every_dtype() {
    for dt in DTYPES {
        check(Case {
            spec: spec(2, 32, 4, 128),
            norm: Some(dt),
            full: false,
            pos0: 11,
        });
    }
}

#[test]
fn olmoe_clip_and_odd_heads() {
    check(Case {
        spec: QkvSpec {
            clip: Some(0.8),
            ..spec(4, 3, 3, 20)
        },
        norm: None,
        full: false,
        pos0: 3,
    });
    check(Case {
        spec: QkvSpec {
            clip: Some(0.5),
            layout: RopeLayout::Interleaved,
            ..spec(2, 2, 1, 6)
        },
        norm: Some(DType::F32),
        full: false,
        pos0: 9,
    });
}

/// OLMoE's q_norm / k_norm over the whole projections (before the clamp), decode and prefill, on
/// OLMoE's head shape and on odd head counts; and norms of the wrong width are refused.
#[test]
fn olmoe_whole_projection_norms() {
    for (t, h, kv, hd, pos0) in [(1, 16, 16, 128, 40), (6, 3, 2, 20, 0), (9, 5, 1, 8, 17)] {
        for dt in [DType::F32, DType::BF16] {
            check(Case {
                spec: QkvSpec {
                    clip: Some(1.5),
                    ..spec(t, h, kv, hd)
                },
                norm: Some(dt),
                full: true,
                pos0,
            });
        }
    }
    let ctx = native();
    let s = spec(1, 4, 2, 16);
    let qkv = Tensor::zeros(ctx, "qkv", s.row_width());
    let inv = Tensor::zeros(ctx, "inv", 8);
    let st = step::new(ctx, 0, 1);
    let c = Tensor::zeros(ctx, "c", 64 * 32);
    let head = Weight::from_f32(ctx, "n", DType::F32, 1, 16, &[1.0; 16]).unwrap();
    let q_all = Weight::from_f32(ctx, "n", DType::F32, 1, 64, &[1.0; 64]).unwrap();
    let k_all = Weight::from_f32(ctx, "n", DType::F32, 1, 32, &[1.0; 32]).unwrap();
    let with = |q, k, full| {
        let n = QkNorms { q, k, full };
        prepare_qkv(ctx, s, &qkv, Some(n), &inv, &st, &c, &c).is_ok()
    };
    assert!(with(&q_all, &k_all, true));
    assert!(!with(&head, &head, true), "per-head widths with full norms");
    assert!(!with(&q_all, &k_all, false), "full widths with per-head norms");
    assert!(!with(&k_all, &q_all, true), "q and k swapped");
}

#[test]
fn bad_shapes_are_errors() {
    let ctx = native();
    let s = spec(1, 4, 2, 16);
    let qkv = Tensor::zeros(ctx, "qkv", s.row_width());
    let inv = Tensor::zeros(ctx, "inv", 8);
    let st = step::new(ctx, 0, 1);
    let c = Tensor::zeros(ctx, "c", 64 * 32);
    assert!(prepare_qkv(ctx, s, &qkv, None, &inv, &st, &c, &c).is_ok());
    assert!(prepare_qkv(ctx, QkvSpec { tokens: 2, ..s }, &qkv, None, &inv, &st, &c, &c).is_err());
    assert!(prepare_qkv(ctx, QkvSpec { head_dim: 15, ..s }, &qkv, None, &inv, &st, &c, &c).is_err());
    assert!(prepare_qkv(ctx, QkvSpec { max_seq: 65, ..s }, &qkv, None, &inv, &st, &c, &c).is_err());
    assert!(prepare_qkv(ctx, QkvSpec { clip: Some(-1.0), ..s }, &qkv, None, &inv, &st, &c, &c).is_err());
    // An f16 cache needs half the words.
    let s16 = QkvSpec {
        kv_dtype: KvDtype::F16,
        ..s
    };
    let h = Tensor::zeros(ctx, "h", 64 * 32 / 2);
    assert!(prepare_qkv(ctx, s16, &qkv, None, &inv, &st, &h, &h).is_ok());
    assert!(prepare_qkv(ctx, s, &qkv, None, &inv, &st, &h, &h).is_err());
    assert!(prepare_qkv(ctx, QkvSpec { max_seq: 65, ..s16 }, &qkv, None, &inv, &st, &h, &h).is_err());
}

/// Continuous batching: a table step places each token at its own (first cache row, position);
/// RoPE takes the position and the store the row. Reference: each token alone at its position in
/// a cache of its own, whose rows must appear at the token's slot of the shared cache.
#[test]
fn table_steps_rotate_and_store_each_token_at_its_place() {
    let (slots, len) = (3, 16);
    let one = QkvSpec {
        max_seq: len,
        ..spec(1, 4, 2, 16)
    };
    let places = [(2, 9), (0, 0), (1, 15), (0, 3)];
    let all = QkvSpec {
        tokens: places.len(),
        max_seq: slots * len,
        ..one
    };
    let mut rng = Rng::new(5);
    let w = all.row_width();
    let qkv = rng.vec(places.len() * w, 3.0);
    let inv: Vec<f32> = (0..8).map(|i| 10000f32.powf(-2.0 * i as f32 / 16.0)).collect();
    let row = all.kv_heads * all.head_dim;
    let (mut want_q, mut want_k, mut want_v) = (Vec::new(), vec![0.0; slots * len * row], vec![0.0; slots * len * row]);
    for (t, &(slot, pos)) in places.iter().enumerate() {
        let c = Case {
            spec: one,
            norm: None,
            full: false,
            pos0: pos,
        };
        let (q, k, v) = reference(&c, &qkv[t * w..][..w], &[], &[], &inv);
        want_q.extend(q);
        let at = (slot * len + pos) * row;
        want_k[at..at + row].copy_from_slice(&k[pos * row..][..row]);
        want_v[at..at + row].copy_from_slice(&v[pos * row..][..row]);
    }
    let table = step::table(&places.map(|(slot, pos)| (slot * len, pos)));
    for (name, ctx) in contexts() {
        let t_qkv = Tensor::from_f32(ctx, "qkv", &qkv);
        let (kc, vc) = (
            Tensor::zeros(ctx, "k", slots * len * row),
            Tensor::zeros(ctx, "v", slots * len * row),
        );
        let st = Tensor::from_u32(ctx, "step", &table);
        let t_inv = Tensor::from_f32(ctx, "inv", &inv);
        ctx.submit(&[&prepare_qkv(ctx, all, &t_qkv, None, &t_inv, &st, &kc, &vc).unwrap()]);
        let got = t_qkv.read_f32(ctx).unwrap();
        let got_q: Vec<f32> = (0..places.len())
            .flat_map(|t| got[t * w..][..all.heads * all.head_dim].to_vec())
            .collect();
        assert_nmse(&format!("{name} table q"), &got_q, &want_q, 1e-10);
        assert_nmse(&format!("{name} table k"), &kc.read_f32(ctx).unwrap(), &want_k, 1e-10);
        assert_nmse(&format!("{name} table v"), &vc.read_f32(ctx).unwrap(), &want_v, 1e-12);
    }
}
