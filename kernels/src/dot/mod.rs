//! Dot products of one weight row with the activations: the inner loop of every matvec. One
//! file per ISA (x86_64 AVX2 / AVX-512, aarch64 NEON; other targets run the scalar kernels); the table of the best one the CPU supports is chosen once at run time (never by
//! `target-cpu=native`), and `FLOE_ISA=scalar|avx2|avx512` forces one for tests and benchmarks.

use std::sync::OnceLock;

use half::{bf16, f16};

use crate::quant::{
    BlockMxfp4, BlockQ4K, BlockQ4_0, BlockQ4_0x8, BlockQ5K, BlockQ6K, BlockQ8K, BlockQ8_0, Q8Sum,
    ROWS8,
};

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_act;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx2_rows8;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod scalar;

/// Instruction sets floe has kernels for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86_64 AVX2 + FMA + F16C.
    Avx2,
    /// x86_64 AVX-512 F/BW + VNNI (with AVX2 for what does not pay at 512 bits).
    Avx512,
    /// aarch64 NEON (Advanced SIMD).
    Neon,
}

impl Isa {
    /// Every ISA floe has kernels for, on any target.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon];

    /// The name of the ISA.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run kernels for `self`.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The ISA used by default: AVX2 where present. The AVX-512 VNNI kernels measured slower
    /// than AVX2 on the Xeon this was tuned on (1.70 vs 1.31 ns per Q4_0 block: the VNNI
    /// form needs an extra correction term per block pair), so they run only when asked for
    /// with `FLOE_ISA=avx512`, or where AVX2 is missing.
    pub fn detect() -> Isa {
        [Isa::Avx2, Isa::Avx512, Isa::Neon]
            .into_iter()
            .find(|i| i.supported())
            .unwrap_or(Isa::Scalar)
    }
}

/// The kernel type of [`DotKernels::q4_0_rows8`].
pub type Rows8Fn = fn(&[BlockQ4_0x8], &[BlockQ8_0], &[Q8Sum], &mut [f32; ROWS8]);

/// The kernel type of [`DotKernels::q4_0_rows8_x4`].
pub type Rows8x4Fn = fn(&[BlockQ4_0x8], [&[BlockQ8_0]; 4], [&[Q8Sum]; 4], &mut [[f32; ROWS8]; 4]);

/// The dot products of one ISA.
#[derive(Debug, Clone, Copy)]
pub struct DotKernels {
    /// Which ISA.
    pub isa: Isa,
    /// The column of the type table (`traits.rs`) the other types' dot products come from:
    /// `isa`'s own, or a wider one where its kernels pay and this CPU has it.
    pub table_isa: Isa,
    /// f32 weights . f32 activations.
    pub f32: fn(&[f32], &[f32]) -> f32,
    /// f16 weights . f32 activations.
    pub f16: fn(&[f16], &[f32]) -> f32,
    /// bf16 weights . f32 activations.
    pub bf16: fn(&[bf16], &[f32]) -> f32,
    /// Q8_0 weights . Q8_0 activations.
    pub q8_0: fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    /// Q4_0 weights . Q8_0 activations.
    pub q4_0: fn(&[BlockQ4_0], &[BlockQ8_0]) -> f32,
    /// MXFP4 weights . Q8_0 activations.
    pub mxfp4: fn(&[BlockMxfp4], &[BlockQ8_0]) -> f32,
    /// Four Q8_0 rows at once against the same activations (shared activation loads and four
    /// independent accumulators).
    pub q8_0_x4: fn([&[BlockQ8_0]; 4], &[BlockQ8_0]) -> [f32; 4],
    /// Four Q4_0 rows at once.
    pub q4_0_x4: fn([&[BlockQ4_0]; 4], &[BlockQ8_0]) -> [f32; 4],
    /// Whether `q8_0_x4` and `q4_0_x4` prefetch the rows they will read next themselves (then
    /// matvec does not prefetch their row groups in bursts).
    pub x4_prefetches: bool,
    /// Eight interleaved Q4_0 rows against a range of Q8_0 activations and their sums, added to
    /// one accumulator per row ([`crate::quant::rows8_q4_0`] is the scalar twin). Where an ISA
    /// has one, matrices that stay in memory are interleaved for it at load
    /// ([`crate::interleave_q4_0_here`]).
    pub q4_0_rows8: Option<Rows8Fn>,
    /// The same for four tokens at once (prompts), each token's bits those of `q4_0_rows8`
    /// ([`crate::quant::rows8x4_q4_0`] is the scalar twin).
    pub q4_0_rows8_x4: Option<Rows8x4Fn>,
    /// `y += a * x` over f32 (attention's weighted sum of values).
    pub axpy_f32: fn(f32, &[f32], &mut [f32]),
    /// `y += a * x` with f16 `x` (an f16 value cache).
    pub axpy_f16: fn(f32, &[f16], &mut [f32]),
    /// Q4_K weights . Q8_K activations.
    pub q4_k: fn(&[BlockQ4K], &[BlockQ8K]) -> f32,
    /// Q5_K weights . Q8_K activations.
    pub q5_k: fn(&[BlockQ5K], &[BlockQ8K]) -> f32,
    /// Q6_K weights . Q8_K activations.
    pub q6_k: fn(&[BlockQ6K], &[BlockQ8K]) -> f32,
    /// A token's values to Q8_0 blocks as llama.cpp quantises activations
    /// ([`crate::quant::quantize_q8_0_activations_scalar`] is the scalar twin).
    pub quantize_q8_0: fn(&[f32], &mut [BlockQ8_0]),
    /// Each Q8_0 block's [`Q8Sum`] ([`crate::quant::q8_sums_scalar`] is the scalar twin).
    pub q8_sums: fn(&[BlockQ8_0], &mut [Q8Sum]),
    /// `out = silu(gate) * up` ([`crate::ops::swiglu_scalar`] is the scalar twin).
    pub swiglu: fn(&[f32], &[f32], &mut [f32]),
}

impl DotKernels {
    /// Which kernels these are, for run statistics: `isa`'s name, and the type table's column
    /// where it is another (`avx2+avx512`: AVX2, with the grid types' and TQ1_0's AVX-512 dots).
    pub fn describe(&self) -> String {
        if self.table_isa == self.isa {
            self.isa.name().to_string()
        } else {
            format!("{}+{}", self.isa.name(), self.table_isa.name())
        }
    }

    /// The kernels of `isa`, or None if this CPU cannot run them.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        if !isa.supported() {
            return None;
        }
        Some(match isa {
            Isa::Scalar => scalar::KERNELS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::KERNELS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::KERNELS,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::KERNELS,
            #[allow(unreachable_patterns)]
            _ => return None,
        })
    }
}

/// Whether this CPU runs the type table's AVX-512 column (the grid types' and TQ1_0's dot
/// products): AVX-512 F/BW/VNNI and also VL, VBMI, BITALG, BMI2 and GFNI (Ice Lake, Zen 4 and
/// later).
pub fn avx512_table_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            Isa::Avx512.supported()
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vbmi")
                && is_x86_feature_detected!("avx512bitalg")
                && is_x86_feature_detected!("bmi2")
                && is_x86_feature_detected!("gfni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// The ISA `FLOE_ISA` forces, read once: none where it is unset or empty, or names no ISA this
/// CPU runs (then the detected kernels run, as `DotKernels::name` in the run's stats shows).
/// The GEMM tiles follow the same answer (`gemm::enabled`).
pub(crate) fn forced_isa() -> Option<Isa> {
    static FORCED: OnceLock<Option<Isa>> = OnceLock::new();
    *FORCED.get_or_init(|| {
        let name = std::env::var("FLOE_ISA").ok()?;
        let isa = Isa::ALL.into_iter().find(|i| i.name() == name.trim())?;
        DotKernels::for_isa(isa).map(|_| isa)
    })
}

/// The kernels in use: `FLOE_ISA` if set and supported ([`forced_isa`]), else the best
/// detected. Detected AVX2 on a CPU with AVX-512 reads the type table's AVX-512 column, whose
/// kernels (the grid types') measured faster there than their AVX2 twins; `FLOE_ISA=avx2` keeps
/// every kernel AVX2.
pub fn kernels() -> &'static DotKernels {
    static CHOSEN: OnceLock<DotKernels> = OnceLock::new();
    CHOSEN.get_or_init(|| {
        let forced = forced_isa().and_then(DotKernels::for_isa);
        forced.unwrap_or_else(|| {
            let detected = DotKernels::for_isa(Isa::detect()).unwrap_or(scalar::KERNELS);
            if detected.isa == Isa::Avx2 && avx512_table_supported() {
                DotKernels { table_isa: Isa::Avx512, ..detected }
            } else {
                detected
            }
        })
    })
}
