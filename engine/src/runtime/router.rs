//! MoE routing rules: from one token's router logits to its experts and their weights, as the
//! spec's [`RouterKind`] says. No allocation: the caller's buffers are reused.

use floe_kernels::ops;

use crate::model::spec::RouterKind;

/// The expert index of a slot [`drop_weak`] emptied: no expert runs for it.
pub(crate) const SKIPPED: usize = usize::MAX;

/// Lossy knobs that run fewer experts per token than the model's router picks, reading fewer
/// bytes per token. The default runs the model exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExpertSelection {
    /// Experts per token, below the model's top-k (`None`: the model's own). The router picks
    /// this many and weighs them as it weighs its top-k (renormalised where the model
    /// renormalises).
    pub experts_per_token: Option<usize>,
    /// Skip a chosen expert whose routing weight is below this fraction of the token's largest
    /// (0: off), the kept weights renormalised where the model renormalises.
    pub min_weight_ratio: f32,
}

impl ExpertSelection {
    /// True when the model runs exactly.
    pub fn is_exact(&self) -> bool {
        self.experts_per_token.is_none() && self.min_weight_ratio <= 0.0
    }
}

/// Keeps the chosen experts whose weight is at least `ratio` times the largest, first and in
/// their order, and empties the other slots ([`SKIPPED`], weight 0). When the router
/// renormalises, the kept weights are scaled back to the chosen ones' sum, which is what
/// renormalising over the kept experts gives. Returns how many were kept.
pub(crate) fn drop_weak(chosen: &mut [(usize, f32)], ratio: f32, renormalize: bool) -> usize {
    let max = chosen.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
    retain(chosen, renormalize, |_, w| w >= ratio * max)
}

/// Keeps the first `n` chosen experts (the router's best `n`, in its rank order), as
/// [`drop_weak`] keeps: what a router asked for `n` experts chooses and how it weighs them.
pub(crate) fn keep_first(chosen: &mut [(usize, f32)], n: usize, renormalize: bool) -> usize {
    retain(chosen, renormalize, |i, _| i < n)
}

/// Keeps the chosen `(expert, weight)` pairs for which `keep(rank, weight)` holds, first and in
/// order; empties the rest; rescales the kept to the chosen sum when the router renormalises.
fn retain(
    chosen: &mut [(usize, f32)],
    renormalize: bool,
    keep: impl Fn(usize, f32) -> bool,
) -> usize {
    let before: f32 = chosen.iter().filter(|x| x.0 != SKIPPED).map(|x| x.1).sum();
    let mut kept = 0;
    for i in 0..chosen.len() {
        if chosen[i].0 != SKIPPED && keep(i, chosen[i].1) {
            chosen[kept] = chosen[i];
            kept += 1;
        }
    }
    chosen[kept..].iter_mut().for_each(|x| *x = (SKIPPED, 0.0));
    if renormalize && kept > 0 {
        let after: f32 = chosen[..kept].iter().map(|x| x.1).sum();
        if after != before {
            chosen[..kept].iter_mut().for_each(|x| x.1 *= before / after);
        }
    }
    kept
}

/// Reused buffers of [`route`].
#[derive(Debug, Default)]
pub(crate) struct RouteScratch {
    scores: Vec<f32>,
    biased: Vec<f32>,
    group_score: Vec<f32>,
    top_groups: Vec<(usize, f32)>,
}

/// Routes one token: `logits` (one per expert, overwritten) to the top `k` (expert, weight) pairs
/// in `out`, in rank order. `bias` is the per-expert selection bias (sigmoid routers).
pub(crate) fn route(
    kind: RouterKind,
    logits: &mut [f32],
    bias: Option<&[f32]>,
    k: usize,
    scratch: &mut RouteScratch,
    out: &mut Vec<(usize, f32)>,
) {
    match kind {
        RouterKind::SoftmaxTopK { renormalize } => {
            ops::softmax(logits);
            ops::top_k_into(logits, k, out);
            if renormalize {
                let sum: f32 = out.iter().map(|x| x.1).sum();
                out.iter_mut().for_each(|x| x.1 /= sum);
            }
        }
        RouterKind::TopKSoftmax => {
            ops::top_k_into(logits, k, out);
            let max = out.iter().map(|x| x.1).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            out.iter_mut().for_each(|x| {
                x.1 = (x.1 - max).exp();
                sum += x.1;
            });
            out.iter_mut().for_each(|x| x.1 /= sum);
        }
        RouterKind::SigmoidGrouped { groups, top_groups, renormalize, routed_scale } => {
            let e = logits.len();
            let s = &mut scratch.scores;
            s.clear();
            s.extend(logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())));
            let b = &mut scratch.biased;
            b.clear();
            b.extend(s.iter().enumerate().map(|(i, &v)| v + bias.map_or(0.0, |b| b[i])));
            // A group scores the sum of its two best biased scores; the best groups stay.
            let per = e / groups.max(1);
            scratch.group_score.clear();
            for g in 0..groups {
                ops::top_k_into(&b[g * per..(g + 1) * per], 2, out);
                scratch.group_score.push(out.iter().map(|x| x.1).sum());
            }
            ops::top_k_into(&scratch.group_score, top_groups, &mut scratch.top_groups);
            // Experts outside the chosen groups cannot be picked.
            for (g, chunk) in b.chunks_exact_mut(per).enumerate() {
                if !scratch.top_groups.iter().any(|&(kept, _)| kept == g) {
                    chunk.fill(f32::NEG_INFINITY);
                }
            }
            ops::top_k_into(b, k, out);
            // Weights are the unbiased scores of the chosen experts.
            out.iter_mut().for_each(|x| x.1 = s[x.0]);
            if renormalize {
                let sum: f32 = out.iter().map(|x| x.1).sum();
                out.iter_mut().for_each(|x| x.1 /= sum);
            }
            out.iter_mut().for_each(|x| x.1 *= routed_scale);
        }
        // A hashed router's experts come from its table (`route_hashed`); asked to route by
        // score, it ranks as the unhashed one does.
        RouterKind::SqrtSoftplus { renormalize, routed_scale, .. } => {
            let s = &mut scratch.scores;
            s.clear();
            s.extend(logits.iter().map(|&x| sqrt_softplus(x)));
            let b = &mut scratch.biased;
            b.clear();
            b.extend(s.iter().enumerate().map(|(i, &v)| v + bias.map_or(0.0, |b| b[i])));
            ops::top_k_into(b, k, out);
            out.iter_mut().for_each(|x| x.1 = s[x.0]);
            scale_weights(out, renormalize, routed_scale);
        }
    }
}

/// DeepSeek-V4's expert score.
fn sqrt_softplus(x: f32) -> f32 {
    ops::softplus(x).sqrt()
}

/// Renormalises the chosen weights (as DeepSeek-V4 does, against a zero sum) if asked, then
/// scales them.
fn scale_weights(out: &mut [(usize, f32)], renormalize: bool, scale: f32) {
    if renormalize {
        let sum: f32 = out.iter().map(|x| x.1).sum::<f32>() + 1e-20;
        out.iter_mut().for_each(|x| x.1 /= sum);
    }
    out.iter_mut().for_each(|x| x.1 *= scale);
}

/// Routes one token of a hash-routed layer: its experts are `table_row` (expert ids as f32, in
/// table order), weighted by their sqrt-softplus scores of `logits`. Returns false (and routes
/// nothing) if the row names an expert outside `logits`.
pub(crate) fn route_hashed(
    logits: &[f32],
    table_row: &[f32],
    renormalize: bool,
    routed_scale: f32,
    out: &mut Vec<(usize, f32)>,
) -> bool {
    out.clear();
    for &e in table_row {
        if !(e >= 0.0 && (e as usize) < logits.len() && e.fract() == 0.0) {
            out.clear();
            return false;
        }
        out.push((e as usize, sqrt_softplus(logits[e as usize])));
    }
    scale_weights(out, renormalize, routed_scale);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_weak_experts_renormalises_over_the_kept_ones() {
        // Softmax over 4 logits, top 3, renormalised: the model's weights.
        let logits = [2.0f32, 1.0, 0.5, -3.0];
        let (mut scratch, mut out) = (RouteScratch::default(), Vec::new());
        let kind = RouterKind::SoftmaxTopK { renormalize: true };
        route(kind, &mut logits.clone(), None, 3, &mut scratch, &mut out);
        // The third (e^0.5 / e^2 = 0.22 of the top) goes at a ratio of 0.3; the other two are
        // weighted as a top-2 router weighs them.
        let kept = drop_weak(&mut out, 0.3, true);
        assert_eq!(kept, 2);
        let (a, b) = (2.0f64.exp(), 1.0f64.exp());
        assert_eq!((out[0].0, out[1].0, out[2]), (0, 1, (SKIPPED, 0.0)));
        assert!((out[0].1 as f64 - a / (a + b)).abs() < 1e-6, "{out:?}");
        assert!((out[1].1 as f64 - b / (a + b)).abs() < 1e-6, "{out:?}");
        // Without renormalisation the kept weights stay the softmax's.
        let kind = RouterKind::SoftmaxTopK { renormalize: false };
        route(kind, &mut logits.clone(), None, 3, &mut scratch, &mut out);
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        assert_eq!(drop_weak(&mut out, 0.3, false), 2);
        assert!((out[1].1 as f64 - b / z).abs() < 1e-6, "{out:?}");
        // Ratio 0 keeps everything; the top one always stays, and a renormalising router gives
        // it all the weight.
        let kind = RouterKind::SoftmaxTopK { renormalize: true };
        route(kind, &mut logits.clone(), None, 3, &mut scratch, &mut out);
        let all = out.clone();
        assert_eq!(drop_weak(&mut out, 0.0, true), 3);
        assert_eq!(out, all);
        assert_eq!(drop_weak(&mut out, 1.0, true), 1);
        assert_eq!(out[0].0, 0);
        assert!((out[0].1 - 1.0).abs() < 1e-6, "{out:?}");
    }

    /// DeepSeek-V3's rule written plainly in f64: sigmoid scores, selection by score + bias
    /// within the best groups (a group's score: its two best biased scores), weights the
    /// unbiased scores, renormalised and scaled.
    fn reference(
        logits: &[f32],
        bias: &[f32],
        groups: usize,
        top_groups: usize,
        k: usize,
        scale: f64,
    ) -> Vec<(usize, f64)> {
        let s: Vec<f64> = logits.iter().map(|&x| 1.0 / (1.0 + (-(x as f64)).exp())).collect();
        let b: Vec<f64> = s.iter().zip(bias).map(|(a, b)| a + *b as f64).collect();
        let per = s.len() / groups;
        let mut gs: Vec<(usize, f64)> = (0..groups)
            .map(|g| {
                let mut v: Vec<f64> = b[g * per..(g + 1) * per].to_vec();
                v.sort_by(|x, y| y.total_cmp(x));
                (g, v[0] + v[1])
            })
            .collect();
        gs.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let kept: Vec<usize> = gs[..top_groups].iter().map(|g| g.0).collect();
        let mut cand: Vec<usize> = (0..s.len()).filter(|i| kept.contains(&(i / per))).collect();
        cand.sort_by(|x, y| b[*y].total_cmp(&b[*x]).then(x.cmp(y)));
        let chosen = &cand[..k];
        let sum: f64 = chosen.iter().map(|&i| s[i]).sum();
        chosen.iter().map(|&i| (i, s[i] / sum * scale)).collect()
    }

    #[test]
    fn sigmoid_grouped_routing_matches_a_plain_reference() {
        let mut state = 7u64;
        let mut rnd = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 8.0 - 4.0
        };
        let mut scratch = RouteScratch::default();
        let mut out = Vec::new();
        for _ in 0..50 {
            let (experts, groups, top_groups, k) = (64, 8, 3, 6);
            let logits: Vec<f32> = (0..experts).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..experts).map(|_| rnd() * 0.05).collect();
            let kind = RouterKind::SigmoidGrouped {
                groups,
                top_groups,
                renormalize: true,
                routed_scale: 2.5,
            };
            route(kind, &mut logits.clone(), Some(&bias), k, &mut scratch, &mut out);
            let want = reference(&logits, &bias, groups, top_groups, k, 2.5);
            assert_eq!(
                out.iter().map(|x| x.0).collect::<Vec<_>>(),
                want.iter().map(|x| x.0).collect::<Vec<_>>()
            );
            for (g, w) in out.iter().zip(&want) {
                assert!((g.1 as f64 - w.1).abs() < 1e-5, "{g:?} vs {w:?}");
            }
            // Every chosen expert is in one of the top_groups best groups.
            let distinct: std::collections::BTreeSet<usize> = out.iter().map(|x| x.0 / 8).collect();
            assert!(distinct.len() <= top_groups);
        }
    }

    #[test]
    fn softmax_top_k_renormalises_when_asked() {
        let mut scratch = RouteScratch::default();
        let mut out = Vec::new();
        let logits = [0.5f32, 2.0, -1.0, 1.0];
        route(
            RouterKind::SoftmaxTopK { renormalize: true },
            &mut logits.clone(),
            None,
            2,
            &mut scratch,
            &mut out,
        );
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        let (a, b) = ((2.0f64).exp(), (1.0f64).exp());
        assert!((out[0].1 as f64 - a / (a + b)).abs() < 1e-6);
        route(
            RouterKind::SoftmaxTopK { renormalize: false },
            &mut logits.clone(),
            None,
            2,
            &mut scratch,
            &mut out,
        );
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        assert!((out[0].1 as f64 - a / z).abs() < 1e-6);
    }
}
