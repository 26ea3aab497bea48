//! Ownership and failure on the real read path: a slot of another arena is refused by
//! `submit` and handed back; the fault-injecting wrapper fails exactly the reads it is told to
//! (prefetch only, demand only) over io_uring and over the pread pool.

mod common;

use std::sync::Arc;

use common::*;
use floe_io::testing::{FaultPlan, FaultTarget};
use floe_io::{BackendKind, IoConfig, IoEngine, IoError, Priority, ReadRequest, SlabArena};

const SLOT: usize = 64 * 1024;

fn engine(kind: BackendKind, plan: Option<FaultPlan>) -> IoEngine {
    let arena = SlabArena::new(8, SLOT, 4096).unwrap();
    let cfg = IoConfig { backend: Some(kind), queue_depth: 4, register_buffers: true };
    match plan {
        Some(p) => IoEngine::start_faulty(arena, cfg, p).unwrap(),
        None => IoEngine::start(arena, cfg).unwrap(),
    }
}

#[test]
fn a_slot_of_another_arena_is_refused_and_handed_back() {
    let dir = disk_dir();
    let path = dir.path().join("d.bin");
    write_file(&path, &pattern(4 * SLOT, 3));
    for kind in [BackendKind::Uring, BackendKind::Pread] {
        let engine = engine(kind, None);
        let file = engine.open_file(&path).unwrap();
        // A bigger arena than the engine's: its slot indices run past the engine's slots, so
        // taken at face value the kernel would write outside the engine's arena.
        let other = SlabArena::new(64, SLOT, 4096).unwrap();
        let mut taken: Vec<_> = (0..64).map(|_| other.alloc().unwrap()).collect();
        let slot = taken.pop().unwrap(); // index 63
        assert!(slot.index() as usize >= engine.arena().slot_count());
        let err = engine
            .submit(ReadRequest {
                tag: 7,
                file: Arc::clone(&file),
                offset: 0,
                len: SLOT,
                slot,
                priority: Priority::Demand,
                cancel: None,
                segments: Vec::new(),
            })
            .unwrap_err();
        assert!(matches!(err.error, IoError::ForeignSlot { .. }), "{kind}: {err}");
        assert_eq!(err.request.tag, 7);
        // The token comes back whole: its own arena takes it.
        other.free(err.request.slot).unwrap();
        for s in taken {
            other.free(s).unwrap();
        }
        assert_eq!(other.free_count(), 64);
        assert_eq!(engine.stats().submitted, 0, "{kind}: nothing reached the I/O thread");
        // The engine still works.
        assert_eq!(read_once(&engine, &file, 0, SLOT).unwrap(), pattern(4 * SLOT, 3)[..SLOT]);
    }
}

/// Submits `n` reads of `priority` and returns (successes, failures) of their completions.
fn run(
    engine: &IoEngine,
    file: &Arc<floe_io::DataFile>,
    data: &[u8],
    prio: Priority,
    n: u64,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0, 0);
    for t in 0..n {
        let slot = engine.arena().alloc().unwrap();
        let offset = (t % 4) * SLOT as u64;
        engine
            .submit(ReadRequest {
                tag: t,
                file: Arc::clone(file),
                offset,
                len: SLOT,
                slot,
                priority: prio,
                cancel: None,
                segments: Vec::new(),
            })
            .unwrap();
        let done = engine.next_completion().unwrap();
        match done.bytes(engine.arena()) {
            Ok(b) => {
                assert_eq!(b, &data[offset as usize..offset as usize + SLOT]);
                ok += 1;
            }
            Err(IoError::Read { source, path, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EIO));
                assert!(path.ends_with("d.bin"), "the error names the file");
                failed += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        engine.arena().free(done.slot).unwrap();
    }
    (ok, failed)
}

#[test]
fn faults_hit_only_the_reads_they_target_on_every_backend() {
    let dir = disk_dir();
    let path = dir.path().join("d.bin");
    let data = pattern(4 * SLOT, 5);
    write_file(&path, &data);
    for kind in [BackendKind::Uring, BackendKind::Pread] {
        // Prefetches fail after the first two; demand reads never do.
        let e = engine(kind, Some(FaultPlan::every(FaultTarget::Prefetch, 2)));
        let file = e.open_file(&path).unwrap();
        assert_eq!(run(&e, &file, &data, Priority::Demand, 6), (6, 0), "{kind}");
        assert_eq!(run(&e, &file, &data, Priority::Prefetch, 6), (2, 4), "{kind}");
        assert_eq!(run(&e, &file, &data, Priority::Demand, 3), (3, 0), "{kind}");
        assert_eq!(e.stats().errors, 4);
        assert_eq!(e.arena().free_count(), 8, "every slot came home");
        // Demand only, a bounded number: the third and fourth demand reads fail.
        let e = engine(kind, Some(FaultPlan::some(FaultTarget::Demand, 2, 2)));
        let file = e.open_file(&path).unwrap();
        assert_eq!(run(&e, &file, &data, Priority::Prefetch, 3), (3, 0), "{kind}");
        assert_eq!(run(&e, &file, &data, Priority::Demand, 6), (4, 2), "{kind}");
    }
}
