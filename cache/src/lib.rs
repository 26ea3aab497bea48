//! floe-cache: expert-cache policies and the slot table.
#![warn(missing_docs)]

mod error;
pub use error::CacheError;
