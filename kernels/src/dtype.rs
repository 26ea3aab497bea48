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
}

impl DType {
    /// Values per block (1 for plain floats).
    pub const fn block_values(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::Bf16 => 1,
            DType::Q8_0 | DType::Q4_0 => 32,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
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

    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
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
            _ => return Err(KernelError::UnknownDType(s.into())),
        })
    }
}
