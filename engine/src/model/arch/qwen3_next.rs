//! Qwen3-Next: Qwen3.5's naming except the DeltaNet projections, fused per key head:
//! `linear_attn.in_proj_qkvz` (q, k, v and the output gate z; split when packed) and
//! `linear_attn.in_proj_ba` (stored as it is).

use crate::model::arch::{
    llama_dense, qwen_style_expert, ArchNames, Dense, ExpertPart, ExpertTensor,
};

pub(super) struct Qwen3Next;

impl ArchNames for Qwen3Next {
    fn dense(&self, t: Dense) -> Vec<String> {
        match t {
            Dense::LinQkv(l) | Dense::LinGate(l) => {
                vec![format!("model.layers.{l}.linear_attn.in_proj_qkvz.weight")]
            }
            _ => {
                let mut v = llama_dense(t, &["mlp.gate.weight"], "mlp.shared_expert");
                if let Dense::SharedGate(_) | Dense::SharedUp(_) | Dense::SharedDown(_) = t {
                    v.extend(llama_dense(t, &[], "mlp"));
                }
                v
            }
        }
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        qwen_style_expert(l, e, part, ffn)
    }
}
