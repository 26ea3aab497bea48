//! Gated MLPs (a dense layer's, the shared experts', Gemma 4's side-by-side one: gate and up
//! in one pool operation) and the products of a batch of routed experts; the MoE block that
//! routes tokens to them is `moe.rs`.

use floe_kernels::ops;
use floe_kernels::{matmul_batch, matmul_group, matmul_input, Input, InputBuffers, Product};
use smallvec::SmallVec;

use super::forward::Model;
use super::moe::ExpertUsers;
use super::session::sized;
use crate::error::Result;
use crate::model::spec::Activation;
use crate::runtime::experts::{ExpertView, INLINE_BATCH};

/// What an expert computes besides its three matrices (gpt-oss): per-expert biases of gate, up
/// and down (`[experts, ffn]`, `[experts, ffn]`, `[experts, hidden]`) and the clamped SwiGLU.
pub(crate) struct ExpertExtras<'a> {
    pub bias: Option<[&'a [f32]; 3]>,
    pub clamped: Option<crate::model::config::ClampedSwiglu>,
    pub act: Activation,
}

/// Adds row `e` of `bias` (`width` wide) to each `width`-wide row of `rows`.
fn add_bias_rows(rows: &mut [f32], bias: &[f32], e: usize, width: usize) {
    let b = &bias[e * width..(e + 1) * width];
    rows.chunks_exact_mut(width).for_each(|r| r.iter_mut().zip(b).for_each(|(x, y)| *x += y));
}

/// Buffers of one batch of experts, each expert's rows one after the other.
pub(crate) struct ExpertBuffers<'a> {
    pub gate: &'a mut Vec<f32>,
    pub up: &'a mut Vec<f32>,
    pub act: &'a mut Vec<f32>,
    pub y: &'a mut Vec<f32>,
    pub gathered: &'a mut Vec<f32>,
    pub inputs: &'a mut Vec<InputBuffers>,
    /// The kernels new input buffers run tokens through (see `Scratch::set_kernels`).
    pub kernels: floe_kernels::TokenKernels,
}

/// The gated MLPs' buffers: gate, up and activation rows (a dense MLP's, the shared experts',
/// a batch of routed experts'), and Gemma 4's side-by-side MLP's output.
#[derive(Debug, Default)]
pub(crate) struct GluScratch {
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub act: Vec<f32>,
    pub mlp_out: Vec<f32>,
}

/// Products one batch holds without touching the heap (a decode step's top-k, two each).
const INLINE_PRODUCTS: usize = 2 * crate::runtime::experts::INLINE_BATCH;

impl Model {
    /// A batch of ready experts: every expert's gate and up as one pool operation, then every
    /// down as another; expert `j`'s outputs for its tokens (in `users` order) land in `y` after
    /// those of the experts before it. In decode every expert reads the same token, quantised
    /// once (`hn_input`); a prefill chunk gathers each expert's tokens.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn expert_batch(
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
