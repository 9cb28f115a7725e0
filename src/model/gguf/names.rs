//! llama.cpp's tensor names (convert_hf_to_gguf / gguf-py `tensor_mapping`) and transformers', both
//! ways, from one table: [`gguf_to_hf`] serves a file's tensors under transformers names,
//! [`hf_to_gguf`] names a transformers tensor the way the converter writes it.
//!
//! Only the names: where the converter also changes a tensor's layout (gpt-oss's experts, DeepSeek's
//! split `kv_b_proj`), `GgufSource` maps the tensors itself.

/// Tensors outside the layers: (llama.cpp, transformers).
const GLOBAL: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Per-layer tensors that transformers names without a `.weight` / `.bias` kind: (llama.cpp base,
/// the kind llama.cpp writes, transformers). convert_hf_to_gguf renames `e_score_correction_bias`
/// to `e_score_correction.bias` and gives `sinks` a `.weight` suffix; any kind is read.
const WHOLE: [(&str, &str, &str); 2] = [
    ("exp_probs_b", "bias", "mlp.gate.e_score_correction_bias"),
    ("attn_sinks", "weight", "self_attn.sinks"),
];

/// Per-layer tensors of `model_type` before their `.weight` / `.bias` kind: (llama.cpp, transformers).
/// Stacked experts have `{e}` where transformers has the expert index. Where two llama.cpp names
/// map to one transformers name, the one the converter writes for `model_type` comes first.
fn layer_table(model_type: &str) -> Vec<(&'static str, String)> {
    let mixtral = model_type == "mixtral";
    let moe = if mixtral { "block_sparse_moe" } else { "mlp" };
    let [gate, up, down] = if mixtral {
        ["w1", "w3", "w2"]
    } else {
        ["gate_proj", "up_proj", "down_proj"]
    };
    let shared = if model_type.starts_with("deepseek") {
        "mlp.shared_experts"
    } else {
        "mlp.shared_expert"
    };
    let router = if model_type == "gpt_oss" {
        "mlp.router".to_string()
    } else {
        format!("{moe}.gate")
    };
    // gpt-oss (and gemma2-style models) call the pre-FFN norm `post_attention_norm`.
    let mut ffn_norms = ["ffn_norm", "post_attention_norm"];
    if model_type == "gpt_oss" {
        ffn_norms.reverse();
    }
    let s = |x: &str| x.to_string();
    vec![
        ("attn_q", s("self_attn.q_proj")),
        ("attn_k", s("self_attn.k_proj")),
        ("attn_v", s("self_attn.v_proj")),
        ("attn_output", s("self_attn.o_proj")),
        ("attn_q_norm", s("self_attn.q_norm")),
        ("attn_k_norm", s("self_attn.k_norm")),
        ("attn_norm", s("input_layernorm")),
        (ffn_norms[0], s("post_attention_layernorm")),
        (ffn_norms[1], s("post_attention_layernorm")),
        ("ffn_gate", s("mlp.gate_proj")),
        ("ffn_up", s("mlp.up_proj")),
        ("ffn_down", s("mlp.down_proj")),
        ("ffn_gate_inp", router),
        ("ffn_gate_shexp", format!("{shared}.gate_proj")),
        ("ffn_up_shexp", format!("{shared}.up_proj")),
        ("ffn_down_shexp", format!("{shared}.down_proj")),
        ("ffn_gate_inp_shexp", s("mlp.shared_expert_gate")),
        // DeepSeek MLA.
        ("attn_q_a", s("self_attn.q_a_proj")),
        ("attn_q_a_norm", s("self_attn.q_a_layernorm")),
        ("attn_q_b", s("self_attn.q_b_proj")),
        ("attn_kv_a_mqa", s("self_attn.kv_a_proj_with_mqa")),
        ("attn_kv_a_norm", s("self_attn.kv_a_layernorm")),
        ("attn_kv_b", s("self_attn.kv_b_proj")),
        // Stacked experts `[E, rows, cols]`.
        ("ffn_gate_exps", format!("{moe}.experts.{{e}}.{gate}")),
        ("ffn_up_exps", format!("{moe}.experts.{{e}}.{up}")),
        ("ffn_down_exps", format!("{moe}.experts.{{e}}.{down}")),
    ]
}

/// `blk.N.suffix` as `(N, suffix)`.
pub(super) fn split_layer(name: &str) -> Option<(usize, &str)> {
    let (layer, suffix) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((layer.parse().ok()?, suffix))
}

/// The transformers name of the GGUF tensor `name` for `model_type`; for a stacked expert tensor
/// (`ffn_gate_exps`), a name with `{e}` where the expert index goes. `None` for names outside the
/// table.
pub fn gguf_to_hf(name: &str, model_type: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL.iter().find(|(g, _)| *g == name) {
        return Some(hf.to_string());
    }
    let (layer, suffix) = split_layer(name)?;
    layer_to_hf(suffix, model_type).map(|x| format!("model.layers.{layer}.{x}"))
}

/// The transformers name (after `model.layers.N.`) of a per-layer GGUF tensor suffix (`attn_q.weight`).
fn layer_to_hf(suffix: &str, model_type: &str) -> Option<String> {
    if suffix == "attn_sinks" {
        // The converter names it `attn_sinks.weight`; accept it without the suffix.
        return Some("self_attn.sinks".to_string());
    }
    let (base, kind) = suffix.rsplit_once('.')?; // kind: weight / bias
    if let Some((.., hf)) = WHOLE.iter().find(|w| w.0 == base) {
        return Some(hf.to_string());
    }
    let table = layer_table(model_type);
    let find = |g: &str| table.iter().find(|e| e.0 == g).map(|e| e.1.clone());
    if let Some(hf) = find(base) {
        return Some(format!("{hf}.{kind}"));
    }
    // Older per-expert tensors: ffn_gate.E / ffn_up.E / ffn_down.E.
    let (b, e) = base.rsplit_once('.')?;
    let e: usize = e.parse().ok()?;
    if !matches!(b, "ffn_gate" | "ffn_up" | "ffn_down") {
        return None;
    }
    let hf = find(&format!("{b}_exps"))?.replace("{e}", &e.to_string());
    Some(format!("{hf}.{kind}"))
}

/// The GGUF name llama.cpp's converter gives the transformers tensor `hf` of a `model_type` model,
/// and for one expert's tensor the expert (the converter stacks experts into one `ffn_*_exps`
/// tensor `[E, rows, cols]`). `None` for names outside the table.
pub fn hf_to_gguf(hf: &str, model_type: &str) -> Option<(String, Option<usize>)> {
    if let Some((g, _)) = GLOBAL.iter().find(|(_, h)| *h == hf) {
        return Some((g.to_string(), None));
    }
    let (layer, rest) = hf.strip_prefix("model.layers.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (g, expert) = layer_to_gguf(rest, model_type)?;
    Some((format!("blk.{layer}.{g}"), expert))
}

/// The inverse of [`layer_to_hf`]: a per-layer transformers name to the converter's suffix.
fn layer_to_gguf(rest: &str, model_type: &str) -> Option<(String, Option<usize>)> {
    if let Some((g, kind, _)) = WHOLE.iter().find(|w| w.2 == rest) {
        return Some((format!("{g}.{kind}"), None));
    }
    let (base, kind) = rest.rsplit_once('.')?;
    layer_table(model_type).into_iter().find_map(|(g, hf)| {
        let expert = match hf.split_once("{e}") {
            None if hf == base => None,
            None => return None,
            Some((head, tail)) => Some(base.strip_prefix(head)?.strip_suffix(tail)?.parse().ok()?),
        };
        Some((format!("{g}.{kind}"), expert))
    })
}
