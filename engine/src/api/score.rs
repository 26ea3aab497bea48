//! Scoring a text: the model's next-token distribution after every prefix, and how far two
//! runs' distributions are apart (what `floe kld` reports for a lossy knob, as llama.cpp's
//! `llama-perplexity --kl-divergence` does for a quantisation).

use super::Engine;
use crate::error::{Error, RequestError, Result};
use crate::runtime::{KvTypes, Session, SessionOptions};

impl Engine {
    /// Log-probabilities of the next token after each prefix of `ids`: `ids.len()` rows of
    /// the vocabulary, row `i` the distribution of token `i + 1`. Runs `chunk` tokens per pass
    /// on the calling thread, in a session of its own (generations are not disturbed), with
    /// `experts` routed experts per token if given (as `GenerateOptions::experts_per_token`).
    pub fn next_token_logprobs(
        &self,
        ids: &[u32],
        chunk: usize,
        experts: Option<usize>,
    ) -> Result<Vec<f32>> {
        self.next_token_logprobs_kv(ids, chunk, experts, self.core.session_options.kv)
    }

    /// [`next_token_logprobs`](Self::next_token_logprobs) with the KV cache stored as `kv`.
    pub fn next_token_logprobs_kv(
        &self,
        ids: &[u32],
        chunk: usize,
        experts: Option<usize>,
        kv: KvTypes,
    ) -> Result<Vec<f32>> {
        let ctx = self.context();
        if ids.len() > ctx {
            return Err(RequestError::TooLong { tokens: ids.len(), ctx }.into());
        }
        if let Some(k) = experts {
            self.check_experts_per_token(k)?;
        }
        let model = &self.core.model;
        let vocab = model.spec.vocab;
        let options = SessionOptions { kv, ..self.core.session_options };
        let mut session = Session::new(options).with_experts_per_token(experts);
        let mut out = Vec::with_capacity(ids.len() * vocab);
        for part in ids.chunks(chunk.max(1)) {
            let logits = model.step(&mut session, part, true)?;
            for row in logits.chunks_exact(vocab) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
                let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                let norm = max + sum.ln();
                out.extend(row.iter().map(|&x| (x as f64 - norm) as f32));
            }
        }
        Ok(out)
    }

    /// The `n` tokens greedy decoding appends to `ids` (a prompt of `chunk`-token passes), with
    /// the KV cache stored as `kv`.
    pub fn greedy_tokens(
        &self,
        ids: &[u32],
        n: usize,
        chunk: usize,
        kv: KvTypes,
    ) -> Result<Vec<u32>> {
        let model = &self.core.model;
        if ids.is_empty() || ids.len() + n > self.context() {
            return Err(Error::Invalid(format!(
                "a prompt of {} tokens and {n} more do not fit the context of {}",
                ids.len(),
                self.context()
            )));
        }
        let options = SessionOptions { kv, ..self.core.session_options };
        let mut session = Session::new(options);
        let argmax = crate::runtime::sampling::argmax;
        let parts: Vec<&[u32]> = ids.chunks(chunk.max(1)).collect();
        let mut next = 0;
        for (i, part) in parts.iter().enumerate() {
            let logits = model.step(&mut session, part, false)?;
            if i + 1 == parts.len() {
                next = argmax(&logits[logits.len() - model.spec.vocab..]);
            }
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(next);
            let logits = model.step(&mut session, &[next], false)?;
            next = argmax(logits);
        }
        Ok(out)
    }

    /// Routed experts run per token and MoE layer so far, on average.
    pub fn mean_routed_experts(&self) -> f64 {
        self.core.model.mean_routed_experts()
    }

    /// Token-layer routings so far, and the routed experts they ran.
    pub fn routed_experts(&self) -> (u64, u64) {
        self.core.model.routed_experts()
    }
}

/// How a run's next-token distributions differ from a reference run's over the same tokens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Divergence {
    /// Positions compared.
    pub positions: usize,
    /// Mean KL(reference || run) in nats.
    pub mean_kl: f64,
    /// The 99th percentile of the per-position KL.
    pub p99_kl: f64,
    /// The largest per-position KL.
    pub max_kl: f64,
    /// Share of positions where both runs' likeliest token is the same.
    pub top1_agreement: f64,
    /// Perplexity of the text's next tokens under the reference (positions but the last).
    pub reference_perplexity: f64,
    /// The same under the run.
    pub perplexity: f64,
}

/// Compares `run` with `reference`, both log-probability rows of `vocab` as
/// [`Engine::next_token_logprobs`] gives for `ids`. Computed in f64.
pub fn divergence(reference: &[f32], run: &[f32], vocab: usize, ids: &[u32]) -> Result<Divergence> {
    if vocab == 0 || reference.len() != run.len() || reference.len() != ids.len() * vocab {
        return Err(Error::Invalid(format!(
            "divergence: {} and {} log-probabilities for {} tokens of a {vocab}-token vocabulary",
            reference.len(),
            run.len(),
            ids.len()
        )));
    }
    let argmax = |r: &[f32]| {
        r.iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0
    };
    let mut kls = Vec::with_capacity(ids.len());
    let (mut agree, mut nll_ref, mut nll_run) = (0usize, 0.0f64, 0.0f64);
    for (i, (p, q)) in reference.chunks_exact(vocab).zip(run.chunks_exact(vocab)).enumerate() {
        let kl: f64 = p
            .iter()
            .zip(q)
            .map(|(&lp, &lq)| {
                let lp = lp as f64;
                if lp == f64::NEG_INFINITY {
                    0.0
                } else {
                    lp.exp() * (lp - lq as f64)
                }
            })
            .sum();
        kls.push(kl.max(0.0));
        agree += usize::from(argmax(p) == argmax(q));
        if let Some(&next) = ids.get(i + 1) {
            nll_ref -= p[next as usize] as f64;
            nll_run -= q[next as usize] as f64;
        }
    }
    let n = kls.len();
    let scored = n.saturating_sub(1).max(1) as f64;
    let mean_kl = kls.iter().sum::<f64>() / n.max(1) as f64;
    let max_kl = kls.iter().copied().fold(0.0, f64::max);
    kls.sort_by(f64::total_cmp);
    let p99_kl =
        kls.get(((n as f64 * 0.99).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
    Ok(Divergence {
        positions: n,
        mean_kl,
        p99_kl,
        max_kl,
        top1_agreement: agree as f64 / n.max(1) as f64,
        reference_perplexity: (nll_ref / scored).exp(),
        perplexity: (nll_run / scored).exp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(x: &[f64]) -> Vec<f32> {
        let z: f64 = x.iter().map(|v| v.exp()).sum();
        x.iter().map(|v| (v - z.ln()) as f32).collect()
    }

    #[test]
    fn divergence_matches_a_hand_computed_case() {
        // Two positions over three tokens.
        let p = [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]];
        let q = [[0.5, 0.3, 0.2], [0.6, 0.2, 0.2]];
        let rows = |d: &[[f64; 3]; 2]| -> Vec<f32> {
            d.iter().flat_map(|r| log_softmax(&r.map(f64::ln))).collect()
        };
        let ids = [0u32, 2];
        let d = divergence(&rows(&p), &rows(&q), 3, &ids).unwrap();
        let kl = |a: &[f64; 3], b: &[f64; 3]| -> f64 {
            a.iter().zip(b).map(|(x, y)| x * (x / y).ln()).sum()
        };
        let (k0, k1) = (kl(&p[0], &q[0]), kl(&p[1], &q[1]));
        assert!((d.mean_kl - (k0 + k1) / 2.0).abs() < 1e-6, "{d:?}");
        assert!((d.max_kl - k0.max(k1)).abs() < 1e-6);
        assert!((d.p99_kl - k0.max(k1)).abs() < 1e-6);
        // Position 0 agrees (token 0 both), position 1 does not (2 against 0).
        assert_eq!(d.top1_agreement, 0.5);
        // Token 2 follows position 0: perplexities 1/0.1 and 1/0.2.
        assert!((d.reference_perplexity - 10.0).abs() < 1e-4 && (d.perplexity - 5.0).abs() < 1e-4);
        // A run against itself.
        let same = divergence(&rows(&p), &rows(&p), 3, &ids).unwrap();
        assert!(same.mean_kl.abs() < 1e-9 && same.top1_agreement == 1.0);
        assert!(divergence(&rows(&p), &rows(&q)[..3], 3, &ids).is_err());
    }
}
