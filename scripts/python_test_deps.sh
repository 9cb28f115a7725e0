#!/usr/bin/env bash
# Creates target/test-venv with the pinned Python packages the serve tests use
# (kernels-tests/serve/*.py, examples/litellm). Idempotent and quiet on success:
# a stamp file records the pin list, and a matching stamp skips the install.
# Fresh install: about 1 minute, about 800 MB (litellm[proxy] is most of it).
# Usage: scripts/python_test_deps.sh   then   target/test-venv/bin/python ...
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WGMOE_TEST_VENV:-$ROOT/target/test-venv}"
STAMP="$VENV/.wgmoe-pins"

PINS=(
  "openai==3.60.0"
  "jsonschema==4.26.0"
  "selenium==4.51.0"
  "litellm[proxy]==1.108.7"
)
WANT="$(printf '%s\n' "$(python3 --version 2>&1)" "${PINS[@]}")"

if [[ -f "$STAMP" && -x "$VENV/bin/python" ]] && [[ "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
if ! {
  rm -rf "$VENV" &&
  python3 -m venv "$VENV" &&
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input "${PINS[@]}"
} >"$LOG" 2>&1; then
  cat "$LOG" >&2
  echo "python_test_deps.sh: install into $VENV failed" >&2
  exit 1
fi
printf '%s\n' "$WANT" >"$STAMP"
