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

/// `wgmoe devices` with `WGPU_BACKEND` set to `value`: (success, stdout, stderr).
fn devices_with_backend(value: &str) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .arg("devices")
        .env("WGPU_BACKEND", value)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
        )
        .output()
        .expect("run wgmoe");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "wgmoe panicked: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        stderr,
    )
}

/// A misspelt `WGPU_BACKEND` is named, with wgpu's spellings and this build's backends, instead of
/// "no GPU adapter found" (wgpu itself only logs a warning and then searches nothing).
#[test]
fn misspelt_wgpu_backend_is_named() {
    let (ok, _, err) = devices_with_backend("vulkn");
    assert!(!ok);
    assert!(
        err.contains(r#"WGPU_BACKEND="vulkn" names no backend wgpu knows: "vulkn""#),
        "{err}"
    );
    assert!(err.contains("this build has: vulkan"), "{err}");
    let (ok, _, err) = devices_with_backend("");
    assert!(!ok);
    assert!(err.contains(r#"WGPU_BACKEND="" names no backend"#), "{err}");
}

/// A `WGPU_BACKEND` that allows no backend with an adapter (here one this build lacks: Metal off
/// Apple, DX12 off Windows) says where adapters are instead.
#[test]
fn wgpu_backend_without_adapters_names_where_they_are() {
    use wgmoe::internals::gpu::backends::{built_in, names};
    let Some(absent) = [wgpu::Backends::METAL, wgpu::Backends::DX12]
        .into_iter()
        .find(|b| !built_in().contains(*b))
    else {
        return; // a build with every backend: none to exclude with
    };
    let ours = wgmoe::internals::gpu::backend_name(native().info.backend);
    let (ok, _, err) = devices_with_backend(&names(absent));
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "no adapter on the backends WGPU_BACKEND=\"{}\" allows ({} not in this build",
            names(absent),
            names(absent)
        )),
        "{err}"
    );
    assert!(
        err.contains("adapters exist on: ") && err.contains(&format!("{ours} (")),
        "{err}"
    );
    assert!(err.contains("Unset WGPU_BACKEND or set it to "), "{err}");
    // The spelling wgpu takes for the test's own adapter still finds it.
    let (ok, out, err) = devices_with_backend(ours);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("backend {ours}")), "{out}");
}

/// `--device gl` (Mesa's llvmpipe through EGL where the tests run without a GPU) runs a model and
/// matches transformers' logits, or is refused up front naming what stops it.
#[test]
fn gl_runs_a_model_or_says_what_stops_it() {
    use wgmoe::internals::gpu::{list_adapters, Context, DeviceOptions};
    let Some(gl) = list_adapters()
        .unwrap()
        .into_iter()
        .find(|e| e.info.backend == wgpu::Backend::Gl)
    else {
        eprintln!("no GL adapter here (no libEGL / Mesa GL driver): nothing to check");
        return;
    };
    let opts = DeviceOptions {
        selector: Some("gl".into()),
        portable: false,
    };
    match Context::new(&opts) {
        Err(e) => {
            assert!(!gl.unmet.is_empty(), "GL meets wgmoe's needs but did not open: {e}");
            let e = e.to_string();
            assert!(
                e.contains("cannot run wgmoe's kernels: ") && e.contains(&gl.unmet[0]),
                "{e}"
            );
        }
        Ok(ctx) => {
            assert!(gl.unmet.is_empty(), "{:?}", gl.unmet);
            use wgmoe::internals::model::{plan::LogitRows, KvDtype, Model};
            // A MoE model through every kernel family's GL path: prefill logits against
            // transformers' (the bound the model tests hold an f32 cache to).
            let name = "qwen3_moe";
            let want = common::fixtures::reference(name);
            let model = Model::load(ctx, &common::fixtures::fixture(name), &|_, _| {}).unwrap();
            let got = model
                .session_with(64, KvDtype::F32)
                .forward(&want.tokens, LogitRows::All)
                .unwrap();
            let e = common::fixtures::max_abs_diff(&got, &want.logits);
            assert!(e <= 1e-3, "GL logits differ from transformers' by {e}");
        }
    }
}
