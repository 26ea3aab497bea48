//! floe: run Mixture-of-Experts models larger than RAM by streaming expert weights from SSD.
//!
//! The crate re-exports its three building blocks ([`io`], [`cache`], [`kernels`]) and adds the
//! engine on top. See the workspace README for the command-line tool.
#![warn(missing_docs)]

pub mod bench_io;
mod error;
pub mod model;
pub mod pipeline;

pub use error::{Error, Result};
pub use floe_cache as cache;
pub use floe_io as io;
pub use floe_kernels as kernels;
