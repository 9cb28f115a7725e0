// Small data-movement ops the forward plan needs between the big kernels.

struct Params {
    rows: u32,
    width: u32,
    src_stride: u32,
    src_offset: u32,
    dst_stride: u32,
    dst_offset: u32,
    _pad0: u32,
    _pad1: u32,
}

override WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

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
@group(0) @binding(3) var<storage, read_write> step_state: array<u32>;
@group(0) @binding(4) var<storage, read> next_ids: array<u32>;
@group(0) @binding(5) var<storage, read_write> token_log: array<u32>;

@compute @workgroup_size(1)
fn advance_step() {
    let pos = step_state[0] + step_state[1];
    if pos < arrayLength(&token_log) {
        token_log[pos] = next_ids[0];
    }
    step_state[0] = pos;
    step_state[1] = 1u;
}
