//! `floe sim`: replay a routing trace through cache policies and hold them against Belady.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use floe::cache::sim::{
    learn_usage, score_predictors, simulate, simulate_per_layer, simulate_pinned, zipf_fit,
    PinSource, SimResult,
};
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
    /// Pin the most used experts for good (as `floe run --pin-mb`): a share of each capacity
    /// (`90%`) or a slot count. Each policy manages the rest; Belady stays unpinned.
    #[arg(long)]
    pins: Option<String>,
    /// Where the pins are learned: `hindsight` (the replayed steps themselves) or
    /// `prefix:SHARE` (the first SHARE of the steps, which are then not replayed, by any policy
    /// or by Belady).
    #[arg(long, default_value = "hindsight")]
    pins_from: String,
    /// Start each policy from the use counts learned as --pins-from says, as `floe run --usage`
    /// does live (`POLICY+prior` rows; of floe's policies, moe reads them).
    #[arg(long)]
    prior: bool,
    /// Also replay each policy with one cache per layer instead of one shared cache: every
    /// layer gets the slots of its largest routing, and the rest goes to layers as the most
    /// used experts (learned as --pins-from says) are spread (`POLICY/layer` rows).
    #[arg(long)]
    per_layer: bool,
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
    let source = match a.pins_from.as_str() {
        "hindsight" => PinSource::Hindsight,
        p => match p.strip_prefix("prefix:").map(str::parse::<f64>) {
            Some(Ok(share)) if (0.0..1.0).contains(&share) => PinSource::Prefix(share),
            _ => anyhow::bail!("--pins-from {p:?}: hindsight or prefix:SHARE (0 <= SHARE < 1)"),
        },
    };
    // (result, Belady's hit ratio, Belady's misses) per policy and capacity.
    let mut results: Vec<(SimResult, f64, u64)> = Vec::new();
    let mut replayed = trace.accesses(a.phase).len();
    for &cap in &capacities {
        // The most used experts, best first, as --pins-from learns them, and what to replay
        // (without the steps they were learned from).
        let (usage, rest) = if a.pins.is_some() || a.per_layer || a.prior {
            let (usage, rest) = learn_usage(&trace, a.phase, source);
            (Some(usage), Some(rest))
        } else {
            (None, None)
        };
        let learned = usage.as_ref().map_or_else(Vec::new, |u| u.hottest(total));
        let prior = usage.as_ref().filter(|_| a.prior);
        let pins = match &a.pins {
            Some(p) => {
                let slots = parse_capacity(p, cap).context("--pins")?;
                learned[..slots.min(learned.len())].to_vec()
            }
            None => Vec::new(),
        };
        let replay = rest.as_ref().unwrap_or(&trace);
        replayed = replay.accesses(a.phase).len();
        let belady = simulate(replay, a.phase, PolicyKind::Belady, cap, &config)
            .with_context(|| format!("capacity {cap}"))?;
        for &kind in &kinds {
            let r = if kind == PolicyKind::Belady {
                belady.clone()
            } else {
                simulate_pinned(replay, a.phase, kind, cap, &config, (&pins, prior))?
            };
            results.push((r, belady.hit_ratio, belady.misses));
            if a.per_layer && kind != PolicyKind::Belady {
                let (r, _) = simulate_per_layer(replay, a.phase, kind, cap, &config, &learned)?;
                results.push((r, belady.hit_ratio, belady.misses));
            }
        }
    }
    let predictors = score_predictors(&trace, a.phase);
    let zipf = zipf_fit(&trace, a.phase);
    if a.json {
        for (r, b, bm) in &results {
            let mut v = serde_json::to_value(r)?;
            v["belady_hit_ratio"] = (*b).into();
            v["ratio_to_belady"] = (if *b > 0.0 { r.hit_ratio / b } else { 0.0 }).into();
            v["belady_misses"] = (*bm).into();
            v["reads_to_belady"] = reads_to_belady(r, *bm).into();
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
            replayed,
            a.phase,
            zipf.head_quarter,
            zipf.all_used
        );
        if a.pins.is_some() {
            println!("pins learned from {}", a.pins_from);
        }
        println!(
            "{:<10} {:>7} {:>6} {:>9} {:>8} {:>7} {:>11} {:>9} {:>12}",
            "policy",
            "slots",
            "cap",
            "hit ratio",
            "misses",
            "pinned",
            "bytes read",
            "/ belady",
            "reads/belady"
        );
        for (r, b, bm) in &results {
            println!(
                "{:<10} {:>7} {:>5.1}% {:>9.3} {:>8} {:>7} {:>11} {:>8.1}% {:>11.2}x",
                r.policy,
                r.capacity_slots,
                100.0 * r.capacity_fraction,
                r.hit_ratio,
                r.misses,
                r.pinned,
                human(r.bytes_read),
                if *b > 0.0 { 100.0 * r.hit_ratio / b } else { 0.0 },
                reads_to_belady(r, *bm)
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

/// Slabs read (misses and pins) over Belady's misses.
fn reads_to_belady(r: &SimResult, belady_misses: u64) -> f64 {
    (r.misses + r.pinned) as f64 / belady_misses.max(1) as f64
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
