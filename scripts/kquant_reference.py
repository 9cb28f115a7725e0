#!/usr/bin/env python3
"""Reference data for wgmoe's Q5_0 / Q5_1 / K-quant dequantisers (kernels-tests/gguf.rs).

gguf-py (the `gguf` package, llama.cpp's own Python library) carries numpy ports of ggml's
`dequantize_row_*`; this script runs them on blocks built here and writes what they return, so the
Rust test can compare wgmoe's dequantisers bit for bit against an independent implementation.

Blocks: Q5_0 / Q5_1 from `gguf.quants.quantize` (gguf-py quantises them) plus random blocks;
Q2_K / Q3_K / Q4_K / Q5_K / Q6_K as random blocks (gguf-py only dequantises them). Random bytes
are valid K-quant blocks once the f16 `d` / `dmin` fields are finite, so those are set here, one
regime per block: small positive, small negative, zero, f16 subnormal, large (results near the
f16 range), and mixed signs of d and dmin.

Writes, in kernels-tests/gguf-data/:
  kquants.bin   raw blocks, gguf-py's f32 values and those values rounded to f16 (numpy's
                astype(float16), round to nearest even), little-endian, at the offsets in
  kquants.json  the index: per type its id, block size and the (offset, length) of each section;
                and for kquants.gguf, each tensor's transformers name, shape and expected f16 values.
  kquants.gguf  a small qwen3moe-named GGUF written by gguf.GGUFWriter with one tensor per type
                (a [16, 256] Q4_K embedding, an [8, 256] Q6_K output, a [4, 64] Q5_0, ...), a
                stacked Q4_K expert tensor [3, 2, 256] and an IQ2_XXS tensor (unsupported in wgmoe).

Run: python3 scripts/kquant_reference.py   (needs only numpy and gguf; deterministic)
"""

import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.constants import GGML_QUANT_SIZES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "kernels-tests/gguf-data")

# Where each type keeps its f16 scale fields (byte offsets inside a block): d first, then dmin/m.
F16_FIELDS = {
    Q.Q5_0: [0],
    Q.Q5_1: [0, 2],
    Q.Q2_K: [80, 82],
    Q.Q3_K: [108],
    Q.Q4_K: [0, 2],
    Q.Q5_K: [0, 2],
    Q.Q6_K: [208],
}

# One value of d (and of dmin / m where the type has one) per regime.
REGIMES = [
    ("small", lambda r: r.uniform(0.001, 0.02), lambda r: r.uniform(0.001, 0.02)),
    ("negative", lambda r: -r.uniform(0.001, 0.02), lambda r: -r.uniform(0.001, 0.02)),
    ("zero", lambda r: 0.0, lambda r: 0.0),
    ("subnormal", lambda r: r.integers(1, 1024) * 2.0**-24, lambda r: r.integers(1, 1024) * 2.0**-24),
    ("large", lambda r: r.uniform(0.5, 1.5), lambda r: r.uniform(0.5, 1.5)),
    ("mixed", lambda r: r.uniform(-0.05, 0.05), lambda r: -r.uniform(-0.05, 0.05)),
]


def random_blocks(rng, qtype, n_blocks):
    """`n_blocks` random blocks of `qtype`, their f16 fields cycling through REGIMES."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for b in range(n_blocks):
        _, d_fn, m_fn = REGIMES[b % len(REGIMES)]
        for k, off in enumerate(F16_FIELDS[qtype]):
            v = np.float16(d_fn(rng) if k == 0 else m_fn(rng))
            assert np.isfinite(v)
            raw[b, off : off + 2] = np.frombuffer(v.tobytes(), dtype=np.uint8)
    return raw


def blocks_for(rng, qtype):
    block_size, _ = GGML_QUANT_SIZES[qtype]
    if qtype in (Q.Q5_0, Q.Q5_1):
        x = (rng.standard_normal((32, block_size)) * 0.3).astype(np.float32)
        x[3] = 0.0  # an all-zero block: d = 0
        quantised = gguf.quants.quantize(x, qtype).reshape(32, -1)
        return np.concatenate([quantised, random_blocks(rng, qtype, 2 * len(REGIMES))])
    return random_blocks(rng, qtype, len(REGIMES))


def dequant(raw, qtype):
    with np.errstate(over="ignore"):
        return gguf.quants.dequantize(raw.reshape(-1), qtype).reshape(-1).astype(np.float32)


class Blob:
    def __init__(self):
        self.parts = []
        self.size = 0

    def add(self, a):
        b = np.ascontiguousarray(a).tobytes()
        off = self.size
        self.parts.append(b)
        self.size += len(b)
        return [off, len(b)]


def f16_of(v):
    with np.errstate(over="ignore"):
        return v.astype(np.float16)


def main():
    rng = np.random.default_rng(20240611)
    blob = Blob()
    types = []
    for qtype in (Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K):
        raw = blocks_for(rng, qtype)
        v = dequant(raw, qtype)
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        assert v.size == raw.shape[0] * block_size and np.isfinite(v).all()
        types.append(
            {
                "name": qtype.name,
                "id": int(qtype),
                "blocks": int(raw.shape[0]),
                "block_elements": block_size,
                "block_bytes": type_size,
                "raw": blob.add(raw),
                "f32": blob.add(v.astype("<f4")),
                "f16": blob.add(f16_of(v).astype("<f2")),
            }
        )

    # The GGUF: tensors named so GgufSource maps them to transformers names (qwen3moe: no q/k
    # permutation), one per type, stacked experts, and an unsupported type.
    path = os.path.join(OUT, "kquants.gguf")
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_uint32("qwen3moe.block_count", 1)
    tensors = []

    def tensor(gname, hf, shape, qtype):
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        if qtype in (Q.Q5_0, Q.Q5_1):
            x = (rng.standard_normal(shape) * 0.3).astype(np.float32)
            raw = gguf.quants.quantize(x, qtype)
        else:
            n_blocks = int(np.prod(shape)) // block_size
            raw = random_blocks(rng, qtype, n_blocks).reshape(*shape[:-1], shape[-1] // block_size * type_size)
        w.add_tensor(gname, raw, raw_dtype=qtype)
        v = dequant(raw, qtype).reshape(shape)
        if len(shape) == 3:  # stacked experts: one transformers tensor per expert
            for e in range(shape[0]):
                tensors.append(
                    {"hf": hf.format(e=e), "gguf": gname, "type": qtype.name, "shape": list(shape[1:]),
                     "f16": blob.add(f16_of(v[e]).astype("<f2"))}
                )
        else:
            tensors.append(
                {"hf": hf, "gguf": gname, "type": qtype.name, "shape": list(shape),
                 "f16": blob.add(f16_of(v).astype("<f2"))}
            )

    tensor("token_embd.weight", "model.embed_tokens.weight", (16, 256), Q.Q4_K)
    tensor("output.weight", "lm_head.weight", (8, 256), Q.Q6_K)
    tensor("blk.0.ffn_down_shexp.weight", "model.layers.0.mlp.shared_expert.down_proj.weight", (4, 64), Q.Q5_0)
    tensor("blk.0.ffn_up_shexp.weight", "model.layers.0.mlp.shared_expert.up_proj.weight", (4, 64), Q.Q5_1)
    tensor("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", (2, 256), Q.Q3_K)
    tensor("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", (2, 256), Q.Q2_K)
    tensor("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", (2, 256), Q.Q5_K)
    tensor("blk.0.ffn_gate_exps.weight", "model.layers.0.mlp.experts.{e}.gate_proj.weight", (3, 2, 256), Q.Q4_K)
    # IQ2_XXS (66 bytes per 256 values): wgmoe does not read it; the bytes do not matter.
    w.add_tensor(
        "blk.0.attn_output.weight", rng.integers(0, 256, size=(2, 66), dtype=np.uint8), raw_dtype=Q.IQ2_XXS
    )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    with open(os.path.join(OUT, "kquants.bin"), "wb") as f:
        for p in blob.parts:
            f.write(p)
    index = {
        "generator": f"scripts/kquant_reference.py with gguf {getattr(gguf, '__version__', '0.19')} "
        "(gguf.quants.quantize / dequantize)",
        "types": types,
        "gguf": {
            "file": "kquants.gguf",
            "tensors": tensors,
            "unsupported": {"hf": "model.layers.0.self_attn.o_proj.weight", "gguf": "blk.0.attn_output.weight",
                            "type": "IQ2_XXS"},
        },
    }
    with open(os.path.join(OUT, "kquants.json"), "w") as f:
        json.dump(index, f, indent=1)
    print("wrote", path, "kquants.bin", blob.size, "bytes")


if __name__ == "__main__":
    main()
