//! Belady's MIN: evict the key whose next use is farthest in the future. Optimal for unit-size
//! items when every miss must be inserted; needs the whole access sequence in advance, so it is
//! the yardstick of `floe sim`, not a policy to run live.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// The offline optimum.
#[derive(Debug)]
pub struct Belady {
    /// For access i of the sequence, the index of the next access of the same key.
    next_use: Vec<u64>,
    order: BTreeSet<(Reverse<u64>, ExpertKey)>,
    resident: HashMap<ExpertKey, u64>,
}

impl Belady {
    /// Belady over `future`, the accesses in the order they will be made (`AccessCtx::seq`
    /// indexes into it).
    pub fn new(future: &[ExpertKey]) -> Self {
        let mut next_use = vec![u64::MAX; future.len()];
        let mut seen: HashMap<ExpertKey, u64> = HashMap::new();
        for (i, key) in future.iter().enumerate().rev() {
            if let Some(&n) = seen.get(key) {
                next_use[i] = n;
            }
            seen.insert(*key, i as u64);
        }
        Self { next_use, order: BTreeSet::new(), resident: HashMap::new() }
    }

    fn touch(&mut self, key: ExpertKey, ctx: &AccessCtx) {
        let next = self.next_use.get(ctx.seq as usize).copied().unwrap_or(u64::MAX);
        if let Some(old) = self.resident.insert(key, next) {
            self.order.remove(&(Reverse(old), key));
        }
        self.order.insert((Reverse(next), key));
    }
}

impl Policy for Belady {
    fn name(&self) -> &'static str {
        "belady"
    }
    fn on_hit(&mut self, key: ExpertKey, ctx: &AccessCtx) {
        self.touch(key, ctx);
    }
    fn on_insert(&mut self, key: ExpertKey, ctx: &AccessCtx) {
        self.touch(key, ctx);
    }
    fn on_remove(&mut self, key: ExpertKey) {
        if let Some(n) = self.resident.remove(&key) {
            self.order.remove(&(Reverse(n), key));
        }
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let entry = *self.order.iter().find(|(_, k)| evictable(*k))?;
        self.order.remove(&entry);
        self.resident.remove(&entry.1);
        Some(entry.1)
    }
}
