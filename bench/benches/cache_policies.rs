//! Operations per second of each cache policy on a real routing trace: one operation is one
//! demand access through the slot table (hit, or miss with eviction), plus the router report
//! after each layer. Uses ../shared/traces/gemma.route.csv, or `FLOE_BENCH_TRACE`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use floe::cache::sim::simulate;
use floe::cache::trace::{PhaseFilter, Trace};
use floe::cache::{PolicyConfig, PolicyKind};

fn cache_policies(c: &mut Criterion) {
    let path = std::env::var_os("FLOE_BENCH_TRACE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces/gemma.route.csv")
    });
    let Ok(trace) = Trace::load(&path) else {
        eprintln!("SKIPPING cache_policies: cannot read {}", path.display());
        return;
    };
    let accesses = trace.accesses(PhaseFilter::Decode).len() as u64;
    let cfg = PolicyConfig::default();
    let mut group = c.benchmark_group("cache_policies");
    group.throughput(Throughput::Elements(accesses)).sample_size(10);
    for frac in [0.05, 0.25] {
        let cap = (trace.shape.total_experts() as f64 * frac) as usize;
        for kind in PolicyKind::ALL {
            let id = BenchmarkId::new(kind.name(), format!("cap={}%", (frac * 100.0) as u32));
            group.bench_function(id, |b| {
                b.iter(|| simulate(&trace, PhaseFilter::Decode, kind, cap, &cfg).unwrap().hits)
            });
        }
    }
    group.finish();
}

criterion_group!(benches, cache_policies);
criterion_main!(benches);
