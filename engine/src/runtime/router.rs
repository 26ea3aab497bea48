//! MoE routing rules: from one token's router logits to its experts and their weights, as the
//! spec's [`RouterKind`] says. No allocation: the caller's buffers are reused.

use floe_kernels::ops;

use crate::model::spec::RouterKind;

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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
