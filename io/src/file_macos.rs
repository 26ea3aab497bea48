//! macOS: no O_DIRECT; `F_NOCACHE` on an ordinary descriptor keeps reads out of the unified
//! buffer cache, which is what Flash-MoE relies on.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

pub fn open_direct(path: &Path) -> std::io::Result<File> {
    let file = File::open(path)?;
    // SAFETY: fcntl on an fd we own; F_NOCACHE takes an int argument.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_NOCACHE, 1) };
    if rc == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

pub fn direct_alignment(_file: &File) -> usize {
    // F_NOCACHE needs no alignment, but page-aligned reads avoid the kernel's bounce copies.
    super::MIN_ALIGN
}

pub fn drop_page_cache(_file: &File) {
    // F_NOCACHE files never enter the cache; buffered ones are dropped by the OS as it likes.
}

pub fn drop_cached_range(_file: &File, _offset: u64, _len: u64) {
    // The OS drops buffered pages as it likes; macOS has no per-range advice to drop them.
}
