//! Helpers shared by floe-io's tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use floe_io::{DataFile, IoEngine, Priority, ReadRequest};

/// Deterministic pseudo-random content, so a wrong offset shows as wrong bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// A scratch directory on the work tree's filesystem (ext4 here: O_DIRECT works).
pub fn disk_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A scratch directory on tmpfs (O_DIRECT refused), or None with a loud message.
pub fn tmpfs_dir() -> Option<tempfile::TempDir> {
    let shm = PathBuf::from("/dev/shm");
    match tempfile::tempdir_in(&shm) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPING tmpfs part: cannot use /dev/shm ({e})");
            None
        }
    }
}

/// One demand read through the engine, waited for; returns the bytes or the error text.
pub fn read_once(
    engine: &IoEngine,
    file: &Arc<DataFile>,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, floe_io::IoError> {
    let slot = engine.arena().alloc().expect("a free slot");
    engine
        .submit(ReadRequest {
            tag: offset ^ len as u64,
            file: Arc::clone(file),
            offset,
            len,
            slot,
            priority: Priority::Demand,
            cancel: None,
            segments: Vec::new(),
        })
        .unwrap();
    let done = engine.completions().recv().unwrap();
    assert_eq!(done.tag, offset ^ len as u64);
    let out = done.bytes(engine.arena()).map(|b| b.to_vec()).map_err(clone_err);
    engine.arena().free(done.slot).unwrap();
    out
}

fn clone_err(e: &floe_io::IoError) -> floe_io::IoError {
    floe_io::IoError::Config(e.to_string())
}

/// A ramfs mounted on a fresh directory (Linux only) (ramfs refuses O_DIRECT on every kernel, unlike tmpfs
/// which accepts it since Linux 6.6). Needs root; None with a loud message otherwise.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct RamFs {
    pub dir: tempfile::TempDir,
}

#[cfg(target_os = "linux")]
impl RamFs {
    pub fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let target = std::ffi::CString::new(dir.path().to_str()?).ok()?;
        // SAFETY: all pointers are valid NUL-terminated strings living across the call.
        let rc = unsafe {
            libc::mount(c"ramfs".as_ptr(), target.as_ptr(), c"ramfs".as_ptr(), 0, std::ptr::null())
        };
        if rc != 0 {
            eprintln!(
                "SKIPPING ramfs fallback test: cannot mount ramfs ({}); needs root",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Self { dir })
    }
}

#[cfg(target_os = "linux")]
impl Drop for RamFs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.dir.path().to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path; MNT_DETACH never blocks on busy mounts.
        unsafe {
            libc::umount2(target.as_ptr(), libc::MNT_DETACH);
        }
    }
}
