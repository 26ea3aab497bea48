//! The engine's scheduler: concurrent generations decode together (one pass per step) and each
//! gets exactly its tokens alone; a continued conversation reuses its kept state; a dropped
//! generation stops.

use std::sync::Arc;

use floe::{Engine, EngineConfig, ExpertMemory, FinishReason, GenerateOptions};
use floe_kernels::DType;

fn model(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("tiny-engine");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q4_0, 11, &mut |_, _| {}).unwrap();
    path
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, ignore_eos: true, ..Default::default() }
}

fn prompts() -> Vec<String> {
    (0..8).map(|i| format!("the {} of {} and {}", i * 3, i + 1, "x".repeat(i + 1))).collect()
}

/// Eight generations started at once on a streamed engine: each gets the tokens it gets alone,
/// and the scheduler ran them together (fewer passes than tokens).
#[test]
fn eight_concurrent_generations_each_get_their_single_request_tokens() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = model(dir.path());
    let config = || EngineConfig {
        experts: ExpertMemory::Streamed { cache_bytes: None },
        kept_sessions: 0,
        threads: 2,
        ..Default::default()
    };
    let alone: Vec<Vec<u32>> = {
        let e = Engine::open(&path, EngineConfig { max_sequences: 1, ..config() }).unwrap();
        prompts()
            .iter()
            .enumerate()
            .map(|(i, p)| e.generate(p, greedy(6 + i)).unwrap().map(|t| t.unwrap().id).collect())
            .collect()
    };
    let engine = Arc::new(Engine::open(&path, config()).unwrap());
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = prompts()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let (engine, barrier) = (Arc::clone(&engine), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let mut g = engine.generate(&p, greedy(6 + i)).unwrap();
                let ids: Vec<u32> = g.by_ref().map(|t| t.unwrap().id).collect();
                assert_eq!(g.finished().unwrap().reason, FinishReason::Length);
                ids
            })
        })
        .collect();
    let together: Vec<Vec<u32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (i, (t, a)) in together.iter().zip(&alone).enumerate() {
        if t != a {
            eprintln!("client {i}: together {t:?} alone {a:?}");
        }
    }
    assert_eq!(together, alone);
    let s = engine.stats().scheduler;
    assert!(
        s.decode_tokens > s.decode_passes + 8,
        "not batched: {} tokens in {} passes",
        s.decode_tokens,
        s.decode_passes
    );
    // The scheduler retires the sequences just after sending their last tokens.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while engine.stats().scheduler.active_sequences > 0 {
        assert!(std::time::Instant::now() < deadline, "sequences still active");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// A conversation's next turn starts from the state its first turn left: the shared tokens are
/// not run again, and the answer is the one a fresh engine gives.
#[test]
fn a_continued_conversation_reuses_its_kept_state() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = model(dir.path());
    let turn1 = "a long first question about the sea and the ships on it";
    let run = |e: &Engine, text: &str| -> (Vec<u32>, floe::Finished) {
        let mut g = e.generate(text, greedy(5)).unwrap();
        let ids = g.by_ref().map(|t| t.unwrap().id).collect();
        (ids, g.finished().cloned().unwrap())
    };
    let engine = Engine::open(&path, EngineConfig { threads: 2, ..Default::default() }).unwrap();
    let (first, f1) = run(&engine, turn1);
    assert_eq!(f1.stats.reused_tokens, 0);
    let answer = engine.tokenizer().decode(&first).unwrap();
    let turn2 = format!("{turn1}{answer} and then a second question");
    let (second, f2) = run(&engine, &turn2);
    let prompt2 = engine.tokenizer().encode(&turn2).unwrap();
    assert!(f2.stats.reused_tokens >= engine.tokenizer().encode(turn1).unwrap().len() - 1);
    assert!(f2.stats.reused_tokens < prompt2.len());
    assert_eq!(engine.stats().scheduler.reused_tokens as usize, f2.stats.reused_tokens);
    let fresh =
        Engine::open(&path, EngineConfig { threads: 2, kept_sessions: 0, ..Default::default() })
            .unwrap();
    let (want, f) = run(&fresh, &turn2);
    assert_eq!(f.stats.reused_tokens, 0);
    assert_eq!(second, want);
}

/// Dropping a generation ends it: the scheduler goes idle and the next one runs normally.
#[test]
fn a_dropped_generation_stops() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = model(dir.path());
    let engine = Engine::open(&path, EngineConfig::default()).unwrap();
    let mut g = engine.generate("hello there", greedy(100_000.min(engine.context() - 8))).unwrap();
    g.next().unwrap().unwrap();
    drop(g);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while engine.stats().scheduler.active_sequences > 0 {
        assert!(std::time::Instant::now() < deadline, "the dropped generation still runs");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let ids: Vec<u32> =
        engine.generate("hello", greedy(3)).unwrap().map(|t| t.unwrap().id).collect();
    assert_eq!(ids.len(), 3);
    // Errors reach the caller: an empty prompt, a prompt past the context.
    assert!(engine.generate_ids(Vec::new(), greedy(1)).is_err());
    assert!(engine.generate_ids(vec![1; engine.context() + 1], greedy(1)).is_err());
}

/// A request the engine refuses says why, as a kind a caller (a server answering 4xx) can tell
/// apart from floe's own failures.
#[test]
fn refused_requests_are_typed_request_errors() {
    use floe::{Error, Grammar, RequestError};
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = model(dir.path());
    let engine = Engine::open(&path, EngineConfig { threads: 1, ..Default::default() }).unwrap();
    let (vocab, ctx, top_k) = (engine.config().vocab, engine.context(), engine.config().top_k);
    let refused = |prompt: Vec<u32>, options: GenerateOptions| -> RequestError {
        match engine.generate_ids(prompt, options) {
            Err(Error::Request(r)) => r,
            Err(e) => panic!("{e}: not a request error"),
            Ok(_) => panic!("accepted"),
        }
    };
    assert_eq!(refused(vec![], greedy(1)), RequestError::EmptyPrompt);
    let id = vocab as u32;
    assert_eq!(refused(vec![1, id], greedy(1)), RequestError::TokenOutOfVocab { id, vocab });
    assert_eq!(
        refused(vec![1; ctx + 1], greedy(1)),
        RequestError::TooLong { tokens: ctx + 1, ctx }
    );
    for asked in [0, top_k + 1] {
        let options = GenerateOptions { experts_per_token: Some(asked), ..greedy(1) };
        let want = RequestError::ExpertsPerToken { asked, top_k: Some(top_k) };
        assert_eq!(refused(vec![1], options), want);
    }
    let options = GenerateOptions { min_expert_weight: Some(1.5), ..greedy(1) };
    assert_eq!(refused(vec![1], options), RequestError::MinExpertWeight(1.5));
    let options = GenerateOptions { grammar: Some(Grammar::Regex("(".into())), ..greedy(1) };
    assert!(matches!(refused(vec![1], options), RequestError::Grammar(_)));
    // What the engine accepts runs.
    let ok: Vec<u32> =
        engine.generate_ids(vec![1, 2], greedy(2)).unwrap().map(|t| t.unwrap().id).collect();
    assert_eq!(ok.len(), 2);
}
