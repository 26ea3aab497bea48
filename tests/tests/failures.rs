//! The streaming pipeline under failing reads, on the real read paths (io_uring and the pread
//! pool, through the fault-injecting wrapper): failed prefetches are dropped and counted and the
//! tokens are the resident ones; failed demand reads end the generation with an error naming
//! the file; either way the slot table, the cache and the counters agree afterwards.

use std::sync::Arc;

use floe::formats::dense::DenseWeights;
use floe::formats::packed::PackedModel;
use floe::pipeline::{CacheMode, PrefetchMode, StreamingConfig, StreamingExperts};
use floe::runtime::experts::{ExpertSource, ResidentExperts};
use floe::runtime::generate::GenerateOptions;
use floe::runtime::{Model, Session};
use floe_io::testing::{FaultPlan, FaultTarget};
use floe_io::{BackendKind, IoConfig, IoEngine, SlabArena};
use floe_kernels::DType;
use floe_tests::generate;

struct Fixture {
    _dir: tempfile::TempDir,
    packed: PackedModel,
    prompt: Vec<u32>,
    want: Vec<u32>,
}

const TOKENS: usize = 12;

fn fixture() -> Fixture {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q8_0, 5, &mut |_, _| {}).unwrap();
    let packed = PackedModel::open(&path, true).unwrap();
    let prompt: Vec<u32> = (40..52).collect();
    let resident = Model::new(
        packed.manifest.config.clone(),
        DenseWeights::load(&packed).unwrap(),
        Box::new(ResidentExperts::load(&packed).unwrap()),
        1,
    )
    .unwrap();
    let (want, _) =
        generate(&resident, &mut Session::default(), &prompt, &opts(), &mut |_| Ok(true)).unwrap();
    Fixture { _dir: dir, packed, prompt, want }
}

fn opts() -> GenerateOptions {
    GenerateOptions { max_tokens: TOKENS, ignore_eos: true, ..Default::default() }
}

/// A streamed model whose reads go through `plan` on `io`, with a cache of top-k + 3 slots.
fn faulty_model(f: &Fixture, io: BackendKind, plan: FaultPlan) -> (Model, Arc<StreamingExperts>) {
    let m = &f.packed.manifest;
    let slots = m.config.top_k + 3;
    let cfg = StreamingConfig {
        cache: CacheMode::Policy(floe_cache::PolicyKind::Lru),
        cache_bytes: (slots * m.slab.slab_bytes) as u64,
        prefetch: PrefetchMode::Gate,
        io: Some(io),
        queue_depth: 4,
        shrinkable: false,
    };
    let arena = SlabArena::new(slots, m.slab.slab_bytes, 4096).unwrap();
    let engine = IoEngine::start_faulty(
        arena,
        IoConfig { backend: Some(io), queue_depth: 4, register_buffers: true },
        plan,
    )
    .unwrap();
    let src = Arc::new(StreamingExperts::open_with(&f.packed, &cfg, Some(engine)).unwrap());
    let dense = DenseWeights::load(&f.packed).unwrap();
    let model = Model::new(m.config.clone(), dense, Box::new(Arc::clone(&src)), 1).unwrap();
    (model, src)
}

fn run(f: &Fixture, model: &Model) -> Result<Vec<u32>, String> {
    generate(model, &mut Session::default(), &f.prompt, &opts(), &mut |_| Ok(true))
        .map(|(out, _)| out)
        .map_err(|e| e.to_string())
}

#[test]
fn failed_prefetches_are_dropped_and_the_tokens_are_the_resident_ones() {
    let f = fixture();
    for io in [BackendKind::Uring, BackendKind::Pread] {
        // Every prefetch after the first four fails.
        let (model, src) = faulty_model(&f, io, FaultPlan::every(FaultTarget::Prefetch, 4));
        assert_eq!(run(&f, &model).as_deref(), Ok(&f.want[..]), "{io}");
        let st = src.stats();
        assert!(st.prefetch_failed > 0, "{io}: no prefetch failed ({st:?})");
        assert_eq!(st.read_errors, st.prefetch_failed, "{io}: only prefetches fail");
        src.audit().unwrap_or_else(|e| panic!("{io}: {e}"));
    }
}

#[test]
fn failed_demand_reads_end_with_an_error_naming_the_file_and_leave_the_cache_consistent() {
    let f = fixture();
    let top_k = f.packed.manifest.config.top_k as u64;
    for io in [BackendKind::Uring, BackendKind::Pread] {
        // Every demand read from the middle of some layer on (not a multiple of top-k), and a
        // single failure mid-layer: both end the generation with the file named.
        for plan in [
            FaultPlan::every(FaultTarget::Demand, 3 * top_k + 1),
            FaultPlan::some(FaultTarget::Demand, 5 * top_k + 2, 1),
        ] {
            let (model, src) = faulty_model(&f, io, plan);
            let err = run(&f, &model).unwrap_err();
            assert!(err.contains("experts.bin"), "{io} {plan:?}: {err}");
            src.audit().unwrap_or_else(|e| panic!("{io} {plan:?}: {e}"));
            let st = src.stats();
            assert!(st.read_errors >= 1 && st.cache.load_errors >= 1, "{st:?}");
            // The source is still usable: a later generation without faults left (the single
            // failure) runs to the resident tokens.
            if plan.count == 1 {
                assert_eq!(run(&f, &model).as_deref(), Ok(&f.want[..]), "{io}: after the error");
                src.audit().unwrap();
            }
        }
    }
}

#[test]
fn any_single_failed_read_gives_the_resident_tokens_or_an_error_and_consistent_counts() {
    let f = fixture();
    for io in [BackendKind::Uring, BackendKind::Pread] {
        for after in [0, 3, 7, 13, 29] {
            let (model, src) = faulty_model(&f, io, FaultPlan::some(FaultTarget::Any, after, 1));
            match run(&f, &model) {
                Ok(out) => {
                    assert_eq!(out, f.want, "{io} after {after}");
                    assert_eq!(
                        src.stats().prefetch_failed,
                        1,
                        "{io} after {after}: only a prefetch may fail silently"
                    );
                }
                Err(e) => assert!(e.contains("experts.bin"), "{io} after {after}: {e}"),
            }
            src.audit().unwrap_or_else(|e| panic!("{io} after {after}: {e}"));
            assert_eq!(src.stats().read_errors, 1);
        }
    }
}

/// A layer the placement table does not know: the read cannot even be planned. The slot token
/// must stay home and the entry go, so the same error comes back on every try (not "slot not
/// free" or a hang), and the table stays whole.
#[test]
fn a_read_that_cannot_be_planned_loses_no_slot() {
    let f = fixture();
    let mut experts = f.packed.expert_file().unwrap();
    experts.layers[1] = None;
    let cfg = StreamingConfig {
        cache: CacheMode::Policy(floe_cache::PolicyKind::Lru),
        cache_bytes: ((f.packed.manifest.config.top_k + 1) * experts.slot_bytes) as u64,
        prefetch: PrefetchMode::None,
        io: Some(BackendKind::Pread),
        queue_depth: 4,
        shrinkable: false,
    };
    let src = StreamingExperts::open_file(experts, &f.packed.manifest.config, &cfg, None).unwrap();
    for attempt in 0..3 {
        let err = src
            .with_experts(1, &[(0, 1.0), (1, 1.0)], attempt, &mut |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer 1"), "attempt {attempt}: {err}");
        src.audit().unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
    }
    // Layer 0 still streams.
    let mut ran = Vec::new();
    src.with_experts(0, &[(2, 1.0), (3, 1.0)], 9, &mut |e, _| {
        ran.push(e);
        Ok(())
    })
    .unwrap();
    ran.sort_unstable();
    assert_eq!(ran, vec![2, 3]);
    src.audit().unwrap();
}

/// The I/O thread refuses a request (as when it has stopped): the request comes back whole, so
/// the slot token goes home and the entry goes; the generation ends with that error and the
/// table stays whole (before: the token was freed to the arena behind the slot table's back
/// and the entry stayed Loading for good).
#[test]
fn a_refused_submission_returns_its_slot() {
    let f = fixture();
    for io in [BackendKind::Uring, BackendKind::Pread] {
        let (model, src) = faulty_model(&f, io, FaultPlan::some(FaultTarget::Any, 0, 0));
        assert_eq!(run(&f, &model).as_deref(), Ok(&f.want[..]), "{io}");
        src.io().refuse_requests();
        for _ in 0..2 {
            let err = run(&f, &model).unwrap_err();
            assert!(err.contains("I/O thread has stopped"), "{io}: {err}");
            src.audit().unwrap_or_else(|e| panic!("{io}: {e}"));
        }
    }
}
