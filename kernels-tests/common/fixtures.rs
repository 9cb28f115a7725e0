//! Transformers fixtures (`kernels-tests/fixtures/<name>/`, written by `scripts/make_fixtures.py`
//! and `scripts/make_quantized_fixtures.py`): the checkpoint, its reference logits, and the parity
//! check every model test runs.

use std::path::PathBuf;
use wgmoe::internals::generate::GenerateOptions;
use wgmoe::internals::model::plan::LogitRows;
use wgmoe::internals::model::{KvDtype, Model};

/// One tensor of a fixture's model.safetensors: name, dtype, shape, little-endian bytes.
pub type FixtureTensor = (String, safetensors::Dtype, Vec<usize>, Vec<u8>);

/// A copy of fixture `name` in a temporary folder (`tag` tells copies apart): the listed `files`
/// as they are, and model.safetensors with its tensors edited by `edit`.
pub fn edited_copy(name: &str, tag: &str, files: &[&str], edit: impl FnOnce(&mut Vec<FixtureTensor>)) -> PathBuf {
    let src = fixture(name);
    let dir = std::env::temp_dir().join(format!("wgmoe-{name}-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in files {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<FixtureTensor> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    dir
}

/// Write `tensors` as a safetensors file at `path`.
pub fn write_safetensors(path: &std::path::Path, tensors: &[FixtureTensor]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// `model` on `tokens` three ways: prefill logits of every row; the same rows through the decode
/// path a token at a time (matvec, never on cooperative matrices); then `steps` greedy tokens after
/// the prompt, continuing that decode. Returns (prefill, decode, greedy).
pub fn prefill_decode_greedy(model: &Model, tokens: &[u32], steps: usize) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let prefill = model.session(64).forward(tokens, LogitRows::All).unwrap();
    let mut s = model.session(64);
    let mut decode = s.forward(&tokens[..1], LogitRows::All).unwrap();
    for &t in &tokens[1..] {
        decode.extend(s.forward(&[t], LogitRows::Last).unwrap());
    }
    let mut next = argmax(&decode[decode.len() - model.config.vocab..]);
    let mut greedy = vec![next];
    for _ in 0..steps {
        next = argmax(&s.forward(&[next], LogitRows::Last).unwrap());
        greedy.push(next);
    }
    (prefill, decode, greedy)
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("kernels-tests/fixtures")
        .join(name)
}

pub struct Reference {
    pub prompt: Vec<u32>,
    pub tokens: Vec<u32>,
    pub greedy: Vec<u32>,
    pub logits: Vec<f32>,
}

pub fn reference(name: &str) -> Reference {
    let dir = fixture(name);
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let ids = |k: &str| {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect::<Vec<_>>()
    };
    let bytes = std::fs::read(dir.join("logits.bin")).unwrap();
    Reference {
        prompt: ids("prompt"),
        tokens: ids("tokens"),
        greedy: ids("greedy"),
        logits: bytemuck::pod_collect_to_vec(&bytes),
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0 as u32
}

/// Prefill on cooperative matrices rounds every projection's input to f16 (u = 2^-11), the error
/// model of the f16 KV cache (models.rs: F16_KV_BOUND, the same 5e-2). Measured on lavapipe 8x8
/// (Mesa 26.2): qwen3_moe_bf16 1.5e-2, deepseek_v3_bf16 2.8e-2.
pub const COOP_PREFILL_BOUND: f32 = 5e-2;

/// Prefill, decode and greedy parity for one fixture with an f32 KV cache; `bound` is the max abs
/// logit error.
pub fn parity(name: &str, bound: f32) {
    parity_with(name, bound, KvDtype::F32);
}

/// The same with a KV cache of `kv`.
pub fn parity_with(name: &str, bound: f32, kv: KvDtype) {
    let r = reference(name);
    let ctx = wgmoe::internals::gpu::Context::from_env().expect("model tests need a GPU adapter");
    let model = Model::load(ctx, &fixture(name), &|_, _| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
    let vocab = model.config.vocab;
    let t = r.tokens.len();

    // Prefill projections of 16-bit weights run on cooperative matrices where the adapter has
    // them, with activations rounded to f16: then prefill is held to the f16 bound. Decode (matvec)
    // keeps `bound`.
    let coop = wgmoe::internals::kernels::matmul::coop_enabled(&model.ctx, &model.weights.embed);
    let prefill_bound = if coop { bound.max(COOP_PREFILL_BOUND) } else { bound };
    let mut s = model.session_with(64, kv);
    let prefill = s.forward(&r.tokens, LogitRows::All).unwrap();
    let e = max_abs_diff(&prefill, &r.logits);
    eprintln!("{name} ({kv} cache, cooperative matrices: {coop}): prefill max |logit error| {e:.2e}");
    assert!(
        e <= prefill_bound,
        "{name} ({kv} cache): prefill max |logit error| {e} > {prefill_bound}"
    );

    let mut s = model.session_with(64, kv);
    let mut decode = s.forward(&r.tokens[..1], LogitRows::All).unwrap();
    for &tok in &r.tokens[1..] {
        decode.extend(s.forward(&[tok], LogitRows::Last).unwrap());
    }
    let e = max_abs_diff(&decode, &r.logits);
    eprintln!("{name} ({kv} cache): decode max |logit error| {e:.2e}");
    assert!(
        e <= bound,
        "{name} ({kv} cache): decode max |logit error| {e} > {bound}"
    );
    assert_eq!(decode.len(), t * vocab);

    let mut s = model.session_with(64, kv);
    let mut logits = s.forward(&r.prompt, LogitRows::Last).unwrap();
    let mut greedy = Vec::new();
    for _ in 0..r.greedy.len() {
        let next = argmax(&logits);
        greedy.push(next);
        logits = s.forward(&[next], LogitRows::Last).unwrap();
    }
    assert_eq!(
        greedy, r.greedy,
        "{name} ({kv} cache): greedy tokens differ from transformers'"
    );

    // The same through the GPU sampler, with the token fed back on the GPU.
    let mut s = model.session_with(64, kv);
    let opts = GenerateOptions {
        max_new_tokens: r.greedy.len(),
        ..Default::default()
    };
    let mut streamed = Vec::new();
    let (ids, stats) = s
        .generate(&r.prompt, &opts, |t| {
            let _: () = streamed.push(t);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        ids, r.greedy,
        "{name} ({kv} cache): GPU-sampled greedy tokens differ from transformers'"
    );
    assert_eq!(streamed, ids);
    assert_eq!(
        (stats.prompt_tokens, stats.generated, stats.stopped_by),
        (r.prompt.len(), r.greedy.len(), "max tokens")
    );
}
