#!/usr/bin/env bash
# Seed corpora for the fuzz targets, derived from the committed fixtures (nothing is downloaded;
# the Qwen3 chat template and the 70 real templates are added when scripts/fetch_test_assets.sh has
# fetched target/test-assets):
#   fuzz/seed.sh   writes fuzz/corpus/{gguf,safetensors_header,config,chat_template}/
# gguf: the reader's test GGUFs (written by gguf-py). safetensors_header: every fixture's
# model.safetensors cut down to its smallest tensors (offsets rewritten), whole and in the
# target's "JSON, NUL, data" form. config: every fixture's config.json. chat_template: small
# ChatML / Llama-style templates and the Qwen3 one, each followed by NUL-separated messages.
set -euo pipefail
cd "$(dirname "$0")"
root=..
mkdir -p corpus/{gguf,safetensors_header,config,chat_template}
cp "$root"/kernels-tests/gguf-data/*.gguf corpus/gguf/
for d in "$root"/kernels-tests/fixtures/*/; do
    cp "$d/config.json" "corpus/config/$(basename "$d").json"
done
python3 - "$root" <<'PY'
import json, struct, sys, pathlib
root = pathlib.Path(sys.argv[1])
out = pathlib.Path("corpus/safetensors_header")
for st in sorted(root.glob("kernels-tests/fixtures/*/model.safetensors")):
    b = st.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    header = json.loads(b[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    # The smallest tensors, up to 8 KiB of data, laid out again from offset 0.
    small, total = {}, 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][1] - kv[1]["data_offsets"][0]):
        s, e = t["data_offsets"]
        if total + e - s > 8192:
            break
        small[name] = (t, b[8 + n + s : 8 + n + e])
        total += e - s
    new, data = {}, b""
    if meta is not None:
        new["__metadata__"] = meta
    for name, (t, raw) in small.items():
        new[name] = {"dtype": t["dtype"], "shape": t["shape"], "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(new).encode()
    stem = st.parent.name
    (out / f"{stem}.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data)
    (out / f"{stem}.json-form").write_bytes(text + b"\0" + data)
tpl = pathlib.Path("corpus/chat_template")
msgs = "\0".join(["You are terse.", "Hi!", "Hello.", "What is 2+2?"])
templates = {
    "chatml": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "llama": "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content | trim }} [/INST]"
             "{% elif m.role == 'assistant' %} {{ m.content }}{{ eos_token }}{% else %}<<SYS>>{{ m.content }}<</SYS>>"
             "{% endif %}{% endfor %}",
    "loops": "{% set ns = namespace(n=0) %}{% for m in messages %}{% for c in m.content %}{% set ns.n = ns.n + 1 %}"
             "{% endfor %}{{ loop.index }}:{{ m.content|length }}{% endfor %}{{ ns.n }}{{ messages|tojson }}",
}
qwen = root / "target/test-assets/qwen3/tokenizer_config.json"
if qwen.exists():
    templates["qwen3"] = json.loads(qwen.read_text())["chat_template"]
for real in sorted((root / "target/test-assets/templates").glob("*.jinja")):
    templates[real.stem] = real.read_text()
for name, t in templates.items():
    (tpl / name).write_bytes((t + "\0" + msgs).encode())
PY
for t in gguf safetensors_header config chat_template; do
    echo "corpus/$t: $(ls corpus/$t | wc -l) files"
done
