//! The routing-trace readers (floe JSON lines, route_trace v1 CSV, MoE-Beyond CSV), then a
//! replay through LRU and Belady at 10 % and the predictor scores, as `floe sim` runs them.
#![no_main]

use floe_cache::policy::{PolicyConfig, PolicyKind};
use floe_cache::sim::{score_predictors, simulate};
use floe_cache::trace::{PhaseFilter, Trace};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(trace) = Trace::parse(&text, "fuzz") else { return };
    let capacity = (trace.shape.total_experts() / 10).max(1);
    for kind in [PolicyKind::Lru, PolicyKind::Belady, PolicyKind::Moe] {
        let _ = simulate(&trace, PhaseFilter::All, kind, capacity, &PolicyConfig::default());
    }
    let _ = score_predictors(&trace, PhaseFilter::All);
});
