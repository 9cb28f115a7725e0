//! Continuous batching (`internals::model::batch`) on the architecture fixtures: a sequence's
//! greedy tokens are the same alone and batched with others that join and leave at other steps,
//! in other slots of the shared cache; and they are the tokens the single-sequence session path
//! (the one the transformers-parity tests check) produces.

mod common;
use common::fixtures::{argmax, fixture};
use common::*;
use wgmoe::internals::kernels::attention::KvDtype;
use wgmoe::internals::kernels::sampling::SampleSpec;
use wgmoe::internals::model::batch::{Batch, Row};
use wgmoe::internals::model::Model;

const STEPS: usize = 10;

fn greedy(model: &Model) -> SampleSpec {
    SampleSpec {
        vocab: model.config.vocab,
        row: 0,
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    }
}

/// One running sequence: where it is and what it produced.
struct Seq {
    slot: usize,
    pos: usize,
    next: u32,
    out: Vec<u32>,
}

/// Run `prompts` through one batch of `slots` slots: prompt i joins at step `joins[i]` in slot
/// `slot_of[i]` and leaves after [`STEPS`] tokens.
fn run(model: &Model, prompts: &[Vec<u32>], joins: &[usize], slot_of: &[usize], slots: usize) -> Vec<Vec<u32>> {
    let mut b = Batch::new(model, slots, 48, KvDtype::F16, 4).unwrap();
    let mut seqs: Vec<Option<Seq>> = prompts.iter().map(|_| None).collect();
    let mut done: Vec<Option<Vec<u32>>> = prompts.iter().map(|_| None).collect();
    for step in 0.. {
        for (i, p) in prompts.iter().enumerate() {
            if joins[i] == step {
                // All but the last prompt token go in now (in chunks of 4); the last is fed by the
                // next step like a sampled one.
                b.prefill(slot_of[i], 0, &p[..p.len() - 1]).unwrap();
                seqs[i] = Some(Seq {
                    slot: slot_of[i],
                    pos: p.len() - 1,
                    next: p[p.len() - 1],
                    out: Vec::new(),
                });
            }
        }
        let live: Vec<usize> = (0..prompts.len()).filter(|&i| seqs[i].is_some()).collect();
        if live.is_empty() {
            if done.iter().all(Option::is_some) {
                break;
            }
            continue;
        }
        let rows: Vec<Row> = live
            .iter()
            .map(|&i| {
                let s = seqs[i].as_ref().unwrap();
                Row {
                    slot: s.slot,
                    pos: s.pos,
                    token: s.next,
                    sample: greedy(model),
                    mask: None,
                }
            })
            .collect();
        let sampled: Vec<u32> = b.step(&rows).unwrap().into_iter().map(Result::unwrap).collect();
        for (&i, t) in live.iter().zip(sampled) {
            let s = seqs[i].as_mut().unwrap();
            s.out.push(t);
            s.next = t;
            s.pos += 1;
            if s.out.len() == STEPS {
                done[i] = seqs[i].take().map(|s| s.out);
            }
        }
    }
    done.into_iter().map(Option::unwrap).collect()
}

/// The session path's greedy tokens: the prompt in one pass, then one token at a time.
fn session_greedy(model: &Model, prompt: &[u32]) -> Vec<u32> {
    let mut s = model.session_with(48, KvDtype::F16);
    let mut logits = s
        .forward(prompt, wgmoe::internals::model::plan::LogitRows::Last)
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..STEPS {
        let t = argmax(&logits);
        out.push(t);
        logits = s.forward(&[t], wgmoe::internals::model::plan::LogitRows::Last).unwrap();
    }
    out
}

#[test]
fn greedy_tokens_are_the_same_alone_and_batched() {
    let ctx = native();
    for name in ["qwen3_moe", "deepseek_v3", "gpt_oss", "llama", "olmoe"] {
        let model = Model::load(ctx.clone(), &fixture(name), &|_, _| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
        let vocab = model.config.vocab as u64;
        let mut rng = Rng::new(9);
        // Lengths on both sides of the prefill chunk (4), one of a single token.
        let prompts: Vec<Vec<u32>> = [6, 1, 9, 3]
            .iter()
            .map(|&n| (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect())
            .collect();
        let alone: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| run(&model, &[p.clone()], &[0], &[0], 1)[0].clone())
            .collect();
        // Four sequences in three slots: the last joins when the first has left (same slot).
        let batched = run(&model, &prompts, &[0, 2, 3, 10], &[2, 0, 1, 2], 3);
        for (i, p) in prompts.iter().enumerate() {
            assert_eq!(batched[i], alone[i], "{name}: prompt {i} batched vs alone");
            assert_eq!(
                alone[i],
                session_greedy(&model, p),
                "{name}: prompt {i} batch vs session path"
            );
        }
    }
}

#[test]
fn each_row_of_a_step_gets_its_own_token_mask() {
    let model = Model::load(native().clone(), &fixture("qwen3_moe"), &|_, _| {}).unwrap();
    let words = model.config.vocab.div_ceil(32);
    let only = |ids: &[u32]| {
        let mut m = vec![0u32; words];
        for &i in ids {
            m[i as usize / 32] |= 1 << (i % 32);
        }
        m
    };
    let (a, b) = (only(&[5, 7]), only(&[100]));
    let mut batch = Batch::new(&model, 3, 16, KvDtype::F16, 4).unwrap();
    for step in 0..4 {
        let rows = [
            Row {
                slot: 0,
                pos: step,
                token: 1,
                sample: greedy(&model),
                mask: Some(&a),
            },
            Row {
                slot: 1,
                pos: step,
                token: 2,
                sample: greedy(&model),
                mask: None,
            },
            Row {
                slot: 2,
                pos: step,
                token: 3,
                sample: greedy(&model),
                mask: Some(&b),
            },
        ];
        let got: Vec<u32> = batch.step(&rows).unwrap().into_iter().map(Result::unwrap).collect();
        assert!(got[0] == 5 || got[0] == 7, "step {step}: {got:?}");
        assert_eq!(got[2], 100, "step {step}: {got:?}");
    }
}
