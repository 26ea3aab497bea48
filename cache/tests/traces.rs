//! The simulator's LRU and Belady figures on the real traces in ../shared/traces equal the
//! reference figures of that folder's README (decode rows, unit-size slabs, capacity as a share
//! of all experts, floor).

use floe_cache::policy::{PolicyConfig, PolicyKind};
use floe_cache::sim::{learn_usage, score_predictors, simulate, simulate_pinned, PinSource};
use floe_cache::trace::{PhaseFilter, Trace};

fn trace(name: &str) -> Option<Trace> {
    let path = floe_cache::fixtures::shared_fixture(&format!("traces/{name}"))?;
    Some(Trace::load(&path).unwrap())
}

fn check(name: &str, rows: &[(f64, f64, f64)]) {
    let Some(t) = trace(name) else { return };
    let total = t.shape.total_experts() as f64;
    for &(frac, lru, belady) in rows {
        let cap = (total * frac).floor() as usize;
        let cfg = PolicyConfig::default();
        let l = simulate(&t, PhaseFilter::Decode, PolicyKind::Lru, cap, &cfg).unwrap();
        let b = simulate(&t, PhaseFilter::Decode, PolicyKind::Belady, cap, &cfg).unwrap();
        assert!((l.hit_ratio - lru).abs() < 5e-4, "{name} {frac}: lru {} vs {lru}", l.hit_ratio);
        assert!(
            (b.hit_ratio - belady).abs() < 5e-4,
            "{name} {frac}: belady {} vs {belady}",
            b.hit_ratio
        );
        // floe's MoE-aware policy beats LRU on real routing.
        let m = simulate(&t, PhaseFilter::Decode, PolicyKind::Moe, cap, &cfg).unwrap();
        assert!(m.hits >= l.hits, "{name} {frac}: moe {} < lru {}", m.hits, l.hits);
    }
}

#[test]
fn gemma_matches_the_reference_figures() {
    check("gemma.route.csv", &[(0.05, 0.354, 0.568), (0.10, 0.488, 0.726), (0.25, 0.779, 0.876)]);
}

#[test]
fn gptoss_matches_the_reference_figures() {
    check("gptoss.route.csv", &[(0.05, 0.439, 0.632), (0.10, 0.578, 0.712)]);
}

#[test]
fn trace_shapes_and_predictors() {
    let Some(t) = trace("gemma.route.csv") else { return };
    assert_eq!((t.shape.layers, t.shape.experts, t.shape.top_k), (30, 128, 6));
    assert_eq!(t.accesses(PhaseFilter::Decode).len(), 23040);
    assert_eq!(t.expert_bytes_of(0), Some(4_336_640));
    let p = score_predictors(&t, PhaseFilter::Decode);
    // Recall is a share; temporal overlap of real routing is far above chance (6/128).
    assert!(p.iter().all(|s| s.recall > 6.0 / 128.0 && s.recall < 1.0), "{p:?}");
}

/// Counts learned on earlier steps (as a usage file holds them) start the moe policy off: on the
/// rest of Gemma 4's real routing it misses less than without them, at every capacity.
#[test]
fn a_learned_prior_lowers_moe_misses_on_real_routing() {
    let Some(t) = trace("gemma.route.csv") else { return };
    let (usage, rest) = learn_usage(&t, PhaseFilter::Decode, PinSource::Prefix(0.3));
    let cfg = PolicyConfig::default();
    for frac in [0.05, 0.10, 0.25] {
        let cap = (t.shape.total_experts() as f64 * frac) as usize;
        let plain = simulate(&rest, PhaseFilter::Decode, PolicyKind::Moe, cap, &cfg).unwrap();
        let prior = simulate_pinned(
            &rest,
            PhaseFilter::Decode,
            PolicyKind::Moe,
            cap,
            &cfg,
            (&[], Some(&usage)),
        )
        .unwrap();
        assert_eq!(prior.accesses, plain.accesses);
        assert!(prior.misses < plain.misses, "{frac}: {} >= {}", prior.misses, plain.misses);
        assert_eq!(prior.policy, "moe+prior");
    }
}
