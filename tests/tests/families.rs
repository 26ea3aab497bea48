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
