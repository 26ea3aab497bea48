//! How many bytes per second each I/O backend turns into slabs in memory: random slab-aligned
//! reads through floe's I/O thread, by slab size and queue depth.
//!
//! The file is `FLOE_BENCH_FILE` (default `target/floe-ssd-bench.bin`, created if missing) of
//! `FLOE_BENCH_FILE_SIZE` bytes (default 4GiB). Put it on the SSD to measure. Buffered runs drop
//! the file's pages before each sample, so every backend reads cold. Compare with
//! `floe bench-io --fio` for the device reference.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use floe::io::BackendKind;
use floe_cli::bench_io::{ensure_file, measure};

fn bench_file() -> (PathBuf, u64) {
    let path = std::env::var_os("FLOE_BENCH_FILE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/floe-ssd-bench.bin")
    });
    let size = std::env::var("FLOE_BENCH_FILE_SIZE")
        .ok()
        .and_then(|s| s.parse::<bytesize::ByteSize>().ok())
        .map(|b| b.as_u64())
        .unwrap_or(4 << 30);
    ensure_file(&path, size, |_| {}).expect("create the bench file");
    (path, size)
}

fn ssd_bandwidth(c: &mut Criterion) {
    let (path, _) = bench_file();
    for backend in BackendKind::ALL {
        let mut group = c.benchmark_group(format!("ssd_bandwidth/{backend}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        for slab in [256u64 << 10, 1 << 20, 4 << 20, 16 << 20] {
            for qd in [1usize, 4, 16] {
                group.throughput(Throughput::Bytes(slab));
                let id = BenchmarkId::new(format!("slab={}KiB", slab >> 10), format!("qd={qd}"));
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        let p = measure(&path, backend, slab, qd, iters * slab).expect("reads");
                        // measure() reads at least 2*qd slabs; scale to the iterations asked.
                        Duration::from_secs_f64(p.seconds * (iters * slab) as f64 / p.bytes as f64)
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, ssd_bandwidth);
criterion_main!(benches);
