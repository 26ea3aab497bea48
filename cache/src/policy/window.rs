//! Windowing ("LLM in a Flash", Alizadeh et al.): keep the experts used in the last W tokens.
//! Keys whose last use is older than the window go first (oldest first); inside the window the
//! least recently used token's keys go first, and among those the lowest router weight.
//!
//! Uses only update a key's entry in place (nothing allocated once every key has been seen);
//! the victim is found by a scan when one is needed, which happens on a miss, next to a whole
//! slab's read.

use std::collections::HashMap;

use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// Sliding window over tokens.
#[derive(Debug)]
pub struct Window {
    /// Per key: the last step it was used and its weight then, as an integer. The eviction
    /// order is (step, weight, key), smallest first.
    last: HashMap<ExpertKey, (u64, u32)>,
    window: u64,
    step: u64,
}

impl Window {
    /// A window of `tokens` steps.
    pub fn new(tokens: u64) -> Self {
        Self { last: HashMap::new(), window: tokens.max(1), step: 0 }
    }

    fn touch(&mut self, key: ExpertKey, ctx: &AccessCtx) {
        self.step = self.step.max(ctx.step);
        // Weights in [0, 1] order keys within a step; scaled to an integer (a total order).
        let w = (ctx.weight.clamp(0.0, 1.0) * 1e6) as u32;
        self.last.insert(key, (ctx.step, w));
    }

    /// Keys not used in the last W tokens, oldest first.
    pub fn expired(&self) -> Vec<ExpertKey> {
        let cutoff = self.step.saturating_sub(self.window);
        let mut old: Vec<(u64, u32, ExpertKey)> = self
            .last
            .iter()
            .filter(|(_, &(s, _))| s < cutoff)
            .map(|(k, &(s, w))| (s, w, *k))
            .collect();
        old.sort_unstable();
        old.into_iter().map(|(_, _, k)| k).collect()
    }
}

impl Policy for Window {
    fn name(&self) -> &'static str {
        "window"
    }
    fn on_hit(&mut self, key: ExpertKey, ctx: &AccessCtx) {
        self.touch(key, ctx);
    }
    fn on_insert(&mut self, key: ExpertKey, ctx: &AccessCtx) {
        self.touch(key, ctx);
    }
    fn on_remove(&mut self, key: ExpertKey) {
        self.last.remove(&key);
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let (_, _, key) = self
            .last
            .iter()
            .filter(|(k, _)| evictable(**k))
            .map(|(k, &(s, w))| (s, w, *k))
            .min()?;
        self.last.remove(&key);
        Some(key)
    }
}
