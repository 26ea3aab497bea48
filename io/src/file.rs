//! Files opened for slab reads: direct (O_DIRECT on Linux, F_NOCACHE on macOS) where the
//! filesystem allows it, buffered otherwise, with the alignment direct reads need.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::aligned::AlignedBuf;
use crate::error::{IoError, Result};

/// The smallest alignment floe uses for direct reads, whatever the device reports.
pub const MIN_ALIGN: usize = 4096;

/// How a file's bytes reach memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    /// Around the page cache (O_DIRECT on Linux, F_NOCACHE on macOS): reads must be aligned.
    Direct,
    /// Through the page cache.
    Buffered,
}

/// A file open for reading, with the mode it got and the alignment its reads use.
#[derive(Debug)]
pub struct DataFile {
    path: PathBuf,
    file: File,
    mode: FileMode,
    align: usize,
}

static DIRECT_REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);

impl DataFile {
    /// Opens `path` for direct reads if `want_direct` and the filesystem allows it; falls back to
    /// buffered reads (logged once per process, with the reason) where O_DIRECT is refused.
    pub fn open(path: &Path, want_direct: bool) -> Result<Self> {
        let open_err = |source| IoError::Open { path: path.to_path_buf(), source };
        if want_direct {
            match os::open_direct(path) {
                Ok(file) => {
                    let align = os::direct_alignment(&file).max(MIN_ALIGN);
                    // Some filesystems accept the open flag and refuse the read: probe one block.
                    match probe_direct_read(&file, align) {
                        Ok(()) => {
                            return Ok(Self {
                                path: path.to_path_buf(),
                                file,
                                mode: FileMode::Direct,
                                align,
                            })
                        }
                        Err(e) => log_direct_refused(path, &e),
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => log_direct_refused(path, &e),
                Err(e) => return Err(open_err(e)),
            }
        }
        let file = File::open(path).map_err(open_err)?;
        Ok(Self { path: path.to_path_buf(), file, mode: FileMode::Buffered, align: MIN_ALIGN })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Direct or buffered.
    pub fn mode(&self) -> FileMode {
        self.mode
    }

    /// Alignment of offsets, lengths and buffers for direct reads (the device's logical block
    /// size, at least 4096).
    pub fn align(&self) -> usize {
        self.align
    }

    /// The alignment reads of this file are rounded to: [`align`](Self::align) when direct,
    /// 1 when buffered. A read of `offset` lands `offset % read_align()` bytes into its buffer.
    pub fn read_align(&self) -> usize {
        match self.mode {
            FileMode::Direct => self.align,
            FileMode::Buffered => 1,
        }
    }

    /// Current length in bytes (asks the OS: the file may have changed since it was opened).
    pub fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|source| IoError::Open { path: self.path.clone(), source })
    }

    /// True when the file is empty now.
    pub fn is_empty(&self) -> Result<bool> {
        self.len().map(|l| l == 0)
    }

    /// The descriptor, for the backends.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Drops the file's pages from the page cache (for cold buffered measurements).
    pub fn drop_page_cache(&self) {
        os::drop_page_cache(&self.file);
    }
}

/// Asks the OS to drop `len` bytes of `file` from `offset` from the page cache: for bytes read
/// once into memory of floe's own (resident weights), whose cached copy would only crowd out
/// the memory that holds them (and the huge pages they want).
pub fn drop_cached(file: &File, offset: u64, len: u64) {
    os::drop_cached_range(file, offset, len);
}

fn log_direct_refused(path: &Path, e: &std::io::Error) {
    if !DIRECT_REFUSED_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            path = %path.display(),
            "direct I/O refused by the filesystem ({e}); reading through the page cache instead"
        );
    }
}

/// Reads the first block directly, to learn whether the filesystem really does direct reads.
fn probe_direct_read(file: &File, align: usize) -> std::io::Result<()> {
    let mut buf = AlignedBuf::zeroed(align, align)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::OutOfMemory, e.to_string()))?;
    loop {
        // SAFETY: buf is an owned, aligned allocation of buf.len() bytes, valid for writes for
        // the whole call; the fd is open for reading.
        let n = unsafe {
            libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0 as libc::off_t)
        };
        if n >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(target_os = "linux")]
#[path = "file_linux.rs"]
mod os;

#[cfg(target_os = "macos")]
#[path = "file_macos.rs"]
mod os;

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod os {
    //! Portable fallback: no direct I/O, plain buffered reads.
    use std::fs::File;
    use std::path::Path;
    pub fn open_direct(_path: &Path) -> std::io::Result<File> {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    }
    pub fn direct_alignment(_file: &File) -> usize {
        super::MIN_ALIGN
    }
    pub fn drop_page_cache(_file: &File) {}
    pub fn drop_cached_range(_file: &File, _offset: u64, _len: u64) {}
}
