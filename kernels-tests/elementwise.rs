//! Row copies and the generation-step bookkeeping against CPU references (exact: pure data movement).

mod common;
use common::*;
use wgmoe::internals::gpu::Tensor;
use wgmoe::internals::kernels::elementwise::{copy_rows, Rows};

#[test]
fn copy_between_strided_layouts() {
    for (name, ctx) in contexts() {
        let mut rng = Rng::new(3);
        // MLA: q_pe (the last 8 of each 24-wide head) into the last 8 of each 24-wide q_cat head.
        for (from, to) in [
            (
                Rows {
                    rows: 12,
                    width: 8,
                    stride: 24,
                    offset: 16,
                },
                Rows {
                    rows: 12,
                    width: 8,
                    stride: 24,
                    offset: 16,
                },
            ),
            (
                Rows {
                    rows: 1,
                    width: 2048,
                    stride: 2048,
                    offset: 5 * 2048,
                },
                Rows::packed(1, 2048),
            ),
            (
                Rows::packed(7, 33),
                Rows {
                    rows: 7,
                    width: 33,
                    stride: 40,
                    offset: 3,
                },
            ),
        ] {
            let src = rng.vec((from.rows - 1) * from.stride + from.offset + from.width, 1.0);
            let before = rng.vec((to.rows - 1) * to.stride + to.offset + to.width + 5, 1.0);
            let s = Tensor::from_f32(ctx, "src", &src);
            let d = Tensor::from_f32(ctx, "dst", &before);
            ctx.submit(&[&copy_rows(ctx, &s, from, &d, to).unwrap()]);
            let mut want = before.clone();
            for r in 0..from.rows {
                for c in 0..from.width {
                    want[r * to.stride + to.offset + c] = src[r * from.stride + from.offset + c];
                }
            }
            assert_eq!(d.read_f32(ctx).unwrap(), want, "{name} {from:?} -> {to:?}");
        }
    }
}

#[test]
fn bad_layouts_are_errors() {
    let ctx = native();
    let a = Tensor::zeros(ctx, "a", 10);
    let b = Tensor::zeros(ctx, "b", 10);
    assert!(copy_rows(ctx, &a, Rows::packed(2, 5), &b, Rows::packed(2, 6)).is_err());
    assert!(copy_rows(ctx, &a, Rows::packed(3, 5), &b, Rows::packed(3, 5)).is_err());
    assert!(copy_rows(ctx, &a, Rows::packed(2, 5), &a, Rows::packed(2, 5)).is_err());
}

#[test]
fn advance_step_logs_and_moves_on() {
    use wgmoe::internals::kernels::elementwise::advance_step;
    for (name, ctx) in contexts() {
        let step = wgmoe::internals::kernels::step::new(ctx, 5, 3);
        let ids = Tensor::from_u32(ctx, "ids", &[42, 7]);
        let log = Tensor::from_u32(ctx, "log", &[0; 10]);
        let d = advance_step(ctx, &step, &ids, &log).unwrap();
        ctx.submit(&[&d]);
        assert_eq!(step.read_u32(ctx).unwrap()[..2], [8, 1], "{name}");
        ctx.queue.write_buffer(&ids.buffer, 0, bytemuck::cast_slice(&[43u32]));
        ctx.submit(&[&d]);
        assert_eq!(step.read_u32(ctx).unwrap()[..2], [9, 1], "{name}");
        assert_eq!(log.read_u32(ctx).unwrap(), [0, 0, 0, 0, 0, 0, 0, 0, 42, 43], "{name}");
        // Past the log's end the position still advances; nothing is written out of bounds.
        ctx.submit(&[&d]);
        ctx.submit(&[&d]);
        assert_eq!(step.read_u32(ctx).unwrap()[..2], [11, 1], "{name}");
    }
}

#[test]
fn mask_logits_clears_disallowed_tokens() {
    use wgmoe::internals::kernels::elementwise::mask_logits;
    for (name, ctx) in contexts() {
        let mut rng = Rng::new(11);
        // A vocabulary that is not a multiple of 32, in the second row of a two-row buffer, with a
        // mask one word short (its last 37 tokens have no bits: masked).
        let vocab = 200;
        let logits = rng.vec(2 * vocab, 4.0);
        let words = vocab.div_ceil(32) - 1;
        let mask: Vec<u32> = (0..words).map(|_| rng.next_u64() as u32).collect();
        let t = Tensor::from_f32(ctx, "logits", &logits);
        let m = Tensor::from_u32(ctx, "mask", &mask);
        let row = Rows {
            rows: 1,
            width: vocab,
            stride: vocab,
            offset: vocab,
        };
        ctx.submit(&[&mask_logits(ctx, &t, row, &m, 0).unwrap()]);
        let want: Vec<f32> = (0..2 * vocab)
            .map(|j| {
                let i = j.wrapping_sub(vocab);
                let allowed = j < vocab || (i / 32 < words && (mask[i / 32] >> (i % 32)) & 1 == 1);
                if allowed {
                    logits[j]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        assert_eq!(t.read_f32(ctx).unwrap(), want, "{name}");
        assert!(want.iter().any(|v| v.is_infinite()) && want[vocab..].iter().any(|v| v.is_finite()));

        // A batch's masks: row r's bits from word r * words of one buffer (here row 1's mask is
        // the second half, row 0's the first).
        let words = vocab.div_ceil(32);
        let masks: Vec<u32> = (0..2 * words).map(|_| rng.next_u64() as u32).collect();
        let t = Tensor::from_f32(ctx, "logits", &logits);
        let m = Tensor::from_u32(ctx, "masks", &masks);
        for r in 0..2 {
            let row = Rows {
                rows: 1,
                width: vocab,
                stride: vocab,
                offset: r * vocab,
            };
            ctx.submit(&[&mask_logits(ctx, &t, row, &m, r * words).unwrap()]);
        }
        let want: Vec<f32> = (0..2 * vocab)
            .map(|j| {
                let (r, i) = (j / vocab, j % vocab);
                let bit = (masks[r * words + i / 32] >> (i % 32)) & 1;
                if bit == 1 {
                    logits[j]
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        assert_eq!(t.read_f32(ctx).unwrap(), want, "{name} rows");
    }
}
