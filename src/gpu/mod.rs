//! The wgpu context: adapter choice, capabilities, buffers, read-back, GPU timers, shader sources
//! and their interfaces ([`shader`]), pipelines and recorded dispatches ([`Dispatch`]).

pub mod backends;
mod buffer;
mod caps;
mod dispatch;
mod format;
mod needs;
pub mod shader;
mod timer;

pub use buffer::{DType, Tensor, Weight, WeightChunk};
pub use caps::Caps;
pub use dispatch::{grid, window, Dispatch};
pub use format::{Format, FORMATS};
pub use needs::{kernel_needs, EntryBindings, Need, Needs, KERNEL_BINDINGS};
pub use shader::{Compose, Shader};
pub use timer::GpuTimer;

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How to choose and open an adapter: the CLI's `--device` / `--portable`, or for tests the
/// `WGMOE_DEVICE` / `WGMOE_PORTABLE` environment variables.
#[derive(Clone, Debug, Default)]
pub struct DeviceOptions {
    /// An adapter index (as `wgmoe devices` prints it), a backend name (`vulkan`, `metal`, `dx12`,
    /// `gl`), or a case-insensitive substring of the adapter name. `None` picks the best adapter.
    pub selector: Option<String>,
    /// Restrict to WebGPU's default limits and no optional features, the weakest adapter we support.
    pub portable: bool,
}

impl DeviceOptions {
    pub fn from_env() -> Self {
        let selector = std::env::var("WGMOE_DEVICE").ok().filter(|s| !s.is_empty());
        let portable = matches!(
            std::env::var("WGMOE_PORTABLE").as_deref(),
            Ok("1") | Ok("true") | Ok("yes")
        );
        Self { selector, portable }
    }
}

/// One adapter as enumerated, with what `wgmoe devices` prints.
pub struct AdapterEntry {
    pub index: usize,
    pub adapter: wgpu::Adapter,
    pub info: wgpu::AdapterInfo,
    pub caps: Caps,
    /// What stops wgmoe's kernels on this adapter ([`Needs::unmet`]), one line each; empty when
    /// nothing does.
    pub unmet: Vec<String>,
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter on every backend this build of wgpu has (those `WGPU_BACKEND` allows), in the
/// instance's order; none is an error that says why: a `WGPU_BACKEND` that names no backend wgpu
/// knows, one that allows only backends without an adapter (naming where adapters are), or no
/// driver at all.
pub fn list_adapters() -> Result<Vec<AdapterEntry>> {
    let filter = backends::BackendFilter::from_env();
    if let Some(why) = filter.as_ref().and_then(|f| f.misspelt()) {
        return Err(Error::BackendEnv(why));
    }
    let adapters = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        let elsewhere = match &filter {
            Some(_) => adapters_ignoring_env(),
            None => Vec::new(),
        };
        return Err(match filter {
            Some(f) if !elsewhere.is_empty() => Error::BackendEnv(f.excluded(&elsewhere)),
            _ => Error::NoAdapter {
                backends: backends::names(backends::built_in()),
            },
        });
    }
    Ok(adapters
        .into_iter()
        .enumerate()
        .map(|(index, adapter)| {
            let info = adapter.get_info();
            let caps = Caps::of_adapter(&adapter, &adapter.limits(), false);
            let unmet = unmet(&adapter);
            AdapterEntry {
                index,
                adapter,
                info,
                caps,
                unmet,
            }
        })
        .collect())
}

/// What stops wgmoe's kernels on `adapter` (its own limits, which a device may request).
fn unmet(adapter: &wgpu::Adapter) -> Vec<String> {
    let (limits, compute) = (adapter.limits(), needs::has_compute(adapter));
    if compute && needs::meets_webgpu_defaults(&limits) {
        return Vec::new();
    }
    needs::kernel_needs().unmet(&limits, compute)
}

/// Each adapter on any backend of this build, `WGPU_BACKEND` aside (the other variables wgpu
/// reads still apply), as (backend, name): what an error can offer instead.
fn adapters_ignoring_env() -> Vec<(wgpu::Backends, String)> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::all();
    let adapters = pollster::block_on(wgpu::Instance::new(desc).enumerate_adapters(wgpu::Backends::all()));
    adapters
        .iter()
        .map(|a| {
            let info = a.get_info();
            (info.backend.into(), info.name)
        })
        .collect()
}

/// Linux's `MemAvailable` in bytes, from the text of `/proc/meminfo`.
pub fn host_available_memory(meminfo: &str) -> Option<u64> {
    let kb = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    let kb: u64 = kb.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kb.checked_mul(1024)
}

/// Higher is better: discrete beats integrated beats virtual beats software; among equals, native
/// compute APIs beat OpenGL (lavapipe and NVIDIA list the same device on both).
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 1,
        _ => 0,
    };
    (kind, backend)
}

pub fn backend_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        wgpu::Backend::Noop => "noop",
    }
}

fn matches(entry: &AdapterEntry, selector: &str) -> bool {
    if let Ok(i) = selector.parse::<usize>() {
        return entry.index == i;
    }
    // A backend in any of wgpu's spellings (`gl`, `gles`, `opengl`, `vk`, ...), as WGPU_BACKEND takes.
    if let Some(b) = backends::parse_backend(selector) {
        return wgpu::Backends::from(entry.info.backend) == b;
    }
    entry
        .info
        .name
        .to_ascii_lowercase()
        .contains(&selector.to_ascii_lowercase())
}

/// One line per adapter, for errors that need to say what exists.
pub fn describe_adapters(entries: &[AdapterEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "  [{}] {} ({:?}, {})",
                e.index,
                e.info.name,
                e.info.device_type,
                backend_name(e.info.backend)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// wgpu-core keeps the bind groups of a pipeline in a fixed array of this many (wgpu-hal's
/// `MAX_BIND_GROUPS`).
const MAX_BIND_GROUPS: u32 = 8;

/// The adapter's limits, within what wgpu-core can hold: an adapter that reports more (wgpu's noop
/// adapter reports every limit as unbounded) would make pipeline creation panic inside wgpu-core.
/// wgmoe uses one bind group.
fn clamped(mut limits: wgpu::Limits) -> wgpu::Limits {
    limits.max_bind_groups = limits.max_bind_groups.min(MAX_BIND_GROUPS);
    limits
}

/// What makes two pipelines the same: the family and variant that named the source, the entry
/// point, the override values, and a hash of the final source text, so that two sources never share
/// a pipeline whatever their callers call them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub family: &'static str,
    pub variant: String,
    pub entry: String,
    /// Override names and values (as `f64` bits: wgpu takes `f64`, which is not `Eq`).
    pub constants: Vec<(&'static str, u64)>,
    pub source_hash: u64,
}

/// An open device and everything kernels need to know about it.
/// Clones share the device, its pipeline cache and its error state.
#[derive(Clone)]
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: Caps,
    /// A 16-byte storage buffer bound where an optional input is absent (auto layouts keep every
    /// binding a shader mentions, even behind a disabled override).
    pub dummy: wgpu::Buffer,
    /// A small writable buffer bound where an optional output is absent.
    pub scratch: wgpu::Buffer,
    pipelines: Arc<Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>>,
    /// The first GPU error no error scope caught (wgpu's default handler would panic on it); the
    /// next [`Context::wait`] returns it.
    uncaptured: Arc<Mutex<Option<String>>>,
    /// Bytes written with `upload` since the last flush.
    pending_upload: Arc<std::sync::atomic::AtomicU64>,
    /// Bytes of every lasting buffer wgmoe created on this device (an upper bound of what it
    /// holds): the figure a GPU memory budget is checked against.
    allocated: Arc<std::sync::atomic::AtomicU64>,
}

/// wgpu stages `write_buffer` data in host memory until the next submit; past this many bytes,
/// `upload` flushes and waits, so loading a model holds at most this much besides one tensor.
const UPLOAD_FLUSH_BYTES: u64 = 64 << 20;

impl Context {
    /// Choose an adapter as `opts` says and open it with the adapter's own limits (or WebGPU's
    /// defaults when `portable`).
    pub fn new(opts: &DeviceOptions) -> Result<Self> {
        let entries = list_adapters()?;
        let candidates: Vec<&AdapterEntry> = match &opts.selector {
            Some(sel) => entries.iter().filter(|e| matches(e, sel)).collect(),
            None => entries.iter().collect(),
        };
        // An adapter that can run the kernels beats one that cannot, whatever its kind: a GL-only
        // GPU short of a limit must not hide a working adapter (a named one is still refused
        // with the limit).
        let Some(chosen) = candidates
            .into_iter()
            .max_by_key(|e| (e.unmet.is_empty(), rank(&e.info), usize::MAX - e.index))
        else {
            return Err(Error::NoMatchingAdapter {
                selector: opts.selector.clone().unwrap_or_default(),
                available: describe_adapters(&entries),
            });
        };
        Self::open(chosen, opts.portable)
    }

    /// Like [`Context::new`] with the options from the environment, as tests and benches use it.
    pub fn from_env() -> Result<Self> {
        Self::new(&DeviceOptions::from_env())
    }

    /// Open `entry`'s adapter, unless it cannot run the kernels ([`AdapterEntry::unmet`]).
    fn open(entry: &AdapterEntry, portable: bool) -> Result<Self> {
        let (adapter, unmet) = (&entry.adapter, &entry.unmet);
        let info = adapter.get_info();
        if !unmet.is_empty() {
            return Err(Error::Unsupported {
                what: format!(
                    "{} ({}) cannot run wgmoe's kernels: {}. Choose another adapter with --device \
                     (`wgmoe devices` lists them)",
                    info.name,
                    backend_name(info.backend),
                    unmet.join("; ")
                ),
            });
        }
        let (features, limits, experimental) = if portable {
            (
                wgpu::Features::empty(),
                wgpu::Limits::default(),
                wgpu::ExperimentalFeatures::disabled(),
            )
        } else {
            let wanted = wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP
                | wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
                | wgpu::Features::IMMEDIATES
                | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            let features = adapter.features() & wanted;
            let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
                // SAFETY: the cooperative-matrix kernels are only used when Caps says so and each is
                // tested against its portable twin.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            };
            (features, clamped(adapter.limits()), experimental)
        };
        let desc = wgpu::DeviceDescriptor {
            label: Some("wgmoe"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        let caps = Caps::of_device(adapter, &device, portable);
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let scratch = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("scratch"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let uncaptured: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut first = sink.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }));
        Ok(Self {
            device,
            queue,
            info,
            caps,
            dummy,
            scratch,
            pipelines: Arc::default(),
            uncaptured,
            pending_upload: Arc::default(),
            allocated: Arc::new(32.into()),
        })
    }

    pub fn backend_name(&self) -> &'static str {
        backend_name(self.info.backend)
    }

    /// The most wgmoe should allocate on this adapter, where that is known: an adapter that runs
    /// on the CPU (lavapipe, llvmpipe, WARP) allocates host memory, which the OS overcommits and
    /// then reclaims by killing the process, so its limit is the host's available memory. wgpu
    /// reports no GPU's own memory size: `None` there.
    pub fn memory_limit(&self) -> Option<u64> {
        if self.info.device_type != wgpu::DeviceType::Cpu {
            return None;
        }
        host_available_memory(&std::fs::read_to_string("/proc/meminfo").ok()?)
    }

    /// The adapter's own memory: its largest device-local heap, read from Vulkan (wgpu reports no
    /// memory size); `None` on other backends and for adapters that run on the CPU, whose memory
    /// is the host's ([`Context::memory_limit`]).
    pub fn device_memory(&self) -> Option<u64> {
        if self.info.device_type == wgpu::DeviceType::Cpu || self.info.backend != wgpu::Backend::Vulkan {
            return None;
        }
        // SAFETY: the raw handles are only used to query properties, while the device is alive.
        unsafe {
            let hal = self.device.as_hal::<wgpu::hal::api::Vulkan>()?;
            let instance = hal.shared_instance().raw_instance();
            let props = instance.get_physical_device_memory_properties(hal.raw_physical_device());
            props.memory_heaps[..props.memory_heap_count as usize]
                .iter()
                .filter(|h| h.flags.contains(ash::vk::MemoryHeapFlags::DEVICE_LOCAL))
                .map(|h| h.size)
                .max()
        }
    }

    /// `compose`'s source for this device (its subgroup code stripped where the device has none).
    pub fn shader(&self, compose: &Compose<'_>) -> Shader {
        compose.build(self.device.features().contains(wgpu::Features::SUBGROUP))
    }

    /// A compute pipeline for `entry` of `shader`, specialised by override `constants`; built once
    /// per [`PipelineKey`] and cached (DESIGN.md principle 3).
    pub fn pipeline(
        &self,
        shader: &Shader,
        entry: &str,
        constants: &[(&'static str, f64)],
    ) -> Arc<wgpu::ComputePipeline> {
        let key = PipelineKey {
            family: shader.family,
            variant: shader.variant.clone(),
            entry: entry.to_string(),
            constants: constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
            source_hash: shader.hash,
        };
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&key) {
            return p.clone();
        }
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.family),
            source: wgpu::ShaderSource::Wgsl(shader.source.as_str().into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let p = Arc::new(pipeline);
        cache.insert(key, p.clone());
        p
    }

    /// A storage buffer of `bytes` bytes (rounded up to 16), zeroed.
    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16).next_multiple_of(16),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Every buffer wgmoe makes is made here, so [`Context::allocated_bytes`] counts it.
    pub fn buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> wgpu::Buffer {
        self.allocated
            .fetch_add(desc.size, std::sync::atomic::Ordering::Relaxed);
        self.device.create_buffer(desc)
    }

    /// Bytes of all the buffers made on this device so far, freed ones included (transient
    /// read-back copies aside): an upper bound of what wgmoe holds on the adapter, for checking a
    /// GPU memory budget.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Write `data` into `buffer` at `offset` in pieces, flushing wgpu's staging memory to the GPU
    /// every `UPLOAD_FLUSH_BYTES` so large loads never hold the whole model in host memory.
    pub fn upload(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
        use std::sync::atomic::Ordering;
        for (i, piece) in data.chunks(UPLOAD_FLUSH_BYTES as usize).enumerate() {
            self.queue
                .write_buffer(buffer, offset + (i as u64) * UPLOAD_FLUSH_BYTES, piece);
            let pending = self.pending_upload.fetch_add(piece.len() as u64, Ordering::Relaxed) + piece.len() as u64;
            if pending >= UPLOAD_FLUSH_BYTES {
                self.pending_upload.store(0, Ordering::Relaxed);
                self.queue.submit([]);
                self.wait()?;
            }
        }
        Ok(())
    }

    /// Record `dispatches` into one compute pass, submit, and return without waiting.
    pub fn submit(&self, dispatches: &[&Dispatch]) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        self.queue.submit([enc.finish()]);
    }

    /// Block until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| Error::Device(format!("waiting for the GPU failed: {e}")))?;
        self.check()
    }

    /// The first GPU error no scope caught since the last check, as an error.
    pub fn check(&self) -> Result<()> {
        let mut first = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        match first.take() {
            Some(e) => Err(Error::Device(e)),
            None => Ok(()),
        }
    }

    /// Runs `f` inside out-of-memory and validation error scopes, so that a GPU error it causes is
    /// an error naming `what` ([`Error::OutOfMemory`], or [`Error::Device`]) instead of reaching the
    /// uncaptured-error handler. Scopes are per thread: `f` must do its GPU work on this one.
    pub fn scoped<R>(&self, what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let invalid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f();
        let invalid = pollster::block_on(invalid.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = oom {
            return Err(Error::OutOfMemory {
                what: format!("{what} ({e})"),
                needed: None,
                available: None,
            });
        }
        if let Some(e) = invalid {
            return Err(Error::Device(format!("{what}: {e}")));
        }
        r
    }

    /// Copy `size` bytes at `offset` of `buffer` back to the host (waits for the GPU).
    pub fn read_bytes(&self, buffer: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let size4 = size.next_multiple_of(4);
        // Transient (freed on return): not counted in `allocated_bytes`.
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: size4.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let data = self.submit_and_read(&[], buffer, offset, &staging, size4)?;
        Ok(data[..size as usize].to_vec())
    }

    /// Record `dispatches` into one compute pass, copy `size` bytes (a multiple of 4) of `src`
    /// at `offset` into the mappable `staging` in the same submission, and return them once the
    /// GPU is done: one submission for work and its read-back.
    pub fn submit_and_read(
        &self,
        dispatches: &[&Dispatch],
        src: &wgpu::Buffer,
        offset: u64,
        staging: &wgpu::Buffer,
        size: u64,
    ) -> Result<Vec<u8>> {
        let mut enc = self.device.create_command_encoder(&Default::default());
        if !dispatches.is_empty() {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        enc.copy_buffer_to_buffer(src, offset, staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..size);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Device("read-back callback never ran".into()))?
            .map_err(|e| Error::Device(format!("mapping the read-back buffer failed: {e}")))?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| Error::Device(format!("read-back view failed: {e:?}")))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    pub fn read_f32(&self, buffer: &wgpu::Buffer, offset_elems: u64, len: usize) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(buffer, offset_elems * 4, len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub fn read_u32(&self, buffer: &wgpu::Buffer, offset_elems: u64, len: usize) -> Result<Vec<u32>> {
        let bytes = self.read_bytes(buffer, offset_elems * 4, len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }
}
