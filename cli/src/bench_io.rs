//! Random aligned slab reads through the I/O thread: how many bytes per second a backend turns
//! into slabs in memory. Shared by `floe bench-io` and the `ssd_bandwidth` criterion bench.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use floe_io::{BackendKind, IoConfig, IoEngine, Priority, ReadRequest, SlabArena};
use rand::{Rng, SeedableRng};

use floe::{Error, Result};

/// The reader spins for completions while at most this many bytes are in flight...
const SPIN_WHILE_IN_FLIGHT: u64 = 4 << 20;
/// ...and reads are at most this large (the next completion is then due within about a
/// millisecond at this machine's 2-3 GB/s).
const SPIN_UP_TO_SLAB: u64 = 2 << 20;
/// How long it spins before sleeping.
const READER_SPIN: Duration = Duration::from_millis(2);

/// One measured point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IoPoint {
    /// The backend actually used (after fallbacks).
    pub backend: String,
    /// Bytes per read.
    pub slab_bytes: u64,
    /// Reads kept in flight.
    pub qd: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Wall time from the first submission to the last completion.
    pub seconds: f64,
    /// `bytes / seconds / 1e9`.
    pub gb_per_s: f64,
    /// Whether the file was read with direct I/O.
    pub direct: bool,
}

/// Makes `path` `size` bytes of incompressible data when it does not exist, reporting progress
/// as bytes written so far; an existing file of at least `size` bytes is read as it is. An
/// existing shorter file is an error, never overwritten: it may be a model.
pub fn ensure_file(path: &Path, size: u64, mut progress: impl FnMut(u64)) -> Result<bool> {
    if let Ok(m) = std::fs::metadata(path) {
        if m.len() >= size {
            return Ok(false);
        }
        return Err(Error::Invalid(format!(
            "{} exists and holds {} bytes, less than --size {size}: floe does not overwrite an \
             existing file with test data (give --size {} or less, or a path that does not exist)",
            path.display(),
            m.len(),
            m.len()
        )));
    }
    let werr = |source| Error::Write { path: path.to_path_buf(), source };
    let tmp = path.with_extension("partial");
    let mut f =
        std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(&tmp).map_err(werr)?);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0xF10E);
    let mut chunk = vec![0u8; 8 << 20];
    let mut written = 0u64;
    while written < size {
        rng.fill(&mut chunk[..]);
        let n = chunk.len().min((size - written) as usize);
        f.write_all(&chunk[..n]).map_err(werr)?;
        written += n as u64;
        progress(written);
    }
    let f = f.into_inner().map_err(|e| werr(e.into_error()))?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)?;
    Ok(true)
}

/// Reads `bytes` worth of random slab-aligned `slab`-byte ranges of `path` with `qd` reads in
/// flight through an [`IoEngine`] on `backend`. Buffered runs start cold: the file's pages are
/// dropped from the page cache first.
pub fn measure(
    path: &Path,
    backend: BackendKind,
    slab: u64,
    qd: usize,
    bytes: u64,
) -> Result<IoPoint> {
    let file_len = std::fs::metadata(path)
        .map_err(|source| floe_io::IoError::Open { path: path.to_path_buf(), source })?
        .len();
    if slab == 0 || !slab.is_multiple_of(4096) {
        return Err(Error::Invalid(format!(
            "slab size {slab} must be a non-zero multiple of 4096"
        )));
    }
    let slabs_in_file = file_len / slab;
    if slabs_in_file == 0 {
        return Err(Error::Invalid(format!(
            "{} is {file_len} bytes, smaller than one {slab}-byte slab",
            path.display()
        )));
    }
    let qd = qd.max(1);
    let arena = SlabArena::new(qd, slab as usize, 4096)?;
    let engine = IoEngine::start(
        arena,
        IoConfig { backend: Some(backend), queue_depth: qd, register_buffers: true },
    )?;
    let file = engine.open_file(path)?;
    file.drop_page_cache();
    let reads = (bytes / slab).max(qd as u64 * 2);
    // Fresh offsets every run, as fio picks them: a repeated sequence would be served by
    // whatever cache sits under the device (a VM host's page cache, a drive's DRAM).
    let mut rng = rand::rngs::SmallRng::from_entropy();
    let (mut submitted, mut completed) = (0u64, 0u64);
    let start = Instant::now();
    while completed < reads {
        while submitted < reads {
            let Some(slot) = engine.arena().alloc() else { break };
            let offset = rng.gen_range(0..slabs_in_file) * slab;
            engine.submit(ReadRequest {
                tag: submitted,
                file: std::sync::Arc::clone(&file),
                offset,
                len: slab as usize,
                slot,
                priority: Priority::Demand,
                cancel: None,
                segments: Vec::new(),
            })?;
            submitted += 1;
        }
        // With little in flight and short reads, a futex wake-up per read (100-200 us here)
        // leaves the device idle for a good share of each read, so the reader spins for the
        // completion. Otherwise it sleeps: with more in flight the device stays busy while the
        // reader wakes, and on 2 vCPUs a spinning reader takes the core the completion path
        // needs (1 MiB reads at qd 16: 2.3 GB/s spinning, 3.0 sleeping; 4 MiB at qd 1: 75-89 %
        // of fio spinning, 89-102 % sleeping).
        let in_flight = (submitted - completed) * slab;
        let spin = if in_flight <= SPIN_WHILE_IN_FLIGHT && slab <= SPIN_UP_TO_SLAB {
            READER_SPIN
        } else {
            Duration::ZERO
        };
        let done = engine.next_completion_spinning(spin)?;
        let result = done.result.map(|_| ());
        engine.arena().free(done.slot)?;
        result?;
        completed += 1;
    }
    let seconds = start.elapsed().max(Duration::from_nanos(1)).as_secs_f64();
    let total = reads * slab;
    let kind = match (engine.backend(), file.mode()) {
        (k, floe_io::FileMode::Buffered) if k != BackendKind::Buffered => format!("{k}(buffered)"),
        (k, _) => k.to_string(),
    };
    Ok(IoPoint {
        backend: kind,
        slab_bytes: slab,
        qd,
        bytes: total,
        seconds,
        gb_per_s: total as f64 / seconds / 1e9,
        direct: file.mode() == floe_io::FileMode::Direct,
    })
}

/// Bytes of free explicit huge pages (`HugePages_Free * Hugepagesize` in /proc/meminfo).
fn free_huge_page_bytes() -> u64 {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else { return 0 };
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    field("HugePages_Free:") * field("Hugepagesize:") * 1024
}

/// fio's figure for the same access pattern.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FioReference {
    /// GB/s (1e9 bytes per second).
    pub gb_per_s: f64,
    /// How fio's buffers were allocated: `shmhuge` (huge pages, like floe's arena) or `malloc`.
    pub iomem: &'static str,
}

/// What fio delivers for the same access pattern: random reads of `slab` bytes, `qd` deep,
/// O_DIRECT, io_uring with registered buffers; in huge-page memory when enough huge pages are
/// reserved (`/proc/sys/vm/nr_hugepages`), as floe's arena is, since on some machines (VMs
/// with few DMA segments per request) 4 KiB-page buffers alone halve the throughput.
pub fn fio_reference(path: &Path, slab: u64, qd: usize, bytes: u64) -> Result<FioReference> {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let huge = free_huge_page_bytes() >= slab * qd as u64 + (4 << 20);
    let mut args = vec![
        "--name=floe-ref".to_string(),
        format!("--filename={}", path.display()),
        "--direct=1".into(),
        "--ioengine=io_uring".into(),
        "--rw=randread".into(),
        format!("--bs={slab}"),
        format!("--iodepth={qd}"),
        format!("--size={}", size / slab * slab),
        format!("--io_size={}", (bytes / slab).max(qd as u64 * 2) * slab),
        "--numjobs=1".into(),
        "--randrepeat=0".into(),
        "--fixedbufs".into(),
        "--output-format=json".into(),
    ];
    if huge {
        args.push("--iomem=shmhuge".into());
    }
    let out = std::process::Command::new("fio").args(&args).output().map_err(|e| Error::Tool {
        tool: "fio",
        reason: format!("cannot run fio ({e}); install it (apt-get install fio) or drop --fio"),
    })?;
    if !out.status.success() {
        return Err(Error::Tool {
            tool: "fio",
            reason: String::from_utf8_lossy(&out.stderr).into(),
        });
    }
    // fio may print notes before the JSON document.
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text.find('{').map(|i| &text[i..]).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::Tool { tool: "fio", reason: format!("unreadable JSON output: {e}") })?;
    let bw = v["jobs"][0]["read"]["bw_bytes"]
        .as_f64()
        .ok_or_else(|| Error::Tool { tool: "fio", reason: "no read bandwidth in output".into() })?;
    Ok(FioReference { gb_per_s: bw / 1e9, iomem: if huge { "shmhuge" } else { "malloc" } })
}

#[cfg(test)]
mod ensure_file_tests {
    use super::*;

    /// A file shorter than asked for is refused and left as it was; a missing one is written.
    #[test]
    fn an_existing_short_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.gguf");
        std::fs::write(&model, b"GGUF and some tensors").unwrap();
        let e = ensure_file(&model, 1 << 20, |_| {}).unwrap_err().to_string();
        assert!(e.contains("does not overwrite"), "{e}");
        assert_eq!(std::fs::read(&model).unwrap(), b"GGUF and some tensors");
        assert!(!ensure_file(&model, 4, |_| {}).unwrap(), "long enough: read as it is");
        let fresh = dir.path().join("fresh.bin");
        assert!(ensure_file(&fresh, 4096, |_| {}).unwrap());
        assert_eq!(std::fs::metadata(&fresh).unwrap().len(), 4096);
    }
}
