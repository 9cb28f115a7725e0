// Per-head matrix-vector products of absorbed multi-head latent attention (MODELS.md §6.5):
//   y[t, h, o] = sum_i W[h*out + o, i] * x[t, h, i]
// with W stacked per head ([heads*out, in], e.g. W_UK_h^T or W_UV_h). A workgroup owns HM_ROWS
// outputs of one (token, head): its threads stride along the rows one vec4<u32> weight word at a
// time (neighbouring threads read neighbouring words), then reduce through workgroup memory.

// Params, MlaPrep, bindings, HM_ROWS, MAX_LATENT and overrides: src/kernels/mla.rs.

// The per-head products' reduction: HM_ROWS rows of WG partial sums.
var<workgroup> hm_red: array<f32, HM_ROWS * WG>;

@compute @workgroup_size(WG)
fn head_matvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = flat_group(wid);
    let th = g / p.blocks;
    if th >= p.tokens * p.heads {
        return;
    }
    let t = th / p.heads;
    let h = th % p.heads;
    let o0 = (g % p.blocks) * HM_ROWS;
    let xb = t * p.x_row_stride + h * p.x_head_stride + p.x_offset;
    let n = W_EPV;
    let words = p.w_words;
    var acc = array<f32, HM_ROWS>(0.0, 0.0, 0.0, 0.0);
    for (var q = lid; q < words; q += WG) {
        // This word's x values; columns past in_dim (the row padding) read as zero.
        var xv: array<f32, 8>;
        for (var c = 0u; c < n; c++) {
            let i = q * n + c;
            xv[c] = select(0.0, x[xb + min(i, p.in_dim - 1u)], i < p.in_dim);
        }
        hm_word(h * p.out_dim + o0, h * p.out_dim + p.out_dim - 1u, words, q, xv, &acc);
    }
    hm_reduce(acc, lid);
    if lid < HM_ROWS && o0 + lid < p.out_dim {
        y[t * p.y_row_stride + h * p.y_head_stride + p.y_offset + o0 + lid] = hm_red[lid * WG];
    }
}

// acc[r] += W[min(row0 + r, last), word q] . xv for the workgroup's HM_ROWS rows.
fn hm_word(row0: u32, last: u32, words: u32, q: u32, xv: array<f32, 8>, acc: ptr<function, array<f32, HM_ROWS>>) {
    let n = W_EPV;
    for (var r = 0u; r < HM_ROWS; r++) {
        let wv = w_load(min(row0 + r, last) * words + q);
        var s = 0.0;
        for (var c = 0u; c < n; c++) {
            s += wv[c] * xv[c];
        }
        (*acc)[r] += s;
    }
}

// The workgroup's sums of acc: hm_red[r * WG] for row r.
fn hm_reduce(acc: array<f32, HM_ROWS>, lid: u32) {
    for (var r = 0u; r < HM_ROWS; r++) {
        hm_red[r * WG + lid] = acc[r];
    }
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            for (var r = 0u; r < HM_ROWS; r++) {
                hm_red[r * WG + lid] += hm_red[r * WG + lid + s];
            }
        }
        workgroupBarrier();
    }
}

// ---------------------------------------------------------------------------------------------
// prepare_mla: everything between MLA's projections and attention, in one dispatch. One workgroup
// per (token, slot): slots 0..H rotate each head's q_pe (the last `rope` values of its q row) into
// its q_cat row after the latent part; slot H normalises the latent c (kv_a_layernorm), rotates
// the shared k_pe, and stores [c | k_pe] in the cache at position token_pos(t) (f32 words, or f16
// pairs with KV16). Then one workgroup per (token, head, HM_ROWS latent outputs) computes the
// absorbed query W_UK_h^T q_nope into the latent part of q_cat, as head_matvec does (W = uk_t).

var<workgroup> lat: array<f32, MAX_LATENT>;
// Q8: each block's largest magnitude (blocks of at least 4).
var<workgroup> q8a: array<f32, MAX_LATENT / 4u>;
var<workgroup> mred: array<f32, WG>;

fn kv_norm_weight(i: u32) -> f32 {
    if NORM_DTYPE == DT_F32 {
        return bitcast<f32>(kv_norm[i]);
    }
    return pick_half(kv_norm[i >> 1u], i, NORM_DTYPE);
}

// The two indices of rotation pair i within `rope` values.
fn rope_pair(i: u32) -> vec2<u32> {
    if INTERLEAVED {
        return vec2<u32>(2u * i, 2u * i + 1u);
    }
    return vec2<u32>(i, i + mp.rope / 2u);
}

// q_cat[t, h, o0..o0 + HM_ROWS] = uk_t[h] @ q_nope[t, h].
fn absorb(g: u32, lid: u32) {
    let th = g / mp.uk_blocks;
    if th >= mp.tokens * mp.heads {
        return;
    }
    let o0 = (g % mp.uk_blocks) * HM_ROWS;
    let h = th % mp.heads;
    let xb = (th / mp.heads) * mp.q_stride + h * (mp.nope + mp.rope);
    let n = W_EPV;
    var acc = array<f32, HM_ROWS>(0.0, 0.0, 0.0, 0.0);
    for (var q = lid; q < mp.uk_words; q += WG) {
        var xv: array<f32, 8>;
        for (var c = 0u; c < n; c++) {
            let i = q * n + c;
            xv[c] = select(0.0, proj[xb + min(i, mp.nope - 1u)], i < mp.nope);
        }
        hm_word(h * mp.rank + o0, h * mp.rank + mp.rank - 1u, mp.uk_words, q, xv, &acc);
    }
    hm_reduce(acc, lid);
    if lid < HM_ROWS && o0 + lid < mp.rank {
        q_cat[th * (mp.rank + mp.rope) + o0 + lid] = hm_red[lid * WG];
    }
}

@compute @workgroup_size(WG)
fn prepare_mla(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let slots = mp.heads + 1u;
    let g = flat_group(wid);
    if g >= mp.tokens * slots {
        absorb(g - mp.tokens * slots, lid);
        return;
    }
    let t = g / slots;
    let slot = g % slots;
    let pos = token_pos(t);
    let row = token_base(t) + pos;
    let half = mp.rope / 2u;
    let width = mp.rank + mp.rope;
    if slot < mp.heads {
        let src = t * mp.q_stride + slot * (mp.nope + mp.rope) + mp.nope;
        let dst = (t * mp.heads + slot) * width + mp.rank;
        for (var i = lid; i < half; i += WG) {
            let ab = rope_pair(i);
            let cs = cos_sin(f32(pos) * inv_freq[i]) * mp.af;
            let xa = proj[src + ab.x];
            let xb = proj[src + ab.y];
            q_cat[dst + ab.x] = xa * cs.x - xb * cs.y;
            q_cat[dst + ab.y] = xb * cs.x + xa * cs.y;
        }
        return;
    }
    let src = t * mp.latent_stride + mp.latent_offset;
    var acc = 0.0;
    for (var i = lid; i < width; i += WG) {
        let v = latent[src + i];
        lat[i] = v;
        if i < mp.rank {
            acc += v * v;
        }
    }
    mred[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            mred[lid] += mred[lid + s];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(mred[0] / f32(mp.rank) + mp.eps);
    for (var i = lid; i < mp.rank; i += WG) {
        lat[i] = kv_norm_weight(i) * (lat[i] * scale);
    }
    for (var i = lid; i < half; i += WG) {
        let ab = rope_pair(i) + vec2<u32>(mp.rank);
        let cs = cos_sin(f32(pos) * inv_freq[i]) * mp.af;
        let xa = lat[ab.x];
        let xb = lat[ab.y];
        lat[ab.x] = xa * cs.x - xb * cs.y;
        lat[ab.y] = xb * cs.x + xa * cs.y;
    }
    workgroupBarrier();
    if row >= mp.max_seq {
        return;
    }
    let dst = row * width;
    if KV8 {
        // As prepare_qkv stores a q8 head: block scales, then words of four signed bytes.
        let block = 1u << mp.q8_shift;
        for (var b = lid; b < width / block; b += WG) {
            var a = 0.0;
            for (var i = 0u; i < block; i++) {
                a = max(a, abs(lat[b * block + i]));
            }
            q8a[b] = a;
            cache[mp.q8_scales + (dst >> mp.q8_shift) + b] = bitcast<u32>(a);
        }
        workgroupBarrier();
        for (var i = lid; i < width / 4u; i += WG) {
            let a = q8a[(4u * i) >> mp.q8_shift];
            let x = vec4<f32>(lat[4u * i], lat[4u * i + 1u], lat[4u * i + 2u], lat[4u * i + 3u]);
            cache[dst / 4u + i] = pack4x8snorm(select(vec4<f32>(0.0), x / a, a > 0.0));
        }
        return;
    }
    if KV16 {
        // Clamped to the finite f16 range, where pack2x16float is defined.
        let lim = vec2<f32>(65504.0);
        for (var i = lid; i < width / 2u; i += WG) {
            cache[dst / 2u + i] = pack2x16float(clamp(vec2<f32>(lat[2u * i], lat[2u * i + 1u]), -lim, lim));
        }
        return;
    }
    for (var i = lid; i < width; i += WG) {
        cache[dst + i] = bitcast<u32>(lat[i]);
    }
}
