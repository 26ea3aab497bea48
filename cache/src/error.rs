//! Errors of the cache layer.

/// Everything that can go wrong in `floe-cache`.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A budget that cannot hold one layer's top-k experts.
    #[error("cache budget of {slots} slots is below one layer's top-k ({min} slabs); give at least {min_bytes} bytes")]
    BudgetTooSmall {
        /// Slots the budget gives.
        slots: usize,
        /// Slots needed.
        min: usize,
        /// Bytes needed.
        min_bytes: u64,
    },
    /// An unknown policy name.
    #[error("unknown cache policy {0:?}")]
    UnknownPolicy(String),
    /// A trace file that cannot be read.
    #[error("{path}:{line}: {reason}")]
    Trace {
        /// The file.
        path: String,
        /// 1-based line number (0 for the whole file).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A usage file (`--usage`) that cannot be used.
    #[error("usage file {path}: {error}")]
    Usage {
        /// The file.
        path: String,
        /// What is wrong.
        #[source]
        error: crate::usage::UsageError,
    },
    /// A bad configuration value.
    #[error("{0}")]
    Invalid(String),
}
