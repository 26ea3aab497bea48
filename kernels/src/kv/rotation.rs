//! The randomised Walsh-Hadamard rotation applied to a head before it is quantised: fixed
//! random signs, then a Hadamard transform of each block, scaled to stay orthonormal. After it,
//! an outlier channel is spread over its whole block and every coordinate follows nearly the
//! same distribution, which is what a per-block scale (q8_0, q4_0) or a fixed codebook (tq)
//! needs. Queries are rotated the same way, so scores need no inverse; a weighted sum of rotated
//! values is rotated back once per output.

/// The largest rotation block: one Hadamard transform spans at most this many values.
pub const MAX_BLOCK: usize = 128;
/// The smallest rotation block (also the padding unit of every rotated head).
pub const MIN_BLOCK: usize = 32;

/// The rotation block of a padded head of `padded` values: the largest power of two dividing
/// it, between [`MIN_BLOCK`] and [`MAX_BLOCK`]. `padded` is a multiple of [`MIN_BLOCK`].
pub fn block_for(padded: usize) -> usize {
    debug_assert!(padded.is_multiple_of(MIN_BLOCK) && padded > 0);
    (1usize << padded.trailing_zeros()).clamp(MIN_BLOCK, MAX_BLOCK)
}

/// `dim` rounded up to whole [`MIN_BLOCK`]s.
pub fn padded(dim: usize) -> usize {
    dim.div_ceil(MIN_BLOCK) * MIN_BLOCK
}

/// Whether coordinate `i` of a head has its sign flipped: a fixed pseudo-random pattern
/// (splitmix64 of the index), the same for every head, position and run.
fn flipped(i: usize) -> bool {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & 1 == 1
}

/// The in-place unnormalised Walsh-Hadamard transform of `x` (a power-of-two length).
fn hadamard(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for pair in x.chunks_exact_mut(2 * h) {
            let (a, b) = pair.split_at_mut(h);
            for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                (*u, *v) = (*u + *v, *u - *v);
            }
        }
        h *= 2;
    }
}

/// Rotates `x` (a padded head) in place: signs, then each block's normalised Hadamard transform.
pub fn rotate(x: &mut [f32]) {
    let block = block_for(x.len());
    x.iter_mut().enumerate().filter(|(i, _)| flipped(*i)).for_each(|(_, v)| *v = -*v);
    let norm = 1.0 / (block as f32).sqrt();
    for b in x.chunks_exact_mut(block) {
        hadamard(b);
        b.iter_mut().for_each(|v| *v *= norm);
    }
}

/// The inverse of [`rotate`]: the normalised Hadamard transform is its own inverse, then the
/// signs are flipped back.
pub fn unrotate(x: &mut [f32]) {
    let block = block_for(x.len());
    let norm = 1.0 / (block as f32).sqrt();
    for b in x.chunks_exact_mut(block) {
        hadamard(b);
        b.iter_mut().for_each(|v| *v *= norm);
    }
    x.iter_mut().enumerate().filter(|(i, _)| flipped(*i)).for_each(|(_, v)| *v = -*v);
}
