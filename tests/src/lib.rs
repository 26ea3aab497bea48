//! Shared helpers of floe's integration tests: the golden fixtures in `../shared/golden`.

use std::path::{Path, PathBuf};

use floe::formats::dense::DenseWeights;
use floe::formats::pack::{pack, PackOptions};
use floe::formats::packed::PackedModel;
use floe::runtime::experts::ResidentExperts;
use std::time::Instant;

use floe::runtime::generate::{GenStats, GenerateOptions};
use floe::runtime::sampling::Sampler;
use floe::runtime::{Model, Session};
use floe_kernels::DType;

/// `../shared/golden/<name>`; a missing fixture fails the test unless `FLOE_SKIP_GOLDEN=1`
/// (then it prints SKIPPING and the test returns).
pub fn golden_dir(name: &str) -> Option<PathBuf> {
    floe_cache::fixtures::shared_fixture(&format!("golden/{name}"))
}

/// Qwen3-Next's logits tolerance against transformers (see `golden.rs`: an ill-conditioned
/// checkpoint, where transformers' float32 logits are themselves 3.4e-4 from the exact model).
pub const QWEN3_NEXT_TOL: f32 = 6e-4;

/// Gemma 4's (see `golden.rs`: 3.3e-5 with the AVX-512 kernels, 1.2e-4 with the AVX2 ones).
pub const GEMMA4_TOL: f32 = 1.5e-4;

/// The tensors of a golden.safetensors.
#[derive(Debug)]
pub struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    /// Reads `dir/file`.
    pub fn load(dir: &Path, file: &str) -> Self {
        Self { bytes: std::fs::read(dir.join(file)).expect("golden file") }
    }

    fn view(&self, name: &str) -> safetensors::tensor::TensorView<'_> {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("safetensors");
        st.tensor(name).unwrap_or_else(|_| panic!("golden tensor {name}"))
    }

    /// Whether `name` is present.
    pub fn has(&self, name: &str) -> bool {
        safetensors::SafeTensors::deserialize(&self.bytes).unwrap().tensor(name).is_ok()
    }

    /// An f32 tensor and its shape.
    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let v = self.view(name);
        assert_eq!(v.dtype(), safetensors::Dtype::F32, "{name}");
        let data = v
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (data, v.shape().to_vec())
    }

    /// An i64 tensor as i64 values and its shape.
    pub fn i64(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let v = self.view(name);
        assert_eq!(v.dtype(), safetensors::Dtype::I64, "{name}");
        let data =
            v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
        (data, v.shape().to_vec())
    }
}

/// Packs `from` into a fresh directory under `scratch` and opens it with resident experts.
pub fn pack_and_load(
    from: &Path,
    scratch: &Path,
    dtype: DType,
    dense: Option<DType>,
) -> (PackedModel, Model) {
    let out = scratch.join("packed");
    pack(from, &out, &PackOptions { dtype, dense_dtype: dense, force: true }, &mut |_, _| {})
        .expect("pack");
    let packed = PackedModel::open(&out, true).expect("open packed");
    let model = load(&packed, 1);
    (packed, model)
}

/// A model over `packed` with every expert resident.
pub fn load(packed: &PackedModel, threads: usize) -> Model {
    let dense = DenseWeights::load(packed).expect("dense");
    let experts = ResidentExperts::load(packed).expect("experts");
    Model::new(packed.manifest.config.clone(), dense, Box::new(experts), threads).expect("model")
}

/// A small synthetic model (tiny's layers, hidden 128, 4 heads of 32, experts 96 wide) of
/// `dtype` experts, written under `dir` and opened.
pub fn synth_small(dir: &Path, dtype: DType) -> PackedModel {
    let mut shape = floe::formats::synth::SynthShape::preset("tiny").expect("preset");
    (shape.hidden, shape.heads, shape.kv_heads, shape.head_dim, shape.expert_ffn) =
        (128, 4, 2, 32, 96);
    let path = dir.join(dtype.name());
    floe::formats::synth::synth(&shape, &path, dtype, 3, &mut |_, _| {}).expect("synth");
    PackedModel::open(&path, false).expect("open")
}

/// A synthetic model of a named preset (`tiny-qwen3.5`, ...) in `dir/<preset>-<dtype>`.
pub fn synth_preset(dir: &Path, preset: &str, dtype: DType) -> PackedModel {
    let shape = floe::formats::synth::SynthShape::preset(preset).expect("preset");
    let path = dir.join(format!("{preset}-{}", dtype.name()));
    floe::formats::synth::synth(&shape, &path, dtype, 3, &mut |_, _| {}).expect("synth");
    PackedModel::open(&path, false).expect("open")
}

/// The index of the largest value.
pub fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap_or(0)
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A plain greedy-or-sampled loop over one [`Model`] and [`Session`] (no engine, no
/// scheduler): prefill in chunks, then decode token by token. The reference the tests hold the
/// engine and the streamed pipelines to.
pub fn generate(
    model: &Model,
    session: &mut Session,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> floe::Result<bool>,
) -> floe::Result<(Vec<u32>, GenStats)> {
    if prompt.is_empty() {
        return Err(floe::RequestError::EmptyPrompt.into());
    }
    let start = Instant::now();
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut logits = Vec::new();
    for chunk in prompt.chunks(opts.prefill_chunk.max(1)) {
        logits = model.forward(session, chunk, false)?;
    }
    let prefill_s = start.elapsed().as_secs_f64();
    let mut history = prompt.to_vec();
    let mut out = Vec::new();
    let mut ttft_s = 0.0;
    let decode_start = Instant::now();
    while out.len() < opts.max_tokens {
        let tok = sampler.sample(&mut logits, &history);
        if out.is_empty() {
            ttft_s = start.elapsed().as_secs_f64();
        }
        out.push(tok);
        history.push(tok);
        let stop = !opts.ignore_eos && model.cfg.eos_token_ids.contains(&tok);
        if !on_token(tok)? || stop || out.len() == opts.max_tokens {
            break;
        }
        logits = model.forward(session, &[tok], false)?;
    }
    let decode_s = decode_start.elapsed().as_secs_f64();
    let stats = GenStats {
        prompt_tokens: prompt.len(),
        generated_tokens: out.len(),
        ttft_s,
        prefill_tok_s: prompt.len() as f64 / prefill_s.max(1e-9),
        decode_tok_s: out.len().saturating_sub(1) as f64 / decode_s.max(1e-9),
        prefill_s,
        decode_s,
        reused_tokens: 0,
        kv_bytes: session.kv_bytes(),
    };
    Ok((out, stats))
}

/// Each `(from, to, says)`: the golden `dir`'s config.json (compact JSON) with `from` replaced
/// by `to` is refused, the error containing `says`; the config as it is parses.
pub fn assert_config_refusals(dir: &Path, cases: &[(&str, &str, &str)]) {
    use floe::model::config::ModelConfig;
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let text = serde_json::to_string(&v).unwrap();
    ModelConfig::from_hf_json(&text).unwrap();
    for (from, to, says) in cases {
        assert!(text.contains(from), "{from}");
        let e = ModelConfig::from_hf_json(&text.replace(from, to)).unwrap_err().to_string();
        assert!(e.contains(says), "{to}: {e}");
    }
}
