#!/usr/bin/env python3
"""Write tiny random-weight checkpoints of every supported architecture with transformers' own
fp32 logits, for wgmoe's parity tests (kernels-tests/models.rs).

    pip install torch==2.15.0 transformers==5.23.0 safetensors
    python3 scripts/make_fixtures.py            # writes kernels-tests/fixtures/<name>/

Configs and pitfalls follow ../shared/MODELS.md §11: parameters are overwritten with larger random
values (norms 1 +- 0.2, biases, sinks and DeepSeek-V3's e_score_correction_bias included) so that a
wrong detail moves the logits, and sequences are longer than any sliding window.

Each fixture folder holds what `save_pretrained` writes (config.json, model.safetensors,
generation_config.json) plus:
  reference.json  {"prompt": [...], "tokens": prompt + 16 greedy tokens, "greedy": the 16, ...}
  logits.bin      transformers' logits for `tokens` in one forward pass, f32 little-endian [T, vocab]
"""
import json
import os
import sys

import torch
import transformers
from transformers import (AutoModelForCausalLM, DeepseekV2Config, DeepseekV3Config, GptOssConfig, LlamaConfig,
                          MixtralConfig, OlmoeConfig, Qwen2Config, Qwen2MoeConfig, Qwen3Config, Qwen3MoeConfig)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kernels-tests", "fixtures")
PROMPT_LEN = 12
NEW_TOKENS = 16

common = dict(vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)
mla = dict(vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
           intermediate_size=96, moe_intermediate_size=24, max_position_embeddings=2560, q_lora_rank=32,
           kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, n_routed_experts=8,
           num_experts_per_tok=3, first_k_dense_replace=1, rope_theta=10000.0)


def yarn(m):
    return {"type": "yarn", "factor": 40.0, "mscale": m, "mscale_all_dim": m,
            "original_max_position_embeddings": 64, "beta_fast": 32, "beta_slow": 1}


def configs():
    v2 = dict(mla, n_shared_experts=2, n_group=4, topk_group=2, topk_method="group_limited_greedy",
              routed_scaling_factor=16.0, rope_scaling=yarn(0.707))
    v2_lite = dict(mla, q_lora_rank=None, n_shared_experts=2, topk_method="greedy", routed_scaling_factor=1.0)
    return {
        "llama": LlamaConfig(**common, intermediate_size=96, tie_word_embeddings=True),
        "qwen2": Qwen2Config(**common, intermediate_size=96),
        "qwen3": Qwen3Config(**common, intermediate_size=96, head_dim=32),
        "mixtral": MixtralConfig(**common, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2,
                                 sliding_window=6),
        "qwen2_moe": Qwen2MoeConfig(**common, intermediate_size=96, moe_intermediate_size=32,
                                    shared_expert_intermediate_size=48, num_experts=8, num_experts_per_tok=2,
                                    norm_topk_prob=False, mlp_only_layers=[1]),
        # A shared expert twice the experts' width: wgmoe folds it into two gated routed experts.
        "qwen2_moe_folded": Qwen2MoeConfig(**common, intermediate_size=96, moe_intermediate_size=32,
                                           shared_expert_intermediate_size=64, num_experts=8,
                                           num_experts_per_tok=2, norm_topk_prob=False, mlp_only_layers=[1]),
        "qwen3_moe": Qwen3MoeConfig(**common, intermediate_size=96, moe_intermediate_size=32, num_experts=8,
                                    num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=2, head_dim=32),
        "olmoe": OlmoeConfig(**common, intermediate_size=32, num_experts=8, num_experts_per_tok=2, clip_qkv=0.8),
        "deepseek_v2": DeepseekV2Config(**v2),
        "deepseek_v2_lite": DeepseekV2Config(**v2_lite),
        "deepseek_v3": DeepseekV3Config(**mla, n_shared_experts=1, n_group=4, topk_group=2,
                                        routed_scaling_factor=2.5, norm_topk_prob=True, rope_scaling=yarn(1.0)),
        "gpt_oss": GptOssConfig(vocab_size=128, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=16, intermediate_size=32, num_local_experts=4,
                                num_experts_per_tok=2, sliding_window=4, max_position_embeddings=256),
    }


# Architectures also written with bf16 weights (reference: fp32 math on the same bf16-rounded weights).
BF16 = ["qwen3_moe", "deepseek_v3"]


def perturb(model, gen):
    """Default init is too gentle to catch bugs (MODELS.md §11 pitfall 1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.4 * (torch.rand(p.shape, generator=gen) - 0.5))
            elif name.endswith("bias") or "sinks" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else 1
                if "experts" in name and "gpt_oss" in type(model).__name__.lower() and p.dim() == 3:
                    fan_in = p.shape[1]  # gpt-oss stores experts as [E, in, out]
                std = 0.3 if "embed" in name or "lm_head" in name else 1.6 / fan_in ** 0.5
                p.copy_(std * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if "e_score_correction_bias" in name:
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))


def write(name, cfg, dtype):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", experts_implementation="eager")
    model.eval()
    perturb(model, gen)
    if dtype == torch.bfloat16:
        model = model.to(torch.bfloat16)
    folder = os.path.join(OUT, name + ("_bf16" if dtype == torch.bfloat16 else ""))
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    if dtype == torch.bfloat16:
        # transformers in fp32 on the saved bf16 weights. (`.float()` on the bf16 model would also keep
        # the rotary `inv_freq` buffers rounded to bf16, which no runtime does.)
        ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager",
                                                   experts_implementation="eager")
        ref.eval()
    else:
        ref = model
    # Greedy decoding must not hinge on a near-tie: try prompts until every greedy step has a clear winner.
    for _ in range(50):
        prompt = torch.randint(0, cfg.vocab_size, (1, PROMPT_LEN), generator=gen)
        with torch.no_grad():
            ids = prompt
            for _ in range(NEW_TOKENS):  # greedy, full recompute: the reference has no cache subtleties
                nxt = ref(ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            logits = ref(ids).logits[0].float().contiguous()
        top2 = logits[PROMPT_LEN - 1:-1].topk(2, dim=-1).values
        if (top2[:, 0] - top2[:, 1]).min() > 0.02:
            break
    reference = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "weights": "bf16" if dtype == torch.bfloat16 else "f32",
        "prompt": prompt[0].tolist(),
        "tokens": ids[0].tolist(),
        "greedy": ids[0, PROMPT_LEN:].tolist(),
        "min_greedy_top2_gap": float((top2[:, 0] - top2[:, 1]).min()),
        "max_abs_logit": float(logits.abs().max()),
    }
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    logits.numpy().astype("<f4").tofile(os.path.join(folder, "logits.bin"))
    size = sum(os.path.getsize(os.path.join(folder, x)) for x in os.listdir(folder))
    print(f"{name:>18} {reference['weights']}: {size/1024:.0f} KiB, max |logit| {reference['max_abs_logit']:.1f}, "
          f"min greedy top-2 gap {reference['min_greedy_top2_gap']:.3f}")


def main():
    only = set(sys.argv[1:])
    for name, cfg in configs().items():
        if only and name not in only:
            continue
        write(name, cfg, torch.float32)
        if name in BF16:
            write(name, cfg, torch.bfloat16)


if __name__ == "__main__":
    main()
