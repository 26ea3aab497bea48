//! Windowing ("LLM in a Flash", Alizadeh et al.): keep the experts used in the last W tokens.
//! Keys whose last use is older than the window go first (oldest first); inside the window the
//! least recently used token's keys go first, and among those the lowest router weight.

use std::collections::{BTreeSet, HashMap};

use super::Policy;
use crate::key::{AccessCtx, ExpertKey};

/// Sliding window over tokens.
#[derive(Debug)]
pub struct Window {
    /// (last step used, weight rank key, key): eviction order, smallest first.
    order: BTreeSet<(u64, u32, ExpertKey)>,
    last: HashMap<ExpertKey, (u64, u32)>,
    window: u64,
    step: u64,
}

impl Window {
    /// A window of `tokens` steps.
    pub fn new(tokens: u64) -> Self {
        Self { order: BTreeSet::new(), last: HashMap::new(), window: tokens.max(1), step: 0 }
    }

    fn touch(&mut self, key: ExpertKey, ctx: &AccessCtx) {
        if let Some((s, w)) = self.last.remove(&key) {
            self.order.remove(&(s, w, key));
        }
        self.step = self.step.max(ctx.step);
        // Weights in [0, 1] order keys within a step; scaled to an integer for the set.
        let w = (ctx.weight.clamp(0.0, 1.0) * 1e6) as u32;
        self.last.insert(key, (ctx.step, w));
        self.order.insert((ctx.step, w, key));
    }

    /// Keys not used in the last W tokens.
    pub fn expired(&self) -> impl Iterator<Item = ExpertKey> + '_ {
        let cutoff = self.step.saturating_sub(self.window);
        self.order.iter().take_while(move |(s, _, _)| *s < cutoff).map(|(_, _, k)| *k)
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
        if let Some((s, w)) = self.last.remove(&key) {
            self.order.remove(&(s, w, key));
        }
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let entry = *self.order.iter().find(|(_, _, k)| evictable(*k))?;
        self.order.remove(&entry);
        self.last.remove(&entry.2);
        Some(entry.2)
    }
}
