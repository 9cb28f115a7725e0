// MXFP4: blocks of 32 = one E8M0 byte e, 16 bytes of E2M1 nibbles as Q4_0 (17 bytes);
// x = kvalues[q] * 2^(e - 128) (ggml's dequantize_row_mxfp4: doubled E2M1 values, half the scale).
fn mxfp4_kvalue(q: u32) -> f32 {
    let m = q & 7u;
    var v = f32(m);
    if m >= 2u {
        // 2, 3, 4, 6, 8, 12: (2 or 3) << (m / 2 - 1)
        v = f32((2u + (m & 1u)) << ((m >> 1u) - 1u));
    }
    return select(v, -v, q >= 8u);
}

// ggml_e8m0_to_fp32_half: 2^(e - 128) from its bits (e < 2 are f32 subnormals).
fn e8m0_half(e: u32) -> f32 {
    if e < 2u {
        return bitcast<f32>(0x00200000u << e);
    }
    return bitcast<f32>((e - 1u) << 23u);
}

fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 2u) * 17u;
    let d = e8m0_half(w_byte(b));
    var q = w_fields8(b + 1u + (i & 1u) * 8u, (i & 2u) * 2u, 4u);
    for (var k = 0u; k < 8u; k++) {
        q[k] = mxfp4_kvalue(u32(q[k])) * d;
    }
    return q;
}
