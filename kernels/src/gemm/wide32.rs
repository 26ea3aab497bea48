//! Prefill GEMM for the types of 32-value blocks with one f16 scale and an offset (Q8_0, Q4_0,
//! Q5_0) as outer products on AVX-512 VNNI, as `wide.rs` does for the super-block types: 8
//! weight rows x 16 tokens per pass, each row's 4 codes broadcast against 4 values of 16 tokens
//! in one `vpdpbusd`. Per block, the exact i32 sum less the codes' offset times the activations'
//! sum is scaled by the two blocks' scales in f32, as llama.cpp's tinyBLAS does per block. Every
//! output depends on its own row and token only; it rounds differently from matvec (not exact).
//! The types with a minimum (Q4_1, Q5_1) have no tile: llama.cpp runs them through its dot
//! products for prompts too, and floe matches it by doing the same.

use std::arch::x86_64::*;

use crate::quant::{BlockQ4_0, BlockQ5_0, BlockQ8_0, QK};

use super::wide::Lanes;
use super::RowsOut;

/// Tokens per pass.
const BAND: usize = 16;
/// Groups of 4 values per block.
const GROUPS: usize = QK / 4;

/// One block of one weight row, unpacked.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct BlockRow {
    /// The 32 codes, unsigned, in value order.
    q: [u8; QK],
    d: f32,
}

const _: () = assert!(std::mem::size_of::<BlockRow>() == 64);

impl BlockRow {
    const ZERO: BlockRow = BlockRow { q: [0; QK], d: 0.0 };
}

/// A block type these passes can read.
pub(crate) trait Block32: Copy {
    /// log2 of the offset added to make the codes unsigned.
    const BIAS_SHIFT: u32;
    fn unpack(&self, out: &mut BlockRow);
}

impl Block32 for BlockQ8_0 {
    const BIAS_SHIFT: u32 = 7;
    fn unpack(&self, out: &mut BlockRow) {
        for (q, &c) in out.q.iter_mut().zip(&self.qs) {
            *q = (c as u8) ^ 0x80;
        }
        out.d = self.d.to_f32();
    }
}

/// Value `j` of a block with nibbles `qs` (value j low, value j + 16 high).
fn nibble(qs: &[u8; QK / 2], j: usize) -> u8 {
    if j < QK / 2 {
        qs[j] & 0x0F
    } else {
        qs[j - QK / 2] >> 4
    }
}

impl Block32 for BlockQ4_0 {
    const BIAS_SHIFT: u32 = 3;
    fn unpack(&self, out: &mut BlockRow) {
        out.q = std::array::from_fn(|j| nibble(&self.qs, j));
        out.d = self.d.to_f32();
    }
}

impl Block32 for BlockQ5_0 {
    const BIAS_SHIFT: u32 = 4;
    fn unpack(&self, out: &mut BlockRow) {
        out.q = crate::quant::q5_0::codes5(self.qh, &self.qs);
        out.d = self.d.to_f32();
    }
}

/// Every token's Q8_0 activations for the outer products: per band of 16 tokens and block, each
/// group of 4 values as 16 tokens x 4 bytes, then the 16 tokens' code sums (i32) and scales
/// (f32). A band's missing tokens are zeros.
#[derive(Default)]
pub(crate) struct Wide32Acts {
    /// Per band and block: `GROUPS` code lanes, then sums and scales.
    lanes: Vec<Lanes>,
    /// Tokens packed.
    pub(crate) tokens: usize,
    /// Blocks per token.
    pub(crate) blocks: usize,
}

const PER_BLOCK: usize = GROUPS + 2;

impl Wide32Acts {
    /// Packs `n` tokens of `blocks` Q8_0 blocks each, reusing the buffer.
    pub(crate) fn pack_into(&mut self, xs: &[BlockQ8_0], blocks: usize) {
        let n = xs.len() / blocks.max(1);
        let bands = n.div_ceil(BAND);
        self.lanes.clear();
        self.lanes.resize(bands * blocks * PER_BLOCK, Lanes([0; 64]));
        for t in 0..n {
            let (band, lane) = (t / BAND, t % BAND);
            for b in 0..blocks {
                let x = &xs[t * blocks + b];
                let at = &mut self.lanes[(band * blocks + b) * PER_BLOCK..][..PER_BLOCK];
                for (g, l) in at[..GROUPS].iter_mut().enumerate() {
                    for (o, &v) in l.0[4 * lane..4 * lane + 4].iter_mut().zip(&x.qs[4 * g..]) {
                        *o = v as u8;
                    }
                }
                let sum: i32 = x.qs.iter().map(|&v| v as i32).sum();
                let put = |l: &mut Lanes, bytes: [u8; 4]| {
                    l.0[4 * lane..4 * lane + 4].copy_from_slice(&bytes);
                };
                put(&mut at[GROUPS], sum.to_le_bytes());
                put(&mut at[GROUPS + 1], x.d.to_f32().to_le_bytes());
            }
        }
        (self.tokens, self.blocks) = (n, blocks);
    }
}

/// `RM` rows against band `band`: each row's 16 outputs.
#[inline]
#[allow(clippy::needless_range_loop)] // rows, blocks and groups index several arrays alike
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn block_pass<B: Block32, const RM: usize>(
    rows: [&[BlockRow]; RM],
    x: &Wide32Acts,
    band: usize,
) -> [[f32; BAND]; RM] {
    let zero = _mm512_setzero_si512();
    let mut facc = [_mm512_setzero_ps(); RM];
    for b in 0..x.blocks {
        let lanes = &x.lanes[(band * x.blocks + b) * PER_BLOCK..][..PER_BLOCK];
        let load = |l: &Lanes| {
            // SAFETY: a Lanes is 64 aligned bytes.
            unsafe { _mm512_load_si512(l.0.as_ptr() as *const _) }
        };
        let mut acc = [zero; RM];
        for g in 0..GROUPS {
            let a = load(&lanes[g]);
            for r in 0..RM {
                let w = &rows[r][b].q;
                // SAFETY: 4g + 4 <= 32 = q's length; an unaligned 4-byte read.
                let w4 = unsafe { (w.as_ptr().add(4 * g) as *const i32).read_unaligned() };
                acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(w4), a);
            }
        }
        let dy = _mm512_castsi512_ps(load(&lanes[GROUPS + 1]));
        let shift = _mm512_set1_epi32(B::BIAS_SHIFT as i32);
        let offset = _mm512_sllv_epi32(load(&lanes[GROUPS]), shift);
        for r in 0..RM {
            let w = &rows[r][b];
            let raw = _mm512_sub_epi32(acc[r], offset);
            let d = _mm512_mul_ps(_mm512_set1_ps(w.d), dy);
            facc[r] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(raw), facc[r]);
        }
    }
    let mut out = [[0.0; BAND]; RM];
    for (o, v) in out.iter_mut().zip(facc) {
        // SAFETY: 16 f32 lanes into 16 f32s.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    }
    out
}

/// Rows `first..first + m` of a matrix of `B` (`per_row` blocks each) against every packed
/// token, into `out`.
pub(crate) fn block_rows<B: Block32>(
    w: &[B],
    first: usize,
    m: usize,
    x: &Wide32Acts,
    per_row: usize,
    out: &RowsOut,
) {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<BlockRow>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    assert_eq!(x.blocks, per_row, "activations packed for another width");
    let n = x.tokens;
    ROWS.with_borrow_mut(|unpacked| {
        unpacked.clear();
        unpacked.resize(m * per_row, BlockRow::ZERO);
        for (src, dst) in w[first * per_row..(first + m) * per_row].iter().zip(unpacked.iter_mut())
        {
            src.unpack(dst);
        }
        let row = |r: usize| &unpacked[r * per_row..(r + 1) * per_row];
        for band in 0..n.div_ceil(BAND) {
            let tokens = (n - band * BAND).min(BAND);
            let mut r0 = 0;
            while r0 < m {
                macro_rules! go {
                    ($rm:literal) => {{
                        let rows: [_; $rm] = std::array::from_fn(|i| row(r0 + i));
                        // SAFETY: the wide tiles are only reached when the CPU has AVX-512
                        // F/BW/VNNI (`super::enabled`).
                        let v = unsafe { block_pass::<B, $rm>(rows, x, band) };
                        for t in 0..tokens {
                            let at = band * BAND + t;
                            // SAFETY: rows first..first + m are this task's.
                            let ys = unsafe { out.token_rows_mut(at, first + r0, $rm) };
                            for (y, lanes) in ys.iter_mut().zip(&v) {
                                *y = lanes[t];
                            }
                        }
                        $rm
                    }};
                }
                r0 += match m - r0 {
                    8.. => go!(8),
                    4.. => go!(4),
                    _ => go!(1),
                };
            }
        }
    });
}
