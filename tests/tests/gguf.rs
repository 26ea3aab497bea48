//! GGUF parsing against the golden files, and never a panic on damaged input.

use std::path::Path;

use floe::formats::gguf::{parse, GgmlType, GgufFile};
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
    use floe::formats::packed::PackedModel;
    use floe::runtime::generate::GenerateOptions;
    use floe::runtime::Session;
    use floe_tests::generate;
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (file, reference) in
        [("model-F32.gguf", "golden.safetensors"), ("model-Q8_0.gguf", "golden-Q8_0.safetensors")]
    {
        let out = tmp.path().join(file);
        floe::formats::gguf::pack_gguf(&dir.join(file), &out, Some(&dir), &mut |_, _| {}).unwrap();
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
}

/// Logits tolerance against llama.cpp on the K-quant files: `qwen3_moe_k256/README.md` shows an
/// independent float64 implementation of the same activation-rounding recipe lands 0.04-0.09
/// from llama.cpp (a last-bit difference now and then flips one activation rounding, and flips
/// compound over layers), so bit-level agreement is not reachable; 0.1 is that README's bound,
/// which the AVX-512 kernels keep. The AVX2 kernels (an AMD EPYC without AVX-512) sum in
/// another order and land 0.114 on the packed Q4_K_M file, with every argmax and expert set
/// still equal: hence 0.12.
const LLAMACPP_LOGITS_TOL: f32 = 0.12;

/// The GGUF files of `qwen3_moe_k256` (real Q4_K / Q5_K / Q6_K tensors, mixed per layer in the
/// _M files), packed without requantising and run with llama.cpp's activation rounding (Q8_K
/// for K-quant weights, Q8_0 for Q4_0/Q8_0): every layer's expert set at every prompt position
/// and the argmax at every position equal llama.cpp's, logits within 0.1.
#[test]
fn k_quant_gguf_matches_llama_cpp() {
    let Some(dir) = golden_dir("qwen3_moe_k256") else { return };
    let tmp = tempfile::tempdir().unwrap();
    for q in ["Q4_K_M", "Q5_K_M", "Q6_K", "Q4_0", "Q8_0"] {
        let out = tmp.path().join(q);
        floe::formats::gguf::pack_gguf(
            &dir.join(format!("model-{q}.gguf")),
            &out,
            None,
            &mut |_, _| {},
        )
        .unwrap();
        let packed = floe::formats::packed::PackedModel::open(&out, true).unwrap();
        if q == "Q4_K_M" {
            // Q4_K gate/up everywhere, but layer 2's down is Q6_K: two slab layouts.
            let m = &packed.manifest;
            assert!(m.expert_layers.iter().any(|l| l.layout.is_some()), "{q}: one layout");
            assert_eq!(m.slab.down.dtype.as_deref(), Some("q6_k"));
        }
        let model = floe_tests::load(&packed, 2);
        matches_llama_cpp(&model, &dir, q, "packed");
    }
}

/// The `qwen3_moe` golden's llama.cpp files whose rows (32-128 wide) made llama-quantize fall
/// back from the K-quants: Q5_0 (Q4_K_M), Q5_1 (Q5_K_M, whose activations are Q8_1), Q8_0 and
/// Q4_0, run in place and packed: every expert set and argmax equal llama.cpp's, logits within
/// the K-quant bound.
#[test]
fn legacy_quant_gguf_matches_llama_cpp() {
    use floe::formats::source::open_model;
    use floe::runtime::experts::ResidentExperts;
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (q, want_types) in [
        ("Q4_K_M", &["Q5_0", "Q8_0"][..]),
        ("Q5_K_M", &["Q5_1", "Q8_0"][..]),
        ("Q6_K", &["Q8_0"][..]),
        ("Q4_0", &["Q4_0", "Q8_0"][..]),
    ] {
        let file = dir.join(format!("model-{q}.gguf"));
        let g = floe::formats::gguf::GgufFile::open(&file).unwrap();
        for t in want_types {
            assert!(g.tensors.iter().any(|x| x.ggml_type.name() == *t), "{q} holds {t}");
        }
        let m = open_model(&file, false, None).unwrap();
        let experts = Box::new(ResidentExperts::load_file(m.experts).unwrap());
        let direct = floe::runtime::Model::new(m.config.clone(), m.dense, experts, 2).unwrap();
        matches_llama_cpp(&direct, &dir, q, "in place");
        let out = tmp.path().join(q);
        floe::formats::gguf::pack_gguf(&file, &out, None, &mut |_, _| {}).unwrap();
        let packed = floe::formats::packed::PackedModel::open(&out, true).unwrap();
        matches_llama_cpp(&floe_tests::load(&packed, 2), &dir, q, "packed");
    }
}

/// Runs the prompt of `dir/llamacpp-{q}.safetensors` and checks it against llama.cpp's own
/// outputs on that file: every layer's expert set at every prompt position and the argmax at
/// every position equal, logits within [`LLAMACPP_LOGITS_TOL`].
fn matches_llama_cpp(model: &floe::runtime::Model, dir: &std::path::Path, q: &str, how: &str) {
    use floe::runtime::Session;
    let want = Golden::load(dir, &format!("llamacpp-{q}.safetensors"));
    let ids: Vec<u32> = want.i64("input_ids").0.iter().map(|&x| x as u32).collect();
    let mut session = Session::recording();
    let logits = model.forward(&mut session, &ids, true).unwrap();
    let (ref_logits, shape) = want.f32("logits");
    let vocab = shape[1];
    let diff = floe_tests::max_abs_diff(&logits, &ref_logits);
    let argmax = |row: &[f32]| {
        row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
    };
    let agree = (0..ids.len())
        .filter(|&t| {
            argmax(&logits[t * vocab..(t + 1) * vocab])
                == argmax(&ref_logits[t * vocab..(t + 1) * vocab])
        })
        .count();
    let routes = session.routes.unwrap();
    let (mut sets_differ, mut sets) = (0, 0);
    for layer in 0.. {
        let name = format!("router_topk_idx.{layer}");
        if !want.has(&name) {
            break;
        }
        let (idx, shape) = want.i64(&name);
        let k = shape[1];
        for t in 0..ids.len() {
            let mut got: Vec<i64> = routes
                .iter()
                .find(|r| r.layer == layer && r.pos == t)
                .unwrap()
                .experts
                .iter()
                .map(|e| e.0 as i64)
                .collect();
            got.sort();
            sets += 1;
            if got != idx[t * k..t * k + k] {
                sets_differ += 1;
            }
        }
    }
    eprintln!(
        "{q} ({how}): max |logit diff| vs llama.cpp {diff:.3}, argmax {agree}/{}, expert sets differing {sets_differ}/{sets}",
        ids.len(),
    );
    assert!(sets > 0, "{q}: the fixture has expert choices");
    assert_eq!(sets_differ, 0, "{q} ({how}): expert sets");
    assert_eq!(agree, ids.len(), "{q} ({how}): argmax");
    assert!(diff <= LLAMACPP_LOGITS_TOL, "{q} ({how}): logits {diff}");
}

/// The tokenizer rebuilt from the GGUF metadata tokenises like the model's own tokenizer.json
/// (on the golden prompt: its `input_ids`), and decodes back.
#[test]
fn gguf_tokenizer_matches_tokenizer_json() {
    use floe::model::tokenizer::TextCodec;
    let Some(dir) = golden_dir("qwen3_moe_k256") else { return };
    let g = floe::formats::gguf::GgufFile::open(&dir.join("model-Q4_K_M.gguf")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    floe::formats::gguf::tokenizer::write_tokenizer(&g, tmp.path()).unwrap();
    let ours = TextCodec::load(tmp.path()).unwrap();
    let theirs = TextCodec::load(&dir).unwrap();
    let golden: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let prompt = golden["prompt"].as_str().unwrap();
    let want: Vec<u32> = golden["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(ours.encode(prompt).unwrap(), want);
    for text in [
        prompt,
        "",
        "  leading spaces and trailing   ",
        "<|im_start|>user\nHello, world!<|im_end|>\n<|im_start|>assistant\n",
        "Numbers 1234567 and 3.14159; émigré café naïve 日本語 🙂\r\n\ttabs",
        "don't won't I'll we've they're it's",
        "e\u{301} (decomposed) vs \u{e9}",
    ] {
        let (a, b) = (ours.encode(text).unwrap(), theirs.encode(text).unwrap());
        assert_eq!(a, b, "{text:?}");
        assert_eq!(ours.decode(&a).unwrap(), theirs.decode(&b).unwrap(), "{text:?}");
    }
    // A model without tokenizer metadata is a clear error that says what to do.
    let kq = floe::formats::gguf::GgufFile::open(
        &golden_dir("kquant").unwrap().join("kquant-vectors.gguf"),
    )
    .unwrap();
    let err =
        floe::formats::gguf::tokenizer::write_tokenizer(&kq, tmp.path()).unwrap_err().to_string();
    assert!(err.contains("--tokenizer"), "{err}");
}

/// `floe run --model file.gguf` (experts streamed straight from the GGUF file, three reads
/// each) gives the same logits and greedy tokens as the packed copy of the same file, resident
/// and streamed, with every cache policy family, prefetch and I/O backend, at a budget of a few
/// slots more than one layer's top-k.
#[test]
fn direct_gguf_equals_packed_gguf() {
    use floe::formats::source::{open_model, ModelFormat};
    use floe::pipeline::{CacheMode, PrefetchMode, StreamingConfig, StreamingExperts};
    use floe::runtime::generate::GenerateOptions;
    use floe::runtime::{Model, Session};
    use floe_tests::generate;
    use std::sync::Arc;
    let Some(dir) = golden_dir("qwen3_moe_k256") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let opts = GenerateOptions { max_tokens: 12, ignore_eos: true, ..Default::default() };
    let prompt: Vec<u32> = (3..40).collect();
    for q in ["Q4_K_M", "Q6_K"] {
        let file = dir.join(format!("model-{q}.gguf"));
        let packed_dir = tmp.path().join(q);
        floe::formats::gguf::pack_gguf(&file, &packed_dir, None, &mut |_, _| {}).unwrap();
        let packed = open_model(&packed_dir, true, None).unwrap();
        assert_eq!(packed.format, ModelFormat::Packed);
        let reference = Model::new(
            packed.config.clone(),
            packed.dense,
            Box::new(floe::runtime::experts::ResidentExperts::load_file(packed.experts).unwrap()),
            1,
        )
        .unwrap();
        let want_logits = reference.forward(&mut Session::default(), &prompt, true).unwrap();
        let (want, _) =
            generate(&reference, &mut Session::default(), &prompt, &opts, &mut |_| Ok(true))
                .unwrap();

        let direct = || {
            let m = open_model(&file, false, None).unwrap();
            assert_eq!(m.format, ModelFormat::Gguf);
            assert!(m.codec.is_some(), "tokenizer rebuilt from the GGUF metadata");
            m
        };
        let m = direct();
        let resident = Model::new(
            m.config.clone(),
            m.dense,
            Box::new(floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap()),
            1,
        )
        .unwrap();
        let logits = resident.forward(&mut Session::default(), &prompt, true).unwrap();
        assert_eq!(floe_tests::max_abs_diff(&logits, &want_logits), 0.0, "{q} resident");
        let streamed_cases = [
            (CacheMode::Policy(floe::cache::PolicyKind::Lru), PrefetchMode::Gate, "uring"),
            (CacheMode::Policy(floe::cache::PolicyKind::Moe), PrefetchMode::None, "pread"),
            (CacheMode::Os, PrefetchMode::None, "buffered"),
            (CacheMode::None, PrefetchMode::Gate, "uring"),
        ];
        for (cache, prefetch, io) in streamed_cases {
            let m = direct();
            let slots = m.config.top_k + 2;
            let cfg = StreamingConfig {
                cache,
                cache_bytes: (slots * m.experts.slot_bytes) as u64,
                prefetch,
                io: Some(io.parse().unwrap()),
                queue_depth: 4,
                shrinkable: false,
            };
            let s =
                Arc::new(StreamingExperts::open_file(m.experts, &m.config, &cfg, None).unwrap());
            let model = Model::new(m.config.clone(), m.dense, Box::new(Arc::clone(&s)), 1).unwrap();
            let (got, _) =
                generate(&model, &mut Session::default(), &prompt, &opts, &mut |_| Ok(true))
                    .unwrap();
            assert_eq!(got, want, "{q} {cache:?} {prefetch:?} {io}");
            let st = s.stats();
            assert!(st.cache.misses > 0 && st.io_bytes > 0, "{q}: experts were streamed");
        }
    }
}

/// `floe synth --format gguf`: the exported GGUF parses, names its tensors the llama.cpp way,
/// runs in place with the same logits as the packed model it came from, and packs back into
/// slabs with the same bytes.
#[test]
fn exported_gguf_runs_like_its_packed_source() {
    use floe::formats::source::open_model;
    use floe::runtime::{Model, Session};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &dir, floe_kernels::DType::Q4_0, 3, &mut |_, _| {})
        .unwrap();
    let packed = floe::formats::packed::PackedModel::open(&dir, true).unwrap();
    let file = tmp.path().join("tiny.gguf");
    floe::formats::gguf::write::export_gguf(&packed, &file, &mut |_, _| {}).unwrap();
    let g = floe::formats::gguf::GgufFile::open(&file).unwrap();
    assert_eq!(g.architecture(), Some("qwen3moe"));
    let e = g.tensor("blk.0.ffn_down_exps.weight").unwrap();
    let c = &packed.manifest.config;
    assert_eq!(e.dims, vec![c.expert_ffn as u64, c.hidden as u64, c.experts as u64]);
    assert!(g.get("tokenizer.ggml.merges").is_some(), "llama.cpp requires the merges key");

    let run = |path: &std::path::Path| {
        let m = open_model(path, false, None).unwrap();
        let codec = m.codec.unwrap();
        let experts = floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap();
        let model = Model::new(m.config, m.dense, Box::new(experts), 1).unwrap();
        let ids = codec.encode("hello, world").unwrap();
        (ids.clone(), model.forward(&mut Session::default(), &ids, true).unwrap())
    };
    let (ids_a, a) = run(&dir);
    let (ids_b, b) = run(&file);
    assert_eq!(ids_a, ids_b, "same tokenizer");
    assert_eq!(floe_tests::max_abs_diff(&a, &b), 0.0);

    let back = tmp.path().join("back");
    floe::formats::gguf::pack_gguf(&file, &back, None, &mut |_, _| {}).unwrap();
    let m2 = floe::formats::packed::PackedModel::open(&back, true).unwrap().manifest;
    let hashes = |m: &floe::formats::packed::Manifest| {
        m.expert_layers.iter().map(|l| l.xxh3.clone()).collect::<Vec<_>>()
    };
    assert_eq!(hashes(&m2), hashes(&packed.manifest), "slabs byte for byte");
}

/// Every architecture through GGUF: the golden Hugging Face checkpoint packed (f32), written as
/// GGUF in llama.cpp's layout (`qwen3moe`, `qwen2moe` with its shared expert, `olmoe`, and
/// `llama` for Mixtral with llama.cpp's Q/K row order), then run in place from the GGUF: logits
/// within 1e-4 of transformers and the same greedy tokens.
#[test]
fn every_architecture_runs_from_gguf() {
    use floe::formats::pack::{pack, PackOptions};
    use floe::formats::source::open_model;
    use floe::runtime::generate::GenerateOptions;
    use floe::runtime::{Model, Session};
    use floe_tests::generate;
    let tmp = tempfile::tempdir().unwrap();
    for (name, gguf_arch) in [
        ("qwen3_moe", "qwen3moe"),
        ("qwen2_moe", "qwen2moe"),
        ("olmoe", "olmoe"),
        ("mixtral", "llama"),
        ("glm4_moe", "glm4moe"),
        ("qwen3_5_moe", "qwen35moe"),
        ("deepseek_v3", "deepseek2"),
        ("deepseek_v2", "deepseek2"),
        ("gpt_oss", "gpt-oss"),
        ("qwen3_next", "qwen3next"),
        ("minimax_m2", "minimax-m2"),
        ("gemma4_moe", "gemma4"),
        ("glm_moe_dsa", "glm-dsa"),
        ("deepseek_v4", "deepseek4"),
    ] {
        let Some(dir) = golden_dir(name) else { return };
        let packed_dir = tmp.path().join(name);
        let opts = PackOptions { dtype: floe_kernels::DType::F32, dense_dtype: None, force: true };
        pack(&dir, &packed_dir, &opts, &mut |_, _| {}).unwrap();
        let packed = floe::formats::packed::PackedModel::open(&packed_dir, true).unwrap();
        let file = tmp.path().join(format!("{name}.gguf"));
        floe::formats::gguf::write::export_gguf(&packed, &file, &mut |_, _| {}).unwrap();
        let g = floe::formats::gguf::GgufFile::open(&file).unwrap();
        assert_eq!(g.architecture(), Some(gguf_arch));
        let cfg = floe::formats::gguf::config_of(&g).unwrap();
        assert_eq!(cfg, packed.manifest.config, "{name}: config through GGUF metadata");
        drop(g);

        let m = open_model(&file, false, None).unwrap();
        let experts = floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap();
        let model = Model::new(m.config, m.dense, Box::new(experts), 1).unwrap();
        let golden = Golden::load(&dir, "golden.safetensors");
        let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
        let logits = model.forward(&mut Session::default(), &ids, true).unwrap();
        let diff = floe_tests::max_abs_diff(&logits, &golden.f32("logits").0);
        eprintln!("{name} via GGUF ({gguf_arch}): max |logit diff| {diff:.2e}");
        // See golden.rs for the two hybrids' tolerances.
        let tol = match name {
            "qwen3_5_moe" => 2e-4,
            "qwen3_next" => floe_tests::QWEN3_NEXT_TOL,
            "gemma4_moe" => floe_tests::GEMMA4_TOL,
            _ => 1e-4,
        };
        assert!(diff <= tol, "{name}: {diff}");
        let want: Vec<u32> = golden.i64("gen_ids").0.iter().map(|&x| x as u32).collect();
        let opts =
            GenerateOptions { max_tokens: want.len(), ignore_eos: true, ..Default::default() };
        let (out, _) =
            generate(&model, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
        assert_eq!(out, want, "{name}: greedy tokens");
    }
}

/// llama.cpp's Q/K row permutation (convert_hf_to_gguf.py `permute`: reshape to
/// (heads, 2, d/2, cols), swap axes 1 and 2) and its inverse, on labelled rows.
#[test]
fn llama_qk_permutation_matches_the_converter() {
    let (heads, d) = (3, 8);
    let hf: Vec<u8> = (0..(heads * d) as u8).collect(); // one byte per row: its HF index
    let gguf = floe::formats::gguf::unpermute_rows(&hf, heads, 1, true);
    // numpy: w.reshape(heads, 2, d/2).swapaxes(1, 2).reshape(-1)
    let mut want = Vec::new();
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                want.push(hf[h * d + j * (d / 2) + i]);
            }
        }
    }
    assert_eq!(gguf, want);
    assert_eq!(&gguf[..8], &[0, 4, 1, 5, 2, 6, 3, 7]);
    assert_eq!(floe::formats::gguf::unpermute_rows(&gguf, heads, 1, false), hf);
}

/// A split GGUF (`-0000k-of-0000n.gguf`, as llama.cpp's gguf-split writes them) opens from any
/// part as one model and runs like the single file, resident and streamed, also where one
/// expert's gate, up and down lie in different parts (one read request over two files).
#[test]
fn split_gguf_runs_as_one_model() {
    use floe::formats::placement::ExpertPlacement;
    use floe::formats::source::open_model;
    use floe::pipeline::{CacheMode, PrefetchMode, StreamingConfig, StreamingExperts};
    use floe::runtime::{Model, Session};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &dir, floe_kernels::DType::Q8_0, 5, &mut |_, _| {})
        .unwrap();
    let packed = floe::formats::packed::PackedModel::open(&dir, true).unwrap();
    let file = tmp.path().join("tiny.gguf");
    floe::formats::gguf::write::export_gguf(&packed, &file, &mut |_, _| {}).unwrap();
    let parts = floe::formats::gguf::write::split_gguf(&file, 7).unwrap();
    assert!(parts.len() > 3);
    let prompt: Vec<u32> = (40..60).collect();
    let run = |path: &std::path::Path, streamed: bool| {
        let m = open_model(path, false, None).unwrap();
        let experts: Box<dyn floe::runtime::experts::ExpertSource> = if streamed {
            let cfg = StreamingConfig {
                cache: CacheMode::Policy(floe::cache::PolicyKind::Lru),
                cache_bytes: ((m.config.top_k + 1) * m.experts.slot_bytes) as u64,
                prefetch: PrefetchMode::Gate,
                io: Some(floe::io::BackendKind::Uring),
                queue_depth: 4,
                shrinkable: false,
            };
            Box::new(StreamingExperts::open_file(m.experts, &m.config, &cfg, None).unwrap())
        } else {
            Box::new(floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap())
        };
        let model = Model::new(m.config, m.dense, experts, 1).unwrap();
        model.forward(&mut Session::default(), &prompt, true).unwrap()
    };
    let want = run(&file, false);
    // Opened from its third part: all parts, in order.
    let m = open_model(&parts[2], false, None).unwrap();
    assert_eq!(m.experts.paths, parts);
    let straddles = m.experts.layers.iter().flatten().any(|p| match p {
        ExpertPlacement::Slices { parts } => parts.iter().any(|s| s.file != parts[0].file),
        _ => false,
    });
    assert!(straddles, "some layer's expert tensors lie in two parts");
    assert_eq!(floe_tests::max_abs_diff(&run(&parts[2], false), &want), 0.0);
    assert_eq!(floe_tests::max_abs_diff(&run(&parts[0], true), &want), 0.0);
    // A missing part is an error naming it.
    std::fs::remove_file(&parts[1]).unwrap();
    let err = open_model(&parts[0], false, None).unwrap_err().to_string();
    assert!(err.contains("00002-of"), "{err}");
}

/// The GGUF files llama.cpp's own converter wrote from the Qwen3.5, GLM-4.5 and DeepSeek
/// goldens (`qwen35moe`, `glm4moe`, `deepseek2`: its tensor names, its metadata, its rewritten
/// tensors: `A` for `A_log`, `1 + w` norms, value heads tiled, `kv_b_proj` split into `k_b` and
/// `v_b`), run in place and packed with `pack --from`:
/// logits within the golden tolerance of transformers, every layer's expert set, the greedy
/// tokens.
#[test]
fn llama_cpp_converted_gguf_matches_transformers() {
    use floe::formats::packed::PackedModel;
    use floe::formats::source::open_model;
    use floe::runtime::generate::GenerateOptions;
    use floe::runtime::{Model, Session};
    use floe_tests::generate;
    let tmp = tempfile::tempdir().unwrap();
    for (name, tol) in [
        ("glm4_moe", 1e-4),
        ("qwen3_5_moe", 2e-4),
        ("deepseek_v3", 1e-4),
        ("deepseek_v2", 1e-4),
        ("gpt_oss", 1e-4),
        ("qwen3_next", floe_tests::QWEN3_NEXT_TOL),
        ("minimax_m2", 1e-4),
        ("gemma4_moe", floe_tests::GEMMA4_TOL),
        ("glm_moe_dsa", 1e-4),
        ("deepseek_v4", 1e-4),
    ] {
        let Some(dir) = golden_dir(name) else { return };
        let file = dir.join("model-F32.gguf");
        let golden = Golden::load(&dir, "golden.safetensors");
        let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
        let want: Vec<u32> = golden.i64("gen_ids").0.iter().map(|&x| x as u32).collect();
        let in_place = {
            let m = open_model(&file, false, None).unwrap();
            let experts = floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap();
            Model::new(m.config, m.dense, Box::new(experts), 1).unwrap()
        };
        let out = tmp.path().join(name);
        floe::formats::gguf::pack_gguf(&file, &out, Some(&dir), &mut |_, _| {}).unwrap();
        let packed = floe_tests::load(&PackedModel::open(&out, true).unwrap(), 1);
        for (how, model) in [("in place", &in_place), ("pack --from", &packed)] {
            let mut s = Session::recording();
            let logits = model.forward(&mut s, &ids, true).unwrap();
            let diff = floe_tests::max_abs_diff(&logits, &golden.f32("logits").0);
            eprintln!("{name} llama.cpp GGUF {how}: max |logit diff| {diff:.2e}");
            assert!(diff <= tol, "{name} {how}: {diff}");
            let routes = s.routes.take().unwrap();
            for l in (0..model.cfg.layers).filter(|&l| model.cfg.moe_layers[l]) {
                let (idx, shape) = golden.i64(&format!("router_topk_idx.{l}"));
                let k = shape[1];
                for (t, r) in routes.iter().filter(|r| r.layer == l).enumerate() {
                    let mut got: Vec<i64> = r.experts.iter().map(|e| e.0 as i64).collect();
                    got.sort_unstable();
                    assert_eq!(
                        got,
                        idx[t * k..(t + 1) * k].to_vec(),
                        "{name} {how}: layer {l} token {t}"
                    );
                }
            }
            let opts =
                GenerateOptions { max_tokens: want.len(), ignore_eos: true, ..Default::default() };
            let (got, _) =
                generate(model, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
            assert_eq!(got, want, "{name} {how}: greedy tokens");
        }
    }
}

/// floe and llama.cpp on the same llama.cpp-converted GGUF (`qwen35moe`, `glm4moe`, `gpt-oss`,
/// `qwen3next`, `minimax-m2`, `gemma4`, `glm-dsa`, `deepseek4`, F32; not `deepseek2`: llama.cpp refuses the V2 file and, the V3 file carrying no
/// `expert_gating_func`, routes it with a softmax instead of V3's sigmoid, so its tokens are not
/// the model's):
/// llama.cpp's prompt logits and greedy tokens, recorded by
/// `bench/scripts/llamacpp_golden_logits.py` into `tests/fixtures/llamacpp/`. Both are f32 with
/// f32 weights, so only summation order differs.
#[test]
fn llama_cpp_converted_gguf_matches_llama_cpp() {
    use floe::formats::source::open_model;
    use floe::runtime::generate::GenerateOptions;
    use floe::runtime::{Model, Session};
    use floe_tests::generate;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/llamacpp");
    for name in [
        "glm4_moe",
        "qwen3_5_moe",
        "gpt_oss",
        "qwen3_next",
        "minimax_m2",
        "gemma4_moe",
        "glm_moe_dsa",
        "deepseek_v4",
    ] {
        let Some(dir) = golden_dir(name) else { return };
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join(format!("{name}-F32.json"))).unwrap(),
        )
        .unwrap();
        let want: Vec<f32> = std::fs::read(fixtures.join(format!("{name}-F32.logits.f32")))
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut m = open_model(&dir.join("model-F32.gguf"), false, None).unwrap();
        // llama.cpp rounds YaRN's correction range to whole dimensions; transformers' gpt-oss
        // (and so floe, by default) does not. With llama.cpp's rounding floe gives llama.cpp's
        // logits; without it, transformers' (a 0.94 logit gap between the two on this file).
        if let Some(y) = m.config.yarn.as_mut() {
            y.truncate = true;
        }
        let experts = floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap();
        let model = Model::new(m.config, m.dense, Box::new(experts), 1).unwrap();
        let golden = Golden::load(&dir, "golden.safetensors");
        let ids: Vec<u32> = golden.i64("input_ids").0.iter().map(|&x| x as u32).collect();
        let logits = model.forward(&mut Session::default(), &ids, true).unwrap();
        assert_eq!(logits.len(), want.len());
        let diff = floe_tests::max_abs_diff(&logits, &want);
        eprintln!("{name}: floe vs llama.cpp on its own GGUF: max |logit diff| {diff:.2e}");
        // Qwen3-Next's random checkpoint amplifies summation-order differences (golden.rs).
        // llama.cpp's GELU rounds its input to f16 and reads an f16 table (GGML_GELU_FP16):
        // on Gemma 4 its logits are 0.061 from transformers', where floe's are 3.3e-5.
        let tol = match name {
            "qwen3_next" => 5e-4,
            "gemma4_moe" => 0.1,
            _ => 1e-4,
        };
        assert!(diff <= tol, "{name}: {diff}");
        let gen: Vec<u32> = info["gen_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let opts =
            GenerateOptions { max_tokens: gen.len(), ignore_eos: true, ..Default::default() };
        let (out, _) =
            generate(&model, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
        assert_eq!(out, gen, "{name}: llama.cpp's greedy tokens");
    }
}
