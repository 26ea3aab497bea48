//! LRU: evict the least recently used unpinned key. The design's "sliding-window LRU of expert
//! slabs", and the baseline every other policy is held against.

use lru::LruCache;

use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// Least recently used.
#[derive(Debug)]
pub struct Lru {
    order: LruCache<ExpertKey, ()>,
}

impl Lru {
    /// An empty LRU.
    pub fn new() -> Self {
        Self { order: LruCache::unbounded() }
    }
}

impl Default for Lru {
    fn default() -> Self {
        Self::new()
    }
}

impl Policy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }
    fn on_hit(&mut self, key: ExpertKey, _: &AccessCtx) {
        self.order.promote(&key);
    }
    fn on_insert(&mut self, key: ExpertKey, _: &AccessCtx) {
        self.order.put(key, ());
    }
    fn on_remove(&mut self, key: ExpertKey) {
        self.order.pop(&key);
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        // Oldest first; pinned keys are skipped, not reordered.
        let key = self.order.iter().rev().map(|(k, _)| *k).find(|k| evictable(*k))?;
        self.order.pop(&key);
        Some(key)
    }
}
