//! Where each routed expert's bytes are in a file, and where its three matrices sit in a cache
//! slot once read. floe's packed slabs are one aligned read per expert; a GGUF file's experts
//! are three slices of three stacked tensors, read as one request of three segments.

use std::path::PathBuf;

use floe_kernels::DType;

use crate::error::{Error, Result};

/// One matrix of an expert inside a slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatrixPlace {
    /// Byte offset from the slot start.
    pub offset: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Bytes.
    pub bytes: usize,
    /// Storage format.
    pub dtype: DType,
}

/// Where gate, up and down sit in a slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlabViewLayout {
    /// gate [ffn, hidden].
    pub gate: MatrixPlace,
    /// up [ffn, hidden].
    pub up: MatrixPlace,
    /// down [hidden, ffn].
    pub down: MatrixPlace,
    /// Bytes of one slab of this layout (the read length of a packed slab).
    pub slab_bytes: usize,
}

/// One matrix of every expert of a layer, stored as consecutive equal slices of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlicePart {
    /// Which of the model's files holds it (split GGUF files).
    pub file: usize,
    /// File offset of expert 0's slice.
    pub file_offset: u64,
    /// Bytes from one expert's slice to the next's (the slice's own size, or more where two
    /// matrices share a stacked tensor, as Gemma 4's fused gate and up do).
    pub stride: u64,
    /// The matrix; `offset` is where its segment's read starts in the slot (a multiple of the
    /// arena alignment) and `bytes` the size of one expert's slice.
    pub place: MatrixPlace,
}

/// How one MoE layer's experts are stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExpertPlacement {
    /// floe slabs: expert `e` is `layout.slab_bytes` at `base + e * layout.slab_bytes`.
    Slab {
        /// Byte offset of expert 0's slab.
        base: u64,
        /// The slab layout.
        layout: SlabViewLayout,
    },
    /// Three slices of three tensors (GGUF `ffn_{gate,up,down}_exps`).
    Slices {
        /// gate, up, down.
        parts: [SlicePart; 3],
    },
}

/// Arena alignment the slice placements are planned for (segment starts in a slot).
pub const SLOT_ALIGN: usize = 4096;

/// Largest piece a packed slab is read in (`FLOE_READ_SEGMENT` overrides, in bytes). Measured
/// on the Qwen3-30B-A3B-shaped synthetic model in a 4 GiB cgroup, LRU + gate prefetch: whole
/// 2.5 MiB slabs 1.92-2.00 tok/s (1.35-1.39 GB/s read), 1 MiB pieces 2.17, 512 KiB 2.37-2.42
/// (1.56-1.58 GB/s), 256 KiB 2.37.
fn read_segment() -> usize {
    static SEG: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SEG.get_or_init(|| {
        std::env::var("FLOE_READ_SEGMENT")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&v: &usize| v >= SLOT_ALIGN)
            .unwrap_or(512 << 10)
    })
}

impl ExpertPlacement {
    /// Slices at `parts` = (file, offset of expert 0, rows, cols, type) for gate, up and down,
    /// planned into one slot: each segment starts at a multiple of [`SLOT_ALIGN`] with room for
    /// its read's alignment head. Returns the placement and the slot size it needs.
    pub fn slices(parts: [(usize, u64, usize, usize, DType); 3]) -> Result<(Self, usize)> {
        Self::strided_slices(parts.map(|(f, o, r, c, d)| (f, o, r, c, d, None)))
    }

    /// [`slices`](Self::slices) with a stride between experts where it is not the slice's
    /// size (gate and up of one stacked tensor).
    pub fn strided_slices(
        parts: [(usize, u64, usize, usize, DType, Option<u64>); 3],
    ) -> Result<(Self, usize)> {
        let mut dst = 0usize;
        let mut out = Vec::with_capacity(3);
        for (file, file_offset, rows, cols, dtype, stride) in parts {
            let bytes = dtype
                .row_bytes(cols)
                .map_err(|e| Error::Invalid(format!("expert matrices: {e}")))?
                * rows;
            out.push(SlicePart {
                file,
                file_offset,
                stride: stride.unwrap_or(bytes as u64),
                place: MatrixPlace { offset: dst, rows, cols, bytes, dtype },
            });
            // The aligned cover of a read is at most head (< align <= SLOT_ALIGN) + bytes,
            // rounded up to the alignment.
            dst += (bytes + SLOT_ALIGN - 1).next_multiple_of(SLOT_ALIGN);
        }
        Ok((ExpertPlacement::Slices { parts: [out[0], out[1], out[2]] }, dst))
    }

    /// The reads of expert `e`: (file, offset, length, slot offset) of each range, the first at
    /// slot offset 0.
    pub fn read(&self, e: usize) -> Vec<ExpertRange> {
        match self {
            ExpertPlacement::Slab { base, layout } => {
                // One slab, read as segments of at most READ_SEGMENT bytes: the device serves
                // the pieces in parallel, which a lone large read at low queue depth does not
                // get (decode misses come a few per layer, not a full queue).
                let start = base + (e * layout.slab_bytes) as u64;
                let pieces = layout.slab_bytes.div_ceil(read_segment()).max(1);
                let piece = layout.slab_bytes.div_ceil(pieces).next_multiple_of(SLOT_ALIGN);
                (0..layout.slab_bytes)
                    .step_by(piece)
                    .map(|at| ExpertRange {
                        file: 0,
                        offset: start + at as u64,
                        len: piece.min(layout.slab_bytes - at),
                        dst: at,
                    })
                    .collect()
            }
            ExpertPlacement::Slices { parts } => parts
                .iter()
                .map(|p| ExpertRange {
                    file: p.file,
                    offset: p.file_offset + e as u64 * p.stride,
                    len: p.place.bytes,
                    dst: p.place.offset,
                })
                .collect(),
        }
    }

    /// Where expert `e`'s matrices are in its slot once read, with `read_align(file)` the
    /// alignment reads of that file are rounded to (1 for buffered files): a segment's bytes
    /// land `offset % read_align` after its start.
    pub fn view(&self, e: usize, read_align: &dyn Fn(usize) -> usize) -> SlabViewLayout {
        match self {
            ExpertPlacement::Slab { layout, .. } => *layout,
            ExpertPlacement::Slices { parts } => {
                let place = |p: &SlicePart| {
                    let off = p.file_offset + e as u64 * p.stride;
                    MatrixPlace {
                        offset: p.place.offset + (off % read_align(p.file) as u64) as usize,
                        ..p.place
                    }
                };
                let down = place(&parts[2]);
                SlabViewLayout {
                    gate: place(&parts[0]),
                    up: place(&parts[1]),
                    down,
                    slab_bytes: down.offset + down.bytes,
                }
            }
        }
    }

    /// Bytes read per expert.
    pub fn read_bytes(&self) -> usize {
        match self {
            ExpertPlacement::Slab { layout, .. } => layout.slab_bytes,
            ExpertPlacement::Slices { parts } => parts.iter().map(|p| p.place.bytes).sum(),
        }
    }
}

/// One byte range of an expert's read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertRange {
    /// Index into [`ExpertFile::paths`].
    pub file: usize,
    /// Byte offset in that file.
    pub offset: u64,
    /// Bytes.
    pub len: usize,
    /// Where its read starts in the slot.
    pub dst: usize,
}

/// The routed experts of a model: the files they are in and how each layer's are stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertFile {
    /// The files (experts.bin, or the GGUF file or its split parts).
    pub paths: Vec<PathBuf>,
    /// By decoder layer; None for layers without routed experts.
    pub layers: Vec<Option<ExpertPlacement>>,
    /// Experts per MoE layer.
    pub experts: usize,
    /// Bytes of one cache slot (the largest expert of any layer, with alignment room).
    pub slot_bytes: usize,
}

impl ExpertFile {
    /// Bytes of all experts as read (the whole expert working set).
    pub fn experts_bytes(&self) -> u64 {
        self.layers.iter().flatten().map(|p| (p.read_bytes() * self.experts) as u64).sum()
    }

    /// The placement of `layer`'s experts, checking `expert` is in range.
    pub fn layer(&self, layer: usize, expert: usize) -> Result<&ExpertPlacement> {
        if expert >= self.experts {
            return Err(Error::Invalid(format!("expert {expert} of {}", self.experts)));
        }
        self.layers
            .get(layer)
            .and_then(|l| l.as_ref())
            .ok_or_else(|| Error::Invalid(format!("layer {layer} has no routed experts")))
    }
}
