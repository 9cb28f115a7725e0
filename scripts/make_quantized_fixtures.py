#!/usr/bin/env python3
"""Write tiny quantised checkpoints laid out like the released gpt-oss (MXFP4 experts) and DeepSeek-V3
(FP8 e4m3 with 128x128 block scales) ones, with transformers' fp32 logits on the dequantised weights,
for wgmoe's tests (kernels-tests/quantized.rs).

    pip install torch==2.15.0 transformers==5.23.0 safetensors
    python3 scripts/make_quantized_fixtures.py     # writes kernels-tests/fixtures/{gpt_oss_mxfp4,deepseek_v3_fp8}/

The models are make_fixtures.py's tiny configs with its perturbation, except that DeepSeek-V3's dense
intermediate_size is 200 so that its dense gate/up/down weights span two 128-wide scale tiles with a
partial last tile (every other FP8 weight is smaller than one tile: a [1, 1] grid).

On disk (MODELS.md §7, §9):
  gpt_oss_mxfp4    mlp.experts.{gate_up,down}_proj_{blocks,scales} (uint8 [E, out, in/32, 16] and
                   [E, out, in/32]; rows [out, in], gate/up rows interleaved); every other tensor bf16;
                   config.json quantization_config {"quant_method": "mxfp4", "modules_to_not_convert": ...}
  deepseek_v3_fp8  attention projections and dense / expert / shared-expert gate, up and down weights
                   as float8_e4m3fn with fp32 `<name>.weight_scale_inv` [ceil(out/128), ceil(in/128)];
                   embeddings, lm_head, norms and the router bf16, e_score_correction_bias fp32;
                   quantization_config {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128], ...}

Reference: the model built from the config without quantisation, loaded with exactly the values wgmoe's
loader serves (MXFP4 decoded: exact in bf16; FP8 times its scale rounded once to bf16; the other tensors
bf16-rounded), run in fp32 eager like make_fixtures.py. reference.json + logits.bin as there.
"""
import json
import os
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, DeepseekV3Config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

FP4_VALUES = torch.tensor([+0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
FP8_MAX = 448.0
BLOCK = 128


# ---- MXFP4 -------------------------------------------------------------------------------------

def mxfp4_quantise(w):
    """w: fp32 [E, R, C] (rows [out, in]), C % 32 == 0 -> (blocks u8 [E, R, C/32, 16], scales u8 [E, R, C/32]).
    Per 32-block: the smallest power-of-two scale with amax / scale <= 6, then the nearest E2M1 code."""
    e, r, c = w.shape
    g = w.reshape(e, r, c // 32, 32)
    amax = g.abs().amax(dim=-1)
    exp = torch.ceil(torch.log2(torch.clamp(amax / 6.0, min=2.0 ** -126)))
    exp = torch.clamp(exp, -127, 127)
    scales = (exp + 127).to(torch.uint8)
    x = g / torch.exp2(exp)[..., None]
    mags = FP4_VALUES[:8]
    code = (x.abs()[..., None] - mags).abs().argmin(dim=-1)  # nearest magnitude (ties: the smaller)
    code = code + 8 * ((x < 0) & (code > 0)).long()
    code = code.to(torch.uint8)
    blocks = code[..., 0::2] | (code[..., 1::2] << 4)
    return blocks.contiguous(), scales.contiguous()


def mxfp4_dequantise(blocks, scales):
    """MODELS.md §7 `_convert_moe_packed_tensors`: [E, R, G, 16] + [E, R, G] -> fp32 [E, R, 32 G]."""
    lo = FP4_VALUES[(blocks & 0x0F).long()]
    hi = FP4_VALUES[(blocks >> 4).long()]
    v = torch.stack([lo, hi], dim=-1).reshape(*blocks.shape[:-1], 32)
    v = v * torch.exp2(scales.float() - 127.0)[..., None]
    return v.reshape(blocks.shape[0], blocks.shape[1], -1)


# ---- FP8 block scales --------------------------------------------------------------------------

def fp8_quantise(w):
    """w: fp32 [R, C] -> (float8_e4m3fn [R, C], fp32 scale_inv [ceil(R/128), ceil(C/128)]); the last
    tiles may be partial. W ~= fp8 * scale_inv per tile (DeepSeek's convention: multiplied)."""
    r, c = w.shape
    gr, gc = -(-r // BLOCK), -(-c // BLOCK)
    scale = torch.ones(gr, gc)
    for i in range(gr):
        for j in range(gc):
            amax = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK].abs().max()
            if amax > 0:
                scale[i, j] = amax / FP8_MAX
    full = expand(scale, r, c)
    q = torch.clamp(w / full, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scale


def expand(scale, r, c):
    return scale.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)[:r, :c]


def fp8_dequantise(q, scale):
    """What wgmoe serves: fp8 widened, times its tile's scale in fp32, rounded once to bf16."""
    return (q.float() * expand(scale, *q.shape)).to(torch.bfloat16).float()


FP8_LINEARS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "q_proj",
               "gate_proj", "up_proj", "down_proj")


def is_fp8(name):
    parts = name.split(".")
    return name.endswith(".weight") and len(parts) >= 2 and parts[-2] in FP8_LINEARS


# ---- checkpoints -------------------------------------------------------------------------------

def bf16(t):
    return t.to(torch.bfloat16)


def quantise_gpt_oss(sd):
    disk, deq = {}, {}
    for k, v in sd.items():
        if k.endswith("mlp.experts.gate_up_proj") or k.endswith("mlp.experts.down_proj"):
            # transformers' [E, in, out] -> rows [E, out, in] as on disk
            blocks, scales = mxfp4_quantise(v.float().transpose(1, 2).contiguous())
            disk[k + "_blocks"], disk[k + "_scales"] = blocks, scales
            deq[k] = mxfp4_dequantise(blocks, scales).transpose(1, 2).contiguous()
            assert torch.equal(bf16(deq[k]).float(), deq[k]), "MXFP4 values are exact in bf16"
        else:
            disk[k] = bf16(v)
            deq[k] = bf16(v).float()
    return disk, deq


def quantise_deepseek(sd):
    disk, deq = {}, {}
    for k, v in sd.items():
        if is_fp8(k):
            q, scale = fp8_quantise(v.float())
            disk[k], disk[k + "_scale_inv"] = q, scale
            deq[k] = fp8_dequantise(q, scale)
        elif "e_score_correction_bias" in k:
            disk[k] = v.float()
            deq[k] = v.float()
        else:
            disk[k] = bf16(v)
            deq[k] = bf16(v).float()
    return disk, deq


GPT_OSS_QUANT = {"quant_method": "mxfp4",
                 "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                            "model.embed_tokens", "lm_head"]}
FP8_QUANT = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [BLOCK, BLOCK],
             "activation_scheme": "dynamic"}


def fixtures():
    cfgs = mf.configs()
    return {
        "gpt_oss_mxfp4": (cfgs["gpt_oss"], quantise_gpt_oss, GPT_OSS_QUANT),
        "deepseek_v3_fp8": (DeepseekV3Config(**dict(mf.mla, intermediate_size=200), n_shared_experts=1, n_group=4,
                                             topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
                                             rope_scaling=mf.yarn(1.0)),
                            quantise_deepseek, FP8_QUANT),
    }


def reference_run(ref, cfg, gen):
    """make_fixtures.py's greedy loop: prompts until every greedy step has a clear winner."""
    for _ in range(50):
        prompt = torch.randint(0, cfg.vocab_size, (1, mf.PROMPT_LEN), generator=gen)
        with torch.no_grad():
            ids = prompt
            for _ in range(mf.NEW_TOKENS):
                nxt = ref(ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            logits = ref(ids).logits[0].float().contiguous()
        top2 = logits[mf.PROMPT_LEN - 1:-1].topk(2, dim=-1).values
        if (top2[:, 0] - top2[:, 1]).min() > 0.02:
            break
    return prompt, ids, logits, top2


def write(name, cfg, quantise, qcfg):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", experts_implementation="eager")
    model.eval()
    mf.perturb(model, gen)
    folder = os.path.join(mf.OUT, name)
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory() as plain, tempfile.TemporaryDirectory() as dq:
        # On-disk names and config as save_pretrained writes them.
        model.save_pretrained(plain)
        sd = load_file(os.path.join(plain, "model.safetensors"))
        disk, deq = quantise(sd)
        with open(os.path.join(plain, "config.json")) as f:
            config = json.load(f)
        for f_ in ("config.json", "generation_config.json"):
            if os.path.exists(os.path.join(plain, f_)):
                with open(os.path.join(plain, f_)) as src, open(os.path.join(dq, f_), "w") as dst:
                    dst.write(src.read())
        # The reference: the unquantised config, loaded with the dequantised values.
        save_file({k: v.contiguous() for k, v in deq.items()}, os.path.join(dq, "model.safetensors"),
                  metadata={"format": "pt"})
        ref = AutoModelForCausalLM.from_pretrained(dq, dtype=torch.float32, attn_implementation="eager",
                                                   experts_implementation="eager")
        ref.eval()
        # The reference holds exactly the served values: save it back and compare.
        ref.save_pretrained(os.path.join(dq, "back"))
        back = load_file(os.path.join(dq, "back", "model.safetensors"))
        assert back.keys() == deq.keys(), set(back) ^ set(deq)
        for k, v in deq.items():
            assert torch.equal(back[k].float(), v), k
        # The quantised checkpoint, as the real ones are laid out.
        config["quantization_config"] = qcfg
        config["dtype"] = "bfloat16"
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
        if os.path.exists(os.path.join(plain, "generation_config.json")):
            with open(os.path.join(plain, "generation_config.json")) as src, \
                    open(os.path.join(folder, "generation_config.json"), "w") as dst:
                dst.write(src.read())
        save_file({k: v.contiguous() for k, v in disk.items()}, os.path.join(folder, "model.safetensors"),
                  metadata={"format": "pt"})
    prompt, ids, logits, top2 = reference_run(ref, cfg, gen)
    quantised = [k for k in deq if k + "_blocks" in disk or k + "_scale_inv" in disk]
    quant_err = max(float((deq[k] - sd[k].float()).abs().max() / sd[k].float().abs().max()) for k in quantised)
    reference = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "weights": qcfg["quant_method"] + " (reference on the dequantised values, fp32 math)",
        "prompt": prompt[0].tolist(),
        "tokens": ids[0].tolist(),
        "greedy": ids[0, mf.PROMPT_LEN:].tolist(),
        "min_greedy_top2_gap": float((top2[:, 0] - top2[:, 1]).min()),
        "max_abs_logit": float(logits.abs().max()),
        "max_rel_quantisation_error": quant_err,
    }
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    logits.numpy().astype("<f4").tofile(os.path.join(folder, "logits.bin"))
    size = sum(os.path.getsize(os.path.join(folder, x)) for x in os.listdir(folder))
    print(f"{name:>18}: {size/1024:.0f} KiB, max |logit| {reference['max_abs_logit']:.1f}, "
          f"min greedy top-2 gap {reference['min_greedy_top2_gap']:.3f}, "
          f"max relative quantisation error {quant_err:.3f}")


def main():
    only = set(sys.argv[1:])
    for name, (cfg, quantise, qcfg) in fixtures().items():
        if only and name not in only:
            continue
        write(name, cfg, quantise, qcfg)


if __name__ == "__main__":
    main()
