//! Eviction policies: bookkeeping only. A policy never does I/O and never owns memory; the slot
//! table ([`crate::ExpertCache`]) or the simulator tells it what happened and asks it for a
//! victim among the keys it may evict (pinned keys are never offered).

mod arc;
mod belady;
mod lfu;
pub(crate) mod list;
mod lru;
mod moe;
mod s3fifo;
mod sieve;
mod window;

pub use arc::ArcPolicy;
pub use belady::Belady;
pub use lfu::Lfu;
pub use lru::Lru;
pub use moe::MoeReuse;
pub use s3fifo::S3Fifo;
pub use sieve::Sieve;
pub use window::Window;

use crate::error::CacheError;
use crate::key::{AccessCtx, ExpertKey, MoeShape};
use crate::usage::ExpertUsage;

/// The contract between the slot table and an eviction policy.
///
/// The table calls `on_insert` when a key becomes resident, `on_hit` when a resident key is
/// used again, `on_remove` when a key leaves for a reason the policy did not choose, and
/// `victim` when it needs room. `victim` returns a key for which `evictable` is true and forgets
/// it (the caller must then evict it), or `None` when nothing may be evicted.
pub trait Policy: Send {
    /// The policy's name as given to `--cache`.
    fn name(&self) -> &'static str;
    /// A resident key was used.
    fn on_hit(&mut self, key: ExpertKey, ctx: &AccessCtx);
    /// A key became resident (demand miss or prefetch).
    fn on_insert(&mut self, key: ExpertKey, ctx: &AccessCtx);
    /// A key left without being chosen as a victim (invalidated, failed load).
    fn on_remove(&mut self, key: ExpertKey);
    /// Picks and forgets a victim among keys for which `evictable` holds.
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey>;
    /// The router of `layer` chose `experts` (with weights) for step `step`: everything a
    /// routing-aware policy may learn from, including experts that were not resident.
    fn on_route(&mut self, _layer: u16, _step: u64, _experts: &[(u16, f32)]) {}
    /// Use counts learned on earlier runs (a usage file), before the first access: a policy that
    /// weighs how often experts are chosen may start from them rather than from nothing.
    fn on_prior(&mut self, _usage: &ExpertUsage) {}
}

/// The policies floe has, by `--cache` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Least recently used (the default).
    Lru,
    /// Least frequently used, with aging.
    Lfu,
    /// Adaptive Replacement Cache.
    Arc,
    /// S3-FIFO (small + main FIFO queues with a ghost queue).
    S3Fifo,
    /// SIEVE (FIFO with a visited bit and a moving hand).
    Sieve,
    /// Experts used in the last W tokens ("LLM in a Flash" windowing).
    Window,
    /// floe's MoE-aware policy: learned reuse probability per layer visit.
    Moe,
    /// Belady's offline optimum (needs the future accesses).
    Belady,
}

impl PolicyKind {
    /// Every policy, in the order `floe sim --cache all` prints them.
    pub const ALL: [PolicyKind; 8] = [
        PolicyKind::Lru,
        PolicyKind::Lfu,
        PolicyKind::Arc,
        PolicyKind::S3Fifo,
        PolicyKind::Sieve,
        PolicyKind::Window,
        PolicyKind::Moe,
        PolicyKind::Belady,
    ];

    /// The `--cache` name.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::Lfu => "lfu",
            PolicyKind::Arc => "arc",
            PolicyKind::S3Fifo => "s3fifo",
            PolicyKind::Sieve => "sieve",
            PolicyKind::Window => "window",
            PolicyKind::Moe => "moe",
            PolicyKind::Belady => "belady",
        }
    }

    /// Whether the policy needs the future access sequence.
    pub fn is_offline(self) -> bool {
        self == PolicyKind::Belady
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = CacheError;
    fn from_str(s: &str) -> Result<Self, CacheError> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| CacheError::UnknownPolicy(s.to_string()))
    }
}

/// Knobs of the policies that have any. Defaults are general, not tuned to a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// `lfu`: halve every count after this many accesses per slot of capacity.
    pub lfu_aging_per_slot: u64,
    /// `window`: tokens an expert stays preferred after its last use.
    pub window_tokens: u64,
    /// `s3fifo`: share of capacity given to the small (probationary) queue.
    pub s3fifo_small_share: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self { lfu_aging_per_slot: 8, window_tokens: 4, s3fifo_small_share: 0.1 }
    }
}

/// Builds a policy for a cache of `capacity` slots. `future` is the whole access sequence, which
/// only `belady` needs (and refuses to run without).
pub fn build(
    kind: PolicyKind,
    capacity: usize,
    shape: MoeShape,
    config: &PolicyConfig,
    future: Option<&[ExpertKey]>,
) -> Result<Box<dyn Policy>, CacheError> {
    Ok(match kind {
        PolicyKind::Lru => Box::new(Lru::new()),
        PolicyKind::Lfu => Box::new(Lfu::new(config.lfu_aging_per_slot * capacity as u64)),
        PolicyKind::Arc => Box::new(ArcPolicy::new(capacity)),
        PolicyKind::S3Fifo => Box::new(S3Fifo::new(capacity, config.s3fifo_small_share)),
        PolicyKind::Sieve => Box::new(Sieve::new()),
        PolicyKind::Window => Box::new(Window::new(config.window_tokens)),
        PolicyKind::Moe => Box::new(MoeReuse::new(shape)),
        PolicyKind::Belady => match future {
            Some(f) => Box::new(Belady::new(f)),
            None => {
                return Err(CacheError::Invalid(
                    "belady needs the future accesses: use it in `floe sim` on a trace".into(),
                ))
            }
        },
    })
}
