//! `floe synth` writes a valid packed model: checksums verify, the byte-level tokenizer round
//! trips any text, and streaming gives the same tokens as resident experts.

use std::sync::Arc;

use floe::formats::dense::DenseWeights;
use floe::formats::packed::PackedModel;
use floe::formats::synth::{synth, SynthShape};
use floe::model::tokenizer::TextCodec;
use floe::pipeline::{CacheMode, PrefetchMode, StreamingConfig, StreamingExperts};
use floe::runtime::generate::{generate, GenerateOptions};
use floe::runtime::{Model, Session};
use floe_kernels::DType;

#[test]
fn tiny_synth_model_runs_resident_and_streamed_alike() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = tmp.path().join("tiny");
    let shape = SynthShape::preset("tiny").unwrap();
    for dtype in [DType::Q4_0, DType::Q8_0, DType::Bf16] {
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
        };
        let src = Arc::new(StreamingExperts::open(&packed, &cfg).unwrap());
        let dense = DenseWeights::load(&packed).unwrap();
        let streamed =
            Model::new(packed.manifest.config.clone(), dense, Box::new(Arc::clone(&src)), 1)
                .unwrap();
        let (b, _) =
            generate(&streamed, &mut Session::default(), &ids, &opts, &mut |_| Ok(true)).unwrap();
        assert_eq!(a, b, "{dtype}: streaming changed the tokens");
        assert!(src.stats().cache.misses > 0);
    }
    // Same seed, same bytes.
    let again = tmp.path().join("again");
    synth(&shape, &again, DType::Bf16, 7, &mut |_, _| {}).unwrap();
    assert_eq!(
        std::fs::read(out.join("experts.bin")).unwrap(),
        std::fs::read(again.join("experts.bin")).unwrap()
    );
}
