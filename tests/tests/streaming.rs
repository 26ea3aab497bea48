//! Streaming changes when weights arrive, never the result: with a budget of only a few slabs
//! more than one layer's top-k, every cache mode, prefetch mode and I/O backend generates the
//! golden tokens.

use std::sync::Arc;
use std::time::Duration;

use floe::formats::dense::DenseWeights;
use floe::formats::packed::PackedModel;
use floe::pipeline::{CacheMode, PrefetchMode, StreamingConfig, StreamingExperts};
use floe::runtime::generate::GenerateOptions;
use floe::runtime::{Model, Session};
use floe_io::testing::ChaosConfig;
use floe_io::{BackendKind, IoEngine, SlabArena};
use floe_kernels::DType;
use floe_tests::generate;
use floe_tests::*;

const MODES: &[&str] = &["lru", "lfu", "arc", "s3fifo", "sieve", "window", "moe", "none", "os"];

fn streaming_model(
    packed: &PackedModel,
    cfg: &StreamingConfig,
    io: Option<IoEngine>,
) -> (Model, Arc<StreamingExperts>) {
    let src = Arc::new(StreamingExperts::open_with(packed, cfg, io).unwrap());
    let dense = DenseWeights::load(packed).unwrap();
    (Model::new(packed.manifest.config.clone(), dense, Box::new(Arc::clone(&src)), 1).unwrap(), src)
}

fn golden_tokens(dir: &std::path::Path) -> (Vec<u32>, Vec<u32>) {
    let g = Golden::load(dir, "golden.safetensors");
    let ids = g.i64("input_ids").0.iter().map(|&x| x as u32).collect();
    let gen = g.i64("gen_ids").0.iter().map(|&x| x as u32).collect();
    (ids, gen)
}

#[test]
fn every_mode_prefetch_and_backend_gives_the_golden_tokens() {
    for arch in [
        "qwen3_moe",
        "qwen2_moe",
        "mixtral",
        "olmoe",
        "glm4_moe",
        "qwen3_5_moe",
        "deepseek_v3",
        "deepseek_v2",
        "gpt_oss",
        "qwen3_next",
        "minimax_m2",
        "gemma4_moe",
        "glm_moe_dsa",
        "deepseek_v4",
    ] {
        let Some(dir) = golden_dir(arch) else { return };
        let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let (packed, _) = pack_and_load(&dir, scratch.path(), DType::F32, None);
        let (ids, want) = golden_tokens(&dir);
        let slab = packed.manifest.slab.slab_bytes as u64;
        let budget = (packed.manifest.config.top_k as u64 + 2) * slab;
        // Every cache mode with every prefetcher; the read backend rotates through the three
        // over those runs (the backends deliver the same bytes whatever keeps them, and each
        // meets every cache mode across the families), which keeps the test a third as long.
        let backends = [BackendKind::Uring, BackendKind::Pread, BackendKind::Buffered];
        let mut turn = arch.len();
        for mode in MODES {
            for prefetch in PrefetchMode::ALL {
                turn += 1;
                let io = backends[turn % backends.len()];
                let cfg = StreamingConfig {
                    cache: mode.parse().unwrap(),
                    cache_bytes: budget,
                    prefetch,
                    io: Some(io),
                    queue_depth: 4,
                    shrinkable: false,
                };
                let (model, src) = streaming_model(&packed, &cfg, None);
                let opts = GenerateOptions {
                    max_tokens: want.len(),
                    ignore_eos: true,
                    prefill_chunk: 5,
                    ..Default::default()
                };
                let (out, _) =
                    generate(&model, &mut Session::default(), &ids, &opts, &mut |_| Ok(true))
                        .unwrap();
                assert_eq!(out, want, "{arch} --cache {mode} --prefetch {prefetch:?} --io {io}");
                let st = src.stats();
                assert!(
                    st.cache.misses > 0
                        && st.slots as u64 * slab
                            <= budget.max(slab * 2 * packed.manifest.config.top_k as u64)
                );
                if *mode == "none" || *mode == "os" {
                    assert_eq!(st.cache.hits, 0, "{mode} keeps nothing between uses");
                    assert_eq!(st.cache.prefetch_issued, 0, "{mode} has nowhere to keep them");
                } else if packed.manifest.config.moe_layer_count() >= 3 {
                    // Every predictor reads something ahead in these few decode steps (with
                    // two MoE layers, as GLM's golden has, only the second is ever predicted
                    // and a history prediction may find it all resident already).
                    assert_eq!(
                        st.cache.prefetch_issued > 0,
                        prefetch != PrefetchMode::None,
                        "{arch} --cache {mode} --prefetch {prefetch:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn budget_below_top_k_is_refused_with_the_minimum() {
    let Some(dir) = golden_dir("olmoe") else { return };
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (packed, _) = pack_and_load(&dir, scratch.path(), DType::F32, None);
    let slab = packed.manifest.slab.slab_bytes as u64;
    let cfg = StreamingConfig {
        cache: CacheMode::Policy(floe_cache::PolicyKind::Lru),
        cache_bytes: 3 * slab,
        prefetch: PrefetchMode::None,
        io: None,
        queue_depth: 4,
        shrinkable: false,
    };
    let err = StreamingExperts::open(&packed, &cfg).unwrap_err().to_string();
    assert!(err.contains(&(4 * slab).to_string()), "{err}");
}

#[test]
fn late_reordered_short_reads_change_nothing_and_disk_errors_end_with_an_error() {
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (packed, _) = pack_and_load(&dir, scratch.path(), DType::F32, None);
    let (ids, want) = golden_tokens(&dir);
    let m = &packed.manifest;
    let slots = m.config.top_k + 2;
    let cfg = StreamingConfig {
        cache: CacheMode::Policy(floe_cache::PolicyKind::Lru),
        cache_bytes: (slots * m.slab.slab_bytes) as u64,
        prefetch: PrefetchMode::Gate,
        io: None,
        queue_depth: 4,
        shrinkable: false,
    };
    for seed in 1..=3 {
        let arena = SlabArena::new(slots, m.slab.slab_bytes, 4096).unwrap();
        let chaos = ChaosConfig {
            seed,
            threads: 3,
            max_delay: Duration::from_micros(500),
            ..ChaosConfig::default()
        };
        let io = IoEngine::start_chaos(arena, 4, chaos, None).unwrap();
        let (model, _) = streaming_model(&packed, &cfg, Some(io));
        let opts =
            GenerateOptions { max_tokens: want.len(), ignore_eos: true, ..Default::default() };
        let (out, _) =
            generate(&model, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
        assert_eq!(out, want, "chaos seed {seed}");
    }
    // A failing disk: generation stops with an error naming the file, in bounded time.
    let arena = SlabArena::new(slots, m.slab.slab_bytes, 4096).unwrap();
    let chaos = ChaosConfig { error_chance: 0.2, seed: 9, ..ChaosConfig::default() };
    let io = IoEngine::start_chaos(arena, 4, chaos, None).unwrap();
    let (model, _) = streaming_model(&packed, &cfg, Some(io));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let opts = GenerateOptions { max_tokens: 16, ignore_eos: true, ..Default::default() };
        let r = generate(&model, &mut Session::default(), &ids, &opts, &mut |_| Ok(true));
        let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
    });
    let r = rx.recv_timeout(Duration::from_secs(30)).expect("generation hung on an I/O error");
    let err = r.unwrap_err();
    assert!(err.contains("experts.bin"), "{err}");
}

/// Slabs larger than a read piece (512 KiB) are read as several segments into one slot (and
/// coalesced back into one read for buffered files): the streamed tokens equal the resident
/// ones on every backend.
#[test]
fn slabs_read_in_pieces_give_the_resident_tokens() {
    use floe::formats::placement::ExpertPlacement;
    use floe::runtime::experts::ResidentExperts;
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = scratch.path().join("wide");
    let mut shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    (shape.hidden, shape.heads, shape.kv_heads, shape.head_dim) = (512, 8, 2, 64);
    (shape.expert_ffn, shape.experts, shape.top_k, shape.layers) = (512, 8, 2, 2);
    floe::formats::synth::synth(&shape, &dir, DType::Q8_0, 11, &mut |_, _| {}).unwrap();
    let packed = PackedModel::open(&dir, true).unwrap();
    let ef = packed.expert_file().unwrap();
    let p = ef.layers.iter().flatten().next().unwrap();
    assert!(matches!(p, ExpertPlacement::Slab { .. }));
    let pieces = p.read(3);
    assert!(pieces.len() >= 2, "a {}-byte slab in one piece", ef.slot_bytes);
    // The pieces tile the slab: contiguous in the file and in the slot.
    for w in pieces.windows(2) {
        assert_eq!(w[0].offset + w[0].len as u64, w[1].offset);
        assert_eq!(w[0].dst + w[0].len, w[1].dst);
    }
    assert_eq!(pieces.iter().map(|r| r.len).sum::<usize>(), ef.slot_bytes);

    let prompt: Vec<u32> = (60..80).collect();
    let opts = GenerateOptions { max_tokens: 8, ignore_eos: true, ..Default::default() };
    let resident = Model::new(
        packed.manifest.config.clone(),
        DenseWeights::load(&packed).unwrap(),
        Box::new(ResidentExperts::load(&packed).unwrap()),
        1,
    )
    .unwrap();
    let (want, _) =
        generate(&resident, &mut Session::default(), &prompt, &opts, &mut |_| Ok(true)).unwrap();
    for (mode, io) in
        [("lru", BackendKind::Uring), ("lru", BackendKind::Pread), ("os", BackendKind::Buffered)]
    {
        let cfg = StreamingConfig {
            cache: mode.parse().unwrap(),
            cache_bytes: (shape.top_k as u64 + 1) * ef.slot_bytes as u64,
            prefetch: PrefetchMode::Gate,
            io: Some(io),
            queue_depth: 4,
            shrinkable: false,
        };
        let (model, src) = streaming_model(&packed, &cfg, None);
        let (got, _) =
            generate(&model, &mut Session::default(), &prompt, &opts, &mut |_| Ok(true)).unwrap();
        assert_eq!(got, want, "{mode} {io}");
        assert!(src.stats().cache.misses > 0);
    }
}
