//! The runtime: a model's typed weights, the forward pass that executes its layer spec, and the
//! per-sequence session (per-layer state and reused scratch).

mod attention;
mod ffn;
pub mod forward;
pub mod session;
pub mod weights;

pub use forward::{Model, RouteRecord};
pub use session::{KvCache, LayerState, Session, SessionOptions};
