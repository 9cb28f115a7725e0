// Benchmark helpers: copy bandwidth, dependent-dispatch overhead, random weight fill on the GPU.

// Params and bindings: src/kernels/bench.rs.

// dst = src, 16 bytes per invocation; `words` counts vec4s here.
@compute @workgroup_size(WG)
fn copy(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = gid.x + gid.y * n.x * WG;
    if i < p.words {
        dst[i] = src[i];
    }
}

// One invocation bumps one word: each dispatch depends on the previous one through dst.
@compute @workgroup_size(1)
fn chain() {
    dst[0].x = dst[0].x + 1u;
}

fn pcg(v: u32) -> u32 {
    let s = v * 747796405u + 2891336453u;
    let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
    return (w >> 22u) ^ w;
}

// Uniform in [-scale, scale) from a hash of (seed, index).
fn rand(i: u32) -> f32 {
    let h = pcg(i ^ pcg(p.seed));
    return (f32(h >> 8u) / 8388608.0 - 1.0) * p.scale;
}

// Fill `words` vec4s of dst with random weights of `dtype` (synthetic models, benchmarks).
@compute @workgroup_size(WG)
fn fill_random(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
    let i = gid.x + gid.y * n.x * WG;
    if i >= p.words {
        return;
    }
    var out: vec4<u32>;
    for (var c = 0u; c < 4u; c++) {
        let e = (i * 4u + c) * 2u;
        if p.dtype == DT_F32 {
            out[c] = bitcast<u32>(rand(e));
        } else if p.dtype == DT_F16 {
            out[c] = pack2x16float(vec2<f32>(rand(e), rand(e + 1u)));
        } else {
            out[c] = (bitcast<u32>(rand(e)) >> 16u) | (bitcast<u32>(rand(e + 1u)) & 0xffff0000u);
        }
    }
    dst[i] = out;
}
