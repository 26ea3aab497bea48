//! `floe bench-io`: GB/s of random aligned slab reads per backend, slab size and queue depth.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use floe::io::BackendKind;
use floe_cli::bench_io::{ensure_file, fio_reference, measure};
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
    /// Measure each point this many times and report medians. With --fio the runs are
    /// sandwiched (fio, floe, fio, floe, ..., fio): each floe run is compared with the mean of
    /// the fio runs just before and after it, and the ratio shown is the median of those (a
    /// shared disk's speed drifts within seconds; the sandwich cancels a steady drift).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

/// Median over runs of `floe[i] / fio reference around run i`: with one fio run per floe run
/// plus a closing one (`fio.len() == floe.len() + 1`) the reference is the mean of the fio runs
/// just before and after; with one fio run each, the one just before.
fn sandwich_ratio(floe: &[f64], fio: &[f64]) -> f64 {
    let mut ratios: Vec<f64> = floe
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let reference = match fio.get(i + 1) {
                Some(&after) if fio.len() > floe.len() => (fio[i] + after) / 2.0,
                _ => fio[i.min(fio.len() - 1)],
            };
            x / reference
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
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
            if a.fio && a.repeat > 1 {
                // The closing slice of the sandwich.
                fio_runs.push(fio_reference(&a.file, slab, qd, a.bytes)?);
            }
            let fio_speeds: Vec<f64> = fio_runs.iter().map(|f| f.gb_per_s).collect();
            let fio = (!fio_runs.is_empty()).then(|| median_by(fio_runs, |f| f.gb_per_s));
            for backend_runs in runs {
                let ratio = fio.as_ref().map(|_| {
                    let speeds: Vec<f64> = backend_runs.iter().map(|p| p.gb_per_s).collect();
                    sandwich_ratio(&speeds, &fio_speeds)
                });
                let p = median_by(backend_runs, |p| p.gb_per_s);
                if a.json {
                    let mut v = serde_json::to_value(&p)?;
                    if let (Some(f), Some(r)) = (&fio, ratio) {
                        v["fio_gb_per_s"] = f.gb_per_s.into();
                        v["fio_iomem"] = f.iomem.into();
                        v["ratio_to_fio"] = r.into();
                    }
                    println!("{v}");
                } else {
                    let fio_cols = fio
                        .as_ref()
                        .zip(ratio)
                        .map(|(f, r)| {
                            format!(" {:>10.3} {:>8.1}%  {}", f.gb_per_s, 100.0 * r, f.iomem)
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

#[cfg(test)]
mod tests {
    use super::sandwich_ratio;

    #[test]
    fn sandwich_ratio_cancels_a_steady_drift() {
        // The disk speeds up by 0.2 GB/s per run; floe always reads at 90 % of the device.
        let fio = [2.0, 2.4, 2.8, 3.2];
        let floe = [0.9 * 2.2, 0.9 * 2.6, 0.9 * 3.0];
        assert!((sandwich_ratio(&floe, &fio) - 0.9).abs() < 1e-12);
        // One run each: the fio run just before.
        assert!((sandwich_ratio(&[1.5], &[2.0]) - 0.75).abs() < 1e-12);
        // Median of the per-run ratios, not a ratio of medians.
        let r = sandwich_ratio(&[1.0, 3.0, 2.0], &[2.0, 2.0, 2.0, 2.0]);
        assert!((r - 1.0).abs() < 1e-12);
    }
}
