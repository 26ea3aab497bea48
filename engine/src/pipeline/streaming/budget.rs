//! A slab cache that shrinks and grows at run time: when a memory budget also has to hold KV
//! caches that grow with the context, the slab cache gets what the KV caches do not use yet,
//! and gives slots back (their memory returned to the system) as the contexts grow.

use super::StreamingExperts;
use crate::error::Result;

impl StreamingExperts {
    /// Lets the slab cache use `slots` slots (clamped to what it must keep: pins and one
    /// layer's top-k; and to its capacity) and gives the memory of the slots it retires back to
    /// the system. Returns the limit set. Only a shrinkable cache (`StreamingConfig::
    /// shrinkable`: its arena not registered with io_uring, which would keep the pages pinned)
    /// gives memory back; others only stop using the slots.
    pub fn set_slot_limit(&self, slots: usize) -> Result<usize> {
        let limit = self.cache.set_limit(slots);
        let mut inner = self.inner.lock();
        self.release_retired(&mut inner)?;
        Ok(limit)
    }

    /// Gives back the memory of slots retired since the last call.
    pub(super) fn release_retired(&self, inner: &mut super::Inner) -> Result<()> {
        for slot in self.cache.take_retired() {
            // A retired slot held no entry, so its token is home.
            if let Some(token) = inner.slots.get_mut(slot as usize).and_then(Option::as_mut) {
                if self.shrinkable {
                    self.io.arena().release(token)?;
                }
            }
        }
        Ok(())
    }

    /// Slots the slab cache may use now.
    pub fn slot_limit(&self) -> usize {
        self.cache.limit()
    }
}
