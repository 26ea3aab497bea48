//! Qwen1.5/Qwen2-MoE, and Qwen3.5/3.6-MoE which names its MoE the same way: Llama naming with
//! q/k/v biases (Qwen2), router `mlp.gate`, a shared expert `mlp.shared_expert.*_proj` scaled by
//! `sigmoid(mlp.shared_expert_gate . x)`; Qwen3.5's Gated DeltaNet layers under `linear_attn.*`
//! (the multimodal checkpoint's `model.language_model.` prefix is mapped to `model.` when the
//! checkpoint is opened).

use crate::model::arch::{
    llama_dense, qwen_style_expert, ArchNames, Dense, ExpertPart, ExpertTensor,
};

pub(super) struct Qwen2Moe;

impl ArchNames for Qwen2Moe {
    fn dense(&self, t: Dense) -> Vec<String> {
        let mut v = llama_dense(t, &["mlp.gate.weight"], "mlp.shared_expert");
        // Dense-MLP layers (mlp_only_layers) name their MLP `mlp.*_proj`.
        if let Dense::SharedGate(_) | Dense::SharedUp(_) | Dense::SharedDown(_) = t {
            v.extend(llama_dense(t, &[], "mlp"));
        }
        v
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        qwen_style_expert(l, e, part, ffn)
    }
}
