// Small data-movement and pointwise ops the forward plan needs between the big kernels.

struct Params {
    rows: u32,
    width: u32,
    src_stride: u32,
    src_offset: u32,
    dst_stride: u32,
    dst_offset: u32,
    limit: f32,
    _pad: u32,
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

// In place on dst: clamp rows' values to [-limit, limit] (OLMoE clip_qkv).
@compute @workgroup_size(WG)
fn clamp_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_group(wid) * WG + lid.x;
    if i >= p.rows * p.width {
        return;
    }
    let j = (i / p.width) * p.dst_stride + p.dst_offset + i % p.width;
    dst[j] = clamp(dst[j], -p.limit, p.limit);
}
