//! `floe sim`: replay a routing trace through cache policies and hold them against Belady.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use floe::cache::sim::{score_predictors, simulate, zipf_fit, SimResult};
use floe::cache::trace::{PhaseFilter, Trace};
use floe::cache::{PolicyConfig, PolicyKind};

use super::size::{human, parse_size};

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Routing trace: floe JSON lines (`floe run --trace-out`), `route_trace v1` CSV, or
    /// MoE-Beyond CSV.
    #[arg(long)]
    trace: PathBuf,
    /// Policies to compare (comma list), or `all`. Belady is always computed as the yardstick.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    cache: Vec<String>,
    /// Capacities: shares of all experts (`5%`) or slot counts (`192`), comma list.
    #[arg(long, default_value = "5%,10%,25%", value_delimiter = ',')]
    capacity: Vec<String>,
    /// Capacity as a memory budget in MiB instead (needs the slab size from the trace or
    /// --slab-bytes).
    #[arg(long)]
    cache_mb: Option<u64>,
    /// Bytes per expert slab (default: the trace's largest expert).
    #[arg(long, value_parser = parse_size)]
    slab_bytes: Option<u64>,
    /// Which steps to replay: decode, prefill or all.
    #[arg(long, default_value = "decode")]
    phase: PhaseFilter,
    /// One JSON object per policy and capacity instead of a table.
    #[arg(long)]
    json: bool,
    /// Draw hit ratio against capacity, one line per policy, as a PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub fn run(a: SimArgs) -> anyhow::Result<()> {
    let trace = Trace::load(&a.trace)?;
    let total = trace.shape.total_experts();
    anyhow::ensure!(
        total > 0 && !trace.routes.is_empty(),
        "{} holds no routing",
        a.trace.display()
    );
    let kinds: Vec<PolicyKind> = if a.cache.iter().any(|c| c == "all") {
        PolicyKind::ALL.to_vec()
    } else {
        a.cache.iter().map(|c| c.parse()).collect::<Result<_, _>>()?
    };
    let capacities: Vec<usize> = match a.cache_mb {
        Some(mb) => {
            let slab = a
                .slab_bytes
                .or_else(|| trace.expert_bytes.iter().copied().max())
                .context("--cache-mb needs --slab-bytes: this trace does not give expert sizes")?;
            vec![((mb << 20) / slab.max(1)) as usize]
        }
        None => {
            a.capacity.iter().map(|c| parse_capacity(c, total)).collect::<anyhow::Result<_>>()?
        }
    };
    let config = PolicyConfig::default();
    let mut results: Vec<(SimResult, f64)> = Vec::new();
    for &cap in &capacities {
        let belady = simulate(&trace, a.phase, PolicyKind::Belady, cap, &config)
            .with_context(|| format!("capacity {cap}"))?;
        for &kind in &kinds {
            let r = if kind == PolicyKind::Belady {
                belady.clone()
            } else {
                simulate(&trace, a.phase, kind, cap, &config)?
            };
            results.push((r, belady.hit_ratio));
        }
    }
    let predictors = score_predictors(&trace, a.phase);
    let zipf = zipf_fit(&trace, a.phase);
    if a.json {
        for (r, b) in &results {
            let mut v = serde_json::to_value(r)?;
            v["belady_hit_ratio"] = (*b).into();
            v["ratio_to_belady"] = (if *b > 0.0 { r.hit_ratio / b } else { 0.0 }).into();
            println!("{v}");
        }
        for p in &predictors {
            println!("{}", serde_json::to_value(p)?);
        }
        println!("{}", serde_json::json!({ "zipf": zipf }));
    } else {
        let s = trace.shape;
        println!(
            "{}: {} layers x {} experts, top-{}; {} accesses ({:?} phase); \
             Zipf exponent {:.2} over each layer's top quarter, {:.2} over all used experts",
            a.trace.display(),
            s.layers,
            s.experts,
            s.top_k,
            trace.accesses(a.phase).len(),
            a.phase,
            zipf.head_quarter,
            zipf.all_used
        );
        println!(
            "{:<8} {:>7} {:>6} {:>9} {:>8} {:>11} {:>9}",
            "policy", "slots", "cap", "hit ratio", "misses", "bytes read", "/ belady"
        );
        for (r, b) in &results {
            println!(
                "{:<8} {:>7} {:>5.1}% {:>9.3} {:>8} {:>11} {:>8.1}%",
                r.policy,
                r.capacity_slots,
                100.0 * r.capacity_fraction,
                r.hit_ratio,
                r.misses,
                human(r.bytes_read),
                if *b > 0.0 { 100.0 * r.hit_ratio / b } else { 0.0 }
            );
        }
        for p in &predictors {
            println!(
                "prefetch predictor {:<8} recall of the next step's experts: {:.3} ({} predictions)",
                p.predictor, p.recall, p.predictions
            );
        }
    }
    if let Some(path) = &a.plot {
        super::plot::miss_ratio_curves(path, &a.trace.display().to_string(), &results)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn parse_capacity(s: &str, total: usize) -> anyhow::Result<usize> {
    let s = s.trim();
    let slots = if let Some(p) = s.strip_suffix('%') {
        let frac: f64 = p.parse().with_context(|| format!("capacity {s:?}"))?;
        anyhow::ensure!((0.0..=100.0).contains(&frac), "capacity {s} is not a share of 0-100%");
        (total as f64 * frac / 100.0).floor() as usize
    } else {
        s.parse().with_context(|| format!("capacity {s:?}: a slot count or a percentage"))?
    };
    Ok(slots)
}
