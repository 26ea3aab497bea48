//! Feed-forward blocks: the SwiGLU MLP (gate and up in one pool operation) and the routed MoE
//! (router in f32, the spec's routing rule, each chosen expert once over the tokens routed to
//! it, in whatever order the expert source hands them over, plus shared experts). Read `hn`,
//! write `out`.

use floe_kernels::ops;
use floe_kernels::{matmul_batch, matmul_group, matmul_input, Input, InputBuffers, Product};
use smallvec::SmallVec;

use super::forward::Model;
use super::session::{sized, ExpertUsers, Scratch, SeqRows};
use super::weights::MoeWeights;
use crate::error::Result;
use crate::model::spec::{Activation, MoeSpec, RouterKind};
use crate::runtime::experts::{ExpertView, INLINE_BATCH};
use crate::runtime::router::SKIPPED;

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
        let (h, k, experts) = (self.spec.hidden, m.top_k, m.experts);
        let pool = self.pool.as_ref();
        let mut hn_input = sc.in_hn.input(&sc.hn, n, self.activations);
        let logits = sized(&mut sc.router, n * experts);
        match &w.router_scales {
            // Gemma 4: the router reads the residual, RMS-normalised without weight, scaled
            // per channel and by 1/sqrt(hidden).
            Some([scale, _]) => {
                let (scale, eps) = (self.vec(scale)?, self.spec.rms_eps);
                let c = 1.0 / (h as f32).sqrt();
                let ri = sized(&mut sc.router_in, n * h);
                for (xr, rr) in sc.x.chunks_exact(h).zip(ri.chunks_exact_mut(h)) {
                    let inv = 1.0 / (xr.iter().map(|v| v * v).sum::<f32>() / h as f32 + eps).sqrt();
                    rr.iter_mut().zip(xr).zip(scale).for_each(|((r, &x), &s)| *r = x * inv * s * c);
                }
                let mut input = sc.in_router.input(ri, n, self.activations);
                matmul_input(&self.m(&w.router)?, &mut input, logits, pool)
            }
            None => matmul_input(&self.m(&w.router)?, &mut hn_input, logits, pool),
        }
        .map_err(crate::error::Error::Kernel)?;
        let expert_scale = w.router_scales.as_ref().map(|[_, e]| self.vec(e)).transpose()?;
        if let Some(b) = &w.router_logit_bias {
            let b = self.vec(b)?;
            logits
                .chunks_exact_mut(experts)
                .for_each(|r| r.iter_mut().zip(b).for_each(|(x, y)| *x += y));
        }
        // Route every token.
        let bias = w.router_bias.as_ref().map(|b| self.vec(b)).transpose()?;
        sc.chosen.clear();
        let mut routed = 0;
        let caps = rows.iter().flat_map(|r| std::iter::repeat_n((r.experts, r.min_weight), r.len));
        for (t, (cap, min_weight)) in (0..n).zip(caps) {
            let p = &mut logits[t * experts..(t + 1) * experts];
            match (&w.hash_table, m.router) {
                (Some(table), RouterKind::SqrtSoftplus { renormalize, routed_scale, .. }) => {
                    let id = sc.tokens.get(t).copied().unwrap_or(0) as usize;
                    let row = self.vec(table)?.get(id * k..(id + 1) * k).unwrap_or(&[]);
                    if row.len() != k
                        || !super::router::route_hashed(
                            p,
                            row,
                            renormalize,
                            routed_scale,
                            &mut sc.top,
                        )
                    {
                        return Err(crate::error::Error::Invalid(format!(
                            "layer {l}: the hash-routing table's row of token {id} does not name \
                             {k} experts of {experts}"
                        )));
                    }
                }
                _ => super::router::route(m.router, p, bias, k, &mut sc.route, &mut sc.top),
            }
            if let Some(es) = expert_scale {
                sc.top.iter_mut().for_each(|(e, wt)| *wt *= es[*e]);
            }
            let ratio = min_weight.unwrap_or(self.min_expert_weight_ratio);
            let mut kept = drop_weak(m, &mut sc.top, ratio);
            if let Some(c) = cap.filter(|&c| c < kept) {
                kept = super::router::keep_first(&mut sc.top, c, m.router.renormalizes());
            }
            routed += kept as u64;
            self.experts.on_route(l, step, &sc.top[..kept]);
            sc.chosen.extend_from_slice(&sc.top);
        }
        let [routings, run] = &self.routed;
        routings.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        run.fetch_add(routed, std::sync::atomic::Ordering::Relaxed);
        // Prefetch (decode): the source may read the next MoE layer's experts while this layer
        // computes; with `gate` it predicts them by applying that layer's router to this layer's
        // input (mixtral-offloading), a product computed only if the source asks for it; over
        // several sequences, the union of their predictions.
        if decode {
            if let Some((next, next_spec)) = self.spec.next_moe(l) {
                if let Some(nw) = self.weights.layers[next].ffn.moe() {
                    let router = self.m(&nw.router)?;
                    let next_bias = nw.router_bias.as_ref().map(|b| self.vec(b)).transpose()?;
                    let next_logit_bias =
                        nw.router_logit_bias.as_ref().map(|b| self.vec(b)).transpose()?;
                    let (hn, ahead) = (&sc.hn, &mut sc.gate_ahead);
                    // A hash-routed layer's experts are known from the tokens: its table rows,
                    // exactly, with no product.
                    if let Some(table) = &nw.hash_table {
                        let (table, tokens) = (self.vec(table)?, &sc.tokens);
                        let kt = next_spec.top_k;
                        self.experts.prefetch_next(next, kt, step, &mut |ranked| {
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
                        })?;
                    } else {
                        self.experts.prefetch_next(next, k, step, &mut |ranked| {
                            // Over several sequences, the k experts most of them are predicted to
                            // choose: a union of every prediction would read more than a layer's
                            // share of the cache ahead and evict what the step needs.
                            let GateAhead { votes, logits, top, route, input } = &mut *ahead;
                            votes.clear();
                            votes.resize(router.rows(), (0, 0.0));
                            logits.resize(router.rows(), 0.0);
                            for x in hn.chunks_exact(h) {
                                let mut x = input.input(x, 1, self.activations);
                                floe_kernels::matmul_input(&router, &mut x, logits, pool)
                                    .map_err(crate::error::Error::Kernel)?;
                                if let Some(b) = next_logit_bias {
                                    logits.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                                }
                                let kind = next_spec.router;
                                super::router::route(kind, logits, next_bias, k, route, top);
                                let kept = drop_weak(next_spec, top, self.min_expert_weight_ratio);
                                for &(e, wt) in &top[..kept] {
                                    votes[e].0 += 1;
                                    votes[e].1 += wt;
                                }
                            }
                            ranked.clear();
                            ranked.extend(
                                (0..votes.len())
                                    .filter(|&e| votes[e].0 > 0)
                                    .map(|e| (e, votes[e].1)),
                            );
                            // Most votes, then most weight, then the lower expert.
                            ranked.sort_unstable_by(|a, b| {
                                votes[b.0]
                                    .0
                                    .cmp(&votes[a.0].0)
                                    .then(b.1.total_cmp(&a.1))
                                    .then(a.0.cmp(&b.0))
                            });
                            ranked.truncate(k);
                            Ok(())
                        })?;
                    }
                }
            }
        }
        // Each expert once, over the tokens routed to it (the union of the chunk).
        sc.users.group(&sc.chosen, k, experts);
        sc.weight.clear();
        sc.weight.resize(experts, 0.0);
        for &(e, wt) in sc.chosen.iter().filter(|x| x.0 != SKIPPED) {
            sc.weight[e] = sc.weight[e].max(wt);
        }
        sc.wanted.clear();
        let users = &sc.users;
        sc.wanted
            .extend((0..experts).filter(|&e| !users.of(e).is_empty()).map(|e| (e, sc.weight[e])));
        // Outputs per (token, slot), combined in slot order afterwards: the result does not
        // depend on the order experts arrive in, nor on how they are batched.
        let per_slot = sized(&mut sc.per_slot, n * k * h);
        let (users, hn) = (&sc.users, &sc.hn);
        let bufs = ExpertBuffers {
            gate: &mut sc.gate,
            up: &mut sc.up,
            act: &mut sc.act,
            y: &mut sc.y,
            gathered: &mut sc.gathered,
            inputs: &mut sc.in_batch,
            kernels: sc.kernels,
        };
        let mut bufs = bufs;
        let extras = ExpertExtras {
            bias: match &w.expert_bias {
                Some([g, u, d]) => Some([self.vec(g)?, self.vec(u)?, self.vec(d)?]),
                None => None,
            },
            clamped: m.clamped_swiglu,
            act: m.act,
        };
        self.experts.with_expert_batches(l, &sc.wanted, step, &mut |batch| {
            self.expert_batch(batch, users, hn, h, &mut hn_input, &mut bufs, &extras)?;
            let mut row = 0;
            for (e, _) in batch {
                for &(t, slot) in users.of(*e) {
                    per_slot[(t * k + slot) * h..][..h]
                        .copy_from_slice(&bufs.y[row * h..(row + 1) * h]);
                    row += 1;
                }
            }
            Ok(())
        })?;
        let out = sized(&mut sc.out, n * h);
        out.fill(0.0);
        for t in 0..n {
            for slot in 0..k {
                let (e, wt) = sc.chosen[t * k + slot];
                if e == SKIPPED {
                    continue;
                }
                let y = &per_slot[(t * k + slot) * h..][..h];
                out[t * h..(t + 1) * h].iter_mut().zip(y).for_each(|(o, v)| *o += wt * v);
            }
        }
        if let Some(sw) = &w.shared {
            let (wg, wu, wd) = (self.m(&sw.gate)?, self.m(&sw.up)?, self.m(&sw.down)?);
            glu_into(
                self,
                m.act,
                [&wg, &wu, &wd],
                &mut hn_input,
                [&mut sc.gate, &mut sc.up, &mut sc.act],
                &mut sc.in_other,
                &mut sc.shared,
            )?;
            let scale = sized(&mut sc.shared_gate, n);
            match &w.shared_gate {
                Some(g) => {
                    matmul_input(&self.m(g)?, &mut hn_input, scale, pool)
                        .map_err(crate::error::Error::Kernel)?;
                    scale.iter_mut().for_each(|g| *g = 1.0 / (1.0 + (-*g).exp()));
                }
                None => scale.fill(1.0),
            }
            for t in 0..n {
                let sg = scale[t];
                out[t * h..(t + 1) * h]
                    .iter_mut()
                    .zip(&sc.shared[t * h..(t + 1) * h])
                    .for_each(|(o, v)| *o += sg * v);
            }
        }
        Ok(())
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

/// What an expert computes besides its three matrices (gpt-oss): per-expert biases of gate, up
/// and down (`[experts, ffn]`, `[experts, ffn]`, `[experts, hidden]`) and the clamped SwiGLU.
struct ExpertExtras<'a> {
    bias: Option<[&'a [f32]; 3]>,
    clamped: Option<crate::model::config::ClampedSwiglu>,
    act: Activation,
}

/// Adds row `e` of `bias` (`width` wide) to each `width`-wide row of `rows`.
fn add_bias_rows(rows: &mut [f32], bias: &[f32], e: usize, width: usize) {
    let b = &bias[e * width..(e + 1) * width];
    rows.chunks_exact_mut(width).for_each(|r| r.iter_mut().zip(b).for_each(|(x, y)| *x += y));
}

/// Buffers of one batch of experts, each expert's rows one after the other.
struct ExpertBuffers<'a> {
    gate: &'a mut Vec<f32>,
    up: &'a mut Vec<f32>,
    act: &'a mut Vec<f32>,
    y: &'a mut Vec<f32>,
    gathered: &'a mut Vec<f32>,
    inputs: &'a mut Vec<InputBuffers>,
    /// The kernels new input buffers run tokens through (see `Scratch::set_kernels`).
    kernels: floe_kernels::TokenKernels,
}

/// Products one batch holds without touching the heap (a decode step's top-k, two each).
const INLINE_PRODUCTS: usize = 2 * crate::runtime::experts::INLINE_BATCH;

impl Model {
    /// A batch of ready experts: every expert's gate and up as one pool operation, then every
    /// down as another; expert `j`'s outputs for its tokens (in `users` order) land in `y` after
    /// those of the experts before it. In decode every expert reads the same token, quantised
    /// once (`hn_input`); a prefill chunk gathers each expert's tokens.
    #[allow(clippy::too_many_arguments)]
    fn expert_batch(
        &self,
        batch: &[(usize, ExpertView<'_>)],
        users: &ExpertUsers,
        hn: &[f32],
        h: usize,
        hn_input: &mut Input,
        b: &mut ExpertBuffers,
        extras: &ExpertExtras,
    ) -> Result<()> {
        let pool = self.pool.as_ref();
        let decode = hn_input.tokens() == 1;
        let rows: usize = batch.iter().map(|(e, _)| users.of(*e).len()).sum();
        let ffn_rows: usize = batch.iter().map(|(e, v)| users.of(*e).len() * v.gate.rows()).sum();
        if b.inputs.len() < batch.len() {
            let kernels = b.kernels;
            b.inputs.resize_with(batch.len(), || {
                let mut ib = InputBuffers::default();
                ib.set_kernels(kernels);
                ib
            });
        }
        // gate and up.
        {
            let (mut gate, mut up) = (sized(b.gate, ffn_rows), sized(b.up, ffn_rows));
            let mut products = SmallVec::<[Product; INLINE_PRODUCTS]>::new();
            let mut inputs = SmallVec::<[Input; INLINE_BATCH]>::new();
            if !decode {
                b.gathered.clear();
                for (e, _) in batch {
                    for &(t, _) in users.of(*e) {
                        b.gathered.extend_from_slice(&hn[t * h..(t + 1) * h]);
                    }
                }
                let mut rest: &[f32] = b.gathered;
                for ((e, _), ib) in batch.iter().zip(b.inputs.iter_mut()) {
                    let m = users.of(*e).len();
                    let (mine, tail) = rest.split_at(m * h);
                    rest = tail;
                    inputs.push(ib.input(mine, m, self.activations));
                }
            }
            for (j, (e, v)) in batch.iter().enumerate() {
                let len = users.of(*e).len() * v.gate.rows();
                let (g, gr) = std::mem::take(&mut gate).split_at_mut(len);
                let (u, ur) = std::mem::take(&mut up).split_at_mut(len);
                (gate, up) = (gr, ur);
                let input = if decode { 0 } else { j };
                products.push(Product { w: v.gate, input, out: g });
                products.push(Product { w: v.up, input, out: u });
            }
            if decode {
                matmul_batch(&mut products, std::slice::from_mut(hn_input), pool)
            } else {
                matmul_batch(&mut products, &mut inputs, pool)
            }
            .map_err(crate::error::Error::Kernel)?;
        }
        if let Some([gb, ub, _]) = extras.bias {
            let mut at = 0;
            for (e, v) in batch {
                let (f, len) = (v.gate.rows(), users.of(*e).len() * v.gate.rows());
                add_bias_rows(&mut b.gate[at..at + len], gb, *e, f);
                add_bias_rows(&mut b.up[at..at + len], ub, *e, f);
                at += len;
            }
        }
        let act = sized(b.act, ffn_rows);
        match extras.clamped {
            Some(c) => {
                ops::clamped_swiglu(&b.gate[..ffn_rows], &b.up[..ffn_rows], act, c.alpha, c.limit)
            }
            None => glu(extras.act, &b.gate[..ffn_rows], &b.up[..ffn_rows], act),
        }
        // down.
        let mut y = sized(b.y, rows * h);
        let mut products = SmallVec::<[Product; INLINE_BATCH]>::new();
        let mut inputs = SmallVec::<[Input; INLINE_BATCH]>::new();
        let mut rest: &[f32] = act;
        for ((j, (e, v)), ib) in batch.iter().enumerate().zip(b.inputs.iter_mut()) {
            let m = users.of(*e).len();
            let (mine, tail) = rest.split_at(m * v.gate.rows());
            rest = tail;
            inputs.push(ib.input(mine, m, self.activations));
            let (out, yr) = std::mem::take(&mut y).split_at_mut(m * v.down.rows());
            y = yr;
            products.push(Product { w: v.down, input: j, out });
        }
        matmul_batch(&mut products, &mut inputs, pool).map_err(crate::error::Error::Kernel)?;
        drop(products);
        if let Some([_, _, db]) = extras.bias {
            let mut at = 0;
            for (e, _) in batch {
                let len = users.of(*e).len() * h;
                add_bias_rows(&mut b.y[at..at + len], db, *e, h);
                at += len;
            }
        }
        Ok(())
    }
}

/// `act(gate) * up`.
fn glu(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    match act {
        Activation::Silu => ops::swiglu(gate, up, out),
        Activation::GeluTanh => ops::geglu_tanh(gate, up, out),
        Activation::ClampedSilu { limit } => {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = ops::silu(g.min(limit)) * u.clamp(-limit, limit);
            }
        }
    }
}

/// A gated MLP (`[gate, up, down]`) over `input`'s tokens with gate and up as one pool
/// operation, into `out`; `bufs` are gate, up and activation buffers.
pub(crate) fn glu_into(
    model: &Model,
    act: Activation,
    [wg, wu, wd]: [&floe_kernels::Matrix; 3],
    input: &mut Input,
    [gate, up, act_buf]: [&mut Vec<f32>; 3],
    act_bufs: &mut InputBuffers,
    out: &mut Vec<f32>,
) -> Result<()> {
    let n = input.tokens();
    let ffn = wg.rows();
    let pool = model.pool.as_ref();
    let (g, u) = (sized(gate, n * ffn), sized(up, n * ffn));
    matmul_group(&mut [(wg, &mut *g), (wu, &mut *u)], input, pool)
        .map_err(crate::error::Error::Kernel)?;
    let a = sized(act_buf, n * ffn);
    glu(act, g, u, a);
    let y = sized(out, n * wd.rows());
    let mut act_input = act_bufs.input(a, n, model.activations);
    matmul_input(wd, &mut act_input, y, pool).map_err(crate::error::Error::Kernel)
}

/// The gate prefetch's buffers (the next layer's router applied ahead): sized on the first
/// decode step, then reused.
#[derive(Debug, Default)]
pub(crate) struct GateAhead {
    /// Per expert: the sequences predicted to choose it, and their summed weights.
    votes: Vec<(u32, f32)>,
    logits: Vec<f32>,
    top: Vec<(usize, f32)>,
    route: super::router::RouteScratch,
    input: floe_kernels::InputBuffers,
}
