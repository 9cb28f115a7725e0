//! What the open device can do, in one value kernels consult to pick a fast path. Every fast path
//! has a portable twin that runs when the corresponding flag is off.

/// Capabilities and limits that matter to wgmoe's kernels.
#[derive(Clone, Debug)]
pub struct Caps {
    /// `shader-f16`: f16 arithmetic in shaders (weights are widened to f32 either way).
    pub f16: bool,
    /// Subgroup operations, with the adapter's subgroup size range.
    pub subgroups: bool,
    pub subgroup_min: u32,
    pub subgroup_max: u32,
    /// Timestamp queries (at pass boundaries; `timestamps_in_passes` also between dispatches).
    pub timestamps: bool,
    pub timestamps_in_passes: bool,
    /// Side of the square cooperative matrices with f16 inputs and an f32 accumulator: 16 where
    /// the adapter has them (NVIDIA), else 8 (Apple, lavapipe), else none.
    pub coop_f16: Option<u32>,
    /// Immediate data (push constants) size in bytes; 0 when unavailable.
    pub immediate_bytes: u32,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
    pub max_storage_buffers_per_stage: u32,
    pub max_workgroups_per_dim: u32,
    pub storage_offset_alignment: u32,
    /// Opened as the weakest adapter wgmoe supports (`--portable`): WebGPU's default limits, no
    /// optional features.
    pub portable: bool,
}

impl Caps {
    /// What the adapter offers (for `wgmoe devices`); `portable` strips it to WebGPU defaults.
    pub fn of_adapter(adapter: &wgpu::Adapter, limits: &wgpu::Limits, portable: bool) -> Self {
        Self::build(adapter, adapter.features(), limits, portable)
    }

    /// What an open device really has (features and limits as granted).
    pub fn of_device(adapter: &wgpu::Adapter, device: &wgpu::Device, portable: bool) -> Self {
        Self::build(adapter, device.features(), &device.limits(), portable)
    }

    fn build(adapter: &wgpu::Adapter, f: wgpu::Features, l: &wgpu::Limits, portable: bool) -> Self {
        use wgpu::Features as F;
        let info = adapter.get_info();
        let on = |flag: F| !portable && f.contains(flag);
        let props = adapter.cooperative_matrix_properties();
        let square = |side: u32| {
            props.iter().any(|p| {
                p.m_size == side
                    && p.n_size == side
                    && p.k_size == side
                    && p.ab_type == wgpu::CooperativeScalarType::F16
                    && p.cr_type == wgpu::CooperativeScalarType::F32
            })
        };
        let coop = if on(F::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            [16, 8].into_iter().find(|&side| square(side))
        } else {
            None
        };
        // Vulkan/DX12 cap bindings at 2^31-1 even where the driver reports more.
        let binding_cap = match info.backend {
            wgpu::Backend::Vulkan | wgpu::Backend::Dx12 => (1u64 << 31) - 1,
            _ => u64::MAX,
        };
        Self {
            f16: on(F::SHADER_F16),
            subgroups: on(F::SUBGROUP),
            subgroup_min: info.subgroup_min_size,
            subgroup_max: info.subgroup_max_size,
            timestamps: on(F::TIMESTAMP_QUERY),
            timestamps_in_passes: on(F::TIMESTAMP_QUERY_INSIDE_PASSES),
            coop_f16: coop,
            immediate_bytes: if on(F::IMMEDIATES) { l.max_immediate_size } else { 0 },
            max_storage_binding: l.max_storage_buffer_binding_size.min(binding_cap),
            max_buffer: l.max_buffer_size,
            max_workgroup_storage: l.max_compute_workgroup_storage_size,
            max_invocations: l.max_compute_invocations_per_workgroup,
            max_storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
            max_workgroups_per_dim: l.max_compute_workgroups_per_dimension,
            storage_offset_alignment: l.min_storage_buffer_offset_alignment,
            portable,
        }
    }

    /// Whether subgroup kernels may assume a fixed lane count `n` divides their workgroup: true only
    /// when every subgroup the adapter can produce has at least 4 lanes.
    pub fn subgroups_usable(&self) -> bool {
        self.subgroups && self.subgroup_min >= 4
    }
}
