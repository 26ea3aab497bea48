//! floe-io: aligned direct reads of expert slabs on a dedicated I/O thread.
//!
//! - [`SlabArena`]: one 2 MiB-aligned, zeroed allocation carved into equal slots; a [`Slot`]
//!   token is the right to one slot's bytes.
//! - [`IoEngine`]: the I/O thread. It owns a read backend ([`BackendKind`]: io_uring with
//!   O_DIRECT and registered buffers, a pread thread pool, or buffered reads through the page
//!   cache), takes [`ReadRequest`]s on two priority channels and returns [`ReadDone`]s in the
//!   order reads finish.
//! - [`DataFile`]: a file opened direct where the filesystem allows it, buffered otherwise.
//!
//! Fallbacks, each logged once: io_uring refused by the kernel -> `pread`; O_DIRECT refused by
//! the filesystem (tmpfs, some FUSE) -> buffered reads of that file. `FLOE_IO=uring|pread|
//! buffered` forces a backend.

#![warn(missing_docs)]

mod aligned;
mod arena;
mod backend;
mod engine;
mod error;
mod file;
mod huge;
mod thread;

pub use aligned::AlignedBuf;
pub use arena::{SlabArena, Slot, ARENA_ALIGN};
pub use backend::BackendKind;
pub use engine::{
    CancelToken, IoConfig, IoEngine, IoStats, Priority, ReadDone, ReadRequest, ReadSegment,
    SubmitError, COMPLETION_SPIN,
};
pub use error::{IoError, Result};
pub use file::{drop_cached, DataFile, FileMode, MIN_ALIGN};
pub use huge::HugeBuf;

/// Test support: a fault-injecting backend for tests of code built on the I/O thread.
#[doc(hidden)]
pub mod testing {
    pub use crate::backend::chaos::{ChaosConfig, Gate};
    pub use crate::backend::faults::{FaultPlan, FaultTarget};
}
