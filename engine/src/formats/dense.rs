//! The dense (always resident) tensors in memory: read from a packed model's `dense.bin` or
//! copied from a GGUF file's tensors, each at a [`TENSOR_ALIGN`] boundary, and resolved by name
//! into [`TensorRef`]s once at load.

use std::collections::HashMap;
use std::io::Read;

use floe_kernels::{DType, Matrix};

use crate::error::{Error, Result};
use crate::formats::packed::{DenseEntry, PackedModel, TENSOR_ALIGN};

/// Where one resident tensor lives in [`DenseWeights`], resolved (and checked) once at load so
/// the forward pass never looks a name up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorRef {
    dtype: DType,
    rows: usize,
    cols: usize,
    offset: usize,
    bytes: usize,
}

impl TensorRef {
    /// Element format.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// The dense tensors, resident in memory.
pub struct DenseWeights {
    /// Backing store, on huge pages where the kernel grants them; every tensor starts at a
    /// `TENSOR_ALIGN` boundary of it.
    buf: floe_io::HugeBuf,
    len: usize,
    entries: HashMap<String, (DType, DenseEntry)>,
    /// Offsets of the tensors interleaved eight rows at a time, sorted.
    interleaved: Vec<usize>,
}

impl std::fmt::Debug for DenseWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseWeights")
            .field("bytes", &self.len)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl DenseWeights {
    /// Reads dense.bin of `model`.
    pub fn load(model: &PackedModel) -> Result<Self> {
        let path = model.dir.join("dense.bin");
        // Read straight into the (8-byte aligned) buffer: no second copy of the dense weights.
        let err = |e: std::io::Error| Error::Invalid(format!("{}: {e}", path.display()));
        let mut f = std::fs::File::open(&path).map_err(err)?;
        let len = f.metadata().map_err(err)?.len() as usize;
        let mut buf = floe_io::HugeBuf::zeroed(len, "dense weights")?;
        f.read_exact(buf.as_mut_slice()).map_err(err)?;
        let bytes = buf.as_slice();
        let mut entries = HashMap::new();
        for d in &model.manifest.dense {
            let dtype: DType =
                d.dtype.parse().map_err(|e| Error::Invalid(format!("floe.json: {e}")))?;
            entries.insert(d.name.clone(), (dtype, d.clone()));
        }
        Ok(Self { len: bytes.len(), buf, entries, interleaved: Vec::new() })
    }

    /// Dense weights copied from `(name, type, rows, cols, bytes)` tensors (a GGUF file's), each
    /// at a [`TENSOR_ALIGN`] boundary.
    pub fn from_tensors(tensors: &[(String, DType, usize, usize, &[u8])]) -> Result<Self> {
        // One allocation, filled in place: the source bytes may be a mapped file whose pages
        // count towards RSS while they are read, so no second copy on top.
        let mut len = 0usize;
        for t in tensors {
            len = len.next_multiple_of(TENSOR_ALIGN) + t.4.len();
        }
        let mut buf = floe_io::HugeBuf::zeroed(len, "dense weights")?;
        let raw = buf.as_mut_slice();
        let mut entries = HashMap::new();
        let mut offset = 0usize;
        for (name, dtype, rows, cols, data) in tensors {
            offset = offset.next_multiple_of(TENSOR_ALIGN);
            raw[offset..offset + data.len()].copy_from_slice(data);
            let e = DenseEntry {
                name: name.clone(),
                dtype: dtype.name().into(),
                rows: *rows,
                cols: *cols,
                offset: offset as u64,
                bytes: data.len() as u64,
                xxh3: String::new(),
            };
            entries.insert(name.clone(), (*dtype, e));
            offset += data.len();
        }
        Ok(Self { len, buf, entries, interleaved: Vec::new() })
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.len
    }

    fn raw(&self, name: &str) -> Result<(DType, &DenseEntry, &[u8])> {
        let (dtype, e) = self.entries.get(name).ok_or_else(|| Error::MissingTensor(name.into()))?;
        let all = self.buf.as_slice();
        Ok((*dtype, e, &all[e.offset as usize..(e.offset + e.bytes) as usize]))
    }

    /// Type, rows and columns of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<(DType, usize, usize)> {
        self.entries.get(name).map(|(t, e)| (*t, e.rows, e.cols))
    }

    /// Whether `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Resolves `name` to a [`TensorRef`], checking that it views as a matrix.
    pub fn tensor(&self, name: &str) -> Result<TensorRef> {
        let (dtype, e, _) = self.raw(name)?;
        let t = TensorRef {
            dtype,
            rows: e.rows,
            cols: e.cols,
            offset: e.offset as usize,
            bytes: e.bytes as usize,
        };
        self.view(&t).map_err(|err| Error::Invalid(format!("tensor {name}: {err}")))?;
        Ok(t)
    }

    /// Resolves a vector of `len` f32 values.
    pub fn vector_ref(&self, name: &str, len: usize) -> Result<TensorRef> {
        let t = self.tensor(name)?;
        self.values(&t).map_err(|err| Error::Invalid(format!("tensor {name}: {err}")))?;
        if t.rows * t.cols != len {
            return Err(Error::Invalid(format!(
                "tensor {name}: {} values where the config needs {len}",
                t.rows * t.cols
            )));
        }
        Ok(t)
    }

    fn bytes_of(&self, t: &TensorRef) -> Result<&[u8]> {
        let all = self.buf.as_slice();
        all.get(t.offset..t.offset + t.bytes)
            .ok_or_else(|| Error::Invalid("tensor reference outside the dense weights".into()))
    }

    /// The matrix `t` refers to.
    pub fn view(&self, t: &TensorRef) -> Result<Matrix<'_>> {
        let m = Matrix::new(t.dtype, t.rows, t.cols, self.bytes_of(t)?)
            .map_err(|err| Error::Invalid(format!("dense tensor: {err}")))?;
        if self.interleaved.binary_search(&t.offset).is_ok() {
            return m.interleaved8().map_err(Error::Kernel);
        }
        Ok(m)
    }

    /// Interleaves the Q4_0 matrices among `products` eight rows at a time, in place, for the
    /// kernels in use ([`floe_kernels::interleave_q4_0_here`]). Only for tensors the model
    /// reads through matrix products alone: [`Self::view`] hands them out interleaved, while a
    /// row lookup ([`Self::row_of`]) or [`Self::matrix`] would read the rearranged bytes.
    pub fn interleave(&mut self, products: &[TensorRef]) -> Result<()> {
        for t in products {
            if t.dtype != DType::Q4_0 || self.interleaved.binary_search(&t.offset).is_ok() {
                continue;
            }
            let bytes =
                self.buf.as_mut_slice().get_mut(t.offset..t.offset + t.bytes).ok_or_else(|| {
                    Error::Invalid("tensor reference outside the dense weights".into())
                })?;
            floe_kernels::quant::interleave_q4_0(bytes, t.rows, t.cols).map_err(Error::Kernel)?;
            let at = self.interleaved.partition_point(|&o| o < t.offset);
            self.interleaved.insert(at, t.offset);
        }
        Ok(())
    }

    /// The f32 values of vector `t`.
    pub fn values(&self, t: &TensorRef) -> Result<&[f32]> {
        if t.dtype != DType::F32 {
            return Err(Error::Invalid(format!("vectors are stored f32, found {}", t.dtype)));
        }
        let bytes = self.bytes_of(t)?;
        bytemuck::try_cast_slice(bytes)
            .map_err(|e| Error::Invalid(format!("{} bytes are not f32 values ({e})", bytes.len())))
    }

    /// Row `r` of matrix `t` as f32 (embedding lookup).
    pub fn row_of(&self, t: &TensorRef, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= t.rows || out.len() != t.cols {
            return Err(Error::Invalid(format!("row {r} of a {}x{} tensor", t.rows, t.cols)));
        }
        if self.interleaved.binary_search(&t.offset).is_ok() {
            return Err(Error::Invalid("row lookup in a matrix interleaved for products".into()));
        }
        let bytes = self.bytes_of(t)?;
        let rb = bytes.len() / t.rows;
        crate::formats::encode::decode_row(t.dtype, &bytes[r * rb..(r + 1) * rb], out)
    }

    /// A matrix.
    pub fn matrix(&self, name: &str) -> Result<Matrix<'_>> {
        let (dtype, e, bytes) = self.raw(name)?;
        Matrix::new(dtype, e.rows, e.cols, bytes)
            .map_err(|err| Error::Invalid(format!("tensor {name}: {err}")))
    }

    /// A vector (stored f32).
    pub fn vector(&self, name: &str) -> Result<&[f32]> {
        let (dtype, _, bytes) = self.raw(name)?;
        if dtype != DType::F32 {
            return Err(Error::Invalid(format!(
                "tensor {name}: vectors are stored f32, found {dtype}"
            )));
        }
        bytemuck::try_cast_slice(bytes).map_err(|e| {
            Error::Invalid(format!("tensor {name}: {} bytes are not f32 values ({e})", bytes.len()))
        })
    }

    /// Row `r` of a matrix as f32 (embedding lookup).
    pub fn row(&self, name: &str, r: usize, out: &mut [f32]) -> Result<()> {
        let (dtype, e, bytes) = self.raw(name)?;
        if r >= e.rows || out.len() != e.cols {
            return Err(Error::Invalid(format!("tensor {name}: row {r} of {}x{}", e.rows, e.cols)));
        }
        let rb = bytes.len() / e.rows;
        crate::formats::encode::decode_row(dtype, &bytes[r * rb..(r + 1) * rb], out)
    }
}
