//! floe's routing trace: JSON lines. The first line describes the model,
//! `{"floe_trace":1,"layers":L,"experts":E,"top_k":K,"expert_bytes":B}`; each further line is
//! one layer's routing at one step, `{"step":S,"phase":"decode","layer":l,"experts":[..],
//! "weights":[..]}`. Written by `floe run --trace-out`, read by `floe sim`.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{LayerRoute, Phase, Trace};
use crate::error::CacheError;
use crate::key::MoeShape;

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    floe_trace: u32,
    layers: u16,
    experts: u16,
    top_k: u16,
    #[serde(default)]
    expert_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    step: u64,
    phase: Phase,
    layer: u16,
    experts: Vec<u16>,
    #[serde(default)]
    weights: Vec<f32>,
}

pub(super) fn parse(text: &str, name: &str) -> Result<Trace, CacheError> {
    let err = |line: usize, reason: String| CacheError::Trace { path: name.into(), line, reason };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (hn, hline) = lines.next().ok_or_else(|| err(1, "empty trace".into()))?;
    let header: Header =
        serde_json::from_str(hline).map_err(|e| err(hn + 1, format!("header: {e}")))?;
    if header.floe_trace != 1 {
        return Err(err(
            hn + 1,
            format!("floe_trace version {} (this floe reads 1)", header.floe_trace),
        ));
    }
    let shape = MoeShape { layers: header.layers, experts: header.experts, top_k: header.top_k };
    let mut routes = Vec::new();
    for (i, line) in lines {
        let row: Row = serde_json::from_str(line).map_err(|e| err(i + 1, e.to_string()))?;
        if row.layer >= shape.layers {
            return Err(err(
                i + 1,
                format!("layer {} of a {}-layer model", row.layer, shape.layers),
            ));
        }
        if let Some(e) = row.experts.iter().find(|&&e| e >= shape.experts) {
            return Err(err(i + 1, format!("expert {e} of {} per layer", shape.experts)));
        }
        let experts = row
            .experts
            .iter()
            .enumerate()
            .map(|(j, &e)| (e, row.weights.get(j).copied().unwrap_or(0.0)))
            .collect();
        routes.push(LayerRoute { phase: row.phase, step: row.step, layer: row.layer, experts });
    }
    let expert_bytes = if header.expert_bytes > 0 {
        vec![header.expert_bytes; shape.layers as usize]
    } else {
        Vec::new()
    };
    Ok(Trace { shape, expert_bytes, routes })
}

/// Writes floe's trace format, one line per layer routing.
#[derive(Debug)]
pub struct TraceWriter<W: Write> {
    out: W,
}

impl<W: Write> TraceWriter<W> {
    /// Starts a trace for a model of `shape` whose experts are `expert_bytes` each.
    pub fn new(mut out: W, shape: MoeShape, expert_bytes: u64) -> std::io::Result<Self> {
        let h = Header {
            floe_trace: 1,
            layers: shape.layers,
            experts: shape.experts,
            top_k: shape.top_k,
            expert_bytes,
        };
        writeln!(out, "{}", serde_json::to_string(&h)?)?;
        Ok(Self { out })
    }

    /// Records one layer's routing.
    pub fn write(&mut self, route: &LayerRoute) -> std::io::Result<()> {
        let row = Row {
            step: route.step,
            phase: route.phase,
            layer: route.layer,
            experts: route.experts.iter().map(|e| e.0).collect(),
            weights: route.experts.iter().map(|e| e.1).collect(),
        };
        writeln!(self.out, "{}", serde_json::to_string(&row)?)
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let shape = MoeShape { layers: 3, experts: 8, top_k: 2 };
        let routes = vec![
            LayerRoute {
                phase: Phase::Prefill,
                step: 0,
                layer: 0,
                experts: vec![(1, 0.5), (7, 0.25)],
            },
            LayerRoute {
                phase: Phase::Decode,
                step: 1,
                layer: 2,
                experts: vec![(3, 0.75), (0, 0.125)],
            },
        ];
        let mut w = TraceWriter::new(Vec::new(), shape, 4096).unwrap();
        for r in &routes {
            w.write(r).unwrap();
        }
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        let t = parse(&text, "t.jsonl").unwrap();
        assert_eq!(t.shape, shape);
        assert_eq!(t.routes, routes);
        assert_eq!(t.expert_bytes, vec![4096; 3]);
        let bad = text.replace("\"layer\":2", "\"layer\":9");
        let e = parse(&bad, "t.jsonl").unwrap_err().to_string();
        assert!(e.starts_with("t.jsonl:3:"), "{e}");
    }
}
