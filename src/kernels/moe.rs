//! Routed expert FFNs (MODELS.md §3, §7): `y[t] (+)= sum_j w[t,j] * Expert_{ids[t,j]}(x[t])` with
//! `Expert_e(x) = down_e @ act(gate_e @ x + gb_e, up_e @ x + ub_e) + db_e`, reading expert ids and
//! weights from the router's GPU buffers (DESIGN.md principle 7: MoE never syncs).
//!
//! Decode (`tokens <= DECODE_MAX_TOKENS`): two GEMV dispatches per weight chunk, gate+up with the
//! activation fused into a scratch `h [T, k, I]`, then down with the k slots summed, weighted and
//! added to `y` inside each workgroup. Prefill (any T): a per-expert pair list built on the GPU, the
//! prefill GEMM for gate+up in its [`GATE_UP`] mode (gathering x rows through the list, activating
//! into `h`), again in its [`DOWN`] mode (writing weighted rows per (token, slot)), and a reduce over
//! the k slots into `y`. The GEMMs run on cooperative matrices where the adapter has them, on
//! portable tiles elsewhere ([`super::matmul::variant`]).

use super::matmul::variant::{tiles_for, Mode, Tiles, Variant};
use crate::error::{shape_err, Error, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{grid, Context, Dispatch, Format, Tensor, Weight};

/// The MoE block (decode GEMVs, count, reduce) and the GEMM hooks its modes share.
const BODY: &str = include_str!("../../shaders/moe.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        top_k: u32,
        /// D (hidden)
        dim: u32,
        /// I (expert FFN width)
        inter: u32,
        /// words per row of the bound weight chunk
        w_words: u32,
        /// floats per row of h (I rounded up to 8)
        h_stride: u32,
        /// of the bound chunk
        first_expert: u32,
        /// in the bound chunk
        n_experts: u32,
        /// E, all chunks
        experts: u32,
        /// list capacity per expert (= tokens)
        cap: u32,
        /// words per expert row of the bound bias
        bias_words: u32,
        /// add into y instead of overwriting it
        add_into: u32,
        /// clamped SwiGLU
        limit: f32,
        alpha: f32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// moe_count / moe_reduce workgroup size.
        SCAN_WG: u32 = 256,
    }
}

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        WG: u32 = 128,
        B_DTYPE: u32 = 0,
        HAS_BIAS: bool = false,
        /// Gate/up rows interleaved (row 2i = gate i, 2i+1 = up i; gpt-oss) instead of concatenated.
        INTERLEAVED: bool = false,
        /// gpt-oss: g = min(g, limit); u = clamp(u, -limit, limit); (u + 1) * g * sigmoid(alpha * g).
        CLAMPED: bool = false,
        SUBGROUPS: bool = false,
        /// gemm_coop's workgroup: NSG subgroups.
        CWG: u32 = 128,
    }
}

crate::wgsl_interface! {
    family: "moe",
    structs: [Params],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [T, D]
        x: read "array<f32>",
        /// [T, k] expert ids (the router's)
        ids: read "array<u32>",
        /// [T, k] routing weights
        route_w: read "array<f32>",
        /// the bound chunk of stacked experts
        w: read "array<vec4<u32>>",
        /// [E, cols] expert biases
        bias: read "array<u32>",
        /// [T * k, h_stride]
        h_out: read_write "array<f32>",
        h_in: read "array<vec4<f32>>",
        /// [T, D]
        y: read_write "array<f32>",
        /// [E] pairs per expert, [E, cap] pair lists
        counts: read_write "array<u32>",
        lists: read_write "array<u32>",
        counts_in: read "array<u32>",
        lists_in: read "array<u32>",
        /// [T * k, D] weighted rows per (token, slot)
        y_slots: read_write "array<f32>",
        y_slots_in: read "array<f32>",
    },
}

/// MoE gate|up in the GEMM bodies (src/kernels/matmul/variant.rs): the x rows of each expert's
/// gathered (token, slot) pairs, (gate, up) output pairs activated into h.
pub const GATE_UP: Mode = Mode {
    name: "gate_up",
    interface: &INTERFACE,
    parts: &[BODY, include_str!("../../shaders/moe_gate_up.wgsl")],
    paired: true,
};

/// MoE down in the GEMM bodies: the pairs' h rows, outputs weighted by their routing weights into
/// per-slot rows.
pub const DOWN: Mode = Mode {
    name: "down",
    interface: &INTERFACE,
    parts: &[BODY, include_str!("../../shaders/moe_down.wgsl")],
    paired: false,
};

/// The source for experts of `format` that decoding, counting and reducing use (every MoE module
/// has them; this one's GEMM is gate|up's on portable tiles).
pub(crate) fn compose(format: &'static Format) -> Compose<'static> {
    Variant {
        format,
        mode: &GATE_UP,
        tiles: Tiles::Portable,
    }
    .compose()
}

/// The most tokens [`moe`] runs through the decode GEMVs; more go through the grouped GEMMs.
pub const DECODE_MAX_TOKENS: usize = 8;

const DECODE_WG: u32 = 128;

pub use super::swiglu::{Act, GateUpLayout};

/// One layer's stacked experts: `gate_up [experts*2I, hidden]` in groups of 2I rows, `down
/// [experts*hidden, I]` in groups of `hidden` rows, optional biases `[experts, 2I]` and
/// `[experts, hidden]` (gpt-oss).
#[derive(Clone, Copy)]
pub struct Experts<'a> {
    pub gate_up: &'a Weight,
    pub down: &'a Weight,
    pub gate_up_bias: Option<&'a Weight>,
    pub down_bias: Option<&'a Weight>,
}

/// Shapes and options of one MoE block for `tokens` rows (scratch is sized for exactly this many).
#[derive(Clone, Copy, Debug)]
pub struct MoeSpec {
    pub tokens: usize,
    pub experts: usize,
    pub top_k: usize,
    /// D: the model width.
    pub hidden: usize,
    /// I: each expert's FFN width.
    pub inter: usize,
    pub gate_up: GateUpLayout,
    pub act: Act,
    /// Add into `y` (the residual stream) instead of overwriting it.
    pub accumulate: bool,
}

/// The inputs of one MoE block, checked once.
struct Block<'a> {
    spec: MoeSpec,
    x: &'a Tensor,
    ids: &'a Tensor,
    weights: &'a Tensor,
    experts: Experts<'a>,
    y: &'a Tensor,
}

const OP: &str = "moe";

fn check_weight(name: &str, w: &Weight, rows: usize, cols: usize, group_rows: usize) -> Result<()> {
    if w.rows != rows || w.cols != cols || w.group_rows != group_rows {
        return Err(shape_err(
            OP,
            format!(
                "{name} is [{}, {}] in groups of {}, expected [{rows}, {cols}] in groups of {group_rows}",
                w.rows, w.cols, w.group_rows
            ),
        ));
    }
    Ok(())
}

fn check_bias(name: &str, b: Option<&Weight>, experts: usize, cols: usize) -> Result<()> {
    let Some(b) = b else { return Ok(()) };
    if b.rows != experts || b.cols != cols {
        return Err(shape_err(
            OP,
            format!("{name} is [{}, {}], expected [{experts}, {cols}]", b.rows, b.cols),
        ));
    }
    if b.chunks.len() != 1 {
        return Err(shape_err(
            OP,
            format!("{name} must fit one binding, it has {} chunks", b.chunks.len()),
        ));
    }
    Ok(())
}

impl<'a> Block<'a> {
    /// The block's inputs, once their shapes are checked.
    fn checked(
        spec: MoeSpec,
        experts: Experts<'a>,
        x: &'a Tensor,
        ids: &'a Tensor,
        weights: &'a Tensor,
        y: &'a Tensor,
    ) -> Result<Self> {
        let b = Block {
            spec,
            x,
            ids,
            weights,
            experts,
            y,
        };
        b.validate()?;
        Ok(b)
    }

    fn validate(&self) -> Result<()> {
        let MoeSpec {
            tokens: t,
            experts: e,
            top_k: k,
            hidden: d,
            inter: i,
            ..
        } = self.spec;
        if t == 0 || e == 0 || d == 0 || i == 0 {
            return Err(shape_err(
                OP,
                format!("empty shape: tokens {t}, experts {e}, hidden {d}, inter {i}"),
            ));
        }
        if k == 0 || k > e {
            return Err(shape_err(
                OP,
                format!("top_k {k} must be in 1..={e} (the expert count)"),
            ));
        }
        let ex = &self.experts;
        check_weight("gate_up", ex.gate_up, e * 2 * i, d, 2 * i)?;
        check_weight("down", ex.down, e * d, i, d)?;
        check_bias("gate_up_bias", ex.gate_up_bias, e, 2 * i)?;
        check_bias("down_bias", ex.down_bias, e, d)?;
        for (name, len, need) in [
            ("x", self.x.len, t * d),
            ("y", self.y.len, t * d),
            ("ids", self.ids.len, t * k),
            ("weights", self.weights.len, t * k),
        ] {
            if len < need {
                return Err(shape_err(OP, format!("{name} holds {len} values, need {need}")));
            }
        }
        Ok(())
    }

    fn h_stride(&self) -> usize {
        self.spec.inter.next_multiple_of(8)
    }

    fn params(&self) -> Params {
        let s = &self.spec;
        let (limit, alpha) = match s.act {
            Act::Silu => (0.0, 0.0),
            Act::Clamped { limit, alpha } => (limit, alpha),
        };
        Params {
            tokens: s.tokens as u32,
            top_k: s.top_k as u32,
            dim: s.hidden as u32,
            inter: s.inter as u32,
            h_stride: self.h_stride() as u32,
            experts: s.experts as u32,
            cap: s.tokens as u32,
            limit,
            alpha,
            ..Default::default()
        }
    }

    /// Params bound with chunk `c` of weight `w` (and its bias).
    fn chunk_params(&self, w: &Weight, c: usize, bias: Option<&Weight>, add_into: bool) -> Params {
        let chunk = &w.chunks[c];
        Params {
            w_words: chunk.words_per_row as u32,
            first_expert: chunk.first_row / w.group_rows as u32,
            n_experts: chunk.rows / w.group_rows as u32,
            bias_words: bias.map_or(0, |b| b.row_u32s() as u32),
            add_into: add_into as u32,
            ..self.params()
        }
    }

    fn constants(&self, bias: Option<&Weight>, subgroups: bool, wg: u32) -> Consts {
        Consts {
            WG: wg,
            B_DTYPE: bias.map_or(0, |b| b.dtype.code()),
            HAS_BIAS: bias.is_some(),
            INTERLEAVED: self.spec.gate_up == GateUpLayout::Interleaved,
            CLAMPED: matches!(self.spec.act, Act::Clamped { .. }),
            SUBGROUPS: subgroups,
            ..Consts::default()
        }
    }
}

fn scratch(ctx: &Context, label: &str, elems: usize) -> Result<wgpu::Buffer> {
    let bytes = elems as u64 * 4;
    if bytes > ctx.caps.max_storage_binding {
        return Err(Error::Limit {
            what: format!("moe scratch {label} (lower the tokens per MoE call)"),
            needed: bytes,
            limit: ctx.caps.max_storage_binding,
            limit_name: "max_storage_buffer_binding_size",
        });
    }
    Ok(ctx.storage(label, bytes))
}

fn bias_binding<'a>(ctx: &'a Context, b: Option<&'a Weight>) -> wgpu::BindingResource<'a> {
    b.map_or(ctx.dummy.as_entire_binding(), |b| {
        b.chunks[0].buffer.as_entire_binding()
    })
}

/// The whole MoE block: decode GEMVs for up to [`DECODE_MAX_TOKENS`] tokens, grouped GEMMs beyond.
/// `x [tokens, hidden]`, `ids`/`weights [tokens, top_k]` (the router's outputs), `gate_up
/// [experts*2I, hidden]` in groups of 2I rows, `down [experts*hidden, I]` in groups of `hidden` rows,
/// optional biases `[experts, 2I]` and `[experts, hidden]`, `y [tokens, hidden]`.
pub fn moe(
    ctx: &Context,
    spec: MoeSpec,
    experts: Experts<'_>,
    x: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    if spec.tokens <= DECODE_MAX_TOKENS {
        moe_decode(ctx, spec, experts, x, ids, weights, y)
    } else {
        moe_prefill(ctx, spec, experts, x, ids, weights, y)
    }
}

/// Decode path: per gate_up chunk one GEMV dispatch over every (token, slot) writing `h`, then per
/// down chunk one GEMV dispatch summing the slots into `y` (the first chunk overwrites `y` unless
/// `accumulate`, later chunks add). Errors beyond [`DECODE_MAX_TOKENS`] tokens.
pub fn moe_decode(
    ctx: &Context,
    spec: MoeSpec,
    experts: Experts<'_>,
    x: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let b = Block::checked(spec, experts, x, ids, weights, y)?;
    let Experts {
        gate_up,
        down,
        gate_up_bias,
        down_bias,
    } = experts;
    if spec.tokens > DECODE_MAX_TOKENS {
        return Err(shape_err(
            OP,
            format!("decode takes at most {DECODE_MAX_TOKENS} tokens, got {}", spec.tokens),
        ));
    }
    let (t, k, d, i) = (spec.tokens, spec.top_k, spec.hidden, spec.inter);
    let h = scratch(ctx, "moe.h", t * k * b.h_stride())?;
    let subgroups = ctx.caps.subgroups_usable() && ctx.caps.subgroup_max <= DECODE_WG;
    let suffix = if subgroups { "_sg" } else { "" };
    let mut out = Vec::new();
    // Per chunk: routed and folded shared experts may be in different formats.
    let consts = b.constants(gate_up_bias, subgroups, DECODE_WG).constants();
    for c in 0..gate_up.chunks.len() {
        let shader = ctx.shader(&compose(gate_up.chunks[c].format()));
        let pipeline = ctx.pipeline(&shader, &format!("moe_gate_up_decode{suffix}"), &consts);
        let params = ctx.params(&b.chunk_params(gate_up, c, gate_up_bias, false));
        let res = [
            (bind::p, params.as_entire_binding()),
            (bind::x, x.binding()),
            (bind::ids, ids.binding()),
            (bind::w, gate_up.chunks[c].buffer.as_entire_binding()),
            (bind::bias, bias_binding(ctx, gate_up_bias)),
            (bind::h_out, h.as_entire_binding()),
        ];
        let groups = grid((t * k * i.div_ceil(4)) as u32);
        out.push(Dispatch::new(
            ctx,
            "moe.gate_up_decode",
            pipeline.clone(),
            &res,
            groups,
            vec![params.clone(), h.clone()],
        ));
    }
    let consts = b.constants(down_bias, subgroups, DECODE_WG).constants();
    for c in 0..down.chunks.len() {
        let shader = ctx.shader(&compose(down.chunks[c].format()));
        let pipeline = ctx.pipeline(&shader, &format!("moe_down_decode{suffix}"), &consts);
        let add_into = spec.accumulate || c > 0;
        let params = ctx.params(&b.chunk_params(down, c, down_bias, add_into));
        let res = [
            (bind::p, params.as_entire_binding()),
            (bind::ids, ids.binding()),
            (bind::route_w, weights.binding()),
            (bind::w, down.chunks[c].buffer.as_entire_binding()),
            (bind::bias, bias_binding(ctx, down_bias)),
            (bind::h_in, h.as_entire_binding()),
            (bind::y, y.binding()),
        ];
        let groups = grid((t * d.div_ceil(8)) as u32);
        out.push(Dispatch::new(
            ctx,
            "moe.down_decode",
            pipeline.clone(),
            &res,
            groups,
            vec![params.clone(), h.clone()],
        ));
    }
    Ok(out)
}

/// Prefill path: count (per-expert pair lists), per gate_up chunk a grouped GEMM into `h`, per down
/// chunk a grouped GEMM into per-slot rows, and a reduce into `y`. Scratch (lists, `h`, slot rows) is
/// allocated here for `spec.tokens` tokens. Each token must name an expert at most once (as every
/// router does): an expert's list holds at most `tokens` pairs.
pub fn moe_prefill(
    ctx: &Context,
    spec: MoeSpec,
    experts: Experts<'_>,
    x: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
    y: &Tensor,
) -> Result<Vec<Dispatch>> {
    let b = Block::checked(spec, experts, x, ids, weights, y)?;
    let Experts {
        gate_up,
        down,
        gate_up_bias,
        down_bias,
    } = experts;
    let (t, k, d, i, e) = (spec.tokens, spec.top_k, spec.hidden, spec.inter, spec.experts);
    let counts = scratch(ctx, "moe.counts", e)?;
    let lists = scratch(ctx, "moe.lists", e * t)?;
    let h = scratch(ctx, "moe.h", t * k * b.h_stride())?;
    let slots = scratch(ctx, "moe.y_slots", t * k * d)?;
    let owned = |params: &wgpu::Buffer| vec![params.clone(), counts.clone(), lists.clone(), h.clone(), slots.clone()];
    let mut out = Vec::new();

    // Counting and reducing read no weights: any format's source has them.
    let shader = ctx.shader(&compose(gate_up.format()));
    let params = ctx.params(&b.params());
    let pipeline = ctx.pipeline(&shader, "moe_count", &Consts::default().constants());
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::ids, ids.binding()),
        (bind::counts, counts.as_entire_binding()),
        (bind::lists, lists.as_entire_binding()),
    ];
    out.push(Dispatch::new(
        ctx,
        "moe.count",
        pipeline,
        &res,
        grid(e as u32),
        owned(&params),
    ));

    // The grouped GEMMs, on cooperative matrices where the adapter has them, else tiled: each
    // expert's pairs gathered in the loader; gate|up activated into h, down weighted into the
    // per-slot rows. Each binds only what its mode reads.
    let passes = [
        (
            gate_up,
            gate_up_bias,
            &GATE_UP,
            i,
            vec![(bind::x, x.binding()), (bind::h_out, h.as_entire_binding())],
        ),
        (
            down,
            down_bias,
            &DOWN,
            d,
            vec![
                (bind::route_w, weights.binding()),
                (bind::h_in, h.as_entire_binding()),
                (bind::y_slots, slots.as_entire_binding()),
            ],
        ),
    ];
    for (w, bias, mode, outputs, io) in passes {
        let tiles = tiles_for(ctx, w);
        let consts = Consts {
            CWG: tiles.workgroup(ctx),
            ..b.constants(bias, false, DECODE_WG)
        };
        let v = Variant {
            format: w.format(),
            mode,
            tiles,
        };
        let label = match (mode.paired, v.tiles) {
            (true, Tiles::Coop(_)) => "moe.gate_up_coop",
            (true, _) => "moe.gate_up_gemm",
            (false, Tiles::Coop(_)) => "moe.down_coop",
            (false, _) => "moe.down_gemm",
        };
        let groups_m = t.div_ceil(v.tiles.block().rows as usize) as u32;
        for c in 0..w.chunks.len() {
            // Per chunk: routed and folded shared experts may be in different formats.
            let v = Variant {
                format: w.chunks[c].format(),
                ..v
            };
            let pipeline = ctx.pipeline(&ctx.shader(&v.compose()), v.entry(), &consts.constants());
            let p = b.chunk_params(w, c, bias, false);
            let params = ctx.params(&p);
            let mut res = vec![
                (bind::p, params.as_entire_binding()),
                (bind::w, w.chunks[c].buffer.as_entire_binding()),
                (bind::bias, bias_binding(ctx, bias)),
                (bind::counts_in, counts.as_entire_binding()),
                (bind::lists_in, lists.as_entire_binding()),
            ];
            res.extend(io.iter().cloned());
            let groups = [
                outputs.div_ceil(v.tiles.outputs(mode.paired)) as u32,
                groups_m,
                p.n_experts,
            ];
            out.push(Dispatch::new(
                ctx,
                label,
                pipeline.clone(),
                &res,
                groups,
                owned(&params),
            ));
        }
    }

    let params = ctx.params(&Params {
        add_into: spec.accumulate as u32,
        ..b.params()
    });
    let pipeline = ctx.pipeline(&shader, "moe_reduce", &Consts::default().constants());
    let res = [
        (bind::p, params.as_entire_binding()),
        (bind::y, y.binding()),
        (bind::y_slots_in, slots.as_entire_binding()),
    ];
    out.push(Dispatch::new(
        ctx,
        "moe.reduce",
        pipeline,
        &res,
        grid((t * d).div_ceil(SCAN_WG as usize) as u32),
        owned(&params),
    ));
    Ok(out)
}
