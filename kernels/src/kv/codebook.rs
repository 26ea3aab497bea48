//! TurboQuant's scalar codebooks: after the rotation, coordinate `z = x_i * sqrt(B) / |x|` of a
//! block of `B` values follows the law of one coordinate of a uniform point on the sphere,
//! density proportional to `(1 - z^2 / B)^((B - 3) / 2)` (close to a standard normal). The
//! Lloyd-Max quantiser of that law (each level the mean of its cell, each cell boundary the
//! midpoint of its levels) is the fixed codebook of `2^bits` levels, computed once per block
//! size by Lloyd's iteration on a fine grid of the density.

use std::sync::OnceLock;

use super::rotation::{MAX_BLOCK, MIN_BLOCK};

/// The bits per value TurboQuant types come in.
pub const TQ_BITS: [u32; 3] = [2, 3, 4];

/// A symmetric codebook: code `s << (bits - 1) | m` is `+mags[m]`, or `-mags[m]` when the sign
/// bit `s` is set. Magnitudes ascend; entries past `2^(bits - 1)` are unused zeros.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Codebook {
    /// Level magnitudes (in units of the block's RMS).
    pub mags: [f32; 8],
    /// Magnitudes in use: `2^(bits - 1)`.
    pub len: usize,
    /// Midpoints between consecutive magnitudes: where a value moves to the next level.
    pub bounds: [f32; 7],
}

impl Codebook {
    /// The magnitude index of `|z|`: the nearest level.
    #[inline]
    pub fn nearest(&self, z: f32) -> usize {
        self.bounds[..self.len - 1].iter().take_while(|&&b| z > b).count()
    }
}

/// The density of one coordinate of a uniform point on the `block`-sphere, scaled by
/// `sqrt(block)`, up to a constant.
pub fn density(block: usize, z: f64) -> f64 {
    let t = 1.0 - z * z / block as f64;
    if t <= 0.0 {
        0.0
    } else {
        t.powf((block as f64 - 3.0) / 2.0)
    }
}

/// Lloyd's iteration for the `2^(bits - 1)` magnitudes of the law at `block`, on a fine grid
/// of the positive half-line (the law is symmetric). Prefix sums of the density make each
/// cell's mean two lookups, so the iteration runs until it no longer moves.
pub fn lloyd_max(block: usize, bits: u32) -> Vec<f64> {
    const GRID: usize = 1 << 16;
    let half = 1usize << (bits - 1);
    let top = (block as f64).sqrt().min(8.0);
    let step = top / GRID as f64;
    let z: Vec<f64> = (0..GRID).map(|i| (i as f64 + 0.5) * step).collect();
    // mass[i], moment[i]: the density's mass and first moment below grid point i.
    let (mut mass, mut moment) = (vec![0.0f64; GRID + 1], vec![0.0f64; GRID + 1]);
    for (i, &zi) in z.iter().enumerate() {
        let w = density(block, zi);
        mass[i + 1] = mass[i] + w;
        moment[i + 1] = moment[i] + w * zi;
    }
    // Start from the law's quantiles at the cells' middles.
    let mut mags: Vec<f64> = (0..half)
        .map(|k| {
            let target = mass[GRID] * (2 * k + 1) as f64 / (2 * half) as f64;
            z[mass.partition_point(|&m| m < target).clamp(1, GRID) - 1]
        })
        .collect();
    for _ in 0..100_000 {
        let mut cuts = vec![0usize; half + 1];
        cuts[half] = GRID;
        for k in 1..half {
            let bound = (mags[k - 1] + mags[k]) / 2.0;
            cuts[k] = z.partition_point(|&x| x <= bound);
        }
        let mut moved = 0.0f64;
        for k in 0..half {
            let (a, b) = (cuts[k], cuts[k + 1]);
            if mass[b] > mass[a] {
                let m = (moment[b] - moment[a]) / (mass[b] - mass[a]);
                moved = moved.max((m - mags[k]).abs());
                mags[k] = m;
            }
        }
        if moved < 1e-10 {
            break;
        }
    }
    mags
}

/// The codebook of `bits` per value for rotation blocks of `block` values (a power of two
/// between the rotation's smallest and largest block).
pub fn codebook(block: usize, bits: u32) -> &'static Codebook {
    const SIZES: usize = (MAX_BLOCK / MIN_BLOCK).trailing_zeros() as usize + 1;
    static BOOKS: OnceLock<Vec<Codebook>> = OnceLock::new();
    let books = BOOKS.get_or_init(|| {
        let mut all = Vec::new();
        for size in 0..SIZES {
            for bits in TQ_BITS {
                let mags = lloyd_max(MIN_BLOCK << size, bits);
                let mut book = Codebook { mags: [0.0; 8], len: mags.len(), bounds: [0.0; 7] };
                for (k, m) in mags.iter().enumerate() {
                    book.mags[k] = *m as f32;
                }
                for k in 0..book.len - 1 {
                    book.bounds[k] = (book.mags[k] + book.mags[k + 1]) / 2.0;
                }
                all.push(book);
            }
        }
        all
    });
    let size = (block / MIN_BLOCK).trailing_zeros() as usize;
    let at = TQ_BITS.iter().position(|&b| b == bits).expect("a TurboQuant bit width");
    &books[size * TQ_BITS.len() + at]
}
