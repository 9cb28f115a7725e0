// Small data-movement ops the forward plan needs between the big kernels.

// Params and bindings: src/kernels/elementwise.rs.

// dst[r*dst_stride + dst_offset + i] = src[r*src_stride + src_offset + i] for i < width.
@compute @workgroup_size(WG)
fn copy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid) * WG + lid.x;
    if i >= p.rows * p.width {
        return;
    }
    let r = i / p.width;
    let c = i % p.width;
    dst[r * p.dst_stride + p.dst_offset + c] = src[r * p.src_stride + p.src_offset + c];
}

// The end of a generation step, one invocation: log the token the sampler wrote to ids[0] at its
// position, then advance the step buffer past this batch so the next replayed step needs no
// host write (step[0] = pos0, step[1] = n_tokens; the next batch is one token).
@compute @workgroup_size(1)
fn advance_step() {
    let pos = step_state[0] + step_state[1];
    if pos < arrayLength(&token_log) {
        token_log[pos] = next_ids[0];
    }
    step_state[0] = pos;
    step_state[1] = 1u;
}

// Constrained decoding: a token whose bit is clear in the mask (p.src_stride words from word
// p.src_offset; bits past them count as clear) gets -inf, which the sampler never picks.
@compute @workgroup_size(WG)
fn mask_logits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid) * WG + lid.x;
    if i >= p.width {
        return;
    }
    let w = i / 32u;
    var allowed = false;
    if w < p.src_stride {
        allowed = ((token_mask[p.src_offset + w] >> (i % 32u)) & 1u) == 1u;
    }
    if !allowed {
        dst[p.dst_offset + i] = -bitcast<f32>(0x7f800000u);
    }
}
