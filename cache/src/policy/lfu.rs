//! LFU with aging: evict the least used key (ties: least recently used); every `aging_interval`
//! accesses all counts are halved, so an expert that was hot long ago does not stay forever.

use std::collections::{BTreeSet, HashMap};

use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// Least frequently used, with periodic halving.
#[derive(Debug)]
pub struct Lfu {
    /// (count, last use tick, key), smallest first: the eviction order.
    order: BTreeSet<(u32, u64, ExpertKey)>,
    entries: HashMap<ExpertKey, (u32, u64)>,
    tick: u64,
    aging_interval: u64,
    next_aging: u64,
}

impl Lfu {
    /// An empty LFU that halves counts every `aging_interval` accesses (0: never).
    pub fn new(aging_interval: u64) -> Self {
        Self {
            order: BTreeSet::new(),
            entries: HashMap::new(),
            tick: 0,
            aging_interval,
            next_aging: aging_interval,
        }
    }

    fn touch(&mut self, key: ExpertKey, add: u32) {
        self.tick += 1;
        let (count, last) = self.entries.get(&key).copied().unwrap_or((0, 0));
        if count > 0 || self.entries.contains_key(&key) {
            self.order.remove(&(count, last, key));
        }
        let count = count.saturating_add(add);
        self.entries.insert(key, (count, self.tick));
        self.order.insert((count, self.tick, key));
        if self.aging_interval > 0 && self.tick >= self.next_aging {
            self.next_aging = self.tick + self.aging_interval;
            self.age();
        }
    }

    fn age(&mut self) {
        self.order.clear();
        for (key, (count, last)) in self.entries.iter_mut() {
            *count /= 2;
            self.order.insert((*count, *last, *key));
        }
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
        if let Some((count, last)) = self.entries.remove(&key) {
            self.order.remove(&(count, last, key));
        }
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let entry = *self.order.iter().find(|(_, _, k)| evictable(*k))?;
        self.order.remove(&entry);
        self.entries.remove(&entry.2);
        Some(entry.2)
    }
}
