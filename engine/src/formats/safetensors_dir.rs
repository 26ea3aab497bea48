//! A Hugging Face checkpoint directory: one or many `*.safetensors` files (with or without
//! `model.safetensors.index.json`), memory-mapped, read tensor by tensor (or one expert's slice
//! of a fused tensor) and converted to f32. Only what is asked for is touched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

struct TensorInfo {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
    end: usize,
}

/// The tensors of a checkpoint directory.
pub struct CheckpointDir {
    files: Vec<(PathBuf, Mmap)>,
    tensors: HashMap<String, TensorInfo>,
}

impl std::fmt::Debug for CheckpointDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointDir")
            .field("files", &self.files.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl CheckpointDir {
    /// Opens every safetensors file of `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::Invalid(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::Invalid(format!("{}: no *.safetensors files", dir.display())));
        }
        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for (i, path) in paths.into_iter().enumerate() {
            let file = std::fs::File::open(&path)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
            // SAFETY: a shared file mapping is sound only while nobody truncates or writes the
            // file: a page cut off by truncation raises SIGBUS when touched, and bytes changed
            // under a `&[u8]` are undefined behaviour, not merely wrong values. floe cannot
            // detect either, so it assumes (README, "Model files") that a checkpoint is not
            // modified while `floe pack` reads it; the map lives only as long as this reader,
            // which packing drops when done. Nothing maps a checkpoint while a model runs.
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::Invalid(format!("mmap {}: {e}", path.display())))?;
            let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
                Error::Invalid(format!("{}: not a safetensors file ({e})", path.display()))
            })?;
            let base = 8 + header_len;
            for (name, info) in meta.tensors() {
                // A multimodal checkpoint keeps the text model under a prefix: Qwen3.5's
                // `model.language_model.` (its `lm_head` at the top), Kimi-K2.5's
                // `language_model.` (`language_model.model.*`, `language_model.lm_head`). Their
                // vision towers and projectors are not floe's to run.
                let name = match name.strip_prefix("model.language_model.") {
                    Some(rest) => format!("model.{rest}"),
                    None => {
                        name.strip_prefix("language_model.").unwrap_or(name.as_str()).to_string()
                    }
                };
                if [
                    "model.visual.",
                    "visual.",
                    "vision_tower.",
                    "mm_projector.",
                    "model.mm_projector.",
                ]
                .iter()
                .any(|p| name.starts_with(p))
                {
                    continue;
                }
                let (s, e) = info.data_offsets;
                if base + e > map.len() || s > e {
                    return Err(Error::Invalid(format!(
                        "{}: tensor {name} runs past the end of the file (truncated?)",
                        path.display()
                    )));
                }
                tensors.insert(
                    name.clone(),
                    TensorInfo {
                        file: i,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: base + s,
                        end: base + e,
                    },
                );
            }
            files.push((path, map));
        }
        Ok(Self { files, tensors })
    }

    /// Whether the checkpoint has `name`.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Every tensor name starting with `prefix`, sorted.
    pub fn names_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.tensors.keys().filter(|n| n.starts_with(prefix)).cloned().collect();
        v.sort();
        v
    }

    /// Shape of `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// Element dtype name of `name` (F32, BF16, F16).
    pub fn dtype_name(&self, name: &str) -> Option<String> {
        self.tensors.get(name).map(|t| format!("{:?}", t.dtype))
    }

    /// The whole tensor as f32.
    pub fn read_f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        let n: usize = t.shape.iter().product();
        self.convert(name, t, t.start, n)
    }

    /// `rows` rows (from `first_row`) of slice `index` of a 3-D tensor `[n, rows, cols]`, as f32.
    /// `rows == usize::MAX` means the whole slice.
    pub fn read_slice_rows(
        &self,
        name: &str,
        index: usize,
        first_row: usize,
        rows: usize,
    ) -> Result<(Vec<f32>, usize, usize)> {
        let t = self.info(name)?;
        if t.shape.len() != 3 || index >= t.shape[0] {
            return Err(Error::Invalid(format!(
                "tensor {name} {:?} has no slice {index}",
                t.shape
            )));
        }
        let (r, c) = (t.shape[1], t.shape[2]);
        let rows = if rows == usize::MAX { r } else { rows };
        if first_row + rows > r {
            return Err(Error::Invalid(format!(
                "tensor {name} {:?}: rows {first_row}+{rows} out of range",
                t.shape
            )));
        }
        let elem = elem_bytes(t.dtype, name)?;
        let start = t.start + (index * r * c + first_row * c) * elem;
        Ok((self.convert(name, t, start, rows * c)?, rows, c))
    }

    /// The raw bytes of slice `index` (along the first dimension) of a `U8` tensor, and the
    /// tensor's shape (MXFP4 blocks and scales).
    pub fn u8_slice(&self, name: &str, index: usize) -> Result<(&[u8], &[usize])> {
        let t = self.info(name)?;
        if t.dtype != Dtype::U8 || t.shape.is_empty() || index >= t.shape[0] {
            return Err(Error::Invalid(format!(
                "tensor {name} ({:?} {:?}) has no U8 slice {index}",
                t.dtype, t.shape
            )));
        }
        let per: usize = t.shape[1..].iter().product();
        let start = t.start + index * per;
        if start + per > t.end {
            return Err(Error::Invalid(format!("tensor {name}: read past its data")));
        }
        Ok((&self.files[t.file].1[start..start + per], &t.shape))
    }

    /// The raw little-endian bytes of a whole tensor that must be of `dtype` (packed integer
    /// weights), and its shape.
    pub fn raw(&self, name: &str, dtype: Dtype) -> Result<(&[u8], &[usize])> {
        let t = self.info(name)?;
        if t.dtype != dtype {
            return Err(Error::Invalid(format!(
                "tensor {name} is {:?}, expected {dtype:?}",
                t.dtype
            )));
        }
        let n: usize = t.shape.iter().product();
        let bytes = n.checked_mul(dtype.size()).filter(|&b| t.start + b <= t.end);
        let b =
            bytes.ok_or_else(|| Error::Invalid(format!("tensor {name}: read past its data")))?;
        Ok((&self.files[t.file].1[t.start..t.start + b], &t.shape))
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    fn convert(&self, name: &str, t: &TensorInfo, start: usize, n: usize) -> Result<Vec<f32>> {
        let elem = elem_bytes(t.dtype, name)?;
        let end = start + n * elem;
        if end > t.end {
            return Err(Error::Invalid(format!("tensor {name}: read past its data")));
        }
        let bytes = &self.files[t.file].1[start..end];
        Ok(match t.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => {
                bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            Dtype::F16 => {
                bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            // Index tables (DeepSeek-V4's `tid2eid`): small integers, exact in f32; a value
            // past 2^24 would round, and the table's reader refuses ids out of range.
            Dtype::I64 => bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
            Dtype::I32 => bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as f32)
                .collect(),
            _ => unreachable!("elem_bytes rejects other dtypes"),
        })
    }
}

fn elem_bytes(d: Dtype, name: &str) -> Result<usize> {
    match d {
        Dtype::F32 | Dtype::I32 => Ok(4),
        Dtype::I64 => Ok(8),
        Dtype::BF16 | Dtype::F16 => Ok(2),
        other => Err(Error::Unsupported(format!(
            "tensor {name} has dtype {other:?} (floe reads F32, BF16, F16, and I64/I32 tables)"
        ))),
    }
}
