//! f32 values to stored bytes in a weight format, and stored rows back to f32.

use floe_kernels::quant::{quantize_mxfp4, quantize_q4_0, quantize_q8_0, BlockMxfp4, QK};
use floe_kernels::{BlockQ4_0, BlockQ8_0, DType};
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
    Ok(match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        DType::Bf16 => values.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
        DType::Q8_0 => {
            let mut b = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; values.len() / QK];
            quantize_q8_0(values, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        DType::Q4_0 => {
            let mut b = vec![BlockQ4_0 { d: f16::ZERO, qs: [0; QK / 2] }; values.len() / QK];
            quantize_q4_0(values, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        DType::Mxfp4 => {
            let mut b = vec![BlockMxfp4 { e: 0, qs: [0; QK / 2] }; values.len() / QK];
            quantize_mxfp4(values, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        DType::Q2K | DType::Q3K | DType::Q4K | DType::Q5K | DType::Q6K => {
            return Err(Error::Unsupported(format!(
                "{what}: floe does not quantise to {dtype}; K-quant weights come from GGUF files \
                 (`floe pack --from model.gguf`)"
            )))
        }
    })
}

/// Decodes one stored row of `cols` values into `out`.
pub fn decode_row(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    dtype.dequantize(bytes, out).map_err(|e| Error::Invalid(format!("decode row: {e}")))
}
