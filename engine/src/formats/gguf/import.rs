//! GGUF to floe's packed format without requantising: floe's block formats (every type of the
//! kernels' type table) are GGUF's, so tensors are copied byte for byte (each expert sliced out of the
//! stacked `*_exps` tensors). A layer whose expert matrices have different types (Q4_K_M's
//! Q4_K gate/up with Q6_K down) gets a mixed slab layout of its own. Unknown architectures and
//! types are errors that name them.

use std::path::Path;

use floe_kernels::DType;

use crate::error::{Error, Result};
use crate::formats::gguf::arch::{config_of, gguf_name, permuted_heads, unpermute_rows};
use crate::formats::gguf::{GgufFile, GgufTensor};
use crate::formats::packed::{
    write_dir_atomically, DenseWriter, Manifest, PackedModel, SlabLayout, SlabWriter,
};
use crate::model::arch::Dense;
use crate::model::config::ModelConfig;
use crate::model::spec::ModelSpec;
use crate::model::tensors::TensorSpec;

/// floe's type for a GGUF tensor's, or an error naming the tensor and its type.
pub fn dtype_of(t: &GgufTensor) -> Result<DType> {
    DType::from_ggml_id(t.ggml_type.id()).ok_or_else(|| {
        let known: Vec<&str> = DType::ALL.iter().map(|d| d.ggml_name()).collect();
        Error::Unsupported(format!(
            "tensor {} is {} (floe runs GGUF tensors of type {})",
            t.name,
            t.ggml_type.name(),
            known.join(", ")
        ))
    })
}

/// A tensor's rows must hold whole blocks of its type, and its blocks finite scales: errors
/// naming the tensor (and the block) otherwise.
pub fn check_blocks(name: &str, dtype: DType, cols: usize, data: &[u8]) -> Result<()> {
    if !cols.is_multiple_of(dtype.block_values()) {
        return Err(Error::Invalid(format!(
            "GGUF tensor {name}: rows of {cols} values are not whole {dtype} blocks of {}",
            dtype.block_values()
        )));
    }
    if let Some(b) = dtype.first_nonfinite_scale(data) {
        return Err(Error::Invalid(format!(
            "GGUF tensor {name}: block {b} has a NaN or infinite scale"
        )));
    }
    Ok(())
}

/// A dense tensor of a GGUF file under floe's name.
#[derive(Debug)]
pub struct DenseTensor<'g> {
    /// floe's name (`arch::Dense::key`).
    pub key: String,
    /// Storage format.
    pub dtype: DType,
    /// Rows (1 for vectors).
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// The bytes: in the file, or reordered (a `llama` model's Q and K rows).
    pub data: std::borrow::Cow<'g, [u8]>,
}

/// Every dense tensor the model needs, found under llama.cpp's names and checked (shape, type:
/// routers and norms must be f32).
pub fn dense_tensors<'g>(g: &'g GgufFile, cfg: &ModelConfig) -> Result<Vec<DenseTensor<'g>>> {
    let mut out = Vec::new();
    for TensorSpec { role, rows, cols } in ModelSpec::from_config(cfg)?.tensors() {
        if let Some(t) = fused_qkvz(g, cfg, role, rows, cols)? {
            out.push(t);
            continue;
        }
        let n = gguf_name(role, cfg);
        let t = g.tensor(&n).ok_or_else(|| Error::MissingTensor(n.clone()))?;
        let want = crate::formats::gguf::arch::gguf_dims(role, cfg, rows, cols);
        // Trailing dimensions of 1 are the same shape (`[n, 1]` is `[n]`).
        let mut dims = t.dims.clone();
        while dims.len() > want.len() && dims.last() == Some(&1) {
            dims.pop();
        }
        if dims != want {
            return Err(Error::Invalid(format!(
                "GGUF tensor {n} has dims {:?}, expected {want:?}",
                t.dims
            )));
        }
        // DeepSeek-V4's hash-routing table: integers, held as f32 (exact below 2^24).
        if matches!(role, Dense::HashTable(_)) {
            out.push(DenseTensor {
                key: role.key(),
                dtype: DType::F32,
                rows,
                cols,
                data: int_table(t, g.data(t))?,
            });
            continue;
        }
        let dtype = dtype_of(t)?;
        check_blocks(&n, dtype, cols, g.data(t))?;
        if role.keep_f32() && dtype != DType::F32 {
            return Err(Error::Unsupported(format!(
                "GGUF tensor {n} is {dtype}; floe keeps routers and norms f32"
            )));
        }
        let data = match permuted_heads(role, cfg) {
            Some(heads) if rows % (2 * heads) == 0 => std::borrow::Cow::Owned(unpermute_rows(
                g.data(t),
                heads,
                g.data(t).len() / rows,
                false,
            )),
            Some(heads) => {
                return Err(Error::Invalid(format!(
                    "GGUF tensor {n}: {rows} rows are not {heads} heads of an even size"
                )))
            }
            None => std::borrow::Cow::Borrowed(g.data(t)),
        };
        out.push(DenseTensor { key: role.key(), dtype, rows, cols, data });
    }
    Ok(out)
}

/// An I32 or I64 table (ggml types 26, 27) as f32 bytes, or an error naming the tensor.
fn int_table<'g>(t: &GgufTensor, data: &[u8]) -> Result<std::borrow::Cow<'g, [u8]>> {
    let values: Vec<f32> = match t.ggml_type.id() {
        26 => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4")) as f32)
            .collect(),
        27 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8")) as f32)
            .collect(),
        0 => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect(),
        _ => {
            return Err(Error::Unsupported(format!(
                "GGUF tensor {} is {}; a routing table is I32, I64 or F32",
                t.name,
                t.ggml_type.name()
            )))
        }
    };
    Ok(std::borrow::Cow::Owned(bytemuck::cast_slice(&values).to_vec()))
}

/// Qwen3-Next's q/k/v or z projection from the fused `ssm_in` that files converted before
/// llama.cpp split it into `attn_qkv` and `attn_gate` hold: its rows gathered (whole rows, so
/// any type). None where the file has the split tensors, or for other roles.
fn fused_qkvz<'g>(
    g: &'g GgufFile,
    cfg: &ModelConfig,
    role: Dense,
    rows: usize,
    cols: usize,
) -> Result<Option<DenseTensor<'g>>> {
    let (Dense::LinQkv(l) | Dense::LinGate(l), Some(lin)) = (role, cfg.linear) else {
        return Ok(None);
    };
    let name = format!("blk.{l}.ssm_in.weight");
    let fused = match g.tensor(&name) {
        Some(t) if lin.grouped && g.tensor(&gguf_name(role, cfg)).is_none() => t,
        _ => return Ok(None),
    };
    let total = lin.qkv_dim() + lin.value_total();
    if fused.dims != [cols as u64, total as u64] {
        return Err(Error::Invalid(format!(
            "GGUF tensor {name} has dims {:?}, expected {:?}",
            fused.dims,
            [cols, total]
        )));
    }
    let dtype = dtype_of(fused)?;
    let data = g.data(fused);
    check_blocks(&name, dtype, cols, data)?;
    let row_bytes = data.len() / total;
    let picked = crate::formats::convert::qkvz_rows(&lin, matches!(role, Dense::LinGate(_)));
    debug_assert_eq!(picked.len(), rows);
    let bytes =
        picked.iter().flat_map(|&r| &data[r * row_bytes..(r + 1) * row_bytes]).copied().collect();
    Ok(Some(DenseTensor {
        key: role.key(),
        dtype,
        rows,
        cols,
        data: std::borrow::Cow::Owned(bytes),
    }))
}

/// The routed experts of a GGUF file, read in place: each layer's gate, up and down are slices
/// of its three stacked tensors, read as one three-segment request per expert.
pub fn expert_file(
    g: &GgufFile,
    cfg: &ModelConfig,
) -> Result<crate::formats::placement::ExpertFile> {
    use crate::formats::placement::{ExpertFile, ExpertPlacement};
    let mut layers = vec![None; cfg.layers];
    let mut slot_bytes = 0;
    for l in (0..cfg.layers).filter(|&l| cfg.moe_layers[l]) {
        let parts = expert_parts(g, cfg, l)?;
        let (h, f) = (cfg.hidden, cfg.expert_ffn);
        let spec = |p: &ExpertPart, rows| -> Result<_> {
            let t = p.tensor;
            Ok((t.file, t.offset + p.first, rows, p.cols, dtype_of(t)?, Some(p.stride)))
        };
        let (p, slot) = ExpertPlacement::strided_slices([
            spec(&parts[0], f)?,
            spec(&parts[1], f)?,
            spec(&parts[2], h)?,
        ])?;
        slot_bytes = slot_bytes.max(slot);
        layers[l] = Some(p);
    }
    Ok(ExpertFile { paths: g.paths(), layers, experts: cfg.experts, slot_bytes })
}

/// One expert matrix (gate, up or down) in a stacked GGUF expert tensor.
#[derive(Debug, Clone, Copy)]
pub struct ExpertPart<'g> {
    /// The stacked tensor.
    pub tensor: &'g GgufTensor,
    /// Byte offset of expert 0's matrix in the tensor's data.
    pub first: u64,
    /// Bytes from one expert's matrix to the next's.
    pub stride: u64,
    /// Bytes of one expert's matrix.
    pub bytes: usize,
    /// Values per row.
    pub cols: usize,
}

impl ExpertPart<'_> {
    /// Expert `e`'s bytes within `data` (the tensor's data).
    pub fn of<'d>(&self, data: &'d [u8], e: usize) -> Option<&'d [u8]> {
        let at = (self.first + e as u64 * self.stride) as usize;
        data.get(at..at + self.bytes)
    }
}

/// The gate, up and down expert matrices of layer `l`, dims checked (`[hidden, ffn, experts]`
/// for gate/up, `[ffn, hidden, experts]` for down, innermost first; Gemma 4's gate and up
/// stacked in one `ffn_gate_up_exps` `[hidden, 2 x ffn, experts]`, each expert's gate rows then
/// its up rows), their rows whole blocks of their type.
pub fn expert_parts<'g>(
    g: &'g GgufFile,
    cfg: &ModelConfig,
    l: usize,
) -> Result<[ExpertPart<'g>; 3]> {
    let (h, f) = (cfg.hidden, cfg.expert_ffn);
    let t = |p: &str, d: [usize; 2]| -> Result<&'g GgufTensor> {
        let n = format!("blk.{l}.ffn_{p}_exps.weight");
        let t = g.tensor(&n).ok_or_else(|| Error::MissingTensor(n.clone()))?;
        let want = vec![d[0] as u64, d[1] as u64, cfg.experts as u64];
        if t.dims != want {
            return Err(Error::Invalid(format!("{n} has dims {:?}, expected {want:?}", t.dims)));
        }
        let dtype = dtype_of(t)?;
        if !d[0].is_multiple_of(dtype.block_values()) {
            return Err(Error::Invalid(format!(
                "GGUF tensor {n}: rows of {} values are not whole {dtype} blocks of {}",
                d[0],
                dtype.block_values()
            )));
        }
        Ok(t)
    };
    let part = |tensor: &'g GgufTensor, rows: usize, cols: usize, first_row: usize, of: usize| {
        let row = dtype_of(tensor)?.row_bytes(cols).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok::<_, Error>(ExpertPart {
            tensor,
            first: (first_row * row) as u64,
            stride: (of * row) as u64,
            bytes: rows * row,
            cols,
        })
    };
    let down = t("down", [f, h])?;
    let fused = format!("blk.{l}.ffn_gate_up_exps.weight");
    if g.tensor(&fused).is_some() && g.tensor(&format!("blk.{l}.ffn_gate_exps.weight")).is_none() {
        let gu = t("gate_up", [h, 2 * f])?;
        return Ok([part(gu, f, h, 0, 2 * f)?, part(gu, f, h, f, 2 * f)?, part(down, h, f, 0, h)?]);
    }
    let (gate, up) = (t("gate", [h, f])?, t("up", [h, f])?);
    Ok([part(gate, f, h, 0, f)?, part(up, f, h, 0, f)?, part(down, h, f, 0, h)?])
}

/// Packs a GGUF file into `out` (a temporary directory renamed at the end), copying tensor bytes
/// as they are. `tokenizer` is a directory with tokenizer.json; without it the GGUF's own
/// tokenizer metadata is rebuilt into one.
pub fn pack_gguf(
    path: &Path,
    out: &Path,
    tokenizer: Option<&Path>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest> {
    let g = GgufFile::open(path)?;
    let cfg = config_of(&g)?;
    write_dir_atomically(out, |tmp| write(&g, &cfg, tmp, tokenizer, progress))
}

fn write(
    g: &GgufFile,
    cfg: &ModelConfig,
    dir: &Path,
    tokenizer: Option<&Path>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest> {
    let tensors = dense_tensors(g, cfg)?;
    let moe: Vec<usize> = (0..cfg.layers).filter(|&l| cfg.moe_layers[l]).collect();
    let total = (tensors.len() + moe.len() * cfg.experts) as u64;
    let mut done = 0;
    let mut dense = DenseWriter::create(dir)?;
    for t in tensors {
        dense.push(t.key, t.dtype, t.rows, t.cols, &t.data)?;
        done += 1;
        progress(done, total);
    }
    let dense = dense.finish()?;
    // Each layer's slab layout from its three tensors' types (Q4_K_M files mix types, and not
    // the same way in every layer); slots are sized for the largest.
    let mut layer_layouts = Vec::new();
    for &l in &moe {
        let parts = expert_parts(g, cfg, l)?;
        let types =
            [dtype_of(parts[0].tensor)?, dtype_of(parts[1].tensor)?, dtype_of(parts[2].tensor)?];
        layer_layouts.push((l, parts, SlabLayout::mixed(types, cfg.hidden, cfg.expert_ffn)?));
    }
    let slab = layer_layouts
        .iter()
        .map(|(_, _, s)| s)
        .max_by_key(|s| s.slab_bytes)
        .cloned()
        .ok_or_else(|| Error::Invalid("no MoE layers".into()))?;
    let mut slabs = SlabWriter::create(dir)?;
    for (l, tensors, layout) in &layer_layouts {
        if *layout == slab {
            slabs.begin_layer(*l);
        } else {
            slabs.begin_layer_with(*l, layout.clone());
        }
        let mut buf = vec![0u8; layout.slab_bytes];
        for e in 0..cfg.experts {
            buf.fill(0);
            for (place, p) in [&layout.gate, &layout.up, &layout.down].iter().zip(tensors) {
                let per = place.bytes;
                let src = p.of(g.data(p.tensor), e).ok_or_else(|| {
                    Error::Invalid(format!("{}: too short for expert {e}", p.tensor.name))
                })?;
                buf[place.offset..place.offset + per].copy_from_slice(src);
            }
            slabs.push(&buf)?;
            done += 1;
            progress(done, total);
        }
    }
    let layers = slabs.finish()?;
    let mut has_tokenizer = false;
    if let Some(tdir) = tokenizer {
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            if tdir.join(f).exists() {
                std::fs::copy(tdir.join(f), dir.join(f))
                    .map_err(|e| Error::Write { path: dir.join(f), source: e })?;
                has_tokenizer |= f == "tokenizer.json";
            }
        }
    } else {
        // The GGUF's own tokenizer; a model whose tokenizer floe cannot rebuild still packs
        // (token ids in and out), with the reason logged.
        match crate::formats::gguf::tokenizer::write_tokenizer(g, dir) {
            Ok(()) => has_tokenizer = true,
            Err(e) => tracing::warn!("no tokenizer packed: {e}"),
        }
    }
    let m = Manifest::new(
        cfg.clone(),
        dense,
        slab,
        layers,
        g.path().display().to_string(),
        has_tokenizer,
    );
    m.write(dir)?;
    PackedModel::open(dir, true)?;
    Ok(m)
}
