//! `wgmoe serve` from the outside, with real clients: the `openai` Python package, 32 concurrent
//! streaming clients, Debian's Chromium on the chat page, and LiteLLM's proxy in front of two
//! replicas. The servers run SmolLM2-135M (real answers) or a tiny random MoE with a real
//! byte-level tokenizer (kernels-tests/serve/tiny_model.py; fast on a software GPU). The Python
//! side lives in kernels-tests/serve/ and needs the venv of scripts/python_test_deps.sh
//! (scripts/fetch_test_assets.sh makes it).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test venv's Python, or a failure that says how to make it.
fn python() -> PathBuf {
    let py = root().join("target/test-venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: run scripts/python_test_deps.sh (scripts/fetch_test_assets.sh does)",
        py.display()
    );
    py
}

/// The tiny MoE model folder, made once per test run.
fn tiny_model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = root().join("target/serve-tests/tiny-moe");
        let out = Command::new(python())
            .arg(root().join("kernels-tests/serve/tiny_model.py"))
            .arg(&dir)
            .env("WGMOE_BIN", env!("CARGO_BIN_EXE_wgmoe"))
            .env("XDG_RUNTIME_DIR", "/tmp")
            .output()
            .expect("run tiny_model.py");
        assert!(
            out.status.success(),
            "tiny_model.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A `wgmoe serve` process on a free port, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(model: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wgmoe"))
            .args(["serve", "--model"])
            .arg(model)
            .args(["--port", "0"])
            .args(extra)
            .env("XDG_RUNTIME_DIR", "/tmp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wgmoe serve");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep reading stderr for the server's whole life (a full pipe would block it).
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        let _ = tx.send(Ok(url.to_string()));
                        sent = true;
                        continue;
                    }
                    let _ = tx.send(Err(line));
                }
            }
        });
        let start = Instant::now();
        let mut log = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(120).saturating_sub(start.elapsed())) {
                Ok(Ok(url)) => return Server { child, url },
                Ok(Err(line)) => log.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("wgmoe serve did not start:\n{}", log.join("\n"));
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a script of kernels-tests/serve with the venv's Python; fail with its output.
fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(python())
        .arg(root().join("kernels-tests/serve").join(name))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
    stdout.to_string()
}

#[test]
fn the_openai_client_gets_what_the_api_promises() {
    let tiny = Server::start(
        tiny_model(),
        &[
            "--api-key",
            "sk-test",
            "--parallel",
            "2",
            "--queue",
            "8",
            "--context",
            "256",
            "--max-body",
            "65536",
        ],
    );
    let smol = Server::start(&common::smollm2(), &["--context", "1024", "--parallel", "1"]);
    let out = script("openai_client.py", &[&tiny.url, "sk-test", &smol.url], &[]);
    eprintln!("{out}");
}

#[test]
fn thirty_two_streaming_clients_all_get_their_sequential_answers() {
    let tiny = Server::start(tiny_model(), &["--parallel", "4", "--queue", "32", "--context", "256"]);
    let out = script("load.py", &[&tiny.url, "32"], &[]);
    eprintln!("{out}");
}

#[test]
fn the_chat_page_streams_an_answer_in_a_real_browser() {
    for exe in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(exe).exists(),
            "{exe} is missing: apt-get install chromium chromium-driver (.ci/run does)"
        );
    }
    let smol = Server::start(&common::smollm2(), &["--context", "1024", "--parallel", "1"]);
    let shot = root().join("target/serve-tests/chat-page.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let out = script("browser.py", &[&smol.url, shot.to_str().unwrap()], &[]);
    assert!(out.contains("Paris"), "{out}");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "no screenshot at {}",
        shot.display()
    );
}

#[test]
fn litellm_routes_across_two_replicas() {
    let a = Server::start(tiny_model(), &["--parallel", "2", "--context", "256"]);
    let b = Server::start(tiny_model(), &["--parallel", "2", "--context", "256"]);
    let port = free_port();
    let key = "sk-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let (va, vb) = (format!("{}/v1", a.url), format!("{}/v1", b.url));
    let mut proxy = Command::new(root().join("target/test-venv/bin/litellm"))
        .args(["--config"])
        .arg(root().join("examples/litellm/config.yaml"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .envs([
            ("WGMOE_A", va.as_str()),
            ("WGMOE_B", vb.as_str()),
            ("WGMOE_MODEL_ROUTE", "openai/tiny-moe"),
            ("WGMOE_API_KEY", "none"),
            ("LITELLM_MASTER_KEY", key),
            ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start litellm (scripts/python_test_deps.sh installs it)");
    let proxy_url = format!("http://127.0.0.1:{port}");
    let run = std::panic::catch_unwind(|| {
        script(
            "litellm_check.py",
            &[&proxy_url, &a.url, &b.url],
            &[("LITELLM_MASTER_KEY", key)],
        )
    });
    let _ = proxy.kill();
    let _ = proxy.wait();
    eprintln!("{}", run.unwrap_or_else(|e| std::panic::resume_unwind(e)));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
