//! Bad input is a clear error naming what is wrong, never a panic or a half-written model.

use std::collections::HashMap;
use std::path::Path;

use floe::formats::pack::{pack, PackOptions};
use floe::formats::packed::PackedModel;
use floe_kernels::DType;
use floe_tests::golden_dir;
use safetensors::tensor::TensorView;

fn opts() -> PackOptions {
    PackOptions { dtype: DType::F32, dense_dtype: None, force: false }
}

/// A copy of a golden checkpoint with `edit` applied to its tensors (name -> (shape, f32 data)).
fn edited_checkpoint(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>),
) {
    std::fs::create_dir_all(dst).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: HashMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (shape, data))| {
            (n.clone(), TensorView::new(safetensors::Dtype::F32, shape.clone(), data).unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &dst.join("model.safetensors")).unwrap();
}

fn pack_err(from: &Path, out: &Path) -> String {
    let err = pack(from, out, &opts(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(!out.exists(), "a failed pack left {}", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary pack directories left behind");
    err
}

#[test]
fn missing_tensor_is_named() {
    let Some(src) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ckpt");
    edited_checkpoint(&src, &ck, |t| {
        t.remove("model.layers.1.self_attn.k_proj.weight");
    });
    let err = pack_err(&ck, &tmp.path().join("out"));
    assert!(
        err.contains("missing tensor") && err.contains("model.layers.1.self_attn.k_proj.weight"),
        "{err}"
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let Some(src) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ckpt");
    edited_checkpoint(&src, &ck, |t| {
        let (shape, data) = t.get_mut("model.layers.0.mlp.gate.weight").unwrap();
        *shape = vec![15, 64];
        data.truncate(15 * 64 * 4);
    });
    let err = pack_err(&ck, &tmp.path().join("out"));
    assert!(
        err.contains("model.layers.0.mlp.gate.weight")
            && err.contains("[15, 64]")
            && err.contains("[16, 64]"),
        "{err}"
    );
}

#[test]
fn unknown_architecture_is_named() {
    let Some(src) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ckpt");
    edited_checkpoint(&src, &ck, |_| {});
    let cfg = std::fs::read_to_string(ck.join("config.json"))
        .unwrap()
        .replace("\"qwen3_moe\"", "\"llama4_text\"");
    std::fs::write(ck.join("config.json"), cfg).unwrap();
    let err = pack_err(&ck, &tmp.path().join("out"));
    assert!(err.contains("llama4_text") && err.contains("unsupported"), "{err}");
}

#[test]
fn truncated_experts_file_is_refused_at_open() {
    let Some(src) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("packed");
    pack(&src, &out, &opts(), &mut |_, _| {}).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(out.join("experts.bin")).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 4096).unwrap();
    let err = PackedModel::open(&out, false).unwrap_err().to_string();
    assert!(
        err.contains("experts.bin") && err.contains("truncated") && err.contains(&len.to_string()),
        "{err}"
    );
}

#[test]
fn flipped_byte_in_a_slab_is_caught_by_verify() {
    let Some(src) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("packed");
    let m = pack(&src, &out, &opts(), &mut |_, _| {}).unwrap();
    // Flip one byte inside layer 1, expert 5's slab.
    let off = m.slab_offset(1, 5).unwrap() as usize + 100;
    let mut bytes = std::fs::read(out.join("experts.bin")).unwrap();
    bytes[off] ^= 0x40;
    std::fs::write(out.join("experts.bin"), &bytes).unwrap();
    assert!(PackedModel::open(&out, false).is_ok(), "sizes still fine without --verify");
    let err = PackedModel::open(&out, true).unwrap_err().to_string();
    assert!(
        err.contains("experts.bin") && err.contains("layer 1 expert 5") && err.contains("expected"),
        "{err}"
    );
}

#[test]
fn existing_output_needs_force() {
    let Some(src) = golden_dir("olmoe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("packed");
    std::fs::create_dir(&out).unwrap();
    let err = pack(&src, &out, &opts(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("--force"), "{err}");
    pack(&src, &out, &PackOptions { force: true, ..opts() }, &mut |_, _| {}).unwrap();
    assert!(PackedModel::open(&out, true).is_ok());
}

/// `max_positions` is enforced: a prompt or a generation past it is a clear error.
#[test]
fn running_past_max_positions_is_an_error() {
    use floe::formats::dense::DenseWeights;
    use floe::runtime::experts::ResidentExperts;
    use floe::runtime::{Model, Session};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q8_0, 1, &mut |_, _| {}).unwrap();
    let packed = PackedModel::open(&path, false).unwrap();
    let mut cfg = packed.manifest.config.clone();
    cfg.max_positions = 8;
    let experts = Box::new(ResidentExperts::load(&packed).unwrap());
    let model = Model::new(cfg, DenseWeights::load(&packed).unwrap(), experts, 1).unwrap();
    let mut s = Session::default();
    let e = model.forward(&mut s, &[1; 9], false).unwrap_err().to_string();
    assert!(e.contains("context full") && e.contains('8'), "{e}");
    model.forward(&mut s, &[1; 8], false).unwrap();
    let e = model.forward(&mut s, &[1], false).unwrap_err().to_string();
    assert!(e.contains("position 8"), "{e}");
}

/// `pack --force` over an existing model that then fails keeps the old model whole; replacing
/// moves the old directory aside first and removes it only once the new one is in place.
#[test]
fn a_failed_forced_repack_keeps_the_old_model() {
    let Some(src) = golden_dir("qwen3_moe") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("packed");
    pack(&src, &out, &opts(), &mut |_, _| {}).unwrap();
    let before = std::fs::read(out.join("floe.json")).unwrap();
    let ck = tmp.path().join("ckpt");
    edited_checkpoint(&src, &ck, |t| {
        t.remove("model.layers.0.mlp.gate.weight");
    });
    let err = pack(&ck, &out, &PackOptions { force: true, ..opts() }, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing tensor"), "{err}");
    assert_eq!(std::fs::read(out.join("floe.json")).unwrap(), before, "the old model is gone");
    PackedModel::open(&out, true).unwrap();
    // A successful replace leaves neither the temporary nor the aside directory.
    pack(&src, &out, &PackOptions { force: true, ..opts() }, &mut |_, _| {}).unwrap();
    PackedModel::open(&out, true).unwrap();
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "left behind: {names:?}");
}

/// The directory writer itself: the old directory is renamed aside while the new one moves
/// in, so at every moment one of them holds a whole model; a failing writer changes nothing.
#[test]
fn the_directory_writer_never_leaves_no_model() {
    use floe::formats::packed::{aside_dir_for, write_dir_atomically};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("floe.json"), "old").unwrap();
    let r: floe::Result<()> = write_dir_atomically(&out, |t| {
        std::fs::write(t.join("floe.json"), "half").unwrap();
        Err(floe::Error::Invalid("writer failed".into()))
    });
    assert!(r.is_err());
    assert_eq!(std::fs::read_to_string(out.join("floe.json")).unwrap(), "old");
    write_dir_atomically(&out, |t| {
        // While the new model is being written, the old one is still in place.
        assert_eq!(std::fs::read_to_string(out.join("floe.json")).unwrap(), "old");
        std::fs::write(t.join("floe.json"), "new").map_err(|e| floe::Error::Invalid(e.to_string()))
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(out.join("floe.json")).unwrap(), "new");
    assert!(!aside_dir_for(&out).exists());
}

/// A dense tensor whose shape does not fit the config (found by the floe_json fuzz target: a
/// 64x64 matrix under a norm's name reached `rms_norm` and panicked) is an error at load.
#[test]
fn a_dense_tensor_of_the_wrong_shape_is_refused_at_load() {
    use floe::formats::dense::DenseWeights;
    use floe::runtime::experts::ResidentExperts;
    use floe::runtime::Model;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q8_0, 1, &mut |_, _| {}).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path.join("floe.json")).unwrap()).unwrap();
    for d in m["dense"].as_array_mut().unwrap() {
        match d["name"].as_str().unwrap() {
            "1.attn_norm" => d["name"] = "1.unused".into(),
            "1.o" => d["name"] = "1.attn_norm".into(),
            _ => {}
        }
    }
    std::fs::write(path.join("floe.json"), m.to_string()).unwrap();
    let packed = PackedModel::open(&path, false).unwrap();
    let experts = Box::new(ResidentExperts::load(&packed).unwrap());
    let dense = DenseWeights::load(&packed).unwrap();
    let e = Model::new(packed.manifest.config.clone(), dense, experts, 1).unwrap_err().to_string();
    assert!(e.contains("1.attn_norm") && e.contains("64x64") && e.contains("1x64"), "{e}");
}

/// GGUF metadata goes through the same validation: a golden file with one metadata value
/// patched to an impossible one is refused with the field, the value and the limit.
#[test]
fn impossible_gguf_metadata_values_are_named() {
    let Some(dir) = golden_dir("qwen3_moe") else { return };
    let bytes = std::fs::read(dir.join("model-Q8_0.gguf")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (key, value, field) in [
        ("qwen3moe.attention.key_length", 0u32, "head_dim"),
        ("qwen3moe.expert_count", 70_000, "experts"),
        ("qwen3moe.context_length", 0, "max_positions"),
        // Found by fuzzing: refused at once, not after a per-layer scan of 134M layers.
        ("qwen3moe.block_count", 134_217_730, "layers"),
    ] {
        // A metadata pair is the key's bytes, a u32 type tag (4 = u32), then the value.
        let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap() + key.len();
        assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()), 4, "{key} is a u32");
        let mut patched = bytes.clone();
        patched[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
        let path = tmp.path().join("m.gguf");
        std::fs::write(&path, &patched).unwrap();
        let e = floe::formats::source::open_model(&path, false, None).unwrap_err();
        match &e {
            floe::Error::Field { origin, error } => {
                assert!(origin.contains("GGUF"), "{e}");
                assert_eq!(error.field, field, "{e}");
                assert_eq!(error.value, value.to_string(), "{e}");
            }
            other => panic!("{key}: {other}"),
        }
    }
}
