//! Dequantisers for the quantised formats real checkpoints ship in (MODELS.md §7, §9), pure functions
//! over bytes; the safetensors source (`safetensors.rs`) validates shapes and calls them.
//!
//! - MXFP4 (gpt-oss experts, OCP microscaling): 4-bit E2M1 codes, two per byte (low nibble first), in
//!   blocks of 32 sharing one E8M0 power-of-two scale. Every dequantised value is exact in bf16.
//! - FP8 e4m3fn (DeepSeek-V3 linears): 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities,
//!   `S.1111.111` is NaN, max 448. Block-scaled by an f32 `weight_scale_inv` per `[bh, bw]` tile
//!   (128x128 in the released checkpoints), multiplied despite its name; the product is rounded
//!   once to bf16.

use half::bf16;

/// E2M1 code to value (`integrations/mxfp4.py` FP4_VALUES).
pub const E2M1: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// An E8M0 scale byte: `2^(s - 127)`; `0xFF` is NaN (OCP MX v1.0). `s = 0` gives 2^-127, an f32
/// subnormal, exactly.
pub fn e8m0_to_f32(s: u8) -> f32 {
    match s {
        0 => f32::from_bits(0x0040_0000),
        255 => f32::NAN,
        _ => f32::from_bits((s as u32) << 23),
    }
}

/// One float8_e4m3fn byte as f32 (exact).
pub fn fp8_e4m3fn_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((b >> 3) & 0xF) as i32;
    let man = (b & 0x7) as f32;
    if exp == 0xF && b & 0x7 == 0x7 {
        return f32::NAN;
    }
    if exp == 0 {
        // subnormal: m/8 * 2^-6
        return sign * man * (1.0 / 512.0);
    }
    sign * (1.0 + man / 8.0) * f32::from_bits(((exp - 7 + 127) as u32) << 23)
}

/// All 256 e4m3fn values, for table lookups in the bulk dequantiser.
pub fn fp8_e4m3fn_table() -> [f32; 256] {
    let mut t = [0.0; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = fp8_e4m3fn_to_f32(i as u8);
    }
    t
}

fn put_bf16(out: &mut [u8], i: usize, v: f32) {
    out[2 * i..2 * i + 2].copy_from_slice(&bf16::from_f32(v).to_le_bytes());
}

/// Decode one MXFP4 block (16 bytes = 32 values, low nibble first) with its E8M0 scale.
pub fn mxfp4_block(bytes: &[u8; 16], scale: u8) -> [f32; 32] {
    let s = e8m0_to_f32(scale);
    let mut v = [0.0f32; 32];
    for (j, &b) in bytes.iter().enumerate() {
        v[2 * j] = E2M1[(b & 0xF) as usize] * s;
        v[2 * j + 1] = E2M1[(b >> 4) as usize] * s;
    }
    v
}

/// gpt-oss experts on disk to transformers' parameter: `blocks [E, R, G, 16]` and `scales [E, R, G]`
/// (rows `[out, in]`, `in = 32 G`) dequantised and transposed to bf16 `[E, 32 G, R]` (`[E, in, out]`),
/// little-endian bytes. The caller checks the lengths.
pub fn mxfp4_to_bf16_transposed(blocks: &[u8], scales: &[u8], experts: usize, rows: usize, groups: usize) -> Vec<u8> {
    assert_eq!(blocks.len(), experts * rows * groups * 16, "MXFP4 blocks length");
    assert_eq!(scales.len(), experts * rows * groups, "MXFP4 scales length");
    let cols = groups * 32;
    let mut out = vec![0u8; experts * cols * rows * 2];
    // Rows in tiles so the transposed writes land on a few cache lines per column.
    const TILE: usize = 32;
    par_units(&mut out, cols * rows * 2, |e, dst| {
        for r0 in (0..rows).step_by(TILE) {
            for g in 0..groups {
                for r in r0..(r0 + TILE).min(rows) {
                    let k = (e * rows + r) * groups + g;
                    // Every E2M1 value times a power of two is exact in bf16 (2 significant bits, and
                    // 2^-128 at the bottom is a bf16 subnormal): the top half of the f32 is the bf16.
                    let s = e8m0_to_f32(scales[k]);
                    let lut: [[u8; 2]; 16] =
                        std::array::from_fn(|c| (((E2M1[c] * s).to_bits() >> 16) as u16).to_le_bytes());
                    for (j, &b) in blocks[k * 16..k * 16 + 16].iter().enumerate() {
                        let i = (g * 32 + 2 * j) * rows + r;
                        dst[2 * i..2 * i + 2].copy_from_slice(&lut[(b & 0xF) as usize]);
                        dst[2 * (i + rows)..2 * (i + rows) + 2].copy_from_slice(&lut[(b >> 4) as usize]);
                    }
                }
            }
        }
    });
    out
}

/// gpt-oss experts on disk (`blocks [.., 16]` with `scales [..]`, one per block; byte j holds
/// elements 2j (low nibble) and 2j + 1) as GGUF's MXFP4 blocks (17 bytes: the E8M0 scale, then
/// byte j holding elements j and j + 16), the layout the GPU reads packed. The scale byte means the
/// same in both (`2^(s - 127)` times the E2M1 value).
pub fn mxfp4_to_gguf_blocks(blocks: &[u8], scales: &[u8]) -> Vec<u8> {
    assert_eq!(blocks.len(), scales.len() * 16, "MXFP4 blocks length");
    let mut out = vec![0u8; scales.len() * 17];
    for ((dst, src), &s) in out.chunks_exact_mut(17).zip(blocks.chunks_exact(16)).zip(scales) {
        dst[0] = s;
        let nibble = |k: usize| (src[k / 2] >> (4 * (k % 2))) & 0xF;
        for j in 0..16 {
            dst[1 + j] = nibble(j) | (nibble(j + 16) << 4);
        }
    }
    out
}

/// Fill `out`, made of `unit`-byte independent units (an expert, a row), with `f(unit index,
/// unit bytes)` on every CPU thread: dequantising a large model's tensors is minutes on one.
fn par_units(out: &mut [u8], unit: usize, f: impl Fn(usize, &mut [u8]) + Sync) {
    if out.is_empty() || unit == 0 {
        return;
    }
    let units = out.len() / unit;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(units.max(1));
    let per = units.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (c, part) in out.chunks_mut(per * unit).enumerate() {
            let f = &f;
            scope.spawn(move || {
                for (i, dst) in part.chunks_mut(unit).enumerate() {
                    f(c * per + i, dst);
                }
            });
        }
    });
}

/// A block-scaled FP8 e4m3fn matrix `[rows, cols]` to bf16 bytes:
/// `W[i, j] = fp8(Wq[i, j]) * scale_inv[i / bh, j / bw]` with `scale_inv` row-major
/// `[ceil(rows / bh), ceil(cols / bw)]` (the last tile of a row or column may be partial).
pub fn fp8_block_to_bf16(w: &[u8], rows: usize, cols: usize, scale_inv: &[f32], block: [usize; 2]) -> Vec<u8> {
    let [bh, bw] = block;
    let (gr, gc) = (rows.div_ceil(bh), cols.div_ceil(bw));
    assert_eq!(w.len(), rows * cols, "FP8 weight length");
    assert_eq!(scale_inv.len(), gr * gc, "FP8 scale length");
    let lut = fp8_e4m3fn_table();
    let mut out = vec![0u8; rows * cols * 2];
    par_units(&mut out, cols * 2, |i, dst| {
        let srow = &scale_inv[(i / bh) * gc..(i / bh + 1) * gc];
        for j in 0..cols {
            put_bf16(dst, j, lut[w[i * cols + j] as usize] * srow[j / bw]);
        }
    });
    out
}

/// Elements of one packed FP8 block: a row's 128 consecutive values sharing one scale (the
/// checkpoints' 128-wide tiles), stored as the f32 scale then the 128 e4m3fn bytes (132 bytes).
pub const FP8_BLOCK: usize = 128;

/// A block-scaled FP8 e4m3fn matrix (`[rows, cols]`, `cols` a multiple of 128, tiles `block` with
/// a width that is a multiple of 128) as packed FP8 blocks: per row, per 128 columns, the tile's
/// f32 `scale_inv` then the 128 bytes as stored. `None` where the tiles do not allow it.
pub fn fp8_to_blocks(w: &[u8], rows: usize, cols: usize, scale_inv: &[f32], block: [usize; 2]) -> Option<Vec<u8>> {
    let [bh, bw] = block;
    if !fp8_packs(cols, block) {
        return None;
    }
    let gc = cols.div_ceil(bw);
    if w.len() != rows * cols || scale_inv.len() != rows.div_ceil(bh) * gc {
        return None;
    }
    let per_row = cols / FP8_BLOCK * (FP8_BLOCK + 4);
    let mut out = vec![0u8; rows * per_row];
    par_units(&mut out, per_row, |i, dst| {
        for (b, blk) in dst.chunks_exact_mut(FP8_BLOCK + 4).enumerate() {
            let j = b * FP8_BLOCK;
            blk[..4].copy_from_slice(&scale_inv[(i / bh) * gc + j / bw].to_le_bytes());
            blk[4..].copy_from_slice(&w[i * cols + j..i * cols + j + FP8_BLOCK]);
        }
    });
    Some(out)
}

/// Whether rows of `cols` in tiles `block` repack into FP8 blocks: every 128 values of a row
/// share one tile.
pub fn fp8_packs(cols: usize, block: [usize; 2]) -> bool {
    let [bh, bw] = block;
    cols.is_multiple_of(FP8_BLOCK) && bh > 0 && bw > 0 && bw.is_multiple_of(FP8_BLOCK)
}

/// Packed FP8 blocks ([`fp8_to_blocks`]) to their values: `fp8(q) * scale` rounded once to bf16,
/// the values the dequantising path ([`fp8_block_to_bf16`]) gives, which is what the GPU's
/// `w_load` computes too.
pub fn fp8_blocks_to_f32(b: &[u8]) -> Vec<f32> {
    let lut = fp8_e4m3fn_table();
    let mut out = Vec::with_capacity(b.len() / (FP8_BLOCK + 4) * FP8_BLOCK);
    for blk in b.chunks_exact(FP8_BLOCK + 4) {
        let s = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
        out.extend(blk[4..].iter().map(|&q| bf16::from_f32(lut[q as usize] * s).to_f32()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16s(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()
    }

    #[test]
    fn e8m0() {
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert_eq!(e8m0_to_f32(128), 2.0);
        assert_eq!(e8m0_to_f32(125), 0.25);
        assert_eq!(e8m0_to_f32(254), 2f32.powi(127));
        assert_eq!(e8m0_to_f32(1), 2f32.powi(-126));
        assert_eq!(e8m0_to_f32(0), 2f32.powi(-127));
        assert!(e8m0_to_f32(255).is_nan());
    }

    #[test]
    fn fp8_e4m3fn_values() {
        let cases: [(u8, f32); 15] = [
            (0x00, 0.0),
            (0x38, 1.0),          // 0.0111.000
            (0x40, 2.0),          // 0.1000.000
            (0x3C, 1.5),          // 0.0111.100
            (0xB8, -1.0),         // sign
            (0x7E, 448.0),        // 0.1111.110: max finite
            (0xFE, -448.0),       //
            (0x77, 240.0),        // 0.1110.111 = 1.875 * 2^7
            (0x08, 1.0 / 64.0),   // min normal 2^-6
            (0x07, 7.0 / 512.0),  // max subnormal 0.875 * 2^-6
            (0x01, 1.0 / 512.0),  // min subnormal 2^-9
            (0x81, -1.0 / 512.0), //
            (0x04, 4.0 / 512.0),  // 0.5 * 2^-6
            (0x30, 0.5),          // 0.0110.000
            (0x31, 0.5625),       // 1.125 * 2^-1
        ];
        for (b, v) in &cases {
            assert_eq!(fp8_e4m3fn_to_f32(*b), *v, "byte {b:#04x}");
        }
        assert_eq!(fp8_e4m3fn_to_f32(0x5B), 22.0); // 0.1011.011 = 1.375 * 2^4
        assert_eq!(fp8_e4m3fn_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
        assert!(fp8_e4m3fn_to_f32(0x7F).is_nan());
        assert!(fp8_e4m3fn_to_f32(0xFF).is_nan());
        // 0x78..0x7E are finite (no infinities in the fn variant).
        assert_eq!(fp8_e4m3fn_to_f32(0x78), 256.0);
        let t = fp8_e4m3fn_table();
        assert_eq!(t.iter().filter(|v| v.is_nan()).count(), 2);
        // Monotonic over the positive codes.
        for b in 1..0x7Fusize {
            assert!(t[b] > t[b - 1], "{b:#x}");
        }
    }

    #[test]
    fn mxfp4_block_decode() {
        let mut bytes = [0u8; 16];
        bytes[0] = 0x21; // low nibble 1 -> +0.5, high nibble 2 -> +1.0
        bytes[1] = 0xF7; // 7 -> +6, 15 -> -6
        bytes[15] = 0x98; // 8 -> -0, 9 -> -0.5
        let v = mxfp4_block(&bytes, 129); // scale 4
        assert_eq!(&v[..4], &[2.0, 4.0, 24.0, -24.0]);
        assert_eq!(v[30].to_bits(), (-0.0f32).to_bits());
        assert_eq!(v[31], -2.0);
        assert!(v[4..30].iter().all(|&x| x == 0.0));
        let v = mxfp4_block(&[0x53; 16], 126); // 3 -> 1.5, 5 -> 3.0; scale 0.5
        assert_eq!(&v[..2], &[0.75, 1.5]);
    }

    #[test]
    fn mxfp4_transposes_to_in_out() {
        // E=2, R=3 rows (out), G=2 groups (in = 64): value code at (e, r, c) chosen distinct.
        let (e, r, g) = (2, 3, 2);
        let code = |x: usize, row: usize, col: usize| ((x * 5 + row * 3 + col) % 16) as u8;
        let mut blocks = vec![0u8; e * r * g * 16];
        let mut scales = vec![0u8; e * r * g];
        for x in 0..e {
            for row in 0..r {
                for gi in 0..g {
                    let k = (x * r + row) * g + gi;
                    scales[k] = (120 + k) as u8;
                    for j in 0..16 {
                        let c = gi * 32 + 2 * j;
                        blocks[k * 16 + j] = code(x, row, c) | (code(x, row, c + 1) << 4);
                    }
                }
            }
        }
        let out = bf16s(&mxfp4_to_bf16_transposed(&blocks, &scales, e, r, g));
        assert_eq!(out.len(), e * 64 * r);
        for x in 0..e {
            for row in 0..r {
                for col in 0..64 {
                    let k = (x * r + row) * g + col / 32;
                    let want = E2M1[code(x, row, col) as usize] * 2f32.powi(120 + k as i32 - 127);
                    assert_eq!(out[(x * 64 + col) * r + row], want, "e {x} row {row} col {col}");
                }
            }
        }
    }

    #[test]
    fn mxfp4_extreme_scales_stay_exact() {
        // Each code once (two per byte), at the smallest scales: 2^-127 (f32 subnormal) and 2^-126.
        let blocks: Vec<u8> = (0..16u8).map(|j| j | (((j + 3) % 16) << 4)).collect();
        for s in [0u8, 1, 127, 200] {
            let out = bf16s(&mxfp4_to_bf16_transposed(&blocks, &[s], 1, 1, 1));
            for (c, &v) in out.iter().enumerate() {
                let code = if c % 2 == 0 { c / 2 } else { (c / 2 + 3) % 16 };
                let want = E2M1[code] as f64 * 2f64.powi(s as i32 - 127);
                assert_eq!(v as f64, want, "scale {s} col {c}");
                assert_eq!(v.is_sign_negative(), code >= 8, "scale {s} col {c}: sign of zero");
            }
        }
    }

    #[test]
    fn fp8_block_scales_with_partial_tiles() {
        // [5, 7] with 2x3 tiles: a 3x3 grid whose last row and column of tiles are partial.
        let (rows, cols, block) = (5, 7, [2, 3]);
        let w: Vec<u8> = (0..rows * cols)
            .map(|k| [0x38u8, 0x40, 0xB8, 0x01, 0x7E][k % 5])
            .collect();
        let scale: Vec<f32> = (0..9).map(|k| 0.1 + k as f32).collect();
        let out = bf16s(&fp8_block_to_bf16(&w, rows, cols, &scale, block));
        for i in 0..rows {
            for j in 0..cols {
                let k = i * cols + j;
                let v = [1.0, 2.0, -1.0, 1.0 / 512.0, 448.0][k % 5];
                let s = scale[(i / 2) * 3 + j / 3];
                assert_eq!(out[k], bf16::from_f32(v * s).to_f32(), "({i}, {j})");
            }
        }
        // Hand-checked corners: (0,0) = 1.0 * 0.1; (4,6) = w[34] (34 % 5 = 4: 448) * scale[8] (8.1).
        assert_eq!(out[0], bf16::from_f32(0.1).to_f32());
        assert_eq!(out[34], bf16::from_f32(448.0 * 8.1).to_f32());
        // 128x128 tiles over a 24 x 64 weight: one tile.
        let w = vec![0x40u8; 24 * 64];
        let out = bf16s(&fp8_block_to_bf16(&w, 24, 64, &[0.25], [128, 128]));
        assert!(out.iter().all(|&x| x == 0.5));
    }
}
