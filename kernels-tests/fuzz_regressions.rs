//! Inputs the fuzzers (`fuzz/`, cargo-fuzz) once crashed on, replayed through the same entry
//! points as the fuzz targets: each must now end in a value or an error. Drop a new crash
//! (`fuzz/artifacts/<target>/crash-*`) into `kernels-tests/fuzz-data/<target>/` under a name that
//! says what it was. No GPU needed.

use std::path::PathBuf;

#[path = "../fuzz/entry.rs"]
mod entry;
use entry::chat_template;

/// The saved inputs of one fuzz target: (file name, bytes).
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("kernels-tests/fuzz-data")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn saved_fuzz_inputs_end_in_a_value_or_an_error() {
    for (target, run) in [
        ("gguf", entry::gguf as fn(&[u8])),
        ("safetensors_header", entry::safetensors_header),
        ("config", entry::config),
    ] {
        for (name, data) in inputs(target) {
            eprintln!("{target}/{name}");
            run(&data);
        }
    }
    for (name, data) in inputs("chat_template") {
        eprintln!(
            "chat_template/{name}: {:?}",
            chat_template(&data).err().map(|e| e.to_string())
        );
    }
}

/// chat_template/namespace-cycle: `{% set ns.n = ns %}` made a namespace that contains itself,
/// which minijinja follows without end when it prints or serialises it: a stack overflow that
/// aborts the process (no fuel or output cap stops it). Such templates are refused before they
/// run, whichever way the namespace escapes; real templates, which only use its attributes, run.
#[test]
fn a_namespace_inside_itself_is_refused() {
    let (_, crash) = inputs("chat_template")
        .into_iter()
        .find(|(name, _)| name == "namespace-cycle")
        .unwrap();
    let e = chat_template(&crash).unwrap_err().to_string();
    assert!(e.contains("namespace ns") && e.contains("line 1"), "{e}");
    for t in [
        "{% set ns = namespace() %}{% set ns.n = ns %}{{ ns }}",
        "{% set ns = namespace() %}{% set l = [ns] %}{% set ns.n = l %}{{ ns|tojson }}",
        "{% set a = namespace() %}{% set b = namespace(x=a) %}{% set a.y = b.x %}{{ a == a }}",
        "{% set a = namespace() %}{% set a.x = namespace() %}{% set c = a.x %}{% set c.y = a %}{{ a }}",
        "{% set ns = namespace() %}{% macro m(x) %}{% set ns.n = x %}{% endmacro %}{{ m(ns) }}{{ ns }}",
        "{% set f = namespace %}{% set ns = f() %}{% set ns.n = ns %}{{ ns }}",
    ] {
        let e = chat_template(t.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("namespace"), "{t}: {e}");
    }
    let ok = "{% set ns = namespace(n=0, last='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}\
              {% set ns.last = m.content %}{% endfor %}{{ ns.n }} {{ ns.last }}";
    assert_eq!(chat_template(format!("{ok}\0a\0b").as_bytes()).unwrap(), "2 b");
}
