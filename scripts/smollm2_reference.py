#!/usr/bin/env python3
"""Reference logits for the SmolLM2-135M-Instruct Q4_1 GGUF parity test (kernels-tests/gguf.rs).

transformers dequantises the GGUF to fp32 (`from_pretrained(dir, gguf_file=..., dtype=float32)`);
wgmoe dequantises it to f16 at load. So the dequantised weights are rounded through float16 here before
the fp32 eager forward, which makes both sides run the same weights.

Only the matrices are rounded: in this file every matrix is Q4_1/Q8_0 (so f16 in wgmoe) and every
vector (the RMSNorm weights) is F32, which wgmoe keeps in f32; the script checks that with `gguf`.

The prompt is chat-templated and tokenised by transformers' own GGUF tokenizer. Writes
kernels-tests/gguf-data/smollm2_reference.json: the prompt ids, the full last-row logits (4
decimals), the top-16 (id, logit) of every row, the greedy continuation, and tokenisation cases.

Run: scripts/fetch_smollm2.sh && python3 scripts/smollm2_reference.py

It also writes the reader's fixture, kernels-tests/gguf-data/tiny.gguf (+ tiny.json), with the
`gguf` package (an independent writer and dequantiser): metadata of every value type, a custom
alignment, a tiny llama-shaped tensor set in F32/F16/BF16/Q8_0/Q4_0/Q4_1 with q/k rows permuted as
convert_hf_to_gguf does, a Q5_0 tensor, and a byte-level vocabulary with merges.
`python3 scripts/smollm2_reference.py tiny` writes only that fixture (no model needed).
"""

import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GGUF = os.path.join(ROOT, "target/test-assets/SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(ROOT, "kernels-tests/gguf-data/smollm2_reference.json")
QUESTION = "What is the capital of France?"
GREEDY_STEPS = 16
TOKENIZE_CASES = [
    "Hello world",
    "What is the capital of France?",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "<|im_start|>user\nhi<|im_end|>",
    "def f(x):\n    return x * 2  # comment",
    "caf\u00e9 na\u00efve \u00fcber \u4f60\u597d \U0001f600!",
    "Numbers: 3.14159, 2024 and 1e-5",
]


def write_tiny_gguf():
    import gguf
    import numpy as np

    Q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(7)
    d, ffn, heads, kv_heads, hd = 64, 96, 4, 2, 16
    out_dir = os.path.dirname(OUT)
    os.makedirs(out_dir, exist_ok=True)
    w = gguf.GGUFWriter(os.path.join(out_dir, "tiny.gguf"), "llama")
    w.add_custom_alignment(64)
    w.add_name("tiny")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -5)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 1.5)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "h\u00e9llo")
    w.add_uint64("test.u64", 2**40 + 3)
    w.add_int64("test.i64", -(2**40))
    w.add_float64("test.f64", 0.1)
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_array("test.array_str", ["a", "bc", ""])
    w.add_array("test.array_nested", [[1, 2], [3]])
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    # Byte-level vocabulary: the 256 byte symbols, a few merges, then control tokens.
    symbols = sorted(set(bytes_to_unicode().values()), key=ord)
    merges = ["h e", "l l", "he ll", "hell o", "\u0120 w"]
    tokens = symbols + ["he", "ll", "hell", "hello", "\u0120w", "<|im_start|>", "<|im_end|>"]
    types = [1] * (len(tokens) - 2) + [3, 3]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 2)
    w.add_eos_token_id(len(tokens) - 1)
    w.add_chat_template("{{ messages[0]['content'] }}")
    vocab = len(tokens)

    def permute(x, n_head):  # convert_hf_to_gguf LlamaModel.permute
        return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    expected = {}

    def tensor(name, hf, shape, qtype, n_head=None):
        x = rng.standard_normal(shape).astype(np.float32) * 0.5
        hf_values = x
        if n_head is not None:
            x = permute(x, n_head)
        if qtype == Q.F32:
            w.add_tensor(name, x)
            deq = x
        elif qtype == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
            deq = x.astype(np.float16).astype(np.float32)
        elif qtype == Q.BF16:
            raw = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation is a valid bf16 value too
            w.add_tensor(name, raw.view(np.uint8).reshape(shape[0], -1), raw_dtype=Q.BF16)
            deq = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            raw = gguf.quants.quantize(x, qtype)
            w.add_tensor(name, raw, raw_dtype=qtype)
            deq = gguf.quants.dequantize(raw, qtype).reshape(shape)
            if qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1):
                deq = deq.astype(np.float16).astype(np.float32)  # wgmoe keeps f16
        if n_head is not None:  # undo the permutation (transformers' _reverse_permute_weights)
            deq = deq.reshape(n_head, deq.shape[0] // n_head // 2, 2, *deq.shape[1:]).swapaxes(2, 1).reshape(shape)
        flat = deq.reshape(-1).astype(np.float64)
        weights = (np.arange(flat.size) % 97) + 1
        expected[hf] = {
            "gguf": name,
            "type": qtype.name,
            "shape": list(shape),
            "first": [float(v) for v in flat[:40]],
            "checksum": float((flat * weights).sum()),
        }
        del hf_values

    tensor("token_embd.weight", "model.embed_tokens.weight", (vocab, d), Q.Q8_0)
    tensor("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight", (d,), Q.F32)
    tensor("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", (heads * hd, d), Q.Q4_0, heads)
    tensor("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", (kv_heads * hd, d), Q.Q4_1, kv_heads)
    tensor("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", (kv_heads * hd, d), Q.F16)
    tensor("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight", (d, heads * hd), Q.BF16)
    tensor("blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight", (d,), Q.F32)
    tensor("blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight", (ffn, d), Q.Q8_0)
    tensor("blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight", (ffn, d), Q.Q4_1)
    tensor("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", (d, ffn), Q.Q4_0)
    tensor("output_norm.weight", "model.norm.weight", (d,), Q.F32)
    tensor("output.weight", "lm_head.weight", (vocab, d), Q.Q5_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(out_dir, "tiny.json"), "w") as f:
        json.dump({"vocab": vocab, "tensors": expected}, f, indent=1)
    print("wrote", os.path.join(out_dir, "tiny.gguf"))


def bytes_to_unicode():
    from transformers.convert_slow_tokenizer import bytes_to_unicode as b2u

    return b2u()


def main():
    write_tiny_gguf()
    if sys.argv[1:] == ["tiny"]:
        return
    path = sys.argv[1] if len(sys.argv) > 1 else GGUF
    if not os.path.exists(path):
        sys.exit(f"{path} is missing: run scripts/fetch_smollm2.sh first")
    folder, name = os.path.split(path)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    import gguf

    for t in gguf.GGUFReader(path).tensors:
        quantised = t.tensor_type.name in ("Q4_0", "Q4_1", "Q8_0", "F16")
        assert quantised == (len(t.shape) >= 2), (t.name, t.tensor_type.name, t.shape)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.copy_(p.half().float())

    text = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
        greedy = []
        seq = list(ids)
        for _ in range(GREEDY_STEPS):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            greedy.append(nxt)
            seq.append(nxt)
    top = torch.topk(logits, 16, dim=-1)
    ref = {
        "gguf": os.path.basename(path),
        "question": QUESTION,
        "prompt": text,
        "ids": ids,
        "vocab": logits.shape[-1],
        "last_logits": [round(float(x), 4) for x in logits[-1]],
        "top_ids": top.indices.tolist(),
        "top_logits": [[round(float(x), 4) for x in row] for row in top.values],
        "greedy": greedy,
        "greedy_text": tok.decode(greedy),
        "tokenize": [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TOKENIZE_CASES],
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(ref, f, separators=(",", ":"))
    print(f"wrote {OUT}: {len(ids)} prompt tokens, greedy {ref['greedy_text']!r}")


if __name__ == "__main__":
    main()
