//! The MoE router tail in one kernel (MODELS.md §3, §5, §6.6, §7): routing scores (softmax or
//! sigmoid), an optional selection bias, DeepSeek's group-limited selection, top-k, renormalisation
//! and scaling. Router logits come from a matmul; expert ids and weights stay on the GPU for the
//! expert kernels ([`crate::kernels::moe`]).
//!
//! | model | spec |
//! |---|---|
//! | Mixtral, Qwen3-MoE (`norm_topk_prob`), gpt-oss (softmax over the top-k logits) | softmax, renormalize |
//! | Qwen1.5/2-MoE, OLMoE | softmax |
//! | DeepSeek-V2(-Lite) | softmax, optional `Groups { score: Max }`, scale |
//! | DeepSeek-V3 | sigmoid, bias, `Groups { score: Top2Sum }`, renormalize, scale |
//!
//! Shared experts folded into the routed ones ([`SharedSlots`]) take `count` more slots per token
//! after the top-k: experts `experts..experts + count`, weight 1 (DeepSeek) or Qwen2-MoE's gate
//! `sigmoid(logit)`, the gate's logit being the one after the experts' in each row.

use crate::error::{shape_err, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{grid, Context, Dispatch, Tensor};

const BODY: &str = include_str!("../../shaders/router.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        experts: u32,
        top_k: u32,
        n_group: u32,
        topk_group: u32,
        group_size: u32,
        renormalize: u32,
        /// Shared-expert slots after the top-k.
        shared_slots: u32,
        scale: f32,
        eps: f32,
        /// experts, + 1 with a shared gate logit.
        logit_stride: u32,
        shared_gate: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// The most experts one router workgroup handles (one invocation per expert, WebGPU's 256).
        MAX_E: u32 = 256,
    }
}

/// The most experts one router workgroup handles.
pub const MAX_EXPERTS: usize = MAX_E as usize;

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        WG: u32 = 256,
        SIGMOID: bool = false,
        HAS_BIAS: bool = false,
        GROUPS: bool = false,
        /// Group score = sum of the group's top-2 selection scores (V3) instead of its maximum (V2).
        TOP2: bool = false,
        SUBGROUPS: bool = false,
    }
}

crate::wgsl_interface! {
    family: "router",
    structs: [Params],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [T, logit_stride]
        logits: read "array<f32>",
        /// [E] selection bias
        bias: read "array<f32>",
        /// [T, top_k + shared_slots]
        ids: read_write "array<u32>",
        /// [T, top_k + shared_slots]
        weights: read_write "array<f32>",
    },
}

pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![BODY])
}

/// How routing scores come from logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// fp32 softmax over all experts (Mixtral, Qwen, OLMoE, DeepSeek-V2, gpt-oss).
    Softmax,
    /// Per-expert sigmoid (DeepSeek-V3).
    Sigmoid,
}

/// How a group of experts is scored for group-limited selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupScore {
    /// The group's best score (DeepSeek-V2 `group_limited_greedy`).
    Max,
    /// The sum of the group's two best (biased) scores (DeepSeek-V3).
    Top2Sum,
}

/// DeepSeek's group-limited selection: experts form `n_group` equal groups, only the `topk_group`
/// best groups may be chosen from.
#[derive(Clone, Copy, Debug)]
pub struct Groups {
    pub n_group: usize,
    pub topk_group: usize,
    pub score: GroupScore,
}

/// Shared experts folded into the routed ones: every token also gets `count` slots for experts
/// `experts..experts + count`, after its top-k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedSlots {
    pub count: usize,
    /// Qwen2-MoE: the slots are weighted by `sigmoid(gate logit)`, a logit row's last value (rows
    /// are then `experts + 1` wide); DeepSeek: by 1.
    pub gated: bool,
}

/// One router configuration for `tokens` rows of `experts` logits.
#[derive(Clone, Copy, Debug)]
pub struct RouterSpec {
    pub tokens: usize,
    pub experts: usize,
    pub top_k: usize,
    pub scoring: Scoring,
    pub groups: Option<Groups>,
    /// Divide the chosen weights by their sum (plus 1e-20 for sigmoid scores, as DeepSeek-V3 does).
    pub renormalize: bool,
    /// Multiply the final weights by this (`routed_scaling_factor`; 1.0 elsewhere).
    pub scale: f32,
    /// Shared experts folded into the routed ones (their slots are not scaled or renormalised).
    pub shared: Option<SharedSlots>,
}

impl RouterSpec {
    /// Logits per token row: the experts', and the shared gate's.
    pub fn logit_stride(&self) -> usize {
        self.experts + self.shared.is_some_and(|s| s.gated) as usize
    }

    /// Ids and weights per token: the top-k, then the shared slots.
    pub fn slots(&self) -> usize {
        self.top_k + self.shared.map_or(0, |s| s.count)
    }
}

fn validate(spec: &RouterSpec, logits: &Tensor, bias: Option<&Tensor>, ids: &Tensor, weights: &Tensor) -> Result<()> {
    let op = "router";
    let RouterSpec {
        tokens, experts, top_k, ..
    } = *spec;
    if experts == 0 || experts > MAX_EXPERTS {
        return Err(shape_err(
            op,
            format!("{experts} experts; the router handles 1..={MAX_EXPERTS}"),
        ));
    }
    if top_k == 0 || top_k > experts {
        return Err(shape_err(
            op,
            format!("top_k {top_k} must be in 1..={experts} (the expert count)"),
        ));
    }
    let stride = spec.logit_stride();
    if logits.len < tokens * stride {
        return Err(shape_err(
            op,
            format!("logits hold {} values, need {tokens}x{stride}", logits.len),
        ));
    }
    if spec.shared.is_some_and(|s| s.count == 0) {
        return Err(shape_err(op, "shared slots must number at least one"));
    }
    if let Some(b) = bias {
        if b.len < experts {
            return Err(shape_err(op, format!("bias holds {} values, need {experts}", b.len)));
        }
    }
    let slots = spec.slots();
    for (name, t) in [("ids", ids), ("weights", weights)] {
        if t.len < tokens * slots {
            return Err(shape_err(
                op,
                format!("{name} holds {} values, need {tokens}x{slots}", t.len),
            ));
        }
    }
    if let Some(g) = spec.groups {
        if g.n_group == 0 || !experts.is_multiple_of(g.n_group) {
            return Err(shape_err(
                op,
                format!("{experts} experts do not split into {} groups", g.n_group),
            ));
        }
        if g.topk_group == 0 || g.topk_group > g.n_group {
            return Err(shape_err(
                op,
                format!("topk_group {} must be in 1..={}", g.topk_group, g.n_group),
            ));
        }
        let size = experts / g.n_group;
        if g.score == GroupScore::Top2Sum && size < 2 {
            return Err(shape_err(
                op,
                format!("top-2 group scores need groups of at least 2 experts, got {size}"),
            ));
        }
        if top_k > g.topk_group * size {
            return Err(shape_err(
                op,
                format!(
                    "top_k {top_k} exceeds the {} experts in the {} kept groups",
                    g.topk_group * size,
                    g.topk_group
                ),
            ));
        }
    }
    Ok(())
}

/// Build the router dispatch: `logits [tokens, experts (+1 for a shared gate)]` (+ `bias [experts]`
/// for selection only) -> `ids [tokens, slots]` (u32: the top-k by descending selection score, then
/// the shared experts) and `weights [tokens, slots]` (f32).
pub fn router(
    ctx: &Context,
    spec: &RouterSpec,
    logits: &Tensor,
    bias: Option<&Tensor>,
    ids: &Tensor,
    weights: &Tensor,
) -> Result<Dispatch> {
    validate(spec, logits, bias, ids, weights)?;
    let (n_group, topk_group, top2) = match spec.groups {
        Some(g) => (g.n_group, g.topk_group, g.score == GroupScore::Top2Sum),
        None => (1, 1, false),
    };
    let params = ctx.params(&Params {
        tokens: spec.tokens as u32,
        experts: spec.experts as u32,
        top_k: spec.top_k as u32,
        n_group: n_group as u32,
        topk_group: topk_group as u32,
        group_size: (spec.experts / n_group) as u32,
        renormalize: spec.renormalize as u32,
        shared_slots: spec.shared.map_or(0, |s| s.count as u32),
        scale: spec.scale,
        eps: if spec.scoring == Scoring::Sigmoid { 1e-20 } else { 0.0 },
        logit_stride: spec.logit_stride() as u32,
        shared_gate: spec.shared.is_some_and(|s| s.gated) as u32,
    });
    // One invocation per expert; a power of two for the tree reductions, whole subgroups for the
    // fast path.
    let mut wg = spec.experts.next_power_of_two().max(32) as u32;
    let subgroups = ctx.caps.subgroups_usable() && ctx.caps.subgroup_max <= MAX_EXPERTS as u32;
    if subgroups {
        wg = wg.max(ctx.caps.subgroup_max.next_power_of_two());
    }
    let consts = Consts {
        WG: wg,
        SIGMOID: spec.scoring == Scoring::Sigmoid,
        HAS_BIAS: bias.is_some(),
        GROUPS: spec.groups.is_some(),
        TOP2: top2,
        SUBGROUPS: subgroups,
    };
    let entry = if subgroups { "router_sg" } else { "router" };
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), entry, &consts.constants());
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::logits, logits.binding()),
        (bind::bias, bias.map_or(ctx.dummy.as_entire_binding(), |b| b.binding())),
        (bind::ids, ids.binding()),
        (bind::weights, weights.binding()),
    ];
    Ok(Dispatch::new(
        ctx,
        "router",
        pipeline,
        &res,
        grid(spec.tokens as u32),
        vec![params.clone()],
    ))
}
