//! The weight types as data: one row per [`DType`] with its names, GGUF id, block shape, the
//! activation form its dot products read, its dequantiser and quantiser, and (for the types
//! without hand-tuned multi-row kernels in [`crate::dot::DotKernels`]) its dot product per ISA.
//! ggml's `type_traits_cpu` is the model: a new type is one file in `quant/` plus one row here.

use half::{bf16, f16};

use crate::dot::Isa;
use crate::gemm::Tile;
use crate::matvec::Prepared;
#[cfg(target_arch = "aarch64")]
use crate::quant::int_lanes::NeonLanes;
use crate::quant::unpacked::UnpackedTokensFn;
use crate::quant::*;
use crate::DType;

/// Which form of the activations a weight type's dot products read (when activations are
/// quantised; the exact reference mode always reads f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActForm {
    /// Plain f32 (the float formats).
    F32,
    /// Q8_0 blocks of 32.
    Q8_0,
    /// Q8_1 blocks of 32 (Q8_0 plus the scaled sum, for formats with a minimum).
    Q8_1,
    /// Q8_K super-blocks of 256.
    Q8K,
}

/// Where a block keeps its f16 scale (so tools can write random blocks of a known spread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleField {
    /// Not an f16-scaled block (floats, MXFP4's exponent, the K-quants' two-level scales).
    None,
    /// An f16 at this byte offset; with a second offset, the f16 minimum (`value = q*d + m`).
    At(usize, Option<usize>),
    /// IQ1_M: the f16's four nibbles are the top nibbles of the four scale words at byte 48.
    Iq1M,
}

/// A dot product of one weight row (its raw bytes) with one token's prepared activations.
pub(crate) type RawDot = fn(&[u8], &Prepared) -> f32;

/// Weight rows (`out.len()` of them, back to back, each as long as the activations) dotted with
/// the same activations, each equal to its row's [`RawDot`] bit for bit (they share the
/// activation side of the work).
pub(crate) type RawDotRows = fn(&[u8], &Prepared, &mut [f32]);

/// A type's many-token prefill kernels (rows unpacked once, then every token) per ISA, and
/// whether they read the activations offset to unsigned bytes. A missing ISA runs the
/// row-group path.
#[derive(Clone, Copy)]
pub(crate) struct TokensKernels {
    pub(crate) scalar: Option<UnpackedTokensFn>,
    pub(crate) avx2: Option<UnpackedTokensFn>,
    pub(crate) offset: bool,
    /// Whether the AVX2 kernel gives way where matvec reads the type's AVX-512 column (the IQ1
    /// types: those CPUs keep the path they had, their AVX-512 matvec per token, where the
    /// wide tiles do not run).
    pub(crate) below_avx512: bool,
}

impl TokensKernels {
    /// The kernel to use on `isa`, matvec reading the `table_isa` column, and whether it reads
    /// offset activations, if there is one.
    pub(crate) fn for_isa(&self, isa: Isa, table_isa: Isa) -> Option<(UnpackedTokensFn, bool)> {
        let f = match isa {
            Isa::Avx2 | Isa::Avx512 if self.below_avx512 && table_isa == Isa::Avx512 => None,
            Isa::Avx2 | Isa::Avx512 => self.avx2,
            Isa::Scalar | Isa::Neon => self.scalar,
        };
        f.map(|f| (f, self.offset))
    }
}

/// A quantiser from f32 values to whole blocks.
pub(crate) type Quantizer = fn(&[f32], &mut [u8]);

/// A type's dot products per ISA; a missing ISA falls back to the scalar twin.
#[derive(Clone, Copy)]
pub(crate) struct Dots {
    pub(crate) scalar: RawDot,
    pub(crate) avx2: Option<RawDot>,
    /// Where a 512-bit kernel measured faster than the AVX2 one.
    pub(crate) avx512: Option<RawDot>,
    /// Many rows at a time, beside `avx512`.
    pub(crate) avx512_rows: Option<RawDotRows>,
    pub(crate) neon: Option<RawDot>,
}

impl Dots {
    /// The kernel to use on `isa` (AVX-512 machines run the AVX2 kernel where the type has no
    /// AVX-512 one, or the CPU lacks what it needs beyond `Isa::Avx512`: they have AVX2).
    pub(crate) fn for_isa(&self, isa: Isa) -> RawDot {
        match isa {
            Isa::Avx512 => {
                let wide = self.avx512.filter(|_| crate::dot::avx512_table_supported());
                wide.or(self.avx2).unwrap_or(self.scalar)
            }
            Isa::Avx2 => self.avx2.unwrap_or(self.scalar),
            Isa::Neon => self.neon.unwrap_or(self.scalar),
            Isa::Scalar => self.scalar,
        }
    }

    /// The many-row kernel to use on `isa`, where there is one (it stands beside the one-row
    /// kernel `for_isa` gives, and equals it row by row).
    pub(crate) fn rows_for_isa(&self, isa: Isa) -> Option<RawDotRows> {
        match isa {
            Isa::Avx512 => self.avx512_rows.filter(|_| crate::dot::avx512_table_supported()),
            _ => None,
        }
    }
}

/// Everything floe knows about one weight type.
#[derive(Clone, Copy)]
pub struct TypeTraits {
    /// The type.
    pub dtype: DType,
    /// floe's name (command line, manifests).
    pub name: &'static str,
    /// ggml's name.
    pub ggml_name: &'static str,
    /// ggml's type id (as stored in GGUF).
    pub ggml_id: u32,
    /// Values per block (1 for plain floats).
    pub block_values: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// The activation form its dot products read.
    pub act: ActForm,
    /// Where its blocks keep their f16 scale.
    pub scale: ScaleField,
    /// Whole blocks of bytes to f32, bit-identical to ggml (lengths checked by the caller).
    pub(crate) dequantize: fn(&[u8], &mut [f32]),
    /// f32 to whole blocks with ggml's reference rule, where floe has one.
    pub(crate) quantize: Option<Quantizer>,
    /// Dot products through this table; None where `DotKernels` has dedicated fields.
    pub(crate) dots: Option<Dots>,
    /// The prefill GEMM tile (AVX-512), where the type has one.
    pub(crate) tile: Option<Tile>,
    /// A tile whose tokens equal matvec's bit for bit, where `tile` is not one.
    pub(crate) exact_tile: Option<Tile>,
    /// Prefill: rows against many tokens at once, where the type has such kernels.
    pub(crate) tokens: Option<TokensKernels>,
}

impl std::fmt::Debug for TypeTraits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeTraits")
            .field("name", &self.name)
            .field("ggml_id", &self.ggml_id)
            .finish()
    }
}

/// Casts raw bytes to blocks (the callers checked the size; weight bytes are 2-aligned, as
/// every block with an f16 is; a misaligned slice is a caller bug and panics here).
macro_rules! blocks {
    ($bytes:expr) => {
        bytemuck::cast_slice($bytes)
    };
}

macro_rules! deq {
    ($f:path) => {
        |b: &[u8], out: &mut [f32]| $f(blocks!(b), out)
    };
}

macro_rules! quant {
    ($f:path) => {
        Some(|x: &[f32], out: &mut [u8]| $f(x, bytemuck::cast_slice_mut(out)))
    };
}

/// A table dot from a typed kernel: the activations arrive in the form the row's `act` names.
macro_rules! dot {
    ($f:path, $form:ident) => {
        |w: &[u8], x: &Prepared| match x {
            Prepared::$form(x) => $f(blocks!(w), x),
            _ => unreachable!("prepare() makes the form the type table names"),
        }
    };
}

fn deq_f32(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

fn deq_f16(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

fn deq_bf16(b: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
    }
}

const fn row(
    dtype: DType,
    name: &'static str,
    ggml_name: &'static str,
    ggml_id: u32,
    (block_values, block_bytes): (usize, usize),
    act: ActForm,
    dequantize: fn(&[u8], &mut [f32]),
) -> TypeTraits {
    TypeTraits {
        dtype,
        name,
        ggml_name,
        ggml_id,
        block_values,
        block_bytes,
        act,
        scale: ScaleField::None,
        dequantize,
        quantize: None,
        dots: None,
        tile: None,
        exact_tile: None,
        tokens: None,
    }
}

impl TypeTraits {
    const fn scale_at(mut self, scale: ScaleField) -> Self {
        self.scale = scale;
        self
    }
    const fn quantizer(mut self, q: Option<Quantizer>) -> Self {
        self.quantize = q;
        self
    }
    const fn dots(mut self, scalar: RawDot, avx2: Option<RawDot>) -> Self {
        self.dots = Some(Dots { scalar, avx2, avx512: None, avx512_rows: None, neon: None });
        self
    }
    /// The NEON column of a row whose dots are set (`None` off aarch64: the scalar twin runs).
    const fn neon(mut self, neon: Option<RawDot>) -> Self {
        if let Some(d) = &mut self.dots {
            d.neon = neon;
        }
        self
    }
    /// The AVX-512 column of a type with a many-row kernel: its one-row and many-row kernels.
    const fn avx512_with_rows(mut self, (one, many): (Option<RawDot>, Option<RawDotRows>)) -> Self {
        if let Some(d) = &mut self.dots {
            d.avx512 = one;
            d.avx512_rows = many;
        }
        self
    }
    const fn tile(mut self, tile: Option<Tile>) -> Self {
        self.tile = tile;
        self
    }
    /// The wide prefill tile, with the exact one kept for tokens that must equal matvec's.
    const fn wide_tile(mut self, wide: Option<Tile>, exact: Option<Tile>) -> Self {
        self.tile = wide;
        self.exact_tile = exact;
        self
    }
    const fn with_tokens(mut self, kernels: TokensKernels) -> Self {
        self.tokens = Some(kernels);
        self
    }
}

/// The many-token prefill kernels of a type whose rows unpack to plain codes.
macro_rules! tokens {
    ($block:ty) => {
        TokensKernels {
            scalar: Some(|w: &[u8], first, m, acts, per_row, out| {
                unpacked::dot_tokens::<$block>(blocks!(w), (first, m), acts, per_row, out)
            }),
            avx2: tokens_avx2!(unpacked::avx2::dot_tokens, $block),
            offset: <$block as unpacked::Unpack>::SMALL_CODES,
            below_avx512: false,
        }
    };
}

/// The same for Q2_K, Q4_K, Q5_K (with minima), Q6_K and the ternary types (codes stored plus 32
/// or 1): AVX2 only: the scalar many-token kernel has neither.
macro_rules! tokens_k {
    ($block:ty) => {
        TokensKernels {
            scalar: None,
            avx2: tokens_avx2!(unpacked::avx2::dot_tokens, $block),
            offset: true,
            below_avx512: false,
        }
    };
}

/// The same for the grid types with a shift (IQ1_S, IQ1_M): the decode kernel with each run's
/// weights made once per pass of tokens (AVX2 only).
macro_rules! tokens_grid {
    ($block:ty) => {
        TokensKernels {
            scalar: None,
            avx2: tokens_avx2!(unpacked::grid_avx2::dot_tokens, $block),
            offset: false,
            below_avx512: true,
        }
    };
}

/// The same for the 32-value block types (AVX2 only).
#[cfg(target_arch = "x86_64")]
macro_rules! tokens32 {
    ($block:ty) => {
        TokensKernels {
            scalar: None,
            avx2: tokens_avx2!(unpacked32::dot_tokens, $block),
            offset: matches!(<$block as unpacked32::Block32>::CODES, unpacked32::Codes::Offset),
            below_avx512: false,
        }
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! tokens32 {
    ($block:ty) => {
        TokensKernels { scalar: None, avx2: None, offset: false, below_avx512: false }
    };
}

#[cfg(target_arch = "x86_64")]
macro_rules! tokens_avx2 {
    ($($f:ident)::+, $block:ty) => {
        Some(|w: &[u8], first, m, acts, per_row, out| {
            $($f)::+::<$block>(blocks!(w), (first, m), acts, per_row, out)
        })
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! tokens_avx2 {
    ($($f:ident)::+, $block:ty) => {
        None
    };
}

/// A type's GEMM tile: `kquant` (the K-quant super-blocks) and `codes` (super-blocks that
/// unpack to signed codes), both exact, `wide` (super-blocks as outer products), `wide32`
/// (32-value blocks as outer products), `float`.
#[cfg(target_arch = "x86_64")]
macro_rules! tile {
    (kquant $block:ty) => {
        Some(Tile::Super(|w: &[u8], first, m, x, per_row, out| {
            crate::gemm::kquant::k_rows::<$block>(blocks!(w), first, m, x, per_row, out)
        }))
    };
    (codes $block:ty) => {
        Some(Tile::Super(|w: &[u8], first, m, x, per_row, out| {
            crate::gemm::codes::code_rows::<$block>(blocks!(w), first, m, x, per_row, out)
        }))
    };
    (wide $block:ty) => {
        Some(Tile::Wide(|w: &[u8], first, m, x, per_row, out| {
            crate::gemm::wide::wide_rows::<$block>(blocks!(w), first, m, x, per_row, out)
        }))
    };
    (wide32 $block:ty) => {
        Some(Tile::Wide32(|w: &[u8], first, m, x, per_row, out| {
            crate::gemm::wide32::block_rows::<$block>(blocks!(w), first, m, x, per_row, out)
        }))
    };
    (float $elem:ty) => {
        Some(Tile::Float(|w: &[u8], first, m, x, out| {
            crate::gemm::float::float_rows::<$elem>(blocks!(w), first, m, x, out)
        }))
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! tile {
    ($($any:tt)*) => {
        None
    };
}

/// An x86_64 kernel of the AVX2 or AVX-512 column (`None` elsewhere).
#[cfg(target_arch = "x86_64")]
macro_rules! avx2 {
    ($f:path, $form:ident) => {
        Some(dot!($f, $form))
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! avx2 {
    ($f:path, $form:ident) => {
        None
    };
}
/// A type's AVX-512 kernels against Q8_K, one row and many rows (`None` off x86_64).
#[cfg(target_arch = "x86_64")]
macro_rules! rows512 {
    ($one:path, $many:expr) => {
        (
            avx2!($one, Q8K),
            Some(|w: &[u8], x: &Prepared, out: &mut [f32]| match x {
                Prepared::Q8K(x) => $many(blocks!(w), x, out),
                _ => unreachable!("prepare() makes the form the type table names"),
            }),
        )
    };
}
#[cfg(not(target_arch = "x86_64"))]
macro_rules! rows512 {
    ($one:path, $many:expr) => {
        (None, None)
    };
}
/// A grid type's AVX-512 kernels, one row and many rows.
macro_rules! grid512 {
    ($b:ty) => {
        rows512!(grid_avx512::dot::<$b>, grid_avx512::dot_rows::<$b>)
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! neon {
    ($f:path, $form:ident) => {
        Some(dot!($f, $form))
    };
}
#[cfg(not(target_arch = "aarch64"))]
macro_rules! neon {
    ($f:path, $form:ident) => {
        None
    };
}

use ActForm as A;
use DType as D;

/// One row per [`DType`], in the enum's order (checked at compile time below).
pub(crate) static TYPES: [TypeTraits; DType::COUNT] = [
    row(D::F32, "f32", "F32", 0, (1, 4), A::F32, deq_f32).tile(tile!(float f32)),
    row(D::F16, "f16", "F16", 1, (1, 2), A::F32, deq_f16).tile(tile!(float f16)),
    row(D::Bf16, "bf16", "BF16", 30, (1, 2), A::F32, deq_bf16).tile(tile!(float bf16)),
    row(D::Q8_0, "q8_0", "Q8_0", 8, (32, 34), A::Q8_0, deq!(dequantize_q8_0))
        .scale_at(ScaleField::At(0, None))
        .quantizer(quant!(quantize_q8_0))
        .tile(tile!(wide32 BlockQ8_0)),
    row(D::Q4_0, "q4_0", "Q4_0", 2, (32, 18), A::Q8_0, deq!(dequantize_q4_0))
        .scale_at(ScaleField::At(0, None))
        .quantizer(quant!(quantize_q4_0))
        .tile(tile!(wide32 BlockQ4_0)),
    row(D::Q2K, "q2_k", "Q2_K", 10, (256, 84), A::Q8K, deq!(dequantize_q2_k))
        .dots(dot!(dot_q2_k, Q8K), avx2!(q2_k::avx2::dot_q2_k, Q8K))
        .neon(neon!(q2_k::dot_q2_k_with::<NeonLanes>, Q8K))
        .with_tokens(tokens_k!(BlockQ2K))
        .tile(tile!(wide BlockQ2K)),
    row(D::Q3K, "q3_k", "Q3_K", 11, (256, 110), A::Q8K, deq!(dequantize_q3_k))
        .dots(dot!(dot_q3_k, Q8K), avx2!(q3_k::avx2::dot_q3_k, Q8K))
        .neon(neon!(q3_k::dot_q3_k_with::<NeonLanes>, Q8K))
        .with_tokens(tokens!(BlockQ3K))
        .wide_tile(tile!(wide BlockQ3K), tile!(codes BlockQ3K)),
    row(D::Q4K, "q4_k", "Q4_K", 12, (256, 144), A::Q8K, deq!(dequantize_q4_k))
        .with_tokens(tokens_k!(BlockQ4K))
        .wide_tile(tile!(wide BlockQ4K), tile!(kquant BlockQ4K)),
    row(D::Q5K, "q5_k", "Q5_K", 13, (256, 176), A::Q8K, deq!(dequantize_q5_k))
        .with_tokens(tokens_k!(BlockQ5K))
        .wide_tile(tile!(wide BlockQ5K), tile!(kquant BlockQ5K)),
    row(D::Q6K, "q6_k", "Q6_K", 14, (256, 210), A::Q8K, deq!(dequantize_q6_k))
        .with_tokens(tokens_k!(BlockQ6K))
        .wide_tile(tile!(wide BlockQ6K), tile!(kquant BlockQ6K)),
    row(D::Mxfp4, "mxfp4", "MXFP4", 39, (32, 17), A::Q8_0, deq!(dequantize_mxfp4))
        .quantizer(quant!(quantize_mxfp4))
        .with_tokens(tokens32!(BlockMxfp4)),
    row(D::Q4_1, "q4_1", "Q4_1", 3, (32, 20), A::Q8_1, deq!(dequantize_q4_1))
        .scale_at(ScaleField::At(0, Some(2)))
        .quantizer(quant!(quantize_q4_1))
        .dots(dot!(dot_q4_1, Q8_1), avx2!(q4_1::avx2::dot_q4_1, Q8_1))
        .neon(neon!(q4_1::dot_q4_1_with::<NeonLanes>, Q8_1))
        .with_tokens(tokens32!(BlockQ4_1)),
    row(D::Q5_0, "q5_0", "Q5_0", 6, (32, 22), A::Q8_0, deq!(dequantize_q5_0))
        .scale_at(ScaleField::At(0, None))
        .quantizer(quant!(quantize_q5_0))
        .dots(dot!(dot_q5_0, Q8), avx2!(q5_0::avx2::dot_q5_0, Q8))
        .neon(neon!(q5_0::dot_q5_0_with::<NeonLanes>, Q8))
        .with_tokens(tokens32!(BlockQ5_0))
        .tile(tile!(wide32 BlockQ5_0)),
    row(D::Q5_1, "q5_1", "Q5_1", 7, (32, 24), A::Q8_1, deq!(dequantize_q5_1))
        .scale_at(ScaleField::At(0, Some(2)))
        .quantizer(quant!(quantize_q5_1))
        .dots(dot!(dot_q5_1, Q8_1), avx2!(q5_1::avx2::dot_q5_1, Q8_1))
        .neon(neon!(q5_1::dot_q5_1_with::<NeonLanes>, Q8_1))
        .with_tokens(tokens32!(BlockQ5_1)),
    row(D::Iq4Nl, "iq4_nl", "IQ4_NL", 20, (32, 18), A::Q8_0, deq!(dequantize_iq4_nl))
        .scale_at(ScaleField::At(0, None))
        .dots(dot!(dot_iq4_nl, Q8), avx2!(iq4_nl::avx2::dot_iq4_nl, Q8))
        .neon(neon!(iq4_nl::dot_iq4_nl_with::<NeonLanes>, Q8))
        .with_tokens(tokens32!(BlockIq4Nl)),
    row(D::Iq4Xs, "iq4_xs", "IQ4_XS", 23, (256, 136), A::Q8K, deq!(dequantize_iq4_xs))
        .scale_at(ScaleField::At(0, None))
        .dots(dot!(dot_iq4_xs, Q8K), avx2!(iq4_xs::avx2::dot_iq4_xs, Q8K))
        .neon(neon!(iq4_xs::dot_iq4_xs_with::<NeonLanes>, Q8K))
        .with_tokens(tokens!(BlockIq4Xs))
        .wide_tile(tile!(wide BlockIq4Xs), tile!(codes BlockIq4Xs)),
    row(D::Iq2Xxs, "iq2_xxs", "IQ2_XXS", 16, (256, 66), A::Q8K, deq!(dequantize_iq2_xxs))
        .scale_at(ScaleField::At(0, None))
        .dots(dot!(dot_iq2_xxs, Q8K), avx2!(iq2_xxs::avx2::dot_iq2_xxs, Q8K))
        .neon(neon!(iq2_xxs::neon::dot_iq2_xxs, Q8K))
        .avx512_with_rows(grid512!(BlockIq2Xxs))
        .with_tokens(tokens!(BlockIq2Xxs))
        .wide_tile(tile!(wide BlockIq2Xxs), tile!(codes BlockIq2Xxs)),
    row(D::Iq2Xs, "iq2_xs", "IQ2_XS", 17, (256, 74), A::Q8K, deq!(dequantize_iq2_xs))
        .scale_at(ScaleField::At(0, None))
        .dots(dot!(dot_iq2_xs, Q8K), avx2!(iq2_xs::avx2::dot_iq2_xs, Q8K))
        .neon(neon!(iq2_xs::neon::dot_iq2_xs, Q8K))
        .avx512_with_rows(grid512!(BlockIq2Xs))
        .with_tokens(tokens!(BlockIq2Xs))
        .wide_tile(tile!(wide BlockIq2Xs), tile!(codes BlockIq2Xs)),
    row(D::Iq2S, "iq2_s", "IQ2_S", 22, (256, 82), A::Q8K, deq!(dequantize_iq2_s))
        .scale_at(ScaleField::At(0, None))
        .dots(dot!(dot_iq2_s, Q8K), avx2!(iq2_s::avx2::dot_iq2_s, Q8K))
        .neon(neon!(iq2_s::neon::dot_iq2_s, Q8K))
        .avx512_with_rows(grid512!(BlockIq2S))
        .with_tokens(tokens!(BlockIq2S))
        .wide_tile(tile!(wide BlockIq2S), tile!(codes BlockIq2S)),
    row(D::Iq3Xxs, "iq3_xxs", "IQ3_XXS", 18, (256, 98), A::Q8K, deq!(dequantize_iq3_xxs))
        .scale_at(ScaleField::At(0, None))
        .dots(dot!(dot_iq3_xxs, Q8K), avx2!(iq3_xxs::avx2::dot_iq3_xxs, Q8K))
        .neon(neon!(iq3_xxs::neon::dot_iq3_xxs, Q8K))
        .avx512_with_rows(grid512!(BlockIq3Xxs))
        .with_tokens(tokens!(BlockIq3Xxs))
        .wide_tile(tile!(wide BlockIq3Xxs), tile!(codes BlockIq3Xxs)),
    row(D::Iq3S, "iq3_s", "IQ3_S", 21, (256, 110), A::Q8K, deq!(dequantize_iq3_s))
        .scale_at(ScaleField::At(0, None))
        .dots(dot!(dot_iq3_s, Q8K), avx2!(iq3_s::avx2::dot_iq3_s, Q8K))
        .neon(neon!(iq3_s::neon::dot_iq3_s, Q8K))
        .avx512_with_rows(grid512!(BlockIq3S))
        .with_tokens(tokens!(BlockIq3S))
        .wide_tile(tile!(wide BlockIq3S), tile!(codes BlockIq3S)),
    row(D::Iq1S, "iq1_s", "IQ1_S", 19, (256, 50), A::Q8K, deq!(dequantize_iq1_s))
        .scale_at(ScaleField::At(0, None))
        .dots(dot!(dot_iq1_s, Q8K), avx2!(iq1_s::avx2::dot_iq1_s, Q8K))
        .neon(neon!(iq1_s::neon::dot_iq1_s, Q8K))
        .avx512_with_rows(grid512!(BlockIq1S))
        .with_tokens(tokens_grid!(BlockIq1S))
        .tile(tile!(wide BlockIq1S)),
    row(D::Iq1M, "iq1_m", "IQ1_M", 29, (256, 56), A::Q8K, deq!(dequantize_iq1_m))
        .scale_at(ScaleField::Iq1M)
        .dots(dot!(dot_iq1_m, Q8K), avx2!(iq1_m::avx2::dot_iq1_m, Q8K))
        .neon(neon!(iq1_m::neon::dot_iq1_m, Q8K))
        .avx512_with_rows(grid512!(BlockIq1M))
        .with_tokens(tokens_grid!(BlockIq1M))
        .tile(tile!(wide BlockIq1M)),
    row(D::Tq1_0, "tq1_0", "TQ1_0", 34, (256, 54), A::Q8K, deq!(dequantize_tq1_0))
        .scale_at(ScaleField::At(52, None))
        .dots(dot!(dot_tq1_0, Q8K), avx2!(tq1_0::avx2::dot_tq1_0, Q8K))
        .neon(neon!(tq1_0::dot_tq1_0_with::<NeonLanes>, Q8K))
        .avx512_with_rows(rows512!(tq1_0::avx512::dot_tq1_0, tq1_0::avx512::dot_rows))
        .with_tokens(tokens_k!(BlockTq1_0))
        .tile(tile!(wide BlockTq1_0)),
    row(D::Tq2_0, "tq2_0", "TQ2_0", 35, (256, 66), A::Q8K, deq!(dequantize_tq2_0))
        .scale_at(ScaleField::At(64, None))
        .dots(dot!(dot_tq2_0, Q8K), avx2!(tq2_0::avx2::dot_tq2_0, Q8K))
        .neon(neon!(tq2_0::dot_tq2_0_with::<NeonLanes>, Q8K))
        .with_tokens(tokens_k!(BlockTq2_0))
        .tile(tile!(wide BlockTq2_0)),
];

const _: () = {
    let mut i = 0;
    while i < DType::COUNT {
        assert!(TYPES[i].dtype as usize == i, "TYPES is in DType's order");
        i += 1;
    }
};

#[cfg(test)]
#[path = "traits_tests.rs"]
mod tests;
