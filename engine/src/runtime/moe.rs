//! The routed MoE block in four steps: routing (the router's logits and the spec's rule, per
//! token), prefetch (decode: the next MoE layer's experts, predicted, read while this layer
//! computes), dispatch (each chosen expert once over the tokens routed to it, in whatever order
//! the expert source hands them over) and combine (each token's outputs weighed in slot order,
//! plus the shared experts). Reads `hn` (and Gemma 4's router the residual), writes `out`.

use floe_kernels::{matmul_input, Input, InputBuffers, TokenKernels};

use super::ffn::{glu_into, ExpertBuffers, ExpertExtras, GluScratch};
use super::forward::Model;
use super::session::{sized, Scratch, SeqRows};
use super::weights::MoeWeights;
use crate::error::{Error, Result};
use crate::model::spec::{MoeSpec, RouterKind};
use crate::runtime::router::SKIPPED;

/// The MoE block's buffers.
#[derive(Debug, Default)]
pub(crate) struct MoeScratch {
    /// Router logits, `experts` per token.
    router: Vec<f32>,
    /// Gemma 4: the router's own input (the residual, normed and scaled), and its quantised
    /// forms.
    router_in: Vec<f32>,
    in_router: InputBuffers,
    /// One token's chosen (expert, weight) pairs, and the router rule's buffers.
    top: Vec<(usize, f32)>,
    route: super::router::RouteScratch,
    /// The gate prefetch's buffers.
    gate_ahead: GateAhead,
    /// Chosen (expert, weight) per token, `top_k` per token.
    pub chosen: Vec<(usize, f32)>,
    /// Per expert: the (token, slot) pairs routed to it.
    users: ExpertUsers,
    /// Per expert, its largest weight in the pass; the experts wanted, with that weight.
    weight: Vec<f32>,
    wanted: Vec<(usize, f32)>,
    /// Each expert's gathered tokens (prefill), its outputs, and each (token, slot)'s output.
    gathered: Vec<f32>,
    y: Vec<f32>,
    per_slot: Vec<f32>,
    /// The shared experts' output and gate.
    shared: Vec<f32>,
    shared_gate: Vec<f32>,
    /// Quantised forms of each expert's input in a batch (its gathered tokens, its activations).
    in_batch: Vec<InputBuffers>,
}

impl MoeScratch {
    /// Sets the kernels the block's own inputs run their tokens through.
    pub fn set_kernels(&mut self, kernels: TokenKernels) {
        self.in_router.set_kernels(kernels);
        self.in_batch.iter_mut().for_each(|b| b.set_kernels(kernels));
    }
}

/// The gate prefetch's buffers (the next layer's router applied ahead): sized on the first
/// decode step, then reused.
#[derive(Debug, Default)]
struct GateAhead {
    /// Per expert: the sequences predicted to choose it, and their summed weights.
    votes: Vec<(u32, f32)>,
    logits: Vec<f32>,
    top: Vec<(usize, f32)>,
    route: super::router::RouteScratch,
    input: InputBuffers,
}

/// The (token, slot) pairs routed to each expert, grouped by expert in one flat list (a
/// counting sort: no per-expert vectors to grow when an expert is first chosen).
#[derive(Debug, Default)]
pub(crate) struct ExpertUsers {
    start: Vec<usize>,
    list: Vec<(usize, usize)>,
}

impl ExpertUsers {
    /// Groups `chosen` (`k` (expert, weight) pairs per token) by expert, in token order.
    /// Skipped slots belong to no expert.
    pub fn group(&mut self, chosen: &[(usize, f32)], k: usize, experts: usize) {
        self.start.clear();
        self.start.resize(experts + 1, 0);
        for &(e, _) in chosen.iter().filter(|x| x.0 != SKIPPED) {
            self.start[e + 1] += 1;
        }
        for e in 0..experts {
            self.start[e + 1] += self.start[e];
        }
        self.list.clear();
        self.list.resize(self.start[experts], (0, 0));
        // `start[e]` walks through expert e's range as it fills, then is restored below.
        for (i, &(e, _)) in chosen.iter().enumerate().filter(|x| x.1 .0 != SKIPPED) {
            self.list[self.start[e]] = (i / k, i % k);
            self.start[e] += 1;
        }
        for e in (1..=experts).rev() {
            self.start[e] = self.start[e - 1];
        }
        self.start[0] = 0;
    }

    /// Expert `e`'s (token, slot) pairs.
    pub fn of(&self, e: usize) -> &[(usize, usize)] {
        &self.list[self.start[e]..self.start[e + 1]]
    }
}

/// Applies the weak-expert knob (`ratio`, 0: off) to one token's chosen experts; returns how
/// many stay (first in `chosen`).
fn drop_weak(m: &MoeSpec, chosen: &mut [(usize, f32)], ratio: f32) -> usize {
    if ratio > 0.0 {
        super::router::drop_weak(chosen, ratio, m.router.renormalizes())
    } else {
        chosen.len()
    }
}

impl Model {
    /// The MoE block of layer `l` over the pass's rows (sequence `i` owning `rows[i]`); `decode`
    /// when each row is its own sequence's next token.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn moe(
        &self,
        l: usize,
        m: &MoeSpec,
        w: &MoeWeights,
        sc: &mut Scratch,
        rows: &[SeqRows],
        step: u64,
        decode: bool,
    ) -> Result<()> {
        let n = rows.iter().map(|r| r.start + r.len).max().unwrap_or(0);
        let h = self.spec.hidden;
        // `hn` quantised once for the router, every expert in decode and the shared experts.
        let mut hn_input = sc.in_hn.input(&sc.hn, n, self.activations);
        let mo = &mut sc.moe;
        self.route_tokens(l, m, w, &mut hn_input, (&sc.x, &sc.tokens), rows, step, mo)?;
        if decode {
            self.prefetch_next(l, m.top_k, (&sc.hn, &sc.tokens), step, &mut mo.gate_ahead)?;
        }
        self.dispatch(l, m, w, &mut hn_input, &sc.hn, step, (mo, &mut sc.glu, sc.kernels))?;
        let out = sized(&mut sc.out, n * h);
        combine(&mo.chosen, &mo.per_slot, m.top_k, h, out);
        match &w.shared {
            Some(_) => {
                self.shared_experts(m, w, &mut hn_input, mo, &mut sc.glu, &mut sc.in_other, out)
            }
            None => Ok(()),
        }
    }

    /// Routing: the router's logits for every row (Gemma 4's from its own input), then per
    /// token the spec's rule, the weak-expert knob and the sequence's expert cap; the chosen
    /// experts land in `mo.chosen`, `top_k` slots per token.
    #[allow(clippy::too_many_arguments)]
    fn route_tokens(
        &self,
        l: usize,
        m: &MoeSpec,
        w: &MoeWeights,
        hn_input: &mut Input,
        (x, tokens): (&[f32], &[u32]),
        rows: &[SeqRows],
        step: u64,
        mo: &mut MoeScratch,
    ) -> Result<()> {
        let n = hn_input.tokens();
        let (h, k, experts) = (self.spec.hidden, m.top_k, m.experts);
        let pool = self.pool.as_ref();
        let logits = sized(&mut mo.router, n * experts);
        match &w.router_scales {
            // Gemma 4: the router reads the residual, RMS-normalised without weight, scaled
            // per channel and by 1/sqrt(hidden).
            Some([scale, _]) => {
                let (scale, eps) = (self.vec(scale)?, self.spec.rms_eps);
                let c = 1.0 / (h as f32).sqrt();
                let ri = sized(&mut mo.router_in, n * h);
                for (xr, rr) in x.chunks_exact(h).zip(ri.chunks_exact_mut(h)) {
                    let inv = 1.0 / (xr.iter().map(|v| v * v).sum::<f32>() / h as f32 + eps).sqrt();
                    rr.iter_mut().zip(xr).zip(scale).for_each(|((r, &x), &s)| *r = x * inv * s * c);
                }
                let mut input = mo.in_router.input(ri, n, self.activations);
                matmul_input(&self.m(&w.router)?, &mut input, logits, pool)
            }
            None => matmul_input(&self.m(&w.router)?, hn_input, logits, pool),
        }
        .map_err(Error::Kernel)?;
        let expert_scale = w.router_scales.as_ref().map(|[_, e]| self.vec(e)).transpose()?;
        if let Some(b) = &w.router_logit_bias {
            let b = self.vec(b)?;
            logits
                .chunks_exact_mut(experts)
                .for_each(|r| r.iter_mut().zip(b).for_each(|(x, y)| *x += y));
        }
        let bias = w.router_bias.as_ref().map(|b| self.vec(b)).transpose()?;
        mo.chosen.clear();
        let mut routed = 0;
        let caps = rows.iter().flat_map(|r| std::iter::repeat_n((r.experts, r.min_weight), r.len));
        for (t, (cap, min_weight)) in (0..n).zip(caps) {
            let p = &mut logits[t * experts..(t + 1) * experts];
            match (&w.hash_table, m.router) {
                (Some(table), RouterKind::SqrtSoftplus { renormalize, routed_scale, .. }) => {
                    let id = tokens.get(t).copied().unwrap_or(0) as usize;
                    let row = self.vec(table)?.get(id * k..(id + 1) * k).unwrap_or(&[]);
                    if row.len() != k
                        || !super::router::route_hashed(
                            p,
                            row,
                            renormalize,
                            routed_scale,
                            &mut mo.top,
                        )
                    {
                        return Err(Error::Invalid(format!(
                            "layer {l}: the hash-routing table's row of token {id} does not name \
                             {k} experts of {experts}"
                        )));
                    }
                }
                _ => super::router::route(m.router, p, bias, k, &mut mo.route, &mut mo.top),
            }
            if let Some(es) = expert_scale {
                mo.top.iter_mut().for_each(|(e, wt)| *wt *= es[*e]);
            }
            let ratio = min_weight.unwrap_or(self.min_expert_weight_ratio);
            let mut kept = drop_weak(m, &mut mo.top, ratio);
            if let Some(c) = cap.filter(|&c| c < kept) {
                kept = super::router::keep_first(&mut mo.top, c, m.router.renormalizes());
            }
            routed += kept as u64;
            self.experts.on_route(l, step, &mo.top[..kept]);
            mo.chosen.extend_from_slice(&mo.top);
        }
        let [routings, run] = &self.routed;
        routings.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        run.fetch_add(routed, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Prefetch (decode): the source may read the next MoE layer's experts while this layer
    /// computes; with `gate` it predicts them by applying that layer's router to this layer's
    /// input (mixtral-offloading), a product computed only if the source asks for it; over
    /// several sequences, the experts most of them are predicted to choose.
    fn prefetch_next(
        &self,
        l: usize,
        k: usize,
        (hn, tokens): (&[f32], &[u32]),
        step: u64,
        ahead: &mut GateAhead,
    ) -> Result<()> {
        let Some((next, next_spec)) = self.spec.next_moe(l) else { return Ok(()) };
        let Some(nw) = self.weights.layers[next].ffn.moe() else { return Ok(()) };
        let h = self.spec.hidden;
        // A hash-routed layer's experts are known from the tokens: its table rows, exactly,
        // with no product.
        if let Some(table) = &nw.hash_table {
            let table = self.vec(table)?;
            let kt = next_spec.top_k;
            return self.experts.prefetch_next(next, kt, step, &mut |ranked| {
                ranked.clear();
                for &id in tokens.iter() {
                    let row = table.get(id as usize * kt..(id as usize + 1) * kt);
                    for &e in row.unwrap_or(&[]) {
                        match ranked.iter_mut().find(|x| x.0 == e as usize) {
                            Some(x) => x.1 += 1.0,
                            None => ranked.push((e as usize, 1.0)),
                        }
                    }
                }
                // Unstable (in place) but total: ties go to the lower expert.
                ranked.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                ranked.truncate(kt * tokens.len().max(1));
                Ok(())
            });
        }
        let router = self.m(&nw.router)?;
        let next_bias = nw.router_bias.as_ref().map(|b| self.vec(b)).transpose()?;
        let next_logit_bias = nw.router_logit_bias.as_ref().map(|b| self.vec(b)).transpose()?;
        let pool = self.pool.as_ref();
        self.experts.prefetch_next(next, k, step, &mut |ranked| {
            // Over several sequences, the k experts most of them are predicted to choose: a
            // union of every prediction would read more than a layer's share of the cache
            // ahead and evict what the step needs.
            let GateAhead { votes, logits, top, route, input } = &mut *ahead;
            votes.clear();
            votes.resize(router.rows(), (0, 0.0));
            logits.resize(router.rows(), 0.0);
            for x in hn.chunks_exact(h) {
                let mut x = input.input(x, 1, self.activations);
                matmul_input(&router, &mut x, logits, pool).map_err(Error::Kernel)?;
                if let Some(b) = next_logit_bias {
                    logits.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                }
                super::router::route(next_spec.router, logits, next_bias, k, route, top);
                let kept = drop_weak(next_spec, top, self.min_expert_weight_ratio);
                for &(e, wt) in &top[..kept] {
                    votes[e].0 += 1;
                    votes[e].1 += wt;
                }
            }
            ranked.clear();
            ranked.extend((0..votes.len()).filter(|&e| votes[e].0 > 0).map(|e| (e, votes[e].1)));
            // Most votes, then most weight, then the lower expert.
            ranked.sort_unstable_by(|a, b| {
                votes[b.0].0.cmp(&votes[a.0].0).then(b.1.total_cmp(&a.1)).then(a.0.cmp(&b.0))
            });
            ranked.truncate(k);
            Ok(())
        })
    }

    /// Dispatch: each chosen expert once, over the tokens routed to it (the union of the
    /// pass), in the batches and order the expert source hands them over; each (token, slot)'s
    /// output lands in `mo.per_slot`, so the result depends on neither.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        l: usize,
        m: &MoeSpec,
        w: &MoeWeights,
        hn_input: &mut Input,
        hn: &[f32],
        step: u64,
        (mo, glu, kernels): (&mut MoeScratch, &mut GluScratch, TokenKernels),
    ) -> Result<()> {
        let n = hn_input.tokens();
        let (h, k, experts) = (self.spec.hidden, m.top_k, m.experts);
        mo.users.group(&mo.chosen, k, experts);
        mo.weight.clear();
        mo.weight.resize(experts, 0.0);
        for &(e, wt) in mo.chosen.iter().filter(|x| x.0 != SKIPPED) {
            mo.weight[e] = mo.weight[e].max(wt);
        }
        mo.wanted.clear();
        let (users, weight) = (&mo.users, &mo.weight);
        mo.wanted.extend((0..experts).filter(|&e| !users.of(e).is_empty()).map(|e| (e, weight[e])));
        let per_slot = sized(&mut mo.per_slot, n * k * h);
        let mut bufs = ExpertBuffers {
            gate: &mut glu.gate,
            up: &mut glu.up,
            act: &mut glu.act,
            y: &mut mo.y,
            gathered: &mut mo.gathered,
            inputs: &mut mo.in_batch,
            kernels,
        };
        let extras = ExpertExtras {
            bias: match &w.expert_bias {
                Some([g, u, d]) => Some([self.vec(g)?, self.vec(u)?, self.vec(d)?]),
                None => None,
            },
            clamped: m.clamped_swiglu,
            act: m.act,
        };
        self.experts.with_expert_batches(l, &mo.wanted, step, &mut |batch| {
            self.expert_batch(batch, users, hn, h, hn_input, &mut bufs, &extras)?;
            let mut row = 0;
            for (e, _) in batch {
                for &(t, slot) in users.of(*e) {
                    per_slot[(t * k + slot) * h..][..h]
                        .copy_from_slice(&bufs.y[row * h..(row + 1) * h]);
                    row += 1;
                }
            }
            Ok(())
        })
    }

    /// The shared experts over every token, each token's output scaled by its gate (if the
    /// block has one) and added to `out`.
    #[allow(clippy::too_many_arguments)]
    fn shared_experts(
        &self,
        m: &MoeSpec,
        w: &MoeWeights,
        hn_input: &mut Input,
        mo: &mut MoeScratch,
        glu: &mut GluScratch,
        in_other: &mut InputBuffers,
        out: &mut [f32],
    ) -> Result<()> {
        let Some(sw) = &w.shared else { return Ok(()) };
        let (n, h) = (hn_input.tokens(), self.spec.hidden);
        let (wg, wu, wd) = (self.m(&sw.gate)?, self.m(&sw.up)?, self.m(&sw.down)?);
        glu_into(
            self,
            m.act,
            [&wg, &wu, &wd],
            hn_input,
            [&mut glu.gate, &mut glu.up, &mut glu.act],
            in_other,
            &mut mo.shared,
        )?;
        let scale = sized(&mut mo.shared_gate, n);
        match &w.shared_gate {
            Some(g) => {
                matmul_input(&self.m(g)?, hn_input, scale, self.pool.as_ref())
                    .map_err(Error::Kernel)?;
                scale.iter_mut().for_each(|g| *g = 1.0 / (1.0 + (-*g).exp()));
            }
            None => scale.fill(1.0),
        }
        for t in 0..n {
            let sg = scale[t];
            out[t * h..(t + 1) * h]
                .iter_mut()
                .zip(&mo.shared[t * h..(t + 1) * h])
                .for_each(|(o, v)| *o += sg * v);
        }
        Ok(())
    }
}

/// Combine: each token's routed output, its slots' outputs weighed in slot order (skipped
/// slots add nothing), into `out`.
fn combine(chosen: &[(usize, f32)], per_slot: &[f32], k: usize, h: usize, out: &mut [f32]) {
    out.fill(0.0);
    for (t, row) in out.chunks_exact_mut(h).enumerate() {
        for slot in 0..k {
            let (e, wt) = chosen[t * k + slot];
            if e == SKIPPED {
                continue;
            }
            let y = &per_slot[(t * k + slot) * h..][..h];
            row.iter_mut().zip(y).for_each(|(o, v)| *o += wt * v);
        }
    }
}
