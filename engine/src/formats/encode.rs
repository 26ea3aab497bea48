//! f32 values to stored bytes in a weight format, and stored rows back to f32.

use floe_kernels::DType;
use half::{bf16, f16};

use crate::error::{Error, Result};

/// Encodes a `rows x cols` matrix (or a vector with `rows == 1`) as `dtype`.
pub fn encode(dtype: DType, values: &[f32], cols: usize, what: &str) -> Result<Vec<u8>> {
    if cols == 0 || !values.len().is_multiple_of(cols) {
        return Err(Error::Invalid(format!(
            "{what}: {} values is not a whole number of {cols}-wide rows",
            values.len()
        )));
    }
    dtype.row_bytes(cols).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
    match dtype {
        DType::F32 => Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::F16 => Ok(values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect()),
        DType::Bf16 => Ok(values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect()),
        _ => match dtype.quantize(values) {
            Some(bytes) => bytes.map_err(|e| Error::Invalid(format!("{what}: {e}"))),
            None => Err(Error::Unsupported(format!(
                "{what}: floe does not quantise to {dtype}; weights of that type come from GGUF \
                 files (`floe pack --from model.gguf`)"
            ))),
        },
    }
}

/// Decodes one stored row of `cols` values into `out`.
pub fn decode_row(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    dtype.dequantize(bytes, out).map_err(|e| Error::Invalid(format!("decode row: {e}")))
}
