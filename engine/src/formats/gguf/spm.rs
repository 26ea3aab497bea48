//! SentencePiece vocabularies in GGUF (`tokenizer.ggml.model = "llama"`: Llama 2's, Mixtral's
//! and Mistral's files) rebuilt as a Hugging Face `tokenizer.json`, the way transformers'
//! `LlamaConverter` does: spaces as `▁` (one put in front when `add_space_prefix`), BPE whose
//! merges are every split of a piece into two pieces, ranked by the whole piece's score (so
//! the highest-scoring pair merges first, as llama.cpp's bigram queue does), and characters
//! outside the vocabulary as their `<0xXX>` byte tokens.

use serde_json::{json, Value};

use super::tokenizer::{ask, Vocabulary};
use super::{GgufFile, GgufValue};
use crate::error::Result;

/// GGUF token type of the byte tokens `<0xXX>`.
const BYTE: u64 = 6;

/// `(tokenizer.json, tokenizer_config.json)` for a SentencePiece vocabulary.
pub(super) fn tokenizer_json(g: &GgufFile) -> Result<(Value, Value)> {
    let v = Vocabulary::read(g)?;
    let scores: Vec<f64> = match g.get("tokenizer.ggml.scores") {
        Some(GgufValue::Array(s)) => s.iter().map(|x| x.as_f64().unwrap_or(0.0)).collect(),
        _ => return Err(ask(g, "a SentencePiece vocabulary without tokenizer.ggml.scores".into())),
    };
    if scores.len() != v.tokens.len() {
        return Err(ask(g, format!("{} token scores for {} tokens", scores.len(), v.tokens.len())));
    }
    let id_of = |t: &str| v.vocab.get(t).and_then(|x| x.as_u64()).map(|x| x as usize);
    // Every split of every piece into two pieces, by the piece's score (then id, then split).
    let mut candidates: Vec<(f64, usize, usize, &str, &str)> = Vec::new();
    for (id, piece) in v.tokens.iter().enumerate() {
        if v.types.get(id) == Some(&BYTE) {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if id_of(l).is_some() && id_of(r).is_some() {
                candidates.push((scores[id], id, at, l, r));
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges: Vec<Value> = candidates.iter().map(|c| json!([c.3, c.4])).collect();
    let prefix = !matches!(g.get("tokenizer.ggml.add_space_prefix"), Some(GgufValue::Bool(false)));
    let mut normalizers = Vec::new();
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if prefix {
        normalizers.push(json!({"type": "Prepend", "prepend": "\u{2581}"}));
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
    let unk = g
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|x| x.as_u64())
        .and_then(|id| v.tokens.get(id as usize))
        .map(|t| t.to_string());
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": v.added,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": null,
        "post_processor": v.post,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
            "ignore_merges": false, "vocab": v.vocab, "merges": merges,
        },
    });
    Ok((tokenizer, v.config))
}
