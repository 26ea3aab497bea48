//! `floe synth` writes a valid packed model: checksums verify, the byte-level tokenizer round
//! trips any text, and streaming gives the same tokens as resident experts.

use std::sync::Arc;

use floe::formats::dense::DenseWeights;
use floe::formats::packed::PackedModel;
use floe::formats::synth::{synth, SynthShape};
use floe::model::tokenizer::TextCodec;
use floe::pipeline::{CacheMode, PrefetchMode, StreamingConfig, StreamingExperts};
use floe::runtime::generate::GenerateOptions;
use floe::runtime::{Model, Session};
use floe_kernels::DType;
use floe_tests::generate;

#[test]
fn tiny_synth_model_runs_resident_and_streamed_alike() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = tmp.path().join("tiny");
    for (preset, dtype) in [
        ("tiny", DType::Q4_0),
        ("tiny", DType::Q8_0),
        ("tiny", DType::Bf16),
        ("tiny-qwen3.5", DType::Q4_0),
        ("tiny-qwen3.5", DType::Bf16),
        ("tiny-glm4.5", DType::Q4_0),
        ("tiny-glm4.5", DType::Bf16),
        ("tiny-deepseek", DType::Q8_0),
        ("tiny-gpt-oss", DType::Mxfp4),
        ("tiny-gpt-oss", DType::Bf16),
        ("tiny-qwen3-next", DType::Q4_0),
        ("tiny-minimax-m2", DType::Q8_0),
        ("tiny-gemma4", DType::Q4_0),
        ("tiny-glm5", DType::Q8_0),
        ("tiny-deepseek-v4", DType::Q4_0),
    ] {
        let shape = SynthShape::preset(preset).unwrap();
        synth(&shape, &out, dtype, 7, &mut |_, _| {}).unwrap();
        let packed = PackedModel::open(&out, true).unwrap();
        let codec = TextCodec::load(&out).unwrap();
        let text = "héllo, wörld ✓";
        let ids = codec.encode(text).unwrap();
        assert_eq!(ids.len(), text.len(), "one token per byte");
        assert_eq!(codec.decode(&ids).unwrap(), text);
        let opts = GenerateOptions { max_tokens: 12, ignore_eos: true, ..Default::default() };
        let resident = floe_tests::load(&packed, 1);
        let (a, _) =
            generate(&resident, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
        let cfg = StreamingConfig {
            cache: CacheMode::Policy(floe_cache::PolicyKind::Moe),
            cache_bytes: 6 * packed.manifest.slab.slab_bytes as u64,
            prefetch: PrefetchMode::Gate,
            io: None,
            queue_depth: 4,
            shrinkable: false,
        };
        let src = Arc::new(StreamingExperts::open(&packed, &cfg).unwrap());
        let dense = DenseWeights::load(&packed).unwrap();
        let streamed =
            Model::new(packed.manifest.config.clone(), dense, Box::new(Arc::clone(&src)), 1)
                .unwrap();
        let (b, _) =
            generate(&streamed, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
        assert_eq!(a, b, "{preset} {dtype}: streaming changed the tokens");
        assert!(src.stats().cache.misses > 0);
        // Written as GGUF in llama.cpp's layout and run in place: the same tokens.
        let file = tmp.path().join(format!("{preset}.gguf"));
        floe::formats::gguf::write::export_gguf(&packed, &file, &mut |_, _| {}).unwrap();
        let m = floe::formats::source::open_model(&file, true, None).unwrap();
        assert_eq!(m.config, packed.manifest.config, "{preset}: config through GGUF");
        let experts = floe::runtime::experts::ResidentExperts::load_file(m.experts).unwrap();
        let in_place = Model::new(m.config, m.dense, Box::new(experts), 1).unwrap();
        let (c, _) =
            generate(&in_place, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
        assert_eq!(a, c, "{preset} {dtype}: the GGUF runs differently");
    }
    let shape = SynthShape::preset("tiny").unwrap();
    // Same seed, same bytes.
    let (first, again) = (tmp.path().join("first"), tmp.path().join("again"));
    synth(&shape, &first, DType::Bf16, 7, &mut |_, _| {}).unwrap();
    synth(&shape, &again, DType::Bf16, 7, &mut |_, _| {}).unwrap();
    let bytes = |d: &std::path::Path| std::fs::read(d.join("experts.bin")).unwrap();
    assert!(bytes(&first) == bytes(&again), "the same seed wrote different experts");
}

/// The real-shape presets describe the models they name (checked without writing them).
#[test]
fn real_shape_presets_have_their_models_sizes() {
    use floe::formats::packed::SlabLayout;
    for (preset, layers, experts, linear, gb) in [
        ("qwen3.5-35b-a3b", 40, 256, 30, 18.1),
        ("qwen3.5-397b-a17b", 60, 512, 45, 217.4),
        ("glm4.5-air", 46, 128, 0, 56.1),
        ("deepseek-v2-lite", 27, 64, 0, 8.1),
        ("deepseek-v3-671b", 61, 256, 0, 367.8),
        ("qwen3-next-80b-a3b", 48, 512, 36, 43.5),
        ("minimax-m2", 62, 256, 0, 126.4),
        ("gemma4-26b-a4b", 30, 128, 0, 12.8),
        ("glm5", 78, 256, 0, 407.7),
    ] {
        let cfg = SynthShape::preset(preset).unwrap().config();
        cfg.validate().unwrap();
        assert_eq!((cfg.layers, cfg.experts), (layers, experts), "{preset}");
        assert_eq!(cfg.linear_layers.iter().filter(|&&x| x).count(), linear, "{preset}");
        let slab = SlabLayout::new(DType::Q4_0, cfg.hidden, cfg.expert_ffn).unwrap();
        let bytes = (cfg.moe_layer_count() * cfg.experts * slab.slab_bytes) as f64 / 1e9;
        assert!((bytes - gb).abs() < 0.1, "{preset}: {bytes:.1} GB of q4_0 experts");
        floe::model::spec::ModelSpec::from_config(&cfg).unwrap();
    }
    for (preset, layers, experts, gb) in
        [("gpt-oss-20b", 24, 32, 10.1), ("gpt-oss-120b", 36, 128, 60.9)]
    {
        let cfg = SynthShape::preset(preset).unwrap().config();
        cfg.validate().unwrap();
        assert_eq!(
            (cfg.layers, cfg.experts, cfg.window_layers.iter().filter(|&&w| w).count()),
            (layers, experts, layers / 2)
        );
        let slab = SlabLayout::new(DType::Mxfp4, cfg.hidden, cfg.expert_ffn).unwrap();
        let bytes = (cfg.moe_layer_count() * cfg.experts * slab.slab_bytes) as f64 / 1e9;
        assert!((bytes - gb).abs() < 0.1, "{preset}: {bytes:.1} GB of mxfp4 experts");
    }
}

/// With room for word pieces (the demo's vocabulary) a synthetic model writes readable text:
/// sampled at temperature 1, every generated token decodes to printable characters (no control
/// bytes, no broken UTF-8), and most of them are word pieces.
#[test]
fn synthetic_text_is_printable_word_pieces() {
    use floe::formats::synth_vocab::word_pieces;
    use floe::runtime::sampling::SamplingParams;
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut shape = SynthShape::preset("tiny").unwrap();
    shape.vocab = 257 + word_pieces(usize::MAX).0.len();
    let out = tmp.path().join("words");
    synth(&shape, &out, DType::Q8_0, 5, &mut |_, _| {}).unwrap();
    let packed = PackedModel::open(&out, true).unwrap();
    let codec = TextCodec::load(&out).unwrap();
    let model = floe_tests::load(&packed, 1);
    let ids = codec.encode("Once upon a time").unwrap();
    assert!(ids.len() < "Once upon a time".len(), "word pieces merge the prompt: {ids:?}");
    let opts = GenerateOptions {
        max_tokens: 64,
        ignore_eos: true,
        sampling: SamplingParams { temperature: 1.0, seed: 3, ..Default::default() },
        ..Default::default()
    };
    let (gen, _) =
        generate(&model, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
    let text = codec.decode(&gen).unwrap();
    assert!(
        text.chars().all(|c| c == '\n' || (' '..='~').contains(&c)),
        "unprintable output: {text:?}"
    );
    let pieces = gen.iter().filter(|&&t| t >= 257).count();
    assert!(pieces * 2 > gen.len(), "{pieces} of {} tokens are word pieces: {text:?}", gen.len());
}
