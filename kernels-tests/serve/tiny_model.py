#!/usr/bin/env python3
"""Build a tiny, fast MoE model folder for the `wgmoe serve` tests.

usage: tiny_model.py OUT_DIR [--no-verify]
  OUT_DIR      created if missing; gets config.json, model.safetensors, tokenizer.json and
               tokenizer_config.json
  --no-verify  skip running `wgmoe run` / `wgmoe tokenize` on the result
env: WGMOE_BIN  the wgmoe binary that verifies the folder (default: the newest of
                target/release/wgmoe and target/debug/wgmoe, else wgmoe on PATH; with none,
                the folder is written but not verified)

The weights are the random Qwen3-MoE fixture (kernels-tests/fixtures/qwen3_moe: vocab 128,
hidden 64, 3 layers, 256 positions). The tokenizer is written here by hand in the Hugging Face
`tokenizers` JSON format: a byte-level BPE of exactly 128 ids --
  0, 1       <|im_start|>, <|im_end|> (special added tokens; <|im_end|> is the EOS)
  2..98      single bytes in GPT-2 byte-level form: printable ASCII '!'..'~' as themselves,
             space 'Ġ', newline 'Ċ', tab 'ĉ' (other bytes are not in the vocabulary)
  99..127    merges: common English pairs and a few JSON ones
and tokenizer_config.json carries a ChatML chat template that also lists `tools` (Qwen/Hermes
style). Every prompt the serve tests send is plain ASCII, which this vocabulary covers; the
verification checks that such text round-trips through `wgmoe tokenize`.
Exits 0 on success, 1 with a message otherwise.
"""
import json
import os
import shutil
import string
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(ROOT, "kernels-tests", "fixtures", "qwen3_moe")
VOCAB_SIZE = 128

SPECIAL = ["<|im_start|>", "<|im_end|>"]

# GPT-2's byte-level alphabet for the bytes this vocabulary keeps: printable ASCII maps to
# itself, and the whitespace bytes to the characters 256 + their rank among the bytes GPT-2
# remaps (space 0x20 -> U+0120 'Ġ', newline 0x0A -> U+010A 'Ċ', tab 0x09 -> U+0109 'ĉ').
BYTE_TOKENS = [chr(b) for b in range(ord("!"), ord("~") + 1)] + ["Ġ", "Ċ", "ĉ"]

# Merges, in priority order. Each pair's parts must already be tokens when it is listed.
MERGES = [
    # Common English pairs.
    ("Ġ", "t"), ("h", "e"), ("i", "n"), ("e", "r"), ("a", "n"), ("o", "n"), ("r", "e"),
    ("Ġ", "a"), ("a", "t"), ("e", "n"), ("o", "r"), ("Ġ", "w"), ("Ġt", "he"),
    # JSON (`{"name": "x", "type": "string"}`): tool definitions and structured replies are
    # made of these, and a tool list has to fit the fixture's 256 positions.
    ('"', ":"), ("Ġ", '"'), ('"', ","), ("{", '"'), ("Ġ", '{"'), ("}", "}"),
    ("t", "y"), ("p", "e"), ("ty", "pe"), ("m", "e"), ("a", "me"), ("n", "ame"),
    ("s", "t"), ("st", "r"), ("in", "g"), ("str", "ing"),
]

# ChatML. With `tools`, a system block lists each tool's function JSON (name, description,
# parameters) inside <tools></tools>, as Hermes / Qwen templates do, but without their
# paragraph on how to call (<tool_call>{"name": ..., "arguments": ...}</tool_call>): the fixture
# holds only 256 positions, a random-weight model reads no instructions, and a forced call is
# shaped by constrained decoding anyway. Tool results go back as a user turn wrapped in
# <tool_response>, as in Qwen's template.
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n' }}{%- endif %}"
    "{{- '<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool.function | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Text that must tokenize losslessly: every ASCII character the tests may send (all of
# printable ASCII, space, newline and tab; not CR, VT or FF) and prompts like theirs.
ROUND_TRIP = [
    "hello world",
    "".join(c for c in string.printable if c not in "\r\x0b\x0c"),
    "What is the capital of France?",
    'Reply in JSON: {"name": "Oslo", "population": 709037}\n\tTabs & symbols',
    "Q: once upon a time a tiny model told a story about the sea.",
]


def vocab():
    """token -> id for all 128 ids, and the merges as pairs."""
    tokens = SPECIAL + BYTE_TOKENS
    for a, b in MERGES:
        assert a in tokens and b in tokens, f"merge {a!r} {b!r}: a part is not a token yet"
        assert a + b not in tokens, f"merge {a!r} {b!r}: {a + b!r} is already a token"
        tokens.append(a + b)
    assert len(tokens) == VOCAB_SIZE, f"{len(tokens)} tokens, want exactly {VOCAB_SIZE}"
    assert len(set(tokens)) == VOCAB_SIZE, "duplicate tokens"
    return {t: i for i, t in enumerate(tokens)}, [[a, b] for a, b in MERGES]


def tokenizer_json():
    ids, merges = vocab()
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": ids[t],
                "content": t,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for t in SPECIAL
        ],
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": ids,
            "merges": merges,
        },
    }


def tokenizer_config():
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": None,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 256,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
    }


def build(out_dir):
    with open(os.path.join(FIXTURE, "config.json")) as f:
        config = json.load(f)
    assert config["vocab_size"] == VOCAB_SIZE, f"the fixture's vocab_size is {config['vocab_size']}, want {VOCAB_SIZE}"
    os.makedirs(out_dir, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(os.path.join(FIXTURE, name), os.path.join(out_dir, name))
    for name, obj in (("tokenizer.json", tokenizer_json()), ("tokenizer_config.json", tokenizer_config())):
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def wgmoe_bin():
    """WGMOE_BIN, else the newest of target/{release,debug}/wgmoe, else wgmoe on PATH; None if
    there is none."""
    if os.environ.get("WGMOE_BIN"):
        exe = os.environ["WGMOE_BIN"]
        assert os.access(exe, os.X_OK), f"WGMOE_BIN={exe} is not an executable"
        return exe
    built = [os.path.join(ROOT, "target", p, "wgmoe") for p in ("release", "debug")]
    built = [b for b in built if os.access(b, os.X_OK)]
    if built:
        return max(built, key=os.path.getmtime)
    return shutil.which("wgmoe")


def wgmoe(exe, *args, timeout=300):
    env = dict(os.environ)
    env.setdefault("XDG_RUNTIME_DIR", "/tmp")
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"`wgmoe {' '.join(args)}` exited {p.returncode}:\n{p.stderr[-2000:]}"
    return p.stdout


def verify(out_dir, exe):
    """The folder tokenizes (losslessly, ids as planned) and generates with `exe`."""
    ids, _ = vocab()
    by_id = {i: t for t, i in ids.items()}
    gpt2 = {"Ġ": " ", "Ċ": "\n", "ĉ": "\t"}

    def detok(seq):
        return "".join(gpt2.get(c, c) for i in seq for c in by_id[i])

    for text in ROUND_TRIP:
        seq = json.loads(wgmoe(exe, "tokenize", "--model", out_dir, "--text", text))
        assert all(0 <= i < VOCAB_SIZE for i in seq), f"ids out of range for {text!r}: {seq}"
        assert detok(seq) == text, f"{text!r} does not round-trip (unknown characters dropped?): {seq}"
    hw = json.loads(wgmoe(exe, "tokenize", "--model", out_dir, "--text", "hello world"))
    # "hello" = he + l + l + o; " world" = Ġw + or + l + d.
    want = [ids["he"], ids["l"], ids["l"], ids["o"], ids["Ġw"], ids["or"], ids["l"], ids["d"]]
    assert hw == want, f"`hello world` tokenized as {hw}, want {want}"
    chat = json.loads(wgmoe(exe, "tokenize", "--model", out_dir, "--chat", "--text", "hello"))
    assert chat[0] == ids["<|im_start|>"] and chat.count(ids["<|im_end|>"]) == 1, f"chat ids {chat}"
    out = wgmoe(exe, "run", "--model", out_dir, "--prompt", "hello", "-n", "8", "--temperature", "0")
    assert out.strip(), "`wgmoe run` on the tiny model generated no text"
    print(f"wgmoe run on the tiny model: {out.strip()!r}")


def main():
    args = [a for a in sys.argv[1:] if a != "--no-verify"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out_dir = os.path.abspath(args[0])
    try:
        build(out_dir)
        if "--no-verify" not in sys.argv[1:]:
            exe = wgmoe_bin()
            if exe:
                verify(out_dir, exe)
            else:
                print("tiny_model.py: no wgmoe binary (set WGMOE_BIN): not verified", file=sys.stderr)
    except AssertionError as e:
        print(f"tiny_model.py: FAIL: {e}", file=sys.stderr)
        return 1
    print(f"tiny_model.py: ok: {out_dir} (vocab {VOCAB_SIZE}, {len(MERGES)} merges, chat template with tools)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
