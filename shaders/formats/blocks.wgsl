// Block-quantised weights keep the checkpoint's bytes: GGUF blocks, rows back to back, so a chunk
// is the file's bytes for its rows (src/gpu/format.rs says why). A weight word of these formats is
// eight consecutive elements: w_load(i) returns elements 8i .. 8i + 8 of the chunk, which lie in
// block 8i / (elements per block). Blocks need not start on a u32, so their fields are read with
// the helpers below; a chunk keeps a zero word past its last row for the unaligned reads.

// The u32 at byte offset b (a multiple of 4).
fn w_u32(b: u32) -> u32 {
    let i = b >> 2u;
    return w[i >> 2u][i & 3u];
}

// The four bytes from byte offset b, any alignment, little-endian.
fn w_bytes4(b: u32) -> u32 {
    let a = b & ~3u;
    let s = (b & 3u) * 8u;
    let lo = w_u32(a);
    if s == 0u {
        return lo;
    }
    return (lo >> s) | (w_u32(a + 4u) << (32u - s));
}

// The byte at offset b.
fn w_byte(b: u32) -> u32 {
    return (w_u32(b & ~3u) >> ((b & 3u) * 8u)) & 0xFFu;
}

// The f16 at byte offset b (even).
fn w_f16(b: u32) -> f32 {
    return unpack2x16float(w_u32(b & ~3u) >> ((b & 2u) * 8u)).x;
}

// Bits shift .. shift + width of each of the eight bytes at offset b (any alignment).
fn w_fields8(b: u32, shift: u32, width: u32) -> array<f32, 8> {
    let lo = w_bytes4(b);
    let hi = w_bytes4(b + 4u);
    var v: array<f32, 8>;
    for (var k = 0u; k < 4u; k++) {
        v[k] = f32(extractBits(lo, 8u * k + shift, width));
        v[k + 4u] = f32(extractBits(hi, 8u * k + shift, width));
    }
    return v;
}

// The eight signed bytes at offset b.
fn w_i8x8(b: u32) -> array<f32, 8> {
    let lo = bitcast<i32>(w_bytes4(b));
    let hi = bitcast<i32>(w_bytes4(b + 4u));
    var v: array<f32, 8>;
    for (var k = 0u; k < 4u; k++) {
        v[k] = f32(extractBits(lo, 8u * k, 8u));
        v[k + 4u] = f32(extractBits(hi, 8u * k, 8u));
    }
    return v;
}

// The signed byte at offset b.
fn w_i8(b: u32) -> f32 {
    return f32(extractBits(bitcast<i32>(w_byte(b)), 0u, 8u));
}

// a * v[k] + c for each element (ggml's order: scale, then offset).
fn w_affine(v: array<f32, 8>, a: f32, c: f32) -> array<f32, 8> {
    var r: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        r[k] = a * v[k] + c;
    }
    return r;
}
