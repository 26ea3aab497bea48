//! gpt-oss (`GptOssForCausalLM`): Llama naming with q/k/v/o biases and `self_attn.sinks`,
//! router `mlp.router` with a bias, and the experts of a layer stacked and transposed:
//! `mlp.experts.gate_up_proj [E, hidden, 2 ffn]` (gate and up in alternating columns, with
//! `gate_up_proj_bias [E, 2 ffn]`) and `mlp.experts.down_proj [E, ffn, hidden]` (with
//! `down_proj_bias [E, hidden]`); or, in the hub's MXFP4 checkpoints, `*_blocks` and `*_scales`
//! (not transposed, gate and up in alternating rows).

use crate::model::arch::{llama_dense, ArchNames, Dense, ExpertPart, ExpertTensor};

pub(super) struct GptOss;

impl ArchNames for GptOss {
    fn dense(&self, t: Dense) -> Vec<String> {
        llama_dense(t, &["mlp.router.weight"], "mlp")
    }
    fn expert(&self, l: usize, e: usize, part: ExpertPart, _ffn: usize) -> Vec<ExpertTensor> {
        let name = |p: &str| format!("model.layers.{l}.mlp.experts.{p}");
        // The hub's MXFP4 tensors (not transposed; gate and up in alternating rows).
        let (tensor, first, step) = match part {
            ExpertPart::Gate => ("gate_up_proj", 0, 2),
            ExpertPart::Up => ("gate_up_proj", 1, 2),
            ExpertPart::Down => ("down_proj", 0, 1),
        };
        let mxfp4 = ExpertTensor::Mxfp4 {
            blocks: name(&format!("{tensor}_blocks")),
            scales: name(&format!("{tensor}_scales")),
            expert: e,
            first,
            step,
        };
        // Else the bf16/f32 tensors, stored transposed.
        vec![
            mxfp4,
            match part {
                ExpertPart::Gate => ExpertTensor::Transposed {
                    name: name("gate_up_proj"),
                    expert: e,
                    first: 0,
                    step: 2,
                },
                ExpertPart::Up => ExpertTensor::Transposed {
                    name: name("gate_up_proj"),
                    expert: e,
                    first: 1,
                    step: 2,
                },
                ExpertPart::Down => ExpertTensor::Transposed {
                    name: name("down_proj"),
                    expert: e,
                    first: 0,
                    step: 1,
                },
            },
        ]
    }
}
