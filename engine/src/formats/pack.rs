//! `floe pack`: a Hugging Face checkpoint directory to floe's packed format.
//!
//! Streams tensor by tensor (memory stays at a few tensors, or one expert's slice of a fused
//! tensor), writes into a temporary directory beside the output and renames it into place only
//! after re-reading and checking every checksum, so an interrupted pack never leaves a
//! directory that looks complete.

use std::path::Path;

use floe_kernels::DType;

use crate::error::{Error, Result};
use crate::formats::encode::encode;
use crate::formats::packed::{
    write_dir_atomically, DenseEntry, DenseWriter, Manifest, PackedModel, SlabLayout, SlabWriter,
};
use crate::formats::safetensors_dir::CheckpointDir;
use crate::model::arch::{self, Dense, ExpertPart, ExpertTensor};
use crate::model::config::ModelConfig;
use crate::model::tensors::TensorSpec;

/// What to pack into.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Format of the routed experts.
    pub dtype: DType,
    /// Format of the dense matrices (embeddings, attention, shared experts); `None`: as the
    /// checkpoint stores them (f32 or bf16/f16). Norms, biases and routers always stay f32.
    pub dense_dtype: Option<DType>,
    /// Replace an existing output directory.
    pub force: bool,
}

/// Files copied next to the weights when present.
const SIDE_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
    "config.json",
];

/// Packs `from` into `out`, calling `progress(done, total)` as tensors are written.
pub fn pack(
    from: &Path,
    out: &Path,
    opts: &PackOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest> {
    let cfg_path = from.join("config.json");
    let cfg_text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", cfg_path.display())))?;
    let cfg = ModelConfig::from_hf_json(&cfg_text)?;
    let int4 = crate::formats::int4_checkpoint::PackQuantized::from_config(&cfg_text)?;
    let ckpt = CheckpointDir::open(from)?;
    // An existing model stays until the new one is complete (write_dir_atomically).
    if out.exists() && !opts.force {
        return Err(Error::Invalid(format!(
            "{} exists (use --force to replace it)",
            out.display()
        )));
    }
    let src = Checkpoint { ckpt: &ckpt, dir: from, int4 };
    write_dir_atomically(out, |tmp| write_all(&cfg, &src, tmp, opts, progress))
}

fn write_err(path: &Path, source: std::io::Error) -> Error {
    Error::Write { path: path.to_path_buf(), source }
}

fn find_dense<'a>(ckpt: &CheckpointDir, candidates: &'a [String]) -> Result<&'a String> {
    if let Some(n) = candidates.iter().find(|n| ckpt.has(&format!("{n}_packed"))) {
        return Err(Error::Unsupported(format!(
            "{n} is INT4 pack-quantized: floe reads that form only for routed experts"
        )));
    }
    candidates
        .iter()
        .find(|n| ckpt.has(n))
        .ok_or_else(|| Error::MissingTensor(candidates.join(" or ")))
}

fn check_shape(name: &str, got: &[usize], rows: usize, cols: usize) -> Result<()> {
    // A depthwise conv1d weight is [channels, 1, kernel]: the same values as [channels, kernel].
    let squeezed: Vec<usize>;
    let got = match got {
        [c, 1, k] => {
            squeezed = vec![*c, *k];
            &squeezed[..]
        }
        other => other,
    };
    let ok = match got {
        [n] => rows == 1 && *n == cols,
        [r, c] => *r == rows && *c == cols,
        _ => false,
    };
    if !ok {
        let want = if rows == 1 { format!("[{cols}]") } else { format!("[{rows}, {cols}]") };
        return Err(Error::Invalid(format!("tensor {name} has shape {got:?}, expected {want}")));
    }
    Ok(())
}

/// A checkpoint being packed: its tensors, its directory, how its INT4 weights are stored.
struct Checkpoint<'a> {
    ckpt: &'a CheckpointDir,
    dir: &'a Path,
    int4: Option<crate::formats::int4_checkpoint::PackQuantized>,
}

fn write_all(
    cfg: &ModelConfig,
    src: &Checkpoint<'_>,
    dir: &Path,
    opts: &PackOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest> {
    let (ckpt, from) = (src.ckpt, src.dir);
    let names = arch::names(cfg.arch);
    let plan = crate::model::spec::ModelSpec::from_config(cfg)?.tensors();
    let moe_layers: Vec<usize> = (0..cfg.layers).filter(|&l| cfg.moe_layers[l]).collect();
    let total = (plan.len() + moe_layers.len() * cfg.experts) as u64;
    let mut done = 0u64;

    // Dense tensors.
    let embed_candidates = names.dense(Dense::Embed);
    let embed_name = find_dense(ckpt, &embed_candidates)?;
    let source_dtype = match ckpt.dtype_name(embed_name).as_deref() {
        Some("BF16") => DType::Bf16,
        Some("F16") => DType::F16,
        _ => DType::F32,
    };
    let dense_dtype = opts.dense_dtype.unwrap_or(source_dtype);
    let mut dense_out = DenseWriter::create(dir)?;
    for TensorSpec { role, rows, cols } in plan {
        let candidates = names.dense(role);
        let name = find_dense(ckpt, &candidates)?;
        let (src_rows, src_cols) =
            crate::formats::convert::hf_shape(cfg, role).unwrap_or((rows, cols));
        check_shape(name, ckpt.shape(name).unwrap_or(&[]), src_rows, src_cols)?;
        let mut values = ckpt.read_f32(name)?;
        crate::formats::convert::hf_to_stored(cfg, role, &mut values, src_cols);
        let dtype = if role.keep_f32() { DType::F32 } else { dense_dtype };
        let bytes = encode(dtype, &values, cols, name)?;
        dense_out.push(role.key(), dtype, rows, cols, &bytes)?;
        done += 1;
        progress(done, total);
    }
    let dense = dense_out.finish()?;
    let mtp = write_mtp(ckpt, dir, dense_dtype)?;

    // Expert slabs.
    let slab = SlabLayout::new(opts.dtype, cfg.hidden, cfg.expert_ffn)?;
    let mut experts_out = SlabWriter::create(dir)?;
    let mut buf = vec![0u8; slab.slab_bytes];
    for &l in &moe_layers {
        experts_out.begin_layer(l);
        for e in 0..cfg.experts {
            buf.fill(0);
            for (part, place) in [
                (ExpertPart::Gate, &slab.gate),
                (ExpertPart::Up, &slab.up),
                (ExpertPart::Down, &slab.down),
            ] {
                let what = format!("layer {l} expert {e} {part:?}");
                let candidates = names.expert(l, e, part, cfg.expert_ffn);
                let bytes = match block_source(src, &candidates, place.rows, place.cols)? {
                    // Blocks of the packed type kept as they are; to another format through
                    // their exact values.
                    Some((dtype, raw)) if opts.dtype == dtype => raw,
                    Some((dtype, raw)) => {
                        let mut values = vec![0.0; place.rows * place.cols];
                        dtype
                            .dequantize(&raw, &mut values)
                            .map_err(|err| Error::Invalid(format!("{what}: {err}")))?;
                        encode(opts.dtype, &values, place.cols, &what)?
                    }
                    None => {
                        let values = read_expert(src, &candidates, place.rows, place.cols)?;
                        encode(opts.dtype, &values, place.cols, &what)?
                    }
                };
                buf[place.offset..place.offset + bytes.len()].copy_from_slice(&bytes);
            }
            experts_out.push(&buf)?;
            done += 1;
            progress(done, total);
        }
    }
    let layers = experts_out.finish()?;

    let mut has_tokenizer = false;
    for f in SIDE_FILES {
        let src = from.join(f);
        if src.exists() {
            std::fs::copy(&src, dir.join(f)).map_err(|e| write_err(&dir.join(f), e))?;
            has_tokenizer |= *f == "tokenizer.json";
        }
    }
    if !has_tokenizer && from.join("tiktoken.model").exists() {
        write_tiktoken_tokenizer(from, dir)?;
        has_tokenizer = true;
    }
    if !has_tokenizer {
        tracing::warn!(
            "{} has no tokenizer.json: the packed model takes and gives token ids only",
            from.display()
        );
    }
    let mut manifest =
        Manifest::new(cfg.clone(), dense, slab, layers, from.display().to_string(), has_tokenizer);
    manifest.mtp = mtp;
    manifest.write(dir)?;
    PackedModel::open(dir, true)?;
    Ok(manifest)
}

/// Kimi-K2/K2.5 ship `tiktoken.model` instead of a tokenizer.json: converted as transformers
/// converts it, with Kimi's split regex (the only MoE family floe runs that ships one).
fn write_tiktoken_tokenizer(from: &Path, dir: &Path) -> Result<()> {
    use crate::model::tiktoken;
    let read = |f: &str| {
        std::fs::read_to_string(from.join(f))
            .map_err(|e| Error::Invalid(format!("{}: {e}", from.join(f).display())))
    };
    let ranks = tiktoken::read_ranks(&read("tiktoken.model")?)?;
    let config: serde_json::Value = match read("tokenizer_config.json") {
        Ok(t) => serde_json::from_str(&t)
            .map_err(|e| Error::Invalid(format!("tokenizer_config.json: {e}")))?,
        Err(_) => serde_json::Value::Null,
    };
    let json = tiktoken::tokenizer_json(&ranks, tiktoken::KIMI_PATTERN, &config)?;
    let out = dir.join("tokenizer.json");
    std::fs::write(&out, json).map_err(|e| write_err(&out, e))
}

/// The multi-token-prediction tensors (`mtp.*`), kept in `mtp.bin` for a later speculative
/// decoder: in the dense dtype where their rows allow it, else f32.
fn write_mtp(ckpt: &CheckpointDir, dir: &Path, dense_dtype: DType) -> Result<Vec<DenseEntry>> {
    let names = ckpt.names_with_prefix("mtp.");
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = DenseWriter::create_file(dir.join("mtp.bin"))?;
    for name in names {
        let shape = ckpt.shape(&name).unwrap_or(&[]).to_vec();
        let cols = shape.last().copied().unwrap_or(1).max(1);
        let rows = shape.iter().rev().skip(1).product::<usize>().max(1);
        let values = ckpt.read_f32(&name)?;
        let dtype =
            if rows > 1 && dense_dtype.row_bytes(cols).is_ok() { dense_dtype } else { DType::F32 };
        let bytes = encode(dtype, &values, cols, &name)?;
        out.push(name, dtype, rows, cols, &bytes)?;
    }
    out.finish()
}

/// The expert matrix as ggml blocks, if the checkpoint stores it in a block format floe keeps
/// as it is: gpt-oss's MXFP4, or compressed-tensors INT4 groups of 32 (Q4_0).
fn block_source(
    src: &Checkpoint<'_>,
    candidates: &[ExpertTensor],
    rows: usize,
    cols: usize,
) -> Result<Option<(DType, Vec<u8>)>> {
    use crate::formats::int4_checkpoint::{int4_rows, Int4Rows};
    for c in candidates {
        match c {
            ExpertTensor::Mxfp4 { blocks, scales, expert, first, step } if src.ckpt.has(blocks) => {
                return crate::formats::mxfp4_checkpoint::mxfp4_rows(
                    src.ckpt, blocks, scales, *expert, *first, *step, rows, cols,
                )
                .map(|raw| Some((DType::Mxfp4, raw)));
            }
            ExpertTensor::Single(name) => {
                if let Some(pq) = src.int4 {
                    if let Some(Int4Rows::Q4_0(raw)) = int4_rows(src.ckpt, name, rows, cols, pq)? {
                        return Ok(Some((DType::Q4_0, raw)));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

fn read_expert(
    src: &Checkpoint<'_>,
    candidates: &[ExpertTensor],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>> {
    let ckpt = src.ckpt;
    for c in candidates {
        if let (ExpertTensor::Single(name), Some(pq)) = (c, src.int4) {
            use crate::formats::int4_checkpoint::{int4_rows, Int4Rows};
            if let Some(Int4Rows::Values(v)) = int4_rows(ckpt, name, rows, cols, pq)? {
                return Ok(v);
            }
        }
        match c {
            ExpertTensor::Single(name) if ckpt.has(name) => {
                check_shape(name, ckpt.shape(name).unwrap_or(&[]), rows, cols)?;
                return ckpt.read_f32(name);
            }
            ExpertTensor::Transposed { name, expert, first, step } if ckpt.has(name) => {
                let (v, r, c) = ckpt.read_slice_rows(name, *expert, 0, usize::MAX)?;
                if r != cols || first + step * (rows.max(1) - 1) >= c {
                    return Err(Error::Invalid(format!(
                        "tensor {name}: expert slice is {r}x{c}, cannot hold a transposed \
                         {rows}x{cols} matrix"
                    )));
                }
                let mut out = Vec::with_capacity(rows * cols);
                for i in 0..rows {
                    out.extend((0..cols).map(|j| v[j * c + first + step * i]));
                }
                return Ok(out);
            }
            ExpertTensor::Fused { name, expert, rows: (first, n) } if ckpt.has(name) => {
                let (v, r, c) = ckpt.read_slice_rows(name, *expert, *first, *n)?;
                if r != rows || c != cols {
                    return Err(Error::Invalid(format!(
                        "fused tensor {name}: expert slice is {r}x{c}, expected {rows}x{cols}"
                    )));
                }
                return Ok(v);
            }
            _ => {}
        }
    }
    let names: Vec<String> = candidates
        .iter()
        .map(|c| match c {
            ExpertTensor::Single(n)
            | ExpertTensor::Fused { name: n, .. }
            | ExpertTensor::Transposed { name: n, .. }
            | ExpertTensor::Mxfp4 { blocks: n, .. } => n.clone(),
        })
        .collect();
    Err(Error::MissingTensor(names.join(" or ")))
}
