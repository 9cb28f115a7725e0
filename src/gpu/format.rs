//! Weight formats: how a matrix's rows are stored on the GPU and how every matrix kernel reads
//! them back. This table is the only place that knows a format; kernels are written against the
//! function its WGSL part defines.
//!
//! A weight row is stored as whole 16-byte `vec4<u32>` words (the unit every matrix kernel loads),
//! `W_EPV` elements per word, padded with zeros to a whole word. A format's WGSL part
//! (`shaders/formats/<name>.wgsl`) defines one function over the bound weight chunk `w`:
//!
//! ```text
//! // The W_EPV elements of word i of `w` (array entries past W_EPV are 0).
//! fn w_load(i: u32) -> array<f32, 8>
//! ```
//!
//! and [`Format::repack_row`] turns one row of checkpoint bytes into those words (or the row is stored
//! as it is, zero-padded). Adding a format
//! means one WGSL function, one repack function, one row in [`FORMATS`], and tests (see the README,
//! *How it is built*).

use super::DType;

/// One weight format.
#[derive(Debug)]
pub struct Format {
    /// Its name in variant names and messages (`f16`).
    pub name: &'static str,
    pub dtype: DType,
    /// Elements per 16-byte word: `W_EPV` in the shaders (at most 8, the width `w_load` returns).
    pub elems_per_word: usize,
    /// Bytes one element takes in a checkpoint row (what [`Format::repack_row`] reads).
    pub elem_bytes: usize,
    /// The WGSL part defining `w_load`.
    pub wgsl: &'static str,
    /// Whether its values feed f16 cooperative matrices without loss (the tiles hold f16).
    pub coop: bool,
    /// One checkpoint row (`cols` elements, little-endian) into its GPU words (`dst`: the stored
    /// row, zeroed). `None`: the row is stored as the checkpoint has it, zero-padded to whole words
    /// (f32, f16, bf16).
    pub repack_row: Option<RepackRow>,
}

/// One checkpoint row (`src`) into its stored words (`dst`, zeroed).
pub type RepackRow = fn(src: &[u8], dst: &mut [u8]);

pub const FORMATS: &[Format] = &[
    Format {
        name: "f32",
        dtype: DType::F32,
        elems_per_word: 4,
        elem_bytes: 4,
        wgsl: include_str!("../../shaders/formats/f32.wgsl"),
        coop: false,
        repack_row: None,
    },
    Format {
        name: "f16",
        dtype: DType::F16,
        elems_per_word: 8,
        elem_bytes: 2,
        wgsl: include_str!("../../shaders/formats/f16.wgsl"),
        coop: true,
        repack_row: None,
    },
    Format {
        name: "bf16",
        dtype: DType::BF16,
        elems_per_word: 8,
        elem_bytes: 2,
        wgsl: include_str!("../../shaders/formats/bf16.wgsl"),
        // bf16 -> f16 rounds: the cooperative path holds activations to f16 as well (its tests
        // and parity bounds say so).
        coop: true,
        repack_row: None,
    },
];

impl Format {
    /// The row of `dtype`.
    pub fn of(dtype: DType) -> &'static Format {
        FORMATS
            .iter()
            .find(|f| f.dtype == dtype)
            .expect("every DType has a row in FORMATS")
    }

    /// u32 words of one stored row of `cols` elements (a multiple of 4).
    pub fn row_words(&self, cols: usize) -> usize {
        cols.div_ceil(self.elems_per_word) * 4
    }

    /// `compose` reading weights of this format: `W_EPV` and `w_load` before its body, the
    /// format's name in its variant.
    pub fn apply(&'static self, compose: &mut super::Compose<'_>) {
        compose.consts.push(super::shader::ConstDecl {
            name: "W_EPV",
            value: super::shader::Value::u32(self.elems_per_word as u32),
            doc: "",
        });
        compose.parts.insert(0, self.wgsl);
        compose.variant = if compose.variant.is_empty() {
            self.name.to_string()
        } else {
            format!("{}/{}", self.name, compose.variant)
        };
    }
}
