// Gating activations of the feed-forward blocks (MODELS.md §1, §5.2, §7).
//
// swiglu: out[t, i] = act(g, u) from one row of the fused gate/up projection gu[t, :]:
//   layout  concatenated: g = gu[t, i], u = gu[t, I + i];  interleaved (gpt-oss): g = gu[t, 2i], u = gu[t, 2i + 1]
//   act     silu: silu(g) * u;  clamped (gpt-oss): g = min(g, limit), u = clamp(u, -limit, limit),
//           (u + 1) * g * sigmoid(alpha * g)
// sigmoid_gate (Qwen2-MoE shared expert): y[t, :] += sigmoid(gate_logit[t]) * s[t, :].
// One invocation per output element, flat over tokens x width.

// Params, bindings and overrides: src/kernels/swiglu.rs.

// Never overflows: exp only ever sees a non-positive argument.
fn sigmoid(z: f32) -> f32 {
    let e = exp(-abs(z));
    let s = 1.0 / (1.0 + e);
    return select(e * s, s, z >= 0.0);
}

@compute @workgroup_size(WG)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = flat_group(wid) * WG + lid.x;
    let t = n / p.inter;
    if t >= p.tokens {
        return;
    }
    let i = n % p.inter;
    let row = t * p.in_stride;
    var g: f32;
    var u: f32;
    if INTERLEAVED {
        g = gu[row + 2u * i];
        u = gu[row + 2u * i + 1u];
    } else {
        g = gu[row + i];
        u = gu[row + p.inter + i];
    }
    var y: f32;
    if CLAMPED {
        g = min(g, p.limit);
        u = clamp(u, -p.limit, p.limit);
        y = (u + 1.0) * (g * sigmoid(p.alpha * g));
    } else {
        y = g * sigmoid(g) * u;
    }
    out[t * p.out_stride + i] = y;
}

@compute @workgroup_size(WG)
fn sigmoid_gate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = flat_group(wid) * WG + lid.x;
    let t = n / q.dim;
    if t >= q.tokens {
        return;
    }
    let i = n % q.dim;
    y[t * q.y_stride + i] += sigmoid(gate_logit[t]) * shared_out[t * q.s_stride + i];
}
