//! The tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`), rebuilt as a Hugging
//! Face `tokenizer.json` (and a `tokenizer_config.json` with the chat template and special
//! tokens) so the same `tokenizers` code runs it. Byte-level BPE (`tokenizer.ggml.model =
//! "gpt2"`, what Qwen, OLMoE and Llama 3 use) with the pre-tokenizers llama.cpp names in
//! `tokenizer.ggml.pre`, and SentencePiece (`"llama"`, `spm.rs`); anything else is an error
//! that asks for `--tokenizer`.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, GgufValue};

/// GPT-2's split pattern (also `default`, OLMo's and StarCoder's in llama.cpp).
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Qwen2's (also Qwen3's) split pattern: single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split pattern: digits in groups of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5's: Qwen2's with combining marks (`\p{M}`) kept with their letters.
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// DeepSeek-V3's three splits, one after another: digit groups of up to three, CJK runs, then
/// the rest.
const DEEPSEEK3_SPLITS: [&str; 3] = [
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];
/// GPT-4o's (o200k: gpt-oss, Llama 4, MiniMax-M2): case runs with their contractions.
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Kimi-K2's (`tokenization_kimi.py`, tiktoken-style): Han runs apart, GPT-4o's case runs with
/// Han taken out of the letter classes (class intersection), digit groups of up to three.
const KIMI_K2_SPLIT: &str = r"[\p{Han}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// StarCoder's (also Refact's): single digits first, then GPT-2's.
const STARCODER_SPLITS: [&str; 2] = [r"\p{N}", GPT2_SPLIT];
/// llama.cpp's default (a `default` or missing name): punctuation runs, GPT-2's, digit runs,
/// then groups of three digits.
const DEFAULT_SPLITS: [&str; 4] =
    [r"[\p{P}\$\+<=>\^~\|]+", GPT2_SPLIT, r"\p{N}+", r"[0-9][0-9][0-9]"];

/// How a `tokenizer.ggml.pre` name splits text before BPE (llama.cpp's `llama-vocab.cpp`).
struct PreTokenizer {
    /// Regexes applied one after another, each splitting the pieces of the one before.
    splits: &'static [&'static str],
    /// NFC-normalise first, as the Qwen families' own `tokenizer.json` does (llama.cpp does not
    /// normalise: on text already in NFC the two agree; floe follows the model's tokenizer).
    nfc: bool,
    /// A piece that is itself a token is not merged up from bytes.
    ignore_merges: bool,
}

/// The pre-tokenizer of a `tokenizer.ggml.pre` name, or None for a name floe does not know.
fn pre_tokenizer(pre: &str) -> Option<PreTokenizer> {
    let p = |splits: &'static [&'static str], nfc, ignore_merges| PreTokenizer {
        splits,
        nfc,
        ignore_merges,
    };
    Some(match pre {
        "qwen2" | "deepseek-r1-qwen" => p(&[QWEN2_SPLIT], true, false),
        "hunyuan" => p(&[QWEN2_SPLIT], false, false),
        "qwen35" => p(&[QWEN35_SPLIT], true, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" => {
            p(&[LLAMA3_SPLIT], false, true)
        }
        "smaug-bpe" | "dbrx" | "chatglm-bpe" => p(&[LLAMA3_SPLIT], false, false),
        "glm4" | "glm5" => p(&[LLAMA3_SPLIT], false, true),
        "deepseek-v3" | "hunyuan-dense" => p(&DEEPSEEK3_SPLITS, false, false),
        "gpt-4o" | "llama4" | "minimax-m2" => p(&[GPT4O_SPLIT], false, false),
        "kimi-k2" => p(&[KIMI_K2_SPLIT], false, false),
        "gpt2" | "olmo" | "gpt-2" | "mpt" => p(&[GPT2_SPLIT], false, false),
        "starcoder" | "refact" => p(&STARCODER_SPLITS, false, false),
        "default" => p(&DEFAULT_SPLITS, false, false),
        _ => return None,
    })
}

pub(super) fn strings<'a>(g: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    match g.get(key) {
        Some(GgufValue::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| Error::Invalid(format!("GGUF {key}: not all strings")))
            })
            .collect(),
        _ => Err(Error::Invalid(format!(
            "{}: no {key} in the GGUF metadata; pass --tokenizer DIR with a tokenizer.json",
            g.path().display()
        ))),
    }
}

/// `(tokenizer.json, tokenizer_config.json)` built from the GGUF metadata.
pub fn tokenizer_json(g: &GgufFile) -> Result<(Value, Value)> {
    let model = g.get("tokenizer.ggml.model").and_then(|v| v.as_str()).unwrap_or("(none)");
    if model == "llama" {
        return super::spm::tokenizer_json(g);
    }
    if model != "gpt2" {
        return Err(ask(
            g,
            format!(
                "tokenizer.ggml.model is {model:?} (floe rebuilds byte-level BPE, \"gpt2\", and \
                 SentencePiece, \"llama\", from GGUF)"
            ),
        ));
    }
    let pre_name = g.get("tokenizer.ggml.pre").and_then(|v| v.as_str()).unwrap_or("default");
    tokenizer_json_with_pre(g, pre_name)
}

/// [`tokenizer_json`] with the pre-tokenizer of `pre_name` rather than the file's own (tests
/// compare every name against llama.cpp on one vocabulary).
pub fn tokenizer_json_with_pre(g: &GgufFile, pre_name: &str) -> Result<(Value, Value)> {
    let PreTokenizer { splits, nfc, ignore_merges } = pre_tokenizer(pre_name)
        .ok_or_else(|| ask(g, format!("pre-tokenizer {pre_name:?} is not one floe knows")))?;
    let v = Vocabulary::read(g)?;
    // A vocabulary of single bytes needs no merges (floe's synthetic models).
    let merges = match g.get("tokenizer.ggml.merges") {
        Some(_) => strings(g, "tokenizer.ggml.merges")?,
        None => Vec::new(),
    };
    let merges: Vec<Value> = merges.iter().map(|m| json!(m)).collect();
    let mut pretokenizers: Vec<Value> = splits
        .iter()
        .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
        .collect();
    pretokenizers.push(
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}),
    );
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": v.added,
        "normalizer": if nfc { json!({"type": "NFC"}) } else { Value::Null },
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": pretokenizers},
        "post_processor": v.post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": ignore_merges, "vocab": v.vocab, "merges": merges,
        },
    });
    Ok((tokenizer, v.config))
}

/// The error for a tokenizer floe cannot rebuild: it says what to pass instead.
pub(super) fn ask(g: &GgufFile, why: String) -> Error {
    Error::Unsupported(format!(
        "{}: {why}; pass --tokenizer DIR with the model's tokenizer.json",
        g.path().display()
    ))
}

/// What every rebuilt tokenizer takes from the metadata: the tokens and their types, the
/// control and user-defined tokens (matched whole), BOS insertion and the config (chat
/// template, BOS, EOS).
pub(super) struct Vocabulary<'g> {
    pub(super) tokens: Vec<&'g str>,
    pub(super) types: Vec<u64>,
    pub(super) vocab: serde_json::Map<String, Value>,
    pub(super) added: Vec<Value>,
    pub(super) post: Value,
    pub(super) config: Value,
}

impl<'g> Vocabulary<'g> {
    pub(super) fn read(g: &'g GgufFile) -> Result<Self> {
        let tokens = strings(g, "tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match g.get("tokenizer.ggml.token_type") {
            Some(GgufValue::Array(t)) => t.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (id, tok) in tokens.iter().enumerate() {
            vocab.insert(tok.to_string(), json!(id));
            // 3 = control, 4 = user-defined: matched whole in the text, as HF's added tokens are.
            let ty = types.get(id).copied().unwrap_or(1);
            if ty == 3 || ty == 4 {
                added.push(json!({
                    "id": id, "content": tok, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": ty == 3,
                }));
            }
        }
        let token_of = |key: &str| {
            g.get(key)
                .and_then(|v| v.as_u64())
                .and_then(|id| tokens.get(id as usize))
                .map(|t| t.to_string())
        };
        let bos = token_of("tokenizer.ggml.bos_token_id");
        let add_bos = matches!(g.get("tokenizer.ggml.add_bos_token"), Some(GgufValue::Bool(true)));
        let post = match (&bos, add_bos) {
            (Some(b), true) => {
                let id = g.get("tokenizer.ggml.bos_token_id").and_then(|v| v.as_u64());
                json!({
                    "type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                             {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {b.as_str(): {"id": b, "ids": [id], "tokens": [b]}},
                })
            }
            _ => Value::Null,
        };
        let mut config = json!({ "source": "GGUF metadata (tokenizer.ggml.*)" });
        if let Some(t) = g.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            config["chat_template"] = json!(t);
        }
        if let Some(b) = bos {
            config["bos_token"] = json!(b);
        }
        if let Some(e) = token_of("tokenizer.ggml.eos_token_id") {
            config["eos_token"] = json!(e);
        }
        Ok(Self { tokens, types, vocab, added, post, config })
    }
}

/// Writes `dir/tokenizer.json` and `dir/tokenizer_config.json` from the GGUF metadata.
pub fn write_tokenizer(g: &GgufFile, dir: &std::path::Path) -> Result<()> {
    let (tok, cfg) = tokenizer_json(g)?;
    for (name, v) in [("tokenizer.json", tok), ("tokenizer_config.json", cfg)] {
        let path = dir.join(name);
        std::fs::write(&path, v.to_string())
            .map_err(|e| Error::Write { path: path.clone(), source: e })?;
    }
    // Fail now, not at the first prompt, if the tokenizers crate cannot load what we wrote.
    crate::model::tokenizer::TextCodec::load(dir).map(|_| ())
}
