//! floe's packed model: a directory with `floe.json` (format version, config, dense tensor
//! table, expert-slab table, checksums), `dense.bin`, `experts.bin` and the tokenizer files.
//!
//! Each routed expert is one slab: gate, up and down back to back (each at a 64-byte boundary,
//! block formats carrying their scales inside the blocks as in GGUF), padded to [`SLAB_ALIGN`],
//! so one expert is one aligned direct read at `layer_base + expert * slab_bytes`.

use std::io::Read;
use std::path::{Path, PathBuf};

use floe_kernels::DType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::formats::placement::{ExpertFile, ExpertPlacement, MatrixPlace, SlabViewLayout};
use crate::model::config::ModelConfig;

/// Version of the layout this floe writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Slabs are padded to this (and start at multiples of it): one page, the usual logical block.
pub const SLAB_ALIGN: usize = 4096;
/// Alignment of every tensor and of every matrix inside a slab.
pub const TENSOR_ALIGN: usize = 64;

/// Builds a model directory at `out` all or nothing: `write` fills a fresh temporary directory
/// beside it ([`temp_dir_for`]), which replaces `out` only if `write` succeeds; on error it is
/// removed and `out` is left as it was. (`pack`, `pack --from` and `synth` all write this way.)
///
/// An existing `out` is moved aside (renamed, [`aside_dir_for`]) before the new one is renamed
/// into place, and deleted only after: a crash at any point leaves the old model, the new one,
/// or the old one under its aside name, never no model at all.
pub fn write_dir_atomically<T>(out: &Path, write: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let tmp = temp_dir_for(out);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| write_err(&tmp, e))?;
    let v = match write(&tmp) {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let aside = aside_dir_for(out);
    let had_old = out.exists();
    if had_old {
        let _ = std::fs::remove_dir_all(&aside);
        if let Err(e) = std::fs::rename(out, &aside) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(write_err(out, e));
        }
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if had_old {
            // Put the old model back where it was.
            let _ = std::fs::rename(&aside, out);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(write_err(out, e));
    }
    if had_old {
        std::fs::remove_dir_all(&aside).map_err(|e| write_err(&aside, e))?;
    }
    Ok(v)
}

/// Where [`write_dir_atomically`] keeps the old `out` while the new one moves in.
pub fn aside_dir_for(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.old-{}", std::process::id()))
}

/// The temporary directory [`write_dir_atomically`] builds `out` in (tests of interrupted
/// writes look for it).
pub fn temp_dir_for(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// xxh3-64 of `bytes`, as stored in the manifest.
pub fn checksum(bytes: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes))
}

/// A dense tensor in `dense.bin`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseEntry {
    /// floe's name (see `arch::Dense::key`).
    pub name: String,
    /// Storage format.
    pub dtype: String,
    /// Rows (1 for vectors).
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Byte offset in dense.bin.
    pub offset: u64,
    /// Byte length.
    pub bytes: u64,
    /// xxh3-64, hex.
    pub xxh3: String,
}

/// One matrix inside a slab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlabPart {
    /// Byte offset from the slab start.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Bytes.
    pub bytes: usize,
    /// Storage format of this matrix when it differs from the layout's (GGUF Q4_K_M files mix
    /// Q4_K gate/up with Q6_K down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// Where the three matrices sit in every slab of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlabLayout {
    /// Storage format of the expert matrices.
    pub dtype: String,
    /// gate [ffn, hidden].
    pub gate: SlabPart,
    /// up [ffn, hidden].
    pub up: SlabPart,
    /// down [hidden, ffn].
    pub down: SlabPart,
    /// Slab stride (padded to SLAB_ALIGN).
    pub slab_bytes: usize,
}

impl SlabLayout {
    /// The layout for experts of `hidden x ffn` stored as `dtype`.
    pub fn new(dtype: DType, hidden: usize, ffn: usize) -> Result<Self> {
        Self::mixed([dtype; 3], hidden, ffn)
    }

    /// The layout for experts whose gate, up and down are stored as `types` (in that order).
    pub fn mixed(types: [DType; 3], hidden: usize, ffn: usize) -> Result<Self> {
        let main = types[0];
        let part = |offset: usize, rows: usize, cols: usize, dtype: DType| -> Result<SlabPart> {
            let bytes = rows
                * dtype
                    .row_bytes(cols)
                    .map_err(|e| Error::Invalid(format!("expert matrices: {e}")))?;
            let dtype = (dtype != main).then(|| dtype.name().to_string());
            Ok(SlabPart { offset, rows, cols, bytes, dtype })
        };
        let gate = part(0, ffn, hidden, types[0])?;
        let up_at = (gate.offset + gate.bytes).next_multiple_of(TENSOR_ALIGN);
        let up = part(up_at, ffn, hidden, types[1])?;
        let down_at = (up.offset + up.bytes).next_multiple_of(TENSOR_ALIGN);
        let down = part(down_at, hidden, ffn, types[2])?;
        let slab_bytes = (down.offset + down.bytes).next_multiple_of(SLAB_ALIGN);
        Ok(Self { dtype: main.name().into(), gate, up, down, slab_bytes })
    }

    /// The storage format (of the gate matrix; see [`SlabLayout::view_layout`] for each's).
    pub fn dtype(&self) -> Result<DType> {
        self.dtype.parse().map_err(|e| Error::Invalid(format!("floe.json: {e}")))
    }

    /// The layout with every matrix's type parsed and its byte range checked against the slab.
    pub fn view_layout(&self) -> Result<SlabViewLayout> {
        let main = self.dtype()?;
        let part = |p: &SlabPart, what: &str| -> Result<MatrixPlace> {
            let dtype = match &p.dtype {
                Some(t) => {
                    t.parse().map_err(|e| Error::Invalid(format!("floe.json {what}: {e}")))?
                }
                None => main,
            };
            let need = dtype.row_bytes(p.cols).map(|rb| rb * p.rows).ok();
            if need != Some(p.bytes) || p.offset + p.bytes > self.slab_bytes {
                return Err(Error::Invalid(format!(
                    "floe.json: slab {what} ({}x{} {dtype}, {} bytes at {}) does not fit its type or the {}-byte slab",
                    p.rows, p.cols, p.bytes, p.offset, self.slab_bytes
                )));
            }
            Ok(MatrixPlace { offset: p.offset, rows: p.rows, cols: p.cols, bytes: p.bytes, dtype })
        };
        Ok(SlabViewLayout {
            gate: part(&self.gate, "gate")?,
            up: part(&self.up, "up")?,
            down: part(&self.down, "down")?,
            slab_bytes: self.slab_bytes,
        })
    }
}

/// The slabs of one MoE layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSlabs {
    /// Decoder layer index.
    pub layer: usize,
    /// Byte offset of expert 0's slab in experts.bin.
    pub base: u64,
    /// xxh3-64 of each expert's slab (padding included), hex.
    pub xxh3: Vec<String>,
    /// This layer's layout when it differs from the model's (mixed-type GGUF files give some
    /// layers wider down matrices); its slabs are then this layout's `slab_bytes` apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<SlabLayout>,
}

/// `floe.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always "floe".
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The model.
    pub config: ModelConfig,
    /// Dense tensors.
    pub dense: Vec<DenseEntry>,
    /// Expert slab layout; where layers differ (see [`LayerSlabs::layout`]), the one with the
    /// largest slabs, whose `slab_bytes` is the size of a cache slot.
    pub slab: SlabLayout,
    /// MoE layers' slabs.
    pub expert_layers: Vec<LayerSlabs>,
    /// Where it was packed from.
    pub source: String,
    /// Whether tokenizer.json was copied in.
    pub has_tokenizer: bool,
    /// Tensors kept for later use but not run (a multi-token-prediction layer, `mtp.*`), in
    /// `mtp.bin`, under their checkpoint names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mtp: Vec<DenseEntry>,
}

impl Manifest {
    /// A manifest of the current format version.
    pub fn new(
        config: ModelConfig,
        dense: Vec<DenseEntry>,
        slab: SlabLayout,
        expert_layers: Vec<LayerSlabs>,
        source: String,
        has_tokenizer: bool,
    ) -> Self {
        Self {
            format: "floe".into(),
            format_version: FORMAT_VERSION,
            config,
            dense,
            slab,
            expert_layers,
            source,
            has_tokenizer,
            mtp: Vec::new(),
        }
    }

    /// Writes `dir/floe.json` (last, after the data files it describes).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join("floe.json");
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| write_err(&path, e))
    }

    /// Total bytes of experts.bin.
    pub fn experts_bytes(&self) -> u64 {
        self.expert_layers
            .iter()
            .map(|l| self.config.experts as u64 * self.layout_of(l).slab_bytes as u64)
            .sum()
    }

    fn layout_of<'a>(&'a self, l: &'a LayerSlabs) -> &'a SlabLayout {
        l.layout.as_ref().unwrap_or(&self.slab)
    }

    /// Byte offset of the slab of `expert` in decoder layer `layer`.
    pub fn slab_offset(&self, layer: usize, expert: usize) -> Option<u64> {
        let l = self.expert_layers.iter().find(|l| l.layer == layer)?;
        (expert < self.config.experts)
            .then(|| l.base + (expert * self.layout_of(l).slab_bytes) as u64)
    }

    /// Every decoder layer's routed-expert slabs (None for layers without), with their layouts
    /// parsed and checked: no layer's slab may be larger than a cache slot (`slab.slab_bytes`).
    pub fn expert_table(&self) -> Result<Vec<Option<ExpertPlacement>>> {
        let mut table = vec![None; self.config.layers];
        for l in &self.expert_layers {
            let layout = self.layout_of(l).view_layout()?;
            if layout.slab_bytes > self.slab.slab_bytes || l.layer >= self.config.layers {
                return Err(Error::Invalid(format!(
                    "floe.json: layer {} slabs of {} bytes (slots are {})",
                    l.layer, layout.slab_bytes, self.slab.slab_bytes
                )));
            }
            table[l.layer] = Some(ExpertPlacement::Slab { base: l.base, layout });
        }
        Ok(table)
    }
}

/// An opened packed model: its manifest and paths. Weights are loaded by the users of it.
#[derive(Debug, Clone)]
pub struct PackedModel {
    /// The directory.
    pub dir: PathBuf,
    /// floe.json.
    pub manifest: Manifest,
}

impl PackedModel {
    /// Opens `dir`: reads and checks floe.json, and checks that dense.bin and experts.bin have
    /// the sizes it says. With `verify`, also checks every checksum.
    pub fn open(dir: &Path, verify: bool) -> Result<Self> {
        let mpath = dir.join("floe.json");
        let text = std::fs::read_to_string(&mpath).map_err(|e| {
            Error::Invalid(format!(
                "{}: cannot read ({e}); is this a model packed by `floe pack`?",
                mpath.display()
            ))
        })?;
        let mut manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", mpath.display())))?;
        manifest.config.fill_legacy();
        if manifest.format != "floe" || manifest.format_version != FORMAT_VERSION {
            return Err(Error::Unsupported(format!(
                "{}: format {} version {} (this floe reads floe version {FORMAT_VERSION})",
                mpath.display(),
                manifest.format,
                manifest.format_version
            )));
        }
        crate::formats::validate::check_manifest(&manifest)
            .map_err(|error| Error::Field { origin: mpath.display().to_string(), error })?;
        let this = Self { dir: dir.to_path_buf(), manifest };
        let dense_need = this.manifest.dense.iter().map(|d| d.offset + d.bytes).max().unwrap_or(0);
        this.check_size("dense.bin", dense_need)?;
        this.check_size("experts.bin", this.manifest.experts_bytes())?;
        if verify {
            this.verify()?;
        }
        Ok(this)
    }

    fn check_size(&self, file: &str, need: u64) -> Result<()> {
        let path = self.dir.join(file);
        let len = std::fs::metadata(&path)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?
            .len();
        if len < need {
            return Err(Error::Corrupt {
                path,
                what: "file".into(),
                detail: format!("{len} bytes, expected {need} (truncated?)"),
            });
        }
        Ok(())
    }

    /// The routed experts: experts.bin and each layer's slab placement.
    pub fn expert_file(&self) -> Result<ExpertFile> {
        Ok(ExpertFile {
            paths: vec![self.dir.join("experts.bin")],
            layers: self.manifest.expert_table()?,
            experts: self.manifest.config.experts,
            slot_bytes: self.manifest.slab.slab_bytes,
        })
    }

    /// Checks every dense tensor's and every slab's checksum; the first mismatch is an error
    /// naming the file, the tensor or slab, and both checksums.
    pub fn verify(&self) -> Result<()> {
        let dense = std::fs::read(self.dir.join("dense.bin"))
            .map_err(|e| Error::Invalid(format!("dense.bin: {e}")))?;
        for d in &self.manifest.dense {
            let got = checksum(&dense[d.offset as usize..(d.offset + d.bytes) as usize]);
            if got != d.xxh3 {
                return Err(Error::Corrupt {
                    path: self.dir.join("dense.bin"),
                    what: format!("tensor {} at offset {}", d.name, d.offset),
                    detail: format!("xxh3 {got}, expected {}", d.xxh3),
                });
            }
        }
        let path = self.dir.join("experts.bin");
        let mut f = std::fs::File::open(&path)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        for l in &self.manifest.expert_layers {
            let mut buf = vec![0u8; self.manifest.layout_of(l).slab_bytes];
            for (e, want) in l.xxh3.iter().enumerate() {
                f.read_exact(&mut buf)
                    .map_err(|err| Error::Invalid(format!("{}: {err}", path.display())))?;
                let got = checksum(&buf);
                if &got != want {
                    return Err(Error::Corrupt {
                        path,
                        what: format!(
                            "slab of layer {} expert {e} at offset {}",
                            l.layer,
                            l.base + (e * buf.len()) as u64
                        ),
                        detail: format!("xxh3 {got}, expected {want}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Writes `dense.bin`: each tensor at a [`TENSOR_ALIGN`] boundary, with its table entry.
pub struct DenseWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    offset: u64,
    entries: Vec<DenseEntry>,
}

impl std::fmt::Debug for DenseWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseWriter")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn flush_and_sync(out: std::io::BufWriter<std::fs::File>, path: &Path) -> Result<()> {
    let file = out.into_inner().map_err(|e| write_err(path, e.into_error()))?;
    file.sync_all().map_err(|e| write_err(path, e))
}

fn write_err(path: &Path, source: std::io::Error) -> Error {
    Error::Write { path: path.to_path_buf(), source }
}

impl DenseWriter {
    /// Creates `dir/dense.bin`.
    pub fn create(dir: &Path) -> Result<Self> {
        Self::create_file(dir.join("dense.bin"))
    }

    /// Creates a dense tensor file at `path`.
    pub fn create_file(path: PathBuf) -> Result<Self> {
        let file = std::fs::File::create(&path).map_err(|e| write_err(&path, e))?;
        Ok(Self { path, out: std::io::BufWriter::new(file), offset: 0, entries: Vec::new() })
    }

    /// Appends one tensor of `rows x cols` values stored as `dtype` in `bytes`.
    pub fn push(
        &mut self,
        name: String,
        dtype: DType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<()> {
        use std::io::Write;
        let pad = self.offset.next_multiple_of(TENSOR_ALIGN as u64) - self.offset;
        self.out.write_all(&vec![0u8; pad as usize]).map_err(|e| write_err(&self.path, e))?;
        self.offset += pad;
        self.out.write_all(bytes).map_err(|e| write_err(&self.path, e))?;
        self.entries.push(DenseEntry {
            name,
            dtype: dtype.name().into(),
            rows,
            cols,
            offset: self.offset,
            bytes: bytes.len() as u64,
            xxh3: checksum(bytes),
        });
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and syncs; returns the table.
    pub fn finish(self) -> Result<Vec<DenseEntry>> {
        flush_and_sync(self.out, &self.path)?;
        Ok(self.entries)
    }
}

/// Writes `experts.bin`: slabs layer by layer, with their checksums.
pub struct SlabWriter {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    base: u64,
    layers: Vec<LayerSlabs>,
}

impl std::fmt::Debug for SlabWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlabWriter")
            .field("path", &self.path)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl SlabWriter {
    /// Creates `dir/experts.bin`.
    pub fn create(dir: &Path) -> Result<Self> {
        let path = dir.join("experts.bin");
        let file = std::fs::File::create(&path).map_err(|e| write_err(&path, e))?;
        Ok(Self {
            path,
            out: std::io::BufWriter::with_capacity(8 << 20, file),
            base: 0,
            layers: Vec::new(),
        })
    }

    /// Starts the slabs of decoder layer `layer` (in the model's layout).
    pub fn begin_layer(&mut self, layer: usize) {
        self.layers.push(LayerSlabs { layer, base: self.base, xxh3: Vec::new(), layout: None });
    }

    /// Starts the slabs of decoder layer `layer`, in a layout of its own.
    pub fn begin_layer_with(&mut self, layer: usize, layout: SlabLayout) {
        self.layers.push(LayerSlabs {
            layer,
            base: self.base,
            xxh3: Vec::new(),
            layout: Some(layout),
        });
    }

    /// Appends the next expert's slab (already padded to the slab size).
    pub fn push(&mut self, slab: &[u8]) -> Result<()> {
        use std::io::Write;
        self.out.write_all(slab).map_err(|e| write_err(&self.path, e))?;
        self.base += slab.len() as u64;
        let layer = self
            .layers
            .last_mut()
            .ok_or_else(|| Error::Invalid("slab before begin_layer".into()))?;
        layer.xxh3.push(checksum(slab));
        Ok(())
    }

    /// Flushes and syncs; returns the slab table.
    pub fn finish(self) -> Result<Vec<LayerSlabs>> {
        flush_and_sync(self.out, &self.path)?;
        Ok(self.layers)
    }
}
