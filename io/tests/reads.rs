//! Every backend reads exactly the bytes std::fs reads, on a direct-capable filesystem and on
//! tmpfs (where O_DIRECT is refused and reads fall back to the page cache).

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::*;
use floe_io::{BackendKind, FileMode, IoConfig, IoEngine, IoError, SlabArena};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const FILE_LEN: usize = 3 * 1024 * 1024 + 12_345; // deliberately not block-aligned
const SLOT: usize = 1 << 20;

fn engine(kind: BackendKind, qd: usize) -> IoEngine {
    let arena = SlabArena::new(8, SLOT, 4096).unwrap();
    IoEngine::start(
        arena,
        IoConfig { backend: Some(kind), queue_depth: qd, register_buffers: true },
    )
    .unwrap()
}

fn check_random_reads(dir: &std::path::Path, expect_mode: Option<FileMode>) {
    let data = pattern(FILE_LEN, 7);
    let path = dir.join("data.bin");
    write_file(&path, &data);
    let reference = std::fs::File::open(&path).unwrap();
    for kind in BackendKind::ALL {
        let engine = engine(kind, 4);
        let file = engine.open_file(&path).unwrap();
        if kind == BackendKind::Buffered {
            assert_eq!(file.mode(), FileMode::Buffered);
        } else if let Some(mode) = expect_mode {
            assert_eq!(file.mode(), mode, "{kind} on {}", dir.display());
        }
        eprintln!("{kind} on {}: {:?}, align {}", dir.display(), file.mode(), file.align());
        let mut runner = TestRunner::new(Config { cases: 96, ..Config::default() });
        // Lengths up to a slot minus two blocks, so the aligned cover always fits.
        let strategy = (0..FILE_LEN as u64, 0..SLOT - 8192);
        runner
            .run(&strategy, |(offset, len)| {
                let len = len.min(FILE_LEN - offset as usize);
                let got = read_once(&engine, &file, offset, len).unwrap();
                let mut want = vec![0u8; len];
                reference.read_exact_at(&mut want, offset).unwrap();
                prop_assert_eq!(got.len(), want.len());
                prop_assert!(got == want, "{} bytes at {} differ ({kind})", len, offset);
                Ok(())
            })
            .unwrap();
        // Three unaligned segments into one slot (a GGUF expert's gate, up and down).
        let mut runner = TestRunner::new(Config { cases: 32, ..Config::default() });
        let third = SLOT / 3 / 4096 * 4096;
        let seg = (0..FILE_LEN as u64 - third as u64, 1..third - 8192);
        runner
            .run(&(seg.clone(), seg.clone(), seg), |(a, b, c)| {
                let slot = engine.arena().alloc().unwrap();
                let segs: Vec<_> = [b, c]
                    .iter()
                    .enumerate()
                    .map(|(k, &(offset, len))| floe_io::ReadSegment {
                        file: None,
                        offset,
                        len,
                        dst: (k + 1) * third,
                    })
                    .collect();
                let req = floe_io::ReadRequest {
                    tag: 9,
                    file: Arc::clone(&file),
                    offset: a.0,
                    len: a.1,
                    slot,
                    priority: floe_io::Priority::Demand,
                    cancel: None,
                    segments: segs,
                };
                engine.submit(req).unwrap();
                let done = engine.completions().recv().unwrap();
                let bytes = engine.arena().bytes(&done.slot).to_vec();
                let first = done.result.as_ref().unwrap().clone();
                for ((offset, len), view) in [a, b, c]
                    .into_iter()
                    .zip(std::iter::once(first).chain(done.segments.iter().cloned()))
                {
                    let mut want = vec![0u8; len];
                    reference.read_exact_at(&mut want, offset).unwrap();
                    prop_assert!(bytes[view] == want[..], "{len} bytes at {offset} ({kind})");
                }
                engine.arena().free(done.slot).unwrap();
                Ok(())
            })
            .unwrap();
        assert_eq!(engine.arena().free_count(), 8, "every slot came back");
        assert!(engine.stats().reads >= 96 + 32);
    }
}

#[test]
fn random_ranges_equal_std_fs_on_disk() {
    let dir = disk_dir();
    check_random_reads(dir.path(), Some(FileMode::Direct));
}

/// tmpfs refuses O_DIRECT before Linux 6.6 and accepts it since; either way the bytes match.
#[test]
fn random_ranges_equal_std_fs_on_tmpfs() {
    let Some(dir) = tmpfs_dir() else { return };
    check_random_reads(dir.path(), None);
}

/// ramfs refuses O_DIRECT: every direct backend falls back to buffered reads of the file.
#[cfg(target_os = "linux")]
#[test]
fn random_ranges_equal_std_fs_on_ramfs_fallback() {
    let Some(ramfs) = RamFs::mount() else { return };
    check_random_reads(ramfs.dir.path(), Some(FileMode::Buffered));
}

/// procfs refuses O_DIRECT at open: no privileges needed to see the fallback decision.
#[test]
fn direct_refused_at_open_falls_back_to_buffered() {
    let f = floe_io::DataFile::open(std::path::Path::new("/proc/version"), true).unwrap();
    assert_eq!(f.mode(), FileMode::Buffered);
}

#[test]
fn read_past_eof_is_an_error_naming_the_range() {
    let dir = disk_dir();
    let path = dir.path().join("short.bin");
    write_file(&path, &pattern(10_000, 3));
    for kind in BackendKind::ALL {
        let engine = engine(kind, 2);
        let file = engine.open_file(&path).unwrap();
        // Straddles the end.
        let err = read_once(&engine, &file, 9_000, 2_000).unwrap_err().to_string();
        assert!(err.contains("past end of file") && err.contains("9000"), "{kind}: {err}");
        // Wholly beyond.
        let err = read_once(&engine, &file, 50_000, 10).unwrap_err().to_string();
        assert!(err.contains("past end of file"), "{kind}: {err}");
        // The last byte exactly is fine.
        assert_eq!(read_once(&engine, &file, 9_999, 1).unwrap(), pattern(10_000, 3)[9_999..]);
        assert_eq!(engine.stats().errors, 2);
    }
}

#[test]
fn too_large_for_a_slot_is_refused() {
    let dir = disk_dir();
    let path = dir.path().join("big.bin");
    write_file(&path, &pattern(3 * SLOT, 5));
    let engine = engine(BackendKind::Uring, 2);
    let file = engine.open_file(&path).unwrap();
    // Exactly a slot, aligned: fine. Same length, unaligned: the aligned cover is a slot + block.
    assert_eq!(read_once(&engine, &file, 0, SLOT).unwrap().len(), SLOT);
    let err = read_once(&engine, &file, 100, SLOT).unwrap_err().to_string();
    assert!(err.contains("a slot holds"), "{err}");
}

#[test]
fn deleted_and_truncated_files_under_an_open_engine() {
    let dir = disk_dir();
    let data = pattern(1 << 20, 9);
    for kind in BackendKind::ALL {
        let path = dir.path().join(format!("victim-{kind}.bin"));
        write_file(&path, &data);
        let engine = engine(kind, 2);
        let file = engine.open_file(&path).unwrap();
        // Deleted: the open descriptor still reads the old bytes (POSIX unlink semantics).
        std::fs::remove_file(&path).unwrap();
        assert_eq!(read_once(&engine, &file, 4096, 8192).unwrap(), data[4096..4096 + 8192]);
        // Truncated: a read beyond the new end is an error, not stale or zero bytes.
        let path2 = dir.path().join(format!("trunc-{kind}.bin"));
        write_file(&path2, &data);
        let file2 = engine.open_file(&path2).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path2).unwrap().set_len(300_000).unwrap();
        let err = read_once(&engine, &file2, 500_000, 4096).unwrap_err();
        assert!(matches!(err, IoError::Config(ref m) if m.contains("past end of file")), "{err}");
        assert_eq!(read_once(&engine, &file2, 0, 1000).unwrap(), data[..1000]);
    }
}

#[test]
fn open_errors_name_the_path() {
    let engine = engine(BackendKind::Pread, 1);
    let err = engine.open_file(std::path::Path::new("/no/such/floe-file.bin")).unwrap_err();
    assert!(err.to_string().contains("/no/such/floe-file.bin"), "{err}");
}

#[test]
fn uring_registers_the_arena_as_fixed_buffers() {
    let e = engine(BackendKind::Uring, 4);
    // Root (as here and in CI) may lock memory; elsewhere registration may be refused, which
    // is a documented fallback to plain READ.
    if e.backend() == BackendKind::Uring {
        eprintln!("uring fixed buffers: {}", e.uses_fixed_buffers());
    }
    let dir = disk_dir();
    let path = dir.path().join("f.bin");
    let data = pattern(64 * 1024, 11);
    write_file(&path, &data);
    let file = e.open_file(&path).unwrap();
    assert_eq!(read_once(&e, &file, 0, data.len()).unwrap(), data);
    drop(Arc::clone(&file));
}
