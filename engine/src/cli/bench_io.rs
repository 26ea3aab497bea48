//! `floe bench-io`: GB/s of random aligned slab reads per backend, slab size and queue depth.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use floe::bench_io::{ensure_file, fio_reference, measure};
use floe::io::BackendKind;
use indicatif::{ProgressBar, ProgressStyle};

use super::size::{human, parse_size};

#[derive(Debug, Args)]
pub struct BenchIoArgs {
    /// File to read (created with random bytes if missing or smaller than --size). Put it on
    /// the SSD you want to measure.
    #[arg(long, default_value = "floe-bench-io.bin")]
    file: PathBuf,
    /// Size of the file; reads land anywhere in it.
    #[arg(long, default_value = "8GiB", value_parser = parse_size)]
    size: u64,
    /// Bytes per read (comma list to sweep), multiples of 4 KiB.
    #[arg(long, default_value = "4MiB", value_parser = parse_size, value_delimiter = ',')]
    slab: Vec<u64>,
    /// Reads in flight (comma list to sweep).
    #[arg(long, default_value = "8", value_delimiter = ',')]
    qd: Vec<usize>,
    /// Backend: uring, pread, buffered, or all.
    #[arg(long, default_value = "all")]
    io: String,
    /// Bytes to read per measured point.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    bytes: u64,
    /// Also run fio on the same file with the same block size and depth (O_DIRECT, io_uring,
    /// registered buffers; huge-page buffers when enough huge pages are reserved, see the
    /// README) and print floe's share of it.
    #[arg(long)]
    fio: bool,
    /// One JSON object per measured point instead of a table.
    #[arg(long)]
    json: bool,
    /// Measure each point this many times, fio and floe alternating, and report the medians (a
    /// shared disk's speed drifts within seconds; alternating repeats keep the ratio fair).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

/// The run with the median bandwidth.
fn median_by<T: Clone>(mut v: Vec<T>, key: impl Fn(&T) -> f64) -> T {
    v.sort_by(|a, b| key(a).total_cmp(&key(b)));
    v[v.len() / 2].clone()
}

pub fn run(a: BenchIoArgs) -> anyhow::Result<()> {
    let backends: Vec<BackendKind> = if a.io == "all" {
        BackendKind::ALL.to_vec()
    } else {
        a.io.split(',').map(str::parse).collect::<Result<_, _>>()?
    };
    let (slabs, qds) = (a.slab.clone(), a.qd.clone());
    if a.size < *slabs.iter().max().unwrap_or(&0) {
        anyhow::bail!("--size {} is smaller than the largest --slab", human(a.size));
    }
    let bar = ProgressBar::new(a.size).with_style(
        ProgressStyle::with_template(
            "writing {msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(a.file.display().to_string());
    let created = ensure_file(&a.file, a.size, |n| bar.set_position(n))
        .with_context(|| format!("preparing {}", a.file.display()))?;
    if created {
        bar.finish_and_clear();
        eprintln!("wrote {} of random bytes to {}", human(a.size), a.file.display());
    } else {
        bar.finish_and_clear();
    }
    if !a.json {
        println!(
            "{:<18} {:>10} {:>4} {:>10} {:>8} {:>9}{}",
            "backend",
            "slab",
            "qd",
            "read",
            "seconds",
            "GB/s",
            if a.fio { "   fio GB/s  floe/fio  fio buffers" } else { "" }
        );
    }
    for &slab in &slabs {
        for &qd in &qds {
            let mut fio_runs = Vec::new();
            let mut runs: Vec<Vec<_>> = vec![Vec::new(); backends.len()];
            for _ in 0..a.repeat.max(1) {
                if a.fio {
                    fio_runs.push(fio_reference(&a.file, slab, qd, a.bytes)?);
                }
                for (i, &backend) in backends.iter().enumerate() {
                    runs[i].push(measure(&a.file, backend, slab, qd, a.bytes).with_context(
                        || format!("{backend} reads of {} at qd {qd}", human(slab)),
                    )?);
                }
            }
            let fio = (!fio_runs.is_empty()).then(|| median_by(fio_runs, |f| f.gb_per_s));
            for backend_runs in runs {
                let p = median_by(backend_runs, |p| p.gb_per_s);
                if a.json {
                    let mut v = serde_json::to_value(&p)?;
                    if let Some(f) = &fio {
                        v["fio_gb_per_s"] = f.gb_per_s.into();
                        v["fio_iomem"] = f.iomem.into();
                        v["ratio_to_fio"] = (p.gb_per_s / f.gb_per_s).into();
                    }
                    println!("{v}");
                } else {
                    let fio_cols = fio
                        .as_ref()
                        .map(|f| {
                            let ratio = 100.0 * p.gb_per_s / f.gb_per_s;
                            format!(" {:>10.3} {:>8.1}%  {}", f.gb_per_s, ratio, f.iomem)
                        })
                        .unwrap_or_default();
                    println!(
                        "{:<18} {:>10} {:>4} {:>10} {:>8.2} {:>9.3}{}",
                        p.backend,
                        human(p.slab_bytes),
                        p.qd,
                        human(p.bytes),
                        p.seconds,
                        p.gb_per_s,
                        fio_cols
                    );
                }
            }
        }
    }
    Ok(())
}
