//! One memory budget shared by the slab cache and KV caches that grow with use: before each
//! pass, the slab cache is limited to what the budget leaves once every session's KV cache has
//! grown for that pass, so the process stays inside the budget while the slab cache gets all
//! the memory the contexts do not use yet.

use std::sync::Arc;

use super::OVERHEAD_BYTES;
use crate::error::{Error, Result};
use crate::model::spec::ModelSpec;
use crate::pipeline::StreamingExperts;
use crate::runtime::SessionOptions;

/// KV caches hold at least this many positions once allocated (the session's first growth).
const FIRST_POSITIONS: usize = 256;

/// What a memory budget (`ExpertMemory::Budget`) is split by.
pub(crate) struct BudgetInputs {
    pub total_bytes: u64,
    /// The context a capped context must leave room for.
    pub min_context: usize,
    /// KV caches grow inside the budget and the slab cache gives way (no fixed context).
    pub elastic: bool,
    pub sequences: u64,
    pub dense_bytes: u64,
    pub top_k: usize,
    pub slot_bytes: u64,
}

/// The bytes slabs and growing KV caches share, and what the KV caches take per session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedBudget {
    pub shared_bytes: u64,
    pub per_position: u64,
    pub recurrent: u64,
}

/// How a memory budget is split.
pub(crate) struct BudgetSplit {
    /// Bytes of the slab arena.
    pub cache_bytes: u64,
    /// When elastic: what slabs and KV caches share.
    pub shared: Option<SharedBudget>,
}

/// Splits a memory budget between the dense weights, the KV caches, overhead and the slab
/// cache, setting `options`' context when it has none. Elastic: the context is what the budget
/// holds beside the smallest slab cache (one layer's top-k), and the slab arena is sized as if
/// no KV were held yet (the KV caches then take slots back as they grow, see [`KvBudget`]).
/// Otherwise the context is capped at what a quarter of the budget holds, and its KV caches
/// are set aside in full.
pub(crate) fn split(
    b: &BudgetInputs,
    spec: &ModelSpec,
    options: &mut SessionOptions,
) -> Result<BudgetSplit> {
    let recurrent = SessionOptions::recurrent_bytes(spec);
    let least = b.min_context.clamp(1, spec.max_positions);
    let min_slabs = b.top_k as u64 * b.slot_bytes;
    if options.ctx.is_none() {
        let (per_position, _) = options.bytes_per_position(spec)?;
        let room = if b.elastic {
            b.total_bytes.saturating_sub(
                b.dense_bytes + OVERHEAD_BYTES + b.sequences * recurrent + min_slabs,
            )
        } else {
            b.total_bytes / 4
        };
        let fits = (room / b.sequences / per_position.max(1)) as usize;
        options.ctx = Some(fits.clamp(least, spec.max_positions));
    }
    let kv = b.sequences * options.state_bytes(spec)?;
    // A fixed split sets aside the scratch of one default prefill chunk; an elastic one fits
    // the scratch of each pass as it comes.
    let scratch = if b.elastic {
        0
    } else {
        crate::runtime::generate::GenerateOptions::default().prefill_chunk as u64
            * scratch_bytes_per_token(spec)
    };
    let fixed = b.dense_bytes + kv + OVERHEAD_BYTES + scratch;
    let min = fixed + min_slabs;
    if b.total_bytes < min {
        return Err(Error::Invalid(format!(
            "a memory budget of {} MiB cannot hold the dense weights ({} MiB), the KV cache ({} \
             MiB for {} x {} positions of {}), {} MiB of overhead and pass scratch and one \
             layer's {} experts ({} MiB): give at least {} MiB (or a smaller context)",
            b.total_bytes >> 20,
            b.dense_bytes >> 20,
            kv >> 20,
            b.sequences,
            options.ctx_for(spec)?,
            options.kv.describe(),
            (OVERHEAD_BYTES + scratch) >> 20,
            b.top_k,
            min_slabs >> 20,
            min.div_ceil(1 << 20)
        )));
    }
    if !b.elastic {
        return Ok(BudgetSplit { cache_bytes: b.total_bytes - fixed, shared: None });
    }
    let (per_position, _) = options.bytes_per_position(spec)?;
    let shared_bytes = b.total_bytes - b.dense_bytes - OVERHEAD_BYTES - b.sequences * recurrent;
    Ok(BudgetSplit {
        cache_bytes: shared_bytes,
        shared: Some(SharedBudget { shared_bytes, per_position, recurrent }),
    })
}

/// What the slab cache and the KV caches share.
#[derive(Debug)]
pub(crate) struct KvBudget {
    pub streaming: Arc<StreamingExperts>,
    /// Bytes for slabs and KV caches together.
    pub shared_bytes: u64,
    /// KV bytes per position of one session.
    pub per_position: u64,
    /// Fixed state bytes of one session (recurrent layers).
    pub recurrent: u64,
    /// Positions a session may reach.
    pub ctx: usize,
    pub slot_bytes: u64,
    /// Bytes of pass scratch per token of a pass (see `scratch_bytes_per_token`).
    pub scratch_per_token: u64,
    /// The most tokens a pass has run: its scratch buffers stay that large.
    pub peak_tokens: std::sync::atomic::AtomicUsize,
}

/// Bytes of pass scratch per token of a pass: the largest layer's need, with room for the
/// quantised copies of the inputs and the allocator's rounding.
pub(crate) fn scratch_bytes_per_token(spec: &ModelSpec) -> u64 {
    let floats =
        spec.layers.iter().map(|l| l.scratch_floats_per_token(spec.hidden)).max().unwrap_or(0);
    (floats as u64 * 4) * 3 / 2
}

impl KvBudget {
    /// Bytes one session's state holds once it has `positions` positions (KV buffers grow by
    /// doubling from [`FIRST_POSITIONS`], never past the context).
    pub fn held_bytes(&self, positions: usize) -> u64 {
        if positions == 0 {
            return 0;
        }
        let held = positions.next_power_of_two().max(FIRST_POSITIONS).min(self.ctx);
        self.recurrent + held as u64 * self.per_position
    }

    /// Limits the slab cache for sessions that hold `(bytes, positions after the coming pass)`
    /// each, besides `other_bytes` of state held elsewhere (kept sessions), and for the scratch
    /// of a pass of `tokens` tokens (or of the largest pass so far, whose buffers stay).
    pub fn fit(
        &self,
        sessions: impl Iterator<Item = (u64, usize)>,
        other_bytes: u64,
        tokens: usize,
    ) -> Result<()> {
        let peak =
            self.peak_tokens.fetch_max(tokens, std::sync::atomic::Ordering::Relaxed).max(tokens);
        let kv: u64 = sessions.map(|(now, after)| now.max(self.held_bytes(after))).sum::<u64>()
            + other_bytes
            + peak as u64 * self.scratch_per_token;
        let slots = self.shared_bytes.saturating_sub(kv) / self.slot_bytes.max(1);
        self.streaming.set_slot_limit(slots as usize)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// The held bytes follow the KV buffers' growth exactly: a session grown position by
    /// position holds what `held_bytes` says at every step.
    #[test]
    fn held_bytes_match_the_kv_caches_growth() {
        use crate::runtime::{Session, SessionOptions};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        let shape = crate::formats::synth::SynthShape::preset("tiny").unwrap();
        crate::formats::synth::synth(&shape, &path, floe_kernels::DType::Q8_0, 1, &mut |_, _| {})
            .unwrap();
        let packed = crate::formats::packed::PackedModel::open(&path, false).unwrap();
        let dense = crate::formats::dense::DenseWeights::load(&packed).unwrap();
        let experts = crate::runtime::experts::ResidentExperts::load(&packed).unwrap();
        let model =
            crate::runtime::Model::new(packed.manifest.config.clone(), dense, Box::new(experts), 1)
                .unwrap();
        let options = SessionOptions {
            ctx: Some(700),
            kv: crate::KvTypes::all(floe_kernels::ops::KvDType::F16),
        };
        let (per_position, _) = options.bytes_per_position(&model.spec).unwrap();
        let recurrent = SessionOptions::recurrent_bytes(&model.spec);
        let held = |positions: usize| {
            if positions == 0 {
                return 0;
            }
            let p = positions.next_power_of_two().clamp(super::FIRST_POSITIONS, 700);
            recurrent + p as u64 * per_position
        };
        let mut s = Session::new(options);
        for (i, chunk) in [1usize, 1, 300, 1, 200, 197].iter().enumerate() {
            let tokens: Vec<u32> = (0..*chunk as u32).map(|t| (t + i as u32) % 50).collect();
            model.forward(&mut s, &tokens, false).unwrap();
            assert_eq!(s.kv_bytes() as u64, held(s.position()), "after {} positions", s.position());
        }
    }
}
