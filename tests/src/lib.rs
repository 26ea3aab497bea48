//! Shared helpers of floe's integration tests: the golden fixtures in `../shared/golden`.

use std::path::{Path, PathBuf};

use floe::formats::dense::DenseWeights;
use floe::formats::pack::{pack, PackOptions};
use floe::formats::packed::PackedModel;
use floe::runtime::experts::ResidentExperts;
use floe::runtime::Model;
use floe_kernels::DType;

/// `../shared/golden/<name>`; a missing fixture fails the test unless `FLOE_SKIP_GOLDEN=1`
/// (then it prints SKIPPING and the test returns).
pub fn golden_dir(name: &str) -> Option<PathBuf> {
    floe_cache::fixtures::shared_fixture(&format!("golden/{name}"))
}

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
