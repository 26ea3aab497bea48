//! floe: run Mixture-of-Experts models larger than RAM by streaming expert weights from SSD.
#![warn(missing_docs)]

pub use floe_cache as cache;
pub use floe_io as io;
pub use floe_kernels as kernels;
