//! Gemma 4 (`Gemma4ForCausalLM`; the hub's `Gemma4ForConditionalGeneration` keeps the text
//! model under `model.language_model.`, mapped to `model.` when the checkpoint is opened):
//! Llama naming for attention and the dense MLP (`mlp.*_proj`), but `post_attention_layernorm`
//! is the mixer's output norm and `pre_feedforward_layernorm` the block's input norm; the router
//! is `router.{proj, scale, per_expert_scale}`; experts are stored fused,
//! `experts.gate_up_proj [E, 2F, H]` and `experts.down_proj [E, H, F]`.

use crate::model::arch::{llama_dense, ArchNames, Dense, ExpertPart, ExpertTensor};

pub(super) struct Gemma4;

impl ArchNames for Gemma4 {
    fn dense(&self, t: Dense) -> Vec<String> {
        let l = |i: usize, s: &str| vec![format!("model.layers.{i}.{s}")];
        match t {
            Dense::FfnNorm(i) => l(i, "pre_feedforward_layernorm.weight"),
            Dense::Router(i) => l(i, "router.proj.weight"),
            _ => llama_dense(t, &[], "mlp"),
        }
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, ffn: usize) -> Vec<ExpertTensor> {
        let name = |p: &str| format!("model.layers.{l}.experts.{p}");
        vec![match part {
            ExpertPart::Gate => {
                ExpertTensor::Fused { name: name("gate_up_proj"), expert: e, rows: (0, ffn) }
            }
            ExpertPart::Up => {
                ExpertTensor::Fused { name: name("gate_up_proj"), expert: e, rows: (ffn, ffn) }
            }
            ExpertPart::Down => {
                ExpertTensor::Fused { name: name("down_proj"), expert: e, rows: (0, usize::MAX) }
            }
        }]
    }
}
