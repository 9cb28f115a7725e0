//! Hostile files and values (issue 9): config values of the wrong type or out of their physical
//! range, malformed RoPE scaling, GGUF metadata, non-regular and oversized input files, and CLI
//! values. Each is an error naming the key, file or flag at fault, never a panic, a hang or a
//! silent default; none of these tests needs a GPU or takes more than a moment.

mod common;
use common::fixtures::fixture;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use wgmoe::internals::model::config::ModelConfig;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgmoe-inputs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture_config(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap()
}

/// `f`'s result within a few seconds, or a failed test (not a hung one).
fn within_seconds<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what}: no answer within 10 s (blocked on a FIFO or reading a device?)"))
}

/// The error of parsing `config` as `config.json`.
fn config_error(config: &Value) -> String {
    match ModelConfig::from_value(config, "config.json") {
        Ok(_) => panic!("accepted: {config}"),
        Err(e) => e.to_string(),
    }
}

/// Set `path` (`a.b` for a key inside an object) of fixture `name`'s config to `value`
/// (`Value::Null`... is a value; `None` removes the key).
fn mutated(name: &str, path: &str, value: Option<Value>) -> Value {
    let mut v = fixture_config(name);
    let mut at = &mut v;
    let keys: Vec<&str> = path.split('.').collect();
    for k in &keys[..keys.len() - 1] {
        at = at.get_mut(*k).unwrap_or_else(|| panic!("{name} has no {k}"));
    }
    let last = keys[keys.len() - 1];
    let obj = at.as_object_mut().unwrap();
    match value {
        Some(x) => {
            obj.insert(last.to_string(), x);
        }
        None => {
            obj.remove(last);
        }
    }
    v
}

#[test]
fn every_fixture_config_and_synthetic_shape_still_loads() {
    for dir in std::fs::read_dir(fixture("")).unwrap() {
        let dir = dir.unwrap().path();
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        ModelConfig::from_json(&text, "config.json").unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    for shape in wgmoe::internals::model::synthetic::SHAPES {
        wgmoe::internals::model::synthetic::shape_config(shape).unwrap();
    }
}

/// Each `(fixture, key path, value)`: the fixture's config with the key set to the value is an
/// error naming the file, the key and the `also` keys.
fn check_cases(class: &str, also: &[&str], cases: &[(&str, &str, Value)]) {
    for (name, path, value) in cases {
        let err = config_error(&mutated(name, path, Some(value.clone())));
        assert!(err.contains("config.json"), "{class} {name}.{path}: no file in {err:?}");
        for n in std::iter::once(path).chain(also) {
            assert!(
                err.contains(&format!("\"{n}\"")),
                "{class} {name}.{path} = {value}: {n:?} not named in {err:?}"
            );
        }
    }
}

#[test]
fn zero_sizes_are_errors_naming_the_key() {
    let cases: Vec<(&str, &str, Value)> = [
        ("llama", "hidden_size"),
        ("llama", "num_attention_heads"),
        ("llama", "num_key_value_heads"),
        ("llama", "head_dim"),
        ("llama", "vocab_size"),
        ("llama", "num_hidden_layers"),
        ("llama", "intermediate_size"),
        ("llama", "max_position_embeddings"),
        ("mixtral", "num_local_experts"),
        ("mixtral", "num_experts_per_tok"),
        ("mixtral", "sliding_window"),
        ("qwen3_moe", "moe_intermediate_size"),
        ("qwen3_moe", "decoder_sparse_step"),
        ("deepseek_v3", "n_group"),
        ("deepseek_v3", "topk_group"),
        ("deepseek_v3", "n_routed_experts"),
        ("deepseek_v2", "kv_lora_rank"),
        ("deepseek_v2", "q_lora_rank"),
        ("deepseek_v2", "qk_rope_head_dim"),
        ("deepseek_v2", "v_head_dim"),
        ("gpt_oss", "rope_parameters.factor"),
        ("gpt_oss", "rope_parameters.rope_theta"),
    ]
    .into_iter()
    .map(|(name, key)| (name, key, json!(0)))
    .collect();
    check_cases("zero", &[], &cases);
}

#[test]
fn negative_and_absurd_values_are_errors_naming_the_key() {
    let theta = "rope_parameters.rope_theta";
    check_cases(
        "range",
        &[],
        &[
            ("llama", "rms_norm_eps", json!(-1e-6)),
            ("llama", "rms_norm_eps", json!(0.0)),
            ("llama", "rms_norm_eps", json!(2.0)),
            ("llama", theta, json!(-10000.0)),
            ("llama", "num_attention_heads", json!(-4)),
            ("llama", "hidden_size", json!(1u64 << 40)),
            ("llama", "vocab_size", json!(1u64 << 40)),
            ("deepseek_v3", "routed_scaling_factor", json!(-2.5)),
            ("gpt_oss", "swiglu_limit", json!(-7.0)),
            ("gpt_oss", "rope_parameters.beta_fast", json!(-32.0)),
            ("gpt_oss", "rope_parameters.factor", json!(-32.0)),
            ("olmoe", "clip_qkv", json!(-0.8)),
            // Odd head sizes: RoPE rotates pairs.
            ("llama", "head_dim", json!(15)),
            ("deepseek_v2", "qk_rope_head_dim", json!(7)),
        ],
    );
    // A rope theta from the top level (the hub spelling) too.
    let mut v = mutated("mixtral", "rope_parameters", None);
    v["rope_theta"] = json!(-1.0);
    assert!(config_error(&v).contains("\"rope_theta\""));
}

#[test]
fn wrong_types_are_errors_not_defaults() {
    check_cases(
        "type",
        &[],
        &[
            ("llama", "hidden_size", json!("64")),
            ("llama", "rms_norm_eps", json!("1e-6")),
            ("llama", "model_type", json!(5)),
            ("llama", "tie_word_embeddings", json!("true")),
            ("llama", "rope_parameters.rope_theta", json!("10000")),
            ("qwen3_moe", "max_window_layers", json!("28")),
            ("qwen3_moe", "use_sliding_window", json!("no")),
            ("qwen2", "layer_types", json!("full_attention")),
            ("qwen2_moe", "mlp_only_layers", json!("1")),
            ("qwen2_moe", "mlp_only_layers", json!(["1"])),
            ("qwen3_moe", "norm_topk_prob", json!(1)),
            ("deepseek_v2", "topk_method", json!(2)),
            ("gpt_oss", "rope_parameters.factor", json!("32")),
            ("gpt_oss", "rope_parameters.truncate", json!("false")),
            ("gpt_oss", "rope_parameters.rope_type", json!(1)),
        ],
    );
    let err = ModelConfig::from_json("[1, 2]", "config.json").unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("object"), "{err}");
}

#[test]
fn values_that_do_not_fit_together_name_both_keys() {
    let heads = "num_attention_heads";
    let top_k = "num_experts_per_tok";
    check_cases("relation", &[heads], &[("llama", "num_key_value_heads", json!(3))]);
    check_cases("relation", &["num_local_experts"], &[("mixtral", top_k, json!(5))]);
    check_cases("relation", &["n_group"], &[("deepseek_v3", "topk_group", json!(5))]);
    check_cases(
        "relation",
        &["n_routed_experts"],
        &[("deepseek_v3", "n_group", json!(3))],
    );
    // 1 group of 2 experts cannot hold 3 picks.
    check_cases("relation", &[top_k], &[("deepseek_v2", "topk_group", json!(1))]);
    let mut v = fixture_config("mixtral");
    v["head_dim"] = Value::Null;
    v["hidden_size"] = json!(2);
    let err = config_error(&v);
    assert!(err.contains("\"hidden_size\"") && err.contains(heads), "{err}");
}

#[test]
fn malformed_rope_scaling_is_an_error_not_default_rope() {
    let rp = "rope_parameters";
    let cases: Vec<(Value, &[&str])> = vec![
        (mutated("gpt_oss", rp, Some(json!("yarn"))), &["rope_parameters"]),
        (mutated("gpt_oss", rp, Some(json!([32.0]))), &["rope_parameters"]),
        (
            mutated("gpt_oss", "rope_parameters.rope_type", Some(json!("dynamic"))),
            &["rope_parameters.rope_type"],
        ),
        (
            mutated("gpt_oss", "rope_parameters.rope_type", Some(json!("linear"))),
            &["rope_parameters.rope_type"],
        ),
        (
            mutated("gpt_oss", "rope_parameters.rope_type", None),
            &["rope_parameters.rope_type"],
        ),
        (
            mutated("deepseek_v2", "rope_parameters.rope_type", Some(json!("default"))),
            &["rope_parameters.type"],
        ),
        (
            mutated("llama", "rope_parameters.partial_rotary_factor", Some(json!(0.5))),
            &["rope_parameters.partial_rotary_factor"],
        ),
    ];
    // YaRN without a factor or an original length.
    let mut yarn = fixture_config("gpt_oss");
    let p = yarn[rp].as_object_mut().unwrap();
    p.remove("factor");
    p.remove("original_max_position_embeddings");
    let mut all = cases;
    all.push((yarn, &["rope_parameters.factor"]));
    // Llama 3 scaling with a field missing, and with its bands the wrong way round.
    let llama3 = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    for (field, value) in [
        ("low_freq_factor", None),
        ("original_max_position_embeddings", None),
        ("factor", Some(json!(-8.0))),
        ("high_freq_factor", Some(json!(0.5))),
    ] {
        let mut p = llama3.clone();
        match value {
            Some(x) => p[field] = x,
            None => {
                p.as_object_mut().unwrap().remove(field);
            }
        }
        all.push((mutated("llama", rp, Some(p)), &[]));
    }
    for (v, names) in &all {
        let err = config_error(v);
        assert!(err.contains("config.json") && err.contains("rope_parameters"), "{err}");
        for n in *names {
            assert!(err.contains(&format!("\"{n}\"")), "{n:?} not named in {err:?}");
        }
    }
    // The hub spelling names its own key.
    let mut hub = mutated("gpt_oss", rp, None);
    hub["rope_scaling"] = json!({"type": "longrope", "factor": 4.0});
    assert!(config_error(&hub).contains("\"rope_scaling.type\""));
    // A well-formed llama3 block still loads.
    ModelConfig::from_value(&mutated("llama", rp, Some(llama3)), "config.json").unwrap();
}

/// How [`tiny_gguf_with`] changes one metadata key.
#[derive(Clone, Copy, Debug)]
enum Patch {
    /// Rename the key (one letter), so the file lacks it.
    Drop,
    U32(u32),
    F32(f32),
}

/// `tiny.gguf` with the metadata key `key` changed.
fn tiny_gguf_with(label: &str, key: &str, patch: Patch) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels-tests/gguf-data/tiny.gguf");
    let mut bytes = std::fs::read(src).unwrap();
    // The key's string (u64 length, bytes), then its value's type (u32) and the value.
    let at = bytes
        .windows(key.len() + 8)
        .position(|w| &w[8..] == key.as_bytes() && w[..8] == (key.len() as u64).to_le_bytes())
        .unwrap_or_else(|| panic!("tiny.gguf has no {key}"))
        + 8
        + key.len();
    let ty = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let value = at + 4..at + 8;
    match patch {
        Patch::Drop => bytes[at - 1] = b'X',
        Patch::U32(x) if ty == 4 => bytes[value].copy_from_slice(&x.to_le_bytes()),
        Patch::F32(x) if ty == 6 => bytes[value].copy_from_slice(&x.to_le_bytes()),
        _ => panic!("{key} has value type {ty}, not the {patch:?}"),
    }
    let p = scratch("gguf").join(format!("{label}.gguf"));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn gguf_metadata_errors_name_the_gguf_key() {
    let load = |label: &str, key: &str, patch: Patch| {
        let p = tiny_gguf_with(label, key, patch);
        let err = match wgmoe::internals::model::checkpoint::config(&p) {
            Ok(_) => panic!("{} accepted", p.display()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&p.display().to_string()), "no file in {err:?}");
        err
    };
    // A missing key is named as llama.cpp spells it, not as the config key it maps to.
    let err = load("no-ffn", "llama.feed_forward_length", Patch::Drop);
    assert!(
        err.contains("\"llama.feed_forward_length\"") && !err.contains("intermediate_size"),
        "{err}"
    );
    let heads = "llama.attention.head_count";
    let kv = "llama.attention.head_count_kv";
    let eps = "llama.attention.layer_norm_rms_epsilon";
    let theta = "llama.rope.freq_base";
    for (key, patch, names) in [
        (kv, Patch::U32(3), &[heads, kv][..]),
        ("llama.embedding_length", Patch::U32(0), &["llama.embedding_length"][..]),
        ("llama.context_length", Patch::U32(0), &["llama.context_length"][..]),
        (theta, Patch::F32(-1.0), &[theta][..]),
        (theta, Patch::F32(f32::NAN), &[theta][..]),
        (eps, Patch::F32(0.0), &[eps][..]),
        (eps, Patch::F32(f32::INFINITY), &[eps][..]),
    ] {
        let err = load(&format!("{key}-{patch:?}"), key, patch);
        for n in names {
            assert!(
                err.contains(&format!("\"{n}\"")),
                "{key} {patch:?}: {n:?} not named in {err:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Input files

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

/// A copy of fixture `name` (config, weights) with a word-level tokenizer of a few words and a
/// chat template, which loads in a moment.
fn model_dir(name: &str, tag: &str) -> PathBuf {
    let dir = scratch(tag);
    for f in std::fs::read_dir(fixture(name)).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "</s>": 1, "hi": 2, "there": 3}, "unk_token": "<unk>"}
    });
    let config = json!({
        "eos_token": "</s>",
        "chat_template": "{% for m in messages %}{{ m.content }} {% endfor %}"
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    dir
}

/// Replace `dir/file` by a FIFO, a link to /dev/zero, a directory or a sparse file of `len` bytes.
#[derive(Clone, Copy, Debug)]
enum Hostile {
    Fifo,
    DevZero,
    Dir,
    Sparse(u64),
}

fn make(path: &Path, h: Hostile) {
    let _ = std::fs::remove_file(path);
    match h {
        Hostile::Fifo => mkfifo(path),
        Hostile::DevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        Hostile::Dir => std::fs::create_dir(path).unwrap(),
        Hostile::Sparse(len) => std::fs::File::create(path).unwrap().set_len(len).unwrap(),
    }
}

/// What the message must say about each kind.
fn says(h: Hostile) -> &'static str {
    match h {
        Hostile::Fifo => "FIFO",
        Hostile::DevZero => "character device",
        Hostile::Dir => "directory",
        Hostile::Sparse(_) => "MiB",
    }
}

#[cfg(unix)]
#[test]
fn non_regular_and_oversized_model_files_are_errors() {
    use wgmoe::internals::model::checkpoint;
    for h in [Hostile::Fifo, Hostile::DevZero, Hostile::Dir, Hostile::Sparse(5 << 20)] {
        // config.json: the model, its description, and its tokenizer (which reads it for eos ids).
        let dir = model_dir("llama", &format!("config-{h:?}"));
        make(&dir.join("config.json"), h);
        let d = dir.clone();
        let err = within_seconds("config.json", move || checkpoint::config(&d).unwrap_err().to_string());
        assert!(err.contains("config.json") && err.contains(says(h)), "{h:?}: {err}");
        let d = dir.clone();
        let err = within_seconds("open", move || checkpoint::open(&d).err().unwrap().to_string());
        assert!(err.contains("config.json") && err.contains(says(h)), "{h:?}: {err}");

        // The weights (memory-mapped), without reading a config first.
        let dir = model_dir("llama", &format!("weights-{h:?}"));
        make(&dir.join("model.safetensors"), h);
        let d = dir.clone();
        let err = within_seconds("safetensors", move || {
            wgmoe::internals::model::safetensors::Safetensors::open_dir(&d)
                .err()
                .unwrap()
                .to_string()
        });
        assert!(err.contains("model.safetensors"), "{h:?}: {err}");

        // Tokenizer files and the generation config.
        for (file, big) in [
            ("tokenizer.json", 65 << 20),
            ("tokenizer_config.json", 17 << 20),
            ("generation_config.json", 5 << 20),
        ] {
            let h = match h {
                Hostile::Sparse(_) => Hostile::Sparse(big),
                h => h,
            };
            let dir = model_dir("llama", &format!("tok-{file}-{h:?}"));
            make(&dir.join(file), h);
            let d = dir.clone();
            let err = within_seconds(file, move || {
                wgmoe::internals::model::tokenizer_for(&d).err().unwrap().to_string()
            });
            assert!(err.contains(file) && err.contains(says(h)), "{file} {h:?}: {err}");
        }
        let dir = model_dir("llama", &format!("gen-{h:?}"));
        make(&dir.join("generation_config.json"), h);
        let err = within_seconds("generation config", move || {
            wgmoe::internals::generate::sampling_defaults(&dir)
                .unwrap_err()
                .to_string()
        });
        assert!(err.contains("generation_config.json"), "{h:?}: {err}");
    }
    // The model path itself, and a GGUF file.
    let dir = scratch("model-path");
    for h in [Hostile::Fifo, Hostile::DevZero] {
        let p = dir.join(format!("model-{h:?}.gguf"));
        make(&p, h);
        let q = p.clone();
        let err = within_seconds("model path", move || checkpoint::open(&q).err().unwrap().to_string());
        assert!(err.contains("model-") && err.contains(says(h)), "{h:?}: {err}");
        let q = p.clone();
        let err = within_seconds("gguf", move || {
            wgmoe::internals::model::gguf::GgufFile::open(&q)
                .err()
                .unwrap()
                .to_string()
        });
        assert!(err.contains("model-") && err.contains(says(h)), "{h:?}: {err}");
    }
    let err = checkpoint::open(Path::new("/nonexistent/model"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/model") && err.contains("no such"), "{err}");
}

#[test]
fn oversized_file_message_gives_size_and_limit() {
    let dir = scratch("oversized");
    let p = dir.join("config.json");
    make(&p, Hostile::Sparse(6 << 20));
    let err = wgmoe::internals::input::read_text(&p, wgmoe::internals::input::CONFIG_CAP, "model config")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("6.0 MiB") && err.contains("4.0 MiB"),
        "{err}"
    );
    // At the cap exactly it is read.
    make(&p, Hostile::Sparse(wgmoe::internals::input::CONFIG_CAP));
    assert_eq!(
        wgmoe::internals::input::read_regular(&p, wgmoe::internals::input::CONFIG_CAP, "model config")
            .unwrap()
            .len() as u64,
        wgmoe::internals::input::CONFIG_CAP
    );
}

// ---------------------------------------------------------------------------------------------
// CLI values (the binary)

/// Run `wgmoe`, failing the test if it runs past a few seconds or panics: (success, stderr).
#[cfg(feature = "cli")]
fn wgmoe(args: &[&str]) -> (bool, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .args(args)
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().ok();
            panic!("wgmoe {args:?} still runs after 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "wgmoe {args:?} panicked: {stderr}");
    (status.success(), stderr)
}

/// `wgmoe args` fails, and its message holds every one of `words`.
#[cfg(feature = "cli")]
fn refused(args: &[&str], words: &[&str]) {
    let (ok, err) = wgmoe(args);
    assert!(!ok, "wgmoe {args:?} succeeded");
    for w in words {
        assert!(err.contains(w), "wgmoe {args:?}: {w:?} not in {err:?}");
    }
}

#[cfg(all(feature = "cli", unix))]
#[test]
fn prompt_files_must_be_regular_and_small() {
    let dir = model_dir("qwen3", "prompt-files");
    let m = dir.to_str().unwrap();
    for h in [Hostile::Fifo, Hostile::DevZero, Hostile::Dir, Hostile::Sparse(17 << 20)] {
        let p = dir.join(format!("prompt-{h:?}.txt"));
        make(&p, h);
        refused(
            &["tokenize", "--model", m, "--file", p.to_str().unwrap()],
            &["prompt-", says(h)],
        );
    }
}

#[cfg(feature = "cli")]
#[test]
fn cli_values_are_refused_before_any_work() {
    let dir = model_dir("qwen3", "cli-values");
    let m = dir.to_str().unwrap();
    // Sampling values (flags, then generation_config.json's).
    for (flag, what) in [
        ("--temperature=-1", "temperature -1"),
        ("--temperature=inf", "temperature inf"),
        ("--temperature=NaN", "temperature NaN"),
        ("--top-p=0", "top-p 0"),
        ("--top-p=1.5", "top-p 1.5"),
    ] {
        refused(&["run", "--model", m, "--prompt", "hi", flag], &[what]);
    }
    let gen = dir.join("generation_config.json");
    let saved = std::fs::read(&gen).unwrap();
    for bad in [
        r#"{"temperature": "hot"}"#,
        r#"{"temperature": -0.5}"#,
        r#"{"top_p": 2}"#,
        r#"{"do_sample": "yes"}"#,
    ] {
        std::fs::write(&gen, bad).unwrap();
        refused(&["run", "--model", m, "--prompt", "hi"], &["generation_config.json"]);
    }
    std::fs::write(&gen, saved).unwrap();

    // Prompt + generation within the context: the fixture's 256 positions, or --context.
    refused(
        &["run", "--model", m, "--prompt", "hi", "-n", "300"],
        &["context", "256"],
    );
    refused(
        &["run", "--model", m, "--prompt", "hi", "-n", "20", "--context", "16"],
        &["context", "--context 16"],
    );
    refused(
        &["run", "--model", m, "--prompt", "hi", "--context", "0"],
        &["--context"],
    );
    refused(&["chat", "--model", m, "-n", "300"], &["context", "256"]);
    let long = (0..300).map(|i| (i % 100).to_string()).collect::<Vec<_>>().join(",");
    let out = dir.join("out.bin");
    refused(
        &[
            "logits",
            "--model",
            m,
            "--tokens",
            &long,
            "--out",
            out.to_str().unwrap(),
        ],
        &["context", "300"],
    );

    // bench: repetitions, and every test within the model's context.
    refused(&["bench", "--model", m, "-r", "0"], &["-r"]);
    refused(&["bench", "--model", m, "-p", "300", "-n", "0"], &["pp300", "256"]);
    refused(
        &["bench", "--model", m, "-p", "4", "-n", "16", "-d", "250"],
        &["tg16", "256"],
    );
    refused(&["bench", "--synthetic", "tiny", "-p", "4096"], &["pp4096", "2048"]);
    refused(
        &["bench", "--synthetic", "tiny", "--max-weights-gib=-1"],
        &["--max-weights-gib"],
    );
}

/// A sharded checkpoint's index names its shards; a hostile one must not reach outside the model
/// folder (an absolute path, `..`), nor name a shard with a non-string.
#[test]
fn index_shards_stay_inside_the_model_folder() {
    let dir = model_dir("llama", "index");
    std::fs::rename(
        dir.join("model.safetensors"),
        dir.join("model-00001-of-00001.safetensors"),
    )
    .unwrap();
    let outside = scratch("index-outside");
    std::fs::copy(
        dir.join("model-00001-of-00001.safetensors"),
        outside.join("stolen.safetensors"),
    )
    .unwrap();
    let open = |shard: Value| {
        let index = json!({"metadata": {}, "weight_map": {"model.norm.weight": shard}});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
        wgmoe::internals::model::safetensors::Safetensors::open_dir(&dir)
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(
        open(json!("model-00001-of-00001.safetensors")),
        None,
        "the honest index opens"
    );
    let abs = outside.join("stolen.safetensors").display().to_string();
    let up = format!(
        "../{}/stolen.safetensors",
        outside.file_name().unwrap().to_string_lossy()
    );
    for bad in [json!(abs), json!(up), json!(""), json!(7), json!(null)] {
        let err = open(bad.clone()).unwrap_or_else(|| panic!("{bad} was opened"));
        assert!(
            err.contains("model.safetensors.index.json") && err.contains("model.norm.weight"),
            "{bad}: {err}"
        );
    }
}
