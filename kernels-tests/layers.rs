//! The library's layers, read from its source: `gpu` (context, buffers, shader composition,
//! dispatch) <- `kernels` (families, no model knowledge) <- `model` and the runtime around it; no
//! module reaches up a layer, and no two sibling modules use each other (directly or round a
//! cycle). Paths in comments and in unit-test modules do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path of a source file below src/ (`kernels/matmul/mod.rs` is `kernels::matmul`).
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests { .. }` tail.
fn code(src: &str) -> String {
    let src = match src.find("#[cfg(test)]\nmod tests") {
        Some(at) => &src[..at],
        None => src,
    };
    src.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b..` and `super::..` path in `code`, resolved to an absolute module path.
fn references(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_' || bytes[at - 1] == b'$') {
                continue;
            }
            let head = code[from..]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or("");
            let mut base = if start == "crate::" {
                Vec::new()
            } else {
                let mut base = module.to_vec();
                base.pop();
                base
            };
            for p in head.split("::").filter(|s| !s.is_empty()) {
                if p == "super" {
                    base.pop();
                } else {
                    base.push(p.to_string());
                }
            }
            // `use crate::a::{b, c::d}`: each item continues the path.
            let rest = &code[from + head.len()..];
            match rest.strip_prefix('{').and_then(|r| r.split('}').next()) {
                Some(items) => {
                    for item in items.split(',') {
                        let mut p = base.clone();
                        p.extend(
                            item.trim()
                                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                                .next()
                                .unwrap_or("")
                                .split("::")
                                .filter(|s| !s.is_empty() && *s != "self")
                                .map(str::to_string),
                        );
                        out.push(p);
                    }
                }
                None => out.push(base),
            }
        }
    }
    out
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(Vec<String>, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap();
            let name = rel.file_name().unwrap().to_string_lossy();
            // The binary, and files that are unit tests only.
            if rel == Path::new("main.rs") || name.ends_with("tests.rs") {
                continue;
            }
            out.push((module_of(rel), code(&std::fs::read_to_string(&path).unwrap())));
        }
    }
}

/// Edges between sibling modules (`a -> b` when code in `a` or below uses `b` or below).
fn edges() -> BTreeSet<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges = BTreeSet::new();
    for (module, code) in &files {
        for r in references(code, module) {
            // The longest module the path names.
            let Some(target) = (1..=r.len())
                .rev()
                .map(|n| r[..n].to_vec())
                .find(|p| modules.contains(p))
            else {
                continue;
            };
            // First place the two paths part: those are the siblings.
            let common = module.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common < module.len() && common < target.len() {
                let parent = module[..common].join("::");
                let name = |m: &[String]| {
                    if parent.is_empty() {
                        m[common].clone()
                    } else {
                        format!("{parent}::{}", m[common])
                    }
                };
                edges.insert((name(module), name(&target)));
            }
        }
    }
    edges
}

#[test]
fn no_module_cycles() {
    let edges = edges();
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in &edges {
        graph.entry(a).or_default().push(b);
    }
    // A path from b back to a closes a cycle through the edge a -> b.
    fn reaches<'a>(g: &BTreeMap<&'a str, Vec<&'a str>>, from: &'a str, to: &str, seen: &mut BTreeSet<&'a str>) -> bool {
        if from == to {
            return true;
        }
        if !seen.insert(from) {
            return false;
        }
        g.get(from)
            .is_some_and(|next| next.iter().any(|n| reaches(g, n, to, seen)))
    }
    let cycles: Vec<String> = edges
        .iter()
        .filter(|(a, b)| reaches(&graph, b, a, &mut BTreeSet::new()))
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect();
    assert!(cycles.is_empty(), "module cycles through: {cycles:?}");
}

#[test]
fn layers_only_look_down() {
    // What each top-level module may use; `error`, `input` (file reading) and the macros are below
    // everything.
    let allowed: &[(&str, &[&str])] = &[
        ("gpu", &[]),
        ("kernels", &["gpu"]),
        ("tokenizer", &[]),
        ("model", &["gpu", "kernels", "tokenizer"]),
    ];
    let below_all = [
        "error",
        "input",
        "wgsl_struct",
        "wgsl_bindings",
        "wgsl_consts",
        "wgsl_overrides",
    ];
    let mut bad = Vec::new();
    for (a, b) in edges() {
        if a.contains("::") || below_all.contains(&b.as_str()) {
            continue;
        }
        if let Some((_, ok)) = allowed.iter().find(|(m, _)| *m == a) {
            if !ok.contains(&b.as_str()) {
                bad.push(format!("{a} -> {b}"));
            }
        }
    }
    assert!(bad.is_empty(), "layers used upwards: {bad:?}");
}
