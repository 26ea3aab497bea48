//! S3-FIFO (Yang et al., SOSP'23): new keys enter a small probationary FIFO; keys used again
//! while there move to the main FIFO, others leave to a ghost FIFO that sends them straight to
//! main if they come back soon. Main evicts with a small frequency (second-chance) counter.

use super::list::KeyList;
use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// S3-FIFO.
#[derive(Debug)]
pub struct S3Fifo {
    small: KeyList<u8>,
    main: KeyList<u8>,
    ghost: KeyList<()>,
    small_target: usize,
    capacity: usize,
}

impl S3Fifo {
    /// S3-FIFO for `capacity` slots, `small_share` of them for the small queue.
    pub fn new(capacity: usize, small_share: f64) -> Self {
        let capacity = capacity.max(1);
        let small_target = ((capacity as f64 * small_share).round() as usize).max(1);
        Self {
            small: KeyList::default(),
            main: KeyList::default(),
            ghost: KeyList::default(),
            small_target,
            capacity,
        }
    }

    /// Evicts from main: keys with frequency left go round again with one less.
    fn evict_main(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        // Each key is looked at most 4 times (frequency <= 3) plus once when pinned.
        let mut budget = self.main.len() * 5;
        while budget > 0 {
            budget -= 1;
            let key = self.main.tail()?;
            let freq = self.main.remove(&key).unwrap_or(0);
            if !evictable(key) {
                self.main.push_head(key, freq);
                continue;
            }
            if freq > 0 {
                self.main.push_head(key, freq - 1);
                continue;
            }
            return Some(key);
        }
        None
    }

    /// Evicts from small: keys used while on probation are promoted to main instead.
    fn evict_small(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let mut budget = self.small.len() * 2;
        while budget > 0 {
            budget -= 1;
            let key = self.small.tail()?;
            let freq = self.small.remove(&key).unwrap_or(0);
            if !evictable(key) {
                self.small.push_head(key, freq);
                continue;
            }
            if freq > 0 {
                self.main.push_head(key, 0);
                continue;
            }
            self.ghost.push_head(key, ());
            while self.ghost.len() > self.capacity {
                if let Some(old) = self.ghost.tail() {
                    self.ghost.remove(&old);
                }
            }
            return Some(key);
        }
        None
    }
}

impl Policy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3fifo"
    }
    fn on_hit(&mut self, key: ExpertKey, _: &AccessCtx) {
        if let Some(f) = self.small.get_mut(&key).or_else(|| self.main.get_mut(&key)) {
            *f = (*f + 1).min(3);
        }
    }
    fn on_insert(&mut self, key: ExpertKey, _: &AccessCtx) {
        if self.ghost.remove(&key).is_some() {
            self.main.push_head(key, 0);
        } else {
            self.small.push_head(key, 0);
        }
    }
    fn on_remove(&mut self, key: ExpertKey) {
        if self.small.remove(&key).is_none() {
            self.main.remove(&key);
        }
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        if self.small.len() >= self.small_target || self.main.len() == 0 {
            if let Some(k) = self.evict_small(evictable) {
                return Some(k);
            }
        }
        self.evict_main(evictable).or_else(|| self.evict_small(evictable))
    }
}
