//! ARC (Megiddo & Modha): a recency list T1 and a frequency list T2, with ghost lists B1 and B2
//! of recently evicted keys steering the target size `p` of T1.

use lru::LruCache;

use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// Adaptive Replacement Cache.
#[derive(Debug)]
pub struct ArcPolicy {
    t1: LruCache<ExpertKey, ()>,
    t2: LruCache<ExpertKey, ()>,
    b1: LruCache<ExpertKey, ()>,
    b2: LruCache<ExpertKey, ()>,
    /// Target size of T1.
    p: f64,
    capacity: usize,
}

impl ArcPolicy {
    /// ARC for a cache of `capacity` slots (the ghost lists hold as many keys again).
    pub fn new(capacity: usize) -> Self {
        Self {
            t1: LruCache::unbounded(),
            t2: LruCache::unbounded(),
            b1: LruCache::unbounded(),
            b2: LruCache::unbounded(),
            p: 0.0,
            capacity: capacity.max(1),
        }
    }

    fn trim_ghosts(&mut self) {
        let c = self.capacity;
        while !self.b1.is_empty() && self.t1.len() + self.b1.len() > c {
            self.b1.pop_lru();
        }
        while self.t1.len() + self.t2.len() + self.b1.len() + self.b2.len() > 2 * c {
            if self.b2.pop_lru().is_none() && self.b1.pop_lru().is_none() {
                break;
            }
        }
    }

    fn take_lru(
        list: &mut LruCache<ExpertKey, ()>,
        evictable: &dyn Fn(ExpertKey) -> bool,
    ) -> Option<ExpertKey> {
        let key = list.iter().rev().map(|(k, _)| *k).find(|k| evictable(*k))?;
        list.pop(&key);
        Some(key)
    }
}

impl Policy for ArcPolicy {
    fn name(&self) -> &'static str {
        "arc"
    }

    fn on_hit(&mut self, key: ExpertKey, _: &AccessCtx) {
        if self.t1.pop(&key).is_some() {
            self.t2.put(key, ());
        } else {
            self.t2.promote(&key);
        }
    }

    fn on_insert(&mut self, key: ExpertKey, _: &AccessCtx) {
        let c = self.capacity as f64;
        if self.b1.pop(&key).is_some() {
            let delta = (self.b2.len() as f64 / self.b1.len().max(1) as f64).max(1.0);
            self.p = (self.p + delta).min(c);
            self.t2.put(key, ());
        } else if self.b2.pop(&key).is_some() {
            let delta = (self.b1.len() as f64 / self.b2.len().max(1) as f64).max(1.0);
            self.p = (self.p - delta).max(0.0);
            self.t2.put(key, ());
        } else {
            self.t1.put(key, ());
        }
        self.trim_ghosts();
    }

    fn on_remove(&mut self, key: ExpertKey) {
        if self.t1.pop(&key).is_none() {
            self.t2.pop(&key);
        }
    }

    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let prefer_t1 = !self.t1.is_empty() && self.t1.len() as f64 > self.p;
        let from_t1 = if prefer_t1 {
            Self::take_lru(&mut self.t1, evictable).map(|k| (k, true))
        } else {
            None
        };
        let chosen = from_t1
            .or_else(|| Self::take_lru(&mut self.t2, evictable).map(|k| (k, false)))
            .or_else(|| Self::take_lru(&mut self.t1, evictable).map(|k| (k, true)));
        let (key, was_t1) = chosen?;
        if was_t1 {
            self.b1.put(key, ());
        } else {
            self.b2.put(key, ());
        }
        self.trim_ghosts();
        Some(key)
    }
}
