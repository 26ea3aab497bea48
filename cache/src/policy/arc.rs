//! ARC (Megiddo & Modha): a recency list T1 and a frequency list T2, with ghost lists B1 and B2
//! of recently evicted keys steering the target size `p` of T1. The lists are index-linked
//! ([`KeyList`]): moving a key between them reuses freed nodes, so steady use allocates nothing.

use super::list::KeyList;
use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// Adaptive Replacement Cache.
#[derive(Debug)]
pub struct ArcPolicy {
    t1: KeyList<()>,
    t2: KeyList<()>,
    b1: KeyList<()>,
    b2: KeyList<()>,
    /// Target size of T1.
    p: f64,
    capacity: usize,
}

impl ArcPolicy {
    /// ARC for a cache of `capacity` slots (the ghost lists hold as many keys again).
    pub fn new(capacity: usize) -> Self {
        Self {
            t1: KeyList::default(),
            t2: KeyList::default(),
            b1: KeyList::default(),
            b2: KeyList::default(),
            p: 0.0,
            capacity: capacity.max(1),
        }
    }

    fn trim_ghosts(&mut self) {
        let c = self.capacity;
        while self.b1.len() > 0 && self.t1.len() + self.b1.len() > c {
            pop_lru(&mut self.b1);
        }
        while self.t1.len() + self.t2.len() + self.b1.len() + self.b2.len() > 2 * c {
            if pop_lru(&mut self.b2).is_none() && pop_lru(&mut self.b1).is_none() {
                break;
            }
        }
    }

    fn take_lru(
        list: &mut KeyList<()>,
        evictable: &dyn Fn(ExpertKey) -> bool,
    ) -> Option<ExpertKey> {
        let mut at = list.tail();
        while let Some(key) = at {
            if evictable(key) {
                list.remove(&key);
                return Some(key);
            }
            at = list.newer(&key);
        }
        None
    }
}

impl Policy for ArcPolicy {
    fn name(&self) -> &'static str {
        "arc"
    }

    fn on_hit(&mut self, key: ExpertKey, _: &AccessCtx) {
        if self.t1.remove(&key).is_some() || self.t2.remove(&key).is_some() {
            self.t2.push_head(key, ());
        }
    }

    fn on_insert(&mut self, key: ExpertKey, _: &AccessCtx) {
        let c = self.capacity as f64;
        if self.b1.remove(&key).is_some() {
            let delta = (self.b2.len() as f64 / self.b1.len().max(1) as f64).max(1.0);
            self.p = (self.p + delta).min(c);
            put(&mut self.t2, key);
        } else if self.b2.remove(&key).is_some() {
            let delta = (self.b1.len() as f64 / self.b2.len().max(1) as f64).max(1.0);
            self.p = (self.p - delta).max(0.0);
            put(&mut self.t2, key);
        } else {
            put(&mut self.t1, key);
        }
        self.trim_ghosts();
    }

    fn on_remove(&mut self, key: ExpertKey) {
        if self.t1.remove(&key).is_none() {
            self.t2.remove(&key);
        }
    }

    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let prefer_t1 = self.t1.len() > 0 && self.t1.len() as f64 > self.p;
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
            put(&mut self.b1, key);
        } else {
            put(&mut self.b2, key);
        }
        self.trim_ghosts();
        Some(key)
    }
}

/// `key` at the most recent end of `list` (moved there if it was already in).
fn put(list: &mut KeyList<()>, key: ExpertKey) {
    list.remove(&key);
    list.push_head(key, ());
}

/// Takes the least recent key of `list`.
fn pop_lru(list: &mut KeyList<()>) -> Option<ExpertKey> {
    let key = list.tail()?;
    list.remove(&key);
    Some(key)
}
