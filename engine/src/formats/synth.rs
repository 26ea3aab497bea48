//! `floe synth`: a packed model with random weights, written directly in floe's format.
//!
//! The weights are random, so the text is meaningless; what is realistic is the shape (presets
//! of real models) and the routing. Real routers prefer some experts (per-layer popularity
//! roughly Zipf, stronger in deeper layers) and keep about a third of a token's experts for the
//! next token. Here that comes from the weights, not from faking the router: every embedding
//! shares one direction `u`, every router row has a component along `u` sized by its expert's
//! log-popularity, and the rest of both is noise. Quantised expert blocks are drawn as random
//! bytes with a fixed scale, so gigabytes are written in seconds.

use std::path::Path;

use floe_kernels::DType;
use half::bf16;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::formats::encode::encode;
use crate::formats::packed::{
    write_dir_atomically, DenseWriter, Manifest, PackedModel, SlabLayout, SlabWriter,
};
use crate::formats::synth_vocab::{bytes_to_unicode, printable_byte, word_pieces};
use crate::model::arch::Dense;
use crate::model::config::{
    Arch, ClampedSwiglu, LinearAttention, Mla, ModelConfig, QkNorm, SigmoidRouter, Yarn,
};
use crate::model::spec::ModelSpec;
use crate::model::tensors::TensorSpec;

/// A model shape to synthesise.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthShape {
    /// Residual width.
    pub hidden: usize,
    /// Layers (all MoE).
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Routed experts per layer.
    pub experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Expert hidden width.
    pub expert_ffn: usize,
    /// Vocabulary (at least 257: the byte-level tokenizer's).
    pub vocab: usize,
    /// Format of the dense matrices (embeddings, attention); None: bf16 from hidden 512 up,
    /// else f32. Norms and routers are always f32.
    pub dense_dtype: Option<DType>,
    /// The architecture (Qwen3-MoE unless a preset says otherwise).
    pub arch: Arch,
    /// Shared expert width (0: none).
    pub shared_ffn: usize,
    /// Channels RoPE rotates per head, if fewer than the head.
    pub rope_dims: Option<usize>,
    /// Gated DeltaNet layers' shape, with a full-attention layer every
    /// `full_attention_interval` layers (Qwen3.5).
    pub linear: Option<LinearAttention>,
    /// See `linear`.
    pub full_attention_interval: usize,
    /// Leading dense-MLP layers and their width (GLM-4.5).
    pub dense_layers: usize,
    /// See `dense_layers`.
    pub dense_ffn: usize,
    /// A sigmoid router (GLM-4.5, DeepSeek-V3).
    pub sigmoid_router: Option<SigmoidRouter>,
    /// Multi-head latent attention (DeepSeek).
    pub mla: Option<Mla>,
    /// YaRN RoPE (gpt-oss, DeepSeek).
    pub yarn: Option<Yarn>,
    /// A sliding window on every even layer (gpt-oss), or on all but every
    /// `full_attention_interval`-th layer (Gemma 4).
    pub sliding_window: Option<usize>,
    /// Gemma 4's full-attention layers and fixed parts.
    pub gemma: Option<crate::model::gemma::GemmaLayout>,
    /// DeepSeek sparse attention's indexer (GLM-5).
    pub dsa: Option<crate::model::config::Dsa>,
    /// DeepSeek-V4's layout.
    pub v4: Option<crate::model::deepseek_v4::V4Layout>,
}

impl SynthShape {
    /// A named preset: `tiny`, `demo`, `qwen3-30b-a3b`, `mixtral-8x7b`.
    pub fn preset(name: &str) -> Result<Self> {
        let s = |hidden, layers, heads, kv_heads, head_dim, experts, top_k, expert_ffn, vocab| {
            SynthShape {
                hidden,
                layers,
                heads,
                kv_heads,
                head_dim,
                experts,
                top_k,
                expert_ffn,
                vocab,
                dense_dtype: None,
                arch: Arch::Qwen3Moe,
                shared_ffn: 0,
                rope_dims: None,
                linear: None,
                full_attention_interval: 1,
                dense_layers: 0,
                dense_ffn: 0,
                sigmoid_router: None,
                mla: None,
                yarn: None,
                sliding_window: None,
                gemma: None,
                dsa: None,
                v4: None,
            }
        };
        // DeepSeek: MLA (nope 128, rope 64, values 128, latent 512), shared experts, leading
        // dense layers, YaRN.
        let deepseek = |mut sh: SynthShape, q_lora, shared, dense: (usize, usize), mscale: f32| {
            sh.arch = if q_lora > 0 { Arch::DeepseekV3 } else { Arch::DeepseekV2 };
            sh.mla = Some(Mla {
                q_lora_rank: q_lora,
                kv_lora_rank: 512,
                qk_nope_dim: 128,
                qk_rope_dim: 64,
                v_head_dim: 128,
            });
            sh.shared_ffn = shared * sh.expert_ffn;
            (sh.dense_layers, sh.dense_ffn) = dense;
            sh.yarn = Some(Yarn {
                factor: 40.0,
                original_max_positions: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                truncate: true,
                mscale: Some(mscale),
                mscale_all_dim: Some(mscale),
                attention_factor: None,
            });
            sh
        };
        // gpt-oss: windows of 128 on even layers, YaRN x32, MXFP4 experts (`--dtype mxfp4`).
        let gpt_oss = |mut sh: SynthShape| {
            sh.arch = Arch::GptOss;
            sh.sliding_window = Some(128);
            sh.yarn = Some(Yarn {
                factor: 32.0,
                original_max_positions: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                truncate: false,
                mscale: None,
                mscale_all_dim: None,
                attention_factor: None,
            });
            sh
        };
        // Qwen3.5: 3 Gated DeltaNet layers to 1 gated attention layer, partial RoPE (25 %), a
        // gated shared expert.
        let qwen35 = |mut sh: SynthShape, shared, lin: (usize, usize, usize)| {
            sh.arch = Arch::Qwen35Moe;
            sh.shared_ffn = shared;
            sh.rope_dims = Some(sh.head_dim / 4);
            sh.linear = Some(LinearAttention {
                key_heads: lin.0,
                value_heads: lin.1,
                key_dim: lin.2,
                value_dim: lin.2,
                conv_kernel: 4,
                grouped: false,
            });
            sh.full_attention_interval = 4;
            sh
        };
        // Qwen3-Next: Qwen3.5's layers with its DeltaNet projections fused per key head.
        let qwen3_next = |sh: SynthShape, shared, lin| {
            let mut sh = qwen35(sh, shared, lin);
            sh.arch = Arch::Qwen3Next;
            sh.linear = sh.linear.map(|l| LinearAttention { grouped: true, ..l });
            sh
        };
        // MiniMax-M2: q/k norms over the whole projection, half the head rotated, a sigmoid
        // router with a selection bias, no shared expert.
        let minimax_m2 = |mut sh: SynthShape| {
            sh.arch = Arch::MinimaxM2;
            sh.rope_dims = Some(sh.head_dim / 2);
            sh.sigmoid_router = Some(SigmoidRouter { groups: 1, top_groups: 1, routed_scale: 1.0 });
            sh
        };
        // GLM-4.5: sigmoid router (one group, scale 2.5), one ungated shared expert, the first
        // layer dense, q/k/v bias, partial RoPE (50 %).
        let glm45 = |mut sh: SynthShape, dense_ffn| {
            sh.arch = Arch::Glm4Moe;
            sh.shared_ffn = sh.expert_ffn;
            sh.rope_dims = Some(sh.head_dim / 2);
            sh.dense_layers = 1;
            sh.dense_ffn = dense_ffn;
            sh.sigmoid_router = Some(SigmoidRouter { groups: 1, top_groups: 1, routed_scale: 2.5 });
            sh
        };
        // Gemma 4: a dense GeGLU MLP beside the MoE, sliding layers with one full-attention layer
        // every `every` (K = V, proportional RoPE over a quarter of its head), a soft-cap.
        let gemma4 = |mut sh: SynthShape, dense_ffn, window, every, global: (usize, usize), cap| {
            sh.arch = Arch::Gemma4;
            sh.dense_ffn = dense_ffn;
            sh.sliding_window = Some(window);
            sh.full_attention_interval = every;
            sh.gemma = Some(crate::model::gemma::GemmaLayout {
                global_head_dim: global.0,
                global_kv_heads: global.1,
                k_eq_v: true,
                global_rope_theta: 1e6,
                global_rope_pairs: global.0 / 8,
                logit_softcap: Some(cap),
            });
            sh
        };
        // DeepSeek-V4: one key/value head with a q LoRA, a sliding window in every layer, two
        // heavily compressed (128:1) layers then sparse (4:1, indexed) and heavily compressed
        // in turn (transformers' default schedule), four residual streams, the first three
        // layers hash-routed, one shared expert, sqrt-softplus routing scaled 1.5.
        let deepseek_v4 =
            |mut sh: SynthShape, q_lora, window, (groups, rank), index: (usize, usize, usize)| {
                sh.arch = Arch::DeepseekV4;
                sh.kv_heads = 1;
                sh.shared_ffn = sh.expert_ffn;
                sh.rope_dims = Some(sh.head_dim / 8);
                sh.sigmoid_router =
                    Some(SigmoidRouter { groups: 1, top_groups: 1, routed_scale: 1.5 });
                let ratios: Vec<usize> =
                    (0..sh.layers).map(|l| if l >= 2 && l % 2 == 1 { 4 } else { 128 }).collect();
                sh.v4 = Some(crate::model::deepseek_v4::V4Layout {
                    hc_mult: 4,
                    hc_sinkhorn_iters: 20,
                    hc_eps: 1e-6,
                    window,
                    indexed: ratios.iter().map(|&r| r == 4).collect(),
                    compress_ratios: ratios,
                    compress_rope_theta: 160_000.0,
                    compress_yarn: Some(Yarn {
                        factor: 16.0,
                        original_max_positions: 65_536,
                        beta_fast: 32.0,
                        beta_slow: 1.0,
                        truncate: true,
                        mscale: None,
                        mscale_all_dim: None,
                        attention_factor: Some(1.0),
                    }),
                    q_lora_rank: q_lora,
                    o_groups: groups,
                    o_lora_rank: rank,
                    index_heads: index.0,
                    index_head_dim: index.1,
                    index_topk: index.2,
                    hash_layers: 3,
                    swiglu_limit: 10.0,
                });
                sh
            };
        Ok(match name {
            // Seconds to write and run: for tests.
            "tiny" => s(64, 4, 4, 2, 16, 16, 4, 64, 257),
            // About 2 GB of q4_0 experts: streams on any machine.
            // Its vocabulary: bytes, end of text and every word piece (readable output).
            "demo" => s(1024, 24, 16, 4, 64, 64, 8, 768, 257 + word_pieces(usize::MAX).0.len()),
            // Qwen3-30B-A3B's shape: about 16 GB of q4_0 experts.
            "qwen3-30b-a3b" => s(2048, 48, 32, 4, 128, 128, 8, 768, 151_936),
            "mixtral-8x7b" => s(4096, 32, 32, 8, 128, 8, 2, 14_336, 32_000),
            // transformers' default Qwen3_5MoeTextConfig (Qwen3.6-35B-A3B): about 18 GB of q4_0
            // experts.
            "qwen3.5-35b-a3b" => {
                qwen35(s(2048, 40, 16, 2, 256, 256, 8, 512, 248_320), 512, (16, 32, 128))
            }
            // Qwen3.5-397B-A17B: 209 GB of 4-bit experts over 60 layers; take `--layers 4`
            // (14 GB) or so on a small disk.
            "qwen3.5-397b-a17b" => {
                qwen35(s(4096, 60, 32, 2, 256, 512, 10, 1024, 248_320), 1024, (16, 64, 128))
            }
            "tiny-qwen3.5" => qwen35(s(64, 4, 4, 2, 32, 16, 4, 64, 257), 32, (2, 4, 16)),
            // Qwen3-Next-80B-A3B: about 43 GB of q4_0 experts over 48 layers; take `--layers 16`
            // or so on a small disk.
            "qwen3-next-80b-a3b" => {
                qwen3_next(s(2048, 48, 16, 2, 256, 512, 10, 512, 151_936), 512, (16, 32, 128))
            }
            "tiny-qwen3-next" => qwen3_next(s(64, 4, 4, 2, 32, 16, 4, 64, 257), 32, (2, 4, 16)),
            // MiniMax-M2 (230B-A10B): about 126 GB of q4_0 experts over 62 layers; take
            // `--layers 8` or so.
            "minimax-m2" => minimax_m2(s(3072, 62, 48, 8, 128, 256, 8, 1536, 200_064)),
            "tiny-minimax-m2" => minimax_m2(s(64, 4, 4, 2, 32, 16, 4, 64, 257)),
            // Gemma-4-26B-A4B: 30 layers (25 sliding, 5 full), 128 experts top-8 of width 704
            // beside a dense MLP of 2112; about 12.9 GB of q4_0 experts.
            "gemma4-26b-a4b" => {
                gemma4(s(2816, 30, 16, 8, 256, 128, 8, 704, 262_144), 2112, 1024, 6, (512, 2), 30.0)
            }
            "tiny-gemma4" => gemma4(s(64, 6, 4, 2, 16, 16, 4, 32, 257), 64, 8, 3, (32, 1), 5.0),
            // GLM-5 (744B-A40B): MLA with a q LoRA and DeepSeek sparse attention (32 indexer
            // heads of 128 keep 2048 positions per query), 256 experts top-8 + 1 shared, the
            // first 3 layers dense: about 408 GB of q4_0 experts; take `--layers 5` or so.
            "glm5" => {
                let mut sh = deepseek(
                    s(6144, 78, 64, 64, 128, 256, 8, 2048, 154_880),
                    2048,
                    1,
                    (3, 12_288),
                    1.0,
                );
                sh.arch = Arch::GlmMoeDsa;
                sh.mla = sh.mla.map(|m| Mla { qk_nope_dim: 192, v_head_dim: 256, ..m });
                sh.yarn = None;
                sh.sigmoid_router =
                    Some(SigmoidRouter { groups: 1, top_groups: 1, routed_scale: 2.5 });
                sh.dsa = Some(crate::model::config::Dsa {
                    heads: 32,
                    head_dim: 128,
                    topk: 2048,
                    full_layers: vec![true; 78],
                });
                sh
            }
            "tiny-glm5" => {
                let mut sh = deepseek(s(64, 4, 4, 4, 16, 16, 4, 64, 257), 48, 1, (1, 128), 1.0);
                sh.arch = Arch::GlmMoeDsa;
                sh.mla = sh.mla.map(|m| Mla {
                    kv_lora_rank: 32,
                    qk_nope_dim: 16,
                    qk_rope_dim: 8,
                    v_head_dim: 16,
                    ..m
                });
                sh.yarn = None;
                sh.sigmoid_router =
                    Some(SigmoidRouter { groups: 1, top_groups: 1, routed_scale: 2.5 });
                sh.dsa = Some(crate::model::config::Dsa {
                    heads: 4,
                    head_dim: 16,
                    topk: 4,
                    full_layers: vec![true, true, false, true],
                });
                sh
            }
            // GLM-4.5-Air (106B-A12B): 46 layers, 128 experts, top-8; about 58 GB of q4_0
            // experts (take fewer layers on a small disk).
            "glm4.5-air" => glm45(s(4096, 46, 96, 8, 128, 128, 8, 1408, 151_552), 10_944),
            "tiny-glm4.5" => glm45(s(64, 4, 4, 2, 32, 16, 4, 64, 257), 128),
            // DeepSeek-V2-Lite (16B): about 8.1 GB of q4_0 experts.
            "deepseek-v2-lite" => {
                deepseek(s(2048, 27, 16, 16, 128, 64, 6, 1408, 102_400), 0, 2, (1, 10_944), 0.707)
            }
            // DeepSeek-V3/R1 (671B): 368 GB of q4_0 experts; take `--layers 4` or so.
            "deepseek-v3-671b" => {
                let mut sh = deepseek(
                    s(7168, 61, 128, 128, 128, 256, 8, 2048, 129_280),
                    1536,
                    1,
                    (3, 18_432),
                    1.0,
                );
                sh.sigmoid_router =
                    Some(SigmoidRouter { groups: 8, top_groups: 4, routed_scale: 2.5 });
                sh
            }
            "tiny-deepseek" => {
                let mut sh = deepseek(s(64, 4, 4, 4, 16, 16, 4, 64, 257), 48, 1, (1, 128), 1.0);
                sh.mla = sh.mla.map(|m| Mla {
                    kv_lora_rank: 32,
                    qk_nope_dim: 16,
                    qk_rope_dim: 8,
                    v_head_dim: 16,
                    ..m
                });
                sh.sigmoid_router =
                    Some(SigmoidRouter { groups: 4, top_groups: 2, routed_scale: 2.5 });
                sh
            }
            // gpt-oss-20b: 10.1 GB of MXFP4 experts; gpt-oss-120b: 60.9 GB.
            "gpt-oss-20b" => gpt_oss(s(2880, 24, 64, 8, 64, 32, 4, 2880, 201_088)),
            "gpt-oss-120b" => gpt_oss(s(2880, 36, 64, 8, 64, 128, 4, 2880, 201_088)),
            "tiny-gpt-oss" => gpt_oss(s(64, 4, 4, 2, 32, 16, 4, 64, 257)),
            // DeepSeek-V4-Flash (284B-A13B): 43 layers of 256 experts top-6 (2048 wide) and a
            // shared one, 64 heads of 512 on one key/value head; about 156 GB of q4_0 experts:
            // take `--layers 4` or so.
            "deepseek-v4-flash" => {
                deepseek_v4(s(4096, 43, 64, 1, 512, 256, 6, 2048, 129_280), 1024, 128, (8, 1024), (64, 128, 512))
            }
            // Small enough for tests, with windows that close within a short prompt: ratios 4
            // and 8 in place of 4 and 128.
            "tiny-deepseek-v4" => {
                let mut sh =
                    deepseek_v4(s(64, 5, 4, 1, 32, 16, 4, 32, 257), 32, 8, (2, 16), (4, 16, 3));
                if let Some(v) = sh.v4.as_mut() {
                    v.compress_ratios = vec![0, 4, 8, 4, 8];
                    v.indexed = v.compress_ratios.iter().map(|&r| r == 4).collect();
                    v.hash_layers = 2;
                }
                sh
            }
            other => {
                return Err(Error::Invalid(format!(
                    "unknown preset {other:?} (tiny, demo, qwen3-30b-a3b, mixtral-8x7b, \
                     qwen3.5-35b-a3b, qwen3.5-397b-a17b, glm4.5-air, deepseek-v2-lite, \
                     deepseek-v3-671b, gpt-oss-20b, gpt-oss-120b, qwen3-next-80b-a3b, minimax-m2, \
                     tiny-qwen3.5, tiny-glm4.5, tiny-deepseek, tiny-gpt-oss, tiny-qwen3-next, \
                     tiny-minimax-m2, gemma4-26b-a4b, tiny-gemma4, glm5, tiny-glm5, deepseek-v4-flash, \
                     tiny-deepseek-v4, or custom flags)"
                )))
            }
        })
    }

    /// The model configuration (Qwen3-MoE architecture).
    pub fn config(&self) -> ModelConfig {
        let linear_layers = match self.linear {
            Some(_) => (0..self.layers)
                .map(|l| (l + 1) % self.full_attention_interval.max(1) != 0)
                .collect(),
            None => Vec::new(),
        };
        ModelConfig {
            arch: self.arch,
            hidden: self.hidden,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            vocab: self.vocab,
            rms_eps: 1e-6,
            rope_theta: if self.gemma.is_some() { 1e4 } else { 1e6 },
            experts: self.experts,
            top_k: self.top_k,
            expert_ffn: self.expert_ffn,
            dense_ffn: self.dense_ffn,
            shared_ffn: self.shared_ffn,
            norm_topk_prob: !matches!(self.arch, Arch::DeepseekV2 | Arch::GptOss),
            moe_layers: (0..self.layers).map(|l| l >= self.dense_layers).collect(),
            qkv_bias: matches!(self.arch, Arch::Glm4Moe | Arch::GptOss),
            qk_norm: match self.arch {
                Arch::Qwen3Moe | Arch::Qwen35Moe | Arch::Qwen3Next | Arch::Gemma4 => {
                    QkNorm::PerHead
                }
                Arch::MinimaxM2 => QkNorm::Full,
                _ => QkNorm::None,
            },
            clip_qkv: None,
            tie_embeddings: self.gemma.is_some(),
            eos_token_ids: vec![256],
            max_positions: 32_768,
            rope_dims: self.rope_dims,
            sigmoid_router: self.sigmoid_router,
            linear: self.linear,
            linear_layers,
            mla: self.mla,
            yarn: self.yarn,
            sliding_window: self.sliding_window,
            window_layers: match (self.sliding_window, self.gemma) {
                (Some(_), Some(_)) => (0..self.layers)
                    .map(|l| (l + 1) % self.full_attention_interval.max(1) != 0)
                    .collect(),
                (Some(_), None) => (0..self.layers).map(|l| l % 2 == 0).collect(),
                (None, _) => Vec::new(),
            },
            clamped_swiglu: (self.arch == Arch::GptOss)
                .then_some(ClampedSwiglu { alpha: 1.702, limit: 7.0 }),
            extras: self.arch.layer_extras(),
            gemma: self.gemma,
            // `--layers` keeps the first layers: their indexer kinds with them.
            dsa: self.dsa.clone().map(|mut d| {
                d.full_layers.resize(self.layers, true);
                d
            }),
            // `--layers` keeps the first layers' schedule.
            v4: self.v4.clone().map(|mut v| {
                v.compress_ratios.resize(self.layers, 0);
                v.indexed.resize(self.layers, false);
                v.hash_layers = v.hash_layers.min(self.layers);
                v
            }),
        }
    }
}

/// The synthetic tokenizer: one token per byte, `<|endoftext|>` (id 256), then as many printable
/// word pieces (ids 257..) as a vocabulary of `vocab` has room for (`synth_vocab`).
pub fn synth_tokenizer_json(vocab: usize) -> String {
    let map = bytes_to_unicode();
    let mut table: serde_json::Map<String, serde_json::Value> =
        map.iter().enumerate().map(|(i, c)| (c.to_string(), serde_json::Value::from(i))).collect();
    let (pieces, merges) = word_pieces(vocab.saturating_sub(257));
    for (i, p) in pieces.iter().enumerate() {
        table.insert(p.clone(), serde_json::Value::from(257 + i));
    }
    let merges: Vec<serde_json::Value> =
        merges.into_iter().map(|(a, b)| serde_json::json!([a, b])).collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": 256, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": table, "merges": merges}
    })
    .to_string()
}

/// Standard normal from two uniforms (Box-Muller).
fn gauss(rng: &mut SmallRng) -> f32 {
    let u1: f32 = rng.gen_range(1e-7..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Writes a synthetic model of `shape` to `out` (under a temporary name, renamed at the end).
pub fn synth(
    shape: &SynthShape,
    out: &Path,
    dtype: DType,
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest> {
    synth_mixed(shape, out, [dtype; 3], seed, progress)
}

/// [`synth`] with the experts' gate, up and down stored as `types` (in that order), as a
/// quantised file that gives `ffn_down` a step more bits has them.
pub fn synth_mixed(
    shape: &SynthShape,
    out: &Path,
    types: [DType; 3],
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest> {
    let cfg = shape.config();
    cfg.validate()?;
    if shape.vocab < 257 {
        return Err(Error::Invalid("vocab must hold the 257 byte-level tokens".into()));
    }
    write_dir_atomically(out, |tmp| write(&cfg, shape, tmp, types, seed, progress))
}

fn write(
    cfg: &ModelConfig,
    shape: &SynthShape,
    dir: &Path,
    types: [DType; 3],
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Manifest> {
    let werr = |p: &Path, e: std::io::Error| Error::Write { path: p.to_path_buf(), source: e };
    let mut rng = SmallRng::seed_from_u64(seed);
    let h = cfg.hidden;
    // The shared direction of all embeddings, unit length.
    let mut u: Vec<f32> = (0..h).map(|_| gauss(&mut rng)).collect();
    let norm = u.iter().map(|x| x * x).sum::<f32>().sqrt();
    u.iter_mut().for_each(|x| *x /= norm);
    let plan = ModelSpec::from_config(cfg)?.tensors();
    let slab = SlabLayout::mixed(types, h, cfg.expert_ffn)?;
    let total = plan.len() as u64 + (cfg.moe_layer_count() * cfg.experts) as u64;
    let mut done = 0;
    let dense_dtype = shape.dense_dtype.unwrap_or(if h >= 512 { DType::Bf16 } else { DType::F32 });

    let mut dense_out = DenseWriter::create(dir)?;
    for TensorSpec { role, rows, cols } in plan {
        let n = rows * cols;
        let std = 1.0 / (cols as f32).sqrt();
        let values: Vec<f32> = match role {
            Dense::FinalNorm
            | Dense::AttnNorm(_)
            | Dense::FfnNorm(_)
            | Dense::QNorm(_)
            | Dense::KNorm(_)
            | Dense::LinNorm(_)
            | Dense::MlaQANorm(_)
            | Dense::MlaKVANorm(_)
            | Dense::PostAttnNorm(_)
            | Dense::PostFfnNorm(_)
            | Dense::PostFfnNorm1(_)
            | Dense::PreFfnNorm2(_)
            | Dense::PostFfnNorm2(_)
            | Dense::LayerScalar(_)
            | Dense::RouterScale(_)
            | Dense::ExpertScale(_)
            | Dense::CmpNorm(_)
            | Dense::IdxCmpNorm(_)
            | Dense::HcAttnScale(_)
            | Dense::HcFfnScale(_)
            | Dense::HcHeadScale => vec![1.0; n],
            Dense::HcAttnBase(_)
            | Dense::HcFfnBase(_)
            | Dense::HcHeadBase
            | Dense::CmpApe(_)
            | Dense::IdxCmpApe(_) => vec![0.0; n],
            // Each token's experts: `cols` distinct ones, drawn favouring low ids (as a
            // popularity skew would).
            Dense::HashTable(_) => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..rows {
                    let mut row: Vec<usize> = Vec::with_capacity(cols);
                    while row.len() < cols.min(cfg.experts) {
                        let e = ((rng.gen::<f32>().powi(2)) * cfg.experts as f32) as usize;
                        let e = e.min(cfg.experts - 1);
                        if !row.contains(&e) {
                            row.push(e);
                        }
                    }
                    v.extend(row.iter().map(|&e| e as f32));
                }
                v
            }
            // A = -exp(A_log) with A_log ~ ln U(1, 16) (transformers' init), a small dt bias:
            // per-token decays well inside (0, 1).
            Dense::LinA(_) => (0..n).map(|_| -rng.gen_range(1.0f32..16.0)).collect(),
            Dense::LinDtBias(_) => (0..n).map(|_| gauss(&mut rng) * 0.1 - 2.0).collect(),
            Dense::RouterBias(_) => (0..n).map(|_| gauss(&mut rng) * 0.01).collect(),
            Dense::QBias(_)
            | Dense::KBias(_)
            | Dense::VBias(_)
            | Dense::OBias(_)
            | Dense::RouterLogitBias(_)
            | Dense::AttnSinks(_)
            | Dense::ExpGateBias(_)
            | Dense::ExpUpBias(_)
            | Dense::ExpDownBias(_) => (0..n).map(|_| gauss(&mut rng) * 0.02).collect(),
            // Embeddings: the shared direction plus per-token noise of equal weight.
            Dense::Embed => (0..n).map(|i| u[i % h] * 0.7 + gauss(&mut rng) * 0.7 * std).collect(),
            // Rows of the bytes that do not print on their own point against `u`, which every
            // final hidden state leans on: their logits sit far below the others', so sampling
            // picks printable bytes and word pieces. (Only where there are word pieces: a
            // byte-level vocabulary keeps every byte reachable.)
            // The same for ids past the tokenizer's last piece (a large preset vocabulary).
            Dense::LmHead if rows > 257 => {
                let mut v: Vec<f32> = (0..n).map(|_| gauss(&mut rng) * std * 0.5).collect();
                let known = 257 + word_pieces(rows - 257).0.len();
                let hidden =
                    (0..rows).filter(|&r| (r < 256 && !printable_byte(r as u8)) || r >= known);
                for r in hidden {
                    let row = &mut v[r * cols..(r + 1) * cols];
                    row.iter_mut().zip(&u).for_each(|(x, y)| *x = -4.0 * y);
                }
                v
            }
            Dense::Router(l) => {
                // logit_e = a * z_e + (per-token noise of sd 1), with z_e = -ln(popularity rank)
                // over a random permutation of the experts: after RMSNorm the input has norm
                // sqrt(h) and leans on u by about 0.7 sqrt(h), so the row's component along u
                // is a z_e / (0.7 sqrt(h)) and its noise has sd 1 / sqrt(h). a rises with depth
                // (0.5 to 0.7): skew about Zipf 0.75 to 1.0 in frequency.
                let depth = l as f32 / cfg.layers.max(1) as f32;
                // The per-token part of the input has norm ~0.71 sqrt(h), so the noise below has
                // sd ~0.71; a / sd = 0.6-0.84 measured 31-32 % next-token overlap on the demo.
                let a = 0.85 * (0.5 + 0.2 * depth);
                let c = 0.7 * (cols as f32).sqrt();
                let mut ranks: Vec<usize> = (0..rows).collect();
                for i in (1..rows).rev() {
                    ranks.swap(i, rng.gen_range(0..=i));
                }
                let mut v = Vec::with_capacity(n);
                for &rank in &ranks {
                    let lean = -a * ((rank + 1) as f32).ln() / c;
                    // Noise orthogonal to u: a component along u would meet the shared part of
                    // every input and act as a second, uncontrolled popularity.
                    let mut noise: Vec<f32> = (0..cols).map(|_| gauss(&mut rng) * std).collect();
                    let along: f32 = noise.iter().zip(&u).map(|(x, y)| x * y).sum();
                    noise.iter_mut().zip(&u).for_each(|(x, y)| *x -= along * y);
                    v.extend(noise.iter().zip(&u).map(|(x, y)| lean * y + x));
                }
                v
            }
            // The attention output projection is small: with every token sharing `u`, attention
            // would otherwise add one large vector to every position and flatten the routing.
            Dense::O(_) | Dense::LinOut(_) | Dense::OB(_) => {
                (0..n).map(|_| gauss(&mut rng) * std * 0.01).collect()
            }
            _ => (0..n).map(|_| gauss(&mut rng) * std * 0.5).collect(),
        };
        let dt = if role.keep_f32() { DType::F32 } else { dense_dtype };
        let bytes = encode(dt, &values, cols, &role.key())?;
        dense_out.push(role.key(), dt, rows, cols, &bytes)?;
        done += 1;
        progress(done, total);
    }
    let dense = dense_out.finish()?;

    let mut experts_out = SlabWriter::create(dir)?;
    let mut buf = vec![0u8; slab.slab_bytes];
    for l in (0..cfg.layers).filter(|&l| cfg.moe_layers[l]) {
        experts_out.begin_layer(l);
        for _ in 0..cfg.experts {
            buf.fill(0);
            // Down projections are small, so each layer changes the residual stream (and so the
            // next routers' input) a little rather than replacing it.
            let parts = [(&slab.gate, 1.0), (&slab.up, 1.0), (&slab.down, 0.02)];
            for ((part, gain), dtype) in parts.into_iter().zip(types) {
                fill_random(
                    &mut buf[part.offset..part.offset + part.bytes],
                    dtype,
                    part.cols,
                    gain,
                    &mut rng,
                )?;
            }
            experts_out.push(&buf)?;
            done += 1;
            progress(done, total);
        }
    }
    let layers = experts_out.finish()?;
    std::fs::write(dir.join("tokenizer.json"), synth_tokenizer_json(cfg.vocab))
        .map_err(|e| werr(dir, e))?;
    let tcfg = serde_json::json!({"eos_token": "<|endoftext|>", "bos_token": null,
        "chat_template": "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"});
    std::fs::write(dir.join("tokenizer_config.json"), tcfg.to_string())
        .map_err(|e| werr(dir, e))?;
    let manifest = Manifest::new(
        cfg.clone(),
        dense,
        slab,
        layers,
        format!("floe synth (random weights, seed {seed}, {shape:?})"),
        true,
    );
    manifest.write(dir)?;
    PackedModel::open(dir, false)?;
    Ok(manifest)
}

/// Random weights of `cols`-wide rows in `dtype`, with about unit-variance outputs.
fn fill_random(
    out: &mut [u8],
    dtype: DType,
    cols: usize,
    gain: f32,
    rng: &mut SmallRng,
) -> Result<()> {
    let std = gain / (cols as f32).sqrt();
    match dtype {
        DType::Q4_0 => {
            // Nibbles uniform in 1..=15: values q - 8 are zero-mean (uniform 0..=15 would have
            // mean -0.5, a bias every projection would add to the residual stream in every
            // layer), with sd 4.3.
            let d = half::f16::from_f32(std / 4.3).to_le_bytes();
            for block in out.chunks_exact_mut(18) {
                block[..2].copy_from_slice(&d);
                for b in &mut block[2..] {
                    let (lo, hi) = (rng.gen_range(1u8..=15), rng.gen_range(1u8..=15));
                    *b = lo | (hi << 4);
                }
            }
        }
        DType::Q8_0 => {
            // Random bytes: uniform -128..=127 has sd 74 (its -0.5 mean is 0.7 % of that).
            rng.fill(out);
            let d = half::f16::from_f32(std / 74.0).to_le_bytes();
            for block in out.chunks_exact_mut(34) {
                block[..2].copy_from_slice(&d);
            }
        }
        DType::Bf16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&bf16::from_f32(gauss(rng) * std).to_le_bytes());
            }
        }
        DType::F16 => {
            for c in out.chunks_exact_mut(2) {
                c.copy_from_slice(&half::f16::from_f32(gauss(rng) * std).to_le_bytes());
            }
        }
        DType::F32 => {
            for c in out.chunks_exact_mut(4) {
                c.copy_from_slice(&(gauss(rng) * std).to_le_bytes());
            }
        }
        DType::Mxfp4 => {
            // Uniform codes: the value table is symmetric (zero mean) with sd 5.85 in units of
            // half the block scale; the exponent puts that at `std`.
            let e = ((std / 5.85).log2().round() + 128.0).clamp(0.0, 255.0) as u8;
            for block in out.chunks_exact_mut(17) {
                block[0] = e;
                rng.fill(&mut block[1..]);
            }
        }
        k => random_blocks(out, k, std, rng)?,
    }
    Ok(())
}

/// Random blocks of any type with an f16 scale: uniform random codes and grid indices, the
/// scale's sign random per block (so no type's asymmetric code range adds a bias), its size
/// set so the values' RMS is `std` (measured on blocks of unit scale), and a type with a
/// minimum given the one that centres its codes. They are what llama-quantize would write for
/// weights of that spread, and llama.cpp reads them as such.
fn random_blocks(out: &mut [u8], dtype: DType, std: f32, rng: &mut SmallRng) -> Result<()> {
    const SAMPLE: usize = 64;
    let size = dtype.block_bytes();
    let mut probe = vec![0u8; SAMPLE * size];
    rng.fill(&mut probe[..]);
    if !dtype.set_scales(&mut probe, 1.0, 0.0) {
        return Err(Error::Unsupported(format!(
            "floe synth writes f32, f16, bf16, q8_0, q4_0, mxfp4 and the f16-scaled block types \
             (q4_1, q5_0, q5_1, iq4_nl, iq4_xs, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, \
             iq1_m, tq1_0, tq2_0), not {dtype}"
        )));
    }
    let mut v = vec![0.0f32; SAMPLE * dtype.block_values()];
    dtype.dequantize(&probe, &mut v).map_err(|e| Error::Invalid(format!("synth {dtype}: {e}")))?;
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    // A minimum recentres the codes; without one, the random sign leaves the mean in the spread.
    let has_min = matches!(dtype.traits().scale, floe_kernels::ScaleField::At(_, Some(_)));
    let centre = if has_min { mean } else { 0.0 };
    let var = v.iter().map(|&x| (x as f64 - centre).powi(2)).sum::<f64>() / n;
    let d = std as f64 / var.sqrt().max(1e-12);
    rng.fill(out);
    for block in out.chunks_exact_mut(size) {
        let sign = if rng.gen::<bool>() { 1.0 } else { -1.0 };
        dtype.set_scales(block, (sign * d) as f32, (-mean * d) as f32);
    }
    Ok(())
}
