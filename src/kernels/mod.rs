//! The Rust side of every kernel family: pipelines, bind groups and dispatch shapes. Each family's
//! shader is `shaders/<family>.wgsl`; its tests are `kernels-tests/<family>.rs`.
//!
//! A kernel constructor validates shapes and returns [`Dispatch`](crate::gpu::Dispatch)es built once (pipelines, bind
//! groups, parameter buffers); recording one into a pass allocates nothing.

pub mod attention;
pub mod bench;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod mla;
pub mod moe;
pub mod qkv;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod sampling;
pub mod swiglu;

use crate::gpu::{Compose, FORMATS};
#[cfg(test)]
use crate::gpu::{EntryBindings, Needs};

/// Every mode of the GEMM bodies (src/kernels/matmul/variant.rs).
pub const GEMM_MODES: &[&matmul::Mode] = &[&matmul::DENSE, &moe::GATE_UP, &moe::DOWN];

/// Every source variant of every family (what `interface_tests` checks against naga's reflection).
pub fn all_variants() -> Vec<Compose<'static>> {
    let mut v = vec![
        attention::compose(),
        bench::compose(),
        elementwise::compose(),
        qkv::compose(),
        rmsnorm::compose(),
        rope::compose(),
        router::compose(),
        sampling::compose(),
        swiglu::compose(),
    ];
    for f in FORMATS {
        v.extend([embedding::compose(f), mla::compose(f)]);
    }
    v.extend(matmul::Variant::all(GEMM_MODES).iter().map(matmul::Variant::compose));
    v
}

/// What the kernels need of an adapter ([`Needs`]): the buffers each entry point of every variant
/// binds, as naga reflects the composed source (wgpu lays out each pipeline from the same
/// reflection). The GPU layer keeps the result ([`crate::gpu::KERNEL_BINDINGS`]) to check adapters
/// against; `recorded_bindings_match_the_sources` keeps the two equal.
#[cfg(test)]
pub fn needs() -> &'static Needs {
    static NEEDS: std::sync::OnceLock<Needs> = std::sync::OnceLock::new();
    NEEDS.get_or_init(|| {
        let entries: Vec<EntryBindings> = all_variants().iter().flat_map(entry_bindings).collect();
        Needs::of(&entries)
    })
}

/// The storage and uniform buffers each entry point of `c` uses (without subgroups: the same
/// bindings either way). A source naga does not take counts nothing here; its pipeline's own
/// error names it, and `interface_tests` keeps every variant valid.
#[cfg(test)]
fn entry_bindings(c: &Compose<'_>) -> Vec<EntryBindings> {
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let shader = c.build(false);
    let Ok(module) = naga::front::wgsl::parse_str(&shader.source) else {
        return Vec::new();
    };
    let Ok(info) = Validator::new(ValidationFlags::empty(), Capabilities::all()).validate(&module) else {
        return Vec::new();
    };
    module
        .entry_points
        .iter()
        .enumerate()
        .map(|(i, ep)| {
            let used = info.get_entry_point(i);
            let (mut storage, mut uniform) = (0, 0);
            for (h, g) in module.global_variables.iter() {
                if used[h].is_empty() {
                    continue;
                }
                match g.space {
                    naga::AddressSpace::Storage { .. } => storage += 1,
                    naga::AddressSpace::Uniform => uniform += 1,
                    _ => {}
                }
            }
            EntryBindings {
                what: format!("{} {}", c.family(), ep.name),
                storage,
                uniform,
            }
        })
        .collect()
}

#[cfg(test)]
mod gles_tests;

#[cfg(test)]
mod needs_tests {
    /// The binding counts the GPU layer checks adapters against are the kernels' own.
    #[test]
    fn recorded_bindings_match_the_sources() {
        assert_eq!(
            super::needs().0,
            crate::gpu::kernel_needs().0,
            "update gpu::KERNEL_BINDINGS to what the kernels bind now"
        );
    }
}
#[cfg(test)]
mod interface_tests;

/// The per-step values kernels read from GPU memory rather than from their parameters, so that a
/// recorded decode step can be replayed unchanged (DESIGN.md principle 3). A `u32` storage buffer
/// (bind it read-only as `array<u32>`); the host or a kernel writes it before each step.
pub mod step {
    /// Position of the first token of this batch (= tokens already in the KV cache).
    pub const POS0: usize = 0;
    /// Tokens in this batch.
    pub const N_TOKENS: usize = 1;
    /// The first cache row of the batch's sequence (0 for a session's own cache; a slot's first
    /// row in a batch cache).
    pub const BASE: usize = 2;
    /// 1: the tokens' places are in the table that follows, not `POS0` / `BASE`.
    pub const TABLE: usize = 3;
    /// Words in the step buffer (without a table).
    pub const LEN: usize = 4;
    /// The WGSL of `token_pos(t)` / `token_base(t)` for kernels that bind the buffer as `step`.
    pub const WGSL: &str = include_str!("../../shaders/step.wgsl");

    /// A step buffer holding `pos0` and `n_tokens`.
    pub fn new(ctx: &crate::gpu::Context, pos0: u32, n_tokens: u32) -> crate::gpu::Tensor {
        crate::gpu::Tensor::from_u32(ctx, "step", &[pos0, n_tokens, 0, 0])
    }

    /// A step buffer with room for a table of `rows` tokens.
    pub fn with_table(ctx: &crate::gpu::Context, rows: usize) -> crate::gpu::Tensor {
        crate::gpu::Tensor::from_u32(ctx, "step", &vec![0; LEN + 2 * rows])
    }

    /// The words of a contiguous step: `n_tokens` tokens from `pos0` of the sequence whose cache
    /// rows start at `base`.
    pub fn contiguous(pos0: usize, n_tokens: usize, base: usize) -> [u32; LEN] {
        [pos0 as u32, n_tokens as u32, base as u32, 0]
    }

    /// The words of a table step: token t at (first cache row, position) `places[t]`.
    pub fn table(places: &[(usize, usize)]) -> Vec<u32> {
        let mut w = vec![places.first().map_or(0, |p| p.1) as u32, places.len() as u32, 0, 1];
        for &(base, pos) in places {
            w.extend([base as u32, pos as u32]);
        }
        w
    }
}
