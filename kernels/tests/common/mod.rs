//! Helpers the kernel test binaries share: a seeded generator and the ISAs this CPU runs.
#![allow(dead_code)] // each test binary uses its own subset

use floe_kernels::dot::{DotKernels, Isa};

/// A seeded xorshift generator of values in [-1, 1).
pub fn rng(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// `n` values of [`rng`]`(seed)`.
pub fn vecf(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n).map(|_| r()).collect()
}

/// The kernel tables of every ISA this CPU supports (printed, so a log shows what ran).
pub fn isas() -> Vec<DotKernels> {
    let all: Vec<DotKernels> = Isa::ALL.into_iter().filter_map(DotKernels::for_isa).collect();
    eprintln!("testing ISAs: {:?}", all.iter().map(|k| k.isa.name()).collect::<Vec<_>>());
    all
}
