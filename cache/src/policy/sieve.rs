//! SIEVE (Zhang et al., NSDI'24): one FIFO with a visited bit per key and a hand that walks
//! from old to new; visited keys lose the bit and stay, the first unvisited one is evicted.

use super::list::KeyList;
use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// SIEVE.
#[derive(Debug, Default)]
pub struct Sieve {
    queue: KeyList<bool>,
    hand: Option<ExpertKey>,
}

impl Sieve {
    /// An empty SIEVE.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for Sieve {
    fn name(&self) -> &'static str {
        "sieve"
    }
    fn on_hit(&mut self, key: ExpertKey, _: &AccessCtx) {
        if let Some(v) = self.queue.get_mut(&key) {
            *v = true;
        }
    }
    fn on_insert(&mut self, key: ExpertKey, _: &AccessCtx) {
        self.queue.push_head(key, false);
    }
    fn on_remove(&mut self, key: ExpertKey) {
        if self.hand == Some(key) {
            self.hand = self.queue.newer(&key);
        }
        self.queue.remove(&key);
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        // Two full sweeps clear every visited bit; a third finds nothing only if all are pinned.
        let mut steps = self.queue.len() * 3;
        let mut hand = self.hand.filter(|k| self.queue.contains(k)).or(self.queue.tail());
        while steps > 0 {
            steps -= 1;
            let key = hand?;
            let next = self.queue.newer(&key).or(self.queue.tail());
            let visited = self.queue.get_mut(&key).expect("hand on a queued key");
            if *visited {
                *visited = false;
            } else if evictable(key) {
                self.queue.remove(&key);
                self.hand = next.filter(|k| *k != key);
                return Some(key);
            }
            hand = next;
        }
        self.hand = hand;
        None
    }
}
