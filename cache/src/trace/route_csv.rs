//! `route_trace v1` CSV: `#` header lines (`n_layer=`, `n_expert=`, `n_expert_used=`, one
//! `layer=… expert_bytes=…` per layer), then `turn,phase,step,layer,slot,expert,weight,
//! residency,expert_bytes` rows. Phase 0 is prefill, 1 decode. Replay order: step, layer, slot.

use super::{build_routes, infer_shape, trace_id, Phase, Trace};
use crate::error::CacheError;
use crate::key::MoeShape;

pub(super) fn parse(text: &str, name: &str) -> Result<Trace, CacheError> {
    let err = |line: usize, reason: String| CacheError::Trace { path: name.into(), line, reason };
    let mut header = std::collections::HashMap::new();
    let mut expert_bytes: Vec<(u16, u64)> = Vec::new();
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let kv: Vec<(&str, &str)> =
                comment.split_whitespace().filter_map(|t| t.split_once('=')).collect();
            if let (Some(l), Some(b)) = (
                kv.iter().find(|(k, _)| *k == "layer"),
                kv.iter().find(|(k, _)| *k == "expert_bytes"),
            ) {
                let l = l.1.parse().map_err(|e| err(n, format!("layer={}: {e}", l.1)))?;
                let b = b.1.parse().map_err(|e| err(n, format!("expert_bytes={}: {e}", b.1)))?;
                expert_bytes.push((l, b));
            } else {
                for (k, v) in kv {
                    header.insert(k.to_string(), v.to_string());
                }
            }
            continue;
        }
        if line.starts_with("turn,") {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 7 {
            return Err(err(
                n,
                format!("expected at least 7 comma-separated fields, found {}", f.len()),
            ));
        }
        let num = |idx: usize, what: &str| -> Result<u64, CacheError> {
            f[idx].trim().parse::<u64>().map_err(|e| err(n, format!("{what} {:?}: {e}", f[idx])))
        };
        let turn = num(0, "turn")?;
        let phase = match num(1, "phase")? {
            0 => Phase::Prefill,
            1 => Phase::Decode,
            p => return Err(err(n, format!("phase {p}: expected 0 (prefill) or 1 (decode)"))),
        };
        let step = num(2, "step")?;
        let layer = trace_id(num(3, "layer")?, "layer").map_err(|r| err(n, r))?;
        let slot = u32::try_from(num(4, "slot")?).map_err(|_| err(n, "slot too large".into()))?;
        let expert = trace_id(num(5, "expert")?, "expert").map_err(|r| err(n, r))?;
        let weight: f32 =
            f[6].trim().parse().map_err(|e| err(n, format!("weight {:?}: {e}", f[6])))?;
        rows.push(((turn, step), layer, slot, phase, expert, weight));
    }
    // Turns order before steps (steps may restart per turn): number the (turn, step) pairs in
    // that order, so no two pairs share a step whatever their size.
    let pairs: std::collections::BTreeSet<(u64, u64)> = rows.iter().map(|r| r.0).collect();
    let index: std::collections::HashMap<(u64, u64), u64> =
        pairs.into_iter().enumerate().map(|(i, p)| (p, i as u64)).collect();
    let rows = rows.into_iter().map(|(p, l, s, ph, e, w)| (index[&p], l, s, ph, e, w)).collect();
    let routes = build_routes(rows);
    let inferred = infer_shape(&routes);
    let get = |k: &str, d: u16| -> Result<u16, CacheError> {
        match header.get(k) {
            Some(v) => v.parse().map_err(|e| err(0, format!("header {k}={v}: {e}"))),
            None => Ok(d),
        }
    };
    let shape = MoeShape {
        layers: get("n_layer", inferred.layers)?,
        experts: get("n_expert", inferred.experts)?,
        top_k: get("n_expert_used", inferred.top_k)?,
    };
    if let Some(r) = routes.iter().find(|r| r.layer >= shape.layers) {
        return Err(err(
            0,
            format!("layer {} but the header says n_layer={}", r.layer, shape.layers),
        ));
    }
    if let Some(e) = routes.iter().flat_map(|r| r.experts.iter()).find(|e| e.0 >= shape.experts) {
        return Err(err(
            0,
            format!("expert {} but the header says n_expert={}", e.0, shape.experts),
        ));
    }
    let mut bytes = vec![0u64; shape.layers as usize];
    for (l, b) in expert_bytes {
        if let Some(x) = bytes.get_mut(l as usize) {
            *x = b;
        }
    }
    if bytes.iter().all(|&b| b == 0) {
        bytes.clear();
    }
    Ok(Trace { shape, expert_bytes: bytes, routes })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# route_trace v1\n# model=x n_layer=2 n_expert=4 n_expert_used=2\n\
        # layer=0 expert_bytes=100 dense_bytes=1\n# layer=1 expert_bytes=200 dense_bytes=1\n\
        turn,phase,step,layer,slot,expert,weight,residency,expert_bytes\n\
        0,1,5,1,1,2,0.3,0,0\n0,1,5,1,0,3,0.7,0,0\n0,1,5,0,0,1,0.9,0,0\n0,0,0,0,0,1,0.5,0,0\n";

    #[test]
    fn parses_and_orders() {
        let t = parse(SAMPLE, "s.csv").unwrap();
        assert_eq!(t.shape, MoeShape { layers: 2, experts: 4, top_k: 2 });
        assert_eq!(t.expert_bytes, vec![100, 200]);
        assert_eq!(t.routes.len(), 3);
        assert_eq!(t.routes[0].phase, Phase::Prefill);
        assert_eq!(t.routes[2].experts, vec![(3, 0.7), (2, 0.3)]);
    }

    #[test]
    fn turns_and_steps_of_any_size_never_collide() {
        // Before: (turn << 32) | step put turn 0 step 2^32 and turn 1 step 0 in one route.
        let t = parse(
            "turn,phase,step,layer,slot,expert,weight\n0,1,4294967296,0,0,1,0.5\n1,1,0,0,0,2,0.5\n\
             18446744073709551615,1,18446744073709551615,0,0,3,0.5\n",
            "s.csv",
        )
        .unwrap();
        let got: Vec<(u64, Vec<u16>)> =
            t.routes.iter().map(|r| (r.step, r.experts.iter().map(|e| e.0).collect())).collect();
        assert_eq!(got, vec![(0, vec![1]), (1, vec![2]), (2, vec![3])]);
    }

    #[test]
    fn ids_at_the_u16_limit_are_errors_not_overflows() {
        let row = |l: u64, e: u64| {
            format!("turn,phase,step,layer,slot,expert,weight\n0,1,0,{l},0,{e},0.5\n")
        };
        for (l, e) in [(65_535, 0), (0, 65_535), (70_000, 0)] {
            let err = parse(&row(l, e), "s.csv").unwrap_err().to_string();
            assert!(err.contains("largest id 65534"), "{l} {e}: {err}");
        }
        let t = parse(&row(65_534, 65_534), "s.csv").unwrap();
        assert_eq!((t.shape.layers, t.shape.experts), (65_535, 65_535));
        let e = parse(&SAMPLE.replace("0,1,5,0,0,1,0.9,0,0", "0,1,5,0,0,9,0.9,0,0"), "s.csv");
        assert!(e.unwrap_err().to_string().contains("n_expert=4"));
    }

    #[test]
    fn malformed_line_names_its_number() {
        let bad = SAMPLE.replace("0,1,5,0,0,1,0.9,0,0", "0,1,5,zero,0,1,0.9,0,0");
        let e = parse(&bad, "s.csv").unwrap_err().to_string();
        assert!(e.starts_with("s.csv:8:") && e.contains("layer"), "{e}");
        let e = parse(&SAMPLE.replace("0,0,0,0,0,1,0.5,0,0", "0,7,0,0,0,1,0.5,0,0"), "s.csv");
        assert!(e.unwrap_err().to_string().contains("phase 7"));
    }
}
