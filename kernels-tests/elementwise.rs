//! Row copies and clamping against a CPU reference (exact: pure data movement and min/max).

mod common;
use common::*;
use wgmoe::gpu::Tensor;
use wgmoe::kernels::elementwise::{clamp_rows, copy_rows, Rows};

#[test]
fn copy_between_strided_layouts() {
    for (name, ctx) in contexts() {
        let mut rng = Rng::new(3);
        // MLA: q_pe (the last 8 of each 24-wide head) into the last 8 of each 24-wide q_cat head.
        for (from, to) in [
            (Rows { rows: 12, width: 8, stride: 24, offset: 16 }, Rows { rows: 12, width: 8, stride: 24, offset: 16 }),
            (Rows { rows: 1, width: 2048, stride: 2048, offset: 5 * 2048 }, Rows::packed(1, 2048)),
            (Rows::packed(7, 33), Rows { rows: 7, width: 33, stride: 40, offset: 3 }),
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
fn clamp_in_place() {
    for (name, ctx) in contexts() {
        let mut rng = Rng::new(4);
        let v = rng.vec(3 * 70 + 10, 3.0);
        let t = Tensor::from_f32(ctx, "t", &v);
        let rows = Rows { rows: 3, width: 64, stride: 70, offset: 2 };
        ctx.submit(&[&clamp_rows(ctx, &t, rows, 0.8).unwrap()]);
        let mut want = v.clone();
        for r in 0..3 {
            for c in 0..64 {
                let j = r * 70 + 2 + c;
                want[j] = want[j].clamp(-0.8, 0.8);
            }
        }
        assert_eq!(t.read_f32(ctx).unwrap(), want, "{name}");
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
    assert!(clamp_rows(ctx, &a, Rows::packed(2, 5), -1.0).is_err());
}

#[test]
fn advance_step_logs_and_moves_on() {
    use wgmoe::kernels::elementwise::advance_step;
    for (name, ctx) in contexts() {
        let step = wgmoe::kernels::step::new(ctx, 5, 3);
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
