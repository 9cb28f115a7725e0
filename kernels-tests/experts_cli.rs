//! The expert cache through the command line: `logits` offloaded gives the resident logits and
//! says what the cache did; `bench --gpu-memory` with budgets below a synthetic model's weights
//! runs end to end and tabulates them; host memory while a model with offloaded experts loads
//! and runs stays near its file's size (the file's pages are let go as they are copied).

mod common;

use common::fixtures::{fixture, write_safetensors, FixtureTensor};
use std::path::Path;
use std::process::{Command, Output};
use wgmoe::internals::model::layout::{self, Routed, Source};

fn wgmoe(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_wgmoe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wgmoe {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn logits_offloaded_equal_resident_and_report_the_cache() {
    let dir = std::env::temp_dir().join(format!("wgmoe-experts-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = fixture("olmoe");
    let tokens = "1,5,9,3,7,2,8,4,6,10,11";
    for decode in [false, true] {
        let (a, b) = (dir.join("a.bin"), dir.join("b.bin"));
        let mut args = vec!["logits", "--model", model.to_str().unwrap(), "--tokens", tokens];
        if decode {
            args.push("--decode");
        }
        let resident = wgmoe(&[&args[..], &["--out", a.to_str().unwrap()]].concat());
        assert!(!String::from_utf8_lossy(&resident.stderr).contains("expert cache"));
        let cached = wgmoe(&[&args[..], &["--out", b.to_str().unwrap(), "--expert-slots", "2"]].concat());
        let err = String::from_utf8_lossy(&cached.stderr);
        assert!(
            err.contains("expert cache: 6 of 24 experts resident, hit rate") && err.contains("MiB uploaded per token"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "decode {decode}"
        );
    }
}

#[test]
fn bench_at_budgets_below_the_weights() {
    // The tiny shape's weights take 4.8 MiB; 0.003 GiB leaves room for the fewest experts only.
    let out = wgmoe(&[
        "bench",
        "--synthetic",
        "tiny",
        "-p",
        "16",
        "-n",
        "4",
        "-r",
        "1",
        "--gpu-memory",
        "0.003,0.004,0.01",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("| GPU memory | experts resident |"), "{text}");
    for row in [
        "| 0.003 GiB | 4 of 16 |",
        "| 0.004 GiB | 10 of 16 |",
        "| 0.01 GiB | all |",
    ] {
        assert!(text.contains(row), "{row} missing:\n{text}");
    }
    assert!(err.contains("| slots per layer | lru | lfu | optimal |"), "{err}");
}

/// A Qwen3-MoE checkpoint of f16 values whose routed experts take ~200 MB.
fn big_moe(dir: &Path) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 512,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "num_hidden_layers": 4, "num_experts": 64, "num_experts_per_tok": 2,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": true,
        "rms_norm_eps": 1e-6, "max_position_embeddings": 256, "rope_theta": 10000.0,
        "vocab_size": 128, "tie_word_embeddings": false, "torch_dtype": "float16"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let cfg = wgmoe::internals::model::checkpoint::config(dir).unwrap();
    let mut tensors: Vec<FixtureTensor> = Vec::new();
    // Small f16 values (0.01), varied a little so no two pages are alike.
    let mut add = |name: &str, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let bytes = (0..n)
            .flat_map(|i| (0x211Fu16 + (i % 7) as u16).to_le_bytes())
            .collect();
        tensors.push((name.to_string(), safetensors::Dtype::F16, shape, bytes));
    };
    layout::layout(&cfg).for_each(|s, _| match &s.source {
        Source::Tensor { name, shape } => add(name, shape.clone()),
        Source::Stacked(parts) => parts.iter().for_each(|(n, r)| add(n, vec![*r, s.cols])),
        Source::Experts {
            routed: Routed::PerExpert { parts, .. },
            shared,
            ..
        } => {
            parts.iter().for_each(|(n, r)| add(n, vec![*r, s.cols]));
            assert!(shared.is_none());
        }
        Source::Biases(parts) => parts
            .iter()
            .filter_map(|(n, len)| n.as_ref().map(|n| (n, len)))
            .for_each(|(n, len)| add(n, vec![*len])),
        other => panic!("not in a Qwen3-MoE checkpoint: {other:?}"),
    });
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    std::fs::metadata(dir.join("model.safetensors")).unwrap().len()
}

/// Peak resident memory (KiB) of `wgmoe args`, from the kernel's accounting of a finished child.
fn peak_kib(args: &[&str]) -> u64 {
    let script = "import resource, subprocess, sys\n\
                  r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n\
                  assert r.returncode == 0, r.stderr.decode()\n\
                  print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_wgmoe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn host_memory_stays_near_the_file_size() {
    let dir = std::env::temp_dir().join(format!("wgmoe-big-moe-{}", std::process::id()));
    let file = big_moe(&dir);
    let out = dir.join("logits.bin");
    let (m, o) = (dir.to_str().unwrap(), out.to_str().unwrap());
    // The process with a tiny model: the runtime, the driver and its shader compiler.
    let base = peak_kib(&[
        "logits",
        "--model",
        fixture("qwen3_moe").to_str().unwrap(),
        "--tokens",
        "1,2,3",
        "--out",
        o,
    ]);
    let offloaded = peak_kib(&[
        "logits",
        "--model",
        m,
        "--tokens",
        "1,2,3",
        "--decode",
        "--expert-slots",
        "2",
        "--out",
        o,
    ]);
    let extra = (offloaded.saturating_sub(base) * 1024) as f64;
    std::fs::remove_dir_all(&dir).ok();
    // The experts' host copy is the file's bulk; the file's own pages are let go as they are
    // copied, so the process never holds both (that would be 2x). What is over 1x is wgpu's
    // staging of uploads (flushed every 64 MiB).
    assert!(
        extra < 1.5 * file as f64,
        "peak {offloaded} KiB against {base} KiB for a tiny model: {:.0} MB over, for a {:.0} MB file",
        extra / 1e6,
        file as f64 / 1e6
    );
}
