// MoE gate|up in the prefill GEMMs (after moe.wgsl's gathered-experts hooks): A's rows are the x
// rows of the pairs' tokens, outputs come in (gate, up) pairs, activated into h.

fn mm_k() -> u32 {
    return p.dim;
}

fn mm_paired() -> bool {
    return true;
}

fn mm_a(m: u32, k: u32) -> f32 {
    if m >= mm_rows || k >= p.dim {
        return 0.0;
    }
    return x[(mm_pairs[m] / p.top_k) * p.dim + k];
}

fn mm_a4(m: u32, k: u32) -> vec4<f32> {
    return vec4<f32>(mm_a(m, k), mm_a(m, k + 1u), mm_a(m, k + 2u), mm_a(m, k + 3u));
}

// Rows past the expert's outputs re-read its last one (their sums are never stored).
fn mm_w_row(o: u32, up: bool) -> u32 {
    let i = min(mm_n0 + o, p.inter - 1u);
    return select(gate_row(mm_local, i), up_row(mm_local, i), up);
}

fn mm_store(m: u32, o: u32, v: f32) {}

// h[pair, i] = act(x . gate_i + gb, x . up_i + ub).
fn mm_store_pair(m: u32, o: u32, g: f32, u: f32) {
    let i = mm_n0 + o;
    if i < p.inter {
        let e = p.first_expert + mm_local;
        h_out[mm_pairs[m] * p.h_stride + i] = act(g + bias_at(e, gate_col(i)), u + bias_at(e, up_col(i)));
    }
}
