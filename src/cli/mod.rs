//! The binary's subcommands that have grown beyond a few lines: their arguments and printing.
//! Their logic is the library's ([`wgmoe::bench`], [`wgmoe::bench_model`]).

pub mod bench_kernels;
pub mod bench_model;
