//! The DeepSeek naming, which GLM-4.5 shares: DeepSeek-V2/V3 (`DeepseekV2ForCausalLM`,
//! `DeepseekV3ForCausalLM`) and GLM-4.5/4.6/4.7 (`Glm4MoeForCausalLM`). Llama naming (GLM with
//! q/k/v biases; DeepSeek with MLA's `self_attn.{q_a_proj, q_a_layernorm, q_b_proj | q_proj,
//! kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj}`), router `mlp.gate` (sigmoid routers with
//! `mlp.gate.e_score_correction_bias`), ungated shared experts `mlp.shared_experts.*`, and the
//! leading dense layers' MLP `mlp.*_proj`.

use crate::model::arch::{
    llama_dense, qwen_style_expert, ArchNames, Dense, ExpertPart, ExpertTensor,
};

pub(super) struct SharedExperts;

impl ArchNames for SharedExperts {
    fn dense(&self, t: Dense) -> Vec<String> {
        let mut v = llama_dense(t, &["mlp.gate.weight"], "mlp.shared_experts");
        if let Dense::SharedGate(_) | Dense::SharedUp(_) | Dense::SharedDown(_) = t {
            v.extend(llama_dense(t, &[], "mlp"));
        }
        v
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        qwen_style_expert(l, e, part, ffn)
    }
}
