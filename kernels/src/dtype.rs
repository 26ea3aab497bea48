//! Weight element types and their storage sizes.

use crate::error::KernelError;
use crate::traits::{TypeTraits, TYPES};

/// How a weight matrix is stored. Block formats store rows as runs of 32-value blocks exactly as
/// GGUF does, so GGUF tensors of these types are usable as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DType {
    /// IEEE f32.
    F32,
    /// IEEE f16.
    F16,
    /// bfloat16.
    Bf16,
    /// 32 x i8 with one f16 scale (GGUF `Q8_0`, 34 bytes per block).
    Q8_0,
    /// 32 x 4-bit with one f16 scale, offset 8 (GGUF `Q4_0`, 18 bytes per block).
    Q4_0,
    /// K-quant, 2.625 bits per value (GGUF `Q2_K`, 84 bytes per 256 values).
    Q2K,
    /// K-quant, 3.4375 bits per value (GGUF `Q3_K`, 110 bytes per 256 values).
    Q3K,
    /// K-quant, 4.5 bits per value (GGUF `Q4_K`, 144 bytes per 256 values).
    Q4K,
    /// K-quant, 5.5 bits per value (GGUF `Q5_K`, 176 bytes per 256 values).
    Q5K,
    /// K-quant, 6.5625 bits per value (GGUF `Q6_K`, 210 bytes per 256 values).
    Q6K,
    /// OCP MXFP4: 32 e2m1 values with one E8M0 scale (GGUF `MXFP4`, 17 bytes per block).
    Mxfp4,
    /// 32 x 4-bit with an f16 scale and minimum (GGUF `Q4_1`, 20 bytes per block).
    Q4_1,
    /// 32 x 5-bit with an f16 scale, offset 16 (GGUF `Q5_0`, 22 bytes per block).
    Q5_0,
    /// 32 x 5-bit with an f16 scale and minimum (GGUF `Q5_1`, 24 bytes per block).
    Q5_1,
    /// 32 x 4-bit codes into a non-linear table, f16 scale (GGUF `IQ4_NL`, 18 bytes per block).
    Iq4Nl,
    /// 256 values as 8 IQ4_NL runs with 6-bit run scales (GGUF `IQ4_XS`, 136 bytes).
    Iq4Xs,
    /// 256 values, groups of 8 from a 256-point grid (GGUF `IQ2_XXS`, 66 bytes).
    Iq2Xxs,
    /// 256 values, groups of 8 from a 512-point grid (GGUF `IQ2_XS`, 74 bytes).
    Iq2Xs,
    /// 256 values, groups of 8 from a 1024-point grid (GGUF `IQ2_S`, 82 bytes).
    Iq2S,
    /// 256 values, groups of 4 from a 256-point grid (GGUF `IQ3_XXS`, 98 bytes).
    Iq3Xxs,
    /// 256 values, groups of 4 from a 512-point grid (GGUF `IQ3_S`, 110 bytes).
    Iq3S,
    /// 256 values, ternary groups of 8 from a 2048-point grid (GGUF `IQ1_S`, 50 bytes).
    Iq1S,
    /// 256 values, as IQ1_S with per-group shifts (GGUF `IQ1_M`, 56 bytes).
    Iq1M,
    /// 256 ternary values, base-3 packed (GGUF `TQ1_0`, 54 bytes).
    Tq1_0,
    /// 256 ternary values, 2-bit codes (GGUF `TQ2_0`, 66 bytes).
    Tq2_0,
}

impl DType {
    /// How many types there are (the rows of the type table).
    pub const COUNT: usize = 25;

    /// Every type, in the table's order.
    pub const ALL: [DType; DType::COUNT] = [
        DType::F32,
        DType::F16,
        DType::Bf16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q2K,
        DType::Q3K,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
        DType::Mxfp4,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Iq4Nl,
        DType::Iq4Xs,
        DType::Iq2Xxs,
        DType::Iq2Xs,
        DType::Iq2S,
        DType::Iq3Xxs,
        DType::Iq3S,
        DType::Iq1S,
        DType::Iq1M,
        DType::Tq1_0,
        DType::Tq2_0,
    ];

    /// This type's row of the type table.
    #[inline]
    pub fn traits(self) -> &'static TypeTraits {
        &TYPES[self as usize]
    }

    /// The type stored under ggml id `id`, if floe reads it.
    pub fn from_ggml_id(id: u32) -> Option<DType> {
        TYPES.iter().find(|t| t.ggml_id == id).map(|t| t.dtype)
    }

    /// ggml's type id.
    pub fn ggml_id(self) -> u32 {
        self.traits().ggml_id
    }

    /// Values per block (1 for plain floats).
    pub fn block_values(self) -> usize {
        self.traits().block_values
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.traits().block_bytes
    }

    /// Bytes of a row of `cols` values, or an error if a block format cannot hold it.
    pub fn row_bytes(self, cols: usize) -> Result<usize, KernelError> {
        let b = self.block_values();
        if !cols.is_multiple_of(b) {
            return Err(KernelError::RowNotBlockAligned { dtype: self, block: b, cols });
        }
        Ok(cols / b * self.block_bytes())
    }

    /// Whether this is a 256-value K-quant (Q2_K..Q6_K: its dot products take Q8_K activations;
    /// prefill's GEMM tiles of these equal their matvec bit for bit).
    pub const fn is_k_quant(self) -> bool {
        matches!(self, DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K)
    }

    /// Whether values come in quantised blocks (not plain floats).
    pub fn is_block(self) -> bool {
        self.block_values() > 1
    }

    /// Expands `bytes` (whole rows of this type) to f32 in `out`, bit-identical to ggml's
    /// dequantisation for the block formats.
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) -> Result<(), KernelError> {
        let want = self.row_bytes(out.len())?;
        if bytes.len() != want {
            return Err(KernelError::Shape(format!(
                "dequantize {self}: {} values need {want} bytes, got {}",
                out.len(),
                bytes.len()
            )));
        }
        let align = if self.is_block() && self.block_bytes().is_multiple_of(2) { 2 } else { 1 };
        if !(bytes.as_ptr() as usize).is_multiple_of(align) {
            return Err(KernelError::Shape(format!("dequantize {self}: misaligned bytes")));
        }
        (self.traits().dequantize)(bytes, out);
        Ok(())
    }

    /// Quantises `values` (whole rows) with ggml's reference rule for this type, or None where
    /// floe has no quantiser for it.
    pub fn quantize(self, values: &[f32]) -> Option<Result<Vec<u8>, KernelError>> {
        let q = self.traits().quantize?;
        Some(self.row_bytes(values.len()).map(|n| {
            let mut out = vec![0u8; n];
            q(values, &mut out);
            out
        }))
    }

    /// Writes the f16 scale `d` (and, for types with one, the minimum `m`) into every block of
    /// `blocks`, or returns false where this type keeps no plain f16 scale.
    pub fn set_scales(self, blocks: &mut [u8], d: f32, m: f32) -> bool {
        let (d, m) = (half::f16::from_f32(d).to_bits(), half::f16::from_f32(m).to_le_bytes());
        let size = self.block_bytes();
        match self.traits().scale {
            crate::ScaleField::None => return false,
            crate::ScaleField::At(at, min) => {
                for b in blocks.chunks_exact_mut(size) {
                    b[at..at + 2].copy_from_slice(&d.to_le_bytes());
                    if let Some(mi) = min {
                        b[mi..mi + 2].copy_from_slice(&m);
                    }
                }
            }
            crate::ScaleField::Iq1M => {
                for b in blocks.chunks_exact_mut(size) {
                    for k in 0..4 {
                        let hi = 48 + 2 * k + 1;
                        b[hi] = (b[hi] & 0x0F) | ((((d >> (4 * k)) & 0xF) as u8) << 4);
                    }
                }
            }
        }
        true
    }

    /// The first block of `blocks` whose f16 scale (or minimum) is NaN or infinite, for the
    /// types that keep a plain f16 scale ([`crate::ScaleField`]); None where every one is
    /// finite or the type keeps none.
    pub fn first_nonfinite_scale(self, blocks: &[u8]) -> Option<usize> {
        let size = self.block_bytes();
        let bad = |bits: u16| bits & 0x7C00 == 0x7C00;
        let at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        blocks.chunks_exact(size).position(|b| match self.traits().scale {
            crate::ScaleField::None => false,
            crate::ScaleField::At(d, m) => bad(at(b, d)) || m.is_some_and(|m| bad(at(b, m))),
            crate::ScaleField::Iq1M => {
                let w = |k: usize| at(b, 48 + 2 * k);
                bad((w(0) >> 12) | ((w(1) >> 8) & 0xF0) | ((w(2) >> 4) & 0xF00) | (w(3) & 0xF000))
            }
        })
    }

    /// Every type's name, comma-separated (for messages that list what floe knows).
    pub fn names() -> String {
        DType::ALL.map(DType::name).join(", ")
    }

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        self.traits().name
    }

    /// ggml's name of the type.
    pub fn ggml_name(self) -> &'static str {
        self.traits().ggml_name
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DType {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self, KernelError> {
        let lower = s.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "float32" => "f32",
            "float16" => "f16",
            "bfloat16" => "bf16",
            other => other,
        };
        DType::ALL
            .into_iter()
            .find(|d| d.name() == alias)
            .ok_or_else(|| KernelError::UnknownDType(s.into()))
    }
}
