//! Batched decode: a pass over several sequences gives each sequence exactly the logits it gets
//! alone, bit for bit, on every architecture, as sequences join and leave between steps.

use floe::kernels::ops::KvDType;
use floe::runtime::{BatchScratch, Model, PassKind, Session, SessionOptions};
use floe_kernels::DType;

const SEQS: usize = 8;

fn options() -> SessionOptions {
    with_kv(floe::KvTypes::all(KvDType::F16))
}

fn with_kv(kv: floe::KvTypes) -> SessionOptions {
    SessionOptions { ctx: Some(48), kv }
}

/// Sequence `i`'s prompt (lengths 1 to 8, distinct tokens) and how many tokens it generates.
fn prompt(i: usize, vocab: usize) -> (Vec<u32>, usize) {
    let p = (0..=i).map(|j| ((i * 37 + j * 11 + 3) % vocab) as u32).collect();
    (p, 3 + (i * 5) % 9)
}

/// Greedy decode of sequence `i` alone: the logits before each generated token.
fn alone(m: &Model, i: usize, o: SessionOptions) -> Vec<Vec<f32>> {
    let (p, gen) = prompt(i, m.spec.vocab);
    let mut s = Session::new(o);
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
fn batched(m: &Model, o: SessionOptions) -> (Vec<Vec<Vec<f32>>>, usize) {
    let vocab = m.spec.vocab;
    let mut seen: Vec<Vec<Vec<f32>>> = vec![Vec::new(); SEQS];
    let mut live: Vec<(usize, Session, u32)> = Vec::new();
    let mut batch = BatchScratch::new();
    let mut widest = 0;
    for step in 0.. {
        for i in (0..SEQS).filter(|i| i / 2 == step) {
            let (p, _) = prompt(i, vocab);
            let mut s = Session::new(o);
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
        let logits =
            m.pass(&mut batch, &mut sessions, &toks, PassKind::Decode, false).unwrap().to_vec();
        assert_eq!(logits.len(), live.len() * vocab);
        for (l, row) in live.iter_mut().zip(logits.chunks_exact(vocab)) {
            seen[l.0].push(row.to_vec());
            l.2 = floe_tests::argmax(row);
        }
    }
    (seen, widest)
}

fn check(m: &Model, what: &str) {
    check_with(m, what, options())
}

fn check_with(m: &Model, what: &str, o: SessionOptions) {
    let (got, widest) = batched(m, o);
    assert!(widest >= 4, "{what}: at most {widest} sequences met in one pass");
    for (i, seq) in got.iter().enumerate() {
        let want = alone(m, i, o);
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
        ("tiny-qwen3-next", DType::Q4_0),
        ("tiny-minimax-m2", DType::Q8_0),
        ("tiny-gemma4", DType::Q4_0),
        ("tiny-glm5", DType::Q8_0),
        ("tiny-deepseek-v4", DType::Q4_0),
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

/// Every KV cache type, keys and values apart, and MLA's parts apart: batched = alone bit for
/// bit (each row is stored and read the same way whichever pass it is in).
#[test]
fn batches_match_alone_with_every_kv_type() {
    use floe::KvTypes;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    for preset in ["tiny", "tiny-deepseek"] {
        let packed = floe_tests::synth_preset(dir.path(), preset, DType::Q8_0);
        let m = floe_tests::load(&packed, 2);
        let mut settings: Vec<KvTypes> = KvDType::ALL.into_iter().map(KvTypes::all).collect();
        settings.push(KvTypes::split(KvDType::Q8_0, KvDType::Tq3));
        if preset == "tiny-deepseek" {
            settings.push(KvTypes {
                latent: Some(KvDType::Tq4),
                rope: Some(KvDType::F16),
                ..KvTypes::all(KvDType::F16)
            });
        }
        for kv in settings {
            check_with(&m, &format!("{preset} {}", kv.describe()), with_kv(kv));
        }
    }
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
    let got = m
        .pass(&mut batch, &mut [&mut a, &mut b], &[&[5, 6], &[]], PassKind::Prefill, false)
        .unwrap();
    assert_eq!(got.len(), vocab);
    assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!((a.position(), b.position()), (2, 0));
    assert!(m.pass(&mut batch, &mut [&mut a], &[&[1], &[2]], PassKind::Decode, false).is_err());
    let mut full = Session::new(SessionOptions { ctx: Some(2), ..options() });
    let e = m
        .pass(&mut batch, &mut [&mut a, &mut full], &[&[1], &[1, 2, 3]], PassKind::Prefill, false)
        .unwrap_err();
    assert!(e.to_string().contains("context full"), "{e}");
}

/// Prompt chunks (prefill passes) give every row the result it gets in any other company: a
/// prompt run in two parts (a kept session's prefix, then the rest) equals the prompt run at
/// once, and prompts batched into one prefill pass equal each run alone, bit for bit, on every
/// architecture. So prefix reuse and batched admission change nothing.
#[test]
fn prefill_rows_do_not_depend_on_chunking_or_company() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cases = [
        ("tiny", DType::Q4_0),
        ("tiny-qwen3.5", DType::Q4_0),
        ("tiny-glm4.5", DType::Q8_0),
        ("tiny-deepseek", DType::Q8_0),
        ("tiny-gpt-oss", DType::Mxfp4),
        ("tiny-qwen3-next", DType::Q4_0),
        ("tiny-minimax-m2", DType::Q8_0),
        ("tiny-gemma4", DType::Q4_0),
        ("tiny-glm5", DType::Q8_0),
        ("tiny-deepseek-v4", DType::Q4_0),
    ];
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    for (preset, dtype) in cases {
        let packed = floe_tests::synth_preset(dir.path(), preset, dtype);
        let m = floe_tests::load(&packed, 2);
        let vocab = m.spec.vocab;
        let mut batch = BatchScratch::new();
        let mut prefill = |seqs: &mut [&mut Session], toks: &[&[u32]]| {
            m.pass(&mut batch, seqs, toks, PassKind::Prefill, false).unwrap().to_vec()
        };
        let prompt: Vec<u32> = (0..23).map(|i| (i * 7 + 1) % vocab as u32).collect();
        let whole = prefill(&mut [&mut Session::new(options())], &[&prompt]);
        for split in [1, 2, 5, 8, 13, 22] {
            let mut s = Session::new(options());
            prefill(&mut [&mut s], &[&prompt[..split]]);
            let got = prefill(&mut [&mut s], &[&prompt[split..]]);
            assert!(
                same(&got, &whole),
                "{preset}: split at {split} differs by {}",
                floe_tests::max_abs_diff(&got, &whole)
            );
        }
        // Three prompts in one pass.
        let others: Vec<Vec<u32>> = [4usize, 1, 9]
            .iter()
            .map(|&n| (0..n as u32).map(|i| (i * 13 + 5) % vocab as u32).collect())
            .collect();
        let mut ss: Vec<Session> = (0..4).map(|_| Session::new(options())).collect();
        let mut refs: Vec<&mut Session> = ss.iter_mut().collect();
        let toks = [&prompt[..], &others[0], &others[1], &others[2]];
        let together = prefill(&mut refs, &toks);
        for (i, t) in toks.iter().enumerate() {
            let alone = prefill(&mut [&mut Session::new(options())], &[t]);
            assert!(same(&together[i * vocab..(i + 1) * vocab], &alone), "{preset}: prompt {i}");
        }
    }
}
