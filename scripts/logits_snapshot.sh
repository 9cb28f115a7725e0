#!/usr/bin/env bash
# Writes `wgmoe logits` of every fixture into a folder, so a refactor can be checked bit for bit:
#
#   scripts/logits_snapshot.sh WGMOE_BINARY OUT_DIR      # e.g. a build of the old commit, then the new
#   cmp -r OLD_DIR NEW_DIR                              # (or scripts/logits_snapshot.sh --compare A B)
#
# Each transformers fixture (kernels-tests/fixtures/*) runs its reference prompt as one prefill and
# token by token (--decode), with the f32, f16 and q8 KV caches; the GGUF fixtures and, when
# fetched, SmolLM2 run a short prompt the same ways. WGMOE_DEVICE / WGMOE_COOP_MATRIX pass through,
# so the same script covers the cooperative-matrix path (under scripts/coop_lavapipe.sh's driver).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --compare ]; then
    a="$2" b="$3" bad=0 n=0
    for f in "$a"/*.bin; do
        n=$((n + 1))
        if ! cmp -s "$f" "$b/$(basename "$f")"; then
            echo "differs: $(basename "$f")"
            bad=$((bad + 1))
        fi
    done
    echo "$n files compared, $bad differ"
    [ "$bad" -eq 0 ]
    exit
fi

bin="$1" out="$2"
mkdir -p "$out"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

run() { # NAME MODEL TOKENS
    local name="$1" model="$2" tokens="$3"
    for kv in f32 f16 q8; do
        "$bin" logits --model "$model" --tokens "$tokens" --kv-cache "$kv" --out "$out/$name.prefill.$kv.bin" 2>/dev/null ||
            echo "$name prefill $kv failed" >"$out/$name.prefill.$kv.err"
        "$bin" logits --model "$model" --tokens "$tokens" --kv-cache "$kv" --decode --out "$out/$name.decode.$kv.bin" 2>/dev/null ||
            echo "$name decode $kv failed" >"$out/$name.decode.$kv.err"
    done
}

for dir in kernels-tests/fixtures/*/; do
    name=$(basename "$dir")
    tokens=$(python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['prompt'])))" "$dir/reference.json")
    run "$name" "$dir" "$tokens"
done
for gguf in kernels-tests/gguf-data/tiny.gguf target/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf; do
    [ -f "$gguf" ] || continue
    run "$(basename "$gguf" .gguf)" "$gguf" 1,2,3,4,5,6,7,8,9,10,11,12
done
ls "$out" | wc -l
