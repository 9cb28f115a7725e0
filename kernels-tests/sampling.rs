//! Argmax and sampling on the GPU against CPU references: argmax on random rows of real vocabulary
//! sizes and ties; sampling checked (a) token-for-token against an f64 implementation of the same
//! algorithm with the same random number, (b) for set correctness under top-k / top-p, (c) for its
//! distribution, (d) for reproducibility per (seed, step). Both adapters (subgroup fast path and
//! portable twin) run every check.

mod common;
use common::*;
use wgmoe::internals::gpu::{Context, Tensor};
use wgmoe::internals::kernels::sampling::{argmax, sample, sample_uniform, ArgmaxSpec, SampleSpec};
use wgmoe::internals::kernels::step;

fn cpu_argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// The mass each token keeps after temperature, top-k and top-p (0 for dropped tokens), and whether
/// the top-p cut lies so close to a cumulative boundary that f32 rounding could move it.
fn survivors(row: &[f32], spec: &SampleSpec) -> (Vec<f64>, bool) {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let inv_t = 1.0 / spec.temperature;
    // The exponent's argument is formed in f32 exactly as the shader does; the rest is f64.
    let mass = |l: f32| (((l - m) * inv_t) as f64).exp();
    let mut sorted: Vec<f32> = row.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let kth = if spec.top_k > 0 && spec.top_k < row.len() {
        sorted[spec.top_k - 1]
    } else {
        f32::NEG_INFINITY
    };
    let mut floor = kth;
    let mut ambiguous = false;
    if spec.top_p < 1.0 {
        let z: f64 = row.iter().filter(|&&l| l >= kth).map(|&l| mass(l)).sum();
        let goal = spec.top_p as f64 * z;
        let mut cum = 0.0;
        let mut i = 0;
        while i < sorted.len() {
            // All tokens of one value enter together (ties are kept).
            let v = sorted[i];
            let prev = cum;
            while i < sorted.len() && sorted[i] == v {
                cum += mass(v);
                i += 1;
            }
            if cum >= goal {
                floor = v;
                ambiguous = (cum - goal).abs() <= 1e-5 * z || (goal - prev).abs() <= 1e-5 * z;
                break;
            }
        }
    }
    (
        row.iter().map(|&l| if l >= floor { mass(l) } else { 0.0 }).collect(),
        ambiguous,
    )
}

/// The token the sampler must pick for uniform `u`, or None when u * total lies within 1e-5
/// (relative) of a cumulative boundary or the top-p cut is that close to one.
fn cpu_sample(row: &[f32], spec: &SampleSpec, u: f32) -> Option<usize> {
    if spec.temperature <= 0.0 {
        return Some(cpu_argmax(row));
    }
    let (w, ambiguous) = survivors(row, spec);
    let total: f64 = w.iter().sum();
    let goal = u as f64 * total;
    let mut c = 0.0;
    for (i, &wi) in w.iter().enumerate() {
        if wi == 0.0 {
            continue;
        }
        let prev = c;
        c += wi;
        if c > goal {
            let near = (c - goal).abs() <= 1e-5 * total || (goal - prev).abs() <= 1e-5 * total;
            return (!ambiguous && !near).then_some(i);
        }
    }
    None
}

/// Lift 64 random tokens well above the rest, like a language model's few plausible next tokens.
fn peaked(rng: &mut Rng, logits: &mut [f32]) {
    for _ in 0..64 {
        let i = rng.below(logits.len());
        logits[i] += 15.0;
    }
}

fn random_logits(rng: &mut Rng, n: usize, spread: f32) -> Vec<f32> {
    rng.vec(n, spread)
}

#[test]
fn argmax_real_vocabularies_and_odd_sizes() {
    for (name, ctx) in contexts() {
        for (vocab, rows) in [(1, 1), (3, 2), (257, 3), (1025, 1), (50304, 2), (201088, 1)] {
            let mut rng = Rng::new(vocab as u64);
            let logits = random_logits(&mut rng, vocab * rows, 20.0);
            let lt = Tensor::from_f32(ctx, "logits", &logits);
            let out = Tensor::zeros(ctx, "out", rows + 2);
            let ds: Vec<_> = (0..rows)
                .map(|r| argmax(ctx, &lt, ArgmaxSpec { vocab, row: r }, &out, r + 1).unwrap())
                .collect();
            ctx.submit(&ds.iter().collect::<Vec<_>>());
            let got = out.read_u32(ctx).unwrap();
            for r in 0..rows {
                let want = cpu_argmax(&logits[r * vocab..][..vocab]);
                assert_eq!(got[r + 1] as usize, want, "{name} argmax vocab={vocab} row={r}");
            }
        }
    }
}

#[test]
fn argmax_ties_take_the_lowest_index_and_temperature_zero_is_greedy() {
    for (name, ctx) in contexts() {
        let vocab = 50304;
        let mut rng = Rng::new(3);
        let mut logits = random_logits(&mut rng, vocab, 5.0);
        // The maximum three times, the first late in the row; -inf (masked) entries elsewhere.
        for i in [41234, 50303, 47000] {
            logits[i] = 9.0;
        }
        for i in (0..vocab).step_by(7) {
            logits[i] = f32::NEG_INFINITY;
        }
        let lt = Tensor::from_f32(ctx, "logits", &logits);
        let out = Tensor::zeros(ctx, "out", 2);
        let st = step::new(ctx, 17, 1);
        let a = argmax(ctx, &lt, ArgmaxSpec { vocab, row: 0 }, &out, 0).unwrap();
        // Each context runs its own path: the subgroup fast path where usable, else the portable twin.
        let path = if ctx.caps.subgroups_usable() {
            "argmax_sg"
        } else {
            "argmax"
        };
        assert_eq!(a.label, path, "{name}");
        let spec = SampleSpec {
            vocab,
            row: 0,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 5,
        };
        let g = sample(ctx, &lt, spec, &st, &out, 1).unwrap();
        ctx.submit(&[&a, &g]);
        assert_eq!(out.read_u32(ctx).unwrap(), vec![41234, 41234], "{name}");
        // An all -inf row still yields an index (the first).
        let lt = Tensor::from_f32(ctx, "logits", &[f32::NEG_INFINITY; 11]);
        let a = argmax(ctx, &lt, ArgmaxSpec { vocab: 11, row: 0 }, &out, 0).unwrap();
        ctx.submit(&[&a]);
        assert_eq!(out.read_u32(ctx).unwrap()[0], 0, "{name} all -inf");
    }
}

/// Run `specs` (each with its own step position) over `logits` in one submit; returns the tokens.
fn run_samples(ctx: &Context, logits: &Tensor, specs: &[(SampleSpec, u32)]) -> Vec<u32> {
    let out = Tensor::zeros(ctx, "out", specs.len());
    let steps: Vec<Tensor> = specs.iter().map(|&(_, pos)| step::new(ctx, pos, 1)).collect();
    let ds: Vec<_> = specs
        .iter()
        .zip(&steps)
        .enumerate()
        .map(|(i, (&(s, _), st))| sample(ctx, logits, s, st, &out, i).unwrap())
        .collect();
    ctx.submit(&ds.iter().collect::<Vec<_>>());
    out.read_u32(ctx).unwrap()
}

#[test]
fn sampling_matches_the_f64_reference_exactly() {
    // (vocab, rows, row, temperature, top_k, top_p, logit spread, quantised logits (ties)).
    // Over a whole 201088 vocabulary of near-uniform logits a top-p cut falls between tokens whose
    // cumulative masses differ by ~1e-5 of the total, too close to call in f32; real logits have a
    // peaked head, so the large cases lift 64 tokens by +15 (see `peaked`).
    let cases = [
        (1000, 1, 0, 0.7, 0, 1.0, 4.0, false),
        (1000, 2, 1, 1.0, 50, 1.0, 4.0, false),
        (999, 1, 0, 1.3, 0, 0.9, 4.0, false),
        (777, 1, 0, 1.0, 30, 0.7, 3.0, true),
        (5, 1, 0, 2.0, 3, 1.0, 1.0, true),
        (50304, 1, 0, 0.8, 40, 0.95, 8.0, false),
        (201088, 1, 0, 1.0, 0, 0.9, 10.0, false),
        (201088, 1, 0, 0.6, 20, 0.8, 10.0, false),
    ];
    for (name, ctx) in contexts() {
        let (mut checked, mut skipped) = (0, 0);
        for (c, &(vocab, rows, row, temperature, top_k, top_p, spread, quantised)) in cases.iter().enumerate() {
            let mut rng = Rng::new(100 + c as u64);
            let mut logits = random_logits(&mut rng, vocab * rows, spread);
            if vocab > 10_000 {
                peaked(&mut rng, &mut logits);
            }
            if quantised {
                logits.iter_mut().for_each(|l| *l = (*l * 2.0).round() / 2.0);
            }
            let lt = Tensor::from_f32(ctx, "logits", &logits);
            let specs: Vec<(SampleSpec, u32)> = (0..6u64)
                .map(|t| {
                    let seed = rng.next_u64();
                    (
                        SampleSpec {
                            vocab,
                            row,
                            temperature,
                            top_k,
                            top_p,
                            seed,
                        },
                        (t * 977 + c as u64) as u32,
                    )
                })
                .collect();
            let got = run_samples(ctx, &lt, &specs);
            for (&(spec, pos), &tok) in specs.iter().zip(&got) {
                let u = sample_uniform(spec.seed, pos);
                match cpu_sample(&logits[row * vocab..][..vocab], &spec, u) {
                    Some(want) => {
                        assert_eq!(tok as usize, want, "{name} {spec:?} pos={pos} u={u}");
                        checked += 1;
                    }
                    None => {
                        eprintln!("skip {name} {spec:?} pos={pos} u={u}");
                        skipped += 1
                    }
                }
            }
        }
        assert!(
            skipped * 10 <= checked,
            "{name}: too many boundary cases skipped ({skipped} of {})",
            checked + skipped
        );
    }
}

#[test]
fn top_k_and_top_p_restrict_the_set() {
    for (name, ctx) in contexts() {
        let vocab = 1000;
        let mut rng = Rng::new(77);
        let logits = random_logits(&mut rng, vocab, 3.0);
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top5 = &order[..5];
        let lt = Tensor::from_f32(ctx, "logits", &logits);
        // Temperature 5 flattens the distribution so all of the top 5 (and, without top-k, many
        // others) are likely.
        let specs: Vec<_> = (0..100u64)
            .map(|s| {
                (
                    SampleSpec {
                        vocab,
                        row: 0,
                        temperature: 5.0,
                        top_k: 5,
                        top_p: 1.0,
                        seed: s * 7919,
                    },
                    3,
                )
            })
            .collect();
        let got = run_samples(ctx, &lt, &specs);
        assert!(
            got.iter().all(|t| top5.contains(&(*t as usize))),
            "{name}: top-5 sample outside the top 5: {got:?}"
        );
        let distinct: std::collections::BTreeSet<_> = got.iter().collect();
        assert!(distinct.len() >= 4, "{name}: top-5 samples barely vary: {distinct:?}");

        let mut dominant = logits.clone();
        dominant[613] = 10.0;
        let lt = Tensor::from_f32(ctx, "logits", &dominant);
        let specs: Vec<_> = (0..100u64)
            .map(|s| {
                (
                    SampleSpec {
                        vocab,
                        row: 0,
                        temperature: 1.0,
                        top_k: 0,
                        top_p: 0.1,
                        seed: s,
                    },
                    s as u32,
                )
            })
            .collect();
        let got = run_samples(ctx, &lt, &specs);
        assert!(
            got.iter().all(|&t| t == 613),
            "{name}: top_p 0.1 left more than the dominant token: {got:?}"
        );
    }
}

/// Empirical frequencies of `n` draws against the reference probabilities, within 4 standard errors.
fn check_distribution(ctx: &Context, name: &str, logits: &[f32], spec: SampleSpec, n: u32) {
    let lt = Tensor::from_f32(ctx, "logits", logits);
    let mut counts = vec![0u32; logits.len()];
    for batch in (0..n).collect::<Vec<_>>().chunks(500) {
        let specs: Vec<_> = batch.iter().map(|&pos| (spec, pos)).collect();
        for t in run_samples(ctx, &lt, &specs) {
            counts[t as usize] += 1;
        }
    }
    let (w, _) = survivors(logits, &spec);
    let total: f64 = w.iter().sum();
    for (i, (&c, &wi)) in counts.iter().zip(&w).enumerate() {
        let p = wi / total;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        let dev = (c as f64 - n as f64 * p).abs();
        assert!(
            dev <= 4.0 * sd,
            "{name} {spec:?}: token {i} drawn {c} times, expected {:.1} +- {sd:.1}",
            n as f64 * p
        );
    }
}

#[test]
fn empirical_distribution() {
    let logits = [0.5, -1.0, 2.0, 0.0, 1.2, -0.3, 0.8, -2.0];
    for (name, ctx) in contexts() {
        let plain = SampleSpec {
            vocab: 8,
            row: 0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
        };
        check_distribution(ctx, name, &logits, plain, 4000);
        // Top-k 5 keeps tokens 2, 4, 6, 0, 3; top-p 0.8 then keeps 2, 4, 6 (0.83 of the top-5 mass).
        let cut = SampleSpec {
            top_k: 5,
            top_p: 0.8,
            seed: 9,
            ..plain
        };
        check_distribution(ctx, name, &logits, cut, 2000);
    }
}

#[test]
fn same_seed_and_step_repeat_new_steps_change() {
    for (name, ctx) in contexts() {
        let vocab = 1000;
        let mut rng = Rng::new(8);
        let logits = random_logits(&mut rng, vocab, 1.0);
        let lt = Tensor::from_f32(ctx, "logits", &logits);
        let spec = SampleSpec {
            vocab,
            row: 0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0xDEAD_BEEF_0000_0001,
        };
        let specs: Vec<_> = (0..40u32).map(|pos| (spec, pos)).collect();
        let first = run_samples(ctx, &lt, &specs);
        let again = run_samples(ctx, &lt, &specs);
        assert_eq!(first, again, "{name}: same (seed, step) gave different tokens");
        let distinct: std::collections::BTreeSet<_> = first.iter().collect();
        assert!(
            distinct.len() >= 30,
            "{name}: 40 steps drew only {} distinct tokens",
            distinct.len()
        );
        // The seed's high half matters too.
        let other = SampleSpec {
            seed: 0x1EAD_BEEF_0000_0001,
            ..spec
        };
        let specs2: Vec<_> = (0..40u32).map(|pos| (other, pos)).collect();
        assert_ne!(first, run_samples(ctx, &lt, &specs2), "{name}: seed high bits ignored");
    }
}

#[test]
fn rng_is_uniform_enough() {
    // Mean and spread of the shared RNG over consecutive positions (the shader computes the same).
    let n = 100_000;
    let us: Vec<f64> = (0..n).map(|p| sample_uniform(12345, p) as f64).collect();
    assert!(us.iter().all(|&u| (0.0..1.0).contains(&u)));
    let mean = us.iter().sum::<f64>() / n as f64;
    let var = us.iter().map(|u| (u - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(
        (mean - 0.5).abs() < 0.005 && (var - 1.0 / 12.0).abs() < 0.002,
        "mean {mean} var {var}"
    );
}

#[test]
fn bad_specs_are_errors() {
    let ctx = native();
    let lt = Tensor::zeros(ctx, "logits", 2 * 10);
    let out = Tensor::zeros(ctx, "out", 2);
    let st = step::new(ctx, 0, 1);
    let ok = SampleSpec {
        vocab: 10,
        row: 1,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };
    assert!(sample(ctx, &lt, ok, &st, &out, 1).is_ok());
    assert!(
        sample(ctx, &lt, SampleSpec { row: 2, ..ok }, &st, &out, 0).is_err(),
        "row >= rows"
    );
    assert!(
        sample(ctx, &lt, SampleSpec { vocab: 0, ..ok }, &st, &out, 0).is_err(),
        "vocab 0"
    );
    assert!(
        sample(
            ctx,
            &lt,
            SampleSpec {
                vocab: 21,
                row: 0,
                ..ok
            },
            &st,
            &out,
            0
        )
        .is_err(),
        "vocab past the logits"
    );
    for top_p in [0.0, -0.5, 1.5, f32::NAN] {
        assert!(
            sample(ctx, &lt, SampleSpec { top_p, ..ok }, &st, &out, 0).is_err(),
            "top_p {top_p}"
        );
    }
    assert!(
        sample(
            ctx,
            &lt,
            SampleSpec {
                temperature: f32::NAN,
                ..ok
            },
            &st,
            &out,
            0
        )
        .is_err(),
        "NaN temperature"
    );
    assert!(sample(ctx, &lt, ok, &st, &out, 2).is_err(), "out_index past out");
    assert!(argmax(ctx, &lt, ArgmaxSpec { vocab: 10, row: 2 }, &out, 0).is_err());
    assert!(argmax(ctx, &lt, ArgmaxSpec { vocab: 0, row: 0 }, &out, 0).is_err());
    assert!(argmax(ctx, &lt, ArgmaxSpec { vocab: 10, row: 0 }, &out, 5).is_err());
}

/// A NaN or +infinity anywhere in the row (a corrupt model) makes argmax and sample write
/// NONFINITE_TOKEN, whatever else the row holds; -infinity (a masked token) does not.
#[test]
fn non_finite_rows_are_flagged() {
    use wgmoe::internals::kernels::sampling::NONFINITE_TOKEN;
    for (name, ctx) in contexts() {
        let vocab = 50304;
        let mut rng = Rng::new(9);
        for (bad, at) in [(f32::NAN, 3), (f32::INFINITY, 50303), (-f32::NAN, 20000)] {
            let mut logits = random_logits(&mut rng, vocab, 5.0);
            logits[at] = bad;
            let lt = Tensor::from_f32(ctx, "logits", &logits);
            let out = Tensor::zeros(ctx, "out", 2);
            let st = step::new(ctx, 4, 1);
            let spec = SampleSpec {
                vocab,
                row: 0,
                temperature: 0.8,
                top_k: 40,
                top_p: 0.9,
                seed: 1,
            };
            let a = argmax(ctx, &lt, ArgmaxSpec { vocab, row: 0 }, &out, 0).unwrap();
            let s = sample(ctx, &lt, spec, &st, &out, 1).unwrap();
            ctx.submit(&[&a, &s]);
            assert_eq!(
                out.read_u32(ctx).unwrap(),
                vec![NONFINITE_TOKEN; 2],
                "{name}: {bad} at {at}"
            );
        }
        let mut logits = random_logits(&mut rng, vocab, 5.0);
        logits[7] = f32::NEG_INFINITY;
        let lt = Tensor::from_f32(ctx, "logits", &logits);
        let out = Tensor::zeros(ctx, "out", 1);
        ctx.submit(&[&argmax(ctx, &lt, ArgmaxSpec { vocab, row: 0 }, &out, 0).unwrap()]);
        assert_eq!(
            out.read_u32(ctx).unwrap()[0] as usize,
            cpu_argmax(&logits),
            "{name}: -inf"
        );
    }
}
