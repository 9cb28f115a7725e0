//! Causal attention over a KV cache (MODELS.md §1, §6.5, §7) and the cache writer.
//!
//! [`attention`] serves prefill and decode alike: query token t is at position `step[POS0] + t`
//! and sees cache positions `<= pos` (and `> pos - window` with a sliding window). GQA, MQA and
//! DeepSeek's absorbed MLA are all the same kernels with different strides: for MLA the query is
//! `(q_lat | q_pe)` per head, the cache row is `[c | k_pe]` with one KV head, and the values are
//! the first `r` floats of each cache row (the value binding aliases the key buffer).
//! [`kv_store`] copies this batch's keys or values into the cache at the positions of the step
//! buffer, so a recorded decode step replays unchanged.
//!
//! Caches hold f32 or f16 elements ([`KvDtype`], in [`AttnSpec::kv_dtype`] and
//! [`KvStoreSpec::dtype`]): f16 pairs are packed into u32 words and widened to f32 as they load, so
//! an f16 cache halves the bytes read per token of context. Strides and offsets count elements.
//!
//! Which kernel runs ([`plan`], overridable through [`AttnSpec::tuning`]):
//! - **Tiled** (prefill, `tokens >= TILE_MIN_TOKENS` and `v_dim <= 256` with a tile that fits the
//!   adapter's workgroup memory): BQ (token, head) rows of one KV group share K/V tiles staged in
//!   workgroup memory; key tiles that every row masks (causal future, before the window) are skipped.
//! - **Rows** (decode, short batches, MLA's 576-float keys): one workgroup per (token, RW query heads
//!   of one KV group, key chunk); the RW heads share each key and value load. With more than one
//!   chunk (split-KV / flash-decoding) the visible range is cut at run time from the step buffer
//!   into at most `chunks` chunks; the last chunk to finish merges the partials in the same dispatch
//!   (an atomic arrival counter and device-scope barriers, so split-KV is used on Vulkan only; other
//!   backends get one chunk per row).

use super::step;
use crate::error::{shape_err, Error, Result};
use crate::gpu::shader::{Compose, Overrides};
use crate::gpu::{grid, Context, Dispatch, Tensor};

const BODY: &str = include_str!("../../shaders/attention.wgsl");

crate::wgsl_struct! {
    pub(crate) struct Params {
        tokens: u32,
        heads: u32,
        /// Query heads per KV head.
        group: u32,
        k_dim: u32,
        v_dim: u32,
        q_row_stride: u32,
        q_head_stride: u32,
        k_stride: u32,
        k_head_stride: u32,
        v_stride: u32,
        v_head_stride: u32,
        v_offset: u32,
        /// 0: no sliding window.
        window: u32,
        max_seq: u32,
        scale: f32,
        /// Head slices per token: heads / RW (rows) or heads / RH (tile).
        slices: u32,
        /// Rows: key chunks dispatched per (token, slice) (1: no split) and the fewest keys in a chunk.
        chunks: u32,
        min_chunk: u32,
        /// Rows with chunks > 1: word index of the arrival counters in `part`.
        arrivals_at: u32,
        /// Q8: word index of each cache's block scales, and log2 of the block size.
        k_scales: u32,
        v_scales: u32,
        q8_shift: u32,
    }
}

crate::wgsl_struct! {
    /// kv_store's layout.
    pub(crate) struct StoreParams {
        tokens: u32,
        width: u32,
        src_stride: u32,
        src_offset: u32,
        dst_stride: u32,
        dst_offset: u32,
        max_seq: u32,
    }
}

crate::wgsl_consts! {
    pub(crate) const CONSTS = {
        /// Most query heads per rows workgroup.
        RMAX: u32 = 16,
        /// Most output dims one tile invocation accumulates.
        NACC_MAX: u32 = 32,
        /// kv_store's workgroup: one invocation per cache word.
        STORE_WG: u32 = 64,
    }
}

crate::wgsl_overrides! {
    pub(crate) struct Consts {
        WG: u32 = 64,
        /// ceil(k_dim / 4): queries are kept as vec4s.
        KQ: u32 = 32,
        /// v_dim.
        VMAX: u32 = 128,
        SINKS: bool = false,
        SG: bool = false,
        /// The caches hold f16 pairs instead of f32.
        KV16: bool = false,
        /// The caches hold 8-bit blocks with f32 scales.
        KV8: bool = false,
        /// k_dim, k_stride and k_head_stride are multiples of 4: load keys as vec4s through kc4
        /// (f32), or as word pairs (f16).
        VEC4: bool = false,
        /// f16 caches whose k_dim, k_stride and k_head_stride are multiples of 8: the rows kernel
        /// loads 8 halves at a time through kc4.
        VEC8: bool = false,
        /// q8 caches whose k_dim, k_stride and k_head_stride are multiples of 16, in blocks of at
        /// least 16: the rows kernel loads 16 bytes (one scale) at a time through kc4.
        VEC16: bool = false,
        /// The same for values (v_dim, v_stride, v_head_stride, v_offset) through vc4 (tile kernel).
        VVEC4: bool = false,
        /// Rows: query heads per workgroup (<= RMAX, divides the group).
        RW: u32 = 1,
        /// Tile: rows (token, head pairs) and keys per tile, heads per tile, accumulators per
        /// invocation, vec4s per staged K/V row (padded so rows do not all start in one bank).
        BQ: u32 = 16,
        BK: u32 = 8,
        RH: u32 = 1,
        NACC: u32 = 16,
        KT4: u32 = 33,
    }
}

crate::wgsl_interface! {
    family: "attention",
    structs: [Params, StoreParams],
    consts: CONSTS,
    overrides: Consts,
    bindings: {
        p: uniform Params,
        /// [T, H, k_dim] at q_row_stride / q_head_stride
        q: read "array<f32>",
        /// The key cache: [max_seq, KV, k_dim] elements at k_stride / k_head_stride.
        kc: read "array<u32>",
        /// The value cache (may be the key buffer: MLA).
        vc: read "array<u32>",
        /// [H] (gpt-oss)
        sinks: read "array<f32>",
        step: read "array<u32>",
        /// [T, H, v_dim]
        o: read_write "array<f32>",
        sp: uniform StoreParams,
        /// kv_store: [T, src_stride] rows
        src: read "array<f32>",
        /// kv_store: the cache written
        cache: read_write "array<u32>",
        /// The key / value buffers again, viewed as vec4s (bound to the same buffers).
        kc4: read "array<vec4<u32>>",
        /// Split-KV scratch (one binding, within the portable 8 storage buffers): per (token, head,
        /// chunk) [m, l, acc[v_dim]] as f32 bits, then from `arrivals_at` one arrival counter per
        /// (token, head slice), zero between dispatches. Every access is atomic, so partials move
        /// through the device-coherent path whatever the backend caches.
        part: read_write "array<atomic<u32>>",
        vc4: read "array<vec4<u32>>",
    },
}

pub(crate) fn compose() -> Compose<'static> {
    Compose::new(&INTERFACE, vec![super::step::WGSL, BODY])
}

/// How the KV cache stores its elements. Every cache is a [`Tensor`] of 32-bit words:
/// - `F32`: f32 values;
/// - `F16`: IEEE half pairs (element `2i` in the low 16 bits of word `i`, as `pack2x16float`
///   writes and `unpack2x16float` reads, so no `shader-f16` feature is needed);
/// - `Q8`: 8-bit blocks. Element `e` is the signed byte `e % 4` of word `e / 4` (as `pack4x8snorm`
///   writes: `q = floor(0.5 + 127 * x / a)`), times `a / 127`, where `a` is its block's largest
///   magnitude, an f32 stored after the data: word `ceil(elems / 4) + e / B`. Blocks are `B`
///   consecutive elements of one writer row (a KV head, or MLA's latent row), `B` the largest power
///   of two up to 32 dividing the row ([`KvDtype::q8_block`]).
///
/// Kernels widen every element to f32 in registers and do all math in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KvDtype {
    /// Half the memory and half the bytes read per token of context; k and v are rounded to f16
    /// (relative error <= 2^-11) when stored. The runtime's default.
    F16,
    /// Exact f32 values (parity tests, `wgmoe logits`).
    F32,
    /// About 9 bits per element (a quarter of f32, 56% of f16) for long contexts; each element is
    /// within half a step (`a / 254`) of its value.
    Q8,
}

impl KvDtype {
    /// 32-bit words holding `elems` elements written in rows of `row` elements.
    pub fn words(self, elems: usize, row: usize) -> usize {
        match self {
            KvDtype::F32 => elems,
            KvDtype::F16 => elems.div_ceil(2),
            KvDtype::Q8 => elems.div_ceil(4) + elems.div_ceil(Self::q8_block(row)),
        }
    }

    /// Q8: elements per scale block for rows of `row` elements (32 for every real model's heads).
    pub fn q8_block(row: usize) -> usize {
        1 << row.trailing_zeros().min(5)
    }

    /// Bits one element takes, block scales included.
    pub fn bits_per_elem(self, row: usize) -> f64 {
        match self {
            KvDtype::F32 => 32.0,
            KvDtype::F16 => 16.0,
            KvDtype::Q8 => 8.0 + 32.0 / Self::q8_block(row) as f64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "f32",
            KvDtype::F16 => "f16",
            KvDtype::Q8 => "q8",
        }
    }

    /// Cache words holding `values`, written in rows of `row` elements (f16: pairs packed low half
    /// first, an odd tail padded with 0; q8: see the type).
    pub fn encode(self, values: &[f32], row: usize) -> Vec<u32> {
        match self {
            KvDtype::F32 => values.iter().map(|x| x.to_bits()).collect(),
            KvDtype::F16 => values
                .chunks(2)
                .map(|c| {
                    let lo = half::f16::from_f32(c[0]).to_bits() as u32;
                    let hi = c.get(1).map_or(0, |&x| half::f16::from_f32(x).to_bits() as u32);
                    lo | hi << 16
                })
                .collect(),
            KvDtype::Q8 => {
                let block = Self::q8_block(row);
                let scales: Vec<f32> = values
                    .chunks(block)
                    .map(|b| b.iter().fold(0f32, |m, x| m.max(x.abs())))
                    .collect();
                let byte = |i: usize| -> u32 {
                    let a = scales[i / block];
                    let x = if a > 0.0 { (values[i] / a).clamp(-1.0, 1.0) } else { 0.0 };
                    ((0.5 + 127.0 * x).floor() as i32 as u8) as u32
                };
                let mut words: Vec<u32> = (0..values.len().div_ceil(4))
                    .map(|w| {
                        (0..4)
                            .filter(|e| 4 * w + e < values.len())
                            .fold(0, |acc, e| acc | byte(4 * w + e) << (8 * e))
                    })
                    .collect();
                words.extend(scales.iter().map(|a| a.to_bits()));
                words
            }
        }
    }

    /// The `elems` elements of cache words written in rows of `row` elements (inverse of
    /// [`KvDtype::encode`] up to its rounding).
    pub fn decode(self, words: &[u32], elems: usize, row: usize) -> Vec<f32> {
        match self {
            KvDtype::F32 => words[..elems].iter().map(|&w| f32::from_bits(w)).collect(),
            KvDtype::F16 => (0..elems)
                .map(|e| half::f16::from_bits((words[e / 2] >> (16 * (e % 2))) as u16).to_f32())
                .collect(),
            KvDtype::Q8 => {
                let (block, scales) = (Self::q8_block(row), elems.div_ceil(4));
                (0..elems)
                    .map(|e| {
                        let q = (words[e / 4] >> (8 * (e % 4))) as u8 as i8;
                        // unpack4x8snorm: max(q / 127, -1).
                        (q as f32 / 127.0).max(-1.0) * f32::from_bits(words[scales + e / block])
                    })
                    .collect()
            }
        }
    }
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvDtype {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvDtype::F16),
            "f32" => Ok(KvDtype::F32),
            "q8" | "q8_0" => Ok(KvDtype::Q8),
            _ => Err(format!("unknown KV-cache precision {s:?}: use f16, f32 or q8")),
        }
    }
}

/// Shape and cache layout of one attention call. Strides and offsets are in elements (floats, or
/// halves of an f16 cache: any element offset works, odd ones included).
#[derive(Clone, Copy, Debug)]
pub struct AttnSpec {
    /// Query tokens in this batch (1 in decode).
    pub tokens: usize,
    pub heads: usize,
    /// KV heads; each serves `heads / kv_heads` consecutive query heads.
    pub kv_heads: usize,
    /// Dims of `q . k` (MLA absorbed: `r + dr`).
    pub k_dim: usize,
    /// Dims of each value and output head (MLA absorbed: `r`).
    pub v_dim: usize,
    /// Floats between query tokens and between query heads.
    pub q_row_stride: usize,
    pub q_head_stride: usize,
    /// Floats between cache positions and between KV heads of the key cache.
    pub k_stride: usize,
    pub k_head_stride: usize,
    /// The same for the value cache, whose values start `v_offset` floats into it.
    pub v_stride: usize,
    pub v_head_stride: usize,
    pub v_offset: usize,
    /// Multiplies `q . k` (`head_dim^-0.5`, or MLA's `qh^-0.5 * m^2`).
    pub scale: f32,
    /// Sliding window `W`: only the last `W` positions, the current one included, are visible.
    pub window: Option<u32>,
    /// gpt-oss attention sinks (one logit per head).
    pub sinks: bool,
    /// Cache capacity in positions.
    pub max_seq: usize,
    /// How both caches store their elements (the constructors say F32).
    pub kv_dtype: KvDtype,
    /// Elements per row the cache writer stores (a KV head, or MLA's `r + dr`): a Q8 cache's
    /// block size ([`KvDtype::q8_block`]).
    pub kv_row: usize,
    /// Kernel choice; [`AttnTuning::default`] lets [`plan`] decide.
    pub tuning: AttnTuning,
}

/// Which kernel [`attention`] records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttnKernel {
    /// Tiled for prefill-sized batches where a tile fits, rows otherwise.
    #[default]
    Auto,
    /// One workgroup per (token, head slice, key chunk).
    Rows,
    /// Query-row tiles sharing K/V tiles (an error where no tile fits).
    Tiled,
}

/// Overrides for [`plan`]'s choices (tests and benchmarks use them to pin a path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnTuning {
    pub kernel: AttnKernel,
    /// Rows: the most key chunks per (token, head slice); 0 picks from the shape (and the backend),
    /// 1 turns split-KV off. At most the rows workgroup size (64).
    pub max_chunks: usize,
    /// Rows: the fewest keys in a chunk (chunks grow past this as the context grows).
    pub min_chunk: usize,
    /// Rows: query heads per workgroup; 0 picks the most of a KV group that fits.
    pub heads_per_group: usize,
}

impl Default for AttnTuning {
    fn default() -> Self {
        Self {
            kernel: AttnKernel::Auto,
            max_chunks: 0,
            min_chunk: MIN_CHUNK,
            heads_per_group: 0,
        }
    }
}

impl AttnSpec {
    /// Multi-head / grouped-query attention with contiguous `q [T, H, hd]` and separate caches
    /// `[max_seq, KV, hd]`, scale `hd^-0.5`.
    pub fn gqa(tokens: usize, heads: usize, kv_heads: usize, head_dim: usize, max_seq: usize) -> Self {
        let kv_row = kv_heads * head_dim;
        Self {
            tokens,
            heads,
            kv_heads,
            k_dim: head_dim,
            v_dim: head_dim,
            q_row_stride: heads * head_dim,
            q_head_stride: head_dim,
            k_stride: kv_row,
            k_head_stride: head_dim,
            v_stride: kv_row,
            v_head_stride: head_dim,
            v_offset: 0,
            scale: (head_dim as f32).powf(-0.5),
            window: None,
            sinks: false,
            max_seq,
            kv_dtype: KvDtype::F32,
            kv_row: head_dim,
            tuning: AttnTuning::default(),
        }
    }

    /// DeepSeek's absorbed MLA (MODELS.md §6.5): `q [T, H, r + dr]` = (q_lat | q_pe), one cache of
    /// rows `[c | k_pe]` (bind it as both k and v), values = the first `r` floats of each row.
    pub fn mla(tokens: usize, heads: usize, kv_lora_rank: usize, rope_dim: usize, scale: f32, max_seq: usize) -> Self {
        let row = kv_lora_rank + rope_dim;
        Self {
            tokens,
            heads,
            kv_heads: 1,
            k_dim: row,
            v_dim: kv_lora_rank,
            q_row_stride: heads * row,
            q_head_stride: row,
            k_stride: row,
            k_head_stride: row,
            v_stride: row,
            v_head_stride: row,
            v_offset: 0,
            scale,
            window: None,
            sinks: false,
            max_seq,
            kv_dtype: KvDtype::F32,
            kv_row: row,
            tuning: AttnTuning::default(),
        }
    }
}

/// Invocations per rows workgroup (a power of two, within the portable 256); also the most chunks.
const WG: usize = 64;
/// Default fewest keys per split-KV chunk.
pub const MIN_CHUNK: usize = 256;
/// Workgroups split-KV aims for in one dispatch (a GPU has ~100 compute units).
const TARGET_WORKGROUPS: usize = 256;
/// Batches of at least this many tokens use the tiled kernel (where a tile fits).
pub const TILE_MIN_TOKENS: usize = 8;

/// The kernel [`attention`] records for a spec on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnPlan {
    /// `heads` query heads per workgroup, up to `chunks` key chunks of >= `min_chunk` keys each
    /// (1: no split-KV).
    Rows {
        heads: usize,
        chunks: usize,
        min_chunk: usize,
        workgroup_bytes: u64,
    },
    /// Tiles of `rows` (token, head) rows (`heads` heads by `rows / heads` tokens) and `keys` keys,
    /// `invocations` per workgroup.
    Tiled {
        rows: usize,
        keys: usize,
        heads: usize,
        invocations: usize,
        workgroup_bytes: u64,
    },
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn rows_bytes(s: &AttnSpec, rw: usize) -> u64 {
    ((rw * 4 * s.k_dim.div_ceil(4) + rw * s.v_dim + 2 * rw * WG + 2 * RMAX as usize + 1) * 4) as u64
}

/// K/V tile row in vec4s: room for a key or a value, odd so rows start in different banks.
fn tile_row4(s: &AttnSpec) -> usize {
    let r = s.k_dim.div_ceil(4).max(s.v_dim.div_ceil(4));
    r | 1
}

fn tile_bytes(s: &AttnSpec, bq: usize, bk: usize) -> u64 {
    (16 * (bq * s.k_dim.div_ceil(4) + bk * tile_row4(s)) + 4 * bq * bk) as u64
}

fn tile_plan(ctx: &Context, s: &AttnSpec) -> Option<AttnPlan> {
    let group = s.heads / s.kv_heads;
    let limit = ctx.caps.max_workgroup_storage as u64;
    for (bq, bk) in [(32, 32), (32, 16), (16, 16), (16, 8), (8, 8), (8, 4)] {
        // Eight owners per row.
        let wg = 8 * bq;
        if wg > ctx.caps.max_invocations as usize || s.v_dim.div_ceil(8) > NACC_MAX as usize {
            continue;
        }
        let bytes = tile_bytes(s, bq, bk);
        if bytes <= limit {
            let heads = gcd(group, bq);
            return Some(AttnPlan::Tiled {
                rows: bq,
                keys: bk,
                heads,
                invocations: wg,
                workgroup_bytes: bytes,
            });
        }
    }
    None
}

fn rows_plan(ctx: &Context, s: &AttnSpec) -> Result<AttnPlan> {
    let group = s.heads / s.kv_heads;
    let limit = ctx.caps.max_workgroup_storage as u64;
    let t = &s.tuning;
    let rw = if t.heads_per_group > 0 {
        if !group.is_multiple_of(t.heads_per_group) || t.heads_per_group > RMAX as usize {
            return Err(shape_err(
                "attention",
                format!(
                    "{} heads per workgroup must divide the group of {group} and be <= {RMAX}",
                    t.heads_per_group
                ),
            ));
        }
        t.heads_per_group
    } else {
        (1..=group.min(RMAX as usize))
            .rev()
            .find(|&r| group.is_multiple_of(r) && rows_bytes(s, r) <= limit)
            .unwrap_or(1)
    };
    let bytes = rows_bytes(s, rw);
    if bytes > limit {
        return Err(Error::Limit {
            what: format!("attention with k_dim {} and v_dim {}", s.k_dim, s.v_dim),
            needed: bytes,
            limit,
            limit_name: "max_compute_workgroup_storage_size",
        });
    }
    let min_chunk = t.min_chunk.max(1);
    let most = s.max_seq.div_ceil(min_chunk).clamp(1, WG);
    let chunks = match t.max_chunks {
        0 if ctx.info.backend == wgpu::Backend::Vulkan => {
            let slots = s.tokens * (s.heads / rw);
            TARGET_WORKGROUPS.div_ceil(slots.max(1)).clamp(1, most)
        }
        0 => 1,
        n => n.min(most),
    };
    Ok(AttnPlan::Rows {
        heads: rw,
        chunks,
        min_chunk,
        workgroup_bytes: bytes,
    })
}

/// The kernel and shape [`attention`] would record for `spec` on this device.
pub fn plan(ctx: &Context, spec: &AttnSpec) -> Result<AttnPlan> {
    let s = spec;
    if s.heads == 0 || s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(shape_err(
            "attention",
            format!("{} KV heads do not divide {} query heads", s.kv_heads, s.heads),
        ));
    }
    match s.tuning.kernel {
        AttnKernel::Tiled => tile_plan(ctx, s).ok_or_else(|| Error::Limit {
            what: format!("an attention tile with k_dim {} and v_dim {}", s.k_dim, s.v_dim),
            needed: tile_bytes(s, 8, 4),
            limit: ctx.caps.max_workgroup_storage as u64,
            limit_name: "max_compute_workgroup_storage_size",
        }),
        AttnKernel::Rows => rows_plan(ctx, s),
        AttnKernel::Auto => match (s.tokens >= TILE_MIN_TOKENS).then(|| tile_plan(ctx, s)).flatten() {
            Some(p) => Ok(p),
            None => rows_plan(ctx, s),
        },
    }
}

/// Last float index + 1 touched by `n` items of `len` floats at `stride`, plus `m` groups at `group_stride`.
fn extent(offset: usize, n: usize, stride: usize, m: usize, group_stride: usize, len: usize) -> usize {
    if n == 0 || m == 0 {
        return 0;
    }
    offset + (n - 1) * stride + (m - 1) * group_stride + len
}

fn check_buffer(op: &'static str, what: &str, t: &Tensor, need: usize) -> Result<()> {
    if need > t.len {
        return Err(shape_err(
            op,
            format!("{what} holds {} floats, the layout needs {need}", t.len),
        ));
    }
    Ok(())
}

/// `t` holds the words of `need` elements of `dtype` (written in rows of `row`).
fn check_cache(op: &'static str, what: &str, t: &Tensor, need: usize, dtype: KvDtype, row: usize) -> Result<()> {
    let words = dtype.words(need, row);
    if words > t.len {
        return Err(shape_err(
            op,
            format!(
                "{what} holds {} words, the layout needs {need} {dtype} elements ({words} words)",
                t.len
            ),
        ));
    }
    Ok(())
}

fn check_u32(op: &'static str, what: &str, v: usize) -> Result<()> {
    if v > u32::MAX as usize {
        return Err(shape_err(op, format!("{what} = {v} does not fit a u32")));
    }
    Ok(())
}

struct Buffers<'a> {
    q: &'a Tensor,
    k: &'a Tensor,
    v: &'a Tensor,
    sinks: Option<&'a Tensor>,
    step: &'a Tensor,
    o: &'a Tensor,
}

fn validate(ctx: &Context, s: &AttnSpec, b: &Buffers) -> Result<()> {
    let op = "attention";
    if s.heads == 0 || s.kv_heads == 0 || !s.heads.is_multiple_of(s.kv_heads) {
        return Err(shape_err(
            op,
            format!("{} KV heads do not divide {} query heads", s.kv_heads, s.heads),
        ));
    }
    if s.k_dim == 0 || s.v_dim == 0 {
        return Err(shape_err(
            op,
            format!("head dims must be positive (k {} v {})", s.k_dim, s.v_dim),
        ));
    }
    if s.max_seq == 0 || s.tokens > s.max_seq {
        return Err(shape_err(
            op,
            format!("{} tokens do not fit a cache of {} positions", s.tokens, s.max_seq),
        ));
    }
    if s.window == Some(0) {
        return Err(shape_err(op, "a sliding window of 0 positions sees nothing"));
    }
    for (what, v) in [
        ("k_stride", s.k_stride),
        ("v_stride", s.v_stride),
        ("max_seq", s.max_seq),
        ("tokens*heads", s.tokens * s.heads),
    ] {
        check_u32(op, what, v)?;
    }
    let q_need = extent(0, s.tokens, s.q_row_stride, s.heads, s.q_head_stride, s.k_dim);
    check_buffer(op, "q", b.q, q_need)?;
    let k_need = extent(0, s.max_seq, s.k_stride, s.kv_heads, s.k_head_stride, s.k_dim);
    let v_need = extent(s.v_offset, s.max_seq, s.v_stride, s.kv_heads, s.v_head_stride, s.v_dim);
    if s.kv_dtype == KvDtype::Q8 {
        // Blocks are whole: every row starts on one, and each holds whole words.
        let block = KvDtype::q8_block(s.kv_row);
        let layout = [s.k_stride, s.k_head_stride, s.v_stride, s.v_head_stride, s.v_offset];
        if !s.kv_row.is_multiple_of(4) || layout.iter().any(|v| !v.is_multiple_of(block)) {
            return Err(shape_err(
                op,
                format!(
                    "a q8 cache needs rows of a multiple of 4 elements ({}) and strides and offsets of whole {block}-element blocks",
                    s.kv_row
                ),
            ));
        }
        // The scales follow the data of the whole cache (max_seq rows).
        check_cache(
            op,
            "the key cache",
            b.k,
            k_need.max(s.max_seq * s.k_stride),
            s.kv_dtype,
            s.kv_row,
        )?;
        check_cache(
            op,
            "the value cache",
            b.v,
            v_need.max(s.max_seq * s.v_stride),
            s.kv_dtype,
            s.kv_row,
        )?;
    } else {
        check_cache(op, "the key cache", b.k, k_need, s.kv_dtype, s.kv_row)?;
        check_cache(op, "the value cache", b.v, v_need, s.kv_dtype, s.kv_row)?;
    }
    check_buffer(op, "o", b.o, s.tokens * s.heads * s.v_dim)?;
    match (s.sinks, b.sinks) {
        (true, Some(t)) => check_buffer(op, "sinks", t, s.heads)?,
        (true, None) => return Err(shape_err(op, "the spec asks for sinks but no sink tensor was given")),
        (false, Some(_)) => return Err(shape_err(op, "a sink tensor was given but the spec has sinks off")),
        (false, None) => {}
    }
    if b.step.len < step::LEN {
        return Err(shape_err(
            op,
            format!("the step buffer holds {} words, need {}", b.step.len, step::LEN),
        ));
    }
    let _ = ctx;
    Ok(())
}

/// One attention dispatch: `o[t, h, :] = softmax_j(scale * q[t, h] . k[j, g(h)]) @ v[j, g(h)]`
/// over the visible cache positions, with `o` contiguous `[T, H, v_dim]`. `k_cache` and `v_cache`
/// may be the same tensor. `sinks` is `[H]` when `spec.sinks`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    ctx: &Context,
    spec: AttnSpec,
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    sinks: Option<&Tensor>,
    step_buf: &Tensor,
    o: &Tensor,
) -> Result<Dispatch> {
    let s = spec;
    validate(
        ctx,
        &s,
        &Buffers {
            q,
            k: k_cache,
            v: v_cache,
            sinks,
            step: step_buf,
            o,
        },
    )?;
    let plan = plan(ctx, &s)?;
    let group = s.heads / s.kv_heads;
    let (slices, chunks, min_chunk) = match plan {
        AttnPlan::Rows {
            heads,
            chunks,
            min_chunk,
            ..
        } => (s.heads / heads, chunks, min_chunk),
        AttnPlan::Tiled { heads, .. } => (s.heads / heads, 1, 1),
    };
    let scratch = match plan {
        AttnPlan::Rows { chunks, .. } if chunks > 1 => {
            // Partials, then one arrival counter per (token, head slice).
            let floats = s.tokens * s.heads * chunks * (s.v_dim + 2);
            check_u32("attention", "split-KV scratch", floats + s.tokens * slices)?;
            Some((
                Tensor::zeros(ctx, "attention.partials", floats + s.tokens * slices),
                floats,
            ))
        }
        _ => None,
    };
    let params = ctx.params(&Params {
        tokens: s.tokens as u32,
        heads: s.heads as u32,
        group: group as u32,
        k_dim: s.k_dim as u32,
        v_dim: s.v_dim as u32,
        q_row_stride: s.q_row_stride as u32,
        q_head_stride: s.q_head_stride as u32,
        k_stride: s.k_stride as u32,
        k_head_stride: s.k_head_stride as u32,
        v_stride: s.v_stride as u32,
        v_head_stride: s.v_head_stride as u32,
        v_offset: s.v_offset as u32,
        window: s.window.unwrap_or(0),
        max_seq: s.max_seq as u32,
        scale: s.scale,
        slices: slices as u32,
        chunks: chunks as u32,
        min_chunk: min_chunk as u32,
        arrivals_at: scratch.as_ref().map_or(0, |(_, at)| *at as u32),
        k_scales: (s.max_seq * s.k_stride).div_ceil(4) as u32,
        v_scales: (s.max_seq * s.v_stride).div_ceil(4) as u32,
        q8_shift: KvDtype::q8_block(s.kv_row).trailing_zeros(),
    });
    let sg = ctx.caps.subgroups_usable();
    let vec4 = [s.k_dim, s.k_stride, s.k_head_stride]
        .iter()
        .all(|v| v.is_multiple_of(4));
    let vvec4 = [s.v_dim, s.v_stride, s.v_head_stride, s.v_offset]
        .iter()
        .all(|v| v.is_multiple_of(4));
    let kv16 = s.kv_dtype == KvDtype::F16;
    let vec8 = kv16
        && [s.k_dim, s.k_stride, s.k_head_stride]
            .iter()
            .all(|v| v.is_multiple_of(8));
    let vec16 = s.kv_dtype == KvDtype::Q8
        && KvDtype::q8_block(s.kv_row) >= 16
        && [s.k_dim, s.k_stride, s.k_head_stride]
            .iter()
            .all(|v| v.is_multiple_of(16));
    let mut consts = Consts {
        KQ: s.k_dim.div_ceil(4) as u32,
        VMAX: s.v_dim as u32,
        SINKS: s.sinks,
        VEC4: vec4,
        KV16: kv16,
        KV8: s.kv_dtype == KvDtype::Q8,
        VEC8: vec8,
        VEC16: vec16,
        ..Consts::default()
    };
    let sinks_res = sinks.map_or(ctx.dummy.as_entire_binding(), |t| t.binding());
    let mut res = vec![
        (bind::p, params.as_entire_binding()),
        (bind::q, q.binding()),
        (bind::kc, k_cache.binding()),
        (bind::vc, v_cache.binding()),
        (bind::sinks, sinks_res),
        (bind::step, step_buf.binding()),
        (bind::o, o.binding()),
        (bind::kc4, k_cache.binding()),
    ];
    let mut owned = vec![params.clone()];
    let (entry, groups) = match plan {
        AttnPlan::Rows { heads, chunks, .. } => {
            consts = Consts {
                WG: WG as u32,
                RW: heads as u32,
                SG: sg,
                ..consts
            };
            let entry = match (chunks > 1, sg) {
                (false, false) => "attention",
                (false, true) => "attention_sg",
                (true, false) => "attention_split",
                (true, true) => "attention_split_sg",
            };
            if let Some((part, _)) = &scratch {
                res.push((bind::part, part.binding()));
                owned.push((*part.buffer).clone());
            }
            (entry, grid((s.tokens * slices * chunks) as u32))
        }
        AttnPlan::Tiled {
            rows,
            keys,
            heads,
            invocations,
            ..
        } => {
            let tpr = invocations / rows;
            consts = Consts {
                WG: invocations as u32,
                BQ: rows as u32,
                BK: keys as u32,
                RH: heads as u32,
                NACC: s.v_dim.div_ceil(tpr) as u32,
                KT4: tile_row4(&s) as u32,
                VVEC4: vvec4,
                ..consts
            };
            res.push((bind::vc4, v_cache.binding()));
            let tiles = s.tokens.div_ceil(rows / heads);
            ("attention_tile", grid((tiles * slices) as u32))
        }
    };
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), entry, &consts.constants());
    Ok(Dispatch::new(ctx, "attention", pipeline, &res, groups, owned))
}

/// Where [`kv_store`] copies from and to: `tokens` rows of `width` floats, read from the source at
/// `src_offset + t * src_stride` and written to cache row `pos0 + t` at
/// `dst_offset + pos * dst_stride` (cache elements of `dtype`), for a cache of `max_seq` rows. An
/// f16 cache is written in whole words, so there `width`, `dst_stride` and `dst_offset` must be even.
///
/// Examples: the K part of a fused qkv row is `src_offset = H*hd`, `src_stride = (H+2KV)*hd`,
/// `width = KV*hd`; MLA stores the whole normed-and-roped `kv_a` row (`width = r + dr`).
#[derive(Clone, Copy, Debug)]
pub struct KvStoreSpec {
    pub tokens: usize,
    pub width: usize,
    pub src_stride: usize,
    pub src_offset: usize,
    pub dst_stride: usize,
    pub dst_offset: usize,
    pub max_seq: usize,
    pub dtype: KvDtype,
}

impl KvStoreSpec {
    /// Packed rows of `width` on both sides, into an f32 cache.
    pub fn packed(tokens: usize, width: usize, max_seq: usize) -> Self {
        Self {
            tokens,
            width,
            src_stride: width,
            src_offset: 0,
            dst_stride: width,
            dst_offset: 0,
            max_seq,
            dtype: KvDtype::F32,
        }
    }
}

/// Copy this batch's rows into the cache at positions `step[POS0]..step[POS0] + tokens`; rows that
/// would land past `max_seq` are dropped (the host keeps positions within the cache).
pub fn kv_store(ctx: &Context, src: &Tensor, cache: &Tensor, spec: KvStoreSpec, step_buf: &Tensor) -> Result<Dispatch> {
    let op = "kv_store";
    let s = spec;
    if s.width == 0 || s.max_seq == 0 || s.tokens > s.max_seq {
        return Err(shape_err(
            op,
            format!(
                "{} rows of {} floats do not fit a cache of {} positions",
                s.tokens, s.width, s.max_seq
            ),
        ));
    }
    if s.max_seq > 1 && s.width > s.dst_stride {
        return Err(shape_err(
            op,
            format!(
                "rows of {} floats overlap at a cache stride of {}",
                s.width, s.dst_stride
            ),
        ));
    }
    check_buffer(
        op,
        "the source",
        src,
        extent(s.src_offset, s.tokens, s.src_stride, 1, 0, s.width),
    )?;
    if s.dtype == KvDtype::Q8 {
        return Err(shape_err(
            op,
            "kv_store writes f32 and f16 caches; q8 caches are written by prepare_qkv and prepare_mla",
        ));
    }
    if s.dtype == KvDtype::F16 && [s.width, s.dst_stride, s.dst_offset].iter().any(|v| v % 2 != 0) {
        return Err(shape_err(
            op,
            format!(
                "an f16 cache is written in whole words: width {}, dst_stride {} and dst_offset {} must be even",
                s.width, s.dst_stride, s.dst_offset
            ),
        ));
    }
    check_cache(
        op,
        "the cache",
        cache,
        extent(s.dst_offset, s.max_seq, s.dst_stride, 1, 0, s.width),
        s.dtype,
        s.width,
    )?;
    if step_buf.len < step::LEN {
        return Err(shape_err(
            op,
            format!("the step buffer holds {} words, need {}", step_buf.len, step::LEN),
        ));
    }
    check_u32(op, "cache size", s.dst_offset + s.max_seq * s.dst_stride)?;
    check_u32(op, "tokens*width", s.tokens * s.width)?;
    let params = ctx.params(&StoreParams {
        tokens: s.tokens as u32,
        width: s.width as u32,
        src_stride: s.src_stride as u32,
        src_offset: s.src_offset as u32,
        dst_stride: s.dst_stride as u32,
        dst_offset: s.dst_offset as u32,
        max_seq: s.max_seq as u32,
    });
    let consts = Consts {
        KV16: s.dtype == KvDtype::F16,
        ..Consts::default()
    };
    let pipeline = ctx.pipeline(&ctx.shader(&compose()), "kv_store", &consts.constants());
    let res = [
        (bind::sp, params.as_entire_binding()),
        (bind::src, src.binding()),
        (bind::cache, cache.binding()),
        (bind::step, step_buf.binding()),
    ];
    let groups = grid(((s.tokens * s.dtype.words(s.width, s.width)) as u32).div_ceil(STORE_WG));
    Ok(Dispatch::new(
        ctx,
        "kv_store",
        pipeline,
        &res,
        groups,
        vec![params.clone()],
    ))
}
