//! Every `tokenizer.ggml.pre` name floe rebuilds splits text as llama.cpp does: on one
//! byte-level BPE vocabulary whose merges cross word, digit and script boundaries
//! (`tests/fixtures/pretok/vocab.gguf`), floe's ids for ten hard texts equal llama.cpp's own
//! (`llamacpp.json`, from `bench/scripts/llamacpp_pretokenizers.py`), name by name.

use std::path::Path;

use floe::formats::gguf::GgufFile;

#[test]
fn pre_tokenizers_split_like_llama_cpp() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("pretok");
    let g = GgufFile::open(&dir.join("vocab.gguf")).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llamacpp.json")).unwrap()).unwrap();
    let texts: Vec<&str> =
        want["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let names = want["ids"].as_object().unwrap();
    assert!(names.len() >= 20, "every name floe knows has llama.cpp's ids");
    for (name, ids) in names {
        let (tok, cfg) = floe::formats::gguf::tokenizer::tokenizer_json_with_pre(&g, name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        std::fs::write(tmp.path().join("tokenizer.json"), tok.to_string()).unwrap();
        std::fs::write(tmp.path().join("tokenizer_config.json"), cfg.to_string()).unwrap();
        let codec = floe::model::tokenizer::TextCodec::load(tmp.path()).unwrap();
        for (text, want) in texts.iter().zip(ids.as_array().unwrap()) {
            let want: Vec<u32> =
                want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let got = codec.encode(text).unwrap();
            if got != want {
                failures.push(format!(
                    "{name} on {text:?}:\n  floe      {got:?}\n  llama.cpp {want:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
    // A name floe does not know stays an error naming it.
    let err = floe::formats::gguf::tokenizer::tokenizer_json_with_pre(&g, "kimi-k2").unwrap_err();
    assert!(err.to_string().contains("kimi-k2"), "{err}");
}

/// A SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`, as Mixtral's GGUFs carry) is
/// rebuilt and tokenises ten hard texts (spaces, CJK, emoji, characters only reachable as
/// byte tokens) into llama.cpp's own ids (`tests/fixtures/pretok/spm.gguf`,
/// `llamacpp-spm.json`, from `bench/scripts/llamacpp_spm.py`), and decodes them back.
#[test]
fn spm_tokenizer_matches_llama_cpp() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("pretok");
    let g = GgufFile::open(&dir.join("spm.gguf")).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("llamacpp-spm.json")).unwrap())
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    floe::formats::gguf::tokenizer::write_tokenizer(&g, tmp.path()).unwrap();
    let codec = floe::model::tokenizer::TextCodec::load(tmp.path()).unwrap();
    let mut failures = Vec::new();
    let texts = want["texts"].as_array().unwrap();
    for (text, ids) in texts.iter().zip(want["ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap();
        let ids: Vec<u32> =
            ids.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = codec.encode(text).unwrap();
        if got != ids {
            failures.push(format!("{text:?}:\n  floe      {got:?}\n  llama.cpp {ids:?}"));
        }
        assert_eq!(codec.decode(&ids).unwrap(), text, "decode");
    }
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
}
