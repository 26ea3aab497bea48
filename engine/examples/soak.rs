//! Soak: many streamed generations on one `Engine`, resident memory sampled as they go.
//!
//! `cargo run --release -p floe --example soak -- MODEL [TOTAL_TOKENS] [PER_GENERATION]`
//! (defaults 10000 and 500). Generations run back to back, each with its own KV cache (freed at
//! its end) and a different seed, so the slab cache keeps streaming other experts; every 1,000
//! decoded tokens one JSON line gives the process's current RSS and peak RSS (VmRSS, VmHWM from
//! /proc/self/status), the decode rate and the cache counters. The last line compares every
//! peak with the one at 1,000 tokens: a leak in the engine (slabs, reads, sessions, text) shows
//! as a peak that keeps rising.

use floe::{Engine, EngineConfig, GenerateOptions, SamplingParams};

/// VmRSS and VmHWM in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() -> Result<(), floe::Error> {
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or_else(|| {
        floe::Error::Invalid("usage: soak MODEL [TOTAL_TOKENS] [PER_GENERATION]".into())
    })?;
    let number = |v: Option<String>, d: usize| v.and_then(|s| s.parse().ok()).unwrap_or(d);
    let total = number(args.next(), 10_000);
    let per_gen = number(args.next(), 500).max(1);
    let engine = Engine::open(model.as_ref(), EngineConfig::default())?;
    let prompts = ["The history of", "Once upon a time", "In a distant galaxy", "Dear diary,"];
    let (mut done, mut next_sample, mut generation) = (0usize, 1000usize, 0u64);
    let mut peaks: Vec<(usize, u64)> = Vec::new();
    let start = std::time::Instant::now();
    while done < total {
        let options = GenerateOptions {
            max_tokens: per_gen.min(total - done),
            ignore_eos: true,
            sampling: SamplingParams { temperature: 0.9, seed: generation, ..Default::default() },
            ..Default::default()
        };
        let prompt = prompts[generation as usize % prompts.len()];
        for piece in engine.generate(prompt, options)? {
            piece?;
            done += 1;
            if done == next_sample {
                let (rss, hwm) = rss_kib();
                let st = engine.stats();
                let cache = st.streaming.map(|s| s.cache).unwrap_or_default();
                println!(
                    "{{\"tokens\":{done},\"rss_kib\":{rss},\"peak_rss_kib\":{hwm},\"decode_tok_s\":{:.2},\
                     \"hit_ratio\":{:.3},\"misses\":{},\"elapsed_s\":{:.0}}}",
                    st.generation.decode_tok_s,
                    cache.hit_ratio(),
                    cache.misses,
                    start.elapsed().as_secs_f64()
                );
                peaks.push((done, hwm));
                next_sample += 1000;
            }
        }
        generation += 1;
    }
    if let Some(&(_, first)) = peaks.first() {
        let worst = peaks.iter().map(|&(_, p)| p).max().unwrap_or(first);
        let growth = (worst as f64 / first as f64 - 1.0) * 100.0;
        println!(
            "{{\"summary\":{{\"tokens\":{done},\"generations\":{generation},\"peak_at_1000_kib\":{first},\
             \"largest_peak_kib\":{worst},\"growth_pct\":{growth:.2},\"within_2_pct\":{}}}}}",
            growth <= 2.0
        );
    }
    Ok(())
}
