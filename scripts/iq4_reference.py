#!/usr/bin/env python3
"""Reference data for wgmoe's IQ4_NL / IQ4_XS dequantisers (kernels-tests/gguf.rs).

gguf-py (the `gguf` package, llama.cpp's own Python library) dequantises both with numpy; this
script runs it on random blocks and writes what it returns, so the Rust test can compare wgmoe's
dequantisers bit for bit against an independent implementation. Random bytes are valid blocks
once the f16 `d` is finite: it is set here, one regime per block (small positive, small negative,
zero, f16 subnormal, large).

Writes kernels-tests/gguf-data/iq4.bin (per type: the blocks, then gguf-py's f32 values,
little-endian) and iq4.json (per type: its ggml id, block bytes, block count and the offsets).

Run: python3 scripts/iq4_reference.py   (needs only numpy and gguf; deterministic)
"""

import json
import os

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "kernels-tests/gguf-data")
D_REGIMES = [0.01, -0.02, 0.0, 3e-6, 300.0]


def main():
    rng = np.random.default_rng(20261203)
    blob = bytearray()
    index = {}
    for qtype in (Q.IQ4_NL, Q.IQ4_XS):
        _, size = GGML_QUANT_SIZES[qtype]
        n = 4 * len(D_REGIMES)
        blocks = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
        for i in range(n):
            d = np.float16(D_REGIMES[i % len(D_REGIMES)] * (1 + rng.random()))
            blocks[i, 0:2] = np.frombuffer(d.tobytes(), dtype=np.uint8)
        values = quants.dequantize(blocks.reshape(-1), qtype).astype("<f4")
        entry = {"id": int(qtype), "block_bytes": size, "blocks": n, "raw": len(blob)}
        blob += blocks.tobytes()
        entry["values"] = len(blob)
        entry["count"] = int(values.size)
        blob += values.tobytes()
        index[qtype.name] = entry
    with open(os.path.join(OUT, "iq4.bin"), "wb") as f:
        f.write(bytes(blob))
    with open(os.path.join(OUT, "iq4.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
