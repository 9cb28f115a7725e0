//! The `wgmoe` command line: argument parsing and printing only.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use wgmoe::gpu::{self, DeviceOptions};

#[derive(Parser)]
#[command(name = "wgmoe", version, about = "Portable Mixture-of-Experts inference on any GPU (WGSL through wgpu)")]
struct Cli {
    /// Adapter: an index from `wgmoe devices`, a backend (vulkan, metal, dx12) or part of its name.
    #[arg(long, global = true, env = "WGMOE_DEVICE")]
    device: Option<String>,
    /// Use WebGPU default limits and no optional features (the weakest adapter wgmoe supports).
    #[arg(long, global = true)]
    portable: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter with the capabilities wgmoe uses.
    Devices,
    /// Benchmark every kernel at real model shapes.
    BenchKernels(wgmoe::bench::BenchArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let opts = DeviceOptions { selector: cli.device, portable: cli.portable };
    let result = match cli.command {
        Command::Devices => devices(&opts),
        Command::BenchKernels(args) => wgmoe::bench::run(&opts, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn devices(opts: &DeviceOptions) -> wgmoe::Result<()> {
    let entries = gpu::list_adapters();
    if entries.is_empty() {
        return Err(wgmoe::Error::NoAdapter { backends: "vulkan, metal, dx12".into() });
    }
    let chosen = gpu::Context::new(opts).ok().map(|c| c.info.name.clone() + "/" + c.backend_name());
    for e in &entries {
        let i = &e.info;
        let c = &e.caps;
        let mark = if chosen.as_deref() == Some(&format!("{}/{}", i.name, gpu::backend_name(i.backend))) { " (default)" } else { "" };
        println!("[{}] {}{}", e.index, i.name, mark);
        println!("    vendor 0x{:04x}, device 0x{:04x}, {:?}, backend {}", i.vendor, i.device, i.device_type, gpu::backend_name(i.backend));
        println!("    driver: {} {}", i.driver, i.driver_info);
        println!(
            "    f16: {}, subgroups: {}, timestamps: {}, cooperative matrix f16 16x16: {}, immediates: {} B",
            yn(c.f16),
            if c.subgroups { format!("yes ({}-{})", c.subgroup_min, c.subgroup_max) } else { "no".into() },
            yn(c.timestamps),
            yn(c.coop_matrix_f16),
            c.immediate_bytes
        );
        println!(
            "    max storage binding {}, max buffer {}, workgroup storage {} B, invocations per workgroup {}",
            bytes(c.max_storage_binding),
            bytes(c.max_buffer),
            c.max_workgroup_storage,
            c.max_invocations
        );
    }
    Ok(())
}

fn yn(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn bytes(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", b >> 20)
    }
}
