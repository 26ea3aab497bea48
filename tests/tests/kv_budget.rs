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
    // Room for a few layers' experts beside the dense weights and the overhead.
    let shared = 6 * top_k * slab;
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
    let limit_after = |positions: usize| {
        let held = positions.next_power_of_two().max(256).min(engine.context()) as u64;
        ((shared - held * per_position) / slab).max(top_k) as usize
    };
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
        let positions = engine.tokenizer().encode(&prompt).unwrap().len() + n - 1;
        let limit = streaming.slot_limit();
        // Fitted before the last decode pass: for the positions that pass left.
        assert_eq!(limit, limit_after(positions), "{positions} positions");
        assert!(limit <= last, "the limit only shrinks as one context grows");
        last = limit;
    }
    assert!(last < capacity as usize, "the KV caches took slots ({last} of {capacity})");
    streaming.audit().unwrap();
}
