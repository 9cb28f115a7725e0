//! The `wgmoe` binary's stable interfaces (`logits`) and its errors for bad input: each names the
//! file, tensor or value at fault, exits non-zero, and never panics.

mod common;
use common::fixtures::{fixture, reference, write_safetensors, FixtureTensor};
use std::path::{Path, PathBuf};
use std::process::Command;

fn wgmoe(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .args(args)
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

fn read_f32(path: &Path) -> Vec<f32> {
    bytemuck::pod_collect_to_vec(&std::fs::read(path).unwrap())
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgmoe-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `--quantize` through the CLI: the weights line shows the quantised size, and the logits equal
/// the library's load with the same option; an unknown format is an error naming the choices.
#[test]
fn logits_with_quantize_at_load() {
    let name = "qwen3_moe";
    let tokens = reference(name).tokens;
    let list = tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let dir = scratch("quantize");
    let out = dir.join("logits-q8_0.bin");
    let model = fixture(name);
    let logits = |format: &str| {
        let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
        wgmoe(&[
            "logits",
            "--model",
            m,
            "--tokens",
            &list,
            "--out",
            o,
            "--quantize",
            format,
        ])
    };
    let (ok, _, err) = logits("q8_0");
    assert!(ok, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("GPU weights: "))
        .unwrap_or_else(|| panic!("{err}"));
    let ctx = wgmoe::internals::gpu::Context::from_env().unwrap();
    let opts = wgmoe::internals::model::LoadOptions {
        quantize: Some(wgmoe::internals::gpu::DType::Q8_0),
        ..Default::default()
    };
    let lib = wgmoe::internals::model::Model::load_with(ctx, &model, &opts, &|_, _| {}).unwrap();
    assert_eq!(line, lib.weights_line());
    let want = lib
        .session(64)
        .forward(&tokens, wgmoe::internals::model::plan::LogitRows::All)
        .unwrap();
    assert_eq!(read_f32(&out), want, "the CLI's logits are the library's");
    let (ok, _, err) = logits("q3");
    assert!(!ok && err.contains("q3") && err.contains("q4_k"), "{err}");
}

#[test]
fn logits_file_matches_transformers_in_both_paths() {
    let name = "deepseek_v2_lite";
    let tokens = reference(name).tokens;
    let list = tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let want = read_f32(&fixture(name).join("logits.bin"));
    // The second run takes the ids as the JSON array `wgmoe tokenize` prints.
    let json = serde_json::to_string(&tokens).unwrap();
    let dir = scratch("logits");
    for decode in [false, true] {
        let out = dir.join(format!("logits-{decode}.bin"));
        let model = fixture(name);
        let mut args = vec![
            "logits",
            "--model",
            model.to_str().unwrap(),
            "--tokens",
            if decode { &json } else { &list },
            "--out",
            out.to_str().unwrap(),
        ];
        if decode {
            args.push("--decode");
        }
        let (ok, _, err) = wgmoe(&args);
        assert!(ok, "{err}");
        let got = read_f32(&out);
        assert_eq!(
            got.len(),
            tokens.len() * 128,
            "file holds exactly [n_tokens, vocab] f32"
        );
        let e = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(e < 1e-3, "decode={decode}: max error {e}");
    }
}

/// A copy of a fixture whose files can be broken one at a time.
fn copy_fixture(name: &str, tag: &str) -> PathBuf {
    let dir = scratch(tag);
    for f in std::fs::read_dir(fixture(name)).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir
}

fn logits_error(model: &Path, tokens: &str) -> String {
    let out = model.join("out.bin");
    let (ok, _, err) = wgmoe(&[
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        tokens,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok, "expected a failure, got success");
    err
}

/// Rewrite `model.safetensors` of `dir` through `edit` (name, dtype, shape, bytes) -> kept tensors.
fn rewrite_tensors(
    dir: &Path,
    edit: impl Fn(
        String,
        safetensors::Dtype,
        Vec<usize>,
        Vec<u8>,
    ) -> Option<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<FixtureTensor> = st
        .tensors()
        .into_iter()
        .filter_map(|(n, v)| edit(n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    write_safetensors(&path, &kept);
}

#[test]
fn bad_models_are_clear_errors() {
    // Missing folder.
    let err = logits_error(Path::new("/nonexistent/model"), "1");
    assert!(err.contains("/nonexistent/model"), "{err}");

    // Unknown model_type lists the supported ones.
    let d = copy_fixture("llama", "unknown-type");
    let cfg = std::fs::read_to_string(d.join("config.json"))
        .unwrap()
        .replace("\"llama\"", "\"falcon\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    let err = logits_error(&d, "1");
    assert!(
        err.contains("falcon") && err.contains("qwen3_moe") && err.contains("config.json"),
        "{err}"
    );

    // Truncated weights file.
    let d = copy_fixture("llama", "truncated");
    let f = d.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = logits_error(&d, "1");
    assert!(err.contains("model.safetensors"), "{err}");

    // A missing tensor is named.
    let d = copy_fixture("qwen3_moe", "missing");
    rewrite_tensors(&d, |n, dt, s, b| {
        (n != "model.layers.1.mlp.experts.3.up_proj.weight").then_some((n, dt, s, b))
    });
    let err = logits_error(&d, "1");
    assert!(
        err.contains("model.layers.1.mlp.experts.3.up_proj.weight") && err.contains("missing"),
        "{err}"
    );

    // A tensor of the wrong shape names both shapes.
    let d = copy_fixture("llama", "shape");
    rewrite_tensors(&d, |n, dt, s, b| {
        if n == "model.layers.0.self_attn.k_proj.weight" {
            let half = b.len() / 2;
            Some((n, dt, vec![s[0] / 2, s[1]], b[..half].to_vec()))
        } else {
            Some((n, dt, s, b))
        }
    });
    let err = logits_error(&d, "1");
    assert!(
        err.contains("k_proj.weight") && err.contains("[16, 64]") && err.contains("[32, 64]"),
        "{err}"
    );

    // A tensor of an unsupported dtype.
    let d = copy_fixture("llama", "dtype");
    rewrite_tensors(&d, |n, dt, s, b| {
        if n == "model.norm.weight" {
            Some((n, safetensors::Dtype::I32, s, b))
        } else {
            Some((n, dt, s, b))
        }
    });
    let err = logits_error(&d, "1");
    assert!(err.contains("model.norm.weight") && err.contains("I32"), "{err}");
}

#[test]
fn bad_requests_are_clear_errors() {
    let m = fixture("llama");
    let err = logits_error(&m, "1,2,999");
    assert!(err.contains("999") && err.contains("vocabulary"), "{err}");
    let err = logits_error(&m, "[1, x]");
    assert!(err.contains("\"x\" is not a token id"), "{err}");
    let long = (0..300).map(|i| (i % 100).to_string()).collect::<Vec<_>>().join(",");
    let err = logits_error(&m, &long);
    assert!(err.contains("context"), "{err}");
    let (ok, _, err) = wgmoe(&["--device", "no-such-gpu", "devices"]);
    assert!(ok, "devices lists adapters even when --device matches none: {err}");
    let (ok, _, err) = wgmoe(&[
        "--device",
        "no-such-gpu",
        "logits",
        "--model",
        m.to_str().unwrap(),
        "--tokens",
        "1",
        "--out",
        "/tmp/x",
    ]);
    assert!(!ok && err.contains("no-such-gpu") && err.contains("[0]"), "{err}");
}

fn asset(rel: &str) -> PathBuf {
    common::asset(rel)
}

/// `wgmoe args` started with its standard streams piped, to talk to it.
fn spawn_wgmoe(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn tokenize_prints_the_tokenizers_ids() {
    let dir = asset("qwen3");
    let tok = wgmoe::internals::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let text = "Hello, 世界! 🦀  code: fn main() {}";
    let (ok, out, err) = wgmoe(&["tokenize", "--model", dir.to_str().unwrap(), "--text", text]);
    assert!(ok, "{err}");
    let ids: Vec<u32> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ids, tok.encode(text, true).unwrap());
    let (ok, out, err) = wgmoe(&["tokenize", "--model", dir.to_str().unwrap(), "--text", text, "--chat"]);
    assert!(ok, "{err}");
    let ids: Vec<u32> = serde_json::from_str(out.trim()).unwrap();
    let want = tok
        .encode_chat(&[wgmoe::internals::tokenizer::Message::user(text)], true)
        .unwrap();
    assert_eq!(ids, want);
    assert!(tok.decode(&ids, false).unwrap().contains("<|im_start|>assistant"));
}

#[test]
fn run_and_chat_answer_with_smollm2() {
    let gguf = asset("SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = gguf.to_str().unwrap();
    let (ok, out, err) = wgmoe(&[
        "run",
        "--model",
        model,
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "-n",
        "24",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("Paris"), "answer: {out:?}");
    assert!(err.contains("tok/s") && err.contains("loaded"), "{err}");
    // The weights line: the file's tensor bytes are the file less its header (a few MiB of
    // vocabulary at most); on the GPU the Q4_1 blocks stay packed: within 5% of the file's.
    let line = err
        .lines()
        .find(|l| l.starts_with("GPU weights: "))
        .unwrap_or_else(|| panic!("{err}"));
    let mib: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|x| x.parse().ok())
        .collect();
    let (gpu, file) = (mib[0] * (1 << 20) as f64, mib[1] * (1 << 20) as f64);
    let len = std::fs::metadata(&gguf).unwrap().len() as f64;
    assert!(
        file <= len && file > len - (8 << 20) as f64,
        "{line}: the file has {len} bytes"
    );
    assert!(gpu <= 1.05 * file, "{line}");

    // Two turns through stdin: the second feeds only what the turn adds to the cached conversation.
    let mut child = spawn_wgmoe(&["chat", "--model", model, "-n", "12"]);
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?\nAnd of Italy?\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert!(stdout.contains("Paris"), "{stdout:?}");
    let prompts: Vec<usize> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("prompt: ")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(prompts.len(), 2, "{stderr}");
    assert!(
        prompts[1] < prompts[0],
        "second turn re-fed the whole conversation: {prompts:?}"
    );
}

/// `run --prompt -` reads the prompt from standard input.
#[test]
fn run_reads_the_prompt_from_standard_input() {
    use std::io::Write;
    let gguf = asset("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut child = spawn_wgmoe(&[
        "run",
        "--model",
        gguf.to_str().unwrap(),
        "--chat",
        "--prompt",
        "-",
        "-n",
        "16",
    ]);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"What is the capital of France?")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Paris"), "{stdout:?}");
}

/// Ctrl-C during a reply stops the reply, not the chat: the next command still runs.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_reply_and_keeps_the_chat() {
    use std::io::{Read, Write};
    let gguf = asset("SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut child = spawn_wgmoe(&["chat", "--model", gguf.to_str().unwrap(), "-n", "200"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"Write a long story about a dragon.\n").unwrap();
    stdin.flush().unwrap();
    // Wait for the reply to start streaming, then interrupt it.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).unwrap();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    stdin.write_all(b"/exit\n").unwrap();
    drop(stdin);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the chat ended with {:?}: {stderr}", out.status);
    let stats = stderr
        .lines()
        .find(|l| l.starts_with("prompt: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(stats.ends_with("(stopped)"), "{stats}");
    let generated: usize = stats
        .split("generated: ")
        .nth(1)
        .and_then(|s| s.split(' ').next()?.parse().ok())
        .unwrap();
    assert!(generated < 200, "{stats}");
    assert!(stderr.contains("/exit"), "the start hint names /exit: {stderr}");
}
