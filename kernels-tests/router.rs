//! The router tail against an f64 reference: every model family's configuration (Mixtral, Qwen,
//! OLMoE, gpt-oss, DeepSeek-V2 greedy and group-limited, DeepSeek-V3 with a selection bias), expert
//! counts 8..256, top-k 1..8, 1/5/33 tokens, shared-expert slots after the top-k (DeepSeek's,
//! Qwen2-MoE's gated one), on the fast (subgroup) and portable adapters.
//!
//! Ids must match exactly and in order. Inputs are redrawn per token until every decision the
//! reference makes (the k chosen, their order, the kept groups) wins by a margin of 1e-4, far above
//! f32 rounding, so a correct kernel cannot flip one. Weights: NMSE <= 1e-9. The GPU computes exp and
//! the division in f32; WGSL allows exp an error of 3 + 2|x| ulp, i.e. < 3e-6 relative for the
//! |x| < 10 used here, an NMSE below 1e-11, so 1e-9 leaves margin while catching any formula error.

mod common;
use common::*;
use wgmoe::internals::gpu::Tensor;
use wgmoe::internals::kernels::router::{router, GroupScore, Groups, RouterSpec, Scoring, SharedSlots};

const MARGIN: f64 = 1e-4;
const WEIGHT_NMSE: f64 = 1e-9;

/// One token's routing in f64: `(ids, weights)`, or `None` when a decision is within MARGIN of a tie.
fn route_token(spec: &RouterSpec, logits: &[f32], bias: Option<&[f32]>) -> Option<(Vec<u32>, Vec<f64>)> {
    let e = spec.experts;
    let s: Vec<f64> = match spec.scoring {
        Scoring::Softmax => {
            let m = logits.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
            let ex: Vec<f64> = logits.iter().map(|&l| (l as f64 - m).exp()).collect();
            let z: f64 = ex.iter().sum();
            ex.iter().map(|v| v / z).collect()
        }
        Scoring::Sigmoid => logits.iter().map(|&l| 1.0 / (1.0 + (-(l as f64)).exp())).collect(),
    };
    let mut c: Vec<f64> = (0..e).map(|i| s[i] + bias.map_or(0.0, |b| b[i] as f64)).collect();
    if let Some(g) = spec.groups {
        let size = e / g.n_group;
        let scores: Vec<f64> = (0..g.n_group)
            .map(|gi| {
                let mut v = c[gi * size..][..size].to_vec();
                v.sort_by(|a, b| b.total_cmp(a));
                match g.score {
                    GroupScore::Max => v[0],
                    GroupScore::Top2Sum => v[0] + v[1],
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..g.n_group).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        if g.topk_group < g.n_group && scores[order[g.topk_group - 1]] - scores[order[g.topk_group]] < MARGIN {
            return None;
        }
        for &gi in &order[g.topk_group..] {
            c[gi * size..][..size].fill(f64::NEG_INFINITY);
        }
    }
    let mut order: Vec<usize> = (0..e).collect();
    order.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
    let k = spec.top_k;
    // The chosen must beat each other (order) and the first one left out (set).
    let last = if k < e && c[order[k]].is_finite() { k + 1 } else { k };
    if order[..last].windows(2).any(|w| c[w[0]] - c[w[1]] < MARGIN) {
        return None;
    }
    let ids: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
    let mut w: Vec<f64> = order[..k].iter().map(|&i| s[i]).collect();
    if spec.renormalize {
        let eps = if spec.scoring == Scoring::Sigmoid { 1e-20 } else { 0.0 };
        let z: f64 = w.iter().sum::<f64>() + eps;
        w.iter_mut().for_each(|v| *v /= z);
    }
    w.iter_mut().for_each(|v| *v *= spec.scale as f64);
    Some((ids, w))
}

struct Case {
    logits: Vec<f32>,
    bias: Option<Vec<f32>>,
    ids: Vec<u32>,
    weights: Vec<f64>,
}

/// Random logits in [-spread, spread] (redrawn per token until the reference is tie-free) and their
/// reference routing; with shared slots, each row's ids and weights end with the shared experts
/// (weight 1, or the sigmoid of the gate logit that ends the row).
fn make_case(spec: &RouterSpec, with_bias: bool, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let bias = with_bias.then(|| rng.vec(spec.experts, 0.5));
    let mut case = Case {
        logits: vec![],
        bias: bias.clone(),
        ids: vec![],
        weights: vec![],
    };
    for _ in 0..spec.tokens {
        for attempt in 0.. {
            assert!(attempt < 1000, "could not draw tie-free logits for {spec:?}");
            let l = rng.vec(spec.logit_stride(), 4.0);
            if let Some((ids, w)) = route_token(spec, &l[..spec.experts], bias.as_deref()) {
                case.ids.extend(ids);
                case.weights.extend(w);
                if let Some(sh) = spec.shared {
                    let gate = if sh.gated {
                        1.0 / (1.0 + (-(l[spec.experts] as f64)).exp())
                    } else {
                        1.0
                    };
                    case.ids.extend((0..sh.count).map(|j| (spec.experts + j) as u32));
                    case.weights.extend(std::iter::repeat_n(gate, sh.count));
                }
                case.logits.extend(l);
                break;
            }
        }
    }
    case
}

/// Run the kernel on both adapters and compare with the reference; returns the GPU ids.
fn check(spec: RouterSpec, case: &Case, what: &str) -> Vec<u32> {
    let mut last = vec![];
    for (name, ctx) in contexts() {
        let logits = Tensor::from_f32(ctx, "logits", &case.logits);
        let bias = case.bias.as_ref().map(|b| Tensor::from_f32(ctx, "bias", b));
        let ids = Tensor::zeros(ctx, "ids", spec.tokens * spec.slots());
        let weights = Tensor::zeros(ctx, "weights", spec.tokens * spec.slots());
        let d = router(ctx, &spec, &logits, bias.as_ref(), &ids, &weights).unwrap();
        ctx.submit(&[&d]);
        let got_ids = ids.read_u32(ctx).unwrap();
        let got_w = weights.read_f32(ctx).unwrap();
        let tag = format!("{name} {what} T={} E={} k={}", spec.tokens, spec.experts, spec.top_k);
        assert_eq!(got_ids, case.ids, "{tag}: ids");
        assert_nmse(&format!("{tag}: weights"), &got_w, &case.weights, WEIGHT_NMSE);
        last = got_ids;
    }
    last
}

fn spec(experts: usize, top_k: usize, scoring: Scoring, renormalize: bool) -> RouterSpec {
    RouterSpec {
        tokens: 1,
        experts,
        top_k,
        scoring,
        groups: None,
        renormalize,
        scale: 1.0,
        shared: None,
    }
}

fn run(base: RouterSpec, with_bias: bool, what: &str) {
    for tokens in [1, 5, 33] {
        let s = RouterSpec { tokens, ..base };
        let case = make_case(&s, with_bias, (tokens * 1000 + s.experts * 10 + s.top_k) as u64);
        check(s, &case, what);
    }
}

#[test]
fn softmax_renormalized_mixtral_qwen3_gpt_oss() {
    run(spec(8, 2, Scoring::Softmax, true), false, "mixtral");
    run(spec(128, 8, Scoring::Softmax, true), false, "qwen3");
    // gpt-oss: softmax over the top-k logits == softmax + renormalize.
    run(spec(32, 4, Scoring::Softmax, true), false, "gpt-oss");
}

#[test]
fn softmax_plain_qwen2_olmoe_and_k1() {
    run(spec(60, 4, Scoring::Softmax, false), false, "qwen1.5");
    run(spec(64, 8, Scoring::Softmax, false), false, "olmoe");
    run(spec(8, 1, Scoring::Softmax, false), false, "k=1");
    run(spec(256, 1, Scoring::Softmax, true), false, "k=1 renorm");
}

#[test]
fn deepseek_v2_greedy_and_group_limited() {
    let lite = RouterSpec {
        scale: 1.0,
        ..spec(64, 6, Scoring::Softmax, false)
    };
    run(lite, false, "v2-lite greedy");
    let groups = Some(Groups {
        n_group: 8,
        topk_group: 3,
        score: GroupScore::Max,
    });
    run(
        RouterSpec {
            groups,
            scale: 16.0,
            ..spec(64, 6, Scoring::Softmax, false)
        },
        false,
        "v2 group-limited",
    );
    run(
        RouterSpec {
            groups,
            scale: 16.0,
            ..spec(128, 6, Scoring::Softmax, false)
        },
        false,
        "v2 group-limited",
    );
}

#[test]
fn deepseek_v3_sigmoid_bias_groups() {
    let groups = Some(Groups {
        n_group: 8,
        topk_group: 4,
        score: GroupScore::Top2Sum,
    });
    let v3 = RouterSpec {
        groups,
        scale: 2.5,
        ..spec(256, 8, Scoring::Sigmoid, true)
    };
    run(v3, true, "v3");
    run(RouterSpec { experts: 64, ..v3 }, true, "v3 small");
    // Without grouping or bias, and sigmoid without renormalisation.
    run(RouterSpec { groups: None, ..v3 }, true, "sigmoid+bias");
    run(
        RouterSpec {
            groups: None,
            renormalize: false,
            ..spec(64, 4, Scoring::Sigmoid, false)
        },
        false,
        "sigmoid",
    );

    // The bias must change the selection: route the same logits with and without it.
    let s = RouterSpec { tokens: 33, ..v3 };
    let case = make_case(&s, true, 77);
    let got = check(s, &case, "v3 bias");
    let changed = (0..s.tokens)
        .filter(|&t| {
            let unbiased = route_token(&s, &case.logits[t * s.experts..][..s.experts], None);
            unbiased.is_some_and(|(ids, _)| ids != got[t * s.top_k..][..s.top_k])
        })
        .count();
    assert!(changed > 0, "the selection bias changed no token's experts");
}

#[test]
fn shared_slots_follow_the_top_k() {
    let shared = |count, gated| Some(SharedSlots { count, gated });
    // DeepSeek-V2-Lite: two ungated shared experts after a greedy top-6.
    run(
        RouterSpec {
            shared: shared(2, false),
            ..spec(64, 6, Scoring::Softmax, false)
        },
        false,
        "v2-lite shared",
    );
    // DeepSeek-V3: one, after the scaled, renormalised, group-limited top-8 (the scale and the
    // renormalisation leave the shared weight at 1).
    let v3 = RouterSpec {
        groups: Some(Groups {
            n_group: 8,
            topk_group: 4,
            score: GroupScore::Top2Sum,
        }),
        scale: 2.5,
        shared: shared(1, false),
        ..spec(256, 8, Scoring::Sigmoid, true)
    };
    run(v3, true, "v3 shared");
    // Qwen2-MoE: four slots weighted by sigmoid(gate logit), the 61st logit of each row.
    run(
        RouterSpec {
            shared: shared(4, true),
            ..spec(60, 4, Scoring::Softmax, false)
        },
        false,
        "qwen2 gated shared",
    );
}

#[test]
fn bad_specs_are_errors() {
    let ctx = native();
    let t = |n| Tensor::zeros(ctx, "t", n);
    let (logits, ids, w) = (t(4 * 512), t(64), t(64));
    let ok = RouterSpec {
        tokens: 2,
        ..spec(64, 8, Scoring::Softmax, true)
    };
    assert!(router(ctx, &ok, &logits, None, &ids, &w).is_ok());
    let bad = |s: RouterSpec| router(ctx, &s, &logits, None, &ids, &w).is_err();
    assert!(bad(RouterSpec { top_k: 65, ..ok }), "k > E");
    assert!(bad(RouterSpec { top_k: 0, ..ok }), "k = 0");
    assert!(
        bad(RouterSpec {
            experts: 512,
            tokens: 1,
            top_k: 8,
            ..ok
        }),
        "E too big"
    );
    let g = |n_group, topk_group| {
        Some(Groups {
            n_group,
            topk_group,
            score: GroupScore::Max,
        })
    };
    assert!(bad(RouterSpec { groups: g(7, 2), ..ok }), "E not divisible by n_group");
    assert!(bad(RouterSpec { groups: g(8, 9), ..ok }), "topk_group > n_group");
    assert!(bad(RouterSpec { groups: g(16, 1), ..ok }), "k > experts in kept groups");
    assert!(bad(RouterSpec { tokens: 9, ..ok }), "ids too short");
    let sh = |count, gated| Some(SharedSlots { count, gated });
    assert!(
        !bad(RouterSpec {
            shared: sh(24, false),
            ..ok
        }),
        "ids hold 2 x (8 + 24)"
    );
    assert!(
        bad(RouterSpec {
            shared: sh(25, false),
            ..ok
        }),
        "ids too short for the shared slots"
    );
    assert!(
        bad(RouterSpec {
            shared: sh(0, false),
            ..ok
        }),
        "no shared slots"
    );
    let one_row = t(64);
    let gated = RouterSpec {
        tokens: 1,
        shared: sh(1, true),
        ..ok
    };
    assert!(
        router(ctx, &gated, &one_row, None, &ids, &w).is_err(),
        "no room for the gate logit"
    );
    let short_bias = t(8);
    assert!(
        router(ctx, &ok, &logits, Some(&short_bias), &ids, &w).is_err(),
        "bias too short"
    );
}
