//! The KV cache type flags `floe run` and `floe serve` share: one type for both, or keys and
//! values apart (llama.cpp's `--cache-type-k/-v` spellings), and MLA's two row parts.

use floe::{KvDType, KvTypes};

fn parse(s: &str) -> Result<KvDType, String> {
    KvDType::parse(s)
        .ok_or_else(|| format!("unknown KV cache type {s:?} (one of {})", KvDType::names()))
}

/// How the KV cache stores what attention layers keep per position.
#[derive(Debug, Clone, clap::Args)]
pub struct KvFlags {
    /// KV cache type of keys and values alike: f16 (as llama.cpp), f32 (exact), q8_0 and q4_0
    /// (after a Hadamard rotation), tq4, tq3, tq2 (TurboQuant: rotation, then a fixed codebook
    /// per coordinate; 4.1-4.5, 3.1-3.5 and 2.1-2.5 bits per value with the scales).
    #[arg(long, default_value = "f16", value_parser = parse, value_name = "TYPE")]
    kv_dtype: KvDType,
    /// KV cache type of keys (default: --kv-dtype). Keys are far more sensitive than values.
    #[arg(long, alias = "cache-type-k", value_parser = parse, value_name = "TYPE")]
    kv_type_k: Option<KvDType>,
    /// KV cache type of values (default: --kv-dtype).
    #[arg(long, alias = "cache-type-v", value_parser = parse, value_name = "TYPE")]
    kv_type_v: Option<KvDType>,
    /// MLA models (DeepSeek-V2/V3): type of the cached latent, scored as the key and summed as
    /// the value (default: the key type).
    #[arg(long, value_parser = parse, value_name = "TYPE")]
    kv_type_latent: Option<KvDType>,
    /// MLA models: type of the cached RoPE key (default: the key type).
    #[arg(long, value_parser = parse, value_name = "TYPE")]
    kv_type_rope: Option<KvDType>,
}

impl KvFlags {
    /// The types these flags choose.
    pub fn types(&self) -> KvTypes {
        KvTypes {
            k: self.kv_type_k.unwrap_or(self.kv_dtype),
            v: self.kv_type_v.unwrap_or(self.kv_dtype),
            latent: self.kv_type_latent,
            rope: self.kv_type_rope,
        }
    }
}
