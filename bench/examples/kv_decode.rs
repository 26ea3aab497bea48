//! Decode speed per KV cache type at a depth: the model's attention caches are filled with
//! pseudo-random rows for the first DEPTH positions (llama-bench's `-d`, without running the
//! prompt), then tokens are decoded and timed. Types run alternately, medians of ROUNDS, each
//! reported beside f16 as a ratio. Resident experts, all cores.
//!
//! `cargo run --release -p floe-bench --example kv_decode -- MODEL_DIR [DEPTHS] [TYPES] [ROUNDS]`
//! e.g. `... target/floe-demo 1024,8192,32768 f16,q8_0,q4_0,tq4,tq3 3`.

use std::time::Instant;

use floe::formats::dense::DenseWeights;
use floe::formats::packed::PackedModel;
use floe::runtime::experts::ResidentExperts;
use floe::runtime::{Model, Session, SessionOptions};
use floe::{KvDType, KvTypes};

const TOKENS: usize = 16;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .ok_or_else(|| anyhow::anyhow!("usage: kv_decode MODEL_DIR [DEPTHS] [TYPES] [ROUNDS]"))?;
    let list = |i: usize, default: &str| -> Vec<String> {
        args.get(i).map_or(default, |s| s.as_str()).split(',').map(str::to_string).collect()
    };
    let depths: Vec<usize> =
        list(1, "1024,8192,32768").iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let types: Vec<KvDType> = list(2, "f16,q8_0,q4_0,tq4,tq3")
        .iter()
        .map(|s| KvDType::parse(s).ok_or_else(|| anyhow::anyhow!("unknown type {s}")))
        .collect::<Result<_, _>>()?;
    let rounds: usize = args.get(3).map_or(Ok(3), |s| s.parse())?;
    let packed = PackedModel::open(std::path::Path::new(dir), false)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = Model::new(
        packed.manifest.config.clone(),
        DenseWeights::load(&packed)?,
        Box::new(ResidentExperts::load(&packed)?),
        threads,
    )?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("{dir}: decode tok/s after DEPTH cached positions, {threads} threads, {cpu}, medians of {rounds}");
    println!(
        "| depth | {} |",
        types.iter().map(|t| format!("{} tok/s (x f16)", t.name())).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(types.len()));
    for &depth in &depths {
        // The model's context bounds the depth (the decoded tokens need room after it).
        let depth = depth.min(model.spec.max_positions.saturating_sub(TOKENS + 4));
        let mut speeds = vec![Vec::new(); types.len()];
        for _ in 0..rounds {
            for (i, &t) in types.iter().enumerate() {
                let options = SessionOptions { ctx: Some(depth + TOKENS + 4), kv: KvTypes::all(t) };
                let mut s = Session::new(options);
                s.fill_for_benchmark(&model.spec, depth)?;
                let mut next = 1u32;
                // One token to size the scratch, then the timed ones.
                model.forward(&mut s, &[next], false)?;
                let start = Instant::now();
                for _ in 0..TOKENS {
                    let logits = model.step(&mut s, &[next], false)?;
                    next = floe::runtime::sampling::argmax(logits);
                }
                speeds[i].push(TOKENS as f64 / start.elapsed().as_secs_f64());
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let med: Vec<f64> = speeds.iter_mut().map(median).collect();
        let base = types.iter().position(|&t| t == KvDType::F16).map(|i| med[i]);
        let cells: Vec<String> = med
            .iter()
            .map(|m| match base {
                Some(b) => format!("{m:.2} ({:.2}x)", m / b),
                None => format!("{m:.2}"),
            })
            .collect();
        println!("| {depth} | {} |", cells.join(" | "));
    }
    Ok(())
}
