//! `cargo bench`: the kernel benchmark (same as `wgmoe bench-kernels`). Arguments after `--` are
//! passed through, e.g. `cargo bench -- --shapes tiny --json`.

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    bench: wgmoe::bench::BenchArgs,
}

fn main() {
    // cargo passes `--bench` to harness-less benches.
    let argv = std::env::args().filter(|a| a != "--bench");
    let args = Args::parse_from(argv);
    if let Err(e) = wgmoe::bench::run(&wgmoe::gpu::DeviceOptions::from_env(), &args.bench) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
