// FP8 (DeepSeek-V3's block-scaled float8 e4m3fn), repacked per row at load: blocks of 128 = the
// tile's f32 scale, then 128 e4m3fn bytes as the checkpoint stores them (132 bytes);
// x = bf16(fp8(q) * scale), rounded once to bf16 as the checkpoint's own dequantisation does.

// One e4m3fn byte: sign, 4 exponent bits (bias 7), 3 mantissa bits; no infinities, S.1111.111 is
// NaN; exponent 0 is subnormal (m / 8 * 2^-6).
fn fp8_e4m3(q: u32) -> f32 {
    let e = (q >> 3u) & 15u;
    let m = q & 7u;
    var v: f32;
    if e == 0u {
        v = f32(m) * (1.0 / 512.0);
    } else if e == 15u && m == 7u {
        v = bitcast<f32>(0x7fc00000u);
    } else {
        v = bitcast<f32>(((e + 120u) << 23u) | (m << 20u));
    }
    return select(v, -v, (q & 0x80u) != 0u);
}

// f32 to the nearest bf16 (ties to even), as an f32.
fn round_bf16(x: f32) -> f32 {
    let b = bitcast<u32>(x);
    if (b & 0x7f800000u) == 0x7f800000u {
        return x;
    }
    return bitcast<f32>((b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u);
}

fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 4u) * 132u;
    let s = bitcast<f32>(w_u32(b));
    let off = b + 4u + (i & 15u) * 8u;
    let lo = w_u32(off);
    let hi = w_u32(off + 4u);
    var v: array<f32, 8>;
    for (var k = 0u; k < 4u; k++) {
        v[k] = round_bf16(fp8_e4m3((lo >> (8u * k)) & 0xffu) * s);
        v[k + 4u] = round_bf16(fp8_e4m3((hi >> (8u * k)) & 0xffu) * s);
    }
    return v;
}
