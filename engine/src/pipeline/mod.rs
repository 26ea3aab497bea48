//! The streaming expert pipeline: a memory budget becomes a slab arena (`floe-io`) and a slot
//! table (`floe-cache`); misses become demand reads on the I/O thread; the compute thread runs
//! each expert of a layer as its slab lands, in arrival order, and unpins it after use.

mod streaming;

pub use streaming::{StreamingExperts, StreamingStats};

use floe_cache::PolicyKind;

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
    /// Read the next layer's experts of the previous token (next-token overlap).
    Temporal,
    /// Read the next layer's most chosen experts so far (per-layer popularity).
    Hot,
    /// Read the experts that most often followed this layer's choice in the next layer
    /// (inter-layer affinity, learned online from this run's routing).
    Affinity,
}

impl PrefetchMode {
    /// Every mode, as `--prefetch` names them.
    pub const ALL: [PrefetchMode; 5] = [
        PrefetchMode::None,
        PrefetchMode::Gate,
        PrefetchMode::Temporal,
        PrefetchMode::Hot,
        PrefetchMode::Affinity,
    ];

    /// The `--prefetch` name.
    pub fn name(self) -> &'static str {
        match self {
            PrefetchMode::None => "none",
            PrefetchMode::Gate => "gate",
            PrefetchMode::Temporal => "temporal",
            PrefetchMode::Hot => "hot",
            PrefetchMode::Affinity => "affinity",
        }
    }
}

impl std::str::FromStr for PrefetchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PrefetchMode::ALL.into_iter().find(|m| m.name() == s.trim()).ok_or_else(|| {
            format!("unknown prefetch {s:?} (expected none, gate, temporal, hot or affinity)")
        })
    }
}

/// Settings of the streaming source.
#[derive(Debug, Clone)]
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
}
