//! Scratch space for the fuzz targets: the readers under test open files by path (GGUF and
//! safetensors are memory-mapped), so each input is written to a file on tmpfs first.

use std::path::PathBuf;

/// A directory of this process on /dev/shm (tmpfs: no disk I/O per execution).
pub fn scratch(name: &str) -> PathBuf {
    let base = std::env::var_os("FLOE_FUZZ_DIR").map(PathBuf::from).unwrap_or_else(|| "/dev/shm".into());
    let dir = base.join(format!("floe-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("fuzz scratch directory");
    dir
}
