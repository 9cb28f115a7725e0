//! The variant table of every matrix product: which source parts make a pipeline's module.
//!
//! | axis | values | source |
//! |---|---|---|
//! | weight format | [`FORMATS`](crate::gpu::FORMATS): f32, f16, bf16 | `shaders/formats/<name>.wgsl` (`w_load`) |
//! | mode | dense ([`super::DENSE`]), MoE gate\|up and down ([`crate::kernels::moe::GATE_UP`], [`crate::kernels::moe::DOWN`]) | `shaders/matmul.wgsl`; `shaders/moe.wgsl` + `moe_gate_up.wgsl` / `moe_down.wgsl`: the GEMM hooks (`mm_*`), with the family's GEMVs |
//! | tiles | portable ([`Tiles::Portable`]), cooperative matrices ([`Tiles::Coop`]) | `shaders/gemm.wgsl` / `shaders/gemm_coop.wgsl` |
//! | reduction | subgroups, portable | an entry point of the mode's GEMV (`matvec_sg` / `matvec`, `*_decode_sg` / `*_decode`); subgroup code is stripped where the device has none |
//!
//! A mode is where the product's rows come from and where its outputs go (the gather of MoE's
//! pair lists in the loader, the activation or the routing weights in the epilogue); a body is the
//! arithmetic (tiled f32 FMAs, or cooperative matrices); a format is how weights are read. Each
//! axis is one part of the source, so a new format or a new mode is written once for every body.

use crate::gpu::shader::{Compose, ConstDecl, Interface, Value};
use crate::gpu::{Context, Format, Weight};

/// Where a product's rows come from and where its outputs go: a family's interface and the source
/// parts that define the GEMM hooks (`mm_*`, see shaders/gemm.wgsl). Each mode is declared by its
/// family ([`super::DENSE`], [`crate::kernels::moe::GATE_UP`], [`crate::kernels::moe::DOWN`]).
#[derive(Debug)]
pub struct Mode {
    pub name: &'static str,
    pub interface: &'static Interface,
    pub parts: &'static [&'static str],
    /// Outputs come in (gate, up) column pairs.
    pub paired: bool,
}

/// The arithmetic of a prefill product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiles {
    /// 64x64 blocks of f32 FMAs staged in workgroup memory (every adapter).
    Portable,
    /// f16 cooperative matrices of this side (16 or 8), f32 accumulators.
    Coop(u32),
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub format: &'static Format,
    pub mode: &'static Mode,
    pub tiles: Tiles,
}

/// Subgroups per cooperative-matrix workgroup.
pub const NSG: u32 = 4;

/// Invocations of a portable-tiles workgroup (`BWG`): 16 x 16, 4x4 outputs each of a 64x64 block.
const PORTABLE_WG: u32 = 256;

/// A block of the prefill GEMM: rows (tokens or pairs) by weight rows (outputs, or with paired
/// gate|up, twice the outputs), K-steps of `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub rows: u32,
    pub cols: u32,
    pub k: u32,
}

impl Tiles {
    pub fn block(self) -> Block {
        match self {
            Tiles::Portable => Block {
                rows: 64,
                cols: 64,
                k: 16,
            },
            Tiles::Coop(cm) => Block {
                rows: 4 * cm,
                cols: NSG * 4 * cm,
                k: cm,
            },
        }
    }

    /// Workgroup memory the body takes (its tiles; the mode's pair list and counters included).
    pub fn workgroup_bytes(self) -> u32 {
        let b = self.block();
        let mode = 4 * b.rows + 4;
        match self {
            Tiles::Portable => 4 * (b.rows + b.cols) * b.k + mode,
            Tiles::Coop(cm) => 2 * (b.rows + b.cols) * b.k + 4 * NSG * 2 * cm * cm + mode,
        }
    }

    /// Outputs per block (paired gate|up columns give half as many).
    pub fn outputs(self, paired: bool) -> usize {
        let cols = self.block().cols as usize;
        if paired {
            cols / 2
        } else {
            cols
        }
    }

    /// Invocations per workgroup on this adapter.
    pub fn workgroup(self, ctx: &Context) -> u32 {
        match self {
            Tiles::Portable => PORTABLE_WG,
            Tiles::Coop(_) => NSG * ctx.caps.subgroup_max.max(1),
        }
    }

    fn name(self) -> String {
        match self {
            Tiles::Portable => "tiled".into(),
            Tiles::Coop(cm) => format!("coop{cm}"),
        }
    }

    fn body(self) -> &'static str {
        match self {
            Tiles::Portable => include_str!("../../../shaders/gemm.wgsl"),
            Tiles::Coop(_) => include_str!("../../../shaders/gemm_coop.wgsl"),
        }
    }
}

fn constant(name: &'static str, v: u32) -> ConstDecl {
    ConstDecl {
        name,
        value: Value::u32(v),
        doc: "",
    }
}

impl Variant {
    /// The module: the mode's family (its interface and its part), the format's `w_load`, the
    /// body and the body's block constants.
    pub fn compose(&self) -> Compose<'static> {
        let b = self.tiles.block();
        let mut consts = vec![
            constant("BM", b.rows),
            constant("BN", b.cols),
            constant("BK", b.k),
            constant("NO_ROW", u32::MAX),
        ];
        match self.tiles {
            Tiles::Coop(cm) => consts.extend([constant("CM", cm), constant("NSG", NSG)]),
            Tiles::Portable => consts.push(constant("BWG", PORTABLE_WG)),
        }
        let mut parts = self.mode.parts.to_vec();
        parts.push(self.tiles.body());
        let mut c = Compose {
            variant: format!("{}/{}", self.mode.name, self.tiles.name()),
            interface: self.mode.interface,
            parts,
            consts,
            coop_side: match self.tiles {
                Tiles::Coop(cm) => Some(cm),
                Tiles::Portable => None,
            },
        };
        self.format.apply(&mut c);
        c
    }

    /// The entry point of the body.
    pub fn entry(&self) -> &'static str {
        match self.tiles {
            Tiles::Portable => "gemm",
            Tiles::Coop(_) => "gemm_coop",
        }
    }

    /// Every row: each format in each of `modes`, on portable tiles and, where the format can, on
    /// cooperative matrices of both sides.
    pub fn all(modes: &[&'static Mode]) -> Vec<Variant> {
        let mut v = Vec::new();
        for format in crate::gpu::FORMATS {
            for &mode in modes {
                v.push(Variant {
                    format,
                    mode,
                    tiles: Tiles::Portable,
                });
                if format.coop {
                    for cm in [16, 8] {
                        v.push(Variant {
                            format,
                            mode,
                            tiles: Tiles::Coop(cm),
                        });
                    }
                }
            }
        }
        v
    }
}

/// The cooperative-matrix side this adapter offers prefill products, if any: f16 cooperative
/// matrices (with f16 arithmetic and subgroups) whose tiles fit its workgroup memory.
pub fn coop_side(ctx: &Context) -> Option<u32> {
    let c = &ctx.caps;
    c.coop_f16
        .filter(|&cm| c.f16 && c.subgroups && c.max_workgroup_storage >= Tiles::Coop(cm).workgroup_bytes())
}

/// Whether this adapter and weight can take the cooperative-matrix path.
pub fn coop_available(ctx: &Context, w: &Weight) -> bool {
    coop_side(ctx).is_some() && w.chunks.iter().all(|c| c.format().coop)
}

/// Whether prefill should use cooperative matrices for `w`: available, and not turned off with
/// `WGMOE_COOP_MATRIX=0` (for comparing against the portable tiles).
pub fn coop_enabled(ctx: &Context, w: &Weight) -> bool {
    coop_available(ctx, w) && std::env::var("WGMOE_COOP_MATRIX").map_or(true, |v| v != "0")
}

/// The tiles prefill uses for `w` on this adapter.
pub fn tiles_for(ctx: &Context, w: &Weight) -> Tiles {
    match coop_side(ctx) {
        Some(cm) if coop_enabled(ctx, w) => Tiles::Coop(cm),
        _ => Tiles::Portable,
    }
}
