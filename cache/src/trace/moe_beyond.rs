//! MoE-Beyond CSV: `Layer ID,Batch Number,Token,Activated Expert IDs`, one row per (token,
//! layer); the expert list is any run of integers (`"[3, 17]"`, `3 17`, `3;17`). Steps are the
//! (batch, token) pairs in order of first appearance; every step is decode.

use super::{build_routes, infer_shape, trace_id, Phase, Trace};
use crate::error::CacheError;

pub(super) fn parse(text: &str, name: &str) -> Result<Trace, CacheError> {
    let err = |line: usize, reason: String| CacheError::Trace { path: name.into(), line, reason };
    let mut steps: std::collections::HashMap<(u64, u64), u64> = Default::default();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.splitn(4, ',');
        let mut field = |what: &str| -> Result<u64, CacheError> {
            let v = f.next().ok_or_else(|| err(n, format!("missing {what}")))?;
            v.trim().parse().map_err(|e| err(n, format!("{what} {v:?}: {e}")))
        };
        let layer = field("layer id")?;
        let batch = field("batch number")?;
        let token = field("token")?;
        let list = f.next().ok_or_else(|| err(n, "missing activated expert ids".into()))?;
        let layer = trace_id(layer, "layer id").map_err(|r| err(n, r))?;
        let next = steps.len() as u64;
        let step = *steps.entry((batch, token)).or_insert(next);
        let experts: Vec<u16> = list
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| {
                let id = s.parse::<u64>().map_err(|e| err(n, format!("expert id {s:?}: {e}")))?;
                trace_id(id, "expert id").map_err(|r| err(n, r))
            })
            .collect::<Result<_, _>>()?;
        if experts.is_empty() {
            return Err(err(n, "no expert ids".into()));
        }
        for (rank, e) in experts.into_iter().enumerate() {
            rows.push((step, layer, rank as u32, Phase::Decode, e, 0.0));
        }
    }
    let routes = build_routes(rows);
    Ok(Trace { shape: infer_shape(&routes), expert_bytes: Vec::new(), routes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_in_any_spelling() {
        let t = parse(
            "Layer ID,Batch Number,Token,Activated Expert IDs\n0,0,0,\"[3, 7]\"\n1,0,0,1 2\n0,0,1,3;5\n",
            "m.csv",
        )
        .unwrap();
        assert_eq!(t.shape.layers, 2);
        assert_eq!(t.shape.experts, 8);
        assert_eq!(t.shape.top_k, 2);
        assert_eq!(t.routes.len(), 3);
        assert_eq!(t.routes[2].experts, vec![(3, 0.0), (5, 0.0)]);
        let e = parse("Layer ID,Batch Number,Token,Activated Expert IDs\n0,x,0,1\n", "m.csv");
        assert!(e.unwrap_err().to_string().starts_with("m.csv:2:"));
    }
}
