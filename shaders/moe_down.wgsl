// MoE down in the prefill GEMMs (after moe.wgsl's gathered-experts hooks): A's rows are the
// pairs' h rows, outputs are weighted by the pair's routing weight into y_slots.

fn mm_k() -> u32 {
    return p.inter;
}

fn mm_paired() -> bool {
    return false;
}

fn mm_a(m: u32, k: u32) -> f32 {
    if m >= mm_rows || k >= p.inter {
        return 0.0;
    }
    let at = mm_pairs[m] * p.h_stride + k;
    return h_in[at / 4u][at % 4u];
}

fn mm_a4(m: u32, k: u32) -> vec4<f32> {
    if m < mm_rows && k + 4u <= p.inter {
        // h rows start on whole vec4s (h_stride is a multiple of 8) and k on a multiple of 4.
        return h_in[(mm_pairs[m] * p.h_stride + k) / 4u];
    }
    return vec4<f32>(mm_a(m, k), mm_a(m, k + 1u), mm_a(m, k + 2u), mm_a(m, k + 3u));
}

// Rows past the expert's outputs re-read its last one (their sums are never stored).
fn mm_w_row(o: u32, up: bool) -> u32 {
    return mm_local * p.dim + min(mm_n0 + o, p.dim - 1u);
}

// y_slots[pair, r] = w[pair] * (h[pair] . down_r + db).
fn mm_store(m: u32, o: u32, v: f32) {
    let r = mm_n0 + o;
    if r < p.dim {
        let pair = mm_pairs[m];
        y_slots[pair * p.dim + r] = route_w[pair] * (v + bias_at(p.first_expert + mm_local, r));
    }
}

fn mm_store_pair(m: u32, o: u32, g: f32, u: f32) {}
