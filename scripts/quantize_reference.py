#!/usr/bin/env python3
"""Reference data for wgmoe's Q8_0 / Q4_0 / Q5_0 quantisers (`--quantize`, src/model/quantize.rs).

gguf-py (the `gguf` package, llama.cpp's own Python library) quantises Q8_0, Q4_0 and Q5_0 ("with
bit-exact same results as reference implementation in ggml-quants.c"); this script runs it on
random values (normal, heavy-tailed, an all-zero block, exact halves that test the rounding) and
writes the values and the blocks it returns, so the Rust test can compare wgmoe's quantisers bit
for bit against an independent implementation.

Writes kernels-tests/gguf-data/quantize.bin (the f32 values, then per type its blocks) and
quantize.json (the offsets).

Run: python3 scripts/quantize_reference.py   (needs only numpy and gguf; deterministic)
"""

import json
import os

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "kernels-tests/gguf-data")


def main():
    rng = np.random.default_rng(20261203)
    parts = [
        rng.standard_normal(32 * 24),
        rng.standard_t(2, size=32 * 8) * 3,
        np.zeros(32),
        # Halves: x / d lands on .5 for some elements (C roundf rounds them away from zero).
        np.arange(-16, 16) * 0.5,
        np.arange(32) * (127.0 / 31.0) - 63.5,
    ]
    values = np.concatenate(parts).astype(np.float32)
    blob = bytearray(values.astype("<f4").tobytes())
    index = {"values": 0, "count": int(values.size)}
    for qtype in (Q.Q8_0, Q.Q4_0, Q.Q5_0):
        blocks = quants.quantize(values, qtype).reshape(-1)
        index[qtype.name] = {"offset": len(blob), "length": int(blocks.size)}
        blob += blocks.tobytes()
    with open(os.path.join(OUT, "quantize.bin"), "wb") as f:
        f.write(bytes(blob))
    with open(os.path.join(OUT, "quantize.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
