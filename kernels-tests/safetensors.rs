//! The safetensors header reader (`wgmoe::internals::model::safetensors::read_header`): it agrees with the
//! safetensors crate on every fixture, and every malformed header (lengths, JSON, dtypes, shapes,
//! offsets, overlaps, gaps, trailing bytes, duplicate names) is an error in wgmoe's words naming
//! the file and the tensor, found without allocating what the header claims. No GPU needed.

mod common;
use common::fixtures::fixture;
use safetensors::{Dtype, SafeTensors};
use wgmoe::internals::model::safetensors::{read_header, HeaderTensor, Safetensors, MAX_HEADER_BYTES};
use wgmoe::internals::model::source::{SrcDType, TensorSource};

const FILE: &str = "bad.safetensors";

/// A file from a header (JSON text) and a data section.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

/// `read_header`'s error for `bytes`, required to name the file and each of `parts`, and none of
/// the safetensors crate's error names.
fn err(label: &str, bytes: &[u8], parts: &[&str]) -> String {
    let msg = read_header(bytes, FILE)
        .err()
        .unwrap_or_else(|| panic!("{label}: a bad header was accepted"))
        .to_string();
    eprintln!("{label}: {msg}");
    assert!(msg.contains(FILE), "{label}: the error does not name the file: {msg}");
    for p in parts {
        assert!(msg.contains(p), "{label}: the error does not mention {p:?}: {msg}");
    }
    for internal in [
        "InvalidHeader",
        "HeaderTooLarge",
        "MetadataIncompleteBuffer",
        "TensorInvalidInfo",
    ] {
        assert!(!msg.contains(internal), "{label}: {msg}");
    }
    msg
}

#[test]
fn fixture_headers_match_the_safetensors_crate() {
    let mut files = 0;
    for dir in std::fs::read_dir(fixture("llama").parent().unwrap()).unwrap() {
        let path = dir.unwrap().path().join("model.safetensors");
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let ours = read_header(&bytes, &path.display().to_string()).unwrap();
        let (n, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let theirs = meta.tensors();
        assert_eq!(ours.len(), theirs.len(), "{}", path.display());
        for t in &ours {
            let info = theirs[&t.name];
            assert_eq!(t.shape, info.shape, "{}", t.name);
            assert_eq!(
                (t.start, t.end),
                (8 + n + info.data_offsets.0, 8 + n + info.data_offsets.1)
            );
            let dtype = match info.dtype {
                Dtype::F32 => SrcDType::F32,
                Dtype::F16 => SrcDType::F16,
                Dtype::BF16 => SrcDType::BF16,
                other => SrcDType::Other(format!("{other:?}")),
            };
            assert_eq!(t.dtype, dtype, "{}", t.name);
        }
        files += 1;
    }
    assert!(files >= 10, "found only {files} fixture checkpoints");

    // Every dtype the format has, the metadata entry skipped (whatever its values), an empty file.
    let h = r#"{"__metadata__":{"format":"pt","n":1},"a":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]},
        "b":{"dtype":"F8_E8M0","shape":[],"data_offsets":[3,4]},"c":{"dtype":"C64","shape":[1],"data_offsets":[4,12]}}"#;
    let t = read_header(&file(h, &[0; 12]), FILE).unwrap();
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        t[1],
        HeaderTensor {
            name: "b".into(),
            dtype: SrcDType::Other("F8_E8M0".into()),
            shape: vec![],
            start: 8 + h.len() + 3,
            end: 8 + h.len() + 4,
        }
    );
    assert!(read_header(&file("{}", &[]), FILE).unwrap().is_empty());
}

#[test]
fn bad_lengths_and_json_are_errors_naming_the_file() {
    err("short", &[1, 0, 0], &["shorter than the 8-byte header length"]);
    for n in [u64::MAX, MAX_HEADER_BYTES as u64 + 1] {
        let mut b = n.to_le_bytes().to_vec();
        b.extend(b"{}");
        err("huge-len", &b, &["over the 100000000-byte limit"]);
    }
    let mut b = 1000u64.to_le_bytes().to_vec();
    b.extend(b"{}");
    err(
        "past-end",
        &b,
        &["1000-byte header runs past the end of the 10-byte file"],
    );
    let mut b = 4u64.to_le_bytes().to_vec();
    b.extend([b'{', 0xff, 0xfe, b'}']);
    err("utf8", &b, &["not UTF-8"]);
    err("not-json", &file("hello", &[]), &["not a JSON object of tensors"]);
    err("array", &file("[1, 2]", &[]), &["not a JSON object of tensors"]);
    err("trailing-json", &file("{} {}", &[]), &["not a JSON object of tensors"]);
    // Deep nesting: skipped without recursion where it is ignored, refused where a value is read.
    let deep = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let h = format!(r#"{{"__metadata__":{},"w":{{"x":{}}}}}"#, deep(1 << 20), deep(1 << 20));
    let msg = read_header(&file(&h, &[]), FILE).err().unwrap().to_string();
    assert!(msg.contains("missing field `dtype`"), "{msg}");
    let h = format!(r#"{{"w":{{"shape":{}}}}}"#, deep(1 << 20));
    err("nested", &file(&h, &[]), &["tensor w, field \"shape\""]);
}

#[test]
fn bad_tensor_entries_are_errors_naming_the_tensor() {
    // label | the entry of tensor w.weight | data bytes | what the error says
    const ENTRIES: &str = r#"
        dtype | {"dtype":"Q4","shape":[2],"data_offsets":[0,2]} | 2 | unknown dtype "Q4"
        no-dtype | {"shape":[2],"data_offsets":[0,8]} | 8 | missing field `dtype`
        dup-field | {"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]} | 8 | "dtype": appears twice
        shape-type | {"dtype":"F32","shape":[-2],"data_offsets":[0,8]} | 8 | "shape"
        offsets | {"dtype":"F32","shape":[2],"data_offsets":[0]} | 8 | "data_offsets"
        size | {"dtype":"F32","shape":[2,3],"data_offsets":[0,20]} | 20 | make 24 bytes but data_offsets hold 20
        backwards | {"dtype":"F32","shape":[0],"data_offsets":[8,0]} | 8 | ends before it starts
        past-data | {"dtype":"F32","shape":[4],"data_offsets":[0,16]} | 8 | runs past the end of the 8-byte data
        overflow | {"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]} | 8 | overflows
        bits | {"dtype":"F4","shape":[3],"data_offsets":[0,2]} | 2 | 12 bits, not a whole number of bytes
        rank | {"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]} | 4 | more than 16 dimensions"#;
    for row in ENTRIES.trim().lines() {
        let [label, entry, data, want] = row.split(" | ").map(str::trim).collect::<Vec<_>>()[..] else {
            panic!("{row}")
        };
        let bytes = file(&format!(r#"{{"w.weight":{entry}}}"#), &vec![0; data.parse().unwrap()]);
        err(label, &bytes, &["w.weight", want]);
    }

    let two = |a: [u64; 2], b: [u64; 2], data: usize| {
        let h = format!(
            r#"{{"a.weight":{{"dtype":"F32","shape":[2],"data_offsets":{a:?}}},"b.weight":{{"dtype":"F32","shape":[2],"data_offsets":{b:?}}}}}"#
        );
        file(&h, &vec![0; data])
    };
    assert_eq!(
        read_header(&two([8, 16], [0, 8], 16), FILE).unwrap().len(),
        2,
        "any order"
    );
    err(
        "overlap",
        &two([0, 8], [4, 12], 16),
        &["a.weight", "b.weight", "overlap"],
    );
    err("same", &two([0, 8], [0, 8], 16), &["a.weight", "b.weight", "overlap"]);
    err(
        "gap",
        &two([0, 8], [12, 20], 20),
        &["4 bytes after tensor a.weight", "b.weight"],
    );
    err(
        "gap-first",
        &two([4, 12], [12, 20], 20),
        &["4 bytes at the start", "a.weight"],
    );
    err(
        "trailing",
        &two([0, 8], [8, 16], 24),
        &["8 bytes after the last tensor b.weight"],
    );
    err("trailing-empty", &file("{}", &[1]), &["1 bytes after the last tensor"]);
    let dup = r#"{"a.weight":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a.weight":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    err("dup", &file(dup, &[0, 0]), &["tensor a.weight", "appears twice"]);
    let dup = r#"{"__metadata__":{},"__metadata__":{}}"#;
    err("dup-meta", &file(dup, &[]), &["__metadata__", "appears twice"]);
}

/// A huge header of tiny entries is read in about linear time and memory (no quadratic work),
/// and a forged length never allocates: these return at once.
#[test]
fn large_headers_stay_cheap() {
    let n = 200_000;
    let mut h = String::from("{");
    for i in 0..n {
        h.push_str(&format!(
            r#""t{i}":{{"dtype":"U8","shape":[1],"data_offsets":[{i},{}]}},"#,
            i + 1
        ));
    }
    h.pop();
    h.push('}');
    let t0 = std::time::Instant::now();
    assert_eq!(read_header(&file(&h, &vec![0; n]), FILE).unwrap().len(), n);
    assert!(t0.elapsed().as_secs() < 5, "{:?}", t0.elapsed());
}

/// Through the folder loader: a bad header names the file, a tensor in two shards is refused.
#[test]
fn bad_checkpoints_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("wgmoe-safetensors-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(
        &path,
        file(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, &[0; 8]),
    )
    .unwrap();
    let msg = Safetensors::open_dir(&dir).err().unwrap().to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("not a JSON object"),
        "{msg}"
    );

    let one = |name: &str| {
        file(
            &format!(r#"{{"{name}":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#),
            &[0; 4],
        )
    };
    std::fs::remove_file(&path).unwrap();
    std::fs::write(dir.join("a.safetensors"), one("x")).unwrap();
    std::fs::write(dir.join("b.safetensors"), one("x")).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map":{"x":"a.safetensors","y":"b.safetensors"}}"#,
    )
    .unwrap();
    let msg = Safetensors::open_dir(&dir).err().unwrap().to_string();
    assert!(
        msg.contains("b.safetensors") && msg.contains("a.safetensors") && msg.contains("tensor x"),
        "{msg}"
    );
    std::fs::write(dir.join("b.safetensors"), one("y")).unwrap();
    let st = Safetensors::open_dir(&dir).unwrap();
    assert!(st.contains("x") && st.contains("y"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What every fixture's tensors take in its file, as the safetensors crate reads it, is what the
/// source reports and what a model loaded from it prints beside its GPU bytes.
#[test]
fn stored_bytes_are_the_files_tensor_bytes() {
    let root = fixture("llama").parent().unwrap().to_path_buf();
    let mut checked = 0;
    for dir in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        let Ok(bytes) = std::fs::read(dir.join("model.safetensors")) else {
            continue;
        };
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let want: u64 = st.tensors().iter().map(|(_, v)| v.data().len() as u64).sum();
        let src = Safetensors::open_dir(&dir).unwrap();
        assert_eq!(src.stored_bytes(), Some(want), "{}", dir.display());
        if dir.ends_with("llama") {
            let model = wgmoe::internals::model::Model::load(common::portable_context(), &dir, &|_, _| {}).unwrap();
            assert_eq!(model.file_tensor_bytes, Some(want));
            // f32 fixture weights stay f32: nothing is widened, rows are padded at most.
            assert!(
                model.weights.gpu_bytes() >= want / 2,
                "{} GPU bytes",
                model.weights.gpu_bytes()
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked} fixtures");
}
