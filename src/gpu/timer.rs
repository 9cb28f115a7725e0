//! GPU time from timestamp queries at compute-pass boundaries, with wall-clock fallback where the
//! adapter has no timestamps.

use super::Context;
use crate::error::Result;

pub struct GpuTimer {
    queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    period_ns: f64,
}

impl GpuTimer {
    pub fn new(ctx: &Context) -> Self {
        let queries = ctx.caps.timestamps.then(|| {
            let set = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("timer"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timer-resolve"),
                size: 256,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve)
        });
        Self {
            queries,
            period_ns: ctx.queue.get_timestamp_period() as f64,
        }
    }

    pub fn is_gpu(&self) -> bool {
        self.queries.is_some()
    }

    /// Run `record` inside one compute pass and return its duration in seconds: GPU time between
    /// the pass's start and end timestamps, or wall time around submit-and-wait without them.
    pub fn time_pass(&self, ctx: &Context, record: impl FnOnce(&mut wgpu::ComputePass<'_>)) -> Result<f64> {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let tw = self.queries.as_ref().map(|(set, _)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("timed"),
                timestamp_writes: tw,
            });
            record(&mut pass);
        }
        if let Some((set, resolve)) = &self.queries {
            enc.resolve_query_set(set, 0..2, resolve, 0);
        }
        let start = std::time::Instant::now();
        ctx.queue.submit([enc.finish()]);
        ctx.wait()?;
        let wall = start.elapsed().as_secs_f64();
        match &self.queries {
            Some((_, resolve)) => {
                let ts = ctx.read_bytes(resolve, 0, 16)?;
                let t: [u64; 2] = bytemuck::pod_read_unaligned(&ts);
                Ok(t[1].saturating_sub(t[0]) as f64 * self.period_ns * 1e-9)
            }
            None => Ok(wall),
        }
    }
}
