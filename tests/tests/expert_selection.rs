//! Fewer experts per token (`ExpertSelection`): the model's own count is the exact path, bit
//! for bit; the two knobs, each on its own path through the router, agree where they must
//! (one expert per token); impossible values are clear errors.

use floe::{Engine, EngineConfig, ExpertMemory, ExpertSelection};
use floe_tests::golden_dir;

fn open(path: &std::path::Path, selection: ExpertSelection) -> floe::Result<Engine> {
    let config = EngineConfig {
        experts: ExpertMemory::Resident,
        threads: 2,
        max_sequences: 1,
        kept_sessions: 0,
        expert_selection: selection,
        ..Default::default()
    };
    Engine::open(path, config)
}

fn scores(path: &std::path::Path, selection: ExpertSelection, ids: &[u32]) -> Vec<f32> {
    open(path, selection).unwrap().next_token_logprobs(ids, 7, None).unwrap()
}

fn text_ids(path: &std::path::Path) -> Vec<u32> {
    let e = open(path, ExpertSelection::default()).unwrap();
    let ids = e.tokenizer().encode("The quick brown fox jumps over the lazy dog, twice.").unwrap();
    assert!(ids.len() > 8, "{ids:?}");
    ids
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Qwen3-MoE (softmax, top-k renormalised) and gpt-oss (softmax over the top-k logits).
const FAMILIES: [&str; 2] = ["qwen3_moe", "gpt_oss"];

#[test]
fn the_models_own_expert_count_is_the_exact_path() {
    for name in FAMILIES {
        let Some(dir) = golden_dir(name) else { return };
        let path = dir.join("model-F32.gguf");
        let ids = text_ids(&path);
        let exact = scores(&path, ExpertSelection::default(), &ids);
        let top_k = open(&path, ExpertSelection::default()).unwrap().config().top_k;
        let same = scores(
            &path,
            ExpertSelection { experts_per_token: Some(top_k), ..Default::default() },
            &ids,
        );
        assert_eq!(exact, same, "{name}: K = top-k must change nothing");
        let fewer = scores(
            &path,
            ExpertSelection { experts_per_token: Some(top_k - 1), ..Default::default() },
            &ids,
        );
        assert!(max_diff(&exact, &fewer) > 1e-3, "{name}: K = top-k - 1 changed nothing");
        // Above the model's count, or none: refused, naming the range.
        for k in [0, top_k + 1] {
            let err =
                open(&path, ExpertSelection { experts_per_token: Some(k), ..Default::default() })
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(&format!("give 1 to {top_k}")), "{name} K={k}: {err}");
        }
    }
}

/// One expert per token two ways: the router asked for its top 1, and its top-k with every
/// expert below 0.9999 of the top one dropped and the weights renormalised (the top one alone,
/// weight 1 where the router renormalises). Same distributions.
#[test]
fn one_expert_by_count_and_by_weight_ratio_agree() {
    for name in FAMILIES {
        let Some(dir) = golden_dir(name) else { return };
        let path = dir.join("model-F32.gguf");
        let ids = text_ids(&path);
        let by_count = scores(
            &path,
            ExpertSelection { experts_per_token: Some(1), ..Default::default() },
            &ids,
        );
        let by_ratio =
            scores(&path, ExpertSelection { min_weight_ratio: 0.9999, ..Default::default() }, &ids);
        let d = max_diff(&by_count, &by_ratio);
        assert!(d < 1e-4, "{name}: {d}");
        // A milder ratio keeps more experts: between the two.
        let exact = scores(&path, ExpertSelection::default(), &ids);
        let mild =
            scores(&path, ExpertSelection { min_weight_ratio: 0.05, ..Default::default() }, &ids);
        assert!(max_diff(&exact, &mild) < max_diff(&exact, &by_count), "{name}");
    }
}

#[test]
fn impossible_weight_ratios_are_refused() {
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let path = dir.join("model-F32.gguf");
    for r in [1.0, 1.5, -0.1, f32::NAN] {
        let err = open(&path, ExpertSelection { min_weight_ratio: r, ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("[0, 1)"), "{r}: {err}");
    }
}

/// A request's own expert count (`GenerateOptions::experts_per_token`, a session's) runs what
/// an engine opened with that count runs; sequences with different counts decode together and
/// each gets its tokens alone; a count above the engine's is refused.
#[test]
fn a_requests_expert_count_matches_the_engines() {
    use floe::GenerateOptions;
    for name in FAMILIES {
        let Some(dir) = golden_dir(name) else { return };
        let path = dir.join("model-F32.gguf");
        let ids = text_ids(&path);
        let exact = open(&path, ExpertSelection::default()).unwrap();
        let top_k = exact.config().top_k;
        let k = top_k - 1;
        let engine_k =
            open(&path, ExpertSelection { experts_per_token: Some(k), ..Default::default() })
                .unwrap();
        let by_engine = engine_k.next_token_logprobs(&ids, 7, None).unwrap();
        let by_request = exact.next_token_logprobs(&ids, 7, Some(k)).unwrap();
        let d = max_diff(&by_engine, &by_request);
        assert!(d < 1e-4, "{name}: {d}");
        // Together in one batch, each as alone.
        let config = EngineConfig {
            experts: ExpertMemory::Resident,
            threads: 2,
            max_sequences: 2,
            kept_sessions: 0,
            ..Default::default()
        };
        let both = std::sync::Arc::new(Engine::open(&path, config).unwrap());
        let options = |experts| GenerateOptions {
            max_tokens: 10,
            ignore_eos: true,
            experts_per_token: experts,
            ..Default::default()
        };
        let alone: Vec<Vec<u32>> = [None, Some(1)]
            .iter()
            .map(|&e| {
                both.generate("the fox", options(e)).unwrap().map(|t| t.unwrap().id).collect()
            })
            .collect();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let together: Vec<Vec<u32>> = [None, Some(1)]
            .into_iter()
            .map(|e| {
                let (both, barrier) =
                    (std::sync::Arc::clone(&both), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    both.generate("the fox", options(e)).unwrap().map(|t| t.unwrap().id).collect()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(together, alone, "{name}");
        assert_ne!(alone[0], alone[1], "{name}: one expert changed nothing");
        let err = exact
            .generate("the fox", options(Some(top_k + 1)))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(&format!("give 1 to {top_k}")), "{name}: {err}");
    }
}

/// A request's own weak-expert ratio (`GenerateOptions::min_expert_weight`) decodes what an
/// engine opened with that ratio decodes, greedy tokens equal; a request with the ratio and one
/// without decode together and each gets its tokens alone; a ratio outside [0, 1) is refused.
#[test]
fn a_requests_weight_ratio_matches_the_engines() {
    use floe::GenerateOptions;
    let ratio = 0.9;
    for name in FAMILIES {
        let Some(dir) = golden_dir(name) else { return };
        let path = dir.join("model-F32.gguf");
        let config = |r: f32, sequences| EngineConfig {
            experts: ExpertMemory::Resident,
            threads: 2,
            max_sequences: sequences,
            kept_sessions: 0,
            expert_selection: ExpertSelection { min_weight_ratio: r, ..Default::default() },
            ..Default::default()
        };
        let options = |r| GenerateOptions {
            max_tokens: 12,
            ignore_eos: true,
            min_expert_weight: r,
            ..Default::default()
        };
        let run = |e: &Engine, r| -> Vec<u32> {
            e.generate("the fox", options(r)).unwrap().map(|t| t.unwrap().id).collect()
        };
        let by_engine = run(&Engine::open(&path, config(ratio, 1)).unwrap(), None);
        let both = std::sync::Arc::new(Engine::open(&path, config(0.0, 2)).unwrap());
        let alone = [run(&both, None), run(&both, Some(ratio))];
        assert_eq!(alone[1], by_engine, "{name}: per request against per engine");
        assert_ne!(alone[0], alone[1], "{name}: the ratio changed nothing");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let together: Vec<Vec<u32>> = [None, Some(ratio)]
            .into_iter()
            .map(|r| {
                let (both, barrier) =
                    (std::sync::Arc::clone(&both), std::sync::Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    both.generate("the fox", options(r)).unwrap().map(|t| t.unwrap().id).collect()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        assert_eq!(together, alone, "{name}: together against alone");
        for bad in [1.0, -0.5, f32::NAN] {
            let err = both.generate("the fox", options(Some(bad))).err().map(|e| e.to_string());
            assert!(err.as_deref().unwrap_or("").contains("[0, 1)"), "{name} {bad}: {err:?}");
        }
    }
}
