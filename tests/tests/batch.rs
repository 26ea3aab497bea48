//! Batched decode: a pass over several sequences gives each sequence exactly the logits it gets
//! alone, bit for bit, on every architecture, as sequences join and leave between steps.

use floe::kernels::ops::KvDType;
use floe::runtime::session::BatchScratch;
use floe::runtime::{Model, Session, SessionOptions};
use floe_kernels::DType;

const SEQS: usize = 8;

fn options() -> SessionOptions {
    SessionOptions { ctx: Some(48), kv_dtype: KvDType::F16 }
}

/// Sequence `i`'s prompt (lengths 1 to 8, distinct tokens) and how many tokens it generates.
fn prompt(i: usize, vocab: usize) -> (Vec<u32>, usize) {
    let p = (0..=i).map(|j| ((i * 37 + j * 11 + 3) % vocab) as u32).collect();
    (p, 3 + (i * 5) % 9)
}

/// Greedy decode of sequence `i` alone: the logits before each generated token.
fn alone(m: &Model, i: usize) -> Vec<Vec<f32>> {
    let (p, gen) = prompt(i, m.spec.vocab);
    let mut s = Session::new(options());
    let mut logits = m.step(&mut s, &p, false).unwrap().to_vec();
    let mut all = vec![logits.clone()];
    for _ in 1..gen {
        let tok = floe_tests::argmax(&logits);
        logits = m.step(&mut s, &[tok], false).unwrap().to_vec();
        all.push(logits.clone());
    }
    all
}

/// The same sequences decoded together: sequence `i` joins at step `i / 2` (its prompt run
/// alone, as a server admits a request), then every step is one pass over all in flight; each
/// leaves when it has its tokens. Returns what each saw, and the most sequences in one pass.
fn batched(m: &Model) -> (Vec<Vec<Vec<f32>>>, usize) {
    let vocab = m.spec.vocab;
    let mut seen: Vec<Vec<Vec<f32>>> = vec![Vec::new(); SEQS];
    let mut live: Vec<(usize, Session, u32)> = Vec::new();
    let mut batch = BatchScratch::new();
    let mut widest = 0;
    for step in 0.. {
        for i in (0..SEQS).filter(|i| i / 2 == step) {
            let (p, _) = prompt(i, vocab);
            let mut s = Session::new(options());
            let logits = m.step(&mut s, &p, false).unwrap().to_vec();
            let tok = floe_tests::argmax(&logits);
            seen[i].push(logits);
            live.push((i, s, tok));
        }
        live.retain(|(i, _, _)| seen[*i].len() < prompt(*i, vocab).1);
        if live.is_empty() && step >= SEQS / 2 {
            break;
        }
        if live.is_empty() {
            continue;
        }
        widest = widest.max(live.len());
        let tokens: Vec<[u32; 1]> = live.iter().map(|l| [l.2]).collect();
        let toks: Vec<&[u32]> = tokens.iter().map(|t| &t[..]).collect();
        let mut sessions: Vec<&mut Session> = live.iter_mut().map(|l| &mut l.1).collect();
        let logits = m.pass(&mut batch, &mut sessions, &toks, false).unwrap().to_vec();
        assert_eq!(logits.len(), live.len() * vocab);
        for (l, row) in live.iter_mut().zip(logits.chunks_exact(vocab)) {
            seen[l.0].push(row.to_vec());
            l.2 = floe_tests::argmax(row);
        }
    }
    (seen, widest)
}

fn check(m: &Model, what: &str) {
    let (got, widest) = batched(m);
    assert!(widest >= 4, "{what}: at most {widest} sequences met in one pass");
    for (i, seq) in got.iter().enumerate() {
        let want = alone(m, i);
        assert_eq!(seq.len(), want.len(), "{what}: sequence {i}");
        for (step, (a, b)) in seq.iter().zip(&want).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same,
                "{what}: sequence {i} step {step} differs from alone by {}",
                floe_tests::max_abs_diff(a, b)
            );
        }
    }
}

#[test]
fn each_sequence_of_a_batch_gets_its_single_request_logits_bit_for_bit() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cases = [
        ("tiny", DType::Q4_0),
        ("tiny-qwen3.5", DType::Q4_0),
        ("tiny-glm4.5", DType::Q8_0),
        ("tiny-deepseek", DType::Q4_0),
        ("tiny-gpt-oss", DType::Mxfp4),
    ];
    for (preset, dtype) in cases {
        let packed = floe_tests::synth_preset(dir.path(), preset, dtype);
        for threads in [1, 2] {
            check(&floe_tests::load(&packed, threads), &format!("{preset} {dtype} x{threads}"));
        }
    }
    // Quantised dense weights too (their GEMM tiles round unlike their matvec).
    let mut shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    shape.dense_dtype = Some(DType::Q8_0);
    let path = dir.path().join("tiny-dense-q8");
    floe::formats::synth::synth(&shape, &path, DType::Q4_0, 5, &mut |_, _| {}).unwrap();
    let packed = floe::formats::packed::PackedModel::open(&path, false).unwrap();
    check(&floe_tests::load(&packed, 2), "tiny dense q8_0");
}

/// Sequences with nothing to run sit out a pass; a mismatch of sequences and token lists, and a
/// sequence past its context, are errors.
#[test]
fn empty_rows_sit_out_and_bad_passes_are_refused() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let packed = floe_tests::synth_preset(dir.path(), "tiny", DType::Q8_0);
    let m = floe_tests::load(&packed, 1);
    let vocab = m.spec.vocab;
    let (mut a, mut b) = (Session::new(options()), Session::new(options()));
    let mut batch = BatchScratch::new();
    let want = m.step(&mut Session::new(options()), &[5, 6], false).unwrap().to_vec();
    let got = m.pass(&mut batch, &mut [&mut a, &mut b], &[&[5, 6], &[]], false).unwrap();
    assert_eq!(got.len(), vocab);
    assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!((a.position(), b.position()), (2, 0));
    assert!(m.pass(&mut batch, &mut [&mut a], &[&[1], &[2]], false).is_err());
    let mut full = Session::new(SessionOptions { ctx: Some(2), ..options() });
    let e = m.pass(&mut batch, &mut [&mut a, &mut full], &[&[1], &[1, 2, 3]], false).unwrap_err();
    assert!(e.to_string().contains("context full"), "{e}");
}

/// A prompt run in two parts (a kept session's prefix, then the rest) stays within rounding of
/// the prompt run at once, with the same next token: the experts then see their tokens in other
/// groups, and a group of one runs the matvec kernels rather than the GEMM tiles, which round
/// differently (what prefix reuse costs; batching itself costs nothing, above).
#[test]
fn a_prompt_continued_from_a_kept_prefix_stays_within_rounding() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for (preset, dtype) in [("tiny", DType::Q4_0), ("tiny-qwen3.5", DType::Q4_0), ("tiny-deepseek", DType::Q8_0)] {
        let packed = floe_tests::synth_preset(dir.path(), preset, dtype);
        let m = floe_tests::load(&packed, 2);
        let prompt: Vec<u32> = (0..23).map(|i| (i * 7 + 1) % m.spec.vocab as u32).collect();
        let whole = m.step(&mut Session::new(options()), &prompt, false).unwrap().to_vec();
        for split in [1, 2, 5, 8, 13, 22] {
            let mut s = Session::new(options());
            m.step(&mut s, &prompt[..split], false).unwrap();
            let got = m.step(&mut s, &prompt[split..], false).unwrap();
            let d = floe_tests::max_abs_diff(got, &whole);
            assert!(d < 1e-4, "{preset}: split at {split} differs by {d}");
            assert_eq!(floe_tests::argmax(got), floe_tests::argmax(&whole), "{preset} {split}");
        }
    }
}
