//! floe-cache: which expert slabs stay in RAM.
//!
//! - [`Policy`]: eviction bookkeeping behind a small trait, one file per policy
//!   ([`PolicyKind`] lists them by `--cache` name), including floe's MoE-aware [`MoeReuse`] and
//!   the offline optimum [`Belady`].
//! - [`ExpertCache`]: the slot table over a byte budget: states, pins, single-flight loads,
//!   prefetch accounting and counters.
//! - [`trace`]: routing traces (floe's JSON lines, `route_trace v1` CSV, MoE-Beyond CSV) and
//!   [`sim`], which replays them through the policies.
//! - [`RouteHistory`]: the `temporal` and `hot` prefetch predictors, scored by [`sim`] and used
//!   live by the engine.
#![warn(missing_docs)]

mod error;
#[doc(hidden)]
pub mod fixtures;
mod key;
pub mod policy;
mod predict;
pub mod sim;
mod table;
pub mod trace;
mod usage;

pub use error::CacheError;
pub use key::{AccessCtx, ExpertKey, MoeShape};
pub use policy::{build as build_policy, Policy, PolicyConfig, PolicyKind};
pub use policy::{ArcPolicy, Belady, Lfu, Lru, MoeReuse, S3Fifo, Sieve, Window};
pub use predict::{PredictorKind, RouteHistory};
pub use table::{CacheStats, ExpertCache, Lookup, SlotIndex};
pub use usage::{ExpertUsage, UsageError};
