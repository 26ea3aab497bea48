//! DeepSeek-V4's checkpoint naming (DeepSeek's own, as the hub ships it and transformers
//! converts on load): `embed`, `head`, `norm`, per layer `attn_norm`, `ffn_norm`, `attn.*`
//! (`wq_a`, `q_norm`, `wq_b`, `wkv`, `kv_norm`, `wo_a`, `wo_b`, `attn_sink`, the compressor and
//! the indexer), `hc_{attn,ffn}_{fn,base,scale}`, and the MoE as `ffn.gate` (with `bias` or
//! `tid2eid`), `ffn.experts.{e}.w1/w3/w2`, `ffn.shared_experts.w1/w3/w2`.

use crate::model::arch::{ArchNames, Dense, ExpertPart, ExpertTensor};

pub(super) struct DeepseekV4;

impl ArchNames for DeepseekV4 {
    fn dense(&self, t: Dense) -> Vec<String> {
        use Dense::*;
        let l = |l: usize, s: &str| vec![format!("layers.{l}.{s}")];
        match t {
            Embed => vec!["embed.weight".into()],
            LmHead => vec!["head.weight".into()],
            FinalNorm => vec!["norm.weight".into()],
            HcHeadFn => vec!["hc_head_fn".into()],
            HcHeadBase => vec!["hc_head_base".into()],
            HcHeadScale => vec!["hc_head_scale".into()],
            AttnNorm(i) => l(i, "attn_norm.weight"),
            FfnNorm(i) => l(i, "ffn_norm.weight"),
            MlaQA(i) => l(i, "attn.wq_a.weight"),
            MlaQANorm(i) => l(i, "attn.q_norm.weight"),
            MlaQB(i) => l(i, "attn.wq_b.weight"),
            Kv(i) => l(i, "attn.wkv.weight"),
            MlaKVANorm(i) => l(i, "attn.kv_norm.weight"),
            OA(i) => l(i, "attn.wo_a.weight"),
            OB(i) => l(i, "attn.wo_b.weight"),
            AttnSinks(i) => l(i, "attn.attn_sink"),
            CmpKv(i) => l(i, "attn.compressor.wkv.weight"),
            CmpGate(i) => l(i, "attn.compressor.wgate.weight"),
            CmpApe(i) => l(i, "attn.compressor.ape"),
            CmpNorm(i) => l(i, "attn.compressor.norm.weight"),
            IdxQ(i) => l(i, "attn.indexer.wq_b.weight"),
            IdxWeights(i) => l(i, "attn.indexer.weights_proj.weight"),
            IdxCmpKv(i) => l(i, "attn.indexer.compressor.wkv.weight"),
            IdxCmpGate(i) => l(i, "attn.indexer.compressor.wgate.weight"),
            IdxCmpApe(i) => l(i, "attn.indexer.compressor.ape"),
            IdxCmpNorm(i) => l(i, "attn.indexer.compressor.norm.weight"),
            HcAttnFn(i) => l(i, "hc_attn_fn"),
            HcAttnBase(i) => l(i, "hc_attn_base"),
            HcAttnScale(i) => l(i, "hc_attn_scale"),
            HcFfnFn(i) => l(i, "hc_ffn_fn"),
            HcFfnBase(i) => l(i, "hc_ffn_base"),
            HcFfnScale(i) => l(i, "hc_ffn_scale"),
            Router(i) => l(i, "ffn.gate.weight"),
            RouterBias(i) => l(i, "ffn.gate.bias"),
            HashTable(i) => l(i, "ffn.gate.tid2eid"),
            SharedGate(i) => l(i, "ffn.shared_experts.w1.weight"),
            SharedUp(i) => l(i, "ffn.shared_experts.w3.weight"),
            SharedDown(i) => l(i, "ffn.shared_experts.w2.weight"),
            // No other role exists in a V4 checkpoint: a name that matches nothing.
            other => vec![format!("(deepseek_v4 has no {})", other.key())],
        }
    }

    fn expert(&self, l: usize, e: usize, part: ExpertPart, _ffn: usize) -> Vec<ExpertTensor> {
        let w = match part {
            ExpertPart::Gate => "w1",
            ExpertPart::Up => "w3",
            ExpertPart::Down => "w2",
        };
        vec![ExpertTensor::Single(format!("layers.{l}.ffn.experts.{e}.{w}.weight"))]
    }
}
