//! GGUF parsing against the golden files, and never a panic on damaged input.

use std::path::Path;

use floe::gguf::{parse, GgmlType, GgufFile};
use floe_kernels::quant::{quantize_q8_0, QK};
use floe_kernels::BlockQ8_0;
use floe_tests::{golden_dir, Golden};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[test]
fn f32_gguf_holds_the_safetensors_weights() {
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let g = GgufFile::open(&dir.join("model-F32.gguf")).unwrap();
    assert_eq!(g.architecture(), Some("qwen3moe"));
    assert_eq!(g.get("qwen3moe.block_count").and_then(|v| v.as_u64()), Some(3));
    assert_eq!(g.get("qwen3moe.expert_count").and_then(|v| v.as_u64()), Some(16));
    let exps = g.tensor("blk.0.ffn_gate_exps.weight").unwrap();
    assert_eq!((exps.dims.clone(), exps.ggml_type), (vec![64, 32, 16], GgmlType::F32));
    // token_embd [64, 1024] (GGUF order) is torch's [1024, 64]: the same bytes.
    let st = Golden::load(&dir, "model.safetensors");
    let (embed, _) = st.f32("model.embed_tokens.weight");
    let t = g.tensor("token_embd.weight").unwrap();
    let got: Vec<f32> =
        g.data(t).chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(got, embed);
}

/// floe's Q8_0 quantiser is llama.cpp's, bit for bit: quantising the f32 weights gives the
/// bytes llama-quantize wrote.
#[test]
fn q8_0_gguf_equals_floe_quantisation() {
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let g = GgufFile::open(&dir.join("model-Q8_0.gguf")).unwrap();
    let st = Golden::load(&dir, "model.safetensors");
    for (gguf_name, st_name) in [
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.2.attn_output.weight", "model.layers.2.self_attn.o_proj.weight"),
        ("token_embd.weight", "model.embed_tokens.weight"),
    ] {
        let t = g.tensor(gguf_name).unwrap();
        assert_eq!(t.ggml_type, GgmlType::Q8_0, "{gguf_name}");
        let (w, _) = st.f32(st_name);
        let mut blocks = vec![BlockQ8_0 { d: half::f16::ZERO, qs: [0; QK] }; w.len() / QK];
        quantize_q8_0(&w, &mut blocks);
        assert!(bytemuck::cast_slice::<BlockQ8_0, u8>(&blocks) == g.data(t), "{gguf_name} differs");
    }
}

#[test]
fn kquant_vectors_parse_with_their_types() {
    let Some(dir) = golden_dir("kquant") else { return };
    let g = GgufFile::open(&dir.join("kquant-vectors.gguf")).unwrap();
    let types: Vec<GgmlType> = g.tensors.iter().map(|t| t.ggml_type).collect();
    for ty in [GgmlType::Q2K, GgmlType::Q3K, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        assert!(types.contains(&ty), "{ty:?} missing from {types:?}");
    }
}

/// Any prefix of a real file, and any byte flipped in its header, parses or errors: never a
/// panic, never an out-of-bounds tensor.
#[test]
fn damaged_gguf_never_panics() {
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let bytes = std::fs::read(dir.join("model-Q4_K_M.gguf")).unwrap();
    let header_end = 64 * 1024.min(bytes.len());
    let path = Path::new("damaged.gguf");
    let mut runner = TestRunner::new(Config { cases: 1024, ..Config::default() });
    runner
        .run(&(0..bytes.len(), 0..header_end, any::<u8>()), |(cut, at, x)| {
            if let Ok((_, _, tensors, _)) = parse(&bytes[..cut], path) {
                prop_assert!(tensors.iter().all(|t| t.offset + t.bytes <= cut as u64));
            }
            let mut flipped = bytes.clone();
            flipped[at] ^= x | 1;
            if let Ok((_, _, tensors, _)) = parse(&flipped, path) {
                prop_assert!(tensors.iter().all(|t| t.offset + t.bytes <= flipped.len() as u64));
            }
            Ok(())
        })
        .unwrap();
    let err = parse(&bytes[..100], path).unwrap_err().to_string();
    assert!(err.contains("damaged.gguf") && err.contains("truncated"), "{err}");
    assert!(parse(b"NOPE\x03\0\0\0", path).unwrap_err().to_string().contains("magic"));
}

/// `floe pack --from model.gguf` (no requantising) runs like the safetensors model: F32 logits
/// within 1e-4 of transformers and the same greedy tokens; Q8_0 (exact activations) within 1e-4
/// of the dequantised reference.
#[test]
fn gguf_import_matches_transformers() {
    use floe::model::format::PackedModel;
    use floe::model::forward::Session;
    use floe::model::generate::{generate, GenerateOptions};
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (file, reference) in
        [("model-F32.gguf", "golden.safetensors"), ("model-Q8_0.gguf", "golden-Q8_0.safetensors")]
    {
        let out = tmp.path().join(file);
        floe::gguf::pack_gguf(&dir.join(file), &out, Some(&dir), &mut |_, _| {}).unwrap();
        let packed = PackedModel::open(&out, true).unwrap();
        let mut model = floe_tests::load(&packed, 1);
        model.set_quant_activations(floe_kernels::QuantActivations::F32);
        let golden = Golden::load(&dir, reference);
        let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
        let logits = model.forward(&mut Session::default(), &ids, true).unwrap();
        let diff = floe_tests::max_abs_diff(&logits, &golden.f32("logits").0);
        eprintln!("{file}: max |logit diff| {diff:.2e}");
        assert!(diff <= 1e-4, "{file}: {diff}");
        if golden.has("gen_ids") {
            let want: Vec<u32> = golden.i64("gen_ids").0.iter().map(|&x| x as u32).collect();
            let opts = GenerateOptions { max_tokens: 16, ignore_eos: true, ..Default::default() };
            let (out, _) =
                generate(&model, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
            assert_eq!(out, want, "{file}: greedy tokens");
        }
    }
    // Types without kernels yet are named.
    let err = floe::gguf::pack_gguf(
        &dir.join("model-Q5_K_M.gguf"),
        &tmp.path().join("q5"),
        None,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("floe imports"), "{err}");
    assert!(!tmp.path().join("q5").exists());
}
