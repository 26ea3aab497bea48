//! Steady-state decode allocates nothing: a counting global allocator watches every thread, the
//! kernel pool's included. One test in this binary, so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use floe::formats::dense::DenseWeights;
use floe::formats::packed::PackedModel;
use floe::kernels::ops::KvDType;
use floe::runtime::experts::ResidentExperts;
use floe::runtime::{Model, Session, SessionOptions};
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

fn synth(dir: &std::path::Path, dtype: DType) -> PackedModel {
    let mut shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    (shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.expert_ffn) =
        (128, 4, 2, 32, 96);
    let path = dir.join(dtype.name());
    floe::formats::synth::synth(&shape, &path, dtype, 3, &mut |_, _| {}).unwrap();
    PackedModel::open(&path, false).unwrap()
}

fn model(packed: &PackedModel, threads: usize) -> Model {
    Model::new(
        packed.manifest.config.clone(),
        DenseWeights::load(packed).unwrap(),
        Box::new(ResidentExperts::load(packed).unwrap()),
        threads,
    )
    .unwrap()
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap()
}

/// Steady-state decode makes no heap allocation on any thread, for each weight format and KV
/// cache type, with one thread and with a pool.
#[test]
fn steady_state_decode_allocates_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for dtype in [DType::Q8_0, DType::Q4_0, DType::Bf16] {
        let packed = synth(dir.path(), dtype);
        for threads in [1, 2] {
            let m = model(&packed, threads);
            for kv_dtype in [KvDType::F16, KvDType::Q8_0, KvDType::F32] {
                let mut s = Session::new(SessionOptions { ctx: Some(64), kv_dtype });
                let mut tok = argmax(m.step(&mut s, &[5, 6, 7, 8, 9], false).unwrap());
                // Warm up: the first decode steps size the scratch for one token.
                for _ in 0..2 {
                    tok = argmax(m.step(&mut s, &[tok], false).unwrap());
                }
                ALLOCATIONS.store(0, Ordering::SeqCst);
                COUNTING.store(true, Ordering::SeqCst);
                for _ in 0..20 {
                    tok = argmax(m.step(&mut s, &[tok], false).unwrap());
                }
                COUNTING.store(false, Ordering::SeqCst);
                let n = ALLOCATIONS.load(Ordering::SeqCst);
                assert_eq!(n, 0, "{dtype} x{threads} {kv_dtype:?}: {n} allocations in 20 steps");
            }
        }
    }
}
