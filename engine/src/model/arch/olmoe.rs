//! OLMoE: Llama naming, q/k RMSNorm over the whole projection (`q_norm [hidden]`,
//! `k_norm [kv_dim]`), router `mlp.gate`, experts `mlp.experts.{e}`.

use crate::model::arch::{
    llama_dense, qwen_style_expert, ArchNames, Dense, ExpertPart, ExpertTensor,
};

pub(super) struct Olmoe;

impl ArchNames for Olmoe {
    fn dense(&self, t: Dense) -> Vec<String> {
        llama_dense(t, &["mlp.gate.weight"], "mlp")
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        qwen_style_expert(l, e, part, ffn)
    }
}
