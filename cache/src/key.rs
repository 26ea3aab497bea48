//! What the cache is keyed by, and what a policy is told about each access.

/// One routed expert of one layer: the unit the cache holds (one slab).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpertKey {
    /// MoE layer index.
    pub layer: u16,
    /// Expert index within the layer.
    pub expert: u16,
}

impl ExpertKey {
    /// The key of `expert` in `layer`.
    pub fn new(layer: u16, expert: u16) -> Self {
        Self { layer, expert }
    }
}

impl std::fmt::Display for ExpertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "L{}E{}", self.layer, self.expert)
    }
}

/// The shape of the model a policy serves: what a general cache cannot know, an MoE one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeShape {
    /// MoE layers, visited in order once per token.
    pub layers: u16,
    /// Routed experts per layer.
    pub experts: u16,
    /// Experts each token uses per layer.
    pub top_k: u16,
}

impl MoeShape {
    /// Every expert of the model.
    pub fn total_experts(&self) -> usize {
        self.layers as usize * self.experts as usize
    }
}

/// Where in the run an access happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccessCtx {
    /// Token step (decode) or prompt chunk (prefill).
    pub step: u64,
    /// Index of this access in the whole access stream (Belady's clock).
    pub seq: u64,
    /// Router weight of the expert for this token (0 when unknown).
    pub weight: f32,
    /// A demand access (the expert is used now), not a prefetch.
    pub demand: bool,
}
