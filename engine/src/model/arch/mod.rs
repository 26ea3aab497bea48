//! The architecture registry: how each architecture names its tensors in a Hugging Face
//! checkpoint. Shapes and the forward pass follow from the layer spec
//! ([`crate::model::spec`]), which the configuration resolves once at load.

mod deepseek_v4;
mod gemma4;
mod gpt_oss;
mod minimax_m2;
mod mixtral;
mod olmoe;
mod qwen2_moe;
mod qwen3_moe;
mod qwen3_next;
mod shared_experts;

use crate::model::config::Arch;

/// A dense (always resident) tensor of the model, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dense {
    /// Token embeddings [vocab, hidden].
    Embed,
    /// Output projection [vocab, hidden].
    LmHead,
    /// Final RMSNorm.
    FinalNorm,
    /// Per layer: RMSNorm before attention.
    AttnNorm(usize),
    /// Per layer: q projection.
    Q(usize),
    /// Per layer: k projection.
    K(usize),
    /// Per layer: v projection.
    V(usize),
    /// Per layer: o projection.
    O(usize),
    /// Per layer: q bias.
    QBias(usize),
    /// Per layer: k bias.
    KBias(usize),
    /// Per layer: v bias.
    VBias(usize),
    /// Per layer: q RMSNorm weight.
    QNorm(usize),
    /// Per layer: k RMSNorm weight.
    KNorm(usize),
    /// Per layer: RMSNorm before the MLP / MoE block.
    FfnNorm(usize),
    /// Per MoE layer: router [experts, hidden].
    Router(usize),
    /// Per layer: shared expert (or dense MLP) gate projection.
    SharedGate(usize),
    /// Per layer: shared expert (or dense MLP) up projection.
    SharedUp(usize),
    /// Per layer: shared expert (or dense MLP) down projection.
    SharedDown(usize),
    /// Per layer: the shared expert's sigmoid gate [1, hidden].
    SharedExpertGate(usize),
    /// Per MoE layer: the sigmoid router's expert-selection bias [experts].
    RouterBias(usize),
    /// Per layer: attention sink logits, one per query head.
    AttnSinks(usize),
    /// Per DeltaNet layer: q/k/v projection [qkv_dim, hidden].
    LinQkv(usize),
    /// Per DeltaNet layer: output gate projection (z) [value_total, hidden].
    LinGate(usize),
    /// Per DeltaNet layer: beta projection (b) [value_heads, hidden].
    LinBeta(usize),
    /// Per DeltaNet layer: decay-step projection (a) [value_heads, hidden].
    LinAlpha(usize),
    /// Per grouped DeltaNet layer (Qwen3-Next): beta and decay-step projections in one
    /// [2 x value_heads, hidden], per key head its betas then its alphas.
    LinBetaAlpha(usize),
    /// Per DeltaNet layer: depthwise causal convolution [qkv_dim, kernel].
    LinConv(usize),
    /// Per DeltaNet layer: `A = -exp(A_log)` per value head.
    LinA(usize),
    /// Per DeltaNet layer: the decay step's bias per value head.
    LinDtBias(usize),
    /// Per DeltaNet layer: the gated RMSNorm's weight [value_dim].
    LinNorm(usize),
    /// Per DeltaNet layer: output projection [hidden, value_total].
    LinOut(usize),
    /// Per MLA layer: the query LoRA's down projection [q_lora_rank, hidden].
    MlaQA(usize),
    /// Per MLA layer: the query LoRA's RMSNorm.
    MlaQANorm(usize),
    /// Per MLA layer: the query LoRA's up projection [heads x (nope + rope), q_lora_rank].
    MlaQB(usize),
    /// Per MLA layer: the latent and the shared RoPE key [kv_rank + rope, hidden].
    MlaKVA(usize),
    /// Per MLA layer: the latent's RMSNorm.
    MlaKVANorm(usize),
    /// Per MLA layer: per head, the latent-to-key map transposed [heads x kv_rank, nope].
    MlaKB(usize),
    /// Per MLA layer: per head, the latent-to-value map [heads x v, kv_rank].
    MlaVB(usize),
    /// Per layer: the output projection's bias [hidden] (gpt-oss).
    OBias(usize),
    /// Per MoE layer: the router logits' bias [experts] (gpt-oss).
    RouterLogitBias(usize),
    /// Per MoE layer: every expert's gate bias [experts, ffn] (gpt-oss).
    ExpGateBias(usize),
    /// Per MoE layer: every expert's up bias [experts, ffn].
    ExpUpBias(usize),
    /// Per MoE layer: every expert's down bias [experts, hidden].
    ExpDownBias(usize),
    /// Per layer: RMSNorm of the mixer's output before the residual (Gemma 4).
    PostAttnNorm(usize),
    /// Per layer: RMSNorm of the feed-forward block's output before the residual (Gemma 4).
    PostFfnNorm(usize),
    /// Per layer: RMSNorm of the dense MLP's output beside the MoE (Gemma 4).
    PostFfnNorm1(usize),
    /// Per layer: RMSNorm of the residual into the experts (Gemma 4).
    PreFfnNorm2(usize),
    /// Per layer: RMSNorm of the experts' output (Gemma 4).
    PostFfnNorm2(usize),
    /// Per layer: the layer output's scalar factor [1] (Gemma 4).
    LayerScalar(usize),
    /// Per MoE layer: the router input's per-channel scale [hidden] (Gemma 4).
    RouterScale(usize),
    /// Per MoE layer: each expert's factor on its routing weight [experts] (Gemma 4).
    ExpertScale(usize),
    /// Per full indexer layer: the indexer's query projection [heads x dim, q_lora_rank].
    IdxQ(usize),
    /// Per full indexer layer: its key projection [dim, hidden].
    IdxK(usize),
    /// Per full indexer layer: its key LayerNorm's weight [dim].
    IdxKNorm(usize),
    /// Per full indexer layer: its key LayerNorm's bias [dim].
    IdxKNormBias(usize),
    /// Per full indexer layer: its per-head score weights [heads, hidden].
    IdxWeights(usize),
    /// The hyper head's stream-weight projection [streams, streams x hidden] (DeepSeek-V4).
    HcHeadFn,
    /// The hyper head's stream-weight bias [streams].
    HcHeadBase,
    /// The hyper head's stream-weight scale [1].
    HcHeadScale,
    /// Per layer: shared-KV attention's one key/value head [head_dim, hidden] (DeepSeek-V4).
    Kv(usize),
    /// Per layer: the grouped output projection's second stage [hidden, groups x rank].
    OB(usize),
    /// Per layer: the grouped output projection's first stage [groups x rank, heads x head_dim / groups].
    OA(usize),
    /// Per compressed layer: the compressor's value projection [width, hidden] (width: head_dim, twice that when windows overlap).
    CmpKv(usize),
    /// Per compressed layer: the compressor's gate projection [width, hidden].
    CmpGate(usize),
    /// Per compressed layer: the compressor's gate bias per window slot [ratio, width].
    CmpApe(usize),
    /// Per compressed layer: the compressed entries' RMSNorm [head_dim].
    CmpNorm(usize),
    /// Per indexed layer: the indexer compressor's value projection [2 x dim, hidden].
    IdxCmpKv(usize),
    /// Per indexed layer: the indexer compressor's gate projection [2 x dim, hidden].
    IdxCmpGate(usize),
    /// Per indexed layer: the indexer compressor's gate bias per slot [ratio, 2 x dim].
    IdxCmpApe(usize),
    /// Per indexed layer: the indexer keys' RMSNorm [dim].
    IdxCmpNorm(usize),
    /// Per layer: the mixer's hyper-connection projection [(2 + streams) x streams, streams x hidden].
    HcAttnFn(usize),
    /// Per layer: its bias [(2 + streams) x streams].
    HcAttnBase(usize),
    /// Per layer: its three scales (pre, post, mix) [3].
    HcAttnScale(usize),
    /// Per layer: the feed-forward block's hyper-connection projection.
    HcFfnFn(usize),
    /// Per layer: its bias.
    HcFfnBase(usize),
    /// Per layer: its three scales.
    HcFfnScale(usize),
    /// Per hash-routed layer: each token's experts [vocab, top_k], as f32 (`tid2eid`).
    HashTable(usize),
}

impl Dense {
    /// The name floe stores the tensor under in `floe.json`.
    pub fn key(self) -> String {
        use Dense::*;
        match self {
            Embed => "embed".into(),
            LmHead => "lm_head".into(),
            FinalNorm => "final_norm".into(),
            AttnNorm(l) => format!("{l}.attn_norm"),
            Q(l) => format!("{l}.q"),
            K(l) => format!("{l}.k"),
            V(l) => format!("{l}.v"),
            O(l) => format!("{l}.o"),
            QBias(l) => format!("{l}.q_bias"),
            KBias(l) => format!("{l}.k_bias"),
            VBias(l) => format!("{l}.v_bias"),
            QNorm(l) => format!("{l}.q_norm"),
            KNorm(l) => format!("{l}.k_norm"),
            FfnNorm(l) => format!("{l}.ffn_norm"),
            Router(l) => format!("{l}.router"),
            SharedGate(l) => format!("{l}.shared_gate"),
            SharedUp(l) => format!("{l}.shared_up"),
            SharedDown(l) => format!("{l}.shared_down"),
            SharedExpertGate(l) => format!("{l}.shared_expert_gate"),
            RouterBias(l) => format!("{l}.router_bias"),
            AttnSinks(l) => format!("{l}.attn_sinks"),
            LinQkv(l) => format!("{l}.lin_qkv"),
            LinGate(l) => format!("{l}.lin_gate"),
            LinBeta(l) => format!("{l}.lin_beta"),
            LinAlpha(l) => format!("{l}.lin_alpha"),
            LinBetaAlpha(l) => format!("{l}.lin_beta_alpha"),
            LinConv(l) => format!("{l}.lin_conv"),
            LinA(l) => format!("{l}.lin_a"),
            LinDtBias(l) => format!("{l}.lin_dt_bias"),
            LinNorm(l) => format!("{l}.lin_norm"),
            LinOut(l) => format!("{l}.lin_out"),
            MlaQA(l) => format!("{l}.mla_q_a"),
            MlaQANorm(l) => format!("{l}.mla_q_a_norm"),
            MlaQB(l) => format!("{l}.mla_q_b"),
            MlaKVA(l) => format!("{l}.mla_kv_a"),
            MlaKVANorm(l) => format!("{l}.mla_kv_a_norm"),
            MlaKB(l) => format!("{l}.mla_k_b"),
            MlaVB(l) => format!("{l}.mla_v_b"),
            OBias(l) => format!("{l}.o_bias"),
            RouterLogitBias(l) => format!("{l}.router_logit_bias"),
            ExpGateBias(l) => format!("{l}.expert_gate_bias"),
            ExpUpBias(l) => format!("{l}.expert_up_bias"),
            ExpDownBias(l) => format!("{l}.expert_down_bias"),
            PostAttnNorm(l) => format!("{l}.post_attn_norm"),
            PostFfnNorm(l) => format!("{l}.post_ffn_norm"),
            PostFfnNorm1(l) => format!("{l}.post_ffn_norm_1"),
            PreFfnNorm2(l) => format!("{l}.pre_ffn_norm_2"),
            PostFfnNorm2(l) => format!("{l}.post_ffn_norm_2"),
            LayerScalar(l) => format!("{l}.layer_scalar"),
            RouterScale(l) => format!("{l}.router_scale"),
            ExpertScale(l) => format!("{l}.expert_scale"),
            IdxQ(l) => format!("{l}.indexer_q"),
            IdxK(l) => format!("{l}.indexer_k"),
            IdxKNorm(l) => format!("{l}.indexer_k_norm"),
            IdxKNormBias(l) => format!("{l}.indexer_k_norm_bias"),
            IdxWeights(l) => format!("{l}.indexer_weights"),
            HcHeadFn => "hc_head_fn".into(),
            HcHeadBase => "hc_head_base".into(),
            HcHeadScale => "hc_head_scale".into(),
            Kv(l) => format!("{l}.kv"),
            OB(l) => format!("{l}.o_b"),
            OA(l) => format!("{l}.o_a"),
            CmpKv(l) => format!("{l}.cmp_kv"),
            CmpGate(l) => format!("{l}.cmp_gate"),
            CmpApe(l) => format!("{l}.cmp_ape"),
            CmpNorm(l) => format!("{l}.cmp_norm"),
            IdxCmpKv(l) => format!("{l}.idx_cmp_kv"),
            IdxCmpGate(l) => format!("{l}.idx_cmp_gate"),
            IdxCmpApe(l) => format!("{l}.idx_cmp_ape"),
            IdxCmpNorm(l) => format!("{l}.idx_cmp_norm"),
            HcAttnFn(l) => format!("{l}.hc_attn_fn"),
            HcAttnBase(l) => format!("{l}.hc_attn_base"),
            HcAttnScale(l) => format!("{l}.hc_attn_scale"),
            HcFfnFn(l) => format!("{l}.hc_ffn_fn"),
            HcFfnBase(l) => format!("{l}.hc_ffn_base"),
            HcFfnScale(l) => format!("{l}.hc_ffn_scale"),
            HashTable(l) => format!("{l}.hash_table"),
        }
    }

    /// Whether this tensor is a vector (norm weight, bias): always stored as f32.
    pub fn is_vector(self) -> bool {
        use Dense::*;
        matches!(
            self,
            FinalNorm
                | AttnNorm(_)
                | QBias(_)
                | KBias(_)
                | VBias(_)
                | QNorm(_)
                | KNorm(_)
                | FfnNorm(_)
                | RouterBias(_)
                | AttnSinks(_)
                | LinA(_)
                | LinDtBias(_)
                | LinNorm(_)
                | MlaQANorm(_)
                | MlaKVANorm(_)
                | OBias(_)
                | RouterLogitBias(_)
                | PostAttnNorm(_)
                | PostFfnNorm(_)
                | PostFfnNorm1(_)
                | PreFfnNorm2(_)
                | PostFfnNorm2(_)
                | LayerScalar(_)
                | RouterScale(_)
                | ExpertScale(_)
                | IdxKNorm(_)
                | IdxKNormBias(_)
                | HcHeadBase
                | HcHeadScale
                | CmpNorm(_)
                | IdxCmpNorm(_)
                | HcAttnBase(_)
                | HcAttnScale(_)
                | HcFfnBase(_)
                | HcFfnScale(_)
        )
    }

    /// Whether this tensor stays f32 whatever the dense dtype (routers decide which experts run:
    /// they are small and their precision matters).
    pub fn keep_f32(self) -> bool {
        self.is_vector()
            || matches!(
                self,
                Dense::Router(_)
                    | Dense::SharedExpertGate(_)
                    | Dense::LinConv(_)
                    | Dense::ExpGateBias(_)
                    | Dense::ExpUpBias(_)
                    | Dense::ExpDownBias(_)
                    | Dense::IdxWeights(_)
                    | Dense::HcHeadFn
                    | Dense::HcAttnFn(_)
                    | Dense::HcFfnFn(_)
                    | Dense::CmpApe(_)
                    | Dense::IdxCmpApe(_)
                    | Dense::HashTable(_)
            )
    }
}

/// One of an expert's three matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertPart {
    /// gate [ffn, hidden].
    Gate,
    /// up [ffn, hidden].
    Up,
    /// down [hidden, ffn].
    Down,
}

/// Where an expert matrix lives in the checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertTensor {
    /// Its own 2-D tensor.
    Single(String),
    /// Slice `expert` of a stacked 3-D tensor `[experts, cols, n]` stored transposed: the
    /// matrix's row `i` is the slice's column `first + step * i` (gpt-oss's `gate_up_proj`
    /// interleaves gate and up columns: step 2).
    Transposed {
        /// The 3-D tensor.
        name: String,
        /// Index in the first dimension.
        expert: usize,
        /// The slice column of the matrix's first row.
        first: usize,
        /// Columns between consecutive rows.
        step: usize,
    },
    /// MXFP4 rows of expert `expert` as the gpt-oss hub checkpoints store them: the matrix's
    /// row `i` is row `first + step * i` of `blocks` `[E, rows, cols / 32, 16]` with its
    /// `scales` `[E, rows, cols / 32]`.
    Mxfp4 {
        /// The U8 blocks tensor.
        blocks: String,
        /// The U8 scales tensor.
        scales: String,
        /// Index in the first dimension.
        expert: usize,
        /// The first row.
        first: usize,
        /// Rows between consecutive matrix rows.
        step: usize,
    },
    /// Rows `rows` of slice `expert` of a stacked 3-D tensor `[experts, rows, cols]`.
    Fused {
        /// The 3-D tensor.
        name: String,
        /// Index in the first dimension.
        expert: usize,
        /// First row and number of rows of the slice.
        rows: (usize, usize),
    },
}

/// Tensor naming of one architecture.
pub trait ArchNames {
    /// Candidate checkpoint names of a dense tensor, most common first.
    fn dense(&self, t: Dense) -> Vec<String>;
    /// Candidate locations of expert `e`'s `part` in layer `l`; `ffn` is the expert width.
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor>;
}

/// The names of `arch`.
pub fn names(arch: Arch) -> &'static dyn ArchNames {
    match arch {
        Arch::Qwen3Moe => &qwen3_moe::Qwen3Moe,
        // Qwen3.5 names its MoE as Qwen2-MoE does (its DeltaNet tensors are llama_dense's).
        Arch::Qwen2Moe | Arch::Qwen35Moe => &qwen2_moe::Qwen2Moe,
        Arch::Qwen3Next => &qwen3_next::Qwen3Next,
        Arch::MinimaxM2 => &minimax_m2::MinimaxM2,
        Arch::Gemma4 => &gemma4::Gemma4,
        Arch::Mixtral => &mixtral::Mixtral,
        Arch::Olmoe => &olmoe::Olmoe,
        Arch::Glm4Moe | Arch::DeepseekV2 | Arch::DeepseekV3 | Arch::GlmMoeDsa => {
            &shared_experts::SharedExperts
        }
        Arch::GptOss => &gpt_oss::GptOss,
        Arch::DeepseekV4 => &deepseek_v4::DeepseekV4,
    }
}

/// Names shared by the Llama family of checkpoints.
pub(crate) fn llama_dense(t: Dense, router: &[&str], mlp: &str) -> Vec<String> {
    use Dense::*;
    let l = |l: usize, s: &str| format!("model.layers.{l}.{s}");
    match t {
        Embed => vec!["model.embed_tokens.weight".into()],
        LmHead => vec!["lm_head.weight".into()],
        FinalNorm => vec!["model.norm.weight".into()],
        AttnNorm(i) => vec![l(i, "input_layernorm.weight")],
        FfnNorm(i) => vec![l(i, "post_attention_layernorm.weight")],
        Q(i) => vec![l(i, "self_attn.q_proj.weight")],
        K(i) => vec![l(i, "self_attn.k_proj.weight")],
        V(i) => vec![l(i, "self_attn.v_proj.weight")],
        O(i) => vec![l(i, "self_attn.o_proj.weight")],
        QBias(i) => vec![l(i, "self_attn.q_proj.bias")],
        KBias(i) => vec![l(i, "self_attn.k_proj.bias")],
        VBias(i) => vec![l(i, "self_attn.v_proj.bias")],
        QNorm(i) => vec![l(i, "self_attn.q_norm.weight")],
        KNorm(i) => vec![l(i, "self_attn.k_norm.weight")],
        Router(i) => router.iter().map(|r| l(i, r)).collect(),
        SharedGate(i) => vec![l(i, &format!("{mlp}.gate_proj.weight"))],
        SharedUp(i) => vec![l(i, &format!("{mlp}.up_proj.weight"))],
        SharedDown(i) => vec![l(i, &format!("{mlp}.down_proj.weight"))],
        SharedExpertGate(i) => vec![l(i, "mlp.shared_expert_gate.weight")],
        RouterBias(i) => vec![l(i, "mlp.gate.e_score_correction_bias")],
        AttnSinks(i) => vec![l(i, "self_attn.sinks")],
        LinQkv(i) => vec![l(i, "linear_attn.in_proj_qkv.weight")],
        LinGate(i) => vec![l(i, "linear_attn.in_proj_z.weight")],
        LinBeta(i) => vec![l(i, "linear_attn.in_proj_b.weight")],
        LinAlpha(i) => vec![l(i, "linear_attn.in_proj_a.weight")],
        LinBetaAlpha(i) => vec![l(i, "linear_attn.in_proj_ba.weight")],
        LinConv(i) => vec![l(i, "linear_attn.conv1d.weight")],
        LinA(i) => vec![l(i, "linear_attn.A_log")],
        LinDtBias(i) => vec![l(i, "linear_attn.dt_bias")],
        LinNorm(i) => vec![l(i, "linear_attn.norm.weight")],
        LinOut(i) => vec![l(i, "linear_attn.out_proj.weight")],
        MlaQA(i) => vec![l(i, "self_attn.q_a_proj.weight")],
        MlaQANorm(i) => vec![l(i, "self_attn.q_a_layernorm.weight")],
        MlaQB(i) => vec![l(i, "self_attn.q_b_proj.weight")],
        MlaKVA(i) => vec![l(i, "self_attn.kv_a_proj_with_mqa.weight")],
        MlaKVANorm(i) => vec![l(i, "self_attn.kv_a_layernorm.weight")],
        // Both halves come from kv_b_proj, split and rearranged when packed.
        MlaKB(i) | MlaVB(i) => vec![l(i, "self_attn.kv_b_proj.weight")],
        OBias(i) => vec![l(i, "self_attn.o_proj.bias")],
        RouterLogitBias(i) => vec![l(i, "mlp.router.bias")],
        // Gate and up biases are the even and odd columns of one tensor.
        ExpGateBias(i) | ExpUpBias(i) => vec![l(i, "mlp.experts.gate_up_proj_bias")],
        ExpDownBias(i) => vec![l(i, "mlp.experts.down_proj_bias")],
        PostAttnNorm(i) => vec![l(i, "post_attention_layernorm.weight")],
        PostFfnNorm(i) => vec![l(i, "post_feedforward_layernorm.weight")],
        PostFfnNorm1(i) => vec![l(i, "post_feedforward_layernorm_1.weight")],
        PreFfnNorm2(i) => vec![l(i, "pre_feedforward_layernorm_2.weight")],
        PostFfnNorm2(i) => vec![l(i, "post_feedforward_layernorm_2.weight")],
        LayerScalar(i) => vec![l(i, "layer_scalar")],
        RouterScale(i) => vec![l(i, "router.scale")],
        ExpertScale(i) => vec![l(i, "router.per_expert_scale")],
        IdxQ(i) => vec![l(i, "self_attn.indexer.wq_b.weight")],
        IdxK(i) => vec![l(i, "self_attn.indexer.wk.weight")],
        IdxKNorm(i) => vec![l(i, "self_attn.indexer.k_norm.weight")],
        IdxKNormBias(i) => vec![l(i, "self_attn.indexer.k_norm.bias")],
        IdxWeights(i) => vec![l(i, "self_attn.indexer.weights_proj.weight")],
        // DeepSeek-V4's own roles: its checkpoints name them (`deepseek_v4.rs`).
        HcHeadFn | HcHeadBase | HcHeadScale | Kv(_) | OB(_) | OA(_) | CmpKv(_) | CmpGate(_)
        | CmpApe(_) | CmpNorm(_) | IdxCmpKv(_) | IdxCmpGate(_) | IdxCmpApe(_) | IdxCmpNorm(_)
        | HcAttnFn(_) | HcAttnBase(_) | HcAttnScale(_) | HcFfnFn(_) | HcFfnBase(_)
        | HcFfnScale(_) | HashTable(_) => Vec::new(),
    }
}

/// Expert locations of the Qwen/OLMoE naming (`mlp.experts.{e}.{gate,up,down}_proj`), plus the
/// transformers v5 fused layout (`mlp.experts.gate_up_proj [E, 2F, H]`, `down_proj [E, H, F]`).
pub(crate) fn qwen_style_expert(
    l: usize,
    e: usize,
    part: ExpertPart,
    ffn: usize,
) -> Vec<ExpertTensor> {
    let single =
        |p: &str| ExpertTensor::Single(format!("model.layers.{l}.mlp.experts.{e}.{p}.weight"));
    let mut v = vec![match part {
        ExpertPart::Gate => single("gate_proj"),
        ExpertPart::Up => single("up_proj"),
        ExpertPart::Down => single("down_proj"),
    }];
    v.push(fused(l, e, part, ffn));
    v
}

pub(crate) fn fused(l: usize, e: usize, part: ExpertPart, ffn: usize) -> ExpertTensor {
    let gate_up = format!("model.layers.{l}.mlp.experts.gate_up_proj");
    match part {
        ExpertPart::Gate => ExpertTensor::Fused { name: gate_up, expert: e, rows: (0, ffn) },
        ExpertPart::Up => ExpertTensor::Fused { name: gate_up, expert: e, rows: (ffn, ffn) },
        ExpertPart::Down => ExpertTensor::Fused {
            name: format!("model.layers.{l}.mlp.experts.down_proj"),
            expert: e,
            rows: (0, usize::MAX),
        },
    }
}
