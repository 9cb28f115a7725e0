// Token embedding: out[t, :] = table[ids[t], :] widened to f32.
// One dispatch per chunk of the table; each copies only the rows inside its chunk, so ids can come
// straight from a GPU buffer (the sampled token of the previous step). Ids past the vocabulary match
// no chunk; the dispatch with ZERO_OOB (the first) writes zeros for them instead of reading.
// One invocation per weight word of a row (W_EPV elements, read by the format's w_load).

// Params, bindings and overrides: src/kernels/embedding.rs.

fn write_word(t: u32, word: u32, v: array<f32, 8>) {
    let base = t * p.dim;
    for (var c = 0u; c < W_EPV; c++) {
        let e = word * W_EPV + c;
        if e < p.dim {
            out[base + e] = v[c];
        }
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
            write_word(t, word, array<f32, 8>());
        }
        return;
    }
    // Unsigned wrap-around turns ids below the chunk into huge local rows.
    let local = id - p.first_row;
    if local >= p.chunk_rows {
        return;
    }
    write_word(t, word, w_load(local * p.row_words + word));
}
