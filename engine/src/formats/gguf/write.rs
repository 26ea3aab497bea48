//! Writing GGUF v3: `floe synth --format gguf` turns a packed floe model into a GGUF file in
//! llama.cpp's layout (the `{arch}.*` keys, llama.cpp tensor names, the stacked `ffn_*_exps`
//! expert tensors, a `llama` model's Q/K rows in llama.cpp's order, the tokenizer as
//! `tokenizer.ggml.*`). Tensor bytes are copied as they are (floe's block formats are GGUF's).

use std::io::{BufWriter, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use floe_kernels::DType;

use crate::error::{Error, Result};
use crate::formats::dense::DenseWeights;
use crate::formats::gguf::arch::{gguf_arch, gguf_name, permuted_heads, unpermute_rows};
use crate::formats::gguf::{GgmlType, GgufValue};
use crate::formats::packed::PackedModel;
use crate::model::arch::Dense;
use crate::model::config::Arch;
use crate::model::spec::ModelSpec;
use crate::model::tensors::TensorSpec;

/// Data alignment of the files floe writes (GGUF's default).
const ALIGN: u64 = 32;

/// llama.cpp's YaRN keys (`k` prefixes a key with the architecture).
pub(super) fn yarn_keys(
    k: &dyn Fn(&str) -> std::string::String,
    y: &crate::model::config::Yarn,
) -> [(std::string::String, GgufValue); 5] {
    use GgufValue::*;
    [
        (k("rope.scaling.type"), String("yarn".into())),
        (k("rope.scaling.factor"), F32(y.factor)),
        (k("rope.scaling.original_context_length"), U32(y.original_max_positions as u32)),
        (k("rope.scaling.yarn_beta_fast"), F32(y.beta_fast)),
        (k("rope.scaling.yarn_beta_slow"), F32(y.beta_slow)),
    ]
}

fn ggml_type(d: DType) -> GgmlType {
    GgmlType::from_id(d.ggml_id()).expect("every floe type has a ggml id")
}

struct Out<W: Write> {
    w: W,
}

impl<W: Write> Out<W> {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.w.write_all(b)
    }
    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn string(&mut self, s: &str) -> std::io::Result<()> {
        self.u64(s.len() as u64)?;
        self.bytes(s.as_bytes())
    }
    fn value(&mut self, v: &GgufValue, with_type: bool) -> std::io::Result<()> {
        let (ty, body): (u32, Vec<u8>) = match v {
            GgufValue::U8(x) => (0, vec![*x]),
            GgufValue::I8(x) => (1, vec![*x as u8]),
            GgufValue::U16(x) => (2, x.to_le_bytes().to_vec()),
            GgufValue::I16(x) => (3, x.to_le_bytes().to_vec()),
            GgufValue::U32(x) => (4, x.to_le_bytes().to_vec()),
            GgufValue::I32(x) => (5, x.to_le_bytes().to_vec()),
            GgufValue::F32(x) => (6, x.to_le_bytes().to_vec()),
            GgufValue::Bool(x) => (7, vec![*x as u8]),
            GgufValue::U64(x) => (10, x.to_le_bytes().to_vec()),
            GgufValue::I64(x) => (11, x.to_le_bytes().to_vec()),
            GgufValue::F64(x) => (12, x.to_le_bytes().to_vec()),
            GgufValue::String(s) => {
                if with_type {
                    self.u32(8)?;
                }
                return self.string(s);
            }
            GgufValue::Array(items) => {
                if with_type {
                    self.u32(9)?;
                }
                // An empty array is written as an array of strings (llama.cpp requires the merges key).
                let elem = items.first().map(value_type).unwrap_or(8);
                self.u32(elem)?;
                self.u64(items.len() as u64)?;
                for i in items {
                    self.value(i, false)?;
                }
                return Ok(());
            }
        };
        if with_type {
            self.u32(ty)?;
        }
        self.bytes(&body)
    }
}

fn value_type(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

/// Where a tensor's bytes come from.
enum Source {
    /// A dense tensor, by role.
    Dense(crate::model::arch::Dense),
    /// Part `part` (0 gate, 1 up, 2 down) of every expert of decoder layer `layer`.
    Experts { layer: usize, part: usize },
    /// Bytes made for the file (Gemma 4's `rope_freqs`).
    Made(Vec<u8>),
}

/// The hyperparameters and the tokenizer of `packed` as GGUF metadata.
fn metadata(packed: &PackedModel) -> Result<Vec<(String, GgufValue)>> {
    use GgufValue::*;
    let c = &packed.manifest.config;
    let a = gguf_arch(c.arch);
    // llama (Mixtral) and OLMoE take the expert width from feed_forward_length.
    let ffn = match c.arch {
        Arch::Mixtral | Arch::Olmoe | Arch::GptOss | Arch::MinimaxM2 => c.expert_ffn,
        _ => c.dense_ffn,
    };
    let k = |s: &str| format!("{a}.{s}");
    // MLA: llama.cpp's attention widths are the latent's (what its MQA-style cache holds).
    let (key_len, value_len, rope_dims) = match c.mla {
        Some(m) => (m.kv_lora_rank + m.qk_rope_dim, m.kv_lora_rank, m.qk_rope_dim),
        None => (c.head_dim, c.head_dim, c.rotary_dims()),
    };
    let mut m = vec![
        ("general.architecture".to_string(), String(a.into())),
        ("general.name".to_string(), String(packed.manifest.source.clone())),
        ("general.alignment".to_string(), U32(ALIGN as u32)),
        (k("block_count"), U32(c.layers as u32)),
        (k("context_length"), U32(c.max_positions as u32)),
        (k("embedding_length"), U32(c.hidden as u32)),
        (k("rope.dimension_count"), U32(rope_dims as u32)),
        (k("attention.head_count"), U32(c.heads as u32)),
        (k("attention.head_count_kv"), U32(if c.mla.is_some() { 1 } else { c.kv_heads as u32 })),
        (k("attention.key_length"), U32(key_len as u32)),
        (k("attention.value_length"), U32(value_len as u32)),
        (k("attention.layer_norm_rms_epsilon"), F32(c.rms_eps)),
        (k("rope.freq_base"), F32(c.rope_theta)),
        (k("expert_count"), U32(c.experts as u32)),
        (k("expert_used_count"), U32(c.top_k as u32)),
        (k("expert_feed_forward_length"), U32(c.expert_ffn as u32)),
        (k("expert_weights_norm"), Bool(c.norm_topk_prob)),
    ];
    // Without dense layers there is no dense width (llama.cpp's qwen35moe has none).
    if ffn > 0 {
        m.push((k("feed_forward_length"), U32(ffn as u32)));
    }
    if c.shared_ffn > 0 {
        m.push((k("expert_shared_feed_forward_length"), U32(c.shared_ffn as u32)));
    }
    if let Some(clip) = c.clip_qkv {
        m.push((k("attention.clamp_kqv"), F32(clip)));
    }
    if let Some(r) = c.sigmoid_router {
        let dense_lead = c.moe_layers.iter().take_while(|m| !**m).count();
        m.extend([
            (k("leading_dense_block_count"), U32(dense_lead as u32)),
            (k("expert_shared_count"), U32((c.shared_ffn / c.expert_ffn.max(1)) as u32)),
            (k("expert_gating_func"), U32(super::arch::GATING_SIGMOID as u32)),
            (k("expert_weights_scale"), F32(r.routed_scale)),
            (k("expert_group_count"), U32(r.groups as u32)),
            (k("expert_group_used_count"), U32(r.top_groups as u32)),
        ]);
    }
    if let Some(y) = c.yarn {
        m.extend(yarn_keys(&k, &y));
        if let Some(all) = y.mscale_all_dim {
            m.push((k("rope.scaling.yarn_log_multiplier"), F32(0.1 * all)));
            m.push((k("rope.scaling.yarn_mscale_all_dim"), F32(all)));
        }
    }
    if let Some(w) = c.sliding_window {
        m.push((k("attention.sliding_window"), U32(w as u32)));
    }
    if let Some(mla) = c.mla {
        let dense_lead = c.moe_layers.iter().take_while(|m| !**m).count();
        // 0 for no query LoRA (V2-Lite): llama.cpp's loader requires the key.
        m.push((k("attention.q_lora_rank"), U32(mla.q_lora_rank as u32)));
        m.extend([
            (k("attention.kv_lora_rank"), U32(mla.kv_lora_rank as u32)),
            (k("attention.key_length_mla"), U32((mla.qk_nope_dim + mla.qk_rope_dim) as u32)),
            (k("attention.value_length_mla"), U32(mla.v_head_dim as u32)),
        ]);
        if c.sigmoid_router.is_none() {
            m.extend([
                (k("leading_dense_block_count"), U32(dense_lead as u32)),
                (k("expert_shared_count"), U32((c.shared_ffn / c.expert_ffn.max(1)) as u32)),
                (k("expert_weights_scale"), F32(1.0)),
            ]);
        }
    }
    if let Some(lin) = c.linear {
        m.extend([
            (k("ssm.conv_kernel"), U32(lin.conv_kernel as u32)),
            (k("ssm.state_size"), U32(lin.key_dim as u32)),
            (k("ssm.group_count"), U32(lin.key_heads as u32)),
            (k("ssm.time_step_rank"), U32(lin.value_heads as u32)),
            (k("ssm.inner_size"), U32(lin.value_total() as u32)),
            (
                k("attention.recurrent_layers"),
                Array((0..c.layers).map(|l| Bool(c.is_linear(l))).collect()),
            ),
            // Text positions only: every section of llama.cpp's interleaved M-RoPE sees the
            // same position, which is plain RoPE (its required default sections).
            (k("rope.dimension_sections"), Array([11, 11, 10, 0].map(I32).to_vec())),
        ]);
        if let Some(every) = (1..=c.layers).find(|&i| !c.is_linear(i - 1)) {
            m.push((k("full_attention_interval"), U32(every as u32)));
        }
    }
    if let Some(d) = &c.dsa {
        m.extend([
            (k("attention.indexer.head_count"), U32(d.heads as u32)),
            (k("attention.indexer.key_length"), U32(d.head_dim as u32)),
            (k("attention.indexer.top_k"), U32(d.topk as u32)),
            (k("attention.indexer.types"), Array(d.full_layers.iter().map(|&f| Bool(f)).collect())),
        ]);
    }
    if let Some(v4) = &c.v4 {
        for (key, v) in super::deepseek_v4::metadata(c, v4) {
            match m.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = v,
                None => m.push((key, v)),
            }
        }
    }
    if let Some(g) = &c.gemma {
        for (key, v) in super::gemma::metadata(c, g) {
            match m.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = v,
                None => m.push((key, v)),
            }
        }
    }
    // The tokenizer: byte-level BPE vocabulary, merges and special tokens of tokenizer.json.
    let tpath = packed.dir.join("tokenizer.json");
    if let Ok(text) = std::fs::read_to_string(&tpath) {
        let t: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", tpath.display())))?;
        let model = &t["model"];
        if model["type"] != "BPE" {
            return Err(Error::Unsupported(format!(
                "{}: only byte-level BPE tokenizers go into GGUF",
                tpath.display()
            )));
        }
        let mut tokens: Vec<(u64, std::string::String, i32)> = Vec::new();
        for (tok, id) in model["vocab"].as_object().into_iter().flatten() {
            tokens.push((id.as_u64().unwrap_or(0), tok.clone(), 1));
        }
        for at in t["added_tokens"].as_array().into_iter().flatten() {
            let id = at["id"].as_u64().unwrap_or(0);
            let special = at["special"].as_bool().unwrap_or(false);
            tokens.retain(|(i, _, _)| *i != id);
            let content = at["content"].as_str().unwrap_or_default().to_string();
            tokens.push((id, content, if special { 3 } else { 4 }));
        }
        tokens.sort();
        if tokens.iter().enumerate().any(|(i, t)| t.0 != i as u64) {
            return Err(Error::Invalid(format!("{}: token ids have gaps", tpath.display())));
        }
        // Pad to the model's vocabulary, as llama.cpp expects one token per embedding row.
        while tokens.len() < c.vocab {
            let n = tokens.len();
            tokens.push((n as u64, format!("[PAD{n}]"), 5));
        }
        let merges: Vec<GgufValue> = model["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| match m {
                serde_json::Value::Array(p) => String(format!(
                    "{} {}",
                    p.first().and_then(|x| x.as_str()).unwrap_or_default(),
                    p.get(1).and_then(|x| x.as_str()).unwrap_or_default()
                )),
                other => String(other.as_str().unwrap_or_default().to_string()),
            })
            .collect();
        m.push(("tokenizer.ggml.model".into(), String("gpt2".into())));
        m.push(("tokenizer.ggml.pre".into(), String("qwen2".into())));
        m.push((
            "tokenizer.ggml.tokens".into(),
            Array(tokens.iter().map(|t| String(t.1.clone())).collect()),
        ));
        m.push((
            "tokenizer.ggml.token_type".into(),
            Array(tokens.iter().map(|t| I32(t.2)).collect()),
        ));
        m.push(("tokenizer.ggml.merges".into(), Array(merges)));
        if let Some(&eos) = c.eos_token_ids.first() {
            m.push(("tokenizer.ggml.eos_token_id".into(), U32(eos)));
            m.push(("tokenizer.ggml.padding_token_id".into(), U32(eos)));
        }
        m.push(("tokenizer.ggml.add_bos_token".into(), Bool(false)));
    }
    Ok(m)
}

/// Writes the packed Qwen3-MoE model `packed` as the GGUF file `out` (through a temporary name,
/// renamed at the end). `progress(done, total)` counts tensors.
pub fn export_gguf(
    packed: &PackedModel,
    out: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let c = &packed.manifest.config;
    let dense = DenseWeights::load(packed)?;
    let table = packed.manifest.expert_table()?;
    let mut tensors: Vec<(std::string::String, Vec<u64>, GgmlType, u64, Source)> = Vec::new();
    for TensorSpec { role, rows, cols } in ModelSpec::from_config(c)?.tensors() {
        let m = dense.matrix(&role.key()).or_else(|_| {
            // Vectors (norms) are stored f32 with one row.
            dense.vector(&role.key()).map(|v| {
                floe_kernels::Matrix::new(DType::F32, 1, v.len(), bytemuck::cast_slice(v))
                    .expect("an f32 vector is a valid 1-row matrix")
            })
        })?;
        let dims = super::arch::gguf_dims(role, c, rows, cols);
        // Tables of ids go out as llama.cpp reads them: I32 (floe holds them as f32).
        let t =
            if matches!(role, Dense::HashTable(_)) { GgmlType::I32 } else { ggml_type(m.dtype()) };
        tensors.push((gguf_name(role, c), dims, t, m.bytes().len() as u64, Source::Dense(role)));
    }
    if let Some(g) = &c.gemma {
        let bytes = super::gemma::rope_freqs(g);
        let dims = vec![(g.global_head_dim / 2) as u64];
        tensors.push((
            "rope_freqs.weight".into(),
            dims,
            GgmlType::F32,
            bytes.len() as u64,
            Source::Made(bytes),
        ));
    }
    for (l, p) in table.iter().enumerate() {
        let Some(p) = p else { continue };
        let v = p.view(0, &|_| 1);
        for (part, (name, place)) in
            [("gate", v.gate), ("up", v.up), ("down", v.down)].into_iter().enumerate()
        {
            let dims = vec![place.cols as u64, place.rows as u64, c.experts as u64];
            let bytes = (place.bytes * c.experts) as u64;
            tensors.push((
                format!("blk.{l}.ffn_{name}_exps.weight"),
                dims,
                ggml_type(place.dtype),
                bytes,
                Source::Experts { layer: l, part },
            ));
        }
    }
    let meta = metadata(packed)?;
    let tmp = out.with_extension(format!("gguf.partial-{}", std::process::id()));
    let werr = |e: std::io::Error| Error::Write { path: tmp.clone(), source: e };
    let file = std::fs::File::create(&tmp).map_err(werr)?;
    let mut o = Out { w: BufWriter::with_capacity(8 << 20, file) };
    let r: Result<()> = (|| {
        o.bytes(b"GGUF").map_err(werr)?;
        o.u32(3).map_err(werr)?;
        o.u64(tensors.len() as u64).map_err(werr)?;
        o.u64(meta.len() as u64).map_err(werr)?;
        for (k, v) in &meta {
            o.string(k).map_err(werr)?;
            o.value(v, true).map_err(werr)?;
        }
        let mut offset = 0u64;
        for (name, dims, t, bytes, _) in &tensors {
            o.string(name).map_err(werr)?;
            o.u32(dims.len() as u32).map_err(werr)?;
            for d in dims {
                o.u64(*d).map_err(werr)?;
            }
            o.u32(t.id()).map_err(werr)?;
            o.u64(offset).map_err(werr)?;
            offset = (offset + bytes).next_multiple_of(ALIGN);
        }
        let pos = o.w.stream_position().map_err(werr)?;
        o.bytes(&vec![0u8; (pos.next_multiple_of(ALIGN) - pos) as usize]).map_err(werr)?;
        let experts = std::fs::File::open(packed.dir.join("experts.bin"))
            .map_err(|e| Error::Invalid(format!("experts.bin: {e}")))?;
        let total = tensors.len() as u64;
        let mut buf = Vec::new();
        for (i, (_, _, _, bytes, src)) in tensors.iter().enumerate() {
            match src {
                Source::Dense(role) => {
                    let key = role.key();
                    let m = dense.matrix(&key).map(|m| m.bytes().to_vec()).or_else(|_| {
                        dense.vector(&key).map(|v| bytemuck::cast_slice::<f32, u8>(v).to_vec())
                    })?;
                    let m = if matches!(role, Dense::HashTable(_)) {
                        let ids: Vec<i32> = m
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i32)
                            .collect();
                        bytemuck::cast_slice::<i32, u8>(&ids).to_vec()
                    } else {
                        m
                    };
                    // llama.cpp's `llama` models hold Q and K rows in interleaved-pair order.
                    let m = match permuted_heads(*role, c) {
                        Some(heads) => {
                            let rows = dense.matrix(&key)?.rows();
                            unpermute_rows(&m, heads, m.len() / rows, true)
                        }
                        None => m,
                    };
                    o.bytes(&m).map_err(werr)?;
                }
                Source::Made(bytes) => o.bytes(bytes).map_err(werr)?,
                Source::Experts { layer, part } => {
                    let p = table[*layer].as_ref().expect("listed from the table");
                    for e in 0..c.experts {
                        let v = p.view(e, &|_| 1);
                        let place = [v.gate, v.up, v.down][*part];
                        let slab_at = p.read(e)[0].offset;
                        buf.resize(place.bytes, 0);
                        experts
                            .read_exact_at(&mut buf, slab_at + place.offset as u64)
                            .map_err(|e| Error::Invalid(format!("experts.bin: {e}")))?;
                        o.bytes(&buf).map_err(werr)?;
                    }
                }
            }
            let pad = bytes.next_multiple_of(ALIGN) - bytes;
            o.bytes(&vec![0u8; pad as usize]).map_err(werr)?;
            progress(i as u64 + 1, total);
        }
        let f = o.w.into_inner().map_err(|e| werr(e.into_error()))?;
        f.sync_all().map_err(werr)?;
        Ok(())
    })();
    match r {
        Ok(()) => std::fs::rename(&tmp, out)
            .map_err(|e| Error::Write { path: out.to_path_buf(), source: e }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// One tensor to write: name, dims (innermost first), type, bytes.
pub type TensorBytes<'a> = (String, Vec<u64>, GgmlType, &'a [u8]);

/// Writes a GGUF v3 file of `metadata` and `tensors` (data aligned to `alignment`).
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[TensorBytes<'_>],
    alignment: u64,
) -> Result<()> {
    let werr = |e: std::io::Error| Error::Write { path: path.to_path_buf(), source: e };
    let file = std::fs::File::create(path).map_err(werr)?;
    let mut o = Out { w: BufWriter::new(file) };
    (|| -> std::io::Result<()> {
        o.bytes(b"GGUF")?;
        o.u32(3)?;
        o.u64(tensors.len() as u64)?;
        o.u64(metadata.len() as u64)?;
        for (k, v) in metadata {
            o.string(k)?;
            o.value(v, true)?;
        }
        let mut offset = 0u64;
        for (name, dims, t, data) in tensors {
            o.string(name)?;
            o.u32(dims.len() as u32)?;
            for d in dims {
                o.u64(*d)?;
            }
            o.u32(t.id())?;
            o.u64(offset)?;
            offset = (offset + data.len() as u64).next_multiple_of(alignment);
        }
        let pos = o.w.stream_position()?;
        o.bytes(&vec![0u8; (pos.next_multiple_of(alignment) - pos) as usize])?;
        for (_, _, _, data) in tensors {
            o.bytes(data)?;
            let len = data.len() as u64;
            o.bytes(&vec![0u8; (len.next_multiple_of(alignment) - len) as usize])?;
        }
        o.w.flush()
    })()
    .map_err(werr)
}

/// Splits the GGUF file `src` into parts of at most `max_tensors` tensors each, named and keyed
/// as llama.cpp's `gguf-split` does (`NAME-00001-of-0000N.gguf`; `split.no`, `split.count` and
/// `split.tensors.count` in every part, the rest of the metadata in the first). Returns the
/// parts' paths.
pub fn split_gguf(src: &Path, max_tensors: usize) -> Result<Vec<std::path::PathBuf>> {
    let g = crate::formats::gguf::GgufFile::open(src)?;
    let chunks: Vec<&[crate::formats::gguf::GgufTensor]> =
        g.tensors.chunks(max_tensors.max(1)).collect();
    let n = chunks.len();
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let dir = src.parent().unwrap_or(Path::new(""));
    let mut paths = Vec::new();
    for (i, part) in chunks.iter().enumerate() {
        let path = dir.join(format!("{stem}-{:05}-of-{n:05}.gguf", i + 1));
        let mut meta: Vec<(String, GgufValue)> = vec![
            ("split.no".into(), GgufValue::U16(i as u16)),
            ("split.count".into(), GgufValue::U16(n as u16)),
            ("split.tensors.count".into(), GgufValue::I32(g.tensors.len() as i32)),
        ];
        if i == 0 {
            meta.extend(g.metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let tensors: Vec<TensorBytes<'_>> =
            part.iter().map(|t| (t.name.clone(), t.dims.clone(), t.ggml_type, g.data(t))).collect();
        write_gguf(&path, &meta, &tensors, g.alignment)?;
        paths.push(path);
    }
    Ok(paths)
}
