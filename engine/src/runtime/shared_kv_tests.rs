//! The shared-KV attention mixer on its own against a plain f64 implementation of DeepSeek-V4's
//! attention (transformers' `DeepseekV4Attention` with its compressors and indexer, written
//! out position by position): the sliding-only, sparse (indexed) and heavily compressed layers
//! of the tiny preset, over lengths below and above the compression ratios and the indexer's
//! top-k, the prompt split into chunks whose boundaries fall inside and on windows.

use floe_kernels::DType;

use super::forward::Model;
use super::session::{LayerState, Scratch, Seg, SeqRows};
use super::shared_kv_state::SharedKvState;
use super::weights::{CompressorWeights, MixerWeights, SharedKvWeights};
use crate::formats::dense::DenseWeights;
use crate::formats::packed::PackedModel;
use crate::formats::synth::{synth, SynthShape};
use crate::model::spec::{MixerSpec, SharedKvSpec};
use crate::runtime::experts::ResidentExperts;

fn f(model: &Model, t: &crate::formats::dense::TensorRef) -> Vec<f64> {
    model.vec(t).unwrap().iter().map(|&x| x as f64).collect()
}

/// `y = W x` for a row-major `rows x cols` matrix.
fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    w.chunks_exact(x.len()).map(|r| r.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

fn rms(x: &[f64], w: Option<&[f64]>, eps: f64) -> Vec<f64> {
    let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64 + eps).sqrt();
    x.iter().enumerate().map(|(i, v)| v * inv * w.map_or(1.0, |w| w[i])).collect()
}

/// Interleaved RoPE of the trailing `2 * inv.len()` channels at `pos` (`sign` -1 undoes it).
fn rope(x: &mut [f64], pos: usize, inv: &[f64], factor: f64, sign: f64) {
    let at = x.len() - 2 * inv.len();
    for (i, &fr) in inv.iter().enumerate() {
        let (s, c) = (pos as f64 * fr).sin_cos();
        let (s, c) = (s * factor * sign, c * factor);
        let (a, b) = (x[at + 2 * i], x[at + 2 * i + 1]);
        x[at + 2 * i] = a * c - b * s;
        x[at + 2 * i + 1] = b * c + a * s;
    }
}

fn softmax_weighted(cands: &[(f64, f64)]) -> f64 {
    let max = cands.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
    let den: f64 = cands.iter().map(|c| (c.1 - max).exp()).sum();
    cands.iter().map(|c| c.0 * (c.1 - max).exp()).sum::<f64>() / den
}

/// Every closed window's entry of a compressor over inputs `xs` (`dim` channels; overlapping
/// windows pool the previous window's first halves with their own second halves).
#[allow(clippy::too_many_arguments)]
fn entries(
    model: &Model,
    c: &CompressorWeights,
    xs: &[Vec<f64>],
    ratio: usize,
    dim: usize,
    overlap: bool,
    (inv, factor, eps): (&[f64], f64, f64),
) -> Vec<Vec<f64>> {
    let (wkv, wg, ape, norm) =
        (f(model, &c.kv), f(model, &c.gate), f(model, &c.ape), f(model, &c.norm));
    let width = wkv.len() / xs[0].len();
    let kv: Vec<Vec<f64>> = xs.iter().map(|x| matvec(&wkv, x)).collect();
    let gate: Vec<Vec<f64>> = xs
        .iter()
        .enumerate()
        .map(|(p, x)| {
            let g = matvec(&wg, x);
            g.iter().zip(&ape[(p % ratio) * width..]).map(|(a, b)| a + b).collect()
        })
        .collect();
    (0..xs.len() / ratio)
        .map(|w| {
            let pooled: Vec<f64> = (0..dim)
                .map(|ch| {
                    let mut cands = Vec::new();
                    if overlap && w > 0 {
                        for p in (w - 1) * ratio..w * ratio {
                            cands.push((kv[p][ch], gate[p][ch]));
                        }
                    }
                    let off = if overlap { dim } else { 0 };
                    for p in w * ratio..(w + 1) * ratio {
                        cands.push((kv[p][off + ch], gate[p][off + ch]));
                    }
                    softmax_weighted(&cands)
                })
                .collect();
            let mut e = rms(&pooled, Some(&norm), eps);
            rope(&mut e, w * ratio, inv, factor, 1.0);
            e
        })
        .collect()
}

/// The layer's output at every position of `xs` (its normed inputs), in f64.
fn reference(
    model: &Model,
    a: &SharedKvSpec,
    w: &SharedKvWeights,
    xs: &[Vec<f64>],
) -> Vec<Vec<f64>> {
    let eps = model.spec.rms_eps as f64;
    let inv: Vec<f64> = a.rope.inv_freq().iter().map(|&x| x as f64).collect();
    let factor = a.rope.factor() as f64;
    let (heads, hd) = (a.heads, a.head_dim);
    let (qa, qan, qb) = (f(model, &w.q_a), f(model, &w.q_a_norm), f(model, &w.q_b));
    let (wkv, kvn, sinks) = (f(model, &w.kv), f(model, &w.kv_norm), f(model, &w.sinks));
    let (oa, ob) = (f(model, &w.o_a), f(model, &w.o_b));
    let qr: Vec<Vec<f64>> = xs.iter().map(|x| rms(&matvec(&qa, x), Some(&qan), eps)).collect();
    let rows: Vec<Vec<f64>> = xs
        .iter()
        .enumerate()
        .map(|(p, x)| {
            let mut r = rms(&matvec(&wkv, x), Some(&kvn), eps);
            rope(&mut r, p, &inv, factor, 1.0);
            r
        })
        .collect();
    let cmp = a.compressor.map(|c| {
        let ents = entries(
            model,
            w.compressor.as_ref().unwrap(),
            xs,
            c.ratio,
            hd,
            c.overlap,
            (&inv, factor, eps),
        );
        (c, ents)
    });
    let index = a.compressor.and_then(|c| c.indexer.map(|ix| (c, ix))).map(|(c, ix)| {
        let iw = w.indexer.as_ref().unwrap();
        let keys =
            entries(model, &iw.compressor, xs, c.ratio, ix.head_dim, true, (&inv, factor, eps));
        (ix, keys, f(model, &iw.q), f(model, &iw.weights))
    });
    let group_in = heads * hd / a.o_groups;
    (0..xs.len())
        .map(|t| {
            // The entries this query reads.
            let picks: Vec<usize> = match &cmp {
                None => Vec::new(),
                Some((c, _)) => {
                    let visible = (t + 1) / c.ratio;
                    match &index {
                        None => (0..visible).collect(),
                        Some((ix, keys, iq, iwts)) => {
                            let d = ix.head_dim;
                            let mut q = matvec(iq, &qr[t]);
                            q.chunks_exact_mut(d).for_each(|h| rope(h, t, &inv, factor, 1.0));
                            let wts = matvec(iwts, &xs[t]);
                            let mut scored: Vec<(usize, f64)> = (0..visible)
                                .map(|e| {
                                    let s: f64 = q
                                        .chunks_exact(d)
                                        .zip(&wts)
                                        .map(|(qh, wh)| {
                                            let dot: f64 =
                                                qh.iter().zip(&keys[e]).map(|(a, b)| a * b).sum();
                                            wh / (ix.heads as f64).sqrt() * dot.max(0.0)
                                                / (d as f64).sqrt()
                                        })
                                        .sum();
                                    (e, s)
                                })
                                .collect();
                            scored.sort_by(|x, y| y.1.total_cmp(&x.1));
                            scored.iter().take(ix.topk).map(|x| x.0).collect()
                        }
                    }
                }
            };
            let lo = (t + 1).saturating_sub(a.window);
            let mut keys: Vec<&Vec<f64>> = rows[lo..=t].iter().collect();
            if let Some((_, ents)) = &cmp {
                keys.extend(picks.iter().map(|&e| &ents[e]));
            }
            let q_all = matvec(&qb, &qr[t]);
            let mut out = vec![0.0; heads * hd];
            for h in 0..heads {
                let mut q = rms(&q_all[h * hd..(h + 1) * hd], None, eps);
                rope(&mut q, t, &inv, factor, 1.0);
                let scale = a.scale as f64;
                let logits: Vec<f64> = keys
                    .iter()
                    .map(|k| k.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>() * scale)
                    .collect();
                let max = logits.iter().copied().fold(sinks[h], f64::max);
                let den =
                    (sinks[h] - max).exp() + logits.iter().map(|l| (l - max).exp()).sum::<f64>();
                let o = &mut out[h * hd..(h + 1) * hd];
                for (l, k) in logits.iter().zip(&keys) {
                    let p = (l - max).exp() / den;
                    o.iter_mut().zip(k.iter()).for_each(|(o, v)| *o += p * v);
                }
                rope(o, t, &inv, factor, -1.0);
            }
            let rank = a.o_lora_rank;
            let mut grouped = vec![0.0; a.o_groups * rank];
            for g in 0..a.o_groups {
                let wg = &oa[g * rank * group_in..(g + 1) * rank * group_in];
                let y = matvec(wg, &out[g * group_in..(g + 1) * group_in]);
                grouped[g * rank..(g + 1) * rank].copy_from_slice(&y);
            }
            matvec(&ob, &grouped)
        })
        .collect()
}

#[test]
fn shared_kv_attention_matches_a_plain_f64_reference() {
    let dir = tempfile::tempdir().unwrap();
    let mut shape = SynthShape::preset("tiny-deepseek-v4").unwrap();
    shape.dense_dtype = Some(DType::F32);
    let path = dir.path().join("m");
    synth(&shape, &path, DType::F32, 5, &mut |_, _| {}).unwrap();
    let packed = PackedModel::open(&path, true).unwrap();
    let dense = DenseWeights::load(&packed).unwrap();
    let experts = ResidentExperts::load(&packed).unwrap();
    let model = Model::new(packed.manifest.config.clone(), dense, Box::new(experts), 1).unwrap();
    let h = model.spec.hidden;
    // Inputs: deterministic noise, RMS about 1 (as a normed layer input is).
    let n = 29;
    let mut state = 3u64;
    let xs: Vec<Vec<f64>> = (0..n)
        .map(|_| {
            (0..h)
                .map(|_| {
                    state =
                        state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((state >> 33) as f64 / (1u64 << 31) as f64) * 3.4 - 1.7
                })
                .collect()
        })
        .collect();
    let mut seen = [false; 3];
    for l in 0..model.spec.layers.len() {
        let MixerSpec::SharedKv(a) = model.spec.layers[l].mixer else { panic!("layer {l}") };
        let MixerWeights::SharedKv(w) = &model.weights.layers[l].mixer else { panic!("layer {l}") };
        let kind = match a.compressor {
            None => 0,
            Some(c) if c.indexer.is_some() => 1,
            Some(_) => 2,
        };
        seen[kind] = true;
        let want = reference(&model, &a, w, &xs);
        let mut st = LayerState::SharedKv(SharedKvState::new(&a, 64));
        let mut sc = Scratch::default();
        let mut pos = 0;
        // Chunks ending inside and on windows of 4 and 8, decode steps among them.
        for len in [5, 1, 7, 3, 1, 12] {
            sc.hn = xs[pos..pos + len].iter().flatten().map(|&v| v as f32).collect();
            let at = SeqRows { pos, start: 0, len, experts: None, min_weight: None };
            let mut segs = [Seg { state: &mut st, at }];
            model.shared_kv(l, &a, w, &mut segs, &mut sc, len).unwrap();
            for t in 0..len {
                let got = &sc.out[t * h..(t + 1) * h];
                let r = &want[pos + t];
                let scale = r.iter().map(|v| v.abs()).fold(1e-3, f64::max);
                for (g, r) in got.iter().zip(r) {
                    let err = (*g as f64 - r).abs() / scale;
                    assert!(err < 1e-4, "layer {l} position {}: {g} vs {r}", pos + t);
                }
            }
            pos += len;
        }
        assert_eq!(pos, n);
    }
    assert_eq!(seen, [true; 3], "the preset has every kind of layer");
}
