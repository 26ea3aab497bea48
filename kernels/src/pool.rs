//! `KernelPool`: one persistent set of worker threads per model that stays inside a token.
//!
//! ggml-style rather than fork/join: the calling thread is one of the participants, workers
//! that have just finished an operation spin for the next one for a short while ([`SPIN`])
//! before they park, and the work of an operation is handed out as chunk indices from one
//! atomic counter. A decode step issues a few pool operations per layer; with a fork/join pool
//! each one would cost the caller a hand-off and a wake-up, here the next operation usually
//! finds the workers still spinning.
//!
//! Results do not depend on the number of threads: a chunk is computed the same way whichever
//! thread claims it.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::KernelError;

/// How long an idle worker watches for the next operation before it parks. Long enough to span
/// the gap between two products of one token, short enough that a token waiting for a slab
/// read does not keep a core busy (the I/O thread needs it).
pub const SPIN: Duration = Duration::from_micros(200);

/// One operation: the participant body, called with the participant's index.
type Job = dyn Fn(usize) + Sync;

/// What a worker reads: a pointer to the dispatcher's `&Job` (a fat reference, so the job is a
/// thin pointer to it).
struct Shared {
    /// Bumped once per operation; workers wait for it to change.
    epoch: AtomicU64,
    /// The current operation, valid while `remaining > 0` for this epoch.
    job: AtomicPtr<&'static Job>,
    /// Workers that have not finished the current operation.
    remaining: AtomicUsize,
    /// Workers parked on `wake`.
    sleepers: AtomicUsize,
    /// A worker's body panicked during the current operation.
    panicked: AtomicBool,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    spin: Duration,
}

/// A thread pool for the kernels, made once and reused for every call.
pub struct KernelPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One operation at a time (several sequences may share a model).
    dispatch: Mutex<()>,
}

impl std::fmt::Debug for KernelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPool").field("threads", &self.threads()).finish()
    }
}

impl KernelPool {
    /// A pool of `threads` participants (0: one per core): the calling thread and
    /// `threads - 1` workers. `FLOE_POOL_SPIN_US` overrides [`SPIN`].
    pub fn new(threads: usize) -> Result<Self, KernelError> {
        let threads = match threads {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let spin = std::env::var("FLOE_POOL_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_micros)
            .unwrap_or(SPIN);
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            remaining: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            spin,
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("floe-kernel-{i}"))
                .spawn(move || worker(&s, i))
                .map_err(|e| KernelError::Pool(e.to_string()))?;
            workers.push(handle);
        }
        Ok(Self { shared, workers, dispatch: Mutex::new(()) })
    }

    /// Participants, the calling thread included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `body(participant)` once on every participant (index 0 on the calling thread) and
    /// returns when all have finished. A panic in any participant is re-raised here, after
    /// every participant is done.
    pub fn broadcast(&self, body: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            return body(0);
        }
        let _one_at_a_time = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // Workers dereference the job only between the epoch bump below and their decrement of
        // `remaining`; `Finish` (also on unwind) waits for `remaining == 0` before this frame,
        // and so `body`, can go away.
        // SAFETY: a lifetime extension only (same type otherwise); the reference never outlives
        // `body`'s borrow, by the wait just described.
        let job: &'static Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Job>(body) };
        let slot: &&'static Job = &job;
        s.job.store(slot as *const &'static Job as *mut &'static Job, Ordering::SeqCst);
        s.remaining.store(self.workers.len(), Ordering::SeqCst);
        s.panicked.store(false, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let finish = Finish(s);
        body(0);
        drop(finish);
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kernel worker panicked");
        }
    }

    /// Calls `f(i)` for every `i < count` on all participants, indices claimed one at a time
    /// from a shared counter.
    pub fn for_each_index(&self, count: usize, f: &(dyn Fn(usize) + Sync)) {
        let next = AtomicUsize::new(0);
        self.broadcast(&|_| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return;
            }
            f(i);
        });
    }

    /// Splits `data` into chunks of `chunk` elements and calls `f(index, chunk)` for each, on
    /// all participants; chunks are claimed one at a time from a shared counter.
    pub fn for_each_chunk<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let chunk = chunk.max(1);
        let n = data.len().div_ceil(chunk);
        let (len, base) = (data.len(), SendPtr(data.as_mut_ptr()));
        let next = AtomicUsize::new(0);
        self.broadcast(&|_| {
            let base = &base;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let start = i * chunk;
                let end = (start + chunk).min(len);
                // SAFETY: `fetch_add` hands each index to exactly one participant, so the
                // ranges start..end are disjoint and inside `data`, which the exclusive borrow
                // keeps alive and untouched by anyone else until `broadcast` returns.
                let part =
                    unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
                f(i, part);
            }
        });
    }
}

/// The body of [`KernelPool::for_each_chunk_pair`]: chunk index and the two chunks.
pub type ChunkPairFn<'a, A, B> = dyn Fn(usize, &mut [A], &mut [B]) + Sync + 'a;

impl KernelPool {
    /// Like [`for_each_chunk`](Self::for_each_chunk) over two slices at once: chunk `i` of `a`
    /// (`chunk_a` elements) and chunk `i` of `b` (`chunk_b` elements) go to the same call.
    /// Both must hold the same number of chunks.
    pub fn for_each_chunk_pair<A: Send, B: Send>(
        &self,
        a: &mut [A],
        chunk_a: usize,
        b: &mut [B],
        chunk_b: usize,
        f: &ChunkPairFn<'_, A, B>,
    ) {
        let (chunk_a, chunk_b) = (chunk_a.max(1), chunk_b.max(1));
        let n = a.len().div_ceil(chunk_a);
        assert_eq!(n, b.len().div_ceil(chunk_b), "for_each_chunk_pair: chunk counts differ");
        let (len_a, base_a) = (a.len(), SendPtr(a.as_mut_ptr()));
        let (len_b, base_b) = (b.len(), SendPtr(b.as_mut_ptr()));
        let next = AtomicUsize::new(0);
        self.broadcast(&|_| {
            let (base_a, base_b) = (&base_a, &base_b);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let (sa, sb) = (i * chunk_a, i * chunk_b);
                let (ea, eb) = ((sa + chunk_a).min(len_a), (sb + chunk_b).min(len_b));
                // SAFETY: as in `for_each_chunk`: each index goes to one participant, so the
                // ranges of `a` and of `b` it forms are disjoint, in bounds (`n` chunks in
                // each, checked above), and the exclusive borrows keep both slices alive and
                // unshared until `broadcast` returns.
                let (pa, pb) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(base_a.0.add(sa), ea - sa),
                        std::slice::from_raw_parts_mut(base_b.0.add(sb), eb - sb),
                    )
                };
                f(i, pa, pb);
            }
        });
    }
}

/// A raw pointer the participants of one `for_each_chunk` share (each touches disjoint parts).
struct SendPtr<T>(*mut T);
// SAFETY: only used inside `for_each_chunk`, whose participants write disjoint chunks.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// How many spins pass between two reads of the clock while waiting.
const CLOCK_EVERY: u32 = 64;

/// Waits until every worker has finished the current operation (on return or unwind).
struct Finish<'a>(&'a Shared);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let s = self.0;
        let start = Instant::now();
        let mut spins = 0u32;
        while s.remaining.load(Ordering::SeqCst) > 0 {
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(CLOCK_EVERY) || start.elapsed() < Duration::from_millis(5) {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        s.job.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

fn worker(s: &Shared, index: usize) {
    // The epoch at creation (0), not whatever it is once this thread runs: an operation
    // dispatched before the thread got going must still be seen as new.
    let mut seen = 0;
    loop {
        let since = Instant::now();
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::SeqCst) {
                return;
            }
            if s.epoch.load(Ordering::SeqCst) != seen {
                break;
            }
            // The clock is read once every CLOCK_EVERY spins: reading it each time made the
            // spinning worker slower to see a new operation.
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(CLOCK_EVERY) || since.elapsed() < s.spin {
                std::hint::spin_loop();
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        seen = s.epoch.load(Ordering::SeqCst);
        let job = s.job.load(Ordering::SeqCst);
        // SAFETY: the epoch changed, so a dispatcher stored a live job pointer before bumping it
        // and will not clear it (nor let the job's frame end) until this worker decrements
        // `remaining` below (see `broadcast` and `Finish`).
        let body: &Job = unsafe { *job };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(index))).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.remaining.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for KernelPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_once_on_any_thread_count_and_back_to_back() {
        for threads in [1, 2, 3, 5] {
            let pool = KernelPool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            for round in 0..300 {
                let len = 1 + (round * 37) % 1000;
                let mut v = vec![0u32; len];
                pool.for_each_chunk(&mut v, 7, &|i, c| {
                    for (j, x) in c.iter_mut().enumerate() {
                        *x += (i * 7 + j) as u32 + 1;
                    }
                });
                assert!(v.iter().enumerate().all(|(j, &x)| x == j as u32 + 1), "{threads} {round}");
                if round % 100 == 99 {
                    // Let the workers park, then wake them with the next operation.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    #[test]
    fn chunk_pairs_meet_once_with_their_own_index() {
        for threads in [1, 2, 3] {
            let pool = KernelPool::new(threads).unwrap();
            for n in [1, 2, 9, 64] {
                let (mut a, mut b) = (vec![0usize; n * 3], vec![0usize; n * 5 - 2]);
                pool.for_each_chunk_pair(&mut a, 3, &mut b, 5, &|i, ca, cb| {
                    ca.iter_mut().for_each(|x| *x += i + 1);
                    cb.iter_mut().for_each(|x| *x += i + 1);
                });
                assert!(a.iter().enumerate().all(|(j, &x)| x == j / 3 + 1), "{threads} {n}");
                assert!(b.iter().enumerate().all(|(j, &x)| x == j / 5 + 1), "{threads} {n}");
            }
        }
    }

    #[test]
    fn a_panicking_body_is_reraised_after_everyone_finished() {
        let pool = KernelPool::new(3).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.broadcast(&|i| {
                if i == 2 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        // The pool still works.
        let mut v = vec![0u8; 100];
        pool.for_each_chunk(&mut v, 3, &|_, c| c.fill(1));
        assert!(v.iter().all(|&x| x == 1));
    }

    #[test]
    fn shared_by_threads_one_operation_at_a_time() {
        let pool = Arc::new(KernelPool::new(2).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mut v = vec![0usize; 333];
                        pool.for_each_chunk(&mut v, 10, &|_, c| c.fill(t));
                        assert!(v.iter().all(|&x| x == t));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
