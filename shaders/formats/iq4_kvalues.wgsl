// IQ4_NL / IQ4_XS's non-linear 4-bit grid (ggml's kvalues_iq4nl), indexed by the nibble.
var<private> IQ4_KVALUES: array<f32, 16> = array<f32, 16>(
    -127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0
);

// d * kvalues[q] for eight nibbles.
fn iq4_values(q: array<f32, 8>, d: f32) -> array<f32, 8> {
    var v: array<f32, 8>;
    for (var k = 0u; k < 8u; k++) {
        v[k] = d * IQ4_KVALUES[u32(q[k])];
    }
    return v;
}
