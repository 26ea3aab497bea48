//! Steady-state decode allocates nothing: a counting global allocator watches every thread, the
//! kernel pool's and the I/O thread's included. The tests of this binary take turns (`SERIAL`),
//! so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use floe::kernels::ops::KvDType;
use floe::runtime::{Session, SessionOptions};
use floe_kernels::DType;

/// Counts allocations (and reallocations) while `COUNTING` is set.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Held by each test for its whole run.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Steady-state decode makes no heap allocation on any thread, for each weight format and KV
/// cache type, with one thread and with a pool.
#[test]
fn steady_state_decode_allocates_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let models = [DType::Q8_0, DType::Q4_0, DType::Bf16]
        .map(|dtype| (format!("tiny {dtype}"), floe_tests::synth_small(dir.path(), dtype)))
        .into_iter()
        .chain(
            [
                "tiny-qwen3.5",
                "tiny-glm4.5",
                "tiny-qwen3-next",
                "tiny-minimax-m2",
                "tiny-gemma4",
                "tiny-glm5",
                "tiny-deepseek-v4",
            ]
            .map(|p| (p.to_string(), floe_tests::synth_preset(dir.path(), p, DType::Q8_0))),
        );
    for (dtype, packed) in models {
        for threads in [1, 2] {
            let m = floe_tests::load(&packed, threads);
            for kv_dtype in [KvDType::F16, KvDType::Q8_0, KvDType::F32, KvDType::Q4_0, KvDType::Tq3]
            {
                let mut s = Session::new(SessionOptions {
                    ctx: Some(64),
                    kv: floe::KvTypes::all(kv_dtype),
                });
                let mut tok = floe_tests::argmax(m.step(&mut s, &[5, 6, 7, 8, 9], false).unwrap());
                // Warm up: the first decode steps size the scratch for one token.
                for _ in 0..2 {
                    tok = floe_tests::argmax(m.step(&mut s, &[tok], false).unwrap());
                }
                ALLOCATIONS.store(0, Ordering::SeqCst);
                COUNTING.store(true, Ordering::SeqCst);
                for _ in 0..20 {
                    tok = floe_tests::argmax(m.step(&mut s, &[tok], false).unwrap());
                }
                COUNTING.store(false, Ordering::SeqCst);
                let n = ALLOCATIONS.load(Ordering::SeqCst);
                assert_eq!(n, 0, "{dtype} x{threads} {kv_dtype:?}: {n} allocations in 20 steps");
            }
        }
    }
}

/// The same for a streamed engine: gate prefetch (the next layer's router applied ahead) with
/// each cache policy, once the cache holds what the decode reads. Misses (reads from disk) are
/// not in the steady state measured here.
#[test]
fn steady_state_streamed_decode_with_gate_prefetch_allocates_nothing() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use std::sync::Arc;

    use floe::formats::dense::DenseWeights;
    use floe::pipeline::{CacheMode, PrefetchMode, StreamingConfig, StreamingExperts};
    use floe::runtime::Model;

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = floe_tests::synth_small(dir.path(), DType::Q8_0);
    let ef = packed.expert_file().unwrap();
    let every_expert = packed.manifest.config.layers * packed.manifest.config.experts;
    let live = floe::cache::PolicyKind::ALL.into_iter().filter(|k| !k.is_offline());
    for policy in live {
        let cache = CacheMode::Policy(policy);
        for threads in [1, 2] {
            let cfg = StreamingConfig {
                cache,
                cache_bytes: (every_expert as u64 + 1) * ef.slot_bytes as u64,
                prefetch: PrefetchMode::Gate,
                io: None,
                queue_depth: 4,
                shrinkable: false,
            };
            let src = Arc::new(StreamingExperts::open(&packed, &cfg).unwrap());
            let dense = DenseWeights::load(&packed).unwrap();
            let config = packed.manifest.config.clone();
            let m = Model::new(config, dense, Box::new(Arc::clone(&src)), threads).unwrap();
            let mut s = Session::new(SessionOptions { ctx: Some(96), ..Default::default() });
            // A prompt long enough to route to every expert, then a few steps: the cache holds
            // everything the decode reads from here on.
            let prompt: Vec<u32> = (3..40).collect();
            let mut tok = floe_tests::argmax(m.step(&mut s, &prompt, false).unwrap());
            for _ in 0..4 {
                tok = floe_tests::argmax(m.step(&mut s, &[tok], false).unwrap());
            }
            let misses = src.stats().cache.misses;
            ALLOCATIONS.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            for _ in 0..20 {
                tok = floe_tests::argmax(m.step(&mut s, &[tok], false).unwrap());
            }
            COUNTING.store(false, Ordering::SeqCst);
            let n = ALLOCATIONS.load(Ordering::SeqCst);
            assert_eq!(src.stats().cache.misses, misses, "{policy:?}: the steady state missed");
            assert_eq!(n, 0, "streamed {policy:?} x{threads}: {n} allocations in 20 steps");
        }
    }
}
