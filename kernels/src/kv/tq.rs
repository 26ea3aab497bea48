//! TurboQuant blocks (the MSE stage): per rotation block of `B` values an f16 scale, then the
//! codes, `bits` each, in groups of eight: group `g` is a `bits`-byte little-endian word whose
//! code `j` sits at bit `j * bits`. A code is a sign bit above a magnitude index into the
//! block size's [`Codebook`]; the value is `scale * (+/-) mags[m]`.
//!
//! The scale is the least-squares fit of the chosen levels to the rotated values (at least as
//! close as the block's norm over `sqrt(B)`, which is what the codes are chosen against).

use half::f16;

use super::codebook::Codebook;

/// Bytes of one rotation block of `block` values at `bits` per value.
pub const fn block_bytes(block: usize, bits: u32) -> usize {
    2 + block / 8 * bits as usize
}

/// The `bits`-byte word of group `g` of a block's codes.
#[inline(always)]
pub(crate) fn word(codes: &[u8], bits: u32, g: usize) -> u32 {
    let b = bits as usize;
    let mut w = [0u8; 4];
    w[..b].copy_from_slice(&codes[g * b..(g + 1) * b]);
    u32::from_le_bytes(w)
}

/// The value code `c` stands for, in units of its block's scale.
#[inline(always)]
fn level(book: &Codebook, bits: u32, c: u32) -> f32 {
    let m = book.mags[(c & ((1 << (bits - 1)) - 1)) as usize];
    if c >> (bits - 1) != 0 {
        -m
    } else {
        m
    }
}

/// Quantises `x` (a rotated, padded head: whole blocks of `block`) into `out`.
pub fn quantize(x: &[f32], bits: u32, block: usize, book: &Codebook, out: &mut [u8]) {
    let bb = block_bytes(block, bits);
    for (xb, ob) in x.chunks_exact(block).zip(out.chunks_exact_mut(bb)) {
        let norm = xb.iter().map(|v| v * v).sum::<f32>().sqrt();
        let unit = if norm > 0.0 { (block as f32).sqrt() / norm } else { 0.0 };
        let (scale, codes) = ob.split_at_mut(2);
        codes.fill(0);
        let (mut xy, mut yy) = (0.0f32, 0.0f32);
        for (j, &v) in xb.iter().enumerate() {
            let m = book.nearest((v * unit).abs());
            let c = ((v < 0.0) as u32) << (bits - 1) | m as u32;
            let y = level(book, bits, c);
            (xy, yy) = (xy + v * y, yy + y * y);
            let bit = j * bits as usize;
            let packed = c << (bit % 8);
            for (k, byte) in packed.to_le_bytes().iter().enumerate().take(2) {
                if let Some(o) = codes.get_mut(bit / 8 + k) {
                    *o |= byte;
                }
            }
        }
        let s = if yy > 0.0 { xy / yy } else { 0.0 };
        scale.copy_from_slice(&f16::from_f32(s).to_le_bytes());
    }
}

/// The rotated values `bytes` holds, into `out` (whole blocks).
pub fn dequantize(bytes: &[u8], bits: u32, block: usize, book: &Codebook, out: &mut [f32]) {
    let bb = block_bytes(block, bits);
    for (ob, b) in out.chunks_exact_mut(block).zip(bytes.chunks_exact(bb)) {
        let s = f16::from_le_bytes([b[0], b[1]]).to_f32();
        for (g, og) in ob.chunks_exact_mut(8).enumerate() {
            let w = word(&b[2..], bits, g);
            for (j, o) in og.iter_mut().enumerate() {
                *o = s * level(book, bits, (w >> (j as u32 * bits)) & ((1 << bits) - 1));
            }
        }
    }
}

/// `q . dequantize(bytes)` (q rotated and padded as the cache).
pub fn dot(bytes: &[u8], bits: u32, block: usize, book: &Codebook, q: &[f32]) -> f32 {
    let bb = block_bytes(block, bits);
    let mut total = 0.0f32;
    for (qb, b) in q.chunks_exact(block).zip(bytes.chunks_exact(bb)) {
        let s = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let mut acc = 0.0f32;
        for (g, qg) in qb.chunks_exact(8).enumerate() {
            let w = word(&b[2..], bits, g);
            for (j, qv) in qg.iter().enumerate() {
                acc += qv * level(book, bits, (w >> (j as u32 * bits)) & ((1 << bits) - 1));
            }
        }
        total += s * acc;
    }
    total
}

/// `out += a * dequantize(bytes)`.
pub fn axpy(a: f32, bytes: &[u8], bits: u32, block: usize, book: &Codebook, out: &mut [f32]) {
    let bb = block_bytes(block, bits);
    for (ob, b) in out.chunks_exact_mut(block).zip(bytes.chunks_exact(bb)) {
        let s = a * f16::from_le_bytes([b[0], b[1]]).to_f32();
        for (g, og) in ob.chunks_exact_mut(8).enumerate() {
            let w = word(&b[2..], bits, g);
            for (j, o) in og.iter_mut().enumerate() {
                *o += s * level(book, bits, (w >> (j as u32 * bits)) & ((1 << bits) - 1));
            }
        }
    }
}
