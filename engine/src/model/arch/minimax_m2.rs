//! MiniMax-M2: Llama naming for attention (q/k norms over the whole projection), the MoE block
//! `block_sparse_moe` with router `gate`, its selection bias `e_score_correction_bias` and
//! experts `w1` (gate), `w3` (up), `w2` (down) as Mixtral's.

use crate::model::arch::{llama_dense, ArchNames, Dense, ExpertPart, ExpertTensor};

pub(super) struct MinimaxM2;

impl ArchNames for MinimaxM2 {
    fn dense(&self, t: Dense) -> Vec<String> {
        match t {
            Dense::RouterBias(l) => vec![
                format!("model.layers.{l}.block_sparse_moe.e_score_correction_bias"),
                format!("model.layers.{l}.mlp.e_score_correction_bias"),
            ],
            _ => llama_dense(t, &["block_sparse_moe.gate.weight", "mlp.gate.weight"], "mlp"),
        }
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        super::mixtral::Mixtral.expert(l, e, part, ffn)
    }
}
