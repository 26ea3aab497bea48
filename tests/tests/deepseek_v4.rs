//! DeepSeek-V4 beyond the golden logits: the lightning indexer's picks against transformers',
//! prefix reuse at a compression boundary, and configurations floe refuses by name.

use floe::runtime::Session;
use floe_kernels::DType;
use floe_tests::*;

/// At every prompt position of both indexed layers the indexer picks exactly transformers'
/// entries (`csa_topk.{l}`, -1 past the visible ones): below and above the top-k, and before
/// the first window closes.
#[test]
fn v4_indexer_selects_transformers_entries() {
    let Some(dir) = golden_dir("deepseek_v4") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let (_, model) = pack_and_load(&dir, scratch.path(), DType::F32, None);
    let golden = Golden::load(&dir, "golden.safetensors");
    let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
    let mut s = Session::default().record_queries();
    model.forward(&mut s, &ids, true).unwrap();
    let mut checked = 0;
    for l in 0..model.cfg.layers {
        if !golden.has(&format!("csa_topk.{l}")) {
            continue;
        }
        let (want, shape) = golden.i64(&format!("csa_topk.{l}"));
        let k = shape[1];
        let got = s.shared_kv_state(l).unwrap().selections().unwrap();
        assert_eq!(got.len(), ids.len() * k, "layer {l}");
        for t in 0..ids.len() {
            let key = |p: &i64| if *p < 0 { i64::MAX } else { *p };
            let mut mine: Vec<i64> = got[t * k..(t + 1) * k]
                .iter()
                .map(|&p| if p == usize::MAX { -1 } else { p as i64 })
                .collect();
            let mut theirs = want[t * k..(t + 1) * k].to_vec();
            mine.sort_unstable_by_key(key);
            theirs.sort_unstable_by_key(key);
            assert_eq!(mine, theirs, "layer {l} position {t}");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * ids.len(), "the golden's two indexed layers");
}

/// A session cut back to a position where every compressor's window starts continues exactly
/// as one that never went further; a cut inside a window is refused (the window's earlier
/// positions are no longer held), and the session stays where it was.
#[test]
fn v4_rewinds_to_a_compression_boundary_only() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = synth_preset(dir.path(), "tiny-deepseek-v4", DType::Q8_0);
    let m = load(&packed, 1);
    let prompt: Vec<u32> = (0..24).map(|i| 40 + (i * 7) % 200).collect();
    let other: Vec<u32> = (0..9).map(|i| 33 + (i * 5) % 150).collect();
    // Straight: the first 16 tokens, then the other continuation.
    let mut straight = Session::default();
    m.forward(&mut straight, &prompt[..16], false).unwrap();
    let want = m.forward(&mut straight, &other, true).unwrap();
    // Through the longer prompt, cut back to 16 (a multiple of both ratios, 4 and 8).
    let mut cut = Session::default();
    m.forward(&mut cut, &prompt[..20], false).unwrap();
    assert!(!cut.rewind(18), "18 is inside a window");
    assert_eq!(cut.position(), 20);
    assert!(!cut.rewind(12), "12 starts a 4-window but not an 8-window");
    // What a kept session offers a prompt that shares its first 19 tokens.
    assert_eq!(cut.rewind_point(19), Some(16));
    assert!(cut.rewind(16));
    let got = m.forward(&mut cut, &other, true).unwrap();
    assert_eq!(max_abs_diff(&got, &want), 0.0);
    // Past the window before the cut's overlapping window, the state no longer has it.
    let mut far = Session::default();
    m.forward(&mut far, &prompt, false).unwrap();
    assert!(!far.rewind(16), "the 4:1 windows before 16 are gone by 24");
    assert_eq!(far.rewind_point(23), None);
    assert!(far.rewind(24));
}

/// Configurations the shapes cannot take are refused by name.
#[test]
fn v4_bad_configs_are_refused() {
    let Some(dir) = golden_dir("deepseek_v4") else { return };
    assert_config_refusals(
        &dir,
        &[
            ("\"hc_mult\":4", "\"hc_mult\":0", "hc_mult 0"),
            ("\"index_topk\":8", "\"index_topk\":0", "index_topk 0"),
            ("\"o_groups\":2", "\"o_groups\":3", "o_groups 3"),
            ("\"sliding_window\":16", "\"sliding_window\":0", "sliding_window 0"),
            ("\"scoring_func\":\"sqrtsoftplus\"", "\"scoring_func\":\"softmax\"", "scoring_func"),
            ("\"compressed_sparse_attention\":4", "\"compressed_sparse_attention\":1", "ratio 1"),
            ("\"hc_mult\":4", "\"hc_multt\":4", "no hc_mult"),
        ],
    );
}

/// A checkpoint whose compressor was made for another ratio, or without its hash-routing
/// table, fails to pack with an error naming the tensor.
#[test]
fn v4_checkpoint_that_does_not_fit_its_config_is_refused() {
    let Some(dir) = golden_dir("deepseek_v4") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("ckpt");
    std::fs::create_dir(&copy).unwrap();
    for f in ["model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.join(f), copy.join(f)).unwrap();
    }
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let pack = |config: &str| {
        std::fs::write(copy.join("config.json"), config).unwrap();
        let opts =
            floe::formats::pack::PackOptions { dtype: DType::F32, dense_dtype: None, force: true };
        floe::formats::pack::pack(&copy, &tmp.path().join("out"), &opts, &mut |_, _| {})
    };
    // 8:1 sparse layers where the checkpoint's compressors pool 4 positions.
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    let text = serde_json::to_string(&v).unwrap();
    let e = pack(
        &text.replace("\"compressed_sparse_attention\":4", "\"compressed_sparse_attention\":8"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("compressor.ape"), "{e}");
    // Three hash-routed layers: the third has no table.
    let e = pack(&text.replace("\"hash_moe\",\"moe\"", "\"hash_moe\",\"hash_moe\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tid2eid"), "{e}");
}
