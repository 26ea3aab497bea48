//! The engine's error type: one enum, structured fields, the cause chain kept.

use std::path::PathBuf;

/// Everything the `floe` library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the I/O layer.
    #[error(transparent)]
    Io(#[from] floe_io::IoError),
    /// From the cache layer.
    #[error(transparent)]
    Cache(#[from] floe_cache::CacheError),
    /// From the kernels (a shape or buffer the runtime handed them that they cannot run).
    #[error(transparent)]
    Kernel(#[from] floe_kernels::KernelError),
    /// A file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An architecture, dtype or setting floe does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A tensor the model needs is not in the checkpoint.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// A file whose contents do not match what the manifest says.
    #[error("{path}: corrupt {what}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (tensor, slab, size).
        what: String,
        /// Expected vs found.
        detail: String,
    },
    /// A value in a model file or config that floe cannot run with (field, value, limit).
    #[error("{origin}: {error}")]
    Field {
        /// Where the value was read (`floe.json`, `config.json`, GGUF metadata).
        origin: String,
        /// The field, its value and the limit.
        #[source]
        error: crate::model::validate::FieldError,
    },
    /// A configuration or argument that cannot work.
    #[error("{0}")]
    Invalid(String),
    /// An external tool (fio) failed or is missing.
    #[error("{tool}: {reason}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// What went wrong.
        reason: String,
    },
}

impl From<floe_io::SubmitError> for Error {
    fn from(e: floe_io::SubmitError) -> Self {
        Error::Io(e.into())
    }
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
