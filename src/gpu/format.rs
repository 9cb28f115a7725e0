//! Weight formats: how a matrix's rows are stored on the GPU and how every matrix kernel reads
//! them back. This table is the only place that knows a format; kernels are written against the
//! function its WGSL part defines.
//!
//! A format's WGSL part (`shaders/formats/<name>.wgsl`) defines one function over the bound weight
//! chunk `w` (an `array<vec4<u32>>`):
//!
//! ```text
//! // The W_EPV elements of weight word i of `w` (array entries past W_EPV are 0).
//! fn w_load(i: u32) -> array<f32, 8>
//! ```
//!
//! Row `r` of a chunk is words `r * words_per_row ..`. Two layouts:
//!
//! - Float formats (f32, f16, bf16): a word is one 16-byte `vec4<u32>` (`W_EPV` = 4 or 8
//!   elements), and each row is padded with zeros to whole words, so kernels load full vectors.
//! - Block-quantised formats (GGUF's Q8_0 .. Q6_K, IQ4_NL, IQ4_XS and MXFP4; FP8, which the
//!   safetensors source repacks into blocks of a row's 128 values with their tile's scale): the
//!   blocks as they are, rows back to back with no padding, so the GPU holds the file's bytes. A word is eight
//!   elements (`W_EPV` = 8, the width every kernel's inner loop already takes); `w_load` finds the
//!   block from the word index (every row is whole blocks) and dequantises in registers
//!   (`shaders/formats/blocks.wgsl` has the byte readers). Why not repack to aligned
//!   structure-of-arrays: a repacked layout would need a second binding (scales beside quants) in
//!   every matrix kernel and a second copy of each row's index arithmetic; GGUF's own layout keeps
//!   one binding, one index, chunking by rows unchanged, and bytes identical to the file, at the
//!   cost of unaligned reads for the 18/22/34/110/210-byte blocks (two u32 loads where one
//!   would do). llama.cpp's Vulkan backend reads GGUF's blocks as they are too. A chunk may hold a
//!   format of its own (see [`super::Weight::alloc_grouped`]).
//!
//! [`Format::repack_row`] may turn one row of checkpoint bytes into its stored form; otherwise the
//! row is stored as it is (zero-padded for float formats). Adding a format means one WGSL
//! function, one row in [`FORMATS`], a CPU dequantiser for its tests, and tests (see the README,
//! *How it is built*).

use super::DType;

/// One weight format.
#[derive(Debug)]
pub struct Format {
    /// Its name in variant names, messages and `--dtype` (`f16`, `q4_k`).
    pub name: &'static str,
    pub dtype: DType,
    /// Elements per weight word: `W_EPV` in the shaders (at most 8, the width `w_load` returns).
    pub elems_per_word: usize,
    /// Elements in one block of a checkpoint row (1 for float formats, 32 or 256 for GGUF's).
    pub block_elems: usize,
    /// Bytes of one block in a checkpoint row (an element's bytes for float formats).
    pub block_bytes: usize,
    /// The WGSL parts defining `w_load` (helpers first).
    pub wgsl: &'static [&'static str],
    /// Whether its values feed f16 cooperative matrices as well as the f16 dequantisation at load
    /// would (the tiles hold f16).
    pub coop: bool,
    /// One checkpoint row (`cols` elements, little-endian) into its GPU words (`dst`: the stored
    /// row, zeroed). `None`: the row is stored as the checkpoint has it, zero-padded to whole words
    /// for float formats.
    pub repack_row: Option<RepackRow>,
    /// The GGUF (ggml) type id of this format, if GGUF has it.
    pub ggml_type: Option<u32>,
}

/// One checkpoint row (`src`) into its stored words (`dst`, zeroed).
pub type RepackRow = fn(src: &[u8], dst: &mut [u8]);

/// A format's WGSL part.
macro_rules! part {
    ($name:literal) => {
        include_str!(concat!("../../shaders/formats/", $name, ".wgsl"))
    };
}

const BLOCKS: &str = part!("blocks");
const KQUANT_SCALES: &str = part!("kquant_scales");
const IQ4_KVALUES: &str = part!("iq4_kvalues");

const fn float(
    name: &'static str,
    dtype: DType,
    bytes: usize,
    wgsl: &'static [&'static str],
    coop: bool,
    ggml: Option<u32>,
) -> Format {
    Format {
        name,
        dtype,
        elems_per_word: 16 / bytes,
        block_elems: 1,
        block_bytes: bytes,
        wgsl,
        coop,
        repack_row: None,
        ggml_type: ggml,
    }
}

const fn blocks(
    name: &'static str,
    dtype: DType,
    elems: usize,
    bytes: usize,
    wgsl: &'static [&'static str],
    ggml: Option<u32>,
) -> Format {
    Format {
        name,
        dtype,
        elems_per_word: 8,
        block_elems: elems,
        block_bytes: bytes,
        wgsl,
        // Dequantised values in f32, rounded once to f16 in the tile: what the f16 expansion at
        // load gave the same path.
        coop: true,
        repack_row: None,
        ggml_type: ggml,
    }
}

// One row per format: a table, kept one line a row.
#[rustfmt::skip]
pub const FORMATS: &[Format] = &[
    float("f32", DType::F32, 4, &[part!("f32")], false, Some(0)),
    float("f16", DType::F16, 2, &[part!("f16")], true, Some(1)),
    // bf16 -> f16 rounds: the cooperative path holds activations to f16 as well (its tests and
    // parity bounds say so).
    float("bf16", DType::BF16, 2, &[part!("bf16")], true, Some(30)),
    blocks("q8_0",   DType::Q8_0,   32,  34,  &[BLOCKS, part!("q8_0")], Some(8)),
    blocks("q4_0",   DType::Q4_0,   32,  18,  &[BLOCKS, part!("q4_0")], Some(2)),
    blocks("q4_1",   DType::Q4_1,   32,  20,  &[BLOCKS, part!("q4_1")], Some(3)),
    blocks("q5_0",   DType::Q5_0,   32,  22,  &[BLOCKS, part!("q5_0")], Some(6)),
    blocks("q5_1",   DType::Q5_1,   32,  24,  &[BLOCKS, part!("q5_1")], Some(7)),
    blocks("q2_k",   DType::Q2_K,   256, 84,  &[BLOCKS, part!("q2_k")], Some(10)),
    blocks("q3_k",   DType::Q3_K,   256, 110, &[BLOCKS, part!("q3_k")], Some(11)),
    blocks("q4_k",   DType::Q4_K,   256, 144, &[BLOCKS, KQUANT_SCALES, part!("q4_k")], Some(12)),
    blocks("q5_k",   DType::Q5_K,   256, 176, &[BLOCKS, KQUANT_SCALES, part!("q5_k")], Some(13)),
    blocks("q6_k",   DType::Q6_K,   256, 210, &[BLOCKS, part!("q6_k")], Some(14)),
    blocks("iq4_nl", DType::IQ4_NL, 32,  18,  &[BLOCKS, IQ4_KVALUES, part!("iq4_nl")], Some(20)),
    blocks("iq4_xs", DType::IQ4_XS, 256, 136, &[BLOCKS, IQ4_KVALUES, part!("iq4_xs")], Some(23)),
    blocks("mxfp4",  DType::MXFP4,  32,  17,  &[BLOCKS, part!("mxfp4")], Some(39)),
    // Not a GGUF type: DeepSeek-V3's FP8 checkpoints repacked per row (src/model/quant.rs).
    blocks("fp8",    DType::FP8,    128, 132, &[BLOCKS, part!("fp8")], None),
];

impl Format {
    /// The row of `dtype`.
    pub fn of(dtype: DType) -> &'static Format {
        FORMATS
            .iter()
            .find(|f| f.dtype == dtype)
            .expect("every DType has a row in FORMATS")
    }

    /// The format of GGUF (ggml) type `t`, if wgmoe reads it packed.
    pub fn of_ggml(t: u32) -> Option<&'static Format> {
        FORMATS.iter().find(|f| f.ggml_type == Some(t))
    }

    /// Bytes an element takes on average in a checkpoint row (0.5625 for Q4_K).
    pub fn bytes_per_elem(&self) -> f64 {
        self.block_bytes as f64 / self.block_elems as f64
    }

    /// Whether rows are blocks kept as the checkpoint stores them.
    pub fn is_blocked(&self) -> bool {
        self.block_elems > 1
    }

    /// Bytes of a checkpoint row of `cols` elements; `None` when `cols` is not whole blocks.
    pub fn row_bytes(&self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_elems)
            .then(|| cols / self.block_elems * self.block_bytes)
    }

    /// Weight words (`w_load` indices) of one row of `cols` elements.
    pub fn words_per_row(&self, cols: usize) -> usize {
        cols.div_ceil(self.elems_per_word)
    }

    /// Bytes from one stored row of `cols` elements to the next: whole 16-byte words for float
    /// formats, the checkpoint's row for block formats.
    pub fn row_stride(&self, cols: usize) -> usize {
        if self.is_blocked() {
            self.row_bytes(cols).unwrap_or(0)
        } else {
            self.words_per_row(cols) * 16
        }
    }

    /// `compose` reading weights of this format: `W_EPV` and `w_load` before its body, the
    /// format's name in its variant.
    pub fn apply(&'static self, compose: &mut super::Compose<'_>) {
        compose.consts.push(super::shader::ConstDecl {
            name: "W_EPV",
            value: super::shader::Value::u32(self.elems_per_word as u32),
            doc: "",
        });
        for (i, part) in self.wgsl.iter().enumerate() {
            compose.parts.insert(i, part);
        }
        compose.variant = if compose.variant.is_empty() {
            self.name.to_string()
        } else {
            format!("{}/{}", self.name, compose.variant)
        };
    }
}

impl Format {
    /// `rows` random checkpoint rows of `cols` elements, values about `scale` in size: float
    /// formats encode uniform values in `[-scale, scale)`; block formats take random quants and
    /// scale bits, with each block's f16 scales (E8M0 exponent for MXFP4) set so a typical value
    /// is about `scale`. For synthetic models and kernel tests, which dequantise the same bytes on
    /// the CPU for their reference.
    pub fn random_rows(&self, rows: usize, cols: usize, seed: u64, scale: f32) -> Option<Vec<u8>> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let unit = |r: u64| (r >> 11) as f32 / (1u64 << 53) as f32;
        if !self.is_blocked() {
            let v: Vec<f32> = (0..rows * cols).map(|_| (unit(next()) * 2.0 - 1.0) * scale).collect();
            return Some(self.dtype.encode(&v));
        }
        let mut out = vec![0u8; rows * self.row_bytes(cols)?];
        // The f16 scale fields of a block, and the size of a typical quant times its sub-scale.
        let (f16s, typical): (&[usize], f32) = match self.dtype {
            DType::Q8_0 => (&[0], 64.0),
            DType::Q4_0 => (&[0], 4.0),
            DType::Q4_1 => (&[0, 2], 8.0),
            DType::Q5_0 => (&[0], 8.0),
            DType::Q5_1 => (&[0, 2], 16.0),
            DType::Q2_K => (&[80, 82], 16.0),
            DType::Q3_K => (&[108], 64.0),
            DType::Q4_K | DType::Q5_K => (&[0, 2], 256.0),
            DType::Q6_K => (&[208], 1024.0),
            DType::IQ4_NL => (&[0], 64.0),
            DType::IQ4_XS => (&[0], 1024.0),
            DType::FP8 => (&[], 1.0),
            _ => (&[], 1.0),
        };
        for block in out.chunks_exact_mut(self.block_bytes) {
            for pair in block.chunks_mut(8) {
                let r = next().to_le_bytes();
                pair.copy_from_slice(&r[..pair.len()]);
            }
            for &o in f16s {
                let d = half::f16::from_f32(scale / typical * (0.5 + unit(next())));
                block[o..o + 2].copy_from_slice(&d.to_le_bytes());
            }
            if self.dtype == DType::FP8 {
                // The tile scale (f32), and no NaN codes (S.1111.111) among the values.
                block[..4].copy_from_slice(&(scale / 64.0 * (0.5 + unit(next()))).to_le_bytes());
                for q in &mut block[4..] {
                    if *q & 0x7F == 0x7F {
                        *q -= 1;
                    }
                }
            }
            if self.dtype == DType::MXFP4 {
                // x = kvalue * 2^(e - 128), kvalues up to 12: e near 128 + log2(scale / 4).
                let e = 128.0 + (scale / 4.0).log2() + (unit(next()) * 2.0).floor();
                block[0] = e.clamp(1.0, 254.0) as u8;
            }
        }
        Some(out)
    }
}
