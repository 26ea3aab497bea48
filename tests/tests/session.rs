//! The session: the KV cache is sized up front by `ctx` and refuses what does not fit, and the
//! f16 / q8_0 caches stay close to the exact f32 one.

use floe::kernels::ops::KvDType;
use floe::runtime::{Session, SessionOptions};
use floe_kernels::DType;

/// The cache holds `ctx` positions from the start; a prompt or generation past it is an error
/// naming the context, and the session stays usable up to it.
#[test]
fn ctx_sizes_the_cache_and_is_enforced() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = floe_tests::synth_small(dir.path(), DType::Q8_0);
    let m = floe_tests::load(&packed, 1);
    let opts = SessionOptions { ctx: Some(12), kv: floe::KvTypes::all(KvDType::F16) };
    let mut s = Session::new(opts);
    m.step(&mut s, &[1; 10], false).unwrap();
    assert_eq!(s.context(), 12);
    // Layers x 2 (k, v) x 12 positions x kv_heads x head_dim x 2 bytes, as counted up front.
    let want = opts.state_bytes(&m.spec).unwrap() as usize;
    assert_eq!(want, m.spec.layers.len() * 2 * 12 * 2 * 32 * 2);
    assert_eq!(s.kv_bytes(), want);
    let e = m.step(&mut s, &[1; 3], false).unwrap_err().to_string();
    assert!(e.contains("12 positions"), "{e}");
    m.step(&mut s, &[1; 2], false).unwrap();
    assert!(m.step(&mut s, &[1], false).is_err());
    // Impossible options are refused before anything runs.
    let too_long = SessionOptions { ctx: Some(m.spec.max_positions + 1), ..opts };
    assert!(too_long.state_bytes(&m.spec).unwrap_err().to_string().contains("positions"));
    assert!(SessionOptions { ctx: Some(0), ..opts }.state_bytes(&m.spec).is_err());
}

/// f16 and q8_0 caches give logits close to the f32 cache's (the exact reference), and the
/// f32 cache gives the same bits as a session of default options.
#[test]
fn kv_cache_types_stay_close_to_f32() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = floe_tests::synth_small(dir.path(), DType::Bf16);
    let m = floe_tests::load(&packed, 2);
    let prompt: Vec<u32> = (10..40).collect();
    let run = |opts: SessionOptions| {
        let mut s = Session::new(opts);
        let mut all = m.forward(&mut s, &prompt, true).unwrap();
        for t in [3u32, 4, 5] {
            all.extend(m.forward(&mut s, &[t], false).unwrap());
        }
        all
    };
    let exact = run(SessionOptions { ctx: None, kv: floe::KvTypes::all(KvDType::F32) });
    assert_eq!(exact, run(SessionOptions::default()));
    let scale = exact.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let mut diffs = Vec::new();
    for (kv_dtype, tol) in [
        (KvDType::F16, 2e-3),
        (KvDType::Q8_0, 3e-2),
        (KvDType::Q4_0, 0.2),
        (KvDType::Tq4, 0.2),
        (KvDType::Tq3, 0.4),
        (KvDType::Tq2, 0.8),
    ] {
        let got = run(SessionOptions { ctx: Some(64), kv: floe::KvTypes::all(kv_dtype) });
        let diff = floe_tests::max_abs_diff(&got, &exact);
        eprintln!("{kv_dtype:?}: max logit difference {diff} (logits up to {scale})");
        assert!(diff <= tol * scale, "{kv_dtype:?}: {diff} vs logits up to {scale}");
        assert!(diff > 0.0, "{kv_dtype:?}: a rounded cache should differ somewhere");
        diffs.push(diff);
    }
    // Fewer bits, larger drift: f16 < q8_0 < the 4-bit types < tq3 < tq2.
    assert!(diffs[0] < diffs[1] && diffs[1] < diffs[2].min(diffs[3]), "{diffs:?}");
    assert!(diffs[2].max(diffs[3]) < diffs[4] && diffs[4] < diffs[5], "{diffs:?}");
}

/// Cache types the model cannot take are refused with the flag's name: MLA's parts on a model
/// without MLA, and a head wider than any cache row.
#[test]
fn kv_types_a_model_cannot_take_are_clear_errors() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = floe_tests::synth_small(dir.path(), DType::Bf16);
    let m = floe_tests::load(&packed, 1);
    let kv = floe::KvTypes { latent: Some(KvDType::Tq3), ..floe::KvTypes::all(KvDType::F16) };
    let mut session = Session::new(SessionOptions { ctx: Some(8), kv });
    let e = m.step(&mut session, &[1], false).unwrap_err();
    assert!(e.to_string().contains("--kv-type-latent") && e.to_string().contains("no MLA"), "{e}");
    let e = SessionOptions { ctx: Some(8), kv }.state_bytes(&m.spec).unwrap_err();
    assert!(e.to_string().contains("--kv-type-latent"), "{e}");
    let wide = floe::model::spec::KvRows::Split { heads: 1, dim: 1100 };
    let e = floe::KvTypes::all(KvDType::Tq3).layout(wide).unwrap_err();
    assert!(e.to_string().contains("--kv-type-k tq3 cannot hold rows of 1100"), "{e}");
}

/// A Qwen3.5 session: the Gated DeltaNet layers hold a fixed-size state (reported apart), only
/// the attention layers' KV grows with the context; a session reused after a reset-free
/// continuation gives the same tokens as one pass (the recurrent state carries the prefix).
#[test]
fn delta_net_state_is_fixed_size_and_carries_the_prefix() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = floe_tests::synth_preset(dir.path(), "tiny-qwen3.5", floe_kernels::DType::Q8_0);
    let m = floe_tests::load(&packed, 1);
    let lin = m.cfg.linear.unwrap();
    let linear_layers = m.cfg.linear_layers.iter().filter(|&&x| x).count();
    let per_layer =
        4 * ((lin.conv_kernel - 1) * lin.qkv_dim() + lin.value_heads * lin.key_dim * lin.value_dim);
    let mut sizes = Vec::new();
    for ctx in [32, 64] {
        let mut s =
            Session::new(SessionOptions { ctx: Some(ctx), kv: floe::KvTypes::all(KvDType::F32) });
        m.step(&mut s, &[1, 2, 3], false).unwrap();
        assert_eq!(s.recurrent_bytes(), linear_layers * per_layer);
        let spec = &m.spec;
        assert_eq!(
            SessionOptions { ctx: Some(ctx), kv: floe::KvTypes::all(KvDType::F32) }
                .state_bytes(spec)
                .unwrap(),
            s.kv_bytes() as u64
        );
        sizes.push(s.kv_bytes() - s.recurrent_bytes());
    }
    let attention_layers = m.cfg.layers - linear_layers;
    assert_eq!(sizes[1] - sizes[0], attention_layers * 2 * 32 * m.cfg.kv_dim() * 4);
    // Prompt in one pass vs in pieces, then decode: the same logits.
    let ids = [5u32, 9, 13, 200, 41, 7, 99];
    let mut one = Session::default();
    let a = m.forward(&mut one, &ids, false).unwrap();
    let mut pieces = Session::default();
    m.forward(&mut pieces, &ids[..3], false).unwrap();
    m.forward(&mut pieces, &ids[3..4], false).unwrap();
    let b = m.forward(&mut pieces, &ids[4..], false).unwrap();
    assert!(floe_tests::max_abs_diff(&a, &b) < 1e-4, "{}", floe_tests::max_abs_diff(&a, &b));
}

/// An MLA session caches one latent-plus-RoPE-key vector per position and layer (not per-head
/// keys and values): its bytes are that, and `bytes_per_position` reports both.
#[test]
fn mla_caches_the_latent_not_per_head_keys_and_values() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = floe_tests::synth_preset(dir.path(), "tiny-deepseek", floe_kernels::DType::Q8_0);
    let m = floe_tests::load(&packed, 1);
    let mla = m.cfg.mla.unwrap();
    let opts = SessionOptions { ctx: Some(32), kv: floe::KvTypes::all(KvDType::F32) };
    let (actual, full) = opts.bytes_per_position(&m.spec).unwrap();
    let layers = m.cfg.layers as u64;
    assert_eq!(actual, layers * 4 * (mla.kv_lora_rank + mla.qk_rope_dim) as u64);
    let per_head = (mla.qk_nope_dim + mla.qk_rope_dim + mla.v_head_dim) as u64;
    assert_eq!(full, layers * m.cfg.heads as u64 * 4 * per_head);
    let mut s = Session::new(opts);
    m.step(&mut s, &[1, 2, 3], false).unwrap();
    assert_eq!(s.kv_bytes() as u64, 32 * actual);
    // Decoding in pieces equals one pass (the cache holds what the next positions need).
    let ids = [5u32, 9, 13, 200, 41, 7, 99];
    let a = m.forward(&mut Session::default(), &ids, false).unwrap();
    let mut pieces = Session::default();
    m.forward(&mut pieces, &ids[..4], false).unwrap();
    let b = m.forward(&mut pieces, &ids[4..], false).unwrap();
    assert!(floe_tests::max_abs_diff(&a, &b) < 1e-4, "{}", floe_tests::max_abs_diff(&a, &b));
}

/// The KV cache grows with the positions stored (doubling from 256, never past the context),
/// and what it holds after growing reads back as before: the logits of a long session equal
/// those of one whose cache was the context's size from its first token.
#[test]
fn the_kv_cache_grows_with_the_positions_stored() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = floe_tests::synth_small(dir.path(), DType::Q8_0);
    let m = floe_tests::load(&packed, 1);
    let opts = SessionOptions { ctx: Some(600), kv: floe::KvTypes::all(KvDType::F16) };
    let per_position = opts.bytes_per_position(&m.spec).unwrap().0 as usize;
    let mut grown = Session::new(opts);
    m.step(&mut grown, &[3; 5], false).unwrap();
    assert_eq!(grown.kv_bytes(), 256 * per_position);
    let ids: Vec<u32> = (0..300).map(|i| i % 200).collect();
    let a = m.step(&mut grown, &ids, false).unwrap().to_vec();
    assert_eq!(grown.kv_bytes(), 512 * per_position);
    // The same positions in a 305-position context (its cache holds all of them at once).
    let mut whole = Session::new(SessionOptions { ctx: Some(305), ..opts });
    m.step(&mut whole, &[3; 5], false).unwrap();
    assert_eq!(whole.kv_bytes(), 256 * per_position);
    let b = m.step(&mut whole, &ids, false).unwrap();
    assert!(a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(whole.kv_bytes(), 305 * per_position);
    for _ in 0..295 {
        m.step(&mut grown, &[1], false).unwrap();
    }
    assert_eq!(grown.kv_bytes(), 600 * per_position);
    assert!(m.step(&mut grown, &[1], false).is_err());
}
