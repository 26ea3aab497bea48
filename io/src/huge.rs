//! A large zero-filled buffer on huge pages where the kernel grants them, for weights that stay
//! in memory for the life of a model (resident experts, dense weights).

use memmap2::MmapMut;

use crate::arena::ARENA_ALIGN;
use crate::error::{IoError, Result};

/// `len` bytes starting on a 2 MiB boundary of an anonymous mapping advised for transparent
/// huge pages. Decode streams every active weight once per token: on 4 KiB pages each page is
/// a TLB miss and a stop for the hardware prefetcher, on 2 MiB pages neither. The kernel fills
/// the mapping with zeros and backs it only as it is touched.
pub struct HugeBuf {
    map: MmapMut,
    start: usize,
    len: usize,
}

impl HugeBuf {
    /// Maps `len` zeroed bytes (`what` names the buffer in an allocation error).
    pub fn zeroed(len: usize, what: &'static str) -> Result<Self> {
        // Over-map by one huge page so an aligned start can be chosen inside the mapping.
        let map_len = len.next_multiple_of(ARENA_ALIGN) + ARENA_ALIGN;
        let map = MmapMut::map_anon(map_len).map_err(|e| IoError::Alloc {
            what,
            bytes: map_len,
            reason: e.to_string(),
        })?;
        #[cfg(target_os = "linux")]
        {
            // Huge pages are only a hint; the buffer works without them.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        let start = map.as_ptr().align_offset(ARENA_ALIGN);
        debug_assert!(start + len <= map_len);
        Ok(Self { map, start, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.map[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for HugeBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HugeBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_aligned_and_writable() {
        for len in [0usize, 1, 4096, (2 << 20) + 3] {
            let mut b = HugeBuf::zeroed(len, "test").unwrap();
            assert_eq!(b.len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % ARENA_ALIGN, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            if len > 0 {
                b.as_mut_slice()[len - 1] = 7;
                assert_eq!(b.as_slice()[len - 1], 7);
            }
        }
    }
}
