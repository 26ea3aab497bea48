//! The streaming expert pipeline: a memory budget becomes a slab arena (`floe-io`) and a slot
//! table (`floe-cache`); misses become demand reads on the I/O thread; the compute thread runs
//! each expert of a layer as its slab lands, in arrival order, and unpins it after use.

mod prefetch_depth;
mod streaming;

pub(crate) use streaming::start_usage;
pub use streaming::{StreamingExperts, StreamingStats};

use floe_cache::{PolicyKind, PredictorKind};

/// What keeps slabs between uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// floe's slab cache with an eviction policy.
    Policy(PolicyKind),
    /// No cache of ours: buffered reads through the OS page cache (Flash-MoE's approach).
    Os,
    /// No cache at all: every expert read directly, every time.
    None,
}

impl std::str::FromStr for CacheMode {
    type Err = floe_cache::CacheError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "os" => Ok(CacheMode::Os),
            "none" => Ok(CacheMode::None),
            other => {
                let kind: PolicyKind = other.parse()?;
                if kind.is_offline() {
                    return Err(floe_cache::CacheError::Invalid(
                        "belady needs the future accesses: use it in `floe sim`, not live".into(),
                    ));
                }
                Ok(CacheMode::Policy(kind))
            }
        }
    }
}

/// How experts are predicted and read ahead of need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefetchMode {
    /// Read only on demand.
    None,
    /// Apply the next MoE layer's router to this layer's input and read its top-k early
    /// (mixtral-offloading's speculative prediction).
    Gate,
    /// Read what a predictor that needs only this run's routing expects of the next layer
    /// (`temporal`, `hot`, `affinity`: the ones `floe sim` scores).
    History(PredictorKind),
}

impl PrefetchMode {
    /// Every mode, as `--prefetch` names them.
    pub const ALL: [PrefetchMode; 2 + PredictorKind::ALL.len()] = {
        let mut all = [PrefetchMode::None; 2 + PredictorKind::ALL.len()];
        all[1] = PrefetchMode::Gate;
        let mut i = 0;
        while i < PredictorKind::ALL.len() {
            all[2 + i] = PrefetchMode::History(PredictorKind::ALL[i]);
            i += 1;
        }
        all
    };

    /// The `--prefetch` name.
    pub fn name(self) -> &'static str {
        match self {
            PrefetchMode::None => "none",
            PrefetchMode::Gate => "gate",
            PrefetchMode::History(kind) => kind.name(),
        }
    }
}

impl std::str::FromStr for PrefetchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PrefetchMode::ALL.into_iter().find(|m| m.name() == s.trim()).ok_or_else(|| {
            let names: Vec<&str> = PrefetchMode::ALL.iter().map(|m| m.name()).collect();
            format!("unknown prefetch {s:?} (expected one of {})", names.join(", "))
        })
    }
}

/// How prefetching and eviction work together (both on by default; off for comparisons).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefetchTuning {
    /// Eviction takes prefetches into account: a prefetched expert its layer passed over goes
    /// first, and what is predicted for the layer being read ahead stays.
    pub aware_eviction: bool,
    /// Each layer's prefetch depth follows how often the router chose its predictions: a rank
    /// the router chose less than `min_precision` of the time lately is not read ahead.
    pub adaptive_depth: bool,
    /// See `adaptive_depth`: higher reads fewer slabs ahead and waits for more.
    pub min_precision: f32,
}

impl Default for PrefetchTuning {
    fn default() -> Self {
        Self {
            aware_eviction: true,
            adaptive_depth: true,
            min_precision: prefetch_depth::DEFAULT_MIN_PRECISION,
        }
    }
}

/// Settings of the streaming source.
#[derive(Debug, Clone, Copy)]
pub struct StreamingConfig {
    /// Cache mode.
    pub cache: CacheMode,
    /// Bytes of slab cache (rounded down to whole slabs).
    pub cache_bytes: u64,
    /// Prefetch.
    pub prefetch: PrefetchMode,
    /// I/O backend (`None`: default for the platform, `FLOE_IO` respected).
    pub io: Option<floe_io::BackendKind>,
    /// Reads in flight.
    pub queue_depth: usize,
    /// The slab cache may be shrunk at run time with its memory given back
    /// (`StreamingExperts::set_slot_limit`); its arena is then not registered with io_uring.
    pub shrinkable: bool,
}
