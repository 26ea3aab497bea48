//! Linux: O_DIRECT, the alignment the kernel asks for (statx DIOALIGN, else the block device's
//! logical block size), and posix_fadvise to drop cached pages.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

pub fn open_direct(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)
}

/// The alignment direct reads of this file need, or 0 if unknown.
pub fn direct_alignment(file: &File) -> usize {
    let from_statx = statx_dio_align(file);
    if from_statx > 0 {
        return from_statx;
    }
    // Older kernels: the logical block size of the device the file lives on.
    let Ok(meta) = file.metadata() else { return 0 };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let path = format!("/sys/dev/block/{major}:{minor}/queue/logical_block_size");
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn statx_dio_align(file: &File) -> usize {
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open, the empty path with AT_EMPTY_PATH names the fd itself, and stx is a
    // valid, writable statx struct for the duration of the call.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return 0;
    }
    (stx.stx_dio_offset_align as usize).max(stx.stx_dio_mem_align as usize)
}

pub fn drop_page_cache(file: &File) {
    drop_cached_range(file, 0, 0);
}

pub fn drop_cached_range(file: &File, offset: u64, len: u64) {
    // SAFETY: plain syscall on an open fd; len 0 means to the end of the file. Advice only: a
    // failure leaves the pages cached, which is harmless.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        );
    }
}
