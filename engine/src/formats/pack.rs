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
use crate::model::config::{ModelConfig, QkNorm};

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

/// The dense tensors of `cfg`, in file order, with their shapes (rows, cols).
pub fn dense_plan(cfg: &ModelConfig) -> Vec<(Dense, usize, usize)> {
    let h = cfg.hidden;
    let mut v = vec![(Dense::Embed, cfg.vocab, h)];
    if !cfg.tie_embeddings {
        v.push((Dense::LmHead, cfg.vocab, h));
    }
    v.push((Dense::FinalNorm, 1, h));
    if let Some(v4) = &cfg.v4 {
        let s = v4.hc_mult;
        v.extend([
            (Dense::HcHeadFn, s, s * h),
            (Dense::HcHeadBase, 1, s),
            (Dense::HcHeadScale, 1, 1),
        ]);
    }
    for l in 0..cfg.layers {
        v.push((Dense::AttnNorm(l), 1, h));
        match cfg.linear.filter(|_| cfg.is_linear(l)) {
            Some(lin) => {
                let (c, vt, nv) = (lin.qkv_dim(), lin.value_total(), lin.value_heads);
                v.extend([(Dense::LinQkv(l), c, h), (Dense::LinGate(l), vt, h)]);
                if lin.grouped {
                    v.push((Dense::LinBetaAlpha(l), 2 * nv, h));
                } else {
                    v.extend([(Dense::LinBeta(l), nv, h), (Dense::LinAlpha(l), nv, h)]);
                }
                v.extend([
                    (Dense::LinConv(l), c, lin.conv_kernel),
                    (Dense::LinA(l), 1, nv),
                    (Dense::LinDtBias(l), 1, nv),
                    (Dense::LinNorm(l), 1, lin.value_dim),
                    (Dense::LinOut(l), h, vt),
                ]);
            }
            None => match (&cfg.v4, cfg.mla) {
                (Some(v4), _) => v4_attention_plan(cfg, v4, l, &mut v),
                (None, Some(m)) => mla_plan(cfg, &m, l, &mut v),
                (None, None) => attention_plan(cfg, l, h, &mut v),
            },
        }
        v.push((Dense::FfnNorm(l), 1, h));
        let ffn = if cfg.moe_layers[l] {
            v.push((Dense::Router(l), cfg.experts, h));
            if cfg.gemma.is_some() {
                v.extend([
                    (Dense::RouterScale(l), 1, h),
                    (Dense::ExpertScale(l), 1, cfg.experts),
                    (Dense::PostFfnNorm1(l), 1, h),
                    (Dense::PreFfnNorm2(l), 1, h),
                    (Dense::PostFfnNorm2(l), 1, h),
                ]);
            }
            match &cfg.v4 {
                Some(v4) if l < v4.hash_layers => {
                    v.push((Dense::HashTable(l), cfg.vocab, cfg.top_k))
                }
                _ if cfg.sigmoid_router.is_some() => v.push((Dense::RouterBias(l), 1, cfg.experts)),
                _ => {}
            }
            if cfg.extras.expert_biases {
                v.extend([
                    (Dense::RouterLogitBias(l), 1, cfg.experts),
                    (Dense::ExpGateBias(l), cfg.experts, cfg.expert_ffn),
                    (Dense::ExpUpBias(l), cfg.experts, cfg.expert_ffn),
                    (Dense::ExpDownBias(l), cfg.experts, h),
                ]);
            }
            // Gemma 4's dense MLP runs beside the experts.
            if cfg.gemma.is_some() {
                cfg.dense_ffn
            } else {
                cfg.shared_ffn
            }
        } else {
            cfg.dense_ffn
        };
        if ffn > 0 {
            v.extend([
                (Dense::SharedGate(l), ffn, h),
                (Dense::SharedUp(l), ffn, h),
                (Dense::SharedDown(l), h, ffn),
            ]);
            if cfg.moe_layers[l] && cfg.arch.gated_shared_expert() {
                v.push((Dense::SharedExpertGate(l), 1, h));
            }
        }
        if let Some(v4) = &cfg.v4 {
            let (n, width) = ((2 + v4.hc_mult) * v4.hc_mult, v4.hc_mult * h);
            v.extend([
                (Dense::HcAttnFn(l), n, width),
                (Dense::HcAttnBase(l), 1, n),
                (Dense::HcAttnScale(l), 1, 3),
                (Dense::HcFfnFn(l), n, width),
                (Dense::HcFfnBase(l), 1, n),
                (Dense::HcFfnScale(l), 1, 3),
            ]);
        }
        if cfg.gemma.is_some() {
            v.extend([
                (Dense::PostAttnNorm(l), 1, h),
                (Dense::PostFfnNorm(l), 1, h),
                (Dense::LayerScalar(l), 1, 1),
            ]);
        }
    }
    v
}

fn mla_plan(
    cfg: &ModelConfig,
    m: &crate::model::config::Mla,
    l: usize,
    v: &mut Vec<(Dense, usize, usize)>,
) {
    let (h, heads) = (cfg.hidden, cfg.heads);
    let q_rows = heads * (m.qk_nope_dim + m.qk_rope_dim);
    if m.q_lora_rank > 0 {
        v.extend([
            (Dense::MlaQA(l), m.q_lora_rank, h),
            (Dense::MlaQANorm(l), 1, m.q_lora_rank),
            (Dense::MlaQB(l), q_rows, m.q_lora_rank),
        ]);
    } else {
        v.push((Dense::Q(l), q_rows, h));
    }
    v.extend([
        (Dense::MlaKVA(l), m.kv_lora_rank + m.qk_rope_dim, h),
        (Dense::MlaKVANorm(l), 1, m.kv_lora_rank),
        (Dense::MlaKB(l), heads * m.kv_lora_rank, m.qk_nope_dim),
        (Dense::MlaVB(l), heads * m.v_head_dim, m.kv_lora_rank),
        (Dense::O(l), h, heads * m.v_head_dim),
    ]);
    if let Some(d) = cfg.dsa.as_ref().filter(|d| d.full_layers.get(l) == Some(&true)) {
        v.extend([
            (Dense::IdxQ(l), d.heads * d.head_dim, m.q_lora_rank),
            (Dense::IdxK(l), d.head_dim, h),
            (Dense::IdxKNorm(l), 1, d.head_dim),
            (Dense::IdxKNormBias(l), 1, d.head_dim),
            (Dense::IdxWeights(l), d.heads, h),
        ]);
    }
}

/// DeepSeek-V4's shared-KV attention layer `l`: the query LoRA, the key/value head, the sinks,
/// the grouped output projection, and the compressor (and indexer) of a compressed layer.
fn v4_attention_plan(
    cfg: &ModelConfig,
    v4: &crate::model::deepseek_v4::V4Layout,
    l: usize,
    v: &mut Vec<(Dense, usize, usize)>,
) {
    let (h, hd, r) = (cfg.hidden, cfg.head_dim, v4.q_lora_rank);
    let (g, rank) = (v4.o_groups, v4.o_lora_rank);
    v.extend([
        (Dense::MlaQA(l), r, h),
        (Dense::MlaQANorm(l), 1, r),
        (Dense::MlaQB(l), cfg.heads * hd, r),
        (Dense::Kv(l), hd, h),
        (Dense::MlaKVANorm(l), 1, hd),
        (Dense::AttnSinks(l), 1, cfg.heads),
        (Dense::OA(l), g * rank, cfg.heads * hd / g.max(1)),
        (Dense::OB(l), h, g * rank),
    ]);
    let ratio = v4.compress_ratios.get(l).copied().unwrap_or(0);
    if ratio == 0 {
        return;
    }
    let indexed = v4.indexed.get(l).copied().unwrap_or(false);
    let width = if indexed { 2 * hd } else { hd };
    v.extend([
        (Dense::CmpKv(l), width, h),
        (Dense::CmpGate(l), width, h),
        (Dense::CmpApe(l), ratio, width),
        (Dense::CmpNorm(l), 1, hd),
    ]);
    if indexed {
        let (ih, id) = (v4.index_heads, v4.index_head_dim);
        v.extend([
            (Dense::IdxQ(l), ih * id, r),
            (Dense::IdxWeights(l), ih, h),
            (Dense::IdxCmpKv(l), 2 * id, h),
            (Dense::IdxCmpGate(l), 2 * id, h),
            (Dense::IdxCmpApe(l), ratio, 2 * id),
            (Dense::IdxCmpNorm(l), 1, id),
        ]);
    }
}

fn attention_plan(cfg: &ModelConfig, l: usize, h: usize, v: &mut Vec<(Dense, usize, usize)>) {
    // Gemma 4's full-attention layers have their own head width and KV heads.
    let hd = cfg.layer_head_dim(l);
    let (q, kv) = (cfg.heads * hd, cfg.layer_kv_heads(l) * hd);
    let q_rows = if cfg.arch.attention_output_gate() { 2 * q } else { q };
    v.extend([(Dense::Q(l), q_rows, h), (Dense::K(l), kv, h)]);
    if !cfg.layer_k_eq_v(l) {
        v.push((Dense::V(l), kv, h));
    }
    v.push((Dense::O(l), h, q));
    if cfg.extras.o_bias {
        v.push((Dense::OBias(l), 1, h));
    }
    if cfg.extras.attn_sinks {
        v.push((Dense::AttnSinks(l), 1, cfg.heads));
    }
    if cfg.qkv_bias {
        v.extend([(Dense::QBias(l), 1, q), (Dense::KBias(l), 1, kv), (Dense::VBias(l), 1, kv)]);
    }
    match cfg.qk_norm {
        QkNorm::PerHead => v.extend([(Dense::QNorm(l), 1, hd), (Dense::KNorm(l), 1, hd)]),
        QkNorm::Full => v.extend([(Dense::QNorm(l), 1, q), (Dense::KNorm(l), 1, kv)]),
        QkNorm::None => {}
    }
}

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
    let plan = dense_plan(cfg);
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
    for (role, rows, cols) in plan {
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
