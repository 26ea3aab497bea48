//! A sequence's state: one state per layer (a KV cache for attention), allocated up front for
//! the session's context, and the scratch every forward pass reuses, so decode allocates nothing
//! once the first token has sized it.

use floe_kernels::ops::KvDType;
use floe_kernels::{InputBuffers, TokenKernels};

use super::forward::RouteRecord;
pub use super::kv_cache::{KvCache, KvLayout, KvTypes};
use crate::error::{Error, Result};
use crate::model::spec::{KvRows, MixerSpec, ModelSpec};

/// How a session is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Positions the session holds (prompt and generation): None takes the model's context.
    pub ctx: Option<usize>,
    /// How the KV cache stores keys and values.
    pub kv: KvTypes,
}

impl Default for SessionOptions {
    /// The model's context with an f32 KV cache: exact, what the reference tests compare.
    /// The command line and [`EngineConfig`](crate::EngineConfig) default to f16, as llama.cpp.
    fn default() -> Self {
        Self { ctx: None, kv: KvTypes::all(KvDType::F32) }
    }
}

/// Bytes one more position adds to a session's state, per cached part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvBytes {
    /// Keys of grouped-query attention layers.
    pub k: u64,
    /// Values of grouped-query attention layers.
    pub v: u64,
    /// MLA rows (latent and RoPE key).
    pub mla: u64,
    /// Shared-KV attention: its rows, and its share of compressed entries and indexer keys
    /// (f32).
    pub shared_kv: u64,
}

impl KvBytes {
    /// All parts together.
    pub fn total(&self) -> u64 {
        self.k + self.v + self.mla + self.shared_kv
    }
}

impl SessionOptions {
    /// The context this session gets on `spec`, or an error if it asks for more than the model
    /// was built for.
    pub fn ctx_for(&self, spec: &ModelSpec) -> Result<usize> {
        match self.ctx {
            None => Ok(spec.max_positions),
            Some(0) => Err(Error::Invalid("--ctx 0: a session needs at least one position".into())),
            Some(n) if n > spec.max_positions => Err(Error::Invalid(format!(
                "--ctx {n} is more than the model's {} positions",
                spec.max_positions
            ))),
            Some(n) => Ok(n),
        }
    }

    /// Bytes of per-layer state a session of these options takes on `spec`.
    pub fn state_bytes(&self, spec: &ModelSpec) -> Result<u64> {
        let ctx = self.ctx_for(spec)? as u64;
        Ok(ctx * self.kv_bytes(spec)?.total() + Self::recurrent_bytes(spec))
    }

    /// Bytes one more position adds to the state on `spec`, per part (checks the types
    /// against the model).
    pub fn kv_bytes(&self, spec: &ModelSpec) -> Result<KvBytes> {
        self.kv.check(spec)?;
        let mut b = KvBytes::default();
        for rows in spec.layers.iter().filter_map(|l| l.mixer.kv_rows()) {
            let layout = self.kv.layout(rows)?;
            if layout.shared {
                b.mla += layout.bytes_per_position() as u64;
            } else {
                b.k += layout.k_bytes() as u64;
                b.v += layout.v_bytes() as u64;
            }
        }
        // Shared-KV attention's rows and entries: f32 whatever the KV types.
        let shared: f64 = spec.layers.iter().map(|l| 4.0 * l.mixer.f32_state_per_position()).sum();
        b.shared_kv = shared.ceil() as u64;
        // Sparse attention's indexer keys grow with the positions too (f32, with the latents).
        let index_keys: usize = spec.layers.iter().filter_map(|l| l.mixer.index_key_dim()).sum();
        b.mla += 4 * index_keys as u64;
        Ok(b)
    }

    /// Bytes one more position adds to the state on `spec`, and what it would add if every MLA
    /// layer cached per-head keys and values as plain attention does (the two are equal without
    /// MLA).
    pub fn bytes_per_position(&self, spec: &ModelSpec) -> Result<(u64, u64)> {
        let actual = self.kv_bytes(spec)?.total();
        let mut full = 0u64;
        for rows in spec.layers.iter().filter_map(|l| l.mixer.kv_rows()) {
            full += match rows {
                KvRows::Split { .. } => self.kv.layout(rows)?.bytes_per_position() as u64,
                KvRows::Shared { heads, expanded: (kd, vd), .. } => {
                    // f32-sized estimates where a type cannot hold the expanded width.
                    let k = self.kv.k.head_bytes(kd).unwrap_or(4 * kd);
                    let v = self.kv.v.head_bytes(vd).unwrap_or(4 * vd);
                    (heads * (k + v)) as u64
                }
            };
        }
        Ok((actual, full))
    }

    /// Bytes of the fixed-size part of the state on `spec` (linear-attention layers), which does
    /// not grow with the context. Recurrent states are f32 whatever the KV types.
    pub fn recurrent_bytes(spec: &ModelSpec) -> u64 {
        spec.layers.iter().map(|l| 4 * l.mixer.recurrent_floats() as u64).sum()
    }
}

/// A Gated DeltaNet layer's fixed-size state: the convolution's last inputs and each value
/// head's `key_dim x value_dim` recurrent state. It does not grow with the context.
#[derive(Debug)]
pub struct DeltaState {
    /// The last `kernel - 1` convolution inputs, oldest first, `qkv_dim` each.
    pub conv: Vec<f32>,
    /// Per value head, `key_dim x value_dim`.
    pub recurrent: Vec<f32>,
}

impl DeltaState {
    fn new(d: &crate::model::spec::DeltaNetSpec) -> Self {
        Self {
            conv: vec![0.0; (d.conv_kernel - 1) * d.qkv_dim()],
            recurrent: vec![0.0; d.value_heads * d.key_dim * d.value_dim],
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * (self.conv.len() + self.recurrent.len())
    }
}

/// What a layer keeps between forward passes.
#[derive(Debug)]
pub enum LayerState {
    /// Attention's KV cache.
    Attention(KvCache),
    /// Gated DeltaNet's recurrent and convolution state.
    DeltaNet(DeltaState),
    /// Shared-KV attention's rows, compressed entries and open windows.
    SharedKv(super::shared_kv_state::SharedKvState),
}

impl LayerState {
    /// A new state for `mixer` in a session of `ctx` positions (`record`: keep the queries or
    /// selections, for measuring a cache type).
    fn new(mixer: &MixerSpec, kv: KvTypes, ctx: usize, record: bool) -> Result<Self> {
        Ok(match mixer {
            MixerSpec::Attention(_) | MixerSpec::Mla(_) => {
                let rows =
                    mixer.kv_rows().ok_or(Error::Engine("an attention layer without rows"))?;
                let mut cache = KvCache::new(kv.layout(rows)?, ctx);
                if let Some(dim) = mixer.index_key_dim() {
                    cache = cache.with_index_keys(dim);
                }
                if record {
                    cache.record_queries();
                }
                LayerState::Attention(cache)
            }
            MixerSpec::DeltaNet(d) => LayerState::DeltaNet(DeltaState::new(d)),
            MixerSpec::SharedKv(a) => {
                let mut st = super::shared_kv_state::SharedKvState::new(a, ctx);
                if record {
                    st.record_selections();
                }
                LayerState::SharedKv(st)
            }
        })
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        match self {
            LayerState::Attention(kv) => kv.bytes(),
            LayerState::DeltaNet(d) => d.bytes(),
            LayerState::SharedKv(st) => st.bytes(),
        }
    }

    /// Bytes of the part that does not grow with the context.
    fn fixed_bytes(&self) -> usize {
        match self {
            LayerState::DeltaNet(d) => d.bytes(),
            LayerState::SharedKv(st) => st.fixed_bytes(),
            LayerState::Attention(_) => 0,
        }
    }

    /// Whether cutting back to `pos` keeps a state this layer can resume from.
    fn can_rewind(&self, pos: usize, mixer: &MixerSpec) -> bool {
        match (self, mixer) {
            (LayerState::SharedKv(st), MixerSpec::SharedKv(a)) => st.can_rewind(pos, a),
            (LayerState::DeltaNet(_), _) => false,
            _ => true,
        }
    }

    /// Cuts the state back to `pos` (a cache keeps its rows: later ones are overwritten).
    fn truncate(&mut self, pos: usize, mixer: &MixerSpec) {
        if let (LayerState::SharedKv(st), MixerSpec::SharedKv(a)) = (self, mixer) {
            st.truncate(pos, a);
        }
    }
}

/// Buffers the forward pass reuses: sized by the first pass of each size, then untouched. The
/// residual stream and what every layer shares are here; each mixer and feed-forward kind keeps
/// its own buffers, under its own names, in its own part.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The residual stream, one row per token of the pass.
    pub x: Vec<f32>,
    /// The current block's normed input.
    pub hn: Vec<f32>,
    /// The current block's output, before it joins the residual.
    pub out: Vec<f32>,
    /// A norm's temporary row.
    pub norm: Vec<f32>,
    /// Grouped-query attention's buffers.
    pub attn: super::attention::AttentionScratch,
    /// Gated DeltaNet's buffers.
    pub lin: super::deltanet::DeltaNetScratch,
    /// Multi-head latent attention's buffers.
    pub mla: super::mla::MlaScratch,
    /// Sparse attention's indexer and selection.
    pub dsa: super::dsa::DsaScratch,
    /// Shared-KV attention's buffers.
    pub skv: super::shared_kv::SharedKvScratch,
    /// Hyper-connections' buffers.
    pub hc: super::hyper::HyperScratch,
    /// The gated MLPs' buffers (dense, shared experts, Gemma 4's side-by-side MLP).
    pub glu: super::ffn::GluScratch,
    /// The routed MoE's buffers.
    pub moe: super::moe::MoeScratch,
    /// The pass's RoPE table, one row per token.
    pub rope: Vec<(f32, f32)>,
    /// A RoPE table of one sequence, before it joins the pass's per-row table.
    pub rope_one: Vec<(f32, f32)>,
    /// The output head's input rows (the last row of each sequence, or every row) and logits.
    pub head_rows: Vec<f32>,
    pub logits: Vec<f32>,
    /// Quantised forms of `hn` (shared by q/k/v, the router, dense and shared MLPs, and in
    /// decode every routed expert).
    pub in_hn: InputBuffers,
    /// Quantised forms of the other inputs (attention output, activations into down).
    pub in_other: InputBuffers,
    /// Which kernels this pass's products run its tokens through (see [`PassKind`]).
    pub kernels: TokenKernels,
    /// Each sequence's rows of the current pass.
    pub rows: Vec<SeqRows>,
    /// The pass's token ids, one per row (hash routing reads them).
    pub tokens: Vec<u32>,
}

impl Scratch {
    /// Sets the kernels every product of the next passes runs its tokens through.
    pub fn set_kernels(&mut self, kernels: TokenKernels) {
        self.kernels = kernels;
        self.in_hn.set_kernels(kernels);
        self.in_other.set_kernels(kernels);
        self.moe.set_kernels(kernels);
    }
}

/// Where one sequence sits in a forward pass: its first position and its rows of the pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SeqRows {
    pub pos: usize,
    pub start: usize,
    pub len: usize,
    /// The sequence's own expert count per token, below the model's (`Session::experts`).
    pub experts: Option<usize>,
    /// The sequence's own weak-expert ratio, if it has one (else the model's).
    pub min_weight: Option<f32>,
}

impl SeqRows {
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len
    }
}

/// One sequence's share of a layer in a forward pass: its state for that layer and its rows.
pub(crate) struct Seg<'a> {
    pub state: &'a mut LayerState,
    pub at: SeqRows,
}

impl Seg<'_> {
    /// The attention (or MLA) cache, or an error naming the layer when the state is another.
    pub fn kv(&mut self, l: usize) -> Result<&mut KvCache> {
        match self.state {
            LayerState::Attention(kv) => Ok(kv),
            LayerState::DeltaNet(_) | LayerState::SharedKv(_) => Err(state_mismatch(l)),
        }
    }

    /// The Gated DeltaNet state, or an error naming the layer.
    pub fn delta(&mut self, l: usize) -> Result<&mut DeltaState> {
        match self.state {
            LayerState::DeltaNet(d) => Ok(d),
            LayerState::Attention(_) | LayerState::SharedKv(_) => Err(state_mismatch(l)),
        }
    }
}

fn state_mismatch(l: usize) -> Error {
    Error::Invalid(format!("layer {l}: the session's state does not match the layer's mixer"))
}

/// What a forward pass over several sequences runs: decode steps (one token each) run every
/// token through the matvec kernels, as a sequence's decode alone does; prompt chunks run every
/// row through the GEMM tiles (where the CPU has them), whose result for a row does not depend
/// on the other rows. Either way a sequence's result does not depend on what else is in the
/// pass, nor on how its prompt is split into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    /// Each sequence's next token.
    Decode,
    /// Prompt chunks.
    Prefill,
}

impl PassKind {
    pub(crate) fn kernels(self) -> TokenKernels {
        match self {
            Self::Decode => TokenKernels::PerToken,
            Self::Prefill => TokenKernels::Tiles,
        }
    }
}

/// The scratch and step counter of forward passes over several sequences at once (a decode
/// step of every sequence in flight): see [`Model::pass`](crate::runtime::Model::pass).
#[derive(Debug, Default)]
pub struct BatchScratch {
    pub(crate) scratch: Scratch,
    pub(crate) step: u64,
}

impl BatchScratch {
    /// A new, empty scratch (sized by its first pass).
    pub fn new() -> Self {
        Self::default()
    }

    /// The logits of the last pass (`vocab` floats per returned row).
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.scratch.logits
    }
}

/// Resizes `v` to `n` values (zeros where it grows); no allocation once it has held `n`.
pub(crate) fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// Per-sequence state: one state per layer, the position, and the forward pass's scratch.
#[derive(Debug, Default)]
pub struct Session {
    options: SessionOptions,
    pub(crate) layers: Vec<LayerState>,
    pub(crate) ctx: usize,
    pub(crate) pos: usize,
    pub(crate) step: u64,
    pub(crate) scratch: Scratch,
    /// When set, every routing decision is appended here.
    pub routes: Option<Vec<RouteRecord>>,
    /// Whether attention caches keep their queries (see [`Session::record_queries`]).
    record_queries: bool,
    /// This sequence's own lossy expert knobs (`None` fields: the model's).
    knobs: SeqExperts,
    /// Each layer's mixer, as the state was prepared for (rewinding asks it).
    layer_mixers: Vec<MixerSpec>,
}

/// A sequence's own lossy expert knobs, part of what its state depends on besides its tokens;
/// a `None` field follows the model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SeqExperts {
    /// Routed experts per token, below the model's count.
    pub per_token: Option<usize>,
    /// Skip a chosen expert whose weight is below this fraction of the token's largest (0: off),
    /// in place of the model's ratio.
    pub min_weight: Option<f32>,
}

impl Session {
    /// Runs `k` routed experts per token for this sequence (the first `k` the router ranks,
    /// weighed as a `k`-expert router weighs them) when `k` is below the model's count.
    pub fn with_experts_per_token(mut self, k: Option<usize>) -> Self {
        self.knobs.per_token = k;
        self
    }

    /// Skips, for this sequence, a chosen expert whose weight is below `ratio` of the token's
    /// largest (the kept weights renormalised where the router renormalises), in place of the
    /// model's ratio; `None`: the model's.
    pub fn with_min_expert_weight(mut self, ratio: Option<f32>) -> Self {
        self.knobs.min_weight = ratio;
        self
    }

    /// The sequence's lossy expert knobs, those runs of the model would be equal under.
    pub fn expert_knobs(&self) -> SeqExperts {
        self.knobs
    }

    /// This sequence's expert count per token, if it has its own.
    pub fn experts_per_token(&self) -> Option<usize> {
        self.knobs.per_token
    }

    /// A session of `options` (its state is allocated by the first forward pass, for the
    /// model that runs it).
    pub fn new(options: SessionOptions) -> Self {
        Self { options, ..Self::default() }
    }

    /// Keeps, in each attention layer's cache, every query attention reads it with (for
    /// measuring what a cache type costs: see [`crate::kv_quality`]). Decode then allocates.
    pub fn record_queries(mut self) -> Self {
        self.record_queries = true;
        self
    }

    /// The attention cache of layer `l`, if it has one (after the first forward pass).
    pub fn kv_cache(&self, l: usize) -> Option<&KvCache> {
        match self.layers.get(l)? {
            LayerState::Attention(kv) => Some(kv),
            LayerState::DeltaNet(_) | LayerState::SharedKv(_) => None,
        }
    }

    /// A session that records every routing decision in `routes`.
    pub fn recording() -> Self {
        Self { routes: Some(Vec::new()), ..Self::default() }
    }

    /// Layer `l`'s shared-KV attention state, if it is such a layer (and the session has run).
    pub fn shared_kv_state(&self, l: usize) -> Option<&super::shared_kv_state::SharedKvState> {
        match self.layers.get(l)? {
            LayerState::SharedKv(st) => Some(st),
            _ => None,
        }
    }

    /// Records every routing decision in `routes`.
    pub fn record_routes(mut self) -> Self {
        self.routes = Some(Vec::new());
        self
    }

    /// Tokens processed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Cuts the session back to its first `pos` positions, to continue from there with other
    /// tokens: attention caches keep what they hold (later positions are overwritten), but a
    /// recurrent state cannot be wound back, so a session with one only "rewinds" to where it
    /// is. Returns whether the session is now at `pos`.
    pub fn rewind(&mut self, pos: usize) -> bool {
        if pos == self.pos {
            return true;
        }
        if !self.can_rewind(pos) {
            return false;
        }
        for (state, mixer) in self.layers.iter_mut().zip(&self.layer_mixers) {
            state.truncate(pos, mixer);
        }
        self.pos = pos;
        if let Some(r) = self.routes.as_mut() {
            r.retain(|r| r.pos < pos);
        }
        true
    }

    /// Whether [`rewind`](Self::rewind) to `pos` would succeed.
    pub fn can_rewind(&self, pos: usize) -> bool {
        if pos == self.pos {
            return true;
        }
        if pos > self.pos || self.layer_mixers.iter().any(|m| !m.rewindable()) {
            return false;
        }
        self.layers
            .iter()
            .zip(&self.layer_mixers)
            .all(|(state, mixer)| state.can_rewind(pos, mixer))
    }

    /// The longest prefix of at most `n` positions this session can be cut back to: `n` itself
    /// where every layer can, else (compressed attention) the last window boundary before it
    /// that all layers can; None where none can.
    pub fn rewind_point(&self, n: usize) -> Option<usize> {
        let n = n.min(self.pos);
        let span = self.layer_mixers.iter().map(|m| m.rewind_span()).max().unwrap_or(0);
        (n.saturating_sub(span)..=n).rev().find(|&p| self.can_rewind(p))
    }

    /// Stores pseudo-random keys and values for the first `positions` of every attention
    /// cache without running the model, and moves the session past them: decode then runs at
    /// that depth (llama-bench's `-d`), for measuring speed only (what it generates is
    /// meaningless). Refused for models with a recurrent state, which cannot be faked.
    pub fn fill_for_benchmark(&mut self, spec: &ModelSpec, positions: usize) -> Result<()> {
        self.prepare(spec)?;
        if positions > self.ctx
            || !self.rewind(0)
            || self.layers.iter().any(|l| l.fixed_bytes() > 0)
        {
            return Err(Error::Invalid(format!(
                "cannot fill {positions} positions of a {}-position session with a recurrent state or past tokens",
                self.ctx
            )));
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        for state in &mut self.layers {
            let LayerState::Attention(kv) = state else { continue };
            let l = kv.layout();
            let mut k = vec![0.0f32; l.heads * l.k.dim()];
            let mut v = vec![0.0f32; l.heads * l.v.dim()];
            for pos in 0..positions {
                k.iter_mut().chain(v.iter_mut()).for_each(|e| *e = next());
                if l.shared {
                    kv.store_shared(pos, &k);
                } else {
                    kv.store(pos, &k, &v);
                }
            }
        }
        self.pos = positions;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn set_position_for_tests(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// Positions this session holds (0 before its first forward pass).
    pub fn context(&self) -> usize {
        self.ctx
    }

    /// How it is sized.
    pub fn options(&self) -> SessionOptions {
        self.options
    }

    /// Bytes held by the per-layer state (KV caches and fixed-size recurrent states).
    pub fn kv_bytes(&self) -> usize {
        self.layers.iter().map(LayerState::bytes).sum()
    }

    /// Bytes of the fixed-size (linear-attention) part of the state, which does not grow with
    /// the context.
    pub fn recurrent_bytes(&self) -> usize {
        self.layers.iter().map(LayerState::fixed_bytes).sum()
    }

    /// The logits of the last forward pass (`vocab` floats per returned token).
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.scratch.logits
    }

    /// Allocates the per-layer state for `spec` if not yet done.
    pub(crate) fn prepare(&mut self, spec: &ModelSpec) -> Result<()> {
        if !self.layers.is_empty() {
            return Ok(());
        }
        let ctx = self.options.ctx_for(spec)?;
        self.options.kv.check(spec)?;
        let (kv, record) = (self.options.kv, self.record_queries);
        let layers = spec
            .layers
            .iter()
            .map(|l| LayerState::new(&l.mixer, kv, ctx, record))
            .collect::<Result<Vec<_>>>()?;
        (self.layers, self.ctx) = (layers, ctx);
        self.layer_mixers = spec.layers.iter().map(|l| l.mixer).collect();
        Ok(())
    }
}
