//! Hostile files, deterministically: thousands of structured mutations of the committed fixtures
//! (the tiny GGUF, a safetensors checkpoint, several config.json files, a tokenizer and its chat
//! template) go through the public loading API: `checkpoint::open`, `Model::from_source`, a
//! session's `forward`, `tokenizer_for`, `encode` and `apply_chat_template`.
//!
//! Every case must end, within its time bound, in one of: an error (the loader refused the file,
//! or the model's logits were not finite: `Error::NonFinite`), or finite logits. Never a panic (a
//! panic the library's last-resort guard caught counts as one), never a hang, never an allocation
//! past the bound. The mutations are the classes malformed files come in: truncations, byte flips
//! in headers, every count, length, type, dimension and offset field of the GGUF set to edge
//! values, the safetensors header's dtypes, shapes and offsets, and every config.json value
//! replaced by an edge value or a value of another type. The test prints how many cases ended how.
//! Structural damage (a count, length, offset, shape or cut) must always be refused: loading it
//! would mean reading shifted bytes as weights.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wgmoe::internals::gpu::Context;
use wgmoe::internals::model::plan::LogitRows;
use wgmoe::internals::model::{checkpoint, KvDtype, Model};

/// Counts the bytes the test process holds and the most it held.
struct Counting;
static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            PEAK.fetch_max(
                HELD.fetch_add(l.size(), Ordering::Relaxed) + l.size(),
                Ordering::Relaxed,
            );
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        HELD.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new > l.size() {
                let grow = new - l.size();
                PEAK.fetch_max(HELD.fetch_add(grow, Ordering::Relaxed) + grow, Ordering::Relaxed);
            } else {
                HELD.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The most one case may allocate on the host: the fixtures are under 1 MiB, so anything near this
/// is a count or length believed from the file.
const ALLOC_BOUND: usize = 256 << 20;
/// The most one case may take (lavapipe, two busy cores; a load and a forward take ~0.1 s).
const TIME_BOUND: Duration = Duration::from_secs(20);
/// What the library's last-resort guard says when it caught a panic.
const PANIC_SIGN: &str = "failed inside a library wgmoe uses";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// The loader (or tokenizer) refused the input with an error.
    Refused,
    /// It loaded, and the model's logits were reported as not finite.
    NonFinite,
    /// It loaded and ran: finite logits (or, for tokenizers, ids and a rendered chat).
    Ran,
}

/// Tallies per mutation class, and every failure of the invariants.
#[derive(Default)]
struct Report {
    outcomes: BTreeMap<(String, Outcome), usize>,
    /// The cases that loaded (finite or not), by class: structural damage must never get there.
    loaded: BTreeMap<String, Vec<String>>,
    failures: Vec<String>,
    cases: usize,
}

impl Report {
    /// The unmutated input of `class` loaded and ran: the mutations start from a working file.
    fn assert_ran(&self, class: &str) {
        assert_eq!(
            self.outcomes.get(&(class.to_string(), Outcome::Ran)),
            Some(&1),
            "{class}: {:?}",
            self.failures
        );
    }

    fn add(&mut self, class: &str, case: &str, r: Result<Outcome, String>) {
        self.cases += 1;
        match r {
            Ok(o) => {
                *self.outcomes.entry((class.to_string(), o)).or_default() += 1;
                if o != Outcome::Refused {
                    self.loaded.entry(class.to_string()).or_default().push(case.to_string());
                }
            }
            Err(e) => self.failures.push(format!("{class} / {case}: {e}")),
        }
    }
}

/// Runs one case on its own thread: a bounded wait, the allocation peak, and panics kept apart.
fn run(f: impl FnOnce() -> wgmoe::Result<Outcome> + Send + 'static) -> Result<Outcome, String> {
    let held = HELD.load(Ordering::Relaxed);
    PEAK.store(held, Ordering::Relaxed);
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let r = match rx.recv_timeout(TIME_BOUND) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            return Err(format!("still running after {TIME_BOUND:?}"));
        }
        Err(_) => {
            let _ = handle.join();
            return Err("panicked".into());
        }
    };
    let _ = handle.join();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(held);
    if peak > ALLOC_BOUND {
        return Err(format!("allocated {} MiB", peak >> 20));
    }
    if start.elapsed() > TIME_BOUND {
        return Err(format!("took {:?}", start.elapsed()));
    }
    match r {
        Ok(o) => Ok(o),
        Err(wgmoe::Error::NonFinite { .. }) => Ok(Outcome::NonFinite),
        Err(e) if e.to_string().contains(PANIC_SIGN) => Err(format!("a panic was caught: {e}")),
        Err(_) => Ok(Outcome::Refused),
    }
}

/// Loads `path` (a model folder or a GGUF file) and runs `prompt` through it.
fn load_and_run(ctx: Context, path: PathBuf, prompt: Vec<u32>) -> wgmoe::Result<Outcome> {
    let (config, src) = checkpoint::open(&path)?;
    let model = Model::from_source(ctx, config, src.as_ref(), &|_, _| {})?;
    let mut sess = model.try_session(prompt.len().max(8), KvDtype::F32)?;
    sess.forward(&prompt, LogitRows::All)?;
    Ok(Outcome::Ran)
}

/// A folder per test run, emptied at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wgmoe-mutations-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF: every header field by kind.

/// Where the numeric fields of a GGUF's header are: (offset, width in bytes, kind); and where the
/// header ends.
fn gguf_fields(b: &[u8]) -> (Vec<(usize, usize, &'static str)>, usize) {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
    // A value of GGUF type `t` at `o`: its fields, then the offset after it (the first few strings
    // of an array only: a vocabulary has thousands).
    fn value(b: &[u8], o: usize, t: u32, f: &mut Vec<(usize, usize, &'static str)>, note: bool) -> usize {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap()) as usize;
        match t {
            0 | 1 | 7 => o + 1,
            2 | 3 => o + 2,
            4..=6 => o + 4,
            10..=12 => o + 8,
            8 => {
                if note {
                    f.push((o, 8, "string length"));
                }
                o + 8 + u64_at(o)
            }
            9 => {
                let et = u32_at(o);
                if note {
                    f.push((o, 4, "value type"));
                    f.push((o + 4, 8, "array length"));
                }
                let mut at = o + 12;
                for i in 0..u64_at(o + 4) {
                    at = value(b, at, et, f, note && i < 4);
                }
                at
            }
            _ => panic!("value type {t} at {o}"),
        }
    }
    let mut f = vec![(8, 8, "tensor count"), (16, 8, "kv count")];
    let (tensors, kvs) = (u64_at(8), u64_at(16));
    let mut o = 24;
    for _ in 0..kvs {
        o = value(b, o, 8, &mut f, true);
        f.push((o, 4, "value type"));
        let t = u32_at(o);
        o = value(b, o + 4, t, &mut f, true);
    }
    for _ in 0..tensors {
        o = value(b, o, 8, &mut f, true);
        f.push((o, 4, "dimension count"));
        let n = u32_at(o) as usize;
        o += 4;
        for _ in 0..n {
            f.push((o, 8, "dimension"));
            o += 8;
        }
        f.push((o, 4, "tensor type"));
        f.push((o + 4, 8, "tensor offset"));
        o += 12;
    }
    (f, o)
}

fn edge_values(width: usize, v: u64, file_len: u64) -> Vec<u64> {
    let mut out = vec![
        0,
        1,
        2,
        3,
        7,
        31,
        v.wrapping_add(1),
        v.wrapping_sub(1),
        v.wrapping_mul(2),
    ];
    if width == 4 {
        out.extend([255, 0x7fff_ffff, u32::MAX as u64]);
    } else {
        out.extend([file_len, 1 << 31, 1 << 32, 1 << 62, u64::MAX]);
    }
    out.sort_unstable();
    out.dedup();
    out.retain(|&x| x != v);
    out
}

#[test]
fn hostile_files_are_errors_or_run() {
    let ctx = common::portable_context();
    let mut report = Report::default();
    gguf_cases(&ctx, &mut report);
    safetensors_cases(&ctx, &mut report);
    config_cases(&ctx, &mut report);
    tokenizer_cases(&mut report);

    eprintln!("{} cases:", report.cases);
    for ((class, outcome), n) in &report.outcomes {
        eprintln!("  {class:<28} {outcome:?}: {n}");
    }
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}",
        report.failures.len(),
        report.failures.join("\n")
    );
    for class in STRUCTURAL {
        let loaded = report.loaded.get(*class).map(Vec::as_slice).unwrap_or_default();
        assert!(loaded.is_empty(), "{class}: structural damage loaded: {loaded:?}");
    }
    // A tensor type may only be swapped for one of the same size and block: F16 (1) <-> BF16 (30).
    for case in report
        .loaded
        .get("gguf tensor type")
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (from, to) = case.rsplit_once(": ").unwrap().1.split_once(" -> ").unwrap();
        let sixteen = |t: &str| t == "1" || t == "30";
        assert!(
            sixteen(from) && sixteen(to),
            "a tensor type of another size loaded: {case}"
        );
    }
}

/// Mutation classes that break the file's structure (counts, lengths, offsets, shapes, cuts): the
/// format checks must refuse every one, since a reader that got past them would read shifted bytes.
const STRUCTURAL: &[&str] = &[
    "gguf array length",
    "gguf dimension",
    "gguf dimension count",
    "gguf kv count",
    "gguf string length",
    "gguf tensor count",
    "gguf tensor offset",
    "gguf truncation",
    "safetensors header length",
    "safetensors data_offsets",
    "safetensors shape",
    "safetensors truncation",
];

fn gguf_cases(ctx: &Context, report: &mut Report) {
    let original = std::fs::read(common::fixtures::fixture("../gguf-data/tiny.gguf")).unwrap();
    let scratch = Scratch::new("gguf");
    let path = scratch.0.join("m.gguf");
    let prompt: Vec<u32> = (1..=12).collect();
    let case = |report: &mut Report, class: &str, name: String, bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let (ctx, path, prompt) = (ctx.clone(), path.clone(), prompt.clone());
        report.add(class, &name, run(move || load_and_run(ctx, path, prompt)));
    };
    // The unmutated file runs.
    case(report, "gguf original", "as committed".into(), &original);
    report.assert_ran("gguf original");

    let (fields, header_end) = gguf_fields(&original);
    let len = original.len() as u64;
    for (at, width, kind) in fields {
        let v = if width == 4 {
            u32::from_le_bytes(original[at..at + 4].try_into().unwrap()) as u64
        } else {
            u64::from_le_bytes(original[at..at + 8].try_into().unwrap())
        };
        for x in edge_values(width, v, len) {
            let mut b = original.clone();
            b[at..at + width].copy_from_slice(&x.to_le_bytes()[..width]);
            case(
                report,
                &format!("gguf {kind}"),
                format!("{kind} at {at}: {v} -> {x}"),
                &b,
            );
        }
    }
    let mut rng = common::Rng::new(0x5EED_6701);
    for _ in 0..300 {
        let mut b = original.clone();
        let at = rng.below(header_end);
        b[at] ^= 1 << rng.below(8);
        case(report, "gguf header byte flip", format!("bit flip at {at}"), &b);
    }
    for _ in 0..60 {
        let mut b = original.clone();
        let at = header_end + rng.below(original.len() - header_end);
        b[at] ^= 1 << rng.below(8);
        case(report, "gguf data byte flip", format!("bit flip at {at}"), &b);
    }
    for i in 0..64 {
        let cut = if i < 48 {
            i * header_end / 48
        } else {
            header_end + (i - 48) * (original.len() - header_end) / 16
        };
        case(report, "gguf truncation", format!("cut at {cut}"), &original[..cut]);
    }
}

// ---------------------------------------------------------------------------------------------
// safetensors: the header's length, dtypes, shapes and offsets.

fn safetensors_cases(ctx: &Context, report: &mut Report) {
    let src = common::fixtures::fixture("llama");
    let original = std::fs::read(src.join("model.safetensors")).unwrap();
    let scratch = Scratch::new("safetensors");
    for f in ["config.json", "generation_config.json"] {
        std::fs::copy(src.join(f), scratch.0.join(f)).unwrap();
    }
    let prompt = common::fixtures::reference("llama").prompt;
    let case = |report: &mut Report, class: &str, name: String, bytes: &[u8]| {
        std::fs::write(scratch.0.join("model.safetensors"), bytes).unwrap();
        let (ctx, dir, prompt) = (ctx.clone(), scratch.0.clone(), prompt.clone());
        report.add(class, &name, run(move || load_and_run(ctx, dir, prompt)));
    };
    case(report, "safetensors original", "as committed".into(), &original);
    report.assert_ran("safetensors original");

    let n = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&original[8..8 + n]).unwrap();
    let data = &original[8 + n..];
    let with_header = |h: &serde_json::Map<String, serde_json::Value>| {
        let text = serde_json::to_vec(h).unwrap();
        let mut b = (text.len() as u64).to_le_bytes().to_vec();
        b.extend(text);
        b.extend_from_slice(data);
        b
    };
    for x in [
        0u64,
        1,
        2,
        n as u64 - 1,
        n as u64 + 1,
        original.len() as u64,
        1 << 40,
        u64::MAX,
    ] {
        let mut b = original.clone();
        b[..8].copy_from_slice(&x.to_le_bytes());
        case(report, "safetensors header length", format!("{n} -> {x}"), &b);
    }
    let names: Vec<String> = header.keys().filter(|k| *k != "__metadata__").cloned().collect();
    use serde_json::json;
    let replacements: [(&str, Vec<serde_json::Value>); 3] = [
        (
            "dtype",
            vec![
                json!("F16"),
                json!("BF16"),
                json!("I8"),
                json!("F64"),
                json!("X"),
                json!(5),
                json!(null),
            ],
        ),
        (
            "shape",
            vec![
                json!([]),
                json!([0]),
                json!([1]),
                json!([1u64 << 40]),
                json!([3, 5, 7]),
                json!(["a"]),
                json!(-1),
            ],
        ),
        (
            "data_offsets",
            vec![
                json!([0, 0]),
                json!([8, 4]),
                json!([0, 1u64 << 50]),
                json!([1]),
                json!([-4, 4]),
                json!("0"),
            ],
        ),
    ];
    for name in names.iter().step_by(2) {
        for (field, values) in &replacements {
            for v in values {
                let mut h = header.clone();
                h[name][*field] = v.clone();
                case(
                    report,
                    &format!("safetensors {field}"),
                    format!("{name}.{field} = {v}"),
                    &with_header(&h),
                );
            }
        }
        // The tensor's range moved by one element, onto its neighbour's.
        let mut h = header.clone();
        if let Some(o) = h[name]["data_offsets"].as_array().cloned() {
            let (a, b) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
            h[name]["data_offsets"] = json!([a + 4, b + 4]);
            case(
                report,
                "safetensors data_offsets",
                format!("{name} shifted"),
                &with_header(&h),
            );
        }
    }
    let mut rng = common::Rng::new(0x5EED_5AFE);
    for _ in 0..150 {
        let mut b = original.clone();
        let at = 8 + rng.below(n);
        b[at] ^= 1 << rng.below(8);
        case(report, "safetensors header byte flip", format!("bit flip at {at}"), &b);
    }
    for i in 0..24 {
        let cut = i * original.len() / 24;
        case(
            report,
            "safetensors truncation",
            format!("cut at {cut}"),
            &original[..cut],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// config.json: every value replaced.

fn config_cases(ctx: &Context, report: &mut Report) {
    use serde_json::json;
    let values = [
        json!(0),
        json!(-1),
        json!(1),
        json!(3),
        json!(1e30),
        json!(0.5),
        json!("x"),
        json!(null),
        json!([]),
        json!({}),
        json!(true),
    ];
    for name in ["llama", "qwen3_moe", "deepseek_v3", "gpt_oss"] {
        let src = common::fixtures::fixture(name);
        let scratch = Scratch::new(&format!("config-{name}"));
        for f in ["model.safetensors", "generation_config.json"] {
            std::fs::copy(src.join(f), scratch.0.join(f)).unwrap();
        }
        let original: serde_json::Value =
            serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
        let prompt = common::fixtures::reference(name).prompt;
        let case = |report: &mut Report, class: &str, label: String, config: &serde_json::Value| {
            std::fs::write(scratch.0.join("config.json"), config.to_string()).unwrap();
            let (ctx, dir, prompt) = (ctx.clone(), scratch.0.clone(), prompt.clone());
            report.add(class, &label, run(move || load_and_run(ctx, dir, prompt)));
        };
        // Every value of the config, and of its nested objects (rope_scaling), one at a time.
        let mut paths: Vec<Vec<String>> = Vec::new();
        for (k, v) in original.as_object().unwrap() {
            paths.push(vec![k.clone()]);
            if let Some(o) = v.as_object() {
                paths.extend(o.keys().map(|k2| vec![k.clone(), k2.clone()]));
            }
        }
        for path in paths {
            for v in &values {
                let mut c = original.clone();
                *value_at(&mut c, &path) = v.clone();
                case(report, "config value", format!("{name}: {} = {v}", path.join(".")), &c);
            }
            let mut c = original.clone();
            if let [k] = path.as_slice() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[path[0].as_str()].as_object_mut().unwrap().remove(&path[1]);
            }
            case(
                report,
                "config key removed",
                format!("{name}: {} removed", path.join(".")),
                &c,
            );
        }
    }
}

fn value_at<'a>(c: &'a mut serde_json::Value, path: &[String]) -> &'a mut serde_json::Value {
    path.iter().fold(c, |p, k| &mut p[k.as_str()])
}

// ---------------------------------------------------------------------------------------------
// The tokenizer and its chat template.

fn tokenizer_cases(report: &mut Report) {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-assets");
    let run_tokenizer = |tok: wgmoe::internals::tokenizer::Tokenizer| -> wgmoe::Result<Outcome> {
        let ids = tok.encode("Hello, world! 你好", true)?;
        tok.decode(&ids, false)?;
        if tok.has_chat_template() {
            tok.encode_chat(&[wgmoe::internals::tokenizer::Message::user("hi")], true)?;
        }
        Ok(Outcome::Ran)
    };
    // The chat template's text: one character replaced by template syntax, 300 times.
    let qwen3 = wgmoe::internals::model::tokenizer_for(&assets.join("qwen3")).unwrap();
    let template = qwen3.chat_template().unwrap().as_bytes().to_vec();
    let mut rng = common::Rng::new(0x5EED_70C0);
    for _ in 0..300 {
        let mut t = template.clone();
        let at = rng.below(t.len());
        t[at] = b"{}%#-+~()[]|'\"xn0 "[rng.below(18)];
        let tok = qwen3
            .clone()
            .with_chat_template(Some(String::from_utf8_lossy(&t).into_owned()), "the mutated template");
        report.add(
            "chat template byte",
            &format!("template byte {at}"),
            run(move || run_tokenizer(tok)),
        );
    }
    // tokenizer.json: truncated, and bits flipped in its first 64 KiB (the model and its settings).
    let original = std::fs::read(assets.join("olmoe/tokenizer.json")).unwrap();
    let scratch = Scratch::new("tokenizer");
    let case = |report: &mut Report, class: &str, name: String, bytes: &[u8]| {
        std::fs::write(scratch.0.join("tokenizer.json"), bytes).unwrap();
        let dir = scratch.0.clone();
        report.add(
            class,
            &name,
            run(move || run_tokenizer(wgmoe::internals::model::tokenizer_for(&dir)?)),
        );
    };
    case(report, "tokenizer original", "as committed".into(), &original);
    for i in 0..12 {
        let cut = i * original.len() / 12;
        case(
            report,
            "tokenizer.json truncation",
            format!("cut at {cut}"),
            &original[..cut],
        );
    }
    for _ in 0..24 {
        let mut b = original.clone();
        let at = rng.below(b.len().min(1 << 16));
        b[at] ^= 1 << rng.below(8);
        case(report, "tokenizer.json byte flip", format!("bit flip at {at}"), &b);
    }
}
