//! Weight element types and their storage sizes.

use crate::error::KernelError;

/// How a weight matrix is stored. Block formats store rows as runs of 32-value blocks exactly as
/// GGUF does, so GGUF tensors of these types are usable as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
}

impl DType {
    /// Values per block (1 for plain floats).
    pub const fn block_values(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::Bf16 => 1,
            DType::Q8_0 | DType::Q4_0 | DType::Mxfp4 => 32,
            DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q2K => 84,
            DType::Q3K => 110,
            DType::Q4K => 144,
            DType::Q5K => 176,
            DType::Q6K => 210,
            DType::Mxfp4 => 17,
        }
    }

    /// Bytes of a row of `cols` values, or an error if a block format cannot hold it.
    pub fn row_bytes(self, cols: usize) -> Result<usize, KernelError> {
        let b = self.block_values();
        if !cols.is_multiple_of(b) {
            return Err(KernelError::RowNotBlockAligned { dtype: self, block: b, cols });
        }
        Ok(cols / b * self.block_bytes())
    }

    /// Whether this is a 256-value K-quant (its dot products take Q8_K activations).
    pub const fn is_k_quant(self) -> bool {
        matches!(self, DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K)
    }

    /// Expands `bytes` (whole rows of this type) to f32 in `out`, bit-identical to ggml's
    /// dequantisation for the block formats.
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) -> Result<(), KernelError> {
        use crate::quant::*;
        let want = self.row_bytes(out.len())?;
        if bytes.len() != want {
            return Err(KernelError::Shape(format!(
                "dequantize {self}: {} values need {want} bytes, got {}",
                out.len(),
                bytes.len()
            )));
        }
        let misaligned = || KernelError::Shape(format!("dequantize {self}: misaligned bytes"));
        match self {
            DType::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            DType::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::Bf16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::Q8_0 => {
                dequantize_q8_0(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?, out)
            }
            DType::Q4_0 => {
                dequantize_q4_0(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?, out)
            }
            DType::Q2K => {
                dequantize_q2_k(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?, out)
            }
            DType::Q3K => {
                dequantize_q3_k(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?, out)
            }
            DType::Q4K => {
                dequantize_q4_k(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?, out)
            }
            DType::Q5K => {
                dequantize_q5_k(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?, out)
            }
            DType::Q6K => {
                dequantize_q6_k(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?, out)
            }
            DType::Mxfp4 => {
                dequantize_mxfp4(bytemuck::try_cast_slice(bytes).map_err(|_| misaligned())?, out)
            }
        }
        Ok(())
    }

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q2K => "q2_k",
            DType::Q3K => "q3_k",
            DType::Q4K => "q4_k",
            DType::Q5K => "q5_k",
            DType::Q6K => "q6_k",
            DType::Mxfp4 => "mxfp4",
        }
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
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => DType::F32,
            "f16" | "float16" => DType::F16,
            "bf16" | "bfloat16" => DType::Bf16,
            "q8_0" => DType::Q8_0,
            "q4_0" => DType::Q4_0,
            "q2_k" => DType::Q2K,
            "q3_k" => DType::Q3K,
            "mxfp4" => DType::Mxfp4,
            "q4_k" => DType::Q4K,
            "q5_k" => DType::Q5K,
            "q6_k" => DType::Q6K,
            _ => return Err(KernelError::UnknownDType(s.into())),
        })
    }
}
