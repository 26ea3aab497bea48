//! A backend for tests: reads really happen (plain `pread`), but late, out of order, sometimes
//! short and sometimes interrupted, and completions can be held back until the test releases
//! them. It shakes out lost wake-ups, ordering assumptions and buffer ownership bugs.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender, TryRecvError};

use super::{Backend, RawDone, RawRead, Waker};
use crate::error::{IoError, Result};

/// How badly the chaos backend behaves.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// Worker threads (more threads, more reordering).
    pub threads: usize,
    /// Each read sleeps a random time up to this before it runs.
    pub max_delay: Duration,
    /// Chance (0..1) that a read returns fewer bytes than asked.
    pub short_read_chance: f64,
    /// Chance (0..1) that a read fails with EINTR or EAGAIN without reading.
    pub interrupt_chance: f64,
    /// Chance (0..1) that a read fails with EIO (a failing disk).
    pub error_chance: f64,
    /// Seed of the pseudo-random choices.
    pub seed: u64,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            threads: 3,
            max_delay: Duration::from_micros(300),
            short_read_chance: 0.2,
            interrupt_chance: 0.1,
            error_chance: 0.0,
            seed: 1,
        }
    }
}

/// Holds back every read until released: lets a test observe what is queued and in flight.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    /// A closed gate: reads wait at it.
    pub fn closed() -> Self {
        Self::default()
    }
    /// Lets every waiting and future read through.
    pub fn open(&self) {
        let (lock, cv) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
    fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut open = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
        }
    }
}

pub(crate) struct ChaosBackend {
    work_tx: Option<Sender<RawRead>>,
    done_rx: Receiver<RawDone>,
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    workers: Vec<JoinHandle<()>>,
    pending: Vec<RawRead>,
}

/// xorshift64*: enough randomness for fault injection, no dependency.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn chance(state: &mut u64, p: f64) -> bool {
    ((next(state) >> 11) as f64 / (1u64 << 53) as f64) < p
}

impl ChaosBackend {
    pub(crate) fn new(config: ChaosConfig, gate: Option<Gate>) -> Result<Self> {
        let (work_tx, work_rx) = unbounded::<RawRead>();
        let (done_tx, done_rx) = unbounded();
        let (wake_tx, wake_rx) = bounded(1);
        let mut workers = Vec::new();
        for i in 0..config.threads.max(1) {
            let (work_rx, done_tx, config, gate) =
                (work_rx.clone(), done_tx.clone(), config.clone(), gate.clone());
            let mut rng =
                config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64) | 1;
            let h = std::thread::Builder::new()
                .name(format!("floe-chaos-{i}"))
                .spawn(move || {
                    while let Ok(op) = work_rx.recv() {
                        if let Some(g) = &gate {
                            g.wait();
                        }
                        let max = config.max_delay.as_micros() as u64;
                        if max > 0 {
                            std::thread::sleep(Duration::from_micros(next(&mut rng) % max));
                        }
                        let result = if chance(&mut rng, config.error_chance) {
                            Err(std::io::Error::from_raw_os_error(libc::EIO))
                        } else if chance(&mut rng, config.interrupt_chance) {
                            let code = if next(&mut rng).is_multiple_of(2) {
                                libc::EINTR
                            } else {
                                libc::EAGAIN
                            };
                            Err(std::io::Error::from_raw_os_error(code))
                        } else {
                            // Short reads of a direct file stop at a block boundary (only
                            // end of file is unaligned), so cut at a 4 KiB multiple.
                            let len = if op.len > 4096 && chance(&mut rng, config.short_read_chance)
                            {
                                (4096 + next(&mut rng) as usize % (op.len - 4096)) & !4095
                            } else {
                                op.len
                            };
                            // SAFETY: as in the pread pool: op.buf has op.len >= len writable
                            // bytes owned by this in-flight op, and the fd is held open.
                            let n = unsafe {
                                libc::pread(op.fd, op.buf.cast(), len, op.offset as libc::off_t)
                            };
                            if n < 0 {
                                Err(std::io::Error::last_os_error())
                            } else {
                                Ok(n as usize)
                            }
                        };
                        if done_tx.send(RawDone { id: op.id, result }).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| IoError::BackendUnavailable {
                    backend: "chaos",
                    reason: e.to_string(),
                })?;
            workers.push(h);
        }
        Ok(Self { work_tx: Some(work_tx), done_rx, wake_tx, wake_rx, workers, pending: Vec::new() })
    }
}

impl Backend for ChaosBackend {
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
                recv(self.done_rx) -> d => out.push(d.map_err(|_| IoError::Disconnected)?),
                recv(self.wake_rx) -> _ => {}
            }
        }
        loop {
            match self.done_rx.try_recv() {
                Ok(d) => out.push(d),
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

impl Drop for ChaosBackend {
    fn drop(&mut self) {
        self.work_tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
