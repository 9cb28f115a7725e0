// Token embedding: out[t, :] = table[ids[t], :] widened to f32.
// One dispatch per chunk of the table; each copies only the rows inside its chunk, so ids can come
// straight from a GPU buffer (the sampled token of the previous step). Ids past the vocabulary match
// no chunk; the dispatch with ZERO_OOB (the first) writes zeros for them instead of reading.
// One invocation per u32 word of a row (two elements for f16/bf16, one for f32).

// Params, bindings and overrides: src/kernels/embedding.rs.

fn write_word(t: u32, word: u32, value: vec2<f32>) {
    let base = t * p.dim;
    if W_DTYPE == DT_F32 {
        out[base + word] = value.x;
        return;
    }
    let e = word * 2u;
    out[base + e] = value.x;
    if e + 1u < p.dim {
        out[base + e + 1u] = value.y;
    }
}

@compute @workgroup_size(WG)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = flat_group(wid);
    let t = g / p.groups_per_token;
    if t >= p.tokens {
        return;
    }
    let word = (g % p.groups_per_token) * WG + lid.x;
    if word >= p.data_words {
        return;
    }
    let id = ids[t];
    if id >= p.vocab {
        if ZERO_OOB {
            write_word(t, word, vec2<f32>(0.0));
        }
        return;
    }
    // Unsigned wrap-around turns ids below the chunk into huge local rows.
    let local = id - p.first_row;
    if local >= p.chunk_rows {
        return;
    }
    let w = table[local * p.row_words + word];
    if W_DTYPE == DT_F32 {
        write_word(t, word, vec2<f32>(bitcast<f32>(w), 0.0));
    } else {
        write_word(t, word, unpack_half2(w, W_DTYPE));
    }
}
