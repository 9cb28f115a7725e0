//! Where llama.cpp's converter stores a tensor in another layout than transformers, the
//! rearrangements between the two, on raw bytes (elements of `es` bytes): llama.cpp's Q/K row
//! permutation, gpt-oss's interleaved gate|up experts, DeepSeek's split `kv_b_proj`, and the
//! transposition of stacked matrices.

/// llama.cpp's `permute` (convert_hf_to_gguf): rows of each head reordered from halves
/// `[x0 .. x_{h/2}, y0 .. y_{h/2}]` to interleaved pairs. `rows` rows of `row_bytes` bytes each.
pub fn permute_rows(bytes: &[u8], rows: usize, row_bytes: usize, n_head: usize) -> Vec<u8> {
    reorder_rows(bytes, rows, row_bytes, n_head, false)
}

/// The inverse of [`permute_rows`]: back to transformers' half-split order.
pub fn unpermute_rows(bytes: &[u8], rows: usize, row_bytes: usize, n_head: usize) -> Vec<u8> {
    reorder_rows(bytes, rows, row_bytes, n_head, true)
}

fn reorder_rows(bytes: &[u8], rows: usize, row_bytes: usize, n_head: usize, inverse: bool) -> Vec<u8> {
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let hf = h * hd + i * half + j; // transformers row
                let gg = h * hd + 2 * j + i; // llama.cpp row
                let (dst, src) = if inverse { (hf, gg) } else { (gg, hf) };
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}

/// `[batch, rows, cols]` elements of `es` bytes to `[batch, cols, rows]`.
pub(super) fn transpose_last2(x: &[u8], batch: usize, rows: usize, cols: usize, es: usize) -> Vec<u8> {
    let mut out = vec![0u8; x.len()];
    for b in 0..batch {
        let base = b * rows * cols;
        for r in 0..rows {
            for c in 0..cols {
                let s = (base + r * cols + c) * es;
                let d = (base + c * rows + r) * es;
                out[d..d + es].copy_from_slice(&x[s..s + es]);
            }
        }
    }
    out
}

/// gpt-oss: llama.cpp's gate and up experts `[E, I, D]` back to transformers' `gate_up_proj
/// [E, D, 2I]` (x @ W; column 2i = gate row i, column 2i + 1 = up row i). With `transpose` false,
/// the biases: `[E, I]` twice to `[E, 2I]` interleaved the same way (`d` = 1).
pub fn interleave_gate_up(
    gate: &[u8],
    up: &[u8],
    e: usize,
    i_: usize,
    d: usize,
    es: usize,
    transpose: bool,
) -> Vec<u8> {
    let mut out = vec![0u8; gate.len() * 2];
    for x in 0..e {
        for i in 0..i_ {
            for c in 0..d {
                let s = ((x * i_ + i) * d + c) * es;
                for (k, part) in [gate, up].into_iter().enumerate() {
                    let col = 2 * i + k;
                    let dst = if transpose {
                        ((x * d + c) * 2 * i_ + col) * es
                    } else {
                        ((x * 2 * i_ + col) * d + c) * es
                    };
                    out[dst..dst + es].copy_from_slice(&part[s..s + es]);
                }
            }
        }
    }
    out
}

/// DeepSeek: newer converters' `attn_k_b [H, r, dn]` (W_UK_h transposed) and `attn_v_b [H, dv, r]`
/// (W_UV_h) back to transformers' `kv_b_proj [H·(dn+dv), r]` (per head: W_UK_h rows, W_UV_h rows).
pub fn assemble_kv_b(k_b: &[u8], v_b: &[u8], heads: usize, r: usize, dn: usize, dv: usize, es: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(k_b.len() + v_b.len());
    for h in 0..heads {
        let k = &k_b[h * r * dn * es..(h + 1) * r * dn * es];
        out.extend(transpose_last2(k, 1, r, dn, es));
        out.extend_from_slice(&v_b[h * dv * r * es..(h + 1) * dv * r * es]);
    }
    out
}
