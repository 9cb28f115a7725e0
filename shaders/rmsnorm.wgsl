// RMSNorm over rows, optionally adding a delta into the residual stream first:
//   ADD:  x[r] += add[r]            (the new residual stream, written back)
//   y[r] = w * x[r] * inverseSqrt(mean(x[r]^2) + eps)
// One workgroup per row; rows have their own strides so a norm can read a slice of a wider row
// (MLA's latent) or run per head (qk-norm: rows = tokens*heads).

// Params, bindings and overrides: src/kernels/rmsnorm.rs.

var<workgroup> partial: array<f32, WG>;

fn weight(i: u32) -> f32 {
    if W_DTYPE == DT_F32 {
        return bitcast<f32>(w[i]);
    }
    return pick_half(w[i >> 1u], i, W_DTYPE);
}

fn sum_squares(row: u32, lid: u32) -> f32 {
    var acc = 0.0;
    let base = row * p.x_stride + p.x_offset;
    for (var i = lid; i < p.dim; i += WG) {
        var v = x[base + i];
        if ADD {
            v += delta[row * p.add_stride + i];
            x[base + i] = v;
        }
        acc += v * v;
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    return partial[0];
}

@compute @workgroup_size(WG)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = flat_group(wid);
    if row >= p.rows {
        return;
    }
    let lid = lid3.x;
    let scale = inverseSqrt(sum_squares(row, lid) / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += WG) {
        y[row * p.y_stride + i] = weight(i) * (x[row * p.x_stride + p.x_offset + i] * scale);
    }
}

// In place: y is x.
@compute @workgroup_size(WG)
fn rmsnorm_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = flat_group(wid);
    if row >= p.rows {
        return;
    }
    let lid = lid3.x;
    let scale = inverseSqrt(sum_squares(row, lid) / f32(p.dim) + p.eps);
    for (var i = lid; i < p.dim; i += WG) {
        let j = row * p.x_stride + p.x_offset + i;
        x[j] = weight(i) * (x[j] * scale);
    }
}
