//! floe-kernels: CPU kernels for decode and prefill.
#![warn(missing_docs)]
