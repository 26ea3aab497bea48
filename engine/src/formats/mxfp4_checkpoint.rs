//! MXFP4 experts as the gpt-oss hub checkpoints store them (`*_blocks` `[E, rows, cols / 32, 16]`
//! and `*_scales` `[E, rows, cols / 32]`, U8): repacked into ggml's `block_mxfp4` without
//! requantising, as llama.cpp's converter does. The hub packs element `2i` of a 32-value group
//! in the low nibble of byte `i` and `2i + 1` in the high one; ggml's byte `j` holds element `j`
//! low and `j + 16` high. Codes and scales are the same numbers on both sides (ggml doubles the
//! value table and halves the scale).

use crate::error::{Error, Result};
use crate::formats::safetensors_dir::CheckpointDir;

/// One 32-value group from the hub's 16 bytes and scale to ggml's 17-byte block.
fn repack_group(hub: &[u8], scale: u8, out: &mut [u8]) {
    let mut codes = [0u8; 32];
    for (i, &b) in hub.iter().enumerate() {
        codes[2 * i] = b & 0x0F;
        codes[2 * i + 1] = b >> 4;
    }
    out[0] = scale;
    for j in 0..16 {
        out[1 + j] = codes[j] | (codes[j + 16] << 4);
    }
}

/// Rows `first, first + step, ...` (`rows` of them, `cols` values each) of expert `expert` in
/// the hub tensors `blocks` and `scales`, as ggml MXFP4 rows.
#[allow(clippy::too_many_arguments)]
pub fn mxfp4_rows(
    ckpt: &CheckpointDir,
    blocks: &str,
    scales: &str,
    expert: usize,
    first: usize,
    step: usize,
    rows: usize,
    cols: usize,
) -> Result<Vec<u8>> {
    let (b, bshape) = ckpt.u8_slice(blocks, expert)?;
    let (s, sshape) = ckpt.u8_slice(scales, expert)?;
    let groups = cols / 32;
    let last = first + step * rows.saturating_sub(1);
    let ok = cols.is_multiple_of(32)
        && bshape.len() == 4
        && bshape[2] == groups
        && bshape[3] == 16
        && sshape.len() == 3
        && sshape[1] == bshape[1]
        && sshape[2] == groups
        && last < bshape[1];
    if !ok {
        return Err(Error::Invalid(format!(
            "MXFP4 tensors {blocks} {bshape:?} and {scales} {sshape:?} cannot hold rows \
             {first}+{step}k of {cols} values"
        )));
    }
    let mut out = vec![0u8; rows * groups * 17];
    for i in 0..rows {
        let r = first + step * i;
        for g in 0..groups {
            let hub = &b[(r * groups + g) * 16..][..16];
            repack_group(hub, s[r * groups + g], &mut out[(i * groups + g) * 17..][..17]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group repacked decodes, through ggml's layout, to the values the hub's layout means.
    #[test]
    fn repacked_groups_hold_the_same_codes() {
        let hub: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
        let mut out = [0u8; 17];
        repack_group(&hub, 121, &mut out);
        assert_eq!(out[0], 121);
        for e in 0..32 {
            let want = if e % 2 == 0 { hub[e / 2] & 0x0F } else { hub[e / 2] >> 4 };
            let got = if e < 16 { out[1 + e] & 0x0F } else { out[1 + e - 16] >> 4 };
            assert_eq!(got, want, "element {e}");
        }
    }
}
