//! How the KV cache stores a head, one table row per type: f32 and f16 as they are; q8_0 and
//! q4_0 blocks and TurboQuant `tq4`/`tq3`/`tq2` after the randomised Hadamard [`rotation`] (a
//! head is padded with zeros to whole rotation units first). A cached row is a [`KvFormat`]:
//! one part for a plain key or value head, two for MLA's latent-and-RoPE-key row, each part
//! with its own type.

pub mod codebook;
pub mod rotation;
mod simd;
pub mod tq;

use half::f16;

use crate::quant::{quantize_q4_0, quantize_q8_0_activations, BlockQ4_0, BlockQ8_0, QK};
pub use simd::{kv_kernels, scalar_q4_0_axpy, scalar_q8_0_axpy, KvKernels, TqAxpy, TqDot};

use crate::dot::DotKernels;
use codebook::Codebook;

/// The widest row a cache takes (after padding): the stack buffers of attention are this big.
pub const MAX_KV_DIM: usize = 1024;

/// How the KV cache stores the values of one part of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvDType {
    /// 4 bytes per value: exact.
    F32,
    /// 2 bytes per value (llama.cpp's default cache type, and floe's command line's).
    F16,
    /// Rotated, then Q8_0 blocks: 8.5 bits per value.
    Q8_0,
    /// Rotated, then Q4_0 blocks: 4.5 bits per value.
    Q4_0,
    /// TurboQuant, 4 bits per value and an f16 scale per rotation block.
    Tq4,
    /// TurboQuant, 3 bits per value and an f16 scale per rotation block.
    Tq3,
    /// TurboQuant, 2 bits per value and an f16 scale per rotation block.
    Tq2,
}

impl KvDType {
    /// Every type, in the order `--help` lists them.
    pub const ALL: [KvDType; 7] = [
        KvDType::F16,
        KvDType::F32,
        KvDType::Q8_0,
        KvDType::Q4_0,
        KvDType::Tq4,
        KvDType::Tq3,
        KvDType::Tq2,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KvDType::F32 => "f32",
            KvDType::F16 => "f16",
            KvDType::Q8_0 => "q8_0",
            KvDType::Q4_0 => "q4_0",
            KvDType::Tq4 => "tq4",
            KvDType::Tq3 => "tq3",
            KvDType::Tq2 => "tq2",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Every name, comma-separated (for error messages and `--help`).
    pub fn names() -> String {
        Self::ALL.map(|d| d.name()).join(", ")
    }

    /// Whether heads are rotated before they are stored (and queries before they are scored).
    pub fn rotated(self) -> bool {
        !matches!(self, KvDType::F32 | KvDType::F16)
    }

    /// TurboQuant's bits per value, if this is a TurboQuant type.
    pub fn tq_bits(self) -> Option<u32> {
        match self {
            KvDType::Tq4 => Some(4),
            KvDType::Tq3 => Some(3),
            KvDType::Tq2 => Some(2),
            _ => None,
        }
    }

    /// Values a head of `dim` is stored as: rotated types pad to whole rotation units.
    pub fn padded(self, dim: usize) -> usize {
        if self.rotated() {
            rotation::padded(dim)
        } else {
            dim
        }
    }

    /// Bytes one head of `dim` values takes (always even; a multiple of 4 for f32), or None if
    /// this type cannot hold it (empty, or wider than [`MAX_KV_DIM`]).
    pub fn head_bytes(self, dim: usize) -> Option<usize> {
        let p = self.padded(dim);
        if dim == 0 || p > MAX_KV_DIM {
            return None;
        }
        let raw = match self {
            KvDType::F32 => 4 * p,
            KvDType::F16 => 2 * p,
            KvDType::Q8_0 => p / QK * std::mem::size_of::<BlockQ8_0>(),
            KvDType::Q4_0 => p / QK * std::mem::size_of::<BlockQ4_0>(),
            KvDType::Tq4 | KvDType::Tq3 | KvDType::Tq2 => {
                let block = rotation::block_for(p);
                p / block * tq::block_bytes(block, self.tq_bits().expect("a TurboQuant type"))
            }
        };
        Some(raw)
    }

    /// Bits per cached value of a head of `dim` (padding and scales included).
    pub fn bits_per_value(self, dim: usize) -> Option<f64> {
        self.head_bytes(dim).map(|b| 8.0 * b as f64 / dim as f64)
    }

    fn codebook(self, padded: usize) -> &'static codebook::Codebook {
        codebook::codebook(rotation::block_for(padded), self.tq_bits().expect("a TurboQuant type"))
    }

    /// Stores one head `x` into `out` (`head_bytes(x.len())` bytes).
    pub fn store(self, x: &[f32], out: &mut [u8]) {
        let p = self.padded(x.len());
        let mut buf = [0.0f32; MAX_KV_DIM];
        let r = &mut buf[..p];
        r[..x.len()].copy_from_slice(x);
        if self.rotated() {
            rotation::rotate(r);
        }
        match self {
            KvDType::F32 => out[..4 * p].copy_from_slice(bytemuck::cast_slice(r)),
            KvDType::F16 => {
                for (o, v) in out.chunks_exact_mut(2).zip(r.iter()) {
                    o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            KvDType::Q8_0 => {
                let mut blocks = [BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; MAX_KV_DIM / QK];
                let blocks = &mut blocks[..p / QK];
                quantize_q8_0_activations(r, blocks);
                out[..std::mem::size_of_val(blocks)].copy_from_slice(bytemuck::cast_slice(blocks));
            }
            KvDType::Q4_0 => {
                let mut blocks = [BlockQ4_0 { d: f16::ZERO, qs: [0; QK / 2] }; MAX_KV_DIM / QK];
                let blocks = &mut blocks[..p / QK];
                quantize_q4_0(r, blocks);
                out[..std::mem::size_of_val(blocks)].copy_from_slice(bytemuck::cast_slice(blocks));
            }
            KvDType::Tq4 | KvDType::Tq3 | KvDType::Tq2 => {
                let bits = self.tq_bits().expect("a TurboQuant type");
                tq::quantize(r, bits, rotation::block_for(p), self.codebook(p), out);
            }
        }
    }

    /// The head of `out.len()` values that `bytes` holds (the inverse of [`store`](Self::store)
    /// up to rounding: dequantised and rotated back).
    pub fn load(self, bytes: &[u8], out: &mut [f32]) {
        let p = self.padded(out.len());
        let mut buf = [0.0f32; MAX_KV_DIM];
        let r = &mut buf[..p];
        self.accumulate(1.0, bytes, r);
        if self.rotated() {
            rotation::unrotate(r);
        }
        out.copy_from_slice(&r[..out.len()]);
    }

    /// `acc += a * value` for a stored head, `acc` padded and (for rotated types) rotated.
    pub fn accumulate(self, a: f32, bytes: &[u8], acc: &mut [f32]) {
        let dim = acc.len();
        ValueReader::new(KvPart { dtype: self, dim }).accumulate(a, bytes, acc)
    }
}

/// A part resolved for the kernels once, before a head's positions are walked.
#[derive(Debug, Clone, Copy)]
struct PartReader {
    dtype: KvDType,
    dim: usize,
    padded: usize,
    bytes: usize,
    block: usize,
    bits: u32,
    book: Option<&'static Codebook>,
}

impl PartReader {
    fn new(p: KvPart) -> Self {
        let padded = p.dtype.padded(p.dim);
        let (bits, book) = match p.dtype.tq_bits() {
            Some(bits) => (bits, Some(p.dtype.codebook(padded))),
            None => (0, None),
        };
        let block = if p.dtype.rotated() { rotation::block_for(padded) } else { 0 };
        Self { dtype: p.dtype, dim: p.dim, padded, bytes: part_bytes(&p), block, bits, book }
    }
}

/// Sums stored values of one type into a padded accumulator: the part and the kernels
/// resolved once per head.
#[derive(Debug, Clone, Copy)]
pub struct ValueReader {
    part: PartReader,
    dots: &'static DotKernels,
    kv: &'static KvKernels,
}

impl ValueReader {
    /// A reader of values stored as `part`.
    pub fn new(part: KvPart) -> Self {
        Self { part: PartReader::new(part), dots: crate::dot::kernels(), kv: kv_kernels() }
    }

    /// `acc += a * value` (`acc` is the part's padded width, rotated for rotated types).
    #[inline]
    pub fn accumulate(&self, a: f32, bytes: &[u8], acc: &mut [f32]) {
        let p = &self.part;
        let acc = &mut acc[..p.padded];
        match p.dtype {
            KvDType::F32 => {
                (self.dots.axpy_f32)(a, bytemuck::cast_slice(&bytes[..4 * p.padded]), acc)
            }
            KvDType::F16 => {
                (self.dots.axpy_f16)(a, bytemuck::cast_slice(&bytes[..2 * p.padded]), acc)
            }
            KvDType::Q8_0 => {
                let blocks = bytemuck::cast_slice(&bytes[..p.padded / QK * 34]);
                (self.kv.q8_0_axpy)(a, blocks, acc)
            }
            KvDType::Q4_0 => {
                let blocks = bytemuck::cast_slice(&bytes[..p.padded / QK * 18]);
                (self.kv.q4_0_axpy)(a, blocks, acc)
            }
            KvDType::Tq4 | KvDType::Tq3 | KvDType::Tq2 => {
                let book = p.book.expect("a TurboQuant part has its codebook");
                (self.kv.tq_axpy)(a, &bytes[..p.bytes], p.bits, p.block, book, acc)
            }
        }
    }
}

/// One part of a cached row: `dim` values of `dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvPart {
    /// Storage type.
    pub dtype: KvDType,
    /// Values (before padding).
    pub dim: usize,
}

/// A cached row: one part (a key or value head) or two (MLA's latent, then its RoPE key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvFormat {
    parts: [KvPart; 2],
    len: usize,
}

impl KvFormat {
    /// A row of one part, or None if `dtype` cannot hold `dim` values.
    pub fn one(dtype: KvDType, dim: usize) -> Option<Self> {
        dtype.head_bytes(dim)?;
        Some(Self { parts: [KvPart { dtype, dim }; 2], len: 1 })
    }

    /// A row of two parts, or None if either type cannot hold its part or the padded row is
    /// wider than [`MAX_KV_DIM`].
    pub fn two(a: KvPart, b: KvPart) -> Option<Self> {
        a.dtype.head_bytes(a.dim)?;
        b.dtype.head_bytes(b.dim)?;
        let f = Self { parts: [a, b], len: 2 };
        (f.padded_dim() <= MAX_KV_DIM).then_some(f)
    }

    /// The parts, in storage order.
    pub fn parts(&self) -> &[KvPart] {
        &self.parts[..self.len]
    }

    /// The first part alone (what an MLA row holds as its value).
    pub fn first(&self) -> Self {
        Self { parts: [self.parts[0]; 2], len: 1 }
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.parts().iter().map(|p| p.dim).sum()
    }

    /// Values per row once each part is padded.
    pub fn padded_dim(&self) -> usize {
        self.parts().iter().map(|p| p.dtype.padded(p.dim)).sum()
    }

    /// Bytes part `i` spans in a row: its own bytes, rounded up to 4 in a two-part row so an
    /// f32 part after it (and the next row) stays aligned. A one-part row is its part's bytes,
    /// which every type keeps aligned for itself.
    fn span(&self, i: usize) -> usize {
        let b = part_bytes(&self.parts[i]);
        if self.len == 2 {
            b.next_multiple_of(4)
        } else {
            b
        }
    }

    /// Bytes per row.
    pub fn bytes(&self) -> usize {
        (0..self.len).map(|i| self.span(i)).sum()
    }

    /// Stores row `x` (`dim()` values) into `out` (`bytes()` bytes).
    pub fn store(&self, x: &[f32], out: &mut [u8]) {
        let (mut xi, mut oi) = (0, 0);
        for (i, p) in self.parts().iter().enumerate() {
            let b = part_bytes(p);
            p.dtype.store(&x[xi..xi + p.dim], &mut out[oi..oi + b]);
            (xi, oi) = (xi + p.dim, oi + self.span(i));
        }
    }

    /// The row `bytes` holds, into `out` (`dim()` values).
    pub fn load(&self, bytes: &[u8], out: &mut [f32]) {
        let (mut xi, mut oi) = (0, 0);
        for (i, p) in self.parts().iter().enumerate() {
            let b = part_bytes(p);
            p.dtype.load(&bytes[oi..oi + b], &mut out[xi..xi + p.dim]);
            (xi, oi) = (xi + p.dim, oi + self.span(i));
        }
    }
}

fn part_bytes(p: &KvPart) -> usize {
    p.dtype.head_bytes(p.dim).expect("checked when the format was made")
}

/// Reads the rows of one format for attention: a query is padded and rotated into the
/// format's space once, each cached row is decoded once into f32 in that space, and then
/// scored against (or summed for) every query head that shares it. The part readers and
/// kernels are resolved once, before a head group's positions are walked.
#[derive(Debug, Clone, Copy)]
pub struct RowReader {
    parts: [ValueReader; 2],
    /// Bytes from each part's start to the next's.
    spans: [usize; 2],
    len: usize,
    padded: usize,
}

impl RowReader {
    /// A reader of rows of `format`.
    pub fn new(format: KvFormat) -> Self {
        let reader = |i: usize| ValueReader::new(format.parts[i.min(format.len - 1)]);
        Self {
            parts: [reader(0), reader(1)],
            spans: [format.span(0), format.span(1.min(format.len - 1))],
            len: format.len,
            padded: format.padded_dim(),
        }
    }

    /// Values of a decoded row (each part padded).
    pub fn padded_dim(&self) -> usize {
        self.padded
    }

    fn parts(&self) -> &[ValueReader] {
        &self.parts[..self.len]
    }

    /// `q` (the format's `dim()` values) padded and rotated as the rows are, into `out`
    /// (`padded_dim()` values).
    pub fn prepare_query(&self, q: &[f32], out: &mut [f32]) {
        let (mut qi, mut ri) = (0, 0);
        for r in self.parts() {
            let (dim, pd) = (r.part.dim, r.part.padded);
            let o = &mut out[ri..ri + pd];
            o[..dim].copy_from_slice(&q[qi..qi + dim]);
            o[dim..].fill(0.0);
            if r.part.dtype.rotated() {
                rotation::rotate(o);
            }
            (qi, ri) = (qi + dim, ri + pd);
        }
    }

    /// The row `bytes` holds as f32 in the padded, rotated space: the bytes themselves for an
    /// f32 row, else decoded into `buf` (`padded_dim()` values).
    #[inline]
    pub fn decode<'a>(&self, bytes: &'a [u8], buf: &'a mut [f32]) -> &'a [f32] {
        if self.len == 1 && self.parts[0].part.dtype == KvDType::F32 {
            return bytemuck::cast_slice(&bytes[..4 * self.padded]);
        }
        let (mut ri, mut oi) = (0, 0);
        for (r, span) in self.parts().iter().zip(self.spans) {
            let o = &mut buf[ri..ri + r.part.padded];
            o.fill(0.0);
            r.accumulate(1.0, &bytes[oi..oi + r.part.bytes], o);
            (ri, oi) = (ri + r.part.padded, oi + span);
        }
        &buf[..self.padded]
    }

    /// Takes a sum of decoded rows back out of the rotated space (each rotated part), in place.
    pub fn unrotate(&self, acc: &mut [f32]) {
        let mut ri = 0;
        for r in self.parts() {
            let o = &mut acc[ri..ri + r.part.padded];
            if r.part.dtype.rotated() {
                rotation::unrotate(o);
            }
            ri += r.part.padded;
        }
    }

    /// Copies the unpadded values of a padded row into `out` (`dim()` values).
    pub fn unpad(&self, padded: &[f32], out: &mut [f32]) {
        let (mut ri, mut oi) = (0, 0);
        for r in self.parts() {
            out[oi..oi + r.part.dim].copy_from_slice(&padded[ri..ri + r.part.dim]);
            (ri, oi) = (ri + r.part.padded, oi + r.part.dim);
        }
    }
}
