//! A backend for tests: reads really happen (plain `pread`), but late, out of order, sometimes
//! short and sometimes interrupted, and completions can be held back until the test releases
//! them. It shakes out lost wake-ups, ordering assumptions and buffer ownership bugs.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::pool::{pread_len, PoolBackend};
use super::RawRead;
use crate::error::Result;

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

/// The pread pool with a fault-injecting read in every worker.
pub(crate) fn build(config: ChaosConfig, gate: Option<Gate>) -> Result<PoolBackend> {
    PoolBackend::with_workers("floe-chaos", config.threads.max(1), |i| {
        let (config, gate) = (config.clone(), gate.clone());
        let mut rng = config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i as u64) | 1;
        Box::new(move |op: &RawRead| {
            if let Some(g) = &gate {
                g.wait();
            }
            let max = config.max_delay.as_micros() as u64;
            if max > 0 {
                std::thread::sleep(Duration::from_micros(next(&mut rng) % max));
            }
            if chance(&mut rng, config.error_chance) {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            if chance(&mut rng, config.interrupt_chance) {
                let code =
                    if next(&mut rng).is_multiple_of(2) { libc::EINTR } else { libc::EAGAIN };
                return Err(std::io::Error::from_raw_os_error(code));
            }
            // Short reads of a direct file stop at a block boundary (only end of file is
            // unaligned), so cut at a 4 KiB multiple.
            let len = if op.len() > 4096 && chance(&mut rng, config.short_read_chance) {
                (4096 + next(&mut rng) as usize % (op.len() - 4096)) & !4095
            } else {
                op.len()
            };
            pread_len(op, len)
        })
    })
}
