//! Learned pins and prefetch tuning are exact knobs: with a usage file, pinned experts, and
//! prefetch-aware eviction or adaptive depth on or off, a streamed engine generates the tokens
//! of the resident one. The usage file counts every routing decision, and a file learned on
//! another model, or pins without a file or without streaming, are clear errors.

use floe::pipeline::PrefetchTuning;
use floe::{Engine, EngineConfig, ExpertMemory, GenerateOptions};
use floe_kernels::DType;

fn model(dir: &std::path::Path, seed: u64) -> std::path::PathBuf {
    let path = dir.join(format!("tiny-{seed}"));
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q4_0, seed, &mut |_, _| {}).unwrap();
    path
}

const PROMPT: &str = "the river runs south through the fields and";
const TOKENS: usize = 12;

fn generate(engine: &Engine) -> Vec<u32> {
    let options = GenerateOptions { max_tokens: TOKENS, ignore_eos: true, ..Default::default() };
    engine.generate(PROMPT, options).unwrap().map(|t| t.unwrap().id).collect()
}

fn streamed(slots: u64, slab: u64) -> EngineConfig {
    EngineConfig {
        experts: ExpertMemory::Streamed { cache_bytes: Some(slots * slab) },
        threads: 1,
        max_sequences: 1,
        kept_sessions: 0,
        ..Default::default()
    }
}

#[test]
fn pins_and_prefetch_tuning_keep_the_tokens_and_the_usage_file_counts_every_route() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = model(dir.path(), 5);
    let usage = dir.path().join("usage.json");
    let resident = Engine::open(
        &path,
        EngineConfig { experts: ExpertMemory::Resident, threads: 1, ..Default::default() },
    )
    .unwrap();
    let want = generate(&resident);
    let (top_k, moe_layers) = {
        let c = resident.config();
        let moe = resident
            .spec()
            .layers
            .iter()
            .filter(|l| matches!(l.ffn, floe::model::spec::FfnSpec::Moe(_)))
            .count();
        (c.top_k, moe)
    };
    let prompt_len = resident.tokenizer().encode(PROMPT).unwrap().len();
    drop(resident);
    let slab = Engine::open(&path, streamed(top_k as u64, 1 << 30)).unwrap().weight_bytes().1;
    // First run: counts, pins nothing.
    let first = Engine::open(
        &path,
        EngineConfig { usage_file: Some(usage.clone()), ..streamed(top_k as u64 * 3, slab) },
    )
    .unwrap();
    assert_eq!(generate(&first), want);
    drop(first);
    let counted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&usage).unwrap()).unwrap();
    let total: u64 =
        counted["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    // Every token run through the model (the prompt and each generated token but the last)
    // routed to top-k experts in every MoE layer.
    let tokens_run = (prompt_len + TOKENS - 1) as u64;
    assert_eq!(total, tokens_run * moe_layers as u64 * top_k as u64);
    // Later runs pin what the first counted, with every tuning, and still get the tokens.
    for (aware_eviction, adaptive_depth) in [(true, true), (false, false), (true, false)] {
        let config = EngineConfig {
            usage_file: Some(usage.clone()),
            pin_bytes: top_k as u64 * 2 * slab,
            prefetch_tuning: PrefetchTuning {
                aware_eviction,
                adaptive_depth,
                ..Default::default()
            },
            ..streamed(top_k as u64 * 3, slab)
        };
        let e = Engine::open(&path, config).unwrap();
        assert_eq!(generate(&e), want, "aware {aware_eviction} adaptive {adaptive_depth}");
        let s = e.streaming().unwrap().stats().cache;
        assert!(s.pinned > 0 && s.pinned <= 2 * top_k as u64, "{s:?}");
        assert!(s.demand_hits > 0, "{s:?}");
    }
    // The moe policy started from the file's counts, with and without pins: the same tokens.
    for pin_slots in [0, 2] {
        let config = EngineConfig {
            usage_file: Some(usage.clone()),
            pin_bytes: top_k as u64 * pin_slots * slab,
            cache: floe::pipeline::CacheMode::Policy(floe_cache::PolicyKind::Moe),
            ..streamed(top_k as u64 * 3, slab)
        };
        let e = Engine::open(&path, config).unwrap();
        assert_eq!(generate(&e), want, "moe with the learned counts, {pin_slots} x top-k pinned");
    }
    // The file grew by the later runs' routes.
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&usage).unwrap()).unwrap();
    let total2: u64 = again["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(total2, 6 * total, "the first run, three tunings, two moe runs");

    // Another model's engine refuses the file, naming it.
    let other = model(dir.path(), 6);
    let err = Engine::open(
        &other,
        EngineConfig { usage_file: Some(usage.clone()), ..streamed(top_k as u64 * 3, slab) },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("usage.json") && err.contains("another model"), "{err}");
    // Pins need a file; a file needs streaming.
    let err = Engine::open(&path, EngineConfig { pin_bytes: slab, ..streamed(16, slab) })
        .unwrap_err()
        .to_string();
    assert!(err.contains("usage file"), "{err}");
    let err = Engine::open(
        &path,
        EngineConfig {
            experts: ExpertMemory::Resident,
            usage_file: Some(usage.clone()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("streamed"), "{err}");
}
