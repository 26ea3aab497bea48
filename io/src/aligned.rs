//! A zero-initialised heap buffer with a chosen alignment, for O_DIRECT reads outside the arena
//! (probes, tests, one-off reads).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::error::{IoError, Result};

/// A heap buffer whose start is aligned to `align` bytes and whose every byte is initialised
/// (zeroed at allocation), so it can be handed to the kernel for a direct read and read back
/// as a slice without ever exposing uninitialised memory.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively (like Box<[u8]>); moving it to another
// thread moves that ownership, and &AlignedBuf only gives out shared &[u8].
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads through &[u8]; mutation needs &mut AlignedBuf.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes aligned to `align` (a power of two). `len` may be zero.
    pub fn zeroed(len: usize, align: usize) -> Result<Self> {
        if !align.is_power_of_two() {
            return Err(IoError::Config(format!("alignment {align} is not a power of two")));
        }
        // A zero-size layout cannot be allocated; keep one aligned block so the pointer is real.
        let size = len.max(1);
        let layout = Layout::from_size_align(size, align).map_err(|e| {
            IoError::Config(format!("buffer of {len} bytes aligned to {align}: {e}"))
        })?;
        // SAFETY: layout has non-zero size (size >= 1 above).
        let raw = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).ok_or_else(|| IoError::Alloc {
            what: "aligned buffer",
            bytes: size,
            reason: "allocator returned null".into(),
        })?;
        Ok(Self { ptr, layout, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Alignment of the first byte.
    pub fn align(&self) -> usize {
        self.layout.align()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points to layout.size() >= len bytes, all initialised by alloc_zeroed,
        // owned by self and not mutably borrowed while &self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in as_slice, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Raw pointer to the first byte, for handing to the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated with exactly this layout in `zeroed` and is freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len())
            .field("align", &self.align())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_aligned() {
        for &(len, align) in &[(1usize, 4096usize), (4096, 4096), (10_000, 8192), (3, 512)] {
            let b = AlignedBuf::zeroed(len, align).unwrap();
            assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            assert_eq!(b.len(), len);
        }
        assert!(AlignedBuf::zeroed(10, 3).is_err());
    }
}
