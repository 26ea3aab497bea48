//! `SlabArena`: one large zeroed allocation carved into fixed-size, aligned slots.
//!
//! Who may touch a slot's bytes is decided by ownership of a [`Slot`] token, not by
//! convention: a `Slot` is not `Clone`, only [`SlabArena::alloc`] makes one and only
//! [`SlabArena::free`] takes it back. Submitting a read moves the token to the I/O thread
//! (the kernel owns the bytes until the completion hands the token back), so while anyone can
//! borrow `&Slot` to read the bytes, no read can be writing into them.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use memmap2::MmapMut;

use crate::error::{IoError, Result};

/// Alignment of the arena's first byte: 2 MiB, so the kernel can back it with huge pages.
pub const ARENA_ALIGN: usize = 2 << 20;

static NEXT_ARENA_ID: AtomicU32 = AtomicU32::new(1);

/// The right to the bytes of one arena slot. Not `Clone`: exactly one exists per allocated slot.
#[derive(Debug, PartialEq, Eq)]
pub struct Slot {
    index: u32,
    arena: u32,
}

impl Slot {
    /// Index of the slot in its arena (stable for the slot's life; for tables and logs).
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// One allocation of `slot_count * slot_bytes` bytes, 2 MiB aligned, zero-initialised.
pub struct SlabArena {
    id: u32,
    base: NonNull<u8>,
    slot_bytes: usize,
    slot_count: usize,
    align: usize,
    free: Mutex<Vec<u32>>,
    _map: MmapMut,
}

// SAFETY: the raw base pointer refers to the anonymous mapping owned by `_map`, which lives as
// long as the arena. Concurrent access to slot bytes is arbitrated by `Slot` tokens (see the
// module docs); the free list is behind a Mutex.
unsafe impl Send for SlabArena {}
// SAFETY: as for Send; every &self method either reads immutable fields, locks the free list,
// or hands out slot bytes only against a borrowed `Slot` token.
unsafe impl Sync for SlabArena {}

impl SlabArena {
    /// Makes an arena of `slot_count` slots of `slot_bytes` bytes each. `align` (a power of two,
    /// at least 4096) is the alignment every slot starts at; `slot_bytes` must be a multiple of it.
    pub fn new(slot_count: usize, slot_bytes: usize, align: usize) -> Result<Arc<Self>> {
        if slot_count == 0 || slot_bytes == 0 {
            return Err(IoError::Config(format!(
                "arena needs at least one slot of at least one byte (got {slot_count} x {slot_bytes})"
            )));
        }
        if !align.is_power_of_two() || !(4096..=ARENA_ALIGN).contains(&align) {
            return Err(IoError::Config(format!(
                "slot alignment {align} must be a power of two between 4096 and {ARENA_ALIGN}"
            )));
        }
        if !slot_bytes.is_multiple_of(align) {
            return Err(IoError::Config(format!(
                "slot size {slot_bytes} is not a multiple of the alignment {align}"
            )));
        }
        if slot_count > u32::MAX as usize {
            return Err(IoError::Config(format!("{slot_count} slots is more than 2^32")));
        }
        let bytes = slot_count.checked_mul(slot_bytes).ok_or_else(|| {
            IoError::Config(format!("{slot_count} slots of {slot_bytes} bytes overflows"))
        })?;
        // Anonymous mappings are zero-filled by the kernel and only take memory when touched.
        // Over-map by ARENA_ALIGN so an aligned start can be chosen inside the mapping, and
        // round up to whole huge pages: a slot on a 2 MiB page is a few large DMA segments
        // instead of hundreds of 4 KiB ones (measured: up to 2x the read rate in a VM).
        let map_len = bytes.next_multiple_of(ARENA_ALIGN) + ARENA_ALIGN;
        let mut map = MmapMut::map_anon(map_len).map_err(|e| IoError::Alloc {
            what: "slab arena",
            bytes: map_len,
            reason: e.to_string(),
        })?;
        #[cfg(target_os = "linux")]
        {
            // Huge pages are only a hint; an arena works without them.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        let start = map.as_mut_ptr();
        let pad = start.align_offset(ARENA_ALIGN);
        debug_assert!(pad < ARENA_ALIGN);
        // SAFETY: pad < ARENA_ALIGN and the mapping is bytes + ARENA_ALIGN long, so
        // start + pad .. start + pad + bytes lies inside the mapping.
        let base = unsafe { start.add(pad) };
        let base = NonNull::new(base).expect("mmap never returns null");
        let free = (0..slot_count as u32).rev().collect();
        Ok(Arc::new(Self {
            id: NEXT_ARENA_ID.fetch_add(1, Ordering::Relaxed),
            base,
            slot_bytes,
            slot_count,
            align,
            free: Mutex::new(free),
            _map: map,
        }))
    }

    /// Takes a free slot, or `None` when all are in use.
    pub fn alloc(&self) -> Option<Slot> {
        let index = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some(Slot { index, arena: self.id })
    }

    /// Returns a slot to the free list.
    pub fn free(&self, slot: Slot) -> Result<()> {
        self.check(&slot)?;
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(slot.index);
        Ok(())
    }

    /// Gives the memory of `slot` back to the operating system: its bytes read as zeros
    /// afterwards, and take memory again only when written. Holding the token (`&mut`) means no
    /// read is writing into it. The memory stays pinned (and counted) if the arena is
    /// registered with io_uring, so only arenas that are not registered give memory back.
    pub fn release(&self, slot: &mut Slot) -> Result<()> {
        self.check(slot)?;
        #[cfg(unix)]
        {
            let ptr = self.slot_ptr(slot);
            // SAFETY: the range is exactly this slot, inside the mapping (checked above); the
            // &mut token means no read and no borrow of its bytes is live, and an anonymous
            // private mapping reads as zeros after MADV_DONTNEED, so no Rust reference can see
            // memory change under it.
            let r = unsafe { libc::madvise(ptr.cast(), self.slot_bytes, libc::MADV_DONTNEED) };
            if r != 0 {
                return Err(IoError::Config(format!(
                    "madvise(DONTNEED) on slot {}: {}",
                    slot.index,
                    std::io::Error::last_os_error()
                )));
            }
        }
        Ok(())
    }

    /// Slots not handed out right now.
    pub fn free_count(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The whole slot's bytes. Safe: holding `&Slot` means no read is writing into it, and the
    /// returned borrow keeps the token borrowed (it cannot be submitted meanwhile).
    ///
    /// # Panics
    /// If `slot` belongs to another arena (a programming error, not bad input).
    pub fn bytes<'a>(&'a self, slot: &'a Slot) -> &'a [u8] {
        self.check(slot).expect("slot from another arena");
        // SAFETY: the slot lies inside the mapping (index < slot_count, checked at alloc), the
        // bytes are initialised (zeroed mapping, then only written by reads and bytes_mut), and
        // the borrowed token proves no read owns the slot now (module docs).
        unsafe { std::slice::from_raw_parts(self.slot_ptr(slot), self.slot_bytes) }
    }

    /// The whole slot's bytes, mutably (for tests and for filling a slot by hand).
    ///
    /// The returned borrow is tied to the `&mut Slot`: exclusive use of the token is what makes
    /// the bytes exclusive, so mutable bytes from a shared arena are sound here.
    ///
    /// # Panics
    /// If `slot` belongs to another arena.
    #[allow(clippy::mut_from_ref)]
    pub fn bytes_mut<'a>(&'a self, slot: &'a mut Slot) -> &'a mut [u8] {
        self.check(slot).expect("slot from another arena");
        // SAFETY: as in `bytes`; the &mut token is the only right to this slot, so no other
        // reference to these bytes exists while the returned borrow lives.
        unsafe { std::slice::from_raw_parts_mut(self.slot_ptr(slot), self.slot_bytes) }
    }

    /// Raw address of a slot's first byte, for handing to the kernel.
    ///
    /// # Panics
    /// If `slot` belongs to another arena: callers check ownership first ([`SlabArena::check`]
    /// in `IoEngine::submit` and `IoThread::start`), so this is a programming error, and
    /// panicking beats computing an address outside this arena.
    pub(crate) fn slot_ptr(&self, slot: &Slot) -> *mut u8 {
        self.check(slot).expect("slot from another arena");
        // SAFETY: index < slot_count (checked just above), so the offset stays inside the
        // mapping (see `new`).
        unsafe { self.base.as_ptr().add(slot.index as usize * self.slot_bytes) }
    }

    /// Whether `slot` is one of this arena's (same arena id, index in range).
    pub(crate) fn check(&self, slot: &Slot) -> Result<()> {
        if slot.arena != self.id || slot.index as usize >= self.slot_count {
            return Err(IoError::ForeignSlot { index: slot.index });
        }
        Ok(())
    }

    /// Bytes per slot.
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Alignment of every slot's first byte.
    pub fn align(&self) -> usize {
        self.align
    }

    /// First byte of the arena and its length, for registering it with the kernel (io_uring).
    #[cfg(any(target_os = "linux", test))]
    pub(crate) fn region(&self) -> (*mut u8, usize) {
        (self.base.as_ptr(), self.slot_bytes * self.slot_count)
    }
}

impl std::fmt::Debug for SlabArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlabArena")
            .field("slot_bytes", &self.slot_bytes)
            .field("slot_count", &self.slot_count)
            .field("align", &self.align)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_zeroed_and_distinct() {
        let arena = SlabArena::new(5, 8192, 4096).unwrap();
        assert_eq!(arena.region().0 as usize % ARENA_ALIGN, 0);
        let mut slots: Vec<Slot> = (0..5).map(|_| arena.alloc().unwrap()).collect();
        assert!(arena.alloc().is_none());
        for (i, s) in slots.iter_mut().enumerate() {
            assert_eq!(arena.bytes(s).as_ptr() as usize % 4096, 0);
            assert!(arena.bytes(s).iter().all(|&b| b == 0));
            arena.bytes_mut(s).fill(i as u8 + 1);
        }
        for (i, s) in slots.iter().enumerate() {
            assert!(arena.bytes(s).iter().all(|&b| b == i as u8 + 1), "slots overlap");
        }
        for s in slots {
            arena.free(s).unwrap();
        }
        assert_eq!(arena.free_count(), 5);
    }

    #[test]
    fn rejects_bad_shapes_and_foreign_slots() {
        assert!(SlabArena::new(0, 4096, 4096).is_err());
        assert!(SlabArena::new(1, 4097, 4096).is_err());
        assert!(SlabArena::new(1, 4096, 1000).is_err());
        let a = SlabArena::new(1, 4096, 4096).unwrap();
        let b = SlabArena::new(1, 4096, 4096).unwrap();
        let s = a.alloc().unwrap();
        assert!(matches!(b.free(s), Err(IoError::ForeignSlot { .. })));
    }
}
