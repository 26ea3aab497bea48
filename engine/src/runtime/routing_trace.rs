//! The routing of a generation as a trace in floe's format (`floe run --trace-out`), in the
//! order the engine accessed the experts, so `floe sim` replays exactly what ran: per prefill
//! chunk and layer the union of the chunk's experts, per decode token and layer its top-k, each
//! in ascending expert id (the order the MoE block asks the expert source for them).

use floe_cache::trace::{LayerRoute, Phase};

use crate::runtime::RouteRecord;

/// One trace row being assembled: a (step, layer) and its experts with weights.
struct Row {
    step: u64,
    layer: usize,
    phase: Phase,
    experts: Vec<(usize, f32)>,
}

/// Groups `routes` (as recorded by a [`Session`](crate::runtime::Session)) into trace rows.
/// Positions below `prompt_len` were prefilled in chunks of `chunk` tokens.
pub fn to_trace(routes: &[RouteRecord], prompt_len: usize, chunk: usize) -> Vec<LayerRoute> {
    let chunk = chunk.max(1);
    let prefill_steps = prompt_len.div_ceil(chunk);
    let mut out: Vec<LayerRoute> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    for r in routes {
        let (step, phase) = if r.pos < prompt_len {
            ((r.pos / chunk) as u64, Phase::Prefill)
        } else {
            ((prefill_steps + r.pos - prompt_len) as u64, Phase::Decode)
        };
        match rows.iter_mut().find(|x| x.step == step && x.layer == r.layer) {
            Some(row) => {
                for &(e, w) in &r.experts {
                    match row.experts.iter_mut().find(|x| x.0 == e) {
                        Some(x) => x.1 = x.1.max(w),
                        None => row.experts.push((e, w)),
                    }
                }
            }
            None => rows.push(Row { step, layer: r.layer, phase, experts: r.experts.clone() }),
        }
    }
    rows.sort_by_key(|r| (r.step, r.layer));
    for Row { step, layer, phase, mut experts } in rows {
        experts.sort_by_key(|e| e.0);
        out.push(LayerRoute {
            phase,
            step,
            layer: layer as u16,
            experts: experts.into_iter().map(|(e, w)| (e as u16, w)).collect(),
        });
    }
    out
}
