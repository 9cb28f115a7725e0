//! The expert cache (src/model/experts.rs): every MoE fixture with its routed experts offloaded to
//! host memory gives the resident model's logits bit for bit, prefill and decode, 16-bit and packed;
//! a GPU memory budget holds (counted by the context's allocation counter); a budget too small is
//! an error before anything is allocated; the slot table and the policies keep their promises.

mod common;

use common::fixtures::{fixture, prefill_decode_greedy};
use wgmoe::internals::gpu::{Context, DType};
use wgmoe::internals::model::experts::{self, CacheOptions, Policy, SessionNeeds, SlotTable, TraceEntry};
use wgmoe::internals::model::{LoadOptions, Model};

/// Every MoE fixture: (name, routed experts, top-k).
const MOE: [(&str, usize, usize); 11] = [
    ("mixtral", 4, 2),
    ("qwen2_moe", 8, 2),
    ("qwen2_moe_folded", 8, 2),
    ("qwen3_moe", 8, 2),
    ("qwen3_moe_bf16", 8, 2),
    ("olmoe", 8, 2),
    ("deepseek_v2", 8, 3),
    ("deepseek_v3", 8, 3),
    ("deepseek_v3_fp8", 8, 3),
    ("gpt_oss", 4, 2),
    ("gpt_oss_mxfp4", 4, 2),
];

/// 17 tokens: more than the decode kernels take, so prefill runs the grouped GEMMs (in rounds when
/// the pool is smaller than the experts the batch needs).
const TOKENS: [u32; 17] = [1, 5, 9, 3, 7, 2, 8, 4, 6, 10, 11, 12, 13, 14, 15, 16, 17];

fn load(name: &str, quantize: Option<DType>, cache: CacheOptions) -> wgmoe::Result<Model> {
    let ctx = Context::from_env()?;
    let opts = LoadOptions {
        quantize,
        cache,
        ..Default::default()
    };
    Model::load_with(ctx, &fixture(name), &opts, &|_, _| {})
}

fn slots(n: usize) -> CacheOptions {
    CacheOptions {
        expert_slots: Some(n),
        ..Default::default()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Offloaded with `n` slots per layer == resident, bit for bit: prefill logits of every row, the
/// decode path token by token, and greedy tokens after it.
fn same_as_resident(name: &str, quantize: Option<DType>, experts: usize, n: usize) {
    let resident = load(name, quantize, CacheOptions::default()).unwrap();
    assert!(resident.experts.is_none(), "{name}: resident without a budget");
    let (p0, d0, g0) = prefill_decode_greedy(&resident, &TOKENS, 4);
    let cached = load(name, quantize, slots(n)).unwrap();
    let (p1, d1, g1) = prefill_decode_greedy(&cached, &TOKENS, 4);
    let what = format!("{name} ({quantize:?}) with {n} slots");
    assert_eq!(bits(&p0), bits(&p1), "{what}: prefill logits");
    assert_eq!(bits(&d0), bits(&d1), "{what}: decode logits");
    assert_eq!(g0, g1, "{what}: greedy tokens");
    let cache = cached.experts.as_ref().unwrap().lock().unwrap();
    let (s, e) = cache.resident_of();
    assert_eq!(s * experts, e * n, "{what}: {s} of {e} experts resident");
    assert_eq!(s / n, moe_layers(&resident), "{what}: every MoE layer offloaded");
    let st = cache.stats;
    assert!(st.lookups > 0 && st.uploaded_bytes > 0, "{what}: {st:?}");
}

#[test]
fn every_moe_fixture_offloaded_matches_resident() {
    for (name, e, k) in MOE {
        // The fewest slots (prefill in rounds), about half, and every expert in the cache.
        for n in [k, (e + k) / 2, e] {
            same_as_resident(name, None, e, n);
        }
    }
}

#[test]
fn packed_experts_offloaded_match_resident() {
    // Q8_0 experts kept packed on the host and in the pool (the fixtures' widths are whole
    // 32-blocks).
    for (name, e, k) in [("qwen3_moe", 8, 2), ("qwen2_moe_folded", 8, 2), ("deepseek_v3", 8, 3)] {
        for n in [k, e] {
            same_as_resident(name, Some(DType::Q8_0), e, n);
        }
    }
}

/// What `name` needs on the GPU for sessions of `session`, as the loader estimates it.
fn needs_of(name: &str, session: &SessionNeeds) -> experts::Needs {
    let (cfg, src) = wgmoe::internals::model::checkpoint::open(&fixture(name)).unwrap();
    let layout = wgmoe::internals::model::loader::source_layout(&cfg, src.as_ref());
    experts::needs(
        &cfg,
        &layout,
        &|s| wgmoe::internals::model::loader::spec_dtype(src.as_ref(), s),
        session,
    )
}

fn moe_layers(m: &Model) -> usize {
    m.config
        .layers
        .iter()
        .filter(|l| matches!(l.ffn, wgmoe::internals::model::config::Ffn::Moe { .. }))
        .count()
}

#[test]
fn gpu_memory_budget_holds_and_picks_the_slots() {
    let session = SessionNeeds {
        context: 64,
        batch: TOKENS.len(),
        logit_rows: TOKENS.len(),
        kv: wgmoe::internals::model::KvDtype::F32,
    };
    for name in ["olmoe", "qwen2_moe_folded", "deepseek_v3", "gpt_oss"] {
        let needs = needs_of(name, &session);
        let (e, k) = (needs.experts, needs.top_k);
        // Everything, about half the experts, the fewest.
        for (budget, want) in [
            (needs.all(), None),
            (needs.with_slots(e / 2) + needs.per_slot / 2, Some(e / 2)),
            (needs.with_slots(k), Some(k)),
        ] {
            let cache = CacheOptions {
                gpu_memory: Some(budget),
                session,
                ..Default::default()
            };
            let model = load(name, None, cache).unwrap();
            let ctx = model.ctx.clone();
            let got = model
                .experts
                .as_ref()
                .map(|c| c.lock().unwrap().resident_of().0 / moe_layers(&model));
            assert_eq!(got, want, "{name} at {budget} bytes");
            let (p, _, _) = prefill_decode_greedy(&model, &TOKENS, 2);
            assert!(p.iter().all(|x| x.is_finite()));
            // Two sessions of 64 positions ran (prefill_decode_greedy): within the budget, which
            // reserved one.
            let used = ctx.allocated_bytes();
            let reserve = needs.session;
            assert!(
                used <= budget + reserve,
                "{name}: {used} bytes allocated against a budget of {budget} (+{reserve} for the second session)"
            );
        }
    }
}

#[test]
fn budget_too_small_is_an_error_before_allocating() {
    let session = SessionNeeds::default();
    let needs = needs_of("qwen3_moe", &session);
    let ctx = Context::from_env().unwrap();
    let before = ctx.allocated_bytes();
    let opts = LoadOptions {
        cache: CacheOptions {
            gpu_memory: Some(needs.with_slots(needs.top_k) - 1),
            session,
            ..Default::default()
        },
        ..Default::default()
    };
    let err = Model::load_with(ctx.clone(), &fixture("qwen3_moe"), &opts, &|_, _| {})
        .err()
        .expect("a budget below the minimal cache is refused")
        .to_string();
    assert!(err.contains("needs at least") && err.contains("--gpu-memory"), "{err}");
    assert!(ctx.allocated_bytes() - before < 4096, "allocated before refusing");
    // Too few slots asked for.
    let err = load("qwen3_moe", None, slots(1)).err().unwrap().to_string();
    assert!(err.contains("--expert-slots 1"), "{err}");
}

#[test]
fn slot_table_rounds() {
    let mut t = SlotTable::new(8, 3, Policy::Lru);
    // Five experts into three slots: two rounds, every expert once, no slot twice in a round.
    let (rounds, hits) = t.place(&[4, 1, 7, 0, 5]);
    assert_eq!(hits, 0);
    assert_eq!(rounds.len(), 2);
    let mut seen: Vec<u32> = rounds.iter().flatten().map(|r| r.0).collect();
    seen.sort();
    assert_eq!(seen, vec![0, 1, 4, 5, 7]);
    for r in &rounds {
        let mut s: Vec<u32> = r.iter().map(|x| x.1).collect();
        s.dedup();
        assert!(r.len() <= 3 && s.len() == r.len());
        assert!(r.iter().all(|x| x.2), "all misses upload");
    }
    // What the last round left resident hits, in the first round.
    let last: Vec<u32> = rounds[1].iter().map(|r| r.0).collect();
    let (rounds, hits) = t.place(&last);
    assert_eq!((rounds.len(), hits), (1, last.len()));
    assert!(rounds[0].iter().all(|x| !x.2));
}

#[test]
fn lru_evicts_the_least_recent_and_lfu_the_least_frequent() {
    let run = |policy, steps: &[&[u32]]| {
        let mut t = SlotTable::new(4, 2, policy);
        steps.iter().map(|s| t.place(s).1).collect::<Vec<_>>()
    };
    // 0 is used often, 1 once, then 2 arrives and 0 comes back.
    let steps: &[&[u32]] = &[&[0], &[0], &[0], &[1], &[2], &[0]];
    // LRU gives 0's slot to 2 (0 was used before 1), so 0 misses; LFU keeps 0.
    assert_eq!(run(Policy::Lru, steps), vec![0, 1, 1, 0, 0, 0]);
    assert_eq!(run(Policy::Lfu, steps), vec![0, 1, 1, 0, 0, 1]);
}

/// A routing trace with a popular set that drifts: what real routers do to a cache.
fn skewed_trace(layers: usize, steps: usize, experts: u32, k: usize, seed: u64) -> Vec<TraceEntry> {
    let mut rng = common::Rng::new(seed);
    let mut out = Vec::new();
    for step in 0..steps {
        for layer in 0..layers {
            let mut chosen: Vec<u32> = Vec::new();
            while chosen.len() < k {
                // Zipf-like: expert r with weight 1/(r+1), rotated slowly with the step.
                let u = rng.unit();
                let h: f64 = (1..=experts).map(|r| 1.0 / r as f64).sum();
                let (mut acc, mut r) = (0.0, 0);
                while r + 1 < experts {
                    acc += 1.0 / (r + 1) as f64 / h;
                    if u < acc {
                        break;
                    }
                    r += 1;
                }
                let e = (r + (step / 50) as u32 + layer as u32 * 7) % experts;
                if !chosen.contains(&e) {
                    chosen.push(e);
                }
            }
            out.push(TraceEntry { layer, experts: chosen });
        }
    }
    out
}

#[test]
fn policies_against_the_optimum() {
    let trace = skewed_trace(4, 400, 64, 8, 7);
    eprintln!("{}", experts::policy_table(&trace, 64, 8));
    for slots in [8, 16, 32, 64] {
        let best = experts::simulate_optimal(&trace, slots);
        for p in Policy::ALL {
            let h = experts::simulate(&trace, 64, slots, p);
            assert!(h <= best + 1e-9, "{p:?} at {slots}: {h} beats the optimum {best}");
            assert!(h > 0.0, "{p:?} at {slots}");
        }
    }
    // With every expert cached only the first use of each misses.
    let h = experts::simulate(&trace, 64, 64, Policy::Lru);
    let firsts: usize = (0..4)
        .map(|l| {
            let mut s: Vec<u32> = trace
                .iter()
                .filter(|t| t.layer == l)
                .flat_map(|t| t.experts.clone())
                .collect();
            s.sort();
            s.dedup();
            s.len()
        })
        .sum();
    let lookups: usize = trace.iter().map(|t| t.experts.len()).sum();
    assert!((h - (1.0 - firsts as f64 / lookups as f64)).abs() < 1e-12);
}
