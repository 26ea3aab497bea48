//! Every `tokenizer.ggml.pre` name floe rebuilds splits text as llama.cpp does: on one
//! byte-level BPE vocabulary whose merges cross word, digit and script boundaries
//! (`tests/fixtures/pretok/vocab.gguf`), floe's ids for ten hard texts equal llama.cpp's own
//! (`llamacpp.json`, from `bench/scripts/llamacpp_pretokenizers.py`), name by name. `kimi-k2`
//! follows Kimi's own tokenizer where llama.cpp's hand-written splitter departs from it.

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
            // llama.cpp splits `kimi-k2` text with a hand-written function that keeps a word's
            // upper- and lower-case runs together ("HTTPServer"); Kimi's own regex (and floe)
            // splits them: there floe must differ from llama.cpp, and equal Kimi's tokenizer
            // (`kimi_k2_splits_like_kimis_own_tokenizer`).
            if name == "kimi-k2" && text.contains("HTTPServer") {
                if got == want {
                    failures.push(format!("kimi-k2 on {text:?}: llama.cpp's case runs expected"));
                }
                continue;
            }
            if got != want {
                failures.push(format!(
                    "{name} on {text:?}:\n  floe      {got:?}\n  llama.cpp {want:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} differ:\n{}", failures.len(), failures.join("\n"));
    // A name floe does not know stays an error naming it.
    let err = floe::formats::gguf::tokenizer::tokenizer_json_with_pre(&g, "kimi-k3").unwrap_err();
    assert!(err.to_string().contains("kimi-k3"), "{err}");
}

/// `kimi-k2` as floe rebuilds it from a GGUF splits the Kimi-K2.5 golden's strings (Han runs,
/// case runs, digit groups, contractions, scripts, whitespace runs) into the pieces Kimi's own
/// tokenizer makes (`../shared/golden/kimi_k25/tokenizer_golden.json`, transformers), and, put in
/// front of that tokenizer's vocabulary, gives its ids.
#[test]
fn kimi_k2_splits_like_kimis_own_tokenizer() {
    use tokenizers::PreTokenizer;
    let Some(golden) = floe_tests::golden_dir("kimi_k25") else {
        panic!("the kimi_k25 golden is missing")
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("pretok");
    let g = GgufFile::open(&dir.join("vocab.gguf")).unwrap();
    let (ours, _) = floe::formats::gguf::tokenizer::tokenizer_json_with_pre(&g, "kimi-k2").unwrap();
    let pre: tokenizers::PreTokenizerWrapper =
        serde_json::from_value(ours["pre_tokenizer"].clone()).unwrap();
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let mut kimi = read(&golden.join("tokenizer.json"));
    kimi["pre_tokenizer"] = ours["pre_tokenizer"].clone();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), kimi.to_string()).unwrap();
    std::fs::copy(golden.join("tokenizer_config.json"), tmp.path().join("tokenizer_config.json"))
        .unwrap();
    let codec = floe::model::tokenizer::TextCodec::load(tmp.path()).unwrap();
    let want = read(&golden.join("tokenizer_golden.json"));
    let cases = want["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "{}", cases.len());
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
    };
    for case in cases {
        let text = case["text"].as_str().unwrap();
        if let Some(pieces) = case.get("pre_tokens_bytelevel") {
            let mut s = tokenizers::PreTokenizedString::from(text);
            pre.pre_tokenize(&mut s).unwrap();
            let got: Vec<String> = s
                .get_splits(tokenizers::OffsetReferential::Original, tokenizers::OffsetType::Byte)
                .into_iter()
                .map(|(piece, _, _)| piece.to_string())
                .collect();
            assert_eq!(got, strings(pieces), "{text:?}");
        }
        let ids: Vec<u32> =
            case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(codec.encode(text).unwrap(), ids, "{text:?}");
    }
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
