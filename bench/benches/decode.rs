//! Decode tokens per second over a synthetic model streamed under a memory budget: the slab
//! cache holds a quarter of the experts (`FLOE_BENCH_CACHE_FRACTION` overrides), per cache mode
//! and prefetch. The model is `FLOE_BENCH_MODEL`, or the `demo` preset written to
//! `target/floe-bench-demo` on first use. `Throughput::Elements` counts generated tokens.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use floe::formats::dense::DenseWeights;
use floe::formats::packed::PackedModel;
use floe::pipeline::{PrefetchMode, StreamingConfig, StreamingExperts};
use floe::runtime::{Model, Session};

fn model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOE_BENCH_MODEL") {
        return PathBuf::from(p);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/floe-bench-demo");
    if PackedModel::open(&dir, false).is_err() {
        let shape = floe::formats::synth::SynthShape::preset("demo").expect("preset");
        floe::formats::synth::synth(&shape, &dir, floe::kernels::DType::Q4_0, 0, &mut |_, _| {})
            .expect("synth");
    }
    dir
}

fn decode(c: &mut Criterion) {
    let dir = model_dir();
    let packed = PackedModel::open(&dir, false).expect("model");
    let fraction: f64 = std::env::var("FLOE_BENCH_CACHE_FRACTION")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.25);
    let budget = (packed.manifest.experts_bytes() as f64 * fraction) as u64;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let prompt: Vec<u32> =
        "The quick brown fox jumps over the lazy dog.".bytes().map(u32::from).collect();
    let mut group = c.benchmark_group("decode");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(1));
    for (cache, prefetch) in [("lru", "gate"), ("lru", "none"), ("moe", "gate"), ("none", "none")] {
        let cfg = StreamingConfig {
            cache: cache.parse().expect("cache"),
            cache_bytes: budget,
            prefetch: prefetch.parse::<PrefetchMode>().expect("prefetch"),
            io: None,
            queue_depth: 16,
            shrinkable: false,
        };
        let src = Arc::new(StreamingExperts::open(&packed, &cfg).expect("streaming"));
        let dense = DenseWeights::load(&packed).expect("dense");
        let model =
            Model::new(packed.manifest.config.clone(), dense, Box::new(Arc::clone(&src)), threads)
                .expect("model");
        let mut session = Session::default();
        let mut logits = model.forward(&mut session, &prompt, false).expect("prefill");
        let mut next = floe::runtime::sampling::argmax(&logits);
        group.bench_function(BenchmarkId::new(cache, prefetch), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    if session.position() > 2000 {
                        session = Session::default();
                        logits = model.forward(&mut session, &prompt, false).expect("prefill");
                    }
                    logits = model.forward(&mut session, &[next], false).expect("decode");
                    // Vary the token so routing varies as in real text.
                    next = (floe::runtime::sampling::argmax(&logits)
                        + session.position() as u32 * 7)
                        % 256;
                }
                t.elapsed()
            })
        });
        let s = src.stats();
        eprintln!(
            "decode {cache}/{prefetch}: hit ratio {:.3}, {:.2} GB read, stall {:.1} s",
            s.cache.hit_ratio(),
            s.io_bytes as f64 / 1e9,
            s.stall_s
        );
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
