//! rope kernels against f64 CPU references.

mod common;
