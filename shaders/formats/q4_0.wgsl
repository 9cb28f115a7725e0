// Q4_0: blocks of 32 = f16 d, 16 bytes (18 bytes): low nibbles are elements 0..16, high nibbles
// 16..32; x = d * (q - 8). Word i is the low (i % 4 < 2) or high nibbles of 8 bytes.
fn w_load(i: u32) -> array<f32, 8> {
    let b = (i >> 2u) * 18u;
    let d = w_f16(b);
    var q = w_fields8(b + 2u + (i & 1u) * 8u, (i & 2u) * 2u, 4u);
    for (var k = 0u; k < 8u; k++) {
        q[k] = d * (q[k] - 8.0);
    }
    return q;
}
