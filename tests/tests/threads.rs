//! Results do not depend on the thread count: the same logits bit for bit and the same tokens
//! with 1, 2 and 3 kernel threads (the pool hands out row chunks; each row is computed the same
//! way whichever thread takes it), for f32 and quantised models, prefill and decode.

use floe::formats::dense::DenseWeights;
use floe::formats::packed::PackedModel;
use floe::runtime::experts::ResidentExperts;
use floe::runtime::generate::GenerateOptions;
use floe::runtime::{Model, Session};
use floe_kernels::DType;
use floe_tests::generate;

fn run(packed: &PackedModel, threads: usize, prompt: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let model = Model::new(
        packed.manifest.config.clone(),
        DenseWeights::load(packed).unwrap(),
        Box::new(ResidentExperts::load(packed).unwrap()),
        threads,
    )
    .unwrap();
    let logits = model.forward(&mut Session::default(), prompt, true).unwrap();
    let opts = GenerateOptions { max_tokens: 12, ignore_eos: true, ..Default::default() };
    let (tokens, _) =
        generate(&model, &mut Session::default(), prompt, &opts, &mut |_| Ok(true)).unwrap();
    (logits, tokens)
}

#[test]
fn one_two_and_three_threads_give_the_same_bits() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    // Wide enough that every product has many row chunks to share out.
    (shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.expert_ffn) =
        (256, 4, 2, 64, 192);
    let prompt: Vec<u32> = (30..47).collect();
    for dtype in [DType::Q4_0, DType::Q8_0, DType::Bf16] {
        let path = dir.path().join(dtype.name());
        floe::formats::synth::synth(&shape, &path, dtype, 6, &mut |_, _| {}).unwrap();
        let packed = PackedModel::open(&path, false).unwrap();
        let (l1, t1) = run(&packed, 1, &prompt);
        for threads in [2, 3] {
            let (l, t) = run(&packed, threads, &prompt);
            assert!(
                l.iter().zip(&l1).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dtype} x{threads}: logits"
            );
            assert_eq!(t, t1, "{dtype} x{threads}: tokens");
        }
    }
}
