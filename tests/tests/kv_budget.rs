//! A memory budget without a fixed context: the KV caches grow inside it and the slab cache
//! gives them slots as they grow. Tokens are those of the resident model; the slab cache's
//! limit is what the budget leaves beside the KV caches the context has grown.

use floe::{Engine, EngineConfig, ExpertMemory, GenerateOptions};
use floe_kernels::DType;

#[test]
fn the_slab_cache_gives_way_to_growing_kv_caches() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q4_0, 9, &mut |_, _| {}).unwrap();
    let resident = Engine::open(
        &path,
        EngineConfig { experts: ExpertMemory::Resident, threads: 1, ..Default::default() },
    )
    .unwrap();
    let (dense, slab) = resident.weight_bytes();
    let (per_position, _) = resident.session_options().bytes_per_position(resident.spec()).unwrap();
    let top_k = resident.config().top_k as u64;
    // The scratch set aside per token of the largest pass so far (the documented bound).
    let spec = resident.spec();
    let scratch_per_token =
        spec.layers.iter().map(|l| l.scratch_floats_per_token(spec.hidden)).max().unwrap() as u64
            * 4
            * 3
            / 2;
    // Room for the largest pass's scratch and a few layers' experts beside the dense weights
    // and the overhead.
    let shared = 300 * scratch_per_token + 12 * top_k * slab;
    let total = dense + floe::OVERHEAD_BYTES + shared;
    let config = EngineConfig {
        experts: ExpertMemory::Budget { total_bytes: total, min_context: 16 },
        threads: 1,
        max_sequences: 1,
        kept_sessions: 0,
        ..Default::default()
    };
    let engine = Engine::open(&path, config).unwrap();
    let streaming = engine.streaming().unwrap();
    let capacity = streaming.stats().slots as u64;
    assert_eq!(capacity, shared / slab, "the arena takes what no KV holds yet");
    // The context is what the budget holds beside one layer's experts.
    let fits = ((shared - top_k * slab) / per_position) as usize;
    assert_eq!(engine.context(), fits.min(engine.spec().max_positions));
    let limit_after = |positions: usize, peak_pass: usize| {
        let held = positions.next_power_of_two().max(256).min(engine.context()) as u64;
        let kv = held * per_position + peak_pass as u64 * scratch_per_token;
        (shared.saturating_sub(kv) / slab).max(top_k) as usize
    };
    let mut peak_pass = 0;
    let mut last = usize::MAX;
    // Prompts of about 4, 80 and 250 tokens: KV caches of 256, 256 and 320 (the context)
    // positions.
    for (tokens, n) in [(4, 8), (80, 20), (250, 40)] {
        let mut prompt = String::from("the river");
        while engine.tokenizer().encode(&prompt).unwrap().len() < tokens {
            prompt.push_str(" runs south");
        }
        let options = GenerateOptions { max_tokens: n, ignore_eos: true, ..Default::default() };
        let want: Vec<u32> =
            resident.generate(&prompt, options.clone()).unwrap().map(|t| t.unwrap().id).collect();
        let mut g = engine.generate(&prompt, options).unwrap();
        let got: Vec<u32> = g.by_ref().map(|t| t.unwrap().id).collect();
        assert_eq!(got, want, "{tokens} tokens");
        let prompt_len = engine.tokenizer().encode(&prompt).unwrap().len();
        peak_pass = peak_pass.max(prompt_len);
        let positions = prompt_len + n - 1;
        let limit = streaming.slot_limit();
        // Fitted before the last decode pass: for the positions that pass left.
        assert_eq!(limit, limit_after(positions, peak_pass), "{positions} positions");
        assert!(limit <= last, "the limit only shrinks as one context grows");
        last = limit;
    }
    assert!(last < capacity as usize, "the KV caches took slots ({last} of {capacity})");
    streaming.audit().unwrap();
}

/// A budget that cannot hold the dense weights and one layer's experts is refused, saying the
/// least that works; that least opens, with and without a fixed context.
#[test]
fn a_budget_too_small_names_the_least_that_works() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q4_0, 9, &mut |_, _| {}).unwrap();
    for ctx in [None, Some(64)] {
        let config = |total_bytes| EngineConfig {
            experts: ExpertMemory::Budget { total_bytes, min_context: 16 },
            session: floe::runtime::SessionOptions { ctx, ..Default::default() },
            max_sequences: 1,
            ..Default::default()
        };
        let err = Engine::open(&path, config(1 << 20)).unwrap_err().to_string();
        let least: u64 = err
            .split("give at least ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{err}"));
        assert!(Engine::open(&path, config((least - 1) << 20)).is_err(), "{ctx:?}: {err}");
        Engine::open(&path, config(least << 20)).unwrap();
    }
}
