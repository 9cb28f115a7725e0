#!/usr/bin/env python3
"""Hugging Face transformers on the shapes `wgmoe bench --synthetic` uses, for a side-by-side row.

Random weights (`from_config`, made directly on the device), bf16, eager attention and eager
(per-expert loop) MoE by default, batch 1:

  pp{P}: one forward of P random prompt tokens into an empty cache (logits of the last row only);
  tg{N}: N single-token decode steps with the KV cache, greedy, after a one-token prompt; only the
         decode steps are timed.

Mean +- sd over R repetitions after one warm-up, printed as llama-bench's markdown row
(`| model | size | params | backend | test | t/s |`, the same columns `wgmoe bench` prints) or,
with --json, llama-bench's JSON fields.

  python3 scripts/hf_bench.py --shape olmoe-1b-7b                 # on the GPU if there is one
  python3 scripts/hf_bench.py --shape tiny -p 32 -n 8 -r 2       # a CPU smoke test
  python3 scripts/hf_bench.py --shape qwen3-30b-a3b --experts grouped_mm

The shape configs below are the same config.json values as `SHAPES_JSON` in
src/model/synthetic.rs (a test in kernels-tests/bench_model.rs checks that they agree).
"""

import argparse
import json
import statistics
import sys
import time

SHAPES = json.loads(r"""
{
  "olmoe-1b-7b": {
    "model_type": "olmoe", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 16,
    "num_key_value_heads": 16, "intermediate_size": 1024, "num_experts": 64, "num_experts_per_tok": 8,
    "vocab_size": 50304, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 4096,
    "norm_topk_prob": false, "clip_qkv": null, "tie_word_embeddings": false
  },
  "qwen3-30b-a3b": {
    "model_type": "qwen3_moe", "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32,
    "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144, "moe_intermediate_size": 768,
    "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": true, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "vocab_size": 151936, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "max_position_embeddings": 40960, "use_sliding_window": false, "tie_word_embeddings": false
  },
  "deepseek-v2-lite": {
    "model_type": "deepseek_v2", "hidden_size": 2048, "num_hidden_layers": 27, "num_attention_heads": 16,
    "num_key_value_heads": 16, "kv_lora_rank": 512, "q_lora_rank": null, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 64, "num_experts_per_tok": 6,
    "moe_intermediate_size": 1408, "n_shared_experts": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
    "intermediate_size": 10944, "vocab_size": 102400, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "max_position_embeddings": 163840, "topk_method": "greedy", "routed_scaling_factor": 1.0,
    "norm_topk_prob": false, "attention_bias": false, "tie_word_embeddings": false,
    "rope_scaling": {
      "type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0,
      "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 0.707
    }
  },
  "gpt-oss-20b": {
    "model_type": "gpt_oss", "hidden_size": 2880, "num_hidden_layers": 24, "num_attention_heads": 64,
    "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2880, "num_local_experts": 32,
    "num_experts_per_tok": 4, "experts_per_token": 4, "vocab_size": 201088, "rms_norm_eps": 1e-05,
    "sliding_window": 128, "rope_theta": 150000.0, "max_position_embeddings": 131072,
    "swiglu_limit": 7.0, "attention_bias": true, "tie_word_embeddings": false,
    "layer_types": [
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention",
      "sliding_attention", "full_attention", "sliding_attention", "full_attention"
    ],
    "rope_scaling": {
      "rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0,
      "beta_slow": 1.0, "truncate": false
    }
  },
  "mixtral-8x7b": {
    "model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "intermediate_size": 14336, "num_local_experts": 8, "num_experts_per_tok": 2,
    "vocab_size": 32000, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
    "sliding_window": null, "tie_word_embeddings": false
  },
  "tiny": {
    "model_type": "qwen3_moe", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "moe_intermediate_size": 128,
    "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": true, "decoder_sparse_step": 1,
    "mlp_only_layers": [], "vocab_size": 1024, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "max_position_embeddings": 2048, "use_sliding_window": false, "tie_word_embeddings": false
  }
}
""")

DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}


def make_config(values, layers=None):
    from transformers import AutoConfig

    values = dict(values)
    model_type = values.pop("model_type")
    if layers is not None:
        values["num_hidden_layers"] = layers
        if "layer_types" in values:
            values["layer_types"] = values["layer_types"][:layers]
    return AutoConfig.for_model(model_type, **values)


def sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mean_sd(xs):
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def bench_shape(name, values, args, device, torch):
    from transformers import AutoModelForCausalLM

    config = make_config(values, args.layers)
    dtype = getattr(torch, DTYPES[args.dtype])
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=args.attn, experts_implementation=args.experts
        )
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    vocab = config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    prompt = torch.randint(0, vocab, (1, max(args.n_prompt, 1)), generator=gen).to(device)
    first = torch.randint(0, vocab, (1, 1), generator=gen).to(device)

    def prefill():
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        return out.logits

    def decode(n):
        # A one-token prompt (not timed), then n timed single-token steps with the cache.
        out = model(input_ids=first, use_cache=True, logits_to_keep=1)
        tok = out.logits[:, -1:].argmax(-1)
        cache = out.past_key_values
        sync(device)
        start = time.perf_counter()
        for _ in range(n):
            out = model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            tok = out.logits[:, -1:].argmax(-1)
        sync(device)
        return time.perf_counter() - start

    results = []
    with torch.inference_mode():
        if args.n_prompt > 0:
            logits = prefill()  # warm-up
            if not torch.isfinite(logits.float()).all():
                print(f"warning: {name}: non-finite logits", file=sys.stderr)
            secs = []
            for _ in range(args.reps):
                sync(device)
                start = time.perf_counter()
                prefill()
                sync(device)
                secs.append(time.perf_counter() - start)
            results.append((args.n_prompt, 0, secs))
        if args.n_gen > 0:
            decode(min(args.n_gen, 8))  # warm-up
            secs = [decode(args.n_gen) for _ in range(args.reps)]
            results.append((0, args.n_gen, secs))
    del model
    return params, size, results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="olmoe-1b-7b", help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--config", help="a config.json to benchmark instead of a named shape")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--repetitions", dest="reps", type=int, default=5)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--attn", default="eager", help="attn_implementation (eager, sdpa, ...)")
    ap.add_argument("--experts", default="eager", help="experts_implementation (eager, grouped_mm, ...)")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cuda, cuda:1, cpu")
    ap.add_argument("--layers", type=int, help="override num_hidden_layers (smoke tests on small machines)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", action="store_true", help="print llama-bench's JSON fields instead of the table")
    args = ap.parse_args()

    import torch
    import transformers

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        backend = f"CUDA (transformers {transformers.__version__} {args.attn}/{args.experts})"
    else:
        gpu = "cpu"
        backend = f"CPU (transformers {transformers.__version__} {args.attn}/{args.experts})"
    if args.config:
        with open(args.config) as f:
            shapes = [(args.config, json.load(f))]
    else:
        names = [s.strip() for s in args.shape.split(",") if s.strip()]
        unknown = [n for n in names if n not in SHAPES]
        if unknown:
            sys.exit(f"unknown shape(s) {unknown}: use {', '.join(SHAPES)}")
        shapes = [(n, SHAPES[n]) for n in names]

    info = f"device: {gpu}; torch {torch.__version__}; transformers {transformers.__version__}; weights {args.dtype}"
    rows = []
    table = ["| model | size | params | backend | test | t/s |", "| --- | ---: | ---: | --- | ---: | ---: |"]
    for name, values in shapes:
        label = f"{name} {args.dtype.upper()}" + (f" ({args.layers} layers)" if args.layers else "")
        try:
            params, size, results = bench_shape(name, values, args, device, torch)
        except torch.OutOfMemoryError as e:
            print(f"{name}: out of memory on {gpu} ({str(e).splitlines()[0]})", file=sys.stderr)
            table.append(f"| {label} | - | - | {backend} | - | out of memory |")
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        for n_prompt, n_gen, secs in results:
            tokens = n_prompt or n_gen
            test = f"pp{n_prompt}" if n_prompt else f"tg{n_gen}"
            ts = [tokens / s for s in secs]
            avg, sd = mean_sd(ts)
            ns = [s * 1e9 for s in secs]
            size_cell = f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.2f} MiB"
            params_cell = f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.2f} M"
            table.append(f"| {label} | {size_cell} | {params_cell} | {backend} | {test} | {avg:.2f} ± {sd:.2f} |")
            rows.append({
                "backends": backend,
                "gpu_info": gpu,
                "model_filename": f"synthetic:{name}",
                "model_type": f"{values['model_type']} {params / 1e9:.2f}B {args.dtype.upper()}",
                "model_size": size,
                "model_n_params": params,
                "n_prompt": n_prompt,
                "n_gen": n_gen,
                "test_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "avg_ns": round(statistics.fmean(ns)),
                "stddev_ns": round(statistics.stdev(ns)) if len(ns) > 1 else 0,
                "avg_ts": avg,
                "stddev_ts": sd,
                "samples_ns": [round(x) for x in ns],
                "samples_ts": ts,
                "weight_format": args.dtype,
                "attn_implementation": args.attn,
                "experts_implementation": args.experts,
            })
    if args.json:
        print(info, file=sys.stderr)
        print(json.dumps(rows, indent=2))
    else:
        print(info)
        print()
        print("\n".join(table))


if __name__ == "__main__":
    main()
