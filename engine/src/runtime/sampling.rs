//! Choosing the next token: greedy, or temperature with top-k, top-p, from a seeded generator
//! (the same seed gives the same text), after the logit adjustments (repetition, presence and
//! frequency penalties, logit bias); and the log-probabilities of the adjusted distribution.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: all).
    pub top_p: f32,
    /// Divide positive (multiply negative) logits of tokens already seen (1: off), as HF does.
    pub repetition_penalty: f32,
    /// Subtracted from the logit of every token generated so far (0: off), as OpenAI's
    /// `presence_penalty`.
    pub presence_penalty: f32,
    /// Subtracted once per earlier occurrence in the generated tokens (0: off), as OpenAI's
    /// `frequency_penalty`.
    pub frequency_penalty: f32,
    /// Added to the logits of these tokens (OpenAI's `logit_bias`; -100 bans, 100 forces).
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0,
        }
    }
}

/// The log-probability of a chosen token and of the most likely ones, under the adjusted
/// logits (penalties and bias applied, before temperature and cuts).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// The chosen token.
    pub id: u32,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely tokens, best first (ties to the lower id).
    pub top: Vec<(u32, f32)>,
}

/// A sampler with its own random state.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
    /// Occurrences of each generated token, for the presence and frequency penalties.
    counts: HashMap<u32, u32>,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Self {
        let rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        Self { params, rng, counts: HashMap::new() }
    }

    /// Picks a token from `logits` (modified in place); `history` is the prompt and output so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.adjust(logits, history);
        self.choose(logits)
    }

    /// Records a generated token (what the presence and frequency penalties count).
    pub fn note(&mut self, token: u32) {
        let p = &self.params;
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            *self.counts.entry(token).or_insert(0) += 1;
        }
    }

    /// The log-probabilities of `chosen` and of the `top` most likely tokens under `logits`
    /// (already adjusted), computed in f64.
    pub fn logprobs(logits: &[f32], chosen: u32, top: usize) -> TokenLogprobs {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
        let log_z = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
        let lp = |l: f32| (l as f64 - log_z) as f32;
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
        if top > 0 {
            for (i, &l) in logits.iter().enumerate() {
                if best.len() == top && l <= best[top - 1].1 {
                    continue;
                }
                let at = best.partition_point(|b| b.1 >= l);
                best.insert(at, (i as u32, l));
                best.truncate(top);
            }
        }
        TokenLogprobs {
            id: chosen,
            logprob: logits.get(chosen as usize).map_or(f32::NEG_INFINITY, |&l| lp(l)),
            top: best.into_iter().map(|(i, l)| (i, lp(l))).collect(),
        }
    }

    /// Applies the repetition, presence and frequency penalties and the logit bias.
    pub fn adjust(&self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        for (&t, &n) in &self.counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
        }
        for &(t, b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
    }

    /// Picks a token from adjusted `logits`: greedy, or drawn after temperature and the cuts.
    pub fn choose(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        if p.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = p.temperature;
        // Best first, ties to the lower id: the order every cut below keeps.
        let better = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let scaled = logits.iter().enumerate().map(|(i, &l)| (i as u32, l / t));
        if p.top_k == 0 && p.top_p >= 1.0 {
            // The whole distribution: draw in id order, no sort at all.
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l / t));
            let total: f32 = logits.iter().map(|&l| (l / t - max).exp()).sum();
            let mut r = self.rng.gen::<f32>() * total;
            for (i, l) in scaled {
                let pr = (l - max).exp();
                if r < pr {
                    return i;
                }
                r -= pr;
            }
            return argmax(logits);
        }
        let mut cand: Vec<(u32, f32)> = scaled.collect();
        // Only the head is sorted: the top-k, or for top-p a head that grows until it holds
        // the wanted mass (a full sort of a 150k vocabulary every token costs milliseconds).
        let max = cand.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.1));
        let total: f32 =
            if p.top_k > 0 { 0.0 } else { cand.iter().map(|c| (c.1 - max).exp()).sum() };
        let mut head = if p.top_k > 0 { p.top_k.min(cand.len()) } else { 64.min(cand.len()) };
        loop {
            if head < cand.len() {
                cand.select_nth_unstable_by(head - 1, better);
            }
            cand[..head].sort_unstable_by(better);
            let mass: f32 = cand[..head].iter().map(|c| (c.1 - max).exp()).sum();
            if p.top_k > 0 || head == cand.len() || mass >= p.top_p * total {
                break;
            }
            head = (head * 4).min(cand.len());
        }
        cand.truncate(head);
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = if p.top_k > 0 { probs.iter().sum() } else { total };
        probs.iter_mut().for_each(|x| *x /= sum);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|&x| {
                acc += x;
                acc >= p.top_p
            });
            let keep = keep.map(|i| i + 1).unwrap_or(probs.len());
            probs.truncate(keep);
            cand.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.gen::<f32>() * total;
        for (c, pr) in cand.iter().zip(&probs) {
            if r < *pr {
                return c.0;
            }
            r -= pr;
        }
        cand[cand.len() - 1].0
    }
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_penalty_and_seeded_sampling() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
        let mut s = Sampler::new(SamplingParams { repetition_penalty: 2.0, ..Default::default() });
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[1]), 2, "3.0/2 < 2.0");
        let p = SamplingParams { temperature: 1.0, top_k: 2, seed: 7, ..Default::default() };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone());
            (0..50).map(|_| s.sample(&mut [1.0, 1.1, 0.9, -5.0], &[])).collect::<Vec<_>>()
        };
        let a = draw(&p);
        assert_eq!(a, draw(&p), "same seed, same tokens");
        assert!(a.iter().all(|&t| t == 0 || t == 1), "top-k 2 keeps tokens 0 and 1");
        let p1 = SamplingParams { temperature: 1.0, top_p: 0.01, seed: 3, ..Default::default() };
        assert!(draw(&p1).iter().all(|&t| t == 1), "tiny top-p keeps only the best");
    }

    /// Presence and frequency penalties count generated tokens only (as OpenAI's do); the
    /// logit bias is added last; log-probabilities are those of the adjusted logits, against
    /// an f64 log-softmax.
    #[test]
    fn penalties_bias_and_logprobs() {
        let p = SamplingParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            logit_bias: vec![(3, -100.0)],
            ..Default::default()
        };
        let mut s = Sampler::new(p);
        s.note(1);
        s.note(1);
        s.note(2);
        let mut l = [1.0f32, 2.0, 3.0, 9.0];
        s.adjust(&mut l, &[0, 1, 2]);
        assert_eq!(l, [1.0, 2.0 - 0.5 - 0.5, 3.0 - 0.5 - 0.25, 9.0 - 100.0]);
        assert_eq!(s.choose(&l), 2);
        let lp = Sampler::logprobs(&l, 2, 2);
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        let want = |i: usize| ((l[i] as f64).exp() / z).ln() as f32;
        assert!((lp.logprob - want(2)).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![2, 0]);
        assert!((lp.top[1].1 - want(0)).abs() < 1e-6);
        assert_eq!(Sampler::logprobs(&l, 0, 0).top, vec![]);
    }

    /// The head-only selection draws from the same distribution as a full sort: over a large
    /// vocabulary, each token's frequency matches its probability under top-k, top-p and
    /// neither, against an f64 reference.
    #[test]
    fn partial_selection_samples_the_reference_distribution() {
        let logits: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 1000) as f32 / 150.0).collect();
        for params in [
            SamplingParams { temperature: 0.7, top_k: 5, ..Default::default() },
            SamplingParams { temperature: 0.7, top_p: 0.5, ..Default::default() },
            SamplingParams { temperature: 1.3, top_k: 40, top_p: 0.9, ..Default::default() },
            SamplingParams { temperature: 0.5, ..Default::default() },
        ] {
            // Reference: full sort in f64, same cuts.
            let t = params.temperature as f64;
            let mut c: Vec<(usize, f64)> =
                logits.iter().enumerate().map(|(i, &l)| (i, l as f64 / t)).collect();
            c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if params.top_k > 0 {
                c.truncate(params.top_k);
            }
            let m = c[0].1;
            let z: f64 = c.iter().map(|x| (x.1 - m).exp()).sum();
            let mut probs: Vec<(usize, f64)> =
                c.iter().map(|x| (x.0, (x.1 - m).exp() / z)).collect();
            if params.top_p < 1.0 {
                let mut acc = 0.0;
                let keep = probs.iter().position(|x| {
                    acc += x.1;
                    acc >= params.top_p as f64
                });
                probs.truncate(keep.map(|i| i + 1).unwrap_or(probs.len()));
            }
            let z: f64 = probs.iter().map(|x| x.1).sum();
            let mut s = Sampler::new(SamplingParams { seed: 11, ..params.clone() });
            let n = 40_000;
            let mut counts = vec![0u32; logits.len()];
            for _ in 0..n {
                counts[s.sample(&mut logits.clone(), &[]) as usize] += 1;
            }
            let kept: std::collections::HashMap<usize, f64> =
                probs.iter().map(|x| (x.0, x.1 / z)).collect();
            for (tok, &k) in counts.iter().enumerate() {
                let want = kept.get(&tok).copied().unwrap_or(0.0);
                let got = k as f64 / n as f64;
                let tol = 4.0 * (want * (1.0 - want) / n as f64).sqrt() + 1e-3;
                assert!((got - want).abs() <= tol, "{params:?} token {tok}: {got} vs {want}");
            }
        }
    }
}
