//! Qwen3.5/3.6-MoE (`Qwen3_5MoeForCausalLM`; the multimodal checkpoint's `model.language_model.`
//! prefix is mapped to `model.` when the checkpoint is opened): Qwen2-MoE's MoE naming
//! (router `mlp.gate`, `mlp.shared_expert.*` with `mlp.shared_expert_gate`), Gated DeltaNet
//! layers under `linear_attn.*`.

use crate::model::arch::{
    llama_dense, qwen_style_expert, ArchNames, Dense, ExpertPart, ExpertTensor,
};

pub(super) struct Qwen35Moe;

impl ArchNames for Qwen35Moe {
    fn dense(&self, t: Dense) -> Vec<String> {
        llama_dense(t, &["mlp.gate.weight"], "mlp.shared_expert")
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        qwen_style_expert(l, e, part, ffn)
    }
}
