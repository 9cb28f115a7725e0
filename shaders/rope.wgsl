// Rotary position embedding, in place (MODELS.md §2). `x` is viewed as rows of `row_stride` floats
// (one per token), each holding `heads` heads of `head_stride` floats; inside every head the
// `2*half` values from `rot_offset` on are rotated. Token t sits at position token_pos(t) (step.wgsl) (the step
// buffer, so a recorded dispatch replays at every decode position).
//   half-split (NeoX):    pair (i, i + half) turns by pos * inv[i]
//   interleaved (GPT-J):  pair (2i, 2i + 1) turns by pos * inv[i]
// cos and sin carry the amplitude `af` (yarn's attention factor). One invocation per pair.

// Params, bindings and overrides: src/kernels/rope.rs.

// cos_sin: shaders/common.wgsl.

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let id = flat_group(wid) * WG + lid;
    let pairs_per_token = p.heads * p.half;
    if id >= p.tokens * pairs_per_token {
        return;
    }
    let t = id / pairs_per_token;
    let rem = id - t * pairs_per_token;
    let head = rem / p.half;
    let i = rem - head * p.half;
    let pos = token_pos(t);
    let cs = cos_sin(f32(pos) * inv_freq[i]) * p.af;
    let base = t * p.row_stride + head * p.head_stride + p.rot_offset;
    var a = base + i;
    var b = base + i + p.half;
    if INTERLEAVED {
        a = base + 2u * i;
        b = a + 1u;
    }
    let xa = x[a];
    let xb = x[b];
    x[a] = xa * cs.x - xb * cs.y;
    x[b] = xb * cs.x + xa * cs.y;
}
