//! ggml's dequantisers, in its reference formulas and order of operations: Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1, the K-quants Q2_K .. Q6_K, IQ4_NL, IQ4_XS and MXFP4; [`dequantize`] picks one by type and splits large
//! tensors over the CPU's threads.
//!
//! They live beside the tensor sources rather than inside `gguf` because both use them: the GGUF
//! source to dequantise at load, `source::f32_values` to read packed tensors on the host. Types
//! are named by their row in the weight-format table (`gpu::FORMATS`), which also gives the ggml id.

use crate::gpu::{DType, Format};

/// The ggml type ids of the block-quantised types [`dequantize`] reads.
pub fn quantized() -> impl Iterator<Item = u32> {
    DType::PACKED.into_iter().filter_map(|d| Format::of(d).ggml_type)
}

/// (elements, bytes) of one block of ggml type `t`, for the types [`dequantize`] reads.
fn block_layout(t: u32) -> Option<(usize, usize)> {
    Format::of_ggml(t)
        .filter(|f| f.is_blocked())
        .map(|f| (f.block_elems, f.block_bytes))
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `value` of every low nibble of `qs`, then of every high nibble: the 32 elements of a block
/// that keeps element j in the low nibble of byte j and element j + 16 in its high nibble (Q4_0,
/// Q4_1, IQ4_NL, IQ4_XS's sub-blocks, MXFP4).
fn push_nibbles(out: &mut Vec<f32>, qs: &[u8], value: impl Fn(u8) -> f32) {
    out.extend(qs.iter().map(|&q| value(q & 0xF)));
    out.extend(qs.iter().map(|&q| value(q >> 4)));
}

/// Q8_0: blocks of 32 = f16 `d` + 32 × i8 `q`; `x = d * q`.
pub fn dequant_q8_0(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(34) {
        let d = f16_at(b, 0);
        out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
    }
}

/// Q4_0: blocks of 32 = f16 `d` + 16 bytes; low nibbles are elements 0..16, high nibbles 16..32;
/// `x = d * (q - 8)`.
pub fn dequant_q4_0(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(18) {
        let d = f16_at(b, 0);
        push_nibbles(out, &b[2..18], |q| d * (q as i32 - 8) as f32);
    }
}

/// Q4_1: blocks of 32 = f16 `d`, f16 `m` + 16 bytes (nibbles as Q4_0); `x = d * q + m`.
pub fn dequant_q4_1(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(20) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        push_nibbles(out, &b[4..20], |q| d * q as f32 + m);
    }
}

/// Q5_0: blocks of 32 = f16 `d`, u32 `qh` (bit j = 5th bit of element j) + 16 bytes (nibbles as
/// Q4_0); `x = d * (q - 16)` (ggml's `dequantize_row_q5_0`).
pub fn dequant_q5_0(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(22) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        let q = |j: usize, lo: u8| (lo as i32 | ((((qh >> j) & 1) as i32) << 4)) - 16;
        out.extend(qs.iter().enumerate().map(|(j, &x)| q(j, x & 0xF) as f32 * d));
        out.extend(qs.iter().enumerate().map(|(j, &x)| q(j + 16, x >> 4) as f32 * d));
    }
}

/// Q5_1: blocks of 32 = f16 `d`, f16 `m`, u32 `qh` + 16 bytes (as Q5_0); `x = d * q + m`.
pub fn dequant_q5_1(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(24) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        let q = |j: usize, lo: u8| (lo as u32 | (((qh >> j) & 1) << 4)) as f32;
        out.extend(qs.iter().enumerate().map(|(j, &x)| d * q(j, x & 0xF) + m));
        out.extend(qs.iter().enumerate().map(|(j, &x)| d * q(j + 16, x >> 4) + m));
    }
}

/// Q2_K: super-blocks of 256 = 16 scale bytes (low nibble: scale, high nibble: min, one pair per
/// 16 elements), 64 bytes of 2-bit quants, f16 `d`, f16 `dmin`. Element `128n + 32j + 16h + l`
/// is bits `2j..2j+2` of `qs[32n + 16h + l]` with scale byte `8n + 2j + h`;
/// `x = (d * sc) * q - dmin * m` (ggml's `dequantize_row_q2_K`).
pub fn dequant_q2_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(84) {
        let (scales, qs) = (&b[0..16], &b[16..80]);
        let d = f16_at(b, 80);
        let dmin = f16_at(b, 82);
        for n in 0..2 {
            for j in 0..4 {
                for h in 0..2 {
                    let sc = scales[8 * n + 2 * j + h];
                    let dl = d * (sc & 0xF) as f32;
                    let ml = dmin * (sc >> 4) as f32;
                    let q = &qs[32 * n + 16 * h..32 * n + 16 * h + 16];
                    out.extend(q.iter().map(|&x| dl * ((x >> (2 * j)) & 3) as f32 - ml));
                }
            }
        }
    }
}

/// Q3_K: super-blocks of 256 = 32 bytes `hmask`, 64 bytes of 2-bit low quants, 12 bytes of 6-bit
/// scales, f16 `d`. Element `128n + 32j + 16h + l`: low bits `2j..2j+2` of `qs[32n + 16h + l]`,
/// high bit `4n + j` of `hmask[16h + l]` (set: +0, clear: -4), scale `s = 8n + 2j + h` (low 4 bits
/// from the nibbles of bytes 0..8, high 2 from bytes 8..12, minus 32); `x = (d * sc) * q`
/// (ggml's `dequantize_row_q3_K`).
pub fn dequant_q3_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(110) {
        let (hmask, qs, sb) = (&b[0..32], &b[32..96], &b[96..108]);
        let d = f16_at(b, 108);
        let scale = |s: usize| {
            let lo = if s < 8 { sb[s] & 0xF } else { sb[s - 8] >> 4 };
            let hi = (sb[8 + s % 4] >> (2 * (s / 4))) & 3;
            (lo | (hi << 4)) as i32 - 32
        };
        for n in 0..2 {
            for j in 0..4 {
                for h in 0..2 {
                    let dl = d * scale(8 * n + 2 * j + h) as f32;
                    for l in 0..16 {
                        let low = ((qs[32 * n + 16 * h + l] >> (2 * j)) & 3) as i32;
                        let high = if hmask[16 * h + l] & (1 << (4 * n + j)) != 0 {
                            0
                        } else {
                            4
                        };
                        out.push(dl * (low - high) as f32);
                    }
                }
            }
        }
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K
/// super-block from its 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: super-blocks of 256 = f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales / mins, 128 bytes of
/// nibbles. Sub-block `s` (32 elements) of chunk `c = s / 2` is the low (s even) or high (s odd)
/// nibbles of `qs[32c..32c + 32]`; `x = (d * sc) * q - dmin * m` (ggml's `dequantize_row_q4_K`).
pub fn dequant_q4_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(144) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (scales, qs) = (&b[4..16], &b[16..144]);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let shift = 4 * (s % 2);
            let q = &qs[32 * (s / 2)..32 * (s / 2) + 32];
            out.extend(q.iter().map(|&x| dl * ((x >> shift) & 0xF) as f32 - ml));
        }
    }
}

/// Q5_K: super-blocks of 256 = f16 `d`, f16 `dmin`, 12 bytes of scales / mins (as Q4_K), 32 bytes
/// `qh`, 128 bytes of nibbles (as Q4_K); bit `s` of `qh[l]` is the fifth bit of element `l` of
/// sub-block `s`; `x = (d * sc) * q - dmin * m` (ggml's `dequantize_row_q5_K`).
pub fn dequant_q5_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(176) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, scales);
            let (dl, ml) = (d * sc as f32, dmin * m as f32);
            let shift = 4 * (s % 2);
            let q = &qs[32 * (s / 2)..32 * (s / 2) + 32];
            out.extend(
                q.iter()
                    .zip(qh)
                    .map(|(&x, &h)| dl * (((x >> shift) & 0xF) | (((h >> s) & 1) << 4)) as f32 - ml),
            );
        }
    }
}

/// Q6_K: super-blocks of 256 = 128 bytes `ql` (low nibbles), 64 bytes `qh` (2 high bits each),
/// 16 i8 scales, f16 `d`. Element `128n + 32k + l`: low nibble of `ql[64n + 32(k % 2) + l]`
/// (k < 2) or its high nibble (k ≥ 2), high bits `2k..2k+2` of `qh[32n + l]`, scale
/// `8n + l / 16 + 2k`; `x = (d * sc) * (q - 32)` (ggml's `dequantize_row_q6_K`).
pub fn dequant_q6_k(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(210) {
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        let d = f16_at(b, 208);
        for n in 0..2 {
            for k in 0..4 {
                for l in 0..32 {
                    let lo = (ql[64 * n + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0xF;
                    let hi = (qh[32 * n + l] >> (2 * k)) & 3;
                    let q = (lo | (hi << 4)) as i32 - 32;
                    let s = sc[8 * n + l / 16 + 2 * k] as i8;
                    out.push(d * s as f32 * q as f32);
                }
            }
        }
    }
}

/// IQ4_NL / IQ4_XS's non-linear 4-bit grid (ggml's `kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// IQ4_NL: blocks of 32 = f16 `d` + 16 bytes, nibbles as Q4_0 (element j low nibble of byte j,
/// element j + 16 its high nibble); `x = d * kvalues[q]` (ggml's `dequantize_row_iq4_nl`).
pub fn dequant_iq4_nl(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(18) {
        let d = f16_at(b, 0);
        push_nibbles(out, &b[2..18], |q| d * KVALUES_IQ4NL[q as usize] as f32);
    }
}

/// IQ4_XS: super-blocks of 256 = f16 `d`, u16 `scales_h`, 4 bytes `scales_l`, 128 bytes of
/// nibbles. Sub-block `s` (32 elements) has the 6-bit scale `ls` = nibble `s` of `scales_l` plus
/// bits `2s..2s+2` of `scales_h` as its top two bits, and its nibbles in `qs[16s..16s + 16]` as
/// IQ4_NL's; `x = (d * (ls - 32)) * kvalues[q]` (ggml's `dequantize_row_iq4_xs`).
pub fn dequant_iq4_xs(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(136) {
        let d = f16_at(b, 0);
        let scales_h = u16::from_le_bytes([b[2], b[3]]) as u32;
        let (scales_l, qs) = (&b[4..8], &b[8..136]);
        for s in 0..8 {
            let lo = (scales_l[s / 2] >> (4 * (s % 2))) & 0xF;
            let hi = (scales_h >> (2 * s)) & 3;
            let dl = d * ((lo as u32 | (hi << 4)) as i32 - 32) as f32;
            push_nibbles(out, &qs[16 * s..16 * s + 16], |q| dl * KVALUES_IQ4NL[q as usize] as f32);
        }
    }
}

/// E2M1 values doubled (ggml's `kvalues_mxfp4`), to be multiplied by half the E8M0 scale.
const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// ggml's `ggml_e8m0_to_fp32_half`: `2^(e - 128)`, built from its bits (e = 0 and 1 are f32
/// subnormals; e = 255 is 2^127, not NaN, as in ggml).
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

/// MXFP4: blocks of 32 = one E8M0 scale byte `e` + 16 bytes of E2M1 nibbles; like Q4_0, the low
/// nibble of byte j is element j and the high nibble element j + 16 (ggml's `dequantize_row_mxfp4`;
/// llama.cpp's converter reorders the pairs of transformers' layout into this one).
/// `x = kvalues[q] * 2^(e - 128)`, i.e. E2M1 value times `2^(e - 127)`; every value is exact in
/// bf16 (two significant bits).
pub fn dequant_mxfp4(src: &[u8], out: &mut Vec<f32>) {
    for b in src.chunks_exact(17) {
        let d = e8m0_to_f32_half(b[0]);
        push_nibbles(out, &b[1..17], |q| KVALUES_MXFP4[q as usize] as f32 * d);
    }
}

/// Dequantise a buffer of whole blocks of one of the [`quantized`] types to f32, in ggml's
/// formulas and order of operations (f32 throughout, as ggml's `dequantize_row_*` and gguf-py's
/// `gguf.quants`). `None` for other types and for a buffer that is not a whole number of blocks.
pub fn dequantize(ggml_type: u32, src: &[u8]) -> Option<Vec<f32>> {
    let (be, bb) = block_layout(ggml_type)?;
    if !src.len().is_multiple_of(bb) {
        return None;
    }
    // Blocks are independent: large tensors are split over the CPU's threads (a big model's
    // experts are gigabytes of blocks), small ones stay on this one.
    const PARALLEL_BYTES: usize = 4 << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if src.len() < PARALLEL_BYTES || threads < 2 {
        return dequantize_blocks(ggml_type, src, be, bb);
    }
    let per = (src.len() / bb).div_ceil(threads) * bb;
    let parts: Vec<Option<Vec<f32>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = src
            .chunks(per)
            .map(|piece| scope.spawn(move || dequantize_blocks(ggml_type, piece, be, bb)))
            .collect();
        handles.into_iter().map(|h| h.join().ok().flatten()).collect()
    });
    let mut out = Vec::with_capacity(src.len() / bb * be);
    for part in parts {
        out.extend(part?);
    }
    Some(out)
}

/// Dequantise whole blocks of `ggml_type` (`be` values in `bb` bytes each).
fn dequantize_blocks(ggml_type: u32, src: &[u8], be: usize, bb: usize) -> Option<Vec<f32>> {
    let mut out = Vec::with_capacity(src.len() / bb * be);
    match Format::of_ggml(ggml_type)?.dtype {
        DType::Q8_0 => dequant_q8_0(src, &mut out),
        DType::Q4_0 => dequant_q4_0(src, &mut out),
        DType::Q4_1 => dequant_q4_1(src, &mut out),
        DType::Q5_0 => dequant_q5_0(src, &mut out),
        DType::Q5_1 => dequant_q5_1(src, &mut out),
        DType::Q2_K => dequant_q2_k(src, &mut out),
        DType::Q3_K => dequant_q3_k(src, &mut out),
        DType::Q4_K => dequant_q4_k(src, &mut out),
        DType::Q5_K => dequant_q5_k(src, &mut out),
        DType::Q6_K => dequant_q6_k(src, &mut out),
        DType::IQ4_NL => dequant_iq4_nl(src, &mut out),
        DType::IQ4_XS => dequant_iq4_xs(src, &mut out),
        DType::MXFP4 => dequant_mxfp4(src, &mut out),
        _ => return None,
    }
    Some(out)
}
