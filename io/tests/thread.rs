//! The I/O thread's contract: demand before prefetch, queued prefetches cancellable, slots never
//! freed while the kernel may write into them, correct bytes under late, reordered, short and
//! interrupted reads, and a clean fallback when io_uring is refused.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use floe_io::testing::{ChaosConfig, Gate};
// The backend and config types are only named by the x86_64 seccomp tests below.
#[cfg(target_arch = "x86_64")]
use floe_io::{BackendKind, IoConfig};
use floe_io::{CancelToken, IoEngine, IoError, Priority, ReadRequest, ReadSegment, SlabArena};

const SLOT: usize = 64 * 1024;

fn calm() -> ChaosConfig {
    ChaosConfig {
        threads: 1,
        max_delay: Duration::ZERO,
        short_read_chance: 0.0,
        interrupt_chance: 0.0,
        error_chance: 0.0,
        seed: 1,
    }
}

fn fixture(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = disk_dir();
    let path = dir.path().join("data.bin");
    let data = pattern(len, 42);
    write_file(&path, &data);
    (dir, path, data)
}

fn request(
    engine: &IoEngine,
    file: &Arc<floe_io::DataFile>,
    tag: u64,
    priority: Priority,
    cancel: Option<CancelToken>,
) -> ReadRequest {
    let mut slot = engine.arena().alloc().expect("free slot");
    engine.arena().bytes_mut(&mut slot).fill(0xAB);
    ReadRequest {
        tag,
        file: Arc::clone(file),
        offset: tag * 4096,
        len: 4096,
        slot,
        priority,
        cancel,
        segments: Vec::new(),
    }
}

#[test]
fn demand_reads_go_before_queued_prefetches() {
    let (_d, path, _) = fixture(1 << 20);
    let gate = Gate::closed();
    let arena = SlabArena::new(16, SLOT, 4096).unwrap();
    let engine = IoEngine::start_chaos(arena, 1, calm(), Some(gate.clone())).unwrap();
    let file = engine.open_file(&path).unwrap();
    engine.submit(request(&engine, &file, 0, Priority::Demand, None)).unwrap();
    for t in 1..=4 {
        engine.submit(request(&engine, &file, 100 + t, Priority::Prefetch, None)).unwrap();
    }
    for t in 1..=3 {
        engine.submit(request(&engine, &file, t, Priority::Demand, None)).unwrap();
    }
    gate.open();
    let order: Vec<u64> = (0..8).map(|_| engine.completions().recv().unwrap().tag).collect();
    assert_eq!(order, vec![0, 1, 2, 3, 101, 102, 103, 104]);
}

#[test]
fn cancelled_prefetches_are_dropped_before_submission() {
    let (_d, path, data) = fixture(1 << 20);
    let gate = Gate::closed();
    let arena = SlabArena::new(16, SLOT, 4096).unwrap();
    let engine = IoEngine::start_chaos(arena, 1, calm(), Some(gate.clone())).unwrap();
    let file = engine.open_file(&path).unwrap();
    engine.submit(request(&engine, &file, 0, Priority::Demand, None)).unwrap();
    let tokens: Vec<CancelToken> = (1..=6).map(|_| CancelToken::new()).collect();
    for (i, tok) in tokens.iter().enumerate() {
        let req = request(&engine, &file, i as u64 + 1, Priority::Prefetch, Some(tok.clone()));
        engine.submit(req).unwrap();
    }
    for tok in tokens.iter().skip(1).step_by(2) {
        tok.cancel(); // tags 2, 4, 6, while they wait behind the held demand read
    }
    gate.open();
    for _ in 0..7 {
        let done = engine.completions().recv().unwrap();
        let tag = done.tag;
        if tag != 0 && tag.is_multiple_of(2) {
            assert!(matches!(done.result, Err(IoError::Cancelled)), "tag {tag}");
            // Never read: the slot still holds what the requester left in it.
            assert!(engine.arena().bytes(&done.slot).iter().all(|&b| b == 0xAB));
        } else {
            let off = tag as usize * 4096;
            assert_eq!(done.bytes(engine.arena()).unwrap(), &data[off..off + 4096]);
        }
        engine.arena().free(done.slot).unwrap();
    }
    assert_eq!(engine.stats().cancelled, 3);
    assert_eq!(engine.stats().reads, 4);
}

#[test]
fn slots_in_flight_outlive_the_requester() {
    let (_d, path, _) = fixture(1 << 20);
    let gate = Gate::closed();
    let arena = SlabArena::new(8, SLOT, 4096).unwrap();
    let engine = IoEngine::start_chaos(Arc::clone(&arena), 4, calm(), Some(gate.clone())).unwrap();
    let file = engine.open_file(&path).unwrap();
    for t in 0..6 {
        engine.submit(request(&engine, &file, t, Priority::Prefetch, None)).unwrap();
    }
    assert_eq!(arena.free_count(), 2);
    // Wait until the I/O thread has handed 4 reads (its queue depth) to the backend.
    let t0 = std::time::Instant::now();
    while engine.stats().submitted < 4 {
        assert!(t0.elapsed() < Duration::from_secs(10), "reads never submitted");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The requester goes away while reads are held in flight.
    let dropper = std::thread::spawn(move || drop(engine));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!dropper.is_finished(), "engine dropped while the kernel still owned buffers");
    assert!(arena.free_count() < 8, "slots freed while reads were in flight");
    gate.open();
    dropper.join().unwrap();
    // Every slot came home once its read completed, even with nobody listening.
    assert_eq!(arena.free_count(), 8);
}

#[test]
fn chaos_reads_are_exact_and_every_request_completes() {
    let (_d, path, data) = fixture(4 << 20);
    let reference = std::fs::File::open(&path).unwrap();
    for seed in 1..=3u64 {
        let arena = SlabArena::new(12, SLOT, 4096).unwrap();
        let config = ChaosConfig { seed, threads: 4, ..ChaosConfig::default() };
        let engine = IoEngine::start_chaos(arena, 8, config, None).unwrap();
        let file = engine.open_file(&path).unwrap();
        let mut rng = seed * 7919;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let total = 400;
        let mut submitted = 0;
        let mut completed = 0;
        let mut expect = std::collections::HashMap::new();
        while completed < total {
            while submitted < total {
                let Some(slot) = engine.arena().alloc() else { break };
                let offset = next() % (data.len() as u64 - SLOT as u64);
                let prio = if next() % 3 == 0 { Priority::Prefetch } else { Priority::Demand };
                // Every other request is three segments into thirds of the slot (as a GGUF
                // expert's gate, up and down are read).
                let (len, segments) = if next() % 2 == 0 {
                    ((next() % (SLOT as u64 - 8192)) as usize + 1, Vec::new())
                } else {
                    let third = SLOT / 3 / 4096 * 4096;
                    let mut seg = |k: usize| ReadSegment {
                        file: None,
                        offset: next() % (data.len() as u64 - SLOT as u64),
                        len: (next() % (third as u64 - 8192)) as usize + 1,
                        dst: k * third,
                    };
                    let segs = vec![seg(1), seg(2)];
                    ((next() % (third as u64 - 8192)) as usize + 1, segs)
                };
                let mut ranges = vec![(offset, len)];
                ranges.extend(segments.iter().map(|s| (s.offset, s.len)));
                expect.insert(submitted, ranges);
                let req = ReadRequest {
                    tag: submitted,
                    file: Arc::clone(&file),
                    offset,
                    len,
                    slot,
                    priority: prio,
                    cancel: None,
                    segments,
                };
                engine.submit(req).unwrap();
                submitted += 1;
            }
            let done = engine
                .completions()
                .recv_timeout(Duration::from_secs(10))
                .expect("a completion within 10 s: lost wake-up?");
            let ranges = &expect[&done.tag];
            let bytes = engine.arena().bytes(&done.slot);
            let views: Vec<_> = std::iter::once(done.result.as_ref().unwrap().clone())
                .chain(done.segments.clone())
                .collect();
            assert_eq!(views.len(), ranges.len(), "seed {seed} tag {}", done.tag);
            for (k, (&(offset, len), view)) in ranges.iter().zip(&views).enumerate() {
                let mut want = vec![0; len];
                reference.read_exact_at(&mut want, offset).unwrap();
                assert!(
                    bytes[view.clone()] == want[..],
                    "seed {seed} tag {} segment {k}",
                    done.tag
                );
            }
            engine.arena().free(done.slot).unwrap();
            completed += 1;
        }
        assert_eq!(engine.stats().reads, total);
    }
}

#[test]
fn injected_disk_errors_are_reported_with_the_path_and_never_hang() {
    let (_d, path, _) = fixture(1 << 20);
    let arena = SlabArena::new(8, SLOT, 4096).unwrap();
    let config = ChaosConfig { error_chance: 0.3, seed: 5, ..ChaosConfig::default() };
    let engine = IoEngine::start_chaos(arena, 4, config, None).unwrap();
    let file = engine.open_file(&path).unwrap();
    let mut errors = 0;
    for round in 0..10 {
        for t in 0..8 {
            let tag = round * 8 + t;
            let mut req = request(&engine, &file, tag % 200, Priority::Demand, None);
            req.tag = tag;
            engine.submit(req).unwrap();
        }
        for _ in 0..8 {
            let done = engine.completions().recv_timeout(Duration::from_secs(10)).unwrap();
            if let Err(e) = &done.result {
                assert!(e.to_string().contains("data.bin"), "{e}");
                errors += 1;
            }
            engine.arena().free(done.slot).unwrap();
        }
    }
    assert!(errors > 0, "no error was injected");
    assert_eq!(engine.stats().errors, errors);
}

/// Blocks io_uring_setup with a seccomp filter on this thread (and threads it starts), the way
/// a container runtime does, and checks the engine falls back to the pread pool.
#[cfg(target_arch = "x86_64")]
#[test]
fn io_uring_refused_by_seccomp_falls_back_to_pread() {
    let (_d, path, data) = fixture(256 * 1024);
    std::thread::spawn(move || {
        deny_io_uring_setup();
        let arena = SlabArena::new(4, SLOT, 4096).unwrap();
        let config = IoConfig { backend: Some(BackendKind::Uring), ..IoConfig::default() };
        let engine = IoEngine::start(arena, config).unwrap();
        assert_eq!(engine.backend(), BackendKind::Pread);
        let file = engine.open_file(&path).unwrap();
        assert_eq!(read_once(&engine, &file, 12_345, 50_000).unwrap(), data[12_345..62_345]);
    })
    .join()
    .unwrap();
}

#[cfg(target_arch = "x86_64")]
fn deny_io_uring_setup() {
    const IO_URING_SETUP: u32 = 425;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let ret_errno = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    let filter = [
        // Check the architecture, then the syscall number.
        libc::sock_filter { code: 0x20, jt: 0, jf: 0, k: 4 }, // ld arch
        libc::sock_filter { code: 0x15, jt: 1, jf: 0, k: AUDIT_ARCH_X86_64 },
        libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
        libc::sock_filter { code: 0x20, jt: 0, jf: 0, k: 0 }, // ld nr
        libc::sock_filter { code: 0x15, jt: 0, jf: 1, k: IO_URING_SETUP },
        libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: ret_errno },
        libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut _ };
    // SAFETY: prctl with valid arguments; prog and filter outlive the call (the kernel copies).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let rc = libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog);
        assert_eq!(rc, 0, "seccomp: {}", std::io::Error::last_os_error());
    }
}
