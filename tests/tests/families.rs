//! Family-specific file layouts beyond the golden checks of golden.rs and gguf.rs.

use floe::formats::gguf::write::{write_gguf, TensorBytes};
use floe::formats::gguf::GgufFile;
use floe::formats::source::open_model;
use floe::runtime::experts::ResidentExperts;
use floe::runtime::{Model, Session};
use floe_tests::*;

fn in_place(file: &std::path::Path) -> Model {
    let m = open_model(file, false, None).unwrap();
    let experts = ResidentExperts::load_file(m.experts).unwrap();
    Model::new(m.config, m.dense, Box::new(experts), 1).unwrap()
}

/// Qwen3-Next GGUFs converted before llama.cpp split `ssm_in` into `attn_qkv` and `attn_gate`
/// hold the fused per-key-head q/k/v/z rows: the golden's llama.cpp file rewritten that way
/// (each DeltaNet layer's two tensors interleaved back into one) runs to the same logits, bit
/// for bit, in place and via `pack --from`.
#[test]
fn qwen3_next_fused_ssm_in_runs_like_the_split_tensors() {
    let Some(dir) = golden_dir("qwen3_next") else { return };
    let src = dir.join("model-F32.gguf");
    let g = GgufFile::open(&src).unwrap();
    let cfg = floe::formats::gguf::config_of(&g).unwrap();
    let lin = cfg.linear.unwrap();
    let (qkv_rows, z_rows) = (lin.qkv_dim(), lin.value_total());
    let mut fused: Vec<(String, Vec<u8>)> = Vec::new();
    for l in (0..cfg.layers).filter(|&l| cfg.is_linear(l)) {
        let qkv = g.tensor(&format!("blk.{l}.attn_qkv.weight")).unwrap();
        let z = g.tensor(&format!("blk.{l}.attn_gate.weight")).unwrap();
        let row = g.data(qkv).len() / qkv_rows;
        let mut out = vec![0u8; (qkv_rows + z_rows) * row];
        for (t, gate) in [(qkv, false), (z, true)] {
            let rows = floe::formats::convert::qkvz_rows(&lin, gate);
            for (i, r) in rows.into_iter().enumerate() {
                out[r * row..(r + 1) * row].copy_from_slice(&g.data(t)[i * row..(i + 1) * row]);
            }
        }
        fused.push((format!("blk.{l}.ssm_in.weight"), out));
    }
    let mut tensors: Vec<TensorBytes<'_>> = g
        .tensors
        .iter()
        .filter(|t| !t.name.ends_with("attn_qkv.weight") || !is_linear_layer(&t.name, &cfg))
        .filter(|t| !t.name.ends_with("attn_gate.weight"))
        .map(|t| (t.name.clone(), t.dims.clone(), t.ggml_type, g.data(t)))
        .collect();
    for (name, bytes) in &fused {
        let dims = vec![cfg.hidden as u64, (qkv_rows + z_rows) as u64];
        tensors.push((name.clone(), dims, floe::formats::gguf::GgmlType::F32, bytes));
    }
    let meta: Vec<_> = g.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("qwen3next-ssm_in.gguf");
    write_gguf(&old, &meta, &tensors, g.alignment).unwrap();
    assert!(GgufFile::open(&old).unwrap().tensor("blk.0.attn_qkv.weight").is_none());

    let golden = Golden::load(&dir, "golden.safetensors");
    let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
    let want = in_place(&src).forward(&mut Session::default(), &ids, true).unwrap();
    let got = in_place(&old).forward(&mut Session::default(), &ids, true).unwrap();
    assert_eq!(max_abs_diff(&want, &got), 0.0, "ssm_in in place");
    let packed_dir = tmp.path().join("packed");
    floe::formats::gguf::pack_gguf(&old, &packed_dir, Some(&dir), &mut |_, _| {}).unwrap();
    let packed = load(&floe::formats::packed::PackedModel::open(&packed_dir, true).unwrap(), 1);
    let got = packed.forward(&mut Session::default(), &ids, true).unwrap();
    assert_eq!(max_abs_diff(&want, &got), 0.0, "ssm_in via pack --from");
}

fn is_linear_layer(name: &str, cfg: &floe::model::config::ModelConfig) -> bool {
    let l: usize = name.split('.').nth(1).and_then(|x| x.parse().ok()).unwrap_or(usize::MAX);
    cfg.is_linear(l)
}

/// The hub's `Gemma4ForConditionalGeneration` layout: the config under `text_config`, the text
/// model under `model.language_model.`, a vision tower beside it (skipped): the golden
/// rewritten that way packs to the same model, bit for bit.
#[test]
fn gemma4_conditional_generation_layout_packs_to_the_same_model() {
    use floe_kernels::DType;
    use safetensors::tensor::TensorView;
    let Some(dir) = golden_dir("gemma4_moe") else { return };
    let hub = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let name = match name.strip_prefix("model.") {
                Some(rest) => format!("model.language_model.{rest}"),
                None => name,
            };
            (name, t.shape().to_vec(), t.data().to_vec())
        })
        .collect();
    let f32s = |n: usize| (0..n).flat_map(|i| (i as f32 * 0.01).to_le_bytes()).collect::<Vec<u8>>();
    owned.push(("model.vision_tower.patch_embedder.weight".into(), vec![8, 12], f32s(96)));
    owned.push(("model.embed_vision.embedding_projection.weight".into(), vec![64, 8], f32s(512)));
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, d)| {
            (n.clone(), TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &hub.path().join("model.safetensors")).unwrap();
    let text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let config = serde_json::json!({
        "architectures": ["Gemma4ForConditionalGeneration"],
        "model_type": "gemma4",
        "text_config": text,
        "vision_config": {"hidden_size": 8},
    });
    std::fs::write(hub.path().join("config.json"), config.to_string()).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.join(f), hub.path().join(f)).unwrap();
    }
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, causal) = pack_and_load(&dir, a.path(), DType::F32, None);
    let (packed, multimodal) = pack_and_load(hub.path(), b.path(), DType::F32, None);
    assert!(packed.manifest.dense.iter().all(|d| !d.name.contains("vision")));
    let golden = Golden::load(&dir, "golden.safetensors");
    let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
    let x = causal.forward(&mut Session::default(), &ids, true).unwrap();
    let y = multimodal.forward(&mut Session::default(), &ids, true).unwrap();
    assert_eq!(max_abs_diff(&x, &y), 0.0, "the two layouts give different models");
}

/// GLM-5's lightning indexer picks, at every prompt position of every layer that computes its
/// own selection, exactly the positions transformers' picks (`indexer_topk.{l}`: ascending,
/// -1 past the visible ones), below and above the top-k.
#[test]
fn glm5_indexer_selects_transformers_positions() {
    use floe_kernels::DType;
    let Some(dir) = golden_dir("glm_moe_dsa") else { return };
    let scratch = tempfile::tempdir().unwrap();
    let (_, model) = pack_and_load(&dir, scratch.path(), DType::F32, None);
    let golden = Golden::load(&dir, "golden.safetensors");
    let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
    let mut s = Session::default().record_queries();
    model.forward(&mut s, &ids, true).unwrap();
    let dsa = model.cfg.dsa.clone().unwrap();
    let mut checked = 0;
    for l in (0..model.cfg.layers).filter(|&l| dsa.full_layers[l]) {
        let (want, shape) = golden.i64(&format!("indexer_topk.{l}"));
        let k = shape[1];
        let got = s.kv_cache(l).unwrap().selections().unwrap();
        assert_eq!(got.len(), ids.len() * k, "layer {l}");
        for t in 0..ids.len() {
            let mut mine: Vec<i64> = got[t * k..(t + 1) * k]
                .iter()
                .map(|&p| if p == usize::MAX { -1 } else { p as i64 })
                .collect();
            mine.sort_unstable_by_key(|&p| if p < 0 { i64::MAX } else { p });
            assert_eq!(mine, want[t * k..(t + 1) * k].to_vec(), "layer {l} position {t}");
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * ids.len(), "the golden's three full indexer layers");
}

/// GLM-5 configs floe cannot run are refused by name: an indexer type it does not know, a
/// first layer that would reuse a selection no layer made, indexer keys missing.
#[test]
fn glm5_bad_indexer_configs_are_refused() {
    let Some(dir) = golden_dir("glm_moe_dsa") else { return };
    assert_config_refusals(
        &dir,
        &[
            ("\"indexer_types\":[\"full\"", "\"indexer_types\":[\"dense\"", "indexer type"),
            ("\"indexer_types\":[\"full\"", "\"indexer_types\":[\"shared\"", "starts shared"),
            ("\"index_topk\":8", "\"index_topkk\":8", "index_topk"),
        ],
    );
}

/// Prefix reuse in each family added after the first nine. A session that ran another prompt
/// sharing 13 tokens with the new one is cut back to the longest prefix it can offer
/// (`rewind_point`): anywhere for attention and MLA; for a recurrent state nowhere short of its
/// end; for compressed attention only a window boundary whose earlier windows it still holds,
/// which a session 8 positions past the boundary no longer does. A session that holds exactly
/// the new prompt's first 13 tokens (a conversation's next turn) offers all 13 in every family.
/// Either way the rest of the new prompt ends with the logits of the new prompt run fresh, bit
/// for bit.
#[test]
fn prefix_reuse_equals_a_fresh_run_in_the_newer_families() {
    use floe_kernels::DType;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let old: Vec<u32> = (0..21).map(|i| 40 + (i * 7) % 200).collect();
    let mut new = old[..13].to_vec();
    new.extend((0..9).map(|i| 35 + (i * 11) % 180));
    for (preset, branch) in [
        ("tiny-qwen3-next", None),
        ("tiny-minimax-m2", Some(13)),
        ("tiny-gemma4", Some(13)),
        ("tiny-glm5", Some(13)),
        ("tiny-deepseek-v4", None),
    ] {
        let packed = synth_preset(dir.path(), preset, DType::Q8_0);
        let m = load(&packed, 1);
        let want = m.forward(&mut Session::default(), &new, false).unwrap();
        for (held, expect) in [(&old[..], branch), (&new[..13], Some(13))] {
            let mut kept = Session::default();
            m.forward(&mut kept, held, false).unwrap();
            let at = kept.rewind_point(13);
            assert_eq!(at, expect, "{preset}: the prefix a session of {} offers", held.len());
            let Some(at) = at else { continue };
            assert!(kept.rewind(at), "{preset}");
            let got = m.forward(&mut kept, &new[at..], false).unwrap();
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            let diff = max_abs_diff(&got, &want);
            assert!(same, "{preset}: reused {at} of 13 tokens; max diff {diff}");
        }
    }
}
