//! Recorded compute dispatches: a pipeline, its bind group (built once, bound by [`Slot`]) and the
//! workgroup grid. Kernel constructors return them; recording one into a pass allocates nothing.

use super::shader::{HostStruct, Slot, GRID_X};
use super::Context;
use std::sync::Arc;

/// One recorded compute dispatch.
pub struct Dispatch {
    pub label: String,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    // Buffers the dispatch owns (its parameters, scratch), kept alive with it.
    _owned: Vec<wgpu::Buffer>,
}

impl Dispatch {
    /// Bind `resources` in group 0 of `pipeline`, each at its declared slot.
    pub fn new(
        ctx: &Context,
        label: impl Into<String>,
        pipeline: Arc<wgpu::ComputePipeline>,
        resources: &[(Slot, wgpu::BindingResource<'_>)],
        groups: [u32; 3],
        owned: Vec<wgpu::Buffer>,
    ) -> Self {
        let label = label.into();
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .iter()
            .map(|(slot, resource)| wgpu::BindGroupEntry {
                binding: slot.index,
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
    if groups <= GRID_X {
        [groups, 1, 1]
    } else {
        [GRID_X, groups.div_ceil(GRID_X), 1]
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

impl Context {
    /// A uniform buffer holding `value` laid out as its WGSL declaration says.
    pub fn params<T: HostStruct>(&self, value: &T) -> wgpu::Buffer {
        let bytes = value.to_bytes();
        let buf = self.buffer(&wgpu::BufferDescriptor {
            label: Some(T::DECL.name),
            size: (bytes.len() as u64).max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, &bytes);
        buf
    }
}
