//! Mixtral: hub checkpoints name the MoE block `block_sparse_moe` with experts `w1` (gate),
//! `w3` (up) and `w2` (down); transformers v5 renames it `mlp` with fused experts.

use crate::model::arch::{fused, llama_dense, ArchNames, Dense, ExpertPart, ExpertTensor};

pub(super) struct Mixtral;

impl ArchNames for Mixtral {
    fn dense(&self, t: Dense) -> Vec<String> {
        llama_dense(t, &["block_sparse_moe.gate.weight", "mlp.gate.weight"], "mlp")
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        let w = match part {
            ExpertPart::Gate => "w1",
            ExpertPart::Up => "w3",
            ExpertPart::Down => "w2",
        };
        vec![
            ExpertTensor::Single(format!(
                "model.layers.{l}.block_sparse_moe.experts.{e}.{w}.weight"
            )),
            fused(l, e, part, ffn),
        ]
    }
}
