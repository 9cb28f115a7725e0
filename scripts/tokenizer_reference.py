#!/usr/bin/env python3
"""Expected token ids and chat-template strings for kernels-tests/tokenizer.rs.

Reads the real tokenizers that scripts/fetch_test_assets.sh puts under target/test-assets/ and the
corpus kernels-tests/tokenizer-data/corpus.json, and writes, next to the corpus:

  qwen3.json, olmoe.json  for every corpus string: ids from Python `tokenizers` without and with
                          special tokens (encode(text, add_special_tokens=...)), and the decode of the
                          plain ids with and without skip_special_tokens
  qwen3_chat.json         transformers' apply_chat_template(..., tokenize=False) for a few
                          conversations, and the ids of tokenize=True
  tojson.json             Python json.dumps of one value under the option sets transformers'
                          tojson filter accepts
  real_templates.json     transformers' render_jinja_template of one chat through each of the real
                          chat templates in target/test-assets/templates/ (the text, or the error)

Run from anywhere:  scripts/fetch_test_assets.sh && python3 scripts/tokenizer_reference.py
(made with tokenizers 0.23.3 and transformers 5.23.0).
"""

import json
import os
import sys

import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ASSETS = os.path.join(ROOT, "target", "test-assets")
DATA = os.path.join(ROOT, "kernels-tests", "tokenizer-data")

TOKENIZERS = {"qwen3": "qwen3", "olmoe": "olmoe"}  # output name -> asset folder

CONVERSATIONS = [
    {
        "name": "system_user_assistant_user",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Japan?"},
        ],
        "add_generation_prompt": True,
    },
    {
        "name": "system_user_assistant_user_no_prompt",
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Japan?"},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "single_user",
        "messages": [{"role": "user", "content": "Hello!"}],
        "add_generation_prompt": True,
    },
    {
        "name": "single_user_no_thinking",
        "messages": [{"role": "user", "content": "Hello!"}],
        "add_generation_prompt": True,
        "extra": {"enable_thinking": False},
    },
    {
        "name": "assistant_with_thinking_last",
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nSimple sum.\n</think>\n\n4"},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "thinking_history_dropped",
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nSimple sum.\n</think>\n\n4"},
            {"role": "user", "content": "Say it in 中文 😀, with  two spaces\nand a newline."},
        ],
        "add_generation_prompt": True,
    },
]


def main():
    with open(os.path.join(DATA, "corpus.json"), encoding="utf-8") as f:
        corpus = json.load(f)

    for name, folder in TOKENIZERS.items():
        path = os.path.join(ASSETS, folder, "tokenizer.json")
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run scripts/fetch_test_assets.sh first")
        tok = Tokenizer.from_file(path)
        cases = []
        for text in corpus:
            ids = tok.encode(text, add_special_tokens=False).ids
            cases.append(
                {
                    "ids": ids,
                    "ids_special": tok.encode(text, add_special_tokens=True).ids,
                    "decoded": tok.decode(ids, skip_special_tokens=False),
                    "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
                }
            )
        out = {
            "generator": f"scripts/tokenizer_reference.py, tokenizers {tokenizers.__version__}",
            "tokenizer": f"target/test-assets/{folder}/tokenizer.json",
            "cases": cases,
        }
        write(os.path.join(DATA, f"{name}.json"), out)

    hf = AutoTokenizer.from_pretrained(os.path.join(ASSETS, "qwen3"))
    chats = []
    for conv in CONVERSATIONS:
        extra = conv.get("extra", {})
        text = hf.apply_chat_template(
            conv["messages"], add_generation_prompt=conv["add_generation_prompt"], tokenize=False, **extra
        )
        ids = hf.apply_chat_template(
            conv["messages"], add_generation_prompt=conv["add_generation_prompt"], tokenize=True, **extra
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        chats.append({**conv, "extra": extra, "expected": text, "expected_ids": list(ids)})
    out = {
        "generator": f"scripts/tokenizer_reference.py, transformers {transformers.__version__}",
        "tokenizer": "target/test-assets/qwen3 (AutoTokenizer.from_pretrained)",
        "conversations": chats,
    }
    write(os.path.join(DATA, "qwen3_chat.json"), out)

    # transformers' tojson filter is json.dumps(x, ensure_ascii=False, indent=None, separators=None,
    # sort_keys=False); keys in sorted order so the Rust side can build the value from JSON.
    value = {"a": [1.5, "\u00e9<>&'\"\\\n\x01\U0001F600", None, True, 1e-05, 1e17, 7, -0.25], "b": 1, "c": {}, "d": []}
    option_sets = [
        {},
        {"indent": 2},
        {"indent": "\t", "sort_keys": True},
        {"ensure_ascii": True, "sort_keys": True, "separators": [",", ":"]},
    ]
    cases = []
    for opts in option_sets:
        kw = {"ensure_ascii": False, **opts}
        if "separators" in kw:
            kw["separators"] = tuple(kw["separators"])
        cases.append({"options": opts, "expected": json.dumps(value, **kw)})
    write(os.path.join(DATA, "tojson.json"), {"value": value, "cases": cases})

    # Real chat templates: one four-turn chat, the special tokens given as variables (as the Rust
    # test does), and a fixed date for the templates that print today's: `date_string` for those
    # that take it, and a pinned clock behind `strftime_now` for those that call it (the Rust test
    # puts the same date where wgmoe printed its own today).
    import datetime as real_datetime

    from transformers.utils import chat_template_utils
    from transformers.utils.chat_template_utils import render_jinja_template

    class PinnedClock(real_datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2024, 7, 26, 12, 0, 0)

    chat_template_utils.datetime = PinnedClock

    chat = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    variables = {"bos_token": "<s>", "eos_token": "</s>", "date_string": "26 Jul 2024"}
    folder = os.path.join(ASSETS, "templates")
    with open(os.path.join(folder, ".sdist-sha256")) as f:
        sdist = f.read().strip()
    cases = []
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".jinja")):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            template = f.read()
        try:
            text = render_jinja_template(
                [chat], chat_template=template, add_generation_prompt=True, **variables
            )[0][0]
            cases.append({"template": name, "expected": text})
        except Exception as e:  # the template refuses this chat: the Rust side must refuse it too
            cases.append({"template": name, "error": f"{type(e).__name__}: {e}"})
    out = {
        "generator": f"scripts/tokenizer_reference.py, transformers {transformers.__version__}",
        "templates": f"target/test-assets/templates (llama-cpp-python sdist sha256 {sdist})",
        "messages": chat,
        "variables": variables,
        "today": PinnedClock.now().strftime("%Y-%m-%d"),
        "cases": cases,
    }
    write(os.path.join(DATA, "real_templates.json"), out)


def write(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
