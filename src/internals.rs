//! The runtime behind the API: GPU context, kernels, forward plans, loaders, benchmarks. For
//! wgmoe's command line, benchmarks and tests; no stability promise. The files stay where the
//! architecture puts them (`src/gpu`, `src/kernels/<family>.rs`, `src/model`).

#[path = "bench.rs"]
pub mod bench;
#[path = "bench_model.rs"]
pub mod bench_model;
#[path = "bench_reference.rs"]
pub mod bench_reference;
#[path = "error.rs"]
pub mod error;
#[path = "generate.rs"]
pub mod generate;
#[path = "gpu/mod.rs"]
pub mod gpu;
#[path = "input.rs"]
pub mod input;
#[path = "kernels/mod.rs"]
pub mod kernels;
#[path = "model/mod.rs"]
pub mod model;
#[path = "record.rs"]
pub mod record;
#[path = "tokenizer.rs"]
pub mod tokenizer;
