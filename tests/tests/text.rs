//! Text: incremental detokenisation of byte-level tokenizers.

use floe::model::tokenizer::{IncrementalDecoder, TextCodec};

/// Pieces joined equal the whole output decoded at once, for a byte-level tokenizer whose
/// characters span several tokens (the golden's tokenizer when present, else synth's).
#[test]
fn incremental_pieces_join_to_the_full_decode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, floe_kernels::DType::Q8_0, 0, &mut |_, _| {})
        .unwrap();
    let c = TextCodec::load(&path).unwrap();
    let text = "naïve café, 東京 and emoji 🦀 — done.";
    let ids = c.encode(text).unwrap();
    assert!(ids.len() > text.chars().count(), "multi-byte characters span tokens");
    let mut d = IncrementalDecoder::new();
    let mut joined = String::new();
    for &id in &ids {
        let piece = d.push(&c, id).unwrap();
        assert!(!piece.contains('\u{fffd}'), "{piece:?}");
        joined.push_str(&piece);
    }
    joined.push_str(&d.flush(&c).unwrap());
    assert_eq!(joined, c.decode(&ids).unwrap());
    assert_eq!(joined, text);
}
