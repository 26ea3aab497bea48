//! INT4 weights as compressed-tensors' `pack-quantized` format stores them (Kimi-K2-Thinking and
//! Kimi-K2.5 publish their routed experts so): `NAME_packed` I32 `[rows, cols / 8]` (value `i`
//! of a word in bits `4i..4i + 4`, stored as `q + 8`), `NAME_scale` `[rows, cols / group]` and
//! `NAME_shape` `[2]`, symmetric: a value is `q x scale`, `q` in -8..=7. That is ggml's Q4_0
//! (a block of 32 nibbles `q + 8` and an f16 scale), so groups of 32 whose scales f16 holds
//! exactly become Q4_0 rows without requantising, as llama.cpp's converter reads the same
//! tensors (`dequant_packed`).

use half::f16;
use safetensors::Dtype;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::formats::safetensors_dir::CheckpointDir;

/// The `pack-quantized` layout config.json's `quantization_config` describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackQuantized {
    /// Values per scale along a row.
    pub group: usize,
}

impl PackQuantized {
    /// From a config.json: None without compressed-tensors quantisation; an error naming what
    /// floe cannot read (another format, bit width, strategy, or an asymmetric scheme).
    pub fn from_config(text: &str) -> Result<Option<Self>> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
        let q = match v
            .get("quantization_config")
            .or_else(|| v.get("text_config").and_then(|t| t.get("quantization_config")))
        {
            Some(q) if q.is_object() => q,
            _ => return Ok(None),
        };
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
        if method != "compressed-tensors" {
            return Ok(None);
        }
        let format = q.get("format").and_then(Value::as_str).unwrap_or("");
        let groups = q.get("config_groups").and_then(Value::as_object);
        let weights = groups
            .filter(|g| g.len() == 1)
            .and_then(|g| g.values().next())
            .and_then(|g| g.get("weights"));
        let refuse = |what: String| {
            Error::Unsupported(format!(
                "config.json quantization_config: {what} (floe reads compressed-tensors \
                 pack-quantized symmetric 4-bit group weights)"
            ))
        };
        if format != "pack-quantized" {
            return Err(refuse(format!("format {format:?}")));
        }
        let w = weights.ok_or_else(|| refuse("not one config group with weights".into()))?;
        let get_u = |k: &str| w.get(k).and_then(Value::as_u64);
        let bits = get_u("num_bits");
        let group = get_u("group_size").unwrap_or(0) as usize;
        let symmetric = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
        let strategy = w.get("strategy").and_then(Value::as_str).unwrap_or("");
        let kind = w.get("type").and_then(Value::as_str).unwrap_or("int");
        if bits != Some(4) || strategy != "group" || !symmetric || kind != "int" || group == 0 {
            return Err(refuse(format!(
                "num_bits {bits:?}, strategy {strategy:?}, type {kind:?}, symmetric {symmetric}, \
                 group_size {group}"
            )));
        }
        Ok(Some(Self { group }))
    }
}

/// A pack-quantized matrix read: Q4_0 bytes when its groups and scales allow it, else values.
#[derive(Debug)]
pub enum Int4Rows {
    /// ggml Q4_0 rows, exactly the checkpoint's values.
    Q4_0(Vec<u8>),
    /// The dequantised values (groups other than 32, or scales f16 cannot hold).
    Values(Vec<f32>),
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Invalid(what()))
    }
}

/// The `rows x cols` matrix stored as `weight` (`weight_packed`, `weight_scale`), if the
/// checkpoint has it in this form.
pub fn int4_rows(
    ckpt: &CheckpointDir,
    weight: &str,
    rows: usize,
    cols: usize,
    pq: PackQuantized,
) -> Result<Option<Int4Rows>> {
    let (packed, scale) = (format!("{weight}_packed"), format!("{weight}_scale"));
    if !ckpt.has(&packed) {
        return Ok(None);
    }
    let (words, wshape) = ckpt.raw(&packed, Dtype::I32)?;
    let groups = cols.div_ceil(pq.group);
    check(wshape == [rows, cols.div_ceil(8)], || {
        format!("{packed} has shape {wshape:?}, expected [{rows}, {}]", cols.div_ceil(8))
    })?;
    check(ckpt.shape(&scale) == Some(&[rows, groups][..]), || {
        format!("{scale} has shape {:?}, expected [{rows}, {groups}]", ckpt.shape(&scale))
    })?;
    let scales = ckpt.read_f32(&scale)?;
    let word_count = cols.div_ceil(8);
    let code = |r: usize, c: usize| -> u8 {
        let w = &words[(r * word_count + c / 8) * 4..][..4];
        ((u32::from_le_bytes([w[0], w[1], w[2], w[3]]) >> (4 * (c % 8))) & 0xF) as u8
    };
    let exact = pq.group == 32
        && cols.is_multiple_of(32)
        && scales.iter().all(|&s| f16::from_f32(s).to_f32() == s);
    if exact {
        let mut out = Vec::with_capacity(rows * groups * 18);
        for r in 0..rows {
            for g in 0..groups {
                out.extend_from_slice(&f16::from_f32(scales[r * groups + g]).to_le_bytes());
                for j in 0..16 {
                    out.push(code(r, g * 32 + j) | (code(r, g * 32 + j + 16) << 4));
                }
            }
        }
        return Ok(Some(Int4Rows::Q4_0(out)));
    }
    let mut values = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            values.push((code(r, c) as f32 - 8.0) * scales[r * groups + c / pq.group]);
        }
    }
    Ok(Some(Int4Rows::Values(values)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_configs_are_read_or_refused_by_name() {
        let kimi = r#"{"quantization_config": {"quant_method": "compressed-tensors",
            "format": "pack-quantized", "config_groups": {"group_0": {"weights": {"num_bits": 4,
            "group_size": 32, "strategy": "group", "symmetric": true, "type": "int"}}}}}"#;
        assert_eq!(PackQuantized::from_config(kimi).unwrap(), Some(PackQuantized { group: 32 }));
        assert_eq!(PackQuantized::from_config("{}").unwrap(), None);
        for (from, to) in [
            ("\"pack-quantized\"", "\"float-quantized\""),
            ("\"num_bits\": 4", "\"num_bits\": 8"),
            ("\"symmetric\": true", "\"symmetric\": false"),
            ("\"strategy\": \"group\"", "\"strategy\": \"channel\""),
        ] {
            let e = PackQuantized::from_config(&kimi.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains("quantization_config"), "{to}: {e}");
        }
    }
}
