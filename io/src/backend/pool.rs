//! The portable backend: a small pool of threads, each doing blocking `pread`s. With files
//! opened O_DIRECT (F_NOCACHE on macOS) it is the `pread` backend; with ordinary files it is
//! `buffered`, the page-cache baseline.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender, TryRecvError};

use super::{Backend, RawDone, RawRead, Waker};
use crate::error::{IoError, Result};

/// Most threads the pool starts, however deep the queue: beyond this the device, not the thread
/// count, limits a pread pool.
const MAX_THREADS: usize = 32;

pub(crate) struct PoolBackend {
    work_tx: Option<Sender<RawRead>>,
    done_rx: Receiver<RawDone>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    workers: Vec<JoinHandle<()>>,
    pending: Vec<RawRead>,
}

/// What one worker thread does with a read: returns bytes read or the OS error.
pub(crate) type ReadFn = Box<dyn FnMut(&RawRead) -> std::io::Result<usize> + Send>;

impl PoolBackend {
    /// The pread pool: `min(queue_depth, MAX_THREADS)` threads doing plain `pread`.
    pub(crate) fn new(queue_depth: usize) -> Result<Self> {
        let threads = queue_depth.clamp(1, MAX_THREADS);
        Self::with_workers("floe-pread", threads, |_| Box::new(pread_once))
    }

    /// A pool of `threads` threads, thread `i` reading with `make(i)` (the test backend injects
    /// faults this way; everything else about the pool is shared).
    pub(crate) fn with_workers(
        name: &str,
        threads: usize,
        make: impl Fn(usize) -> ReadFn,
    ) -> Result<Self> {
        let (work_tx, work_rx) = unbounded::<RawRead>();
        let (done_tx, done_rx) = unbounded();
        // One pending wake is enough: a wake only says "look at the request channels".
        let (wake_tx, wake_rx) = bounded(1);
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let (work_rx, done_tx, mut read) = (work_rx.clone(), done_tx.clone(), make(i));
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    while let Ok(op) = work_rx.recv() {
                        let result = read(&op);
                        if done_tx.send(RawDone { id: op.id(), result }).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| IoError::BackendUnavailable {
                    backend: "pread",
                    reason: format!("cannot start a worker thread: {e}"),
                })?;
            workers.push(handle);
        }
        Ok(Self { work_tx: Some(work_tx), done_rx, wake_tx, wake_rx, workers, pending: Vec::new() })
    }
}

/// One `pread` of `op`, retried on EINTR.
pub(crate) fn pread_once(op: &RawRead) -> std::io::Result<usize> {
    pread_len(op, op.len())
}

/// `pread` of the first `len` bytes of `op`, retried on EINTR. `len` above `op.len()` is an
/// error (`EINVAL`), never a write past the buffer.
pub(crate) fn pread_len(op: &RawRead, len: usize) -> std::io::Result<usize> {
    if len > op.len() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    loop {
        // SAFETY: op.buf() is valid for op.len() >= len exclusively owned writable bytes and
        // op.fd() is open until op's RawDone is returned: the contract of RawRead::new, the only
        // way to make a RawRead. len <= op.len() is checked above.
        let n = unsafe { libc::pread(op.fd(), op.buf().cast(), len, op.offset() as libc::off_t) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Backend for PoolBackend {
    fn push(&mut self, op: RawRead) -> Result<()> {
        self.pending.push(op);
        Ok(())
    }

    fn submit(&mut self) -> Result<()> {
        let tx = self.work_tx.as_ref().ok_or(IoError::Disconnected)?;
        for op in self.pending.drain(..) {
            tx.send(op).map_err(|_| IoError::Disconnected)?;
        }
        Ok(())
    }

    fn wait(&mut self, out: &mut Vec<RawDone>, block: bool) -> Result<()> {
        if block {
            select! {
                recv(self.done_rx) -> done => out.push(done.map_err(|_| IoError::Disconnected)?),
                recv(self.wake_rx) -> _ => {}
            }
        }
        loop {
            match self.done_rx.try_recv() {
                Ok(done) => out.push(done),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(IoError::Disconnected),
            }
        }
    }

    fn waker(&self) -> Waker {
        let tx = self.wake_tx.clone();
        Arc::new(move || {
            let _ = tx.try_send(());
        })
    }
}

impl Drop for PoolBackend {
    fn drop(&mut self) {
        // Closing the work channel ends each worker after its current read; the I/O thread only
        // drops the backend once nothing is in flight, so no worker writes into freed memory.
        self.work_tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
