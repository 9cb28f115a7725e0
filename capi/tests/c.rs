//! The C API as C programs and Python see it: the committed header is what cbindgen makes of
//! the source, `examples/c/simple.c` compiles with the system C compiler against it and answers
//! with SmolLM2, and Python's ctypes drives the same library.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The directory holding libwgmoe.so / libwgmoe.a, built first: `cargo test` builds only what
/// Rust tests link, so the C library is built here by cargo itself, into the same target
/// directory and profile (the test binary is <dir>/deps/c-HASH).
fn lib_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
            let target = dir.parent().unwrap();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .current_dir(root())
                .args(["build", "-p", "wgmoe-capi", "--target-dir"])
                .arg(target);
            if dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let out = build.output().expect("cargo");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(
                dir.join("libwgmoe.so").exists() || dir.join("libwgmoe.dylib").exists(),
                "no libwgmoe in {}",
                dir.display()
            );
            dir
        })
        .clone()
}

fn smollm2() -> String {
    let p = root().join("target/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch_test_assets.sh",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

#[test]
fn the_committed_header_is_what_cbindgen_makes() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(here.join("cbindgen.toml")).unwrap();
    let mut made = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(here.join("src/lib.rs"))
        .generate()
        .unwrap()
        .write(&mut made);
    let made = String::from_utf8(made).unwrap();
    let path = root().join("include/wgmoe.h");
    if std::env::var_os("WGMOE_WRITE_HEADER").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == made,
        "include/wgmoe.h is stale: run `WGMOE_WRITE_HEADER=1 cargo test --release -p wgmoe-capi` and commit it"
    );
}

#[test]
fn the_c_example_compiles_and_answers() {
    let out_dir = std::env::temp_dir().join(format!("wgmoe-c-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join("simple");
    let lib = lib_dir();
    // The README's command, with warnings as errors.
    let cc = Command::new("cc")
        .current_dir(root())
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "examples/c/simple.c",
            "-Iinclude",
        ])
        .arg(format!("-L{}", lib.display()))
        .arg("-lwgmoe")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("the system C compiler `cc`");
    assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    let run = Command::new(&exe)
        .args([smollm2().as_str(), "What is the capital of France?"])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("Paris"), "{stdout:?}");
    // Errors are codes with a message, not crashes.
    let bad = Command::new(&exe).args(["/nonexistent.gguf", "hi"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("status 1") && stderr.contains("/nonexistent.gguf"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn python_ctypes_drives_the_library() {
    let script = r#"
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.wgmoe_version.restype = ctypes.c_char_p
lib.wgmoe_last_error.restype = ctypes.c_char_p
assert lib.wgmoe_version().decode().count(".") == 2
model = ctypes.c_void_p()
# A missing file: status 1 (Io) and a message naming it.
assert lib.wgmoe_model_open(b"/nonexistent.gguf", None, ctypes.byref(model)) == 1
assert b"/nonexistent.gguf" in lib.wgmoe_last_error()
# NULL where a handle belongs: status 4 (BadInput), no crash.
assert lib.wgmoe_session_generate(None, b"hi", None, None, None, None) == 4
assert lib.wgmoe_model_open(sys.argv[2].encode(), None, ctypes.byref(model)) == 0, lib.wgmoe_last_error()
chat = ctypes.c_void_p()
assert lib.wgmoe_chat_new(model, 0, b"Be brief.", ctypes.byref(chat)) == 0, lib.wgmoe_last_error()
pieces = []
CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_char), ctypes.c_size_t)
def on_token(user, id, text, n):
    pieces.append(ctypes.string_at(text, n).decode())
    return 0
cb = CALLBACK(on_token)
why = ctypes.c_int()
assert lib.wgmoe_chat_send(chat, b"What is the capital of France?", None, cb, None, ctypes.byref(why)) == 0, lib.wgmoe_last_error()
reply = "".join(pieces)
assert "Paris" in reply, reply
assert why.value in (0, 2), why.value  # the end of turn, or max tokens
lib.wgmoe_chat_free(chat)
lib.wgmoe_model_free(model)
print("ok", reply)
"#;
    let lib = lib_dir().join(if cfg!(target_os = "macos") {
        "libwgmoe.dylib"
    } else {
        "libwgmoe.so"
    });
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&lib)
        .arg(smollm2())
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("python3");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success() && stdout.starts_with("ok"), "{stdout}\n{stderr}");
}
