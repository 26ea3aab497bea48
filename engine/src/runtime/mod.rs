//! The runtime: a model's typed weights, the forward pass that executes its layer spec, the
//! per-sequence session (per-layer state and reused scratch), where experts come from, sampling
//! and generation.

mod attention;
pub mod constraint;
mod deltanet;
mod dsa;
pub mod experts;
mod ffn;
pub mod forward;
pub mod generate;
mod hyper;
pub mod kv_cache;
mod mla;
mod moe;
mod router;
pub mod routing_trace;
pub mod sampling;
pub mod session;
mod shared_kv;
pub mod shared_kv_state;
#[cfg(test)]
mod shared_kv_tests;
pub mod weights;

pub use forward::{Model, RouteRecord};
pub use router::ExpertSelection;
pub use session::{
    BatchScratch, KvBytes, KvCache, KvLayout, KvTypes, LayerState, PassKind, SeqExperts, Session,
    SessionOptions,
};
