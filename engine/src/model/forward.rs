//! The forward pass lives in [`crate::runtime`]; this module keeps the old paths.

pub use crate::runtime::{Model, RouteRecord, Session, SessionOptions};
