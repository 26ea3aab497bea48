//! Matrix-vector (decode) and matrix-matrix (prefill) products for every weight format,
//! parallel over output rows on a thread pool made once.

use half::{bf16, f16};

use crate::dot::{DotKernels, Isa};
use crate::dtype::DType;
use crate::error::KernelError;
use crate::quant::{
    deinterleave_block, q8_sums, quantize_q8_0_activations, quantize_q8_1_activations,
    quantize_q8_k, BlockQ4_0, BlockQ4_0x8, BlockQ8K, BlockQ8_0, BlockQ8_1, Q8Sum, QK, QK_K, ROWS8,
};
use crate::traits::{ActForm, RawDot, RawDotRows};

/// Rows handed to one task: big enough to amortise scheduling, small enough to balance.
pub(crate) const ROWS_PER_TASK: usize = 16;

/// Most tokens one call of the many-token row kernels takes (their pointers live on the stack).
pub(crate) const TOKEN_BLOCK: usize = 64;

/// How far ahead of the rows being computed the weights are prefetched, in bytes. Measured on
/// the 2048x768 Q4_0 matvec, single thread, 1 GiB working set, against a plain read of the same
/// bytes in the same run: no prefetch 48-49 %, 4 KiB ahead into L1 54-56 %, 8-16 KiB ahead into
/// L2 66-71 %. Into L2 because L1 has only ~10 fill buffers: a burst of L1 prefetches stalls
/// the loads the kernel needs now.
const PREFETCH_AHEAD: usize = 12 << 10;

/// How far ahead of the row in hand the one-row-at-a-time kernels' weights are prefetched into
/// L1, in bytes: a steady stream a row's lines at a time, not a burst.
const STREAM_AHEAD: usize = 2 << 10;

/// A weight matrix in one of the supported formats: `rows` rows of `cols` values, row-major,
/// borrowed from wherever the bytes live (an arena slot, a mapped file, a Vec).
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    dtype: DType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: &'a [u8],
    /// Whole groups of eight rows are interleaved ([`BlockQ4_0x8`]); the tail rows are plain.
    interleaved: bool,
}

impl<'a> Matrix<'a> {
    /// Checks that `data` holds exactly `rows x cols` values of `dtype`, suitably aligned.
    pub fn new(
        dtype: DType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, KernelError> {
        let row_bytes = dtype.row_bytes(cols)?;
        let expected = rows.saturating_mul(row_bytes);
        if data.len() != expected {
            return Err(KernelError::Size {
                what: "weights",
                dtype,
                rows,
                cols,
                expected,
                found: data.len(),
            });
        }
        let align = match dtype {
            DType::F32 => 4,
            _ => 2,
        };
        if !(data.as_ptr() as usize).is_multiple_of(align) {
            return Err(KernelError::Shape(format!(
                "{dtype} weights must be {align}-byte aligned"
            )));
        }
        Ok(Self { dtype, rows, cols, row_bytes, data, interleaved: false })
    }

    /// The same matrix, its bytes read as rewritten by [`crate::quant::interleave_q4_0`]
    /// (Q4_0 only).
    pub fn interleaved8(self) -> Result<Self, KernelError> {
        if self.dtype != DType::Q4_0 {
            return Err(KernelError::Shape(format!(
                "only Q4_0 rows are interleaved, not {}",
                self.dtype
            )));
        }
        Ok(Self { interleaved: true, ..self })
    }

    /// Whether whole groups of eight rows are interleaved.
    pub fn is_interleaved(&self) -> bool {
        self.interleaved
    }

    /// Element format.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Output size.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input size.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The raw bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    fn row(&self, r: usize) -> std::borrow::Cow<'a, [u8]> {
        let bytes = &self.data[r * self.row_bytes..(r + 1) * self.row_bytes];
        if !self.interleaved || r >= self.rows / ROWS8 * ROWS8 {
            return bytes.into();
        }
        // A row of an interleaved group, put back together (the exact reference mode's path).
        let group = &self.data[r / ROWS8 * ROWS8 * self.row_bytes..][..ROWS8 * self.row_bytes];
        let blocks: Vec<BlockQ4_0> = bytemuck::cast_slice::<u8, BlockQ4_0x8>(group)
            .iter()
            .map(|g| deinterleave_block(g, r % ROWS8))
            .collect();
        bytemuck::cast_slice(&blocks).to_vec().into()
    }

    /// Whole interleaved groups from row `first` (a multiple of eight) into `out` (rows x
    /// tokens), four tokens at a time where the kernels can, then the plain tail rows. `given`
    /// are the tokens' activation sums if the caller has them (else empty).
    fn rows8_into(
        &self,
        k: &DotKernels,
        first: usize,
        (qs, given): (&[&[BlockQ8_0]], &[Q8Sum]),
        out: &mut [f32],
    ) {
        debug_assert!(first.is_multiple_of(ROWS8));
        let kernel = k.q4_0_rows8.expect("interleaved matrices run where the kernel is");
        let nb = self.cols / QK;
        let tokens = qs.len();
        let end = first + out.len() / tokens;
        let grouped_end = end.min(self.rows / ROWS8 * ROWS8);
        let all: &[BlockQ4_0x8] =
            bytemuck::cast_slice(&self.data[..self.rows / ROWS8 * ROWS8 * self.row_bytes]);
        // The sums on the stack when the caller has none and they fit (a lone product).
        // (Filled only on that path: zeroing it on every call showed in decode profiles.)
        const ON_STACK: usize = 256;
        let mut stack;
        let owned: Vec<Q8Sum>;
        let sums: &[Q8Sum] = if given.len() == tokens * nb {
            given
        } else if tokens * nb <= ON_STACK {
            stack = [Q8Sum::default(); ON_STACK];
            for (t, q) in qs.iter().enumerate() {
                q8_sums(q, &mut stack[t * nb..(t + 1) * nb]);
            }
            &stack[..tokens * nb]
        } else {
            let mut v = vec![Q8Sum::default(); tokens * nb];
            for (t, q) in qs.iter().enumerate() {
                q8_sums(q, &mut v[t * nb..(t + 1) * nb]);
            }
            owned = v;
            &owned
        };
        let sum = |t: usize| &sums[t * nb..(t + 1) * nb];
        for g in first / ROWS8..grouped_end / ROWS8 {
            let w = &all[g * nb..(g + 1) * nb];
            let mut put = |t: usize, acc: &[f32; ROWS8]| {
                for (r, v) in acc.iter().enumerate() {
                    out[(g * ROWS8 + r - first) * tokens + t] = *v;
                }
            };
            let mut t = 0;
            if let Some(x4) = k.q4_0_rows8_x4 {
                while t + 4 <= tokens {
                    let mut acc = [[0.0f32; ROWS8]; 4];
                    let x = [qs[t], qs[t + 1], qs[t + 2], qs[t + 3]];
                    x4(w, x, [sum(t), sum(t + 1), sum(t + 2), sum(t + 3)], &mut acc);
                    for (i, a) in acc.iter().enumerate() {
                        put(t + i, a);
                    }
                    t += 4;
                }
            }
            for (t, q) in qs.iter().enumerate().skip(t) {
                let mut acc = [0.0f32; ROWS8];
                kernel(w, q, sum(t), &mut acc);
                put(t, &acc);
            }
        }
        for r in grouped_end..end {
            let row: &[BlockQ4_0] =
                bytemuck::cast_slice(&self.data[r * self.row_bytes..][..self.row_bytes]);
            for (t, q) in qs.iter().enumerate() {
                out[(r - first) * tokens + t] = (k.q4_0)(row, q);
            }
        }
    }

    /// Rows `first..first + out.len()` against prepared activations: block formats four rows
    /// at a time, with the matrix cast to blocks once. `sums` are the Q8_0 activations'
    /// [`Q8Sum`]s if the caller has them (else empty).
    pub(crate) fn rows_into(
        &self,
        k: &DotKernels,
        first: usize,
        (x, sums): (&Prepared, &[Q8Sum]),
        out: &mut [f32],
    ) {
        if let (true, Some(_), Prepared::Q8(q)) = (self.interleaved, k.q4_0_rows8, x) {
            return self.rows8_into(k, first, (&[q], sums), out);
        }
        match (self.dtype, x) {
            _ if self.interleaved => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = dot_row(k, self.dtype, &self.row(first + i), x);
                }
            }
            (DType::Q8_0, Prepared::Q8(q)) => {
                let blocks: &[BlockQ8_0] = bytemuck::cast_slice(self.data);
                let burst = !k.x4_prefetches;
                rows_x4(blocks, q.len(), first, out, (k.q8_0_x4, k.q8_0), q, burst);
            }
            (DType::Q4_0, Prepared::Q8(q)) => {
                let blocks: &[BlockQ4_0] = bytemuck::cast_slice(self.data);
                let burst = !k.x4_prefetches;
                rows_x4(blocks, q.len(), first, out, (k.q4_0_x4, k.q4_0), q, burst);
            }
            _ => {
                // The kernel is the same for every row: looked up once, not per row (for short
                // rows of the super-block types the lookup was a visible share of decode).
                let bytes = &self.data[first * self.row_bytes..][..out.len() * self.row_bytes];
                if let Some(many) = table_rows(k, self.dtype, x) {
                    // The rows share their activation work.
                    return many(bytes, x, out);
                }
                let table = table_dot(k, self.dtype, x);
                for (o, row) in out.iter_mut().zip(bytes.chunks_exact(self.row_bytes)) {
                    // The rows are one sequential stream, yet on Intel the hardware prefetcher
                    // alone leaves these kernels waiting on DRAM (measured by the kernels
                    // bench); a burst per row measured slower on an AMD EPYC, this stream is
                    // not measured there.
                    let ahead = row.as_ptr() as usize + STREAM_AHEAD;
                    prefetch_range::<{ HINT_L1 }>(ahead, row.len());
                    *o = match table {
                        Some(dot) => dot(row, x),
                        None => dot_row(k, self.dtype, row, x),
                    };
                }
            }
        }
    }

    /// Rows `first..` against every token's prepared activations (at most [`TOKEN_BLOCK`]),
    /// into `out` (rows x tokens, row-major): block formats four rows at a time, the four rows
    /// staying in L1 while every token passes over them (the same grouping as
    /// [`Self::rows_into`], so each output equals matvec's bit for bit).
    pub(crate) fn rows_tokens_into(
        &self,
        k: &DotKernels,
        first: usize,
        (xs, sums): (&[Prepared], &[Q8Sum]),
        out: &mut [f32],
    ) {
        let n = xs.len();
        assert!(n <= TOKEN_BLOCK, "{n} tokens in one block");
        let mut q8: [&[BlockQ8_0]; TOKEN_BLOCK] = [&[]; TOKEN_BLOCK];
        let mut all_q8 = true;
        for (t, x) in xs.iter().enumerate() {
            match x {
                Prepared::Q8(q) => q8[t] = q,
                _ => all_q8 = false,
            }
        }
        let q8 = &q8[..n];
        match self.dtype {
            _ if all_q8 && self.interleaved && k.q4_0_rows8.is_some() => {
                self.rows8_into(k, first, (q8, sums), out);
            }
            _ if self.interleaved => {
                for (i, row_out) in out.chunks_mut(n).enumerate() {
                    let row = self.row(first + i);
                    for (o, x) in row_out.iter_mut().zip(xs) {
                        *o = dot_row(k, self.dtype, &row, x);
                    }
                }
            }
            DType::Q8_0 if all_q8 => {
                let blocks: &[BlockQ8_0] = bytemuck::cast_slice(self.data);
                rows_x4_tokens(blocks, first, out, (k.q8_0_x4, k.q8_0), q8);
            }
            DType::Q4_0 if all_q8 => {
                let blocks: &[BlockQ4_0] = bytemuck::cast_slice(self.data);
                rows_x4_tokens(blocks, first, out, (k.q4_0_x4, k.q4_0), q8);
            }
            _ => {
                // Tokens outer: the task's rows stay in L2 while each token, in L1, passes over
                // them (rows outer would stream every token from further away once per row).
                let rows = out.len() / n.max(1);
                for (t, x) in xs.iter().enumerate() {
                    for i in 0..rows {
                        out[i * n + t] = dot_row(k, self.dtype, &self.row(first + i), x);
                    }
                }
            }
        }
    }
}

/// A four-row kernel and its one-row twin for the remainder.
type RowKernels<B> = (fn([&[B]; 4], &[BlockQ8_0]) -> [f32; 4], fn(&[B], &[BlockQ8_0]) -> f32);

/// Rows of a block matrix against several tokens (`qs`, one activation vector each), into `out`
/// (rows x tokens): four rows at a time, each group applied to every token, then one by one.
fn rows_x4_tokens<B>(
    blocks: &[B],
    first: usize,
    out: &mut [f32],
    (x4, x1): RowKernels<B>,
    qs: &[&[BlockQ8_0]],
) {
    let n = qs.len();
    let per_row = qs.first().map_or(0, |q| q.len());
    let row = |r: usize| &blocks[r * per_row..(r + 1) * per_row];
    let mut groups = out.chunks_exact_mut(4 * n);
    let mut r = first;
    for g in &mut groups {
        let rows = [row(r), row(r + 1), row(r + 2), row(r + 3)];
        for (t, q) in qs.iter().enumerate() {
            for (j, v) in x4(rows, q).into_iter().enumerate() {
                g[j * n + t] = v;
            }
        }
        r += 4;
    }
    for o in groups.into_remainder().chunks_mut(n) {
        for (v, q) in o.iter_mut().zip(qs) {
            *v = x1(row(r), q);
        }
        r += 1;
    }
}

/// Rows of a block matrix (`per_row` blocks each), four at a time, then one by one.
fn rows_x4<B>(
    blocks: &[B],
    per_row: usize,
    first: usize,
    out: &mut [f32],
    (x4, x1): RowKernels<B>,
    q: &[BlockQ8_0],
    burst_prefetch: bool,
) {
    let row = |r: usize| &blocks[r * per_row..(r + 1) * per_row];
    let group_bytes = 4 * per_row * std::mem::size_of::<B>();
    let end = blocks.as_ptr_range().end as usize;
    let mut chunks = out.chunks_exact_mut(4);
    let mut r = first;
    for o in &mut chunks {
        // Rows are short (a few hundred bytes to a few KiB): ask for bytes PREFETCH_AHEAD on now,
        // so they stream in while this group computes (measured: the hardware prefetcher alone
        // leaves the quantised kernels waiting on DRAM).
        if burst_prefetch {
            let next = row(r).as_ptr() as usize + group_bytes + PREFETCH_AHEAD;
            prefetch_range::<{ HINT_L2 }>(next, group_bytes.min(end.saturating_sub(next)));
        }
        o.copy_from_slice(&x4([row(r), row(r + 1), row(r + 2), row(r + 3)], q));
        r += 4;
    }
    for o in chunks.into_remainder() {
        *o = x1(row(r), q);
        r += 1;
    }
}

/// [`prefetch_range`] into L1 (`PREFETCHT0`) and into L2 (`PREFETCHT2`).
#[cfg(target_arch = "x86_64")]
const HINT_L1: i32 = std::arch::x86_64::_MM_HINT_T0;
#[cfg(target_arch = "x86_64")]
const HINT_L2: i32 = std::arch::x86_64::_MM_HINT_T2;
#[cfg(not(target_arch = "x86_64"))]
const HINT_L1: i32 = 0;
#[cfg(not(target_arch = "x86_64"))]
const HINT_L2: i32 = 0;

/// Hints the CPU to fetch `len` bytes from `addr` into the cache level `HINT` names. Never
/// faults: prefetches of any address are architecturally harmless.
#[inline]
fn prefetch_range<const HINT: i32>(addr: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        // SAFETY: PREFETCHh does not access memory architecturally and cannot fault, whatever
        // the address; SSE is part of the x86_64 baseline.
        unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(addr.wrapping_add(off) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (addr, len);
}

/// How activations meet Q8_0/Q4_0 weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuantActivations {
    /// Quantised to Q8_0 per 32-block for integer dot products, as llama.cpp does (fast; the
    /// default).
    #[default]
    Q8_0,
    /// Kept f32, against dequantised weights (exact reference mode; scalar, slow).
    F32,
}

/// The activations prepared for one weight format, in the form its type-table row names: f32
/// as is, Q8_0, Q8_1 or Q8_K blocks.
#[derive(Clone, Copy)]
pub(crate) enum Prepared<'x> {
    F32(&'x [f32]),
    Q8(&'x [BlockQ8_0]),
    Q8_1(&'x [BlockQ8_1]),
    Q8K(&'x [BlockQ8K]),
}

/// Which representation of the activations a weight format reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    F32,
    Q8,
    Q8_1,
    Q8K,
}

pub(crate) fn form(dtype: DType, mode: QuantActivations) -> Form {
    if mode == QuantActivations::F32 {
        return Form::F32;
    }
    match dtype.traits().act {
        ActForm::F32 => Form::F32,
        ActForm::Q8_0 => Form::Q8,
        ActForm::Q8_1 => Form::Q8_1,
        ActForm::Q8K => Form::Q8K,
    }
}

/// One weight row of `dtype` (its raw bytes) dotted with `x` the way matvec does it on `isa`'s
/// kernels: `x` quantised to the activation form the type reads, then the type's dot product.
/// For tests and tools that compare single dot products with another implementation's.
pub fn dot_row_on(isa: Isa, dtype: DType, row: &[u8], x: &[f32]) -> Result<f32, KernelError> {
    let k = DotKernels::for_isa(isa).ok_or(KernelError::IsaUnsupported(isa.name()))?;
    Matrix::new(dtype, 1, x.len(), row)?;
    let blocks = |n: usize| x.len() / n;
    let (mut q8, mut q8_1, mut q8k): (Vec<BlockQ8_0>, Vec<BlockQ8_1>, Vec<BlockQ8K>);
    let prepared = match form(dtype, QuantActivations::default()) {
        Form::F32 => Prepared::F32(x),
        Form::Q8 => {
            q8 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; blocks(QK)];
            quantize_q8_0_activations(x, &mut q8);
            Prepared::Q8(&q8)
        }
        Form::Q8_1 => {
            q8_1 = vec![BlockQ8_1::ZERO; blocks(QK)];
            quantize_q8_1_activations(x, &mut q8_1);
            Prepared::Q8_1(&q8_1)
        }
        Form::Q8K => {
            if !x.len().is_multiple_of(QK_K) {
                return Err(KernelError::RowNotBlockAligned { dtype, block: QK_K, cols: x.len() });
            }
            q8k = vec![BlockQ8K::ZERO; blocks(QK_K)];
            quantize_q8_k(x, &mut q8k);
            Prepared::Q8K(&q8k)
        }
    };
    Ok(dot_row(&k, dtype, row, &prepared))
}

fn dot_row(k: &DotKernels, dtype: DType, row: &[u8], x: &Prepared) -> f32 {
    match (dtype, x) {
        (DType::F32, Prepared::F32(x)) => (k.f32)(bytemuck::cast_slice(row), x),
        (DType::F16, Prepared::F32(x)) => (k.f16)(bytemuck::cast_slice::<u8, f16>(row), x),
        (DType::Bf16, Prepared::F32(x)) => (k.bf16)(bytemuck::cast_slice::<u8, bf16>(row), x),
        (DType::Q8_0, Prepared::Q8(q)) => (k.q8_0)(bytemuck::cast_slice::<u8, BlockQ8_0>(row), q),
        (DType::Q4_0, Prepared::Q8(q)) => (k.q4_0)(bytemuck::cast_slice::<u8, BlockQ4_0>(row), q),
        (DType::Mxfp4, Prepared::Q8(q)) => (k.mxfp4)(bytemuck::cast_slice(row), q),
        (DType::Q4K, Prepared::Q8K(q)) => (k.q4_k)(bytemuck::cast_slice(row), q),
        (DType::Q5K, Prepared::Q8K(q)) => (k.q5_k)(bytemuck::cast_slice(row), q),
        (DType::Q6K, Prepared::Q8K(q)) => (k.q6_k)(bytemuck::cast_slice(row), q),
        (_, Prepared::F32(x)) if dtype.is_block() => {
            // Quantised weights against f32 activations: the exact reference mode.
            let mut w = vec![0.0f32; x.len()];
            dtype.dequantize(row, &mut w).expect("Matrix::new checked the row size and alignment");
            (k.f32)(&w, x)
        }
        _ => table_dot(k, dtype, x).expect("prepare() matches the activation form to the dtype")(
            row, x,
        ),
    }
}

/// The many-row kernel of a table type on this machine, where it has one.
fn table_rows(k: &DotKernels, dtype: DType, x: &Prepared) -> Option<RawDotRows> {
    table_dot(k, dtype, x)?;
    dtype.traits().dots.and_then(|d| d.rows_for_isa(k.table_isa))
}

/// The type table's kernel for rows of `dtype` against `x`, where [`dot_row`] takes it from
/// the table (rather than from [`DotKernels`] or the exact f32 reference path).
fn table_dot(k: &DotKernels, dtype: DType, x: &Prepared) -> Option<RawDot> {
    match (dtype, x) {
        (DType::F32 | DType::F16 | DType::Bf16, _) | (_, Prepared::F32(_)) => None,
        (DType::Q8_0 | DType::Q4_0 | DType::Mxfp4, Prepared::Q8(_)) => None,
        (DType::Q4K | DType::Q5K | DType::Q6K, Prepared::Q8K(_)) => None,
        _ => dtype.traits().dots.map(|d| d.for_isa(k.table_isa)),
    }
}
