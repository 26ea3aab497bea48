//! Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): Llama naming, per-head q/k norm, router
//! `mlp.gate`, experts `mlp.experts.{e}`, dense MLP layers (`mlp_only_layers`) as `mlp.*_proj`.

use crate::model::arch::{
    llama_dense, qwen_style_expert, ArchNames, Dense, ExpertPart, ExpertTensor,
};

pub(super) struct Qwen3Moe;

impl ArchNames for Qwen3Moe {
    fn dense(&self, t: Dense) -> Vec<String> {
        llama_dense(t, &["mlp.gate.weight"], "mlp")
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        qwen_style_expert(l, e, part, ffn)
    }
}
