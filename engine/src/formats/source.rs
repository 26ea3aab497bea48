//! Opening a model for running, whatever it is stored as: a directory packed by `floe pack` /
//! `floe synth`, or a GGUF file read in place (no conversion step).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::dense::DenseWeights;
use crate::formats::packed::PackedModel;
use crate::formats::placement::ExpertFile;
use crate::model::config::ModelConfig;
use crate::model::tokenizer::TextCodec;

/// What a model is stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// floe's packed directory: one aligned read per expert.
    Packed,
    /// A GGUF file: three reads per expert (its gate, up and down slices).
    Gguf,
}

/// A model ready to build a [`Model`](crate::runtime::Model) from: its configuration, the dense
/// weights in memory, where the routed experts are, and the tokenizer if it has one.
#[derive(Debug)]
pub struct OpenedModel {
    /// Where it came from.
    pub path: PathBuf,
    /// Packed directory or GGUF file.
    pub format: ModelFormat,
    /// The architecture and sizes.
    pub config: ModelConfig,
    /// Dense weights, resident.
    pub dense: DenseWeights,
    /// The routed experts, to stream or load.
    pub experts: ExpertFile,
    /// The tokenizer and chat template, if the model has one (or `tokenizer` was given).
    pub codec: Option<TextCodec>,
}

/// Opens `path`: a `.gguf` file is read in place, anything else as a packed directory.
/// `tokenizer` is a directory with a tokenizer.json to use instead of the model's own; without
/// it a GGUF file's tokenizer is rebuilt from its metadata (when floe can; otherwise the model
/// opens without one, and the reason is logged). `verify` checks a packed model's checksums.
pub fn open_model(path: &Path, verify: bool, tokenizer: Option<&Path>) -> Result<OpenedModel> {
    let is_gguf = path.is_file() && {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok()
            && &magic == b"GGUF"
    };
    let codec = match tokenizer {
        Some(dir) => Some(TextCodec::load(dir)?),
        None => None,
    };
    if is_gguf {
        let g = crate::formats::gguf::GgufFile::open(path)?;
        let config = crate::formats::gguf::config_of(&g)?;
        let tensors = crate::formats::gguf::import::dense_tensors(&g, &config)?;
        let list: Vec<_> =
            tensors.iter().map(|t| (t.key.clone(), t.dtype, t.rows, t.cols, &t.data[..])).collect();
        let dense = DenseWeights::from_tensors(&list)?;
        let experts = crate::formats::gguf::import::expert_file(&g, &config)?;
        let codec = match codec {
            Some(c) => Some(c),
            None => match crate::formats::gguf::tokenizer::tokenizer_json(&g) {
                Ok((tok, cfg)) => Some(TextCodec::from_json(&tok.to_string(), &cfg)?),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            },
        };
        return Ok(OpenedModel {
            path: path.to_path_buf(),
            format: ModelFormat::Gguf,
            config,
            dense,
            experts,
            codec,
        });
    }
    if path.is_file() {
        return Err(Error::Invalid(format!(
            "{}: not a GGUF file (no GGUF magic) and not a model directory",
            path.display()
        )));
    }
    let packed = PackedModel::open(path, verify)?;
    let codec = match codec {
        Some(c) => Some(c),
        None if packed.manifest.has_tokenizer => Some(TextCodec::load(path)?),
        None => None,
    };
    Ok(OpenedModel {
        path: path.to_path_buf(),
        format: ModelFormat::Packed,
        config: packed.manifest.config.clone(),
        dense: DenseWeights::load(&packed)?,
        experts: packed.expert_file()?,
        codec,
    })
}
