//! Routing traces: which experts each layer chose at each step. Three formats are read, each
//! recognised from its first line: floe's JSON lines (written by `floe run --trace-out`), the
//! `route_trace v1` CSV (BigMoeOnEdge, `../shared/traces`), and the MoE-Beyond CSV
//! (`Layer ID,Batch Number,Token,Activated Expert IDs`). A malformed line is an error that
//! names the file and the line.

mod jsonl;
mod moe_beyond;
mod route_csv;

use std::path::Path;

pub use jsonl::TraceWriter;

use crate::error::CacheError;
use crate::key::{ExpertKey, MoeShape};

/// Most experts (layers x experts per layer) a trace may describe: the simulator keeps state per
/// expert, so a header claiming 65,535 x 65,535 must be an error, not a 34 GB allocation. Real
/// models are far below it (Qwen3.5-397B: 60 x 512).
pub const MAX_TRACE_EXPERTS: usize = 1 << 22;

/// Prefill (a prompt chunk routed together) or decode (one token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Prompt processing.
    Prefill,
    /// Token generation.
    Decode,
}

/// Which steps of a trace to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseFilter {
    /// Decode steps only.
    Decode,
    /// Prefill steps only.
    Prefill,
    /// Everything, in order.
    All,
}

impl PhaseFilter {
    /// Whether steps of `phase` pass.
    pub fn admits(self, phase: Phase) -> bool {
        match self {
            PhaseFilter::All => true,
            PhaseFilter::Decode => phase == Phase::Decode,
            PhaseFilter::Prefill => phase == Phase::Prefill,
        }
    }
}

impl std::str::FromStr for PhaseFilter {
    type Err = CacheError;
    fn from_str(s: &str) -> Result<Self, CacheError> {
        match s {
            "decode" => Ok(PhaseFilter::Decode),
            "prefill" => Ok(PhaseFilter::Prefill),
            "all" => Ok(PhaseFilter::All),
            _ => Err(CacheError::Invalid(format!("phase {s:?}: expected decode, prefill or all"))),
        }
    }
}

/// What one layer's router chose at one step: for a prefill step, the union over the chunk's
/// tokens (each expert once: the engine reads it once and runs it over all its tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRoute {
    /// Prefill or decode.
    pub phase: Phase,
    /// Step number (token or chunk), increasing through the trace.
    pub step: u64,
    /// MoE layer.
    pub layer: u16,
    /// Chosen experts in router rank order, with router weights (0 when unknown).
    pub experts: Vec<(u16, f32)>,
}

/// A whole trace in replay order: by step, then layer, then router rank.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Layers, experts per layer and top-k.
    pub shape: MoeShape,
    /// Bytes of one expert per layer, when the trace says.
    pub expert_bytes: Vec<u64>,
    /// The routing decisions.
    pub routes: Vec<LayerRoute>,
}

impl Trace {
    /// Reads a trace in any of the supported formats.
    pub fn load(path: &Path) -> Result<Self, CacheError> {
        let text = std::fs::read_to_string(path).map_err(|e| CacheError::Trace {
            path: path.display().to_string(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses trace text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Self, CacheError> {
        let trace = Self::parse_any(text, name)?;
        let total = trace.shape.total_experts();
        if total > MAX_TRACE_EXPERTS {
            return Err(CacheError::Trace {
                path: name.into(),
                line: 0,
                reason: format!(
                    "{} layers x {} experts = {total} experts is above the limit {MAX_TRACE_EXPERTS}",
                    trace.shape.layers, trace.shape.experts
                ),
            });
        }
        Ok(trace)
    }

    fn parse_any(text: &str, name: &str) -> Result<Self, CacheError> {
        let first = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        if first.starts_with('{') {
            jsonl::parse(text, name)
        } else if first.starts_with("# route_trace") || first.starts_with("turn,phase") {
            route_csv::parse(text, name)
        } else if first.to_ascii_lowercase().starts_with("layer id") {
            moe_beyond::parse(text, name)
        } else {
            Err(CacheError::Trace {
                path: name.into(),
                line: 1,
                reason: "not a routing trace: expected floe JSON lines, `# route_trace v1`, or a \
                         MoE-Beyond CSV header"
                    .into(),
            })
        }
    }

    /// Bytes of one expert of `layer` (the largest known if the trace does not say per layer).
    pub fn expert_bytes_of(&self, layer: u16) -> Option<u64> {
        self.expert_bytes.get(layer as usize).copied().filter(|&b| b > 0)
    }

    /// The demand access stream of the chosen phases: one key per chosen expert, in order.
    pub fn accesses(&self, phase: PhaseFilter) -> Vec<ExpertKey> {
        self.routes
            .iter()
            .filter(|r| phase.admits(r.phase))
            .flat_map(|r| r.experts.iter().map(move |&(e, _)| ExpertKey::new(r.layer, e)))
            .collect()
    }
}

/// A layer or expert id read from a trace. Keys are `u16`, and so are the counts derived from
/// ids (largest id + 1), so the largest id accepted is `u16::MAX - 1`.
pub(crate) fn trace_id(v: u64, what: &str) -> Result<u16, String> {
    u16::try_from(v)
        .ok()
        .filter(|&x| x < u16::MAX)
        .ok_or_else(|| format!("{what} {v} is above the largest id {}", u16::MAX - 1))
}

/// Groups (step, layer) rows into routes, deduplicating experts within a route (keeping the
/// first rank and the largest weight) and ordering by step then layer.
pub(crate) fn build_routes(mut rows: Vec<(u64, u16, u32, Phase, u16, f32)>) -> Vec<LayerRoute> {
    // (step, layer, rank, phase, expert, weight)
    rows.sort_by_key(|r| (r.0, r.1, r.2));
    let mut routes: Vec<LayerRoute> = Vec::new();
    for (step, layer, _, phase, expert, weight) in rows {
        match routes.last_mut() {
            Some(r) if r.step == step && r.layer == layer => {
                if let Some(x) = r.experts.iter_mut().find(|(e, _)| *e == expert) {
                    x.1 = x.1.max(weight);
                } else {
                    r.experts.push((expert, weight));
                }
            }
            _ => routes.push(LayerRoute { phase, step, layer, experts: vec![(expert, weight)] }),
        }
    }
    routes
}

/// Shape from what a trace contains, where its header does not say.
pub(crate) fn infer_shape(routes: &[LayerRoute]) -> MoeShape {
    let layers = routes.iter().map(|r| r.layer + 1).max().unwrap_or(0);
    let experts = routes.iter().flat_map(|r| r.experts.iter().map(|e| e.0 + 1)).max().unwrap_or(0);
    let top_k = routes
        .iter()
        .filter(|r| r.phase == Phase::Decode)
        .map(|r| r.experts.len() as u16)
        .max()
        .or_else(|| routes.iter().map(|r| r.experts.len() as u16).min())
        .unwrap_or(0);
    MoeShape { layers, experts, top_k }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_of_too_many_experts_is_an_error_and_sparse_ids_cost_little() {
        let huge = "# route_trace v1\n# n_layer=65535 n_expert=65535 n_expert_used=2\n\
                    turn,phase,step,layer,slot,expert,weight\n0,1,0,0,0,1,0.5\n";
        let e = Trace::parse(huge, "h.csv").unwrap_err().to_string();
        assert!(e.contains("above the limit"), "{e}");
        // Found by the trace fuzz target: two layers whose ids reach 35,932 made the affinity
        // predictor allocate experts^2 counters (5 GB). It is sparse now.
        let t = Trace::parse(
            "Layer ID,Batch Number,Token,Activated Expert IDs\n0,0,0,\"[3, 35932]\"\n1,0,0,35931 2\n",
            "m.csv",
        )
        .unwrap();
        assert_eq!(t.shape.experts, 35_933);
        let scores = crate::sim::score_predictors(&t, PhaseFilter::All);
        assert_eq!(scores.len(), 3);
    }

    #[test]
    fn unknown_format_is_an_error() {
        let e = Trace::parse("hello\n", "x.txt").unwrap_err().to_string();
        assert!(e.contains("x.txt:1"), "{e}");
    }
}
