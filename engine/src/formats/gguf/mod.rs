//! GGUF (v2 and v3) files: metadata, tensor infos, alignment, and where each tensor's bytes are.
//! Parsing never panics: every read is bounds-checked, counts are checked against the bytes that
//! remain before anything is allocated, and tensor data must lie inside the file.

mod arch;
pub(crate) mod deepseek_v4;
pub(crate) mod gemma;
pub mod import;
mod spm;
pub mod tokenizer;
mod types;
pub mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use arch::{config_of, gguf_arch, gguf_name, permuted_heads, unpermute_rows};
pub use import::pack_gguf;
pub use types::GgmlType;

use crate::error::{Error, Result};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// u8.
    U8(u8),
    /// i8.
    I8(i8),
    /// u16.
    U16(u16),
    /// i16.
    I16(i16),
    /// u32.
    U32(u32),
    /// i32.
    I32(i32),
    /// f32.
    F32(f32),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of values of one type.
    Array(Vec<GgufValue>),
    /// u64.
    U64(u64),
    /// i64.
    I64(i64),
    /// f64.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is one (of any width, non-negative).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(x) => Some(x as u64),
            GgufValue::U16(x) => Some(x as u64),
            GgufValue::U32(x) => Some(x as u64),
            GgufValue::U64(x) => Some(x),
            GgufValue::I8(x) if x >= 0 => Some(x as u64),
            GgufValue::I16(x) if x >= 0 => Some(x as u64),
            GgufValue::I32(x) if x >= 0 => Some(x as u64),
            GgufValue::I64(x) if x >= 0 => Some(x as u64),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(x) => Some(x as f64),
            GgufValue::F64(x) => Some(x),
            _ => self.as_u64().map(|x| x as f64),
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    /// Name (`blk.0.ffn_gate_exps.weight`, ...).
    pub name: String,
    /// Dimensions, innermost first (GGUF order: `dims[0]` is the row length).
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Which part of a split model holds it (0 for single files).
    pub file: usize,
    /// Absolute byte offset of the data in that file.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

/// An opened GGUF file (memory-mapped), or all parts of a split one (`-00001-of-0000N.gguf`,
/// read as one model: metadata from the first part, tensors from all).
pub struct GgufFile {
    parts: Vec<(PathBuf, Mmap)>,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensors, in file order.
    pub tensors: Vec<GgufTensor>,
    /// Alignment of tensor data (`general.alignment`, default 32).
    pub alignment: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("parts", &self.paths())
            .field("version", &self.version)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> Error {
        Error::Corrupt {
            path: self.path.to_path_buf(),
            what: "GGUF header".into(),
            detail: format!(
                "{what} at byte {} (file is {} bytes; truncated or not GGUF?)",
                self.pos,
                self.data.len()
            ),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err(&format!("{what} runs past the end")))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > self.remaining() as u64 {
            return Err(self.err(&format!("{what}: string of {n} bytes")));
        }
        let b = self.take(n as usize, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(&format!("{what}: not UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.take(1, "u8")?[0]),
            1 => GgufValue::I8(self.take(1, "i8")?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.take(2, "u16")?.try_into().expect("2"))),
            3 => GgufValue::I16(i16::from_le_bytes(self.take(2, "i16")?.try_into().expect("2"))),
            4 => GgufValue::U32(self.u32("u32")?),
            5 => GgufValue::I32(self.u32("i32")? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32("f32")?)),
            7 => GgufValue::Bool(self.take(1, "bool")?[0] != 0),
            8 => GgufValue::String(self.string("string value")?),
            9 => {
                if depth > 2 {
                    return Err(self.err("arrays nested too deep"));
                }
                let elem = self.u32("array type")?;
                let n = self.u64("array length")?;
                // Every element takes at least one byte: a count beyond what remains is corrupt.
                if n > self.remaining() as u64 {
                    return Err(self.err(&format!("array of {n} elements")));
                }
                // Grow as elements actually parse: a corrupt count cannot reserve memory.
                let mut v = Vec::with_capacity((n as usize).min(4096));
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64("u64")?),
            11 => GgufValue::I64(self.u64("i64")? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64("f64")?)),
            other => return Err(self.err(&format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens and parses `path`; for a part of a split model, every part.
    pub fn open(path: &Path) -> Result<Self> {
        let parts = match split_parts(path) {
            Some(parts) => parts,
            None => vec![path.to_path_buf()],
        };
        let mut maps = Vec::with_capacity(parts.len());
        let mut first: Option<(u32, BTreeMap<String, GgufValue>, u64)> = None;
        let mut tensors = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let file = std::fs::File::open(part)
                .map_err(|e| Error::Invalid(format!("{}: {e}", part.display())))?;
            // SAFETY: a shared file mapping is sound only while nobody truncates or writes the
            // file: a page cut off by truncation raises SIGBUS when touched, and bytes changed
            // under a `&[u8]` are undefined behaviour, whatever the parser checks. floe cannot
            // detect either, so it assumes (README, "Model files") that a model file is not
            // modified while it is being opened or packed, and keeps the window short: the map
            // lives in this `GgufFile`, which `open_model` drops once the dense tensors are
            // copied out. A running engine reads experts with read(2)/io_uring, where a file
            // truncated underneath is a short read and an error naming it (tests/truncated.rs).
            let map = unsafe { Mmap::map(&file) }
                .map_err(|e| Error::Invalid(format!("mmap {}: {e}", part.display())))?;
            let (version, metadata, part_tensors, alignment) = parse(&map, part)?;
            let no = metadata.get("split.no").and_then(GgufValue::as_u64).unwrap_or(0);
            if parts.len() > 1 && no != i as u64 {
                return Err(Error::Invalid(format!(
                    "{}: split.no is {no}, expected {i}",
                    part.display()
                )));
            }
            tensors.extend(part_tensors.into_iter().map(|t| GgufTensor { file: i, ..t }));
            if first.is_none() {
                first = Some((version, metadata, alignment));
            }
            maps.push((part.clone(), map));
        }
        let (version, metadata, alignment) = first.expect("at least one part");
        if let Some(n) = metadata.get("split.tensors.count").and_then(GgufValue::as_u64) {
            if n != tensors.len() as u64 {
                return Err(Error::Invalid(format!(
                    "{}: split.tensors.count says {n} tensors, the {} parts hold {}",
                    path.display(),
                    maps.len(),
                    tensors.len()
                )));
            }
        }
        Ok(Self { parts: maps, version, metadata, tensors, alignment })
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The architecture (`general.architecture`).
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(GgufValue::as_str)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor.
    pub fn data(&self, t: &GgufTensor) -> &[u8] {
        &self.parts[t.file].1[t.offset as usize..(t.offset + t.bytes) as usize]
    }

    /// The path it was opened from (the first part of a split model).
    pub fn path(&self) -> &Path {
        &self.parts[0].0
    }

    /// Every part's path (one for an unsplit file).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.parts.iter().map(|p| p.0.clone()).collect()
    }
}

/// The parts of a split model if `path` is named like one (`NAME-00002-of-00003.gguf`): all
/// of them, in order, whichever part was named.
pub fn split_parts(path: &Path) -> Option<Vec<PathBuf>> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (base, no) = rest.rsplit_once('-')?;
    if no.len() != 5 || count.len() != 5 {
        return None;
    }
    let n: usize = count.parse().ok()?;
    no.parse::<usize>().ok().filter(|&k| k >= 1 && k <= n)?;
    let dir = path.parent().unwrap_or(Path::new(""));
    Some((1..=n).map(|k| dir.join(format!("{base}-{k:05}-of-{n:05}.gguf"))).collect())
}

type Parsed = (u32, BTreeMap<String, GgufValue>, Vec<GgufTensor>, u64);

/// Parses a whole GGUF file held in `data`.
pub fn parse(data: &[u8], path: &Path) -> Result<Parsed> {
    let mut r = Reader { data, pos: 0, path };
    if r.take(4, "magic")? != b"GGUF" {
        return Err(r.err("no GGUF magic"));
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::Unsupported(format!(
            "{}: GGUF version {version} (floe reads 2 and 3)",
            path.display()
        )));
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;
    // A key-value takes at least 13 bytes and a tensor info at least 28.
    if n_kv.saturating_mul(13) > r.remaining() as u64
        || n_tensors.saturating_mul(28) > r.remaining() as u64
    {
        return Err(r.err(&format!("{n_kv} metadata entries and {n_tensors} tensors do not fit")));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let ty = r.u32("metadata type")?;
        let v = r.value(ty, 0)?;
        metadata.insert(key, v);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => v
            .as_u64()
            .filter(|a| a.is_power_of_two())
            .ok_or_else(|| r.err("general.alignment is not a power of two"))?,
    };
    let mut infos = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.string("tensor name")?;
        let n_dims = r.u32("tensor dims")?;
        if n_dims == 0 || n_dims > 4 {
            return Err(r.err(&format!("tensor {name} has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64("tensor dim")?);
        }
        let ty = r.u32("tensor type")?;
        let offset = r.u64("tensor offset")?;
        infos.push((name, dims, ty, offset));
    }
    let data_start = (r.pos as u64).next_multiple_of(alignment);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dims, ty, offset) in infos {
        let ggml_type = GgmlType::from_id(ty).ok_or_else(|| {
            Error::Unsupported(format!(
                "{}: tensor {name} has unknown ggml type {ty}",
                path.display()
            ))
        })?;
        let elems = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = elems.and_then(|n| ggml_type.bytes_for(n)).ok_or_else(|| {
            r.err(&format!(
                "tensor {name}: {dims:?} is not a whole number of {} blocks",
                ggml_type.name()
            ))
        })?;
        let start = data_start.checked_add(offset).filter(|s| s % alignment == 0);
        let end = start.and_then(|s| s.checked_add(bytes)).filter(|&e| e <= data.len() as u64);
        let (Some(start), Some(_)) = (start, end) else {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                what: format!("tensor {name}"),
                detail: format!("{bytes} bytes at data offset {offset} do not fit in the {}-byte file (truncated?)", data.len()),
            });
        };
        tensors.push(GgufTensor { name, dims, ggml_type, file: 0, offset: start, bytes });
    }
    Ok((version, metadata, tensors, alignment))
}
