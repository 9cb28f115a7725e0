//! GPU errors are values: what an error scope catches names what was being made, and an error no
//! scope caught comes back from the next wait instead of reaching wgpu's default handler (which
//! panics).

mod common;
use common::native;

fn too_big(ctx: &wgmoe::internals::gpu::Context) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("too big"),
        size: ctx.caps.max_buffer.saturating_mul(2).max(1 << 40),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    })
}

#[test]
fn scoped_errors_name_what_was_made() {
    let ctx = native();
    let e = ctx.scoped("the probe buffer", || Ok(too_big(ctx))).unwrap_err();
    assert!(matches!(e, wgmoe::Error::Device(_)), "{e}");
    assert!(e.to_string().contains("the probe buffer"), "{e}");
    // Nothing is left over for the next wait, and the device still works.
    ctx.wait().unwrap();
    let t = wgmoe::internals::gpu::Tensor::from_f32(ctx, "ok", &[1.0, 2.0]);
    assert_eq!(t.read_f32(ctx).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn uncaptured_errors_come_back_from_wait() {
    let ctx = common::portable_context();
    let _b = too_big(&ctx);
    let e = ctx.wait().unwrap_err();
    assert!(matches!(e, wgmoe::Error::Device(_)), "{e}");
    // Reported once.
    ctx.wait().unwrap();
}
