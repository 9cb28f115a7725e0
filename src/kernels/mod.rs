//! The Rust side of every kernel family: pipelines, bind groups and dispatch shapes. Each family's
//! shader is `shaders/<family>.wgsl`; its tests are `kernels-tests/<family>.rs`.
//!
//! A kernel constructor validates shapes and returns [`Dispatch`]es built once (pipelines, bind
//! groups, parameter buffers); recording one into a pass allocates nothing.

pub mod attention;
pub mod bench;
pub mod elementwise;
pub mod embedding;
pub mod gemm_coop;
pub mod matmul;
pub mod mla;
pub mod moe;
pub mod moe_coop;
pub mod qkv;
pub mod rmsnorm;
pub mod rope;
pub mod router;
pub mod sampling;
pub mod swiglu;

use crate::gpu::Context;
use std::sync::Arc;

pub const PRELUDE: &str = include_str!("../../shaders/common.wgsl");

/// Every shader family's source, for validation and benchmarks: `(family, source)`.
pub const SHADERS: &[(&str, &str)] = &[
    ("attention", attention::SHADER),
    ("bench", bench::SHADER),
    ("elementwise", elementwise::SHADER),
    ("embedding", embedding::SHADER),
    ("gemm_coop", gemm_coop::SHADER),
    ("matmul", matmul::SHADER),
    ("mla", mla::SHADER),
    ("qkv", qkv::SHADER),
    ("moe", moe::SHADER),
    ("moe_coop", moe_coop::SHADER),
    ("rmsnorm", rmsnorm::SHADER),
    ("rope", rope::SHADER),
    ("router", router::SHADER),
    ("sampling", sampling::SHADER),
    ("swiglu", swiglu::SHADER),
];

/// The cooperative-matrix shaders, also validated in their 8x8 form.
pub const COOP_SHADERS: &[(&str, &str)] = &[("gemm_coop", gemm_coop::SHADER), ("moe_coop", moe_coop::SHADER)];

/// The prelude, then `source`; `enable` directives of the source go first, as WGSL requires.
pub fn with_prelude(source: &str) -> String {
    let (enables, body): (Vec<&str>, Vec<&str>) = source.lines().partition(|l| l.trim_start().starts_with("enable "));
    format!("{}\n{PRELUDE}\n{}", enables.join("\n"), body.join("\n"))
}

/// A cooperative-matrix shader written for 16x16 tiles (`coop_mat16x16`, `const CM: u32 = 16u;`),
/// rewritten for tiles of side `cm`: WGSL types cannot depend on an override, and adapters differ
/// (NVIDIA 16x16, Apple and lavapipe 8x8).
pub fn coop_source(src: &str, cm: u32) -> String {
    if cm == 16 {
        return src.to_string();
    }
    src.replace("coop_mat16x16", &format!("coop_mat{cm}x{cm}"))
        .replace("const CM: u32 = 16u;", &format!("const CM: u32 = {cm}u;"))
}

/// `src` without its subgroup code, for devices without the subgroups feature: wgpu validates a
/// whole module against the device's features, so even an unreachable subgroup call is rejected.
/// Drops the lines from `// subgroups:begin` to `// subgroups:end` and every line ending in
/// `// subgroups-only`. [`Context::pipeline`](crate::gpu::Context::pipeline) applies it, so kernels
/// always pass their full source and pick subgroup entry points only when `Caps` allows.
pub fn without_subgroups(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut skipping = false;
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with("// subgroups:begin") {
            skipping = true;
        } else if t.starts_with("// subgroups:end") {
            skipping = false;
        } else if !skipping && !t.ends_with("// subgroups-only") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// One recorded compute dispatch: a pipeline, its bind group and the workgroup grid.
pub struct Dispatch {
    pub label: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    // Buffers the dispatch owns (its parameters), kept alive with it.
    _owned: Vec<wgpu::Buffer>,
}

impl Dispatch {
    /// Bind `resources` (binding index, resource) in group 0 of `pipeline`.
    pub fn new(
        ctx: &Context,
        label: impl Into<String>,
        pipeline: Arc<wgpu::ComputePipeline>,
        resources: &[(u32, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
        owned: Vec<wgpu::Buffer>,
    ) -> Self {
        let label = label.into();
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: resource.clone(),
            })
            .collect();
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Self {
            label,
            pipeline,
            bind_group,
            groups,
            _owned: owned,
        }
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        if self.groups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }

    pub fn groups(&self) -> [u32; 3] {
        self.groups
    }
}

/// A flat count of workgroups as a grid within the 65535-per-dimension limit; shaders recover the
/// flat index with `flat_group` (shaders/common.wgsl).
pub fn grid(groups: u32) -> [u32; 3] {
    const X: u32 = 65535;
    if groups <= X {
        [groups, 1, 1]
    } else {
        [X, groups.div_ceil(X), 1]
    }
}

/// A byte window of a buffer as a binding.
pub fn window(buffer: &wgpu::Buffer, offset: u64, size: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset,
        size: std::num::NonZeroU64::new(size),
    })
}

#[cfg(test)]
mod tests {
    use naga::valid::Capabilities;

    fn validate(family: &str, src: &str, caps: Capabilities) {
        let src = super::with_prelude(src);
        let module =
            naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| panic!("{family}.wgsl: {}", e.emit_to_string(&src)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{family}.wgsl: {}", e.emit_to_string(&src)));
    }

    /// Every shader parses and validates with naga, no GPU needed: whole, and without its
    /// subgroup code against capabilities that lack subgroups (what a portable device compiles).
    #[test]
    fn shaders_validate() {
        let no_subgroups = Capabilities::all() - Capabilities::SUBGROUP - Capabilities::SUBGROUP_BARRIER;
        for (family, source) in super::SHADERS {
            validate(family, source, Capabilities::all());
            // The cooperative-matrix kernels need subgroups (their Caps check says so).
            if !super::COOP_SHADERS.iter().any(|(f, _)| f == family) {
                validate(family, &super::without_subgroups(source), no_subgroups);
            }
        }
        for (family, source) in super::COOP_SHADERS {
            validate(family, &super::coop_source(source, 8), Capabilities::all());
        }
    }
}

/// The per-step values kernels read from GPU memory rather than from their parameters, so that a
/// recorded decode step can be replayed unchanged (DESIGN.md principle 3). A `u32` storage buffer
/// (bind it read-only as `array<u32>`); the host or a kernel writes it before each step.
pub mod step {
    /// Position of the first token of this batch (= tokens already in the KV cache).
    pub const POS0: usize = 0;
    /// Tokens in this batch.
    pub const N_TOKENS: usize = 1;
    /// Words in the step buffer.
    pub const LEN: usize = 4;

    /// A step buffer holding `pos0` and `n_tokens`.
    pub fn new(ctx: &crate::gpu::Context, pos0: u32, n_tokens: u32) -> crate::gpu::Tensor {
        crate::gpu::Tensor::from_u32(ctx, "step", &[pos0, n_tokens, 0, 0])
    }
}
