//! `cargo bench`: the kernel benchmark (same as `wgmoe bench-kernels`, whose arguments and printing
//! this includes). Arguments after `--` are passed through, e.g. `cargo bench -- --shapes tiny --json`.

use clap::Parser;

#[path = "../src/cli/bench_kernels.rs"]
mod bench_kernels;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bench: bench_kernels::BenchKernelsArgs,
}

fn main() {
    // cargo passes `--bench` to harness-less benches.
    let argv = std::env::args().filter(|a| a != "--bench");
    let args = Args::parse_from(argv);
    if let Err(e) = bench_kernels::run(&wgmoe::internals::gpu::DeviceOptions::from_env(), &args.bench) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
