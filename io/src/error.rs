//! Errors of the I/O layer. Every variant names what a user needs to find the problem:
//! the path, the byte range, the backend.

use std::path::PathBuf;

/// Everything that can go wrong in `floe-io`.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// Opening a file failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A read failed with an OS error.
    #[error("read of {len} bytes at offset {offset} in {path} failed: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The range asked for runs past the end of the file (a truncated file, or a bad offset).
    #[error(
        "read of {len} bytes at offset {offset} in {path} runs past end of file ({file_len} bytes)"
    )]
    PastEof {
        /// The file.
        path: PathBuf,
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// The file's length when the read came back short.
        file_len: u64,
    },
    /// The aligned range covering a request does not fit in one arena slot.
    #[error("read of {len} bytes at offset {offset} needs {needed} bytes once aligned to {align}, but a slot holds {slot_bytes}")]
    TooLargeForSlot {
        /// First byte asked for.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// Bytes of the covering aligned range.
        needed: usize,
        /// The alignment used.
        align: usize,
        /// Slot capacity.
        slot_bytes: usize,
    },
    /// A queued prefetch was cancelled before it was submitted.
    #[error("read cancelled before submission")]
    Cancelled,
    /// The I/O thread is gone (shut down or panicked).
    #[error("the I/O thread has stopped")]
    Disconnected,
    /// A backend could not be set up (io_uring refused, thread spawn failed, ...).
    #[error("{backend} backend unavailable: {reason}")]
    BackendUnavailable {
        /// Which backend.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// Memory for an arena or buffer could not be had.
    #[error("cannot allocate {bytes} bytes for {what}: {reason}")]
    Alloc {
        /// What the memory was for.
        what: &'static str,
        /// How much.
        bytes: usize,
        /// Why.
        reason: String,
    },
    /// A configuration value is impossible (zero slots, unaligned slot size, ...).
    #[error("invalid I/O configuration: {0}")]
    Config(String),
    /// A slot handed in belongs to another arena.
    #[error("slot {index} does not belong to this arena")]
    ForeignSlot {
        /// The slot's index.
        index: u32,
    },
    /// An unknown backend name (from `--io` or `FLOE_IO`).
    #[error("unknown I/O backend {0:?} (expected uring, pread or buffered)")]
    UnknownBackend(String),
}

/// Result alias of this crate.
pub type Result<T, E = IoError> = std::result::Result<T, E>;
