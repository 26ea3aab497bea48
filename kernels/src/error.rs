//! Errors of the kernel layer: shapes and dtypes that do not fit.

/// Everything that can go wrong in `floe-kernels`.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A buffer of the wrong size for its shape and dtype.
    #[error("{what}: expected {expected} bytes for {rows}x{cols} {dtype}, found {found}")]
    Size {
        /// Which buffer.
        what: &'static str,
        /// Its dtype.
        dtype: crate::DType,
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// A row length a block format cannot hold.
    #[error("{dtype} rows must be a multiple of {block} values, got {cols}")]
    RowNotBlockAligned {
        /// The dtype.
        dtype: crate::DType,
        /// Its block size.
        block: usize,
        /// The row length.
        cols: usize,
    },
    /// An unknown dtype name.
    #[error("unknown dtype {0:?} (floe knows {known})", known = crate::DType::names())]
    UnknownDType(String),
    /// Input and output lengths that do not match the matrix.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Kernels of an ISA this CPU cannot run.
    #[error("this CPU cannot run the {0} kernels")]
    IsaUnsupported(&'static str),
    /// The thread pool could not be built.
    #[error("cannot start the kernel thread pool: {0}")]
    Pool(String),
}
