//! GLM-4.5/4.6/4.7 (`Glm4MoeForCausalLM`): Llama naming with q/k/v biases, router `mlp.gate`
//! with `mlp.gate.e_score_correction_bias`, one ungated shared expert `mlp.shared_experts.*`,
//! and the leading dense layers' MLP `mlp.*_proj`.

use crate::model::arch::{
    llama_dense, qwen_style_expert, ArchNames, Dense, ExpertPart, ExpertTensor,
};

pub(super) struct Glm4Moe;

impl ArchNames for Glm4Moe {
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
