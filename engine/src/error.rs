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
    /// A generation or scoring request the engine refuses: the caller's to fix (a server
    /// answers it with a 4xx status), told apart by its kind.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The engine's own machinery failed: its scheduler stopped, a thread could not start.
    #[error("engine: {0}")]
    Engine(&'static str),
    /// An external tool (fio) failed or is missing.
    #[error("{tool}: {reason}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// No prompt tokens.
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    /// A prompt token the model's vocabulary does not have.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfVocab {
        /// The token.
        id: u32,
        /// The vocabulary's size.
        vocab: usize,
    },
    /// More tokens than the context holds.
    #[error("{tokens} tokens, more than the {ctx} positions a generation holds")]
    TooLong {
        /// The tokens given.
        tokens: usize,
        /// The positions there are.
        ctx: usize,
    },
    /// An expert count outside 1 to the model's own (or a model without routed experts).
    #[error("experts per token {asked}: {}", match .top_k {
        Some(k) => format!("the model routes each token to {k} experts; give 1 to {k}"),
        None => "the model has no routed experts".to_string(),
    })]
    ExpertsPerToken {
        /// The count asked for.
        asked: usize,
        /// The model's own count, if it has routed experts.
        top_k: Option<usize>,
    },
    /// A weak-expert ratio outside [0, 1).
    #[error(
        "minimum expert weight ratio {0}: give a fraction of the top expert's weight in [0, 1)"
    )]
    MinExpertWeight(f32),
    /// A grammar (JSON schema, regex, Lark) that does not compile.
    #[error("grammar: {0}")]
    Grammar(String),
}

impl Error {
    /// The caller's to fix (a request the engine refuses), rather than floe's or its files'.
    pub fn is_request_error(&self) -> bool {
        matches!(self, Error::Request(_))
    }
}

impl From<floe_io::SubmitError> for Error {
    fn from(e: floe_io::SubmitError) -> Self {
        Error::Io(e.into())
    }
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
