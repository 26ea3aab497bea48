//! A tiktoken-format vocabulary (`tiktoken.model`: one `base64(token bytes) rank` line per
//! token, as Kimi-K2/K2.5 ship it with no tokenizer.json) turned into the tokenizer.json
//! transformers' `TikTokenConverter` writes: byte-level BPE whose merges come from the ranks
//! (every split of a token into two tokens, ordered by the merged token's rank), whole
//! pre-tokens that are tokens taken as they are (`ignore_merges`), the model's split regex,
//! and the special tokens of tokenizer_config.json's `added_tokens_decoder`.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::formats::synth_vocab::bytes_to_unicode;

/// Kimi-K2's split regex (`tokenization_kimi.py`'s `pat_str`, Oniguruma syntax).
pub const KIMI_PATTERN: &str = concat!(
    r"[\p{Han}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
);

fn bad(what: String) -> Error {
    Error::Invalid(format!("tiktoken.model: {what}"))
}

/// Reads the ranks: token bytes by rank, which must run 0, 1, 2, ... without gaps.
pub fn read_ranks(text: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut it = line.split_whitespace();
        let (Some(tok), Some(rank), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad(format!("line {}: not `base64 rank`", i + 1)));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(tok)
            .map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
        let rank: usize = rank.parse().map_err(|e| bad(format!("line {}: rank {e}", i + 1)))?;
        if rank != out.len() {
            return Err(bad(format!("line {}: rank {rank}, expected {}", i + 1, out.len())));
        }
        out.push(bytes);
    }
    if out.is_empty() {
        return Err(bad("no tokens".into()));
    }
    Ok(out)
}

/// The tokenizer.json of `ranks` with `pattern` and the special tokens of `config`
/// (tokenizer_config.json: `added_tokens_decoder`, ids at or past the ranks).
pub fn tokenizer_json(ranks: &[Vec<u8>], pattern: &str, config: &Value) -> Result<String> {
    let map = bytes_to_unicode();
    let piece = |b: &[u8]| -> String { b.iter().map(|&x| map[x as usize]).collect() };
    let by_bytes: HashMap<&[u8], usize> =
        ranks.iter().enumerate().map(|(r, b)| (b.as_slice(), r)).collect();
    if by_bytes.len() != ranks.len() {
        return Err(bad("a token appears twice".into()));
    }
    // Merges: for each token in rank order, each split into two tokens, ordered by the parts'
    // ranks (transformers' `TikTokenConverter`).
    let mut merges: Vec<(usize, usize)> = Vec::new();
    for tok in ranks {
        let mut local: Vec<(usize, usize)> = (1..tok.len())
            .filter_map(|i| Some((*by_bytes.get(&tok[..i])?, *by_bytes.get(&tok[i..])?)))
            .collect();
        local.sort_unstable();
        merges.extend(local);
    }
    let vocab: serde_json::Map<String, Value> =
        ranks.iter().enumerate().map(|(r, b)| (piece(b), Value::from(r))).collect();
    let mut added = Vec::new();
    if let Some(dec) = config.get("added_tokens_decoder").and_then(Value::as_object) {
        let mut entries: Vec<(usize, &Value)> = dec
            .iter()
            .map(|(id, v)| {
                id.parse().map(|id| (id, v)).map_err(|_| {
                    Error::Invalid(format!("tokenizer_config.json: added token id {id:?}"))
                })
            })
            .collect::<Result<_>>()?;
        entries.sort_by_key(|e| e.0);
        for (id, v) in entries {
            let content = v.get("content").and_then(Value::as_str).ok_or_else(|| {
                Error::Invalid(format!("tokenizer_config.json: added token {id} has no content"))
            })?;
            if id < ranks.len() {
                return Err(Error::Invalid(format!(
                    "tokenizer_config.json: added token {content:?} has id {id}, a BPE rank"
                )));
            }
            added.push(json!({"id": id, "content": content, "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false,
                "special": v.get("special").and_then(Value::as_bool).unwrap_or(true)}));
        }
    }
    let merges: Vec<Value> =
        merges.iter().map(|&(l, r)| json!([piece(&ranks[l]), piece(&ranks[r])])).collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": true, "vocab": vocab, "merges": merges}
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_must_be_base64_in_order() {
        assert_eq!(
            read_ranks("YQ== 0\nYg== 1\nYWI= 2\n").unwrap(),
            [b"a".to_vec(), b"b".into(), b"ab".into()]
        );
        for bad in ["YQ== 1\n", "YQ== 0\n!!! 1\n", "YQ==\n", "", "YQ== 0\nYQ== 1\n"] {
            let r = read_ranks(bad).and_then(|r| tokenizer_json(&r, KIMI_PATTERN, &Value::Null));
            assert!(r.is_err(), "{bad:?}");
        }
    }
}
