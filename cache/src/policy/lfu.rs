//! LFU with aging: evict the least used key (ties: least recently used); every `aging_interval`
//! accesses all counts are halved, so an expert that was hot long ago does not stay forever.
//!
//! Uses only update a key's entry in place (nothing allocated once every key has been seen);
//! the victim is found by a scan when one is needed, which happens on a miss, next to a whole
//! slab's read.

use std::collections::HashMap;

use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// Least frequently used, with periodic halving.
#[derive(Debug)]
pub struct Lfu {
    /// Per key: its use count and last use tick. The eviction order is (count, tick, key),
    /// smallest first.
    entries: HashMap<ExpertKey, (u32, u64)>,
    tick: u64,
    aging_interval: u64,
    next_aging: u64,
}

impl Lfu {
    /// An empty LFU that halves counts every `aging_interval` accesses (0: never).
    pub fn new(aging_interval: u64) -> Self {
        Self { entries: HashMap::new(), tick: 0, aging_interval, next_aging: aging_interval }
    }

    fn touch(&mut self, key: ExpertKey, add: u32) {
        self.tick += 1;
        let entry = self.entries.entry(key).or_insert((0, 0));
        *entry = (entry.0.saturating_add(add), self.tick);
        if self.aging_interval > 0 && self.tick >= self.next_aging {
            self.next_aging = self.tick + self.aging_interval;
            self.age();
        }
    }

    fn age(&mut self) {
        self.entries.values_mut().for_each(|(count, _)| *count /= 2);
    }
}

impl Policy for Lfu {
    fn name(&self) -> &'static str {
        "lfu"
    }
    fn on_hit(&mut self, key: ExpertKey, _: &AccessCtx) {
        self.touch(key, 1);
    }
    fn on_insert(&mut self, key: ExpertKey, _: &AccessCtx) {
        self.touch(key, 1);
    }
    fn on_remove(&mut self, key: ExpertKey) {
        self.entries.remove(&key);
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let (_, _, key) = self
            .entries
            .iter()
            .filter(|(k, _)| evictable(**k))
            .map(|(k, &(count, last))| (count, last, *k))
            .min()?;
        self.entries.remove(&key);
        Some(key)
    }
}
