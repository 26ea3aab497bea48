//! One `Engine` shared by threads: concurrent generations (each with its own KV cache, sharing
//! the weights, the slab cache and the I/O thread) give each prompt exactly the tokens it gets
//! alone, streamed with a cache far smaller than the experts and resident.

use std::sync::Arc;

use floe::runtime::sampling::SamplingParams;
use floe::{Engine, EngineConfig, ExpertMemory, GenerateOptions};
use floe_kernels::DType;

const PROMPTS: [&str; 4] =
    ["The quick brown fox", "jumps over the lazy dog", "It was a bright cold day", "in April, and"];

fn ids(engine: &Engine, prompt: &str, seed: u64) -> Vec<u32> {
    let opts = GenerateOptions {
        max_tokens: 24,
        ignore_eos: true,
        // Seeded sampling, not greedy: a mixed-up sampler or session would show too.
        sampling: SamplingParams { temperature: 0.8, seed, ..Default::default() },
        ..Default::default()
    };
    engine.generate(prompt, opts).unwrap().map(|t| t.unwrap().id).collect()
}

#[test]
fn four_threads_on_one_engine_each_get_their_single_thread_tokens() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q4_0, 8, &mut |_, _| {}).unwrap();
    let slab =
        floe::formats::packed::PackedModel::open(&path, false).unwrap().manifest.slab.slab_bytes;
    for experts in [
        // top-k + 4 slots: the four generations evict each other's experts all the time.
        ExpertMemory::Streamed { cache_bytes: Some(((shape.top_k + 4) * slab) as u64) },
        ExpertMemory::Resident,
    ] {
        let cfg = EngineConfig { experts: experts.clone(), threads: 2, ..Default::default() };
        let engine = Arc::new(Engine::open(&path, cfg).unwrap());
        let alone: Vec<Vec<u32>> =
            PROMPTS.iter().enumerate().map(|(i, p)| ids(&engine, p, i as u64)).collect();
        for round in 0..2 {
            let handles: Vec<_> = PROMPTS
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let (engine, p) = (Arc::clone(&engine), p.to_string());
                    std::thread::spawn(move || ids(&engine, &p, i as u64))
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.join().unwrap(), alone[i], "{experts:?} round {round} prompt {i}");
            }
        }
        if let ExpertMemory::Streamed { .. } = experts {
            let st = engine.stats().streaming.unwrap();
            assert!(st.cache.misses > 0 && st.cache.evictions > 0, "{st:?}");
        }
    }
}
