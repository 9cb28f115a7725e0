// Where each token of a batch sits (the step buffer: src/kernels/mod.rs `step`).
// Contiguous (step[3] == 0; one sequence): token t at position step[0] + t of the sequence whose
// cache rows start at row step[2]. Table (step[3] == 1; continuous batching, one token of each of
// several sequences): token t's first cache row and position at step[4 + 2t] and step[5 + 2t].

fn token_pos(t: u32) -> u32 {
    if step[3] == 0u {
        return step[0] + t;
    }
    return step[5u + 2u * t];
}

fn token_base(t: u32) -> u32 {
    if step[3] == 0u {
        return step[2];
    }
    return step[4u + 2u * t];
}
