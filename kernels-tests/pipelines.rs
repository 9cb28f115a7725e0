//! Pipelines are keyed by their final source (`gpu::PipelineKey`): two modules of the same family,
//! variant, entry point and constants that differ only in their text never share a pipeline, and
//! the same module is built once. Each probe writes its own value, so a shared pipeline would show
//! in the output, not only in the cache.

mod common;
use common::native;
use wgmoe::internals::gpu::shader::{Compose, Interface, Overrides};
use wgmoe::internals::gpu::{Context, Dispatch, Tensor};

wgmoe::wgsl_bindings! {
    mod bind {
        out: read_write "array<u32>",
    }
}

wgmoe::wgsl_overrides! {
    struct Consts {
        SHIFT: u32 = 0,
    }
}

const INTERFACE: Interface = Interface {
    family: "probe",
    structs: &[],
    consts: &[],
    overrides: Consts::DECLS,
    bindings: bind::ALL,
};

const WRITES_ONE: &str = "@compute @workgroup_size(1) fn probe() { out[0] = 1u << SHIFT; }";
const WRITES_TWO: &str = "@compute @workgroup_size(1) fn probe() { out[0] = 2u << SHIFT; }";

fn compose(body: &'static str) -> Compose<'static> {
    Compose {
        // The same name for both sources: only their text tells them apart.
        variant: "same".into(),
        interface: &INTERFACE,
        parts: vec![body],
        consts: vec![],
        coop_side: None,
    }
}

fn run(ctx: &Context, body: &'static str, shift: u32) -> (std::sync::Arc<wgpu::ComputePipeline>, u32) {
    let out = Tensor::zeros(ctx, "out", 4);
    let pipeline = ctx.pipeline(
        &ctx.shader(&compose(body)),
        "probe",
        &Consts { SHIFT: shift }.constants(),
    );
    let d = Dispatch::new(
        ctx,
        "probe",
        pipeline.clone(),
        &[(bind::out, out.binding())],
        [1, 1, 1],
        vec![],
    );
    ctx.submit(&[&d]);
    (pipeline, out.read_u32(ctx).unwrap()[0])
}

#[test]
fn sources_never_share_a_pipeline() {
    let ctx = native();
    let (one, v1) = run(ctx, WRITES_ONE, 0);
    let (two, v2) = run(ctx, WRITES_TWO, 0);
    assert_eq!((v1, v2), (1, 2), "each source ran its own pipeline");
    assert!(!std::sync::Arc::ptr_eq(&one, &two), "two sources shared a pipeline");
    let (again, v) = run(ctx, WRITES_ONE, 0);
    assert!(std::sync::Arc::ptr_eq(&one, &again), "the same source was built twice");
    assert_eq!(v, 1);
    // Constants are part of the key too.
    let (shifted, v) = run(ctx, WRITES_ONE, 3);
    assert!(!std::sync::Arc::ptr_eq(&one, &shifted));
    assert_eq!(v, 8);
}
