//! Build facts every benchmark record carries, so that results from different builds and machines
//! can be told apart: the git commit and its number (llama-bench's `build_commit` and
//! `build_number`; "unknown" and 0 outside a checkout, e.g. a crates.io download) and the version
//! of wgpu that Cargo.lock resolved.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// The `version` of `[[package]] name = "wgpu"` in Cargo.lock (the workspace's, beside this file).
fn wgpu_version(manifest_dir: &Path) -> Option<String> {
    let lock = std::fs::read_to_string(manifest_dir.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wgpu\"" {
            let version = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_string());
        }
    }
    None
}

fn main() {
    let manifest_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    // Only a checkout of wgmoe itself counts: a crate unpacked inside some other repository must
    // not take that repository's commit.
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let ours = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| canonical(Path::new(&top)) == canonical(&manifest_dir));
    let commit = ours.then(|| git(&["rev-parse", "--short", "HEAD"])).flatten();
    let number = ours.then(|| git(&["rev-list", "--count", "HEAD"])).flatten();
    println!(
        "cargo:rustc-env=WGMOE_BUILD_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=WGMOE_BUILD_NUMBER={}",
        number.as_deref().unwrap_or("0")
    );
    println!(
        "cargo:rustc-env=WGMOE_WGPU_VERSION={}",
        wgpu_version(&manifest_dir).unwrap_or_else(|| "30".into())
    );
    // Rebuild when HEAD moves: HEAD itself, the branch it points at, packed refs, and HEAD's reflog,
    // which every commit and checkout appends to (a branch that lives only in packed-refs gets a
    // new loose file on its next commit, which nothing watched). Only files that exist: cargo
    // reruns a build script on every build for a missing one.
    println!("cargo:rerun-if-changed=Cargo.lock");
    if ours {
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        let watched = ["HEAD", "packed-refs", "logs/HEAD"]
            .into_iter()
            .map(str::to_string)
            .chain(branch);
        for path in watched {
            if let Some(p) = git(&["rev-parse", "--git-path", &path]).filter(|p| Path::new(p).exists()) {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
