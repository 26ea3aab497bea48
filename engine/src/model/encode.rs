//! f32 values to stored bytes in a weight format, and stored rows back to f32.

use floe_kernels::quant::{dequantize_q4_0, dequantize_q8_0, quantize_q4_0, quantize_q8_0, QK};
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
    })
}

/// Decodes one stored row of `cols` values into `out`.
pub fn decode_row(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => out
            .iter_mut()
            .zip(bytes.chunks_exact(4))
            .for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        DType::F16 => out
            .iter_mut()
            .zip(bytes.chunks_exact(2))
            .for_each(|(o, b)| *o = f16::from_le_bytes([b[0], b[1]]).to_f32()),
        DType::Bf16 => out
            .iter_mut()
            .zip(bytes.chunks_exact(2))
            .for_each(|(o, b)| *o = bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        DType::Q8_0 => dequantize_q8_0(bytemuck::cast_slice(bytes), out),
        DType::Q4_0 => dequantize_q4_0(bytemuck::cast_slice(bytes), out),
    }
}
