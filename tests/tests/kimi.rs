//! Kimi-K2.5 from its Hugging Face layout: DeepSeek-V3's text model under a `kimi_k25` config
//! (`text_config` with `model_type: kimi_k2`), weights under `language_model.`, a vision tower
//! and projector to skip, and routed experts in compressed-tensors' INT4 `pack-quantized` form.
//! The deepseek_v3 golden rewritten that way packs to the model the golden packs to.

use floe::runtime::Session;
use floe_kernels::DType;
use floe_tests::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// One tensor to write: name, dtype, shape, bytes.
type Owned = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Symmetric INT4 groups of 32 as compressed-tensors packs them: `(packed I32, scales BF16,
/// dequantised values)`. Scales are bf16, as the hub's are.
fn int4_pack(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>, Vec<f32>) {
    let (mut words, mut scales, mut deq) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        let mut codes = Vec::with_capacity(cols);
        for g in row.chunks(32) {
            let amax = g.iter().fold(0f32, |m, x| m.max(x.abs()));
            let s = half::bf16::from_f32(amax / 7.0);
            scales.extend_from_slice(&s.to_le_bytes());
            let s = s.to_f32();
            for &x in g {
                let q = if s > 0.0 { (x / s).round().clamp(-8.0, 7.0) } else { 0.0 };
                codes.push((q as i32 + 8) as u32);
                deq.push(q * s);
            }
        }
        for word in codes.chunks(8) {
            let packed = word.iter().enumerate().fold(0u32, |acc, (i, &c)| acc | (c << (4 * i)));
            words.extend_from_slice(&packed.to_le_bytes());
        }
    }
    (words, scales, deq)
}

/// Writes `tensors` and `config` as a checkpoint directory with the golden's tokenizer.
fn write_checkpoint(
    dir: &std::path::Path,
    golden: &std::path::Path,
    tensors: &[Owned],
    config: &serde_json::Value,
) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, &dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(golden.join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn kimi_k25_hub_layout_with_int4_experts_packs_as_deepseek_v3() {
    let Some(gold) = golden_dir("deepseek_v3") else { return };
    let bytes = std::fs::read(gold.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gold.join("config.json")).unwrap()).unwrap();
    let mut text_config = text.clone();
    text_config["model_type"] = "kimi_k2".into();
    let int4_config = serde_json::json!({
        "quant_method": "compressed-tensors", "format": "pack-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4,
            "group_size": 32, "strategy": "group", "symmetric": true, "type": "int"}}},
        "ignore": ["lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|down)_proj.*"],
    });
    let kimi = |quantised: bool| {
        let mut c = serde_json::json!({
            "architectures": ["KimiK25ForConditionalGeneration"],
            "model_type": "kimi_k25",
            "text_config": text_config,
            "vision_config": {"depth": 1, "hidden_size": 8},
        });
        if quantised {
            c["quantization_config"] = int4_config.clone();
        }
        c
    };
    // Three checkpoints: Kimi's layout with the golden's f32 experts; with INT4 experts; and
    // the golden's own layout holding the INT4 experts' exact values.
    let (mut plain, mut int4, mut dequantised): (Vec<Owned>, Vec<Owned>, Vec<Owned>) =
        Default::default();
    let mut expected_q4 = Vec::new();
    for (name, t) in st.tensors() {
        let (shape, data) = (t.shape().to_vec(), t.data().to_vec());
        let hub = format!("language_model.{name}");
        plain.push((hub.clone(), Dtype::F32, shape.clone(), data.clone()));
        let expert = name.contains(".mlp.experts.") && name.ends_with(".weight");
        if !expert {
            int4.push((hub, Dtype::F32, shape.clone(), data.clone()));
            dequantised.push((name, Dtype::F32, shape, data));
            continue;
        }
        let w: Vec<f32> =
            data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let (rows, cols) = (shape[0], shape[1]);
        let (words, scales, deq) = int4_pack(&w, rows, cols);
        let base = hub.trim_end_matches(".weight").to_string();
        int4.push((format!("{base}.weight_packed"), Dtype::I32, vec![rows, cols / 8], words));
        int4.push((format!("{base}.weight_scale"), Dtype::BF16, vec![rows, cols / 32], scales));
        let shape_bytes = [rows as i64, cols as i64].iter().flat_map(|x| x.to_le_bytes()).collect();
        int4.push((format!("{base}.weight_shape"), Dtype::I64, vec![2], shape_bytes));
        dequantised.push((name.clone(), Dtype::F32, shape, f32s(&deq)));
        expected_q4.push((name, deq));
    }
    let extra = |v: &mut Vec<Owned>| {
        v.push((
            "vision_tower.patch_embed.proj.weight".into(),
            Dtype::F32,
            vec![4, 8],
            f32s(&[0.5; 32]),
        ));
        v.push(("mm_projector.proj.0.weight".into(), Dtype::F32, vec![8, 4], f32s(&[0.25; 32])));
    };
    extra(&mut plain);
    extra(&mut int4);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    write_checkpoint(dirs[0].path(), &gold, &plain, &kimi(false));
    write_checkpoint(dirs[1].path(), &gold, &int4, &kimi(true));
    write_checkpoint(dirs[2].path(), &gold, &dequantised, &text);

    let golden = Golden::load(&gold, "golden.safetensors");
    let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
    let logits = |from: &std::path::Path, dtype: DType| {
        let out = tempfile::tempdir().unwrap();
        let (packed, model) = pack_and_load(from, out.path(), dtype, None);
        assert!(packed.manifest.dense.iter().all(|d| !d.name.contains("vision")));
        (model.forward(&mut Session::default(), &ids, true).unwrap(), packed, out)
    };
    // The Kimi layout is DeepSeek-V3, bit for bit.
    let (a, ..) = logits(&gold, DType::F32);
    let (b, ..) = logits(dirs[0].path(), DType::F32);
    assert_eq!(max_abs_diff(&a, &b), 0.0, "Kimi's layout gives another model");
    // INT4 experts: to f32 their exact values; to Q4_0 their blocks as they are.
    let (c, ..) = logits(dirs[1].path(), DType::F32);
    let (d, ..) = logits(dirs[2].path(), DType::F32);
    assert_eq!(max_abs_diff(&c, &d), 0.0, "INT4 experts were not read as their values");
    let (_, packed, _keep) = logits(dirs[1].path(), DType::Q4_0);
    let table = packed.manifest.expert_table().unwrap();
    let experts = std::fs::read(packed.dir.join("experts.bin")).unwrap();
    let cfg = &packed.manifest.config;
    let mut checked = 0;
    for (name, want) in &expected_q4 {
        let parts: Vec<&str> = name.split('.').collect();
        let (l, e, part): (usize, usize, &str) =
            (parts[2].parse().unwrap(), parts[5].parse().unwrap(), parts[6]);
        let p = table[l].as_ref().unwrap();
        let v = p.view(e, &|_| 1);
        let place = match part {
            "gate_proj" => v.gate,
            "up_proj" => v.up,
            _ => v.down,
        };
        assert_eq!(place.dtype, DType::Q4_0);
        let at = (p.read(e)[0].offset + place.offset as u64) as usize;
        let mut got = vec![0.0; want.len()];
        DType::Q4_0.dequantize(&experts[at..at + place.bytes], &mut got).unwrap();
        assert_eq!(got, *want, "{name}: Q4_0 blocks are not the INT4 values");
        checked += 1;
    }
    assert_eq!(checked, 3 * cfg.experts * cfg.moe_layer_count());
}

/// Kimi's `tiktoken.model` (no tokenizer.json in the hub layout) becomes the tokenizer.json
/// transformers converts it to: the same vocabulary and merges, and on the 19 strings of
/// `tokenizer_golden.json` (Han runs, case runs, digit groups, special-token text) the ids
/// Kimi's own tokenizer gives, and their text back. `floe pack` writes it for a checkpoint
/// that ships only `tiktoken.model`.
#[test]
fn tiktoken_model_converts_to_kimis_tokenizer() {
    use floe::model::tiktoken;
    use floe::model::tokenizer::TextCodec;
    let Some(dir) = golden_dir("kimi_k25") else { return };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    // tokenizer_config.json as the hub ships it: the special tokens in added_tokens_decoder.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    let decoder: serde_json::Map<String, serde_json::Value> = reference["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (t["id"].to_string(), serde_json::json!({"content": t["content"], "special": true}))
        })
        .collect();
    config["added_tokens_decoder"] = decoder.into();
    let ranks = tiktoken::read_ranks(&std::fs::read_to_string(dir.join("tiktoken.model")).unwrap())
        .unwrap();
    let json = tiktoken::tokenizer_json(&ranks, tiktoken::KIMI_PATTERN, &config).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(ours["model"]["vocab"], reference["model"]["vocab"]);
    assert_eq!(ours["model"]["merges"], reference["model"]["merges"]);
    assert_eq!(ours["added_tokens"], reference["added_tokens"]);
    assert_eq!(ours["pre_tokenizer"], reference["pre_tokenizer"]);

    let hub = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("tiktoken.model"), hub.path().join("tiktoken.model")).unwrap();
    std::fs::write(hub.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let gold = golden_dir("deepseek_v3").unwrap();
    std::fs::copy(gold.join("model.safetensors"), hub.path().join("model.safetensors")).unwrap();
    std::fs::copy(gold.join("config.json"), hub.path().join("config.json")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let (packed, _) = pack_and_load(hub.path(), out.path(), DType::F32, None);
    assert!(packed.manifest.has_tokenizer, "no tokenizer packed from tiktoken.model");
    let codec = TextCodec::load(&packed.dir).unwrap();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_golden.json")).unwrap())
            .unwrap();
    let mut n = 0;
    for case in cases["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(codec.encode(text).unwrap(), want, "{text:?}");
        // The reference decodes special tokens as their text (floe's `decode` leaves them out).
        let text_back = codec.hf().decode(&want, false).unwrap();
        assert_eq!(text_back, case["decoded"].as_str().unwrap(), "{text:?}");
        n += 1;
    }
    assert_eq!(n, 19);
}
