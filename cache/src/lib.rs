//! floe-cache: expert-cache policies and the slot table.
#![warn(missing_docs)]
