//! `floe synth`: write a packed model with random weights.

use std::path::PathBuf;

use clap::Args;
use floe::formats::synth::{synth_mixed, SynthShape};
use floe::kernels::DType;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// tiny (tests), demo (~2 GB of experts), qwen3-30b-a3b (~16 GB), mixtral-8x7b,
    /// qwen3.5-35b-a3b (~18 GB), qwen3.5-397b-a17b (217 GB: take --layers 4), glm4.5-air (56 GB),
    /// deepseek-v2-lite (8 GB), deepseek-v3-671b (368 GB), gpt-oss-20b, gpt-oss-120b (with
    /// --dtype mxfp4), qwen3-next-80b-a3b (43 GB), minimax-m2 (126 GB: take --layers 8), the
    /// tiny-* forms of the families (tiny-qwen3.5, tiny-qwen3-next, tiny-glm4.5, tiny-deepseek,
    /// tiny-gpt-oss, tiny-minimax-m2, tiny-gemma4, tiny-glm5, tiny-deepseek-v4), gemma4-26b-a4b, glm5 (take --layers 5), deepseek-v4-flash (156 GB: take --layers 4), or custom (give the shape flags). Sizes are of q4_0
    /// experts; --layers keeps the first layers of a preset.
    #[arg(long, default_value = "demo")]
    preset: String,
    /// Output directory (or file, with --format gguf).
    #[arg(long)]
    out: PathBuf,
    /// floe (a packed directory) or gguf (one GGUF file llama.cpp loads; written through a
    /// packed copy beside it, which is kept as OUT.floe for `floe run` comparisons).
    #[arg(long, default_value = "floe", value_parser = ["floe", "gguf"])]
    format: String,
    /// With --format gguf: delete the packed copy once the GGUF is written (floe runs the GGUF
    /// in place; a disk that holds one copy is enough).
    #[arg(long)]
    gguf_only: bool,
    /// Expert format: q4_0, q8_0, bf16, mxfp4 (gpt-oss), and the GGUF block types q4_1, q5_0, q5_1, iq4_nl, iq4_xs, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, iq1_m, tq1_0, tq2_0 (random codes at a known spread) [default: q4_0].
    #[arg(long)]
    dtype: Option<DType>,
    /// Format of the experts' down projections (default: --dtype), a step more bits as
    /// llama-quantize's mixes give `ffn_down`.
    #[arg(long)]
    down_dtype: Option<DType>,
    /// A named layout of types: `ud-2bit` is IQ2_XXS gate/up, IQ3_XXS down and Q8_0 dense
    /// matrices (experts at 2-3 bits, down a step higher, attention and shared experts at 8
    /// bits, as the dynamic 2-bit GGUFs of the large MoEs are laid out); --dtype, --down-dtype
    /// and --dense-dtype given as well override its parts.
    #[arg(long, value_parser = ["ud-2bit"])]
    mix: Option<String>,
    /// Format of the dense matrices (embeddings, attention): f32, bf16, q8_0, q4_0 (default:
    /// bf16 from hidden 512 up, else f32), as a quantised GGUF of the model would have them.
    #[arg(long)]
    dense_dtype: Option<DType>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Custom shape: residual width.
    #[arg(long)]
    hidden: Option<usize>,
    /// Layers (with a preset: its first layers).
    #[arg(long)]
    layers: Option<usize>,
    /// Custom shape: routed experts per layer.
    #[arg(long)]
    experts: Option<usize>,
    /// Custom shape: experts per token.
    #[arg(long)]
    top_k: Option<usize>,
    /// Custom shape: expert hidden width.
    #[arg(long)]
    expert_ffn: Option<usize>,
    /// Custom shape: vocabulary size (257 is bytes and end-of-text only; more adds printable
    /// word pieces, up to a few thousand, so the model writes readable word salad).
    #[arg(long)]
    vocab: Option<usize>,
}

pub fn run(a: SynthArgs) -> anyhow::Result<()> {
    let mut shape = SynthShape::preset(if a.preset == "custom" { "tiny" } else { &a.preset })?;
    if let Some(x) = a.hidden {
        shape.hidden = x;
        shape.heads = (x / 64).max(1);
        shape.kv_heads = (shape.heads / 4).max(1);
        shape.head_dim = 64.min(x);
    }
    shape.layers = a.layers.unwrap_or(shape.layers);
    shape.experts = a.experts.unwrap_or(shape.experts);
    shape.top_k = a.top_k.unwrap_or(shape.top_k);
    shape.expert_ffn = a.expert_ffn.unwrap_or(shape.expert_ffn);
    if let Some(v) = a.vocab {
        anyhow::ensure!(v >= 257, "--vocab {v}: a synthetic vocabulary holds at least the 256 bytes and end-of-text (257)");
        shape.vocab = v;
    }
    let (mut gate_up, mut down, mut dense) = (a.dtype, a.down_dtype, a.dense_dtype);
    if a.mix.as_deref() == Some("ud-2bit") {
        gate_up = gate_up.or(Some(DType::Iq2Xxs));
        down = down.or(Some(DType::Iq3Xxs));
        dense = dense.or(Some(DType::Q8_0));
    }
    let gate_up = gate_up.unwrap_or(DType::Q4_0);
    let types = [gate_up, gate_up, down.unwrap_or(gate_up)];
    shape.dense_dtype = dense;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("writing {msg} [{bar:40}] {pos}/{len} tensors ({eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(a.preset.clone());
    let gguf = a.format == "gguf";
    let dir = if gguf { a.out.with_extension("floe") } else { a.out.clone() };
    let m = synth_mixed(&shape, &dir, types, a.seed, &mut |d, t| {
        bar.set_length(t);
        bar.set_position(d);
    })?;
    bar.finish_and_clear();
    if gguf {
        let packed = floe::formats::packed::PackedModel::open(&dir, false)?;
        bar.reset();
        bar.set_message(format!("{} as GGUF", a.preset));
        floe::formats::gguf::write::export_gguf(&packed, &a.out, &mut |d, t| {
            bar.set_length(t);
            bar.set_position(d);
        })?;
        bar.finish_and_clear();
        if a.gguf_only {
            std::fs::remove_dir_all(&dir)?;
            eprintln!("wrote {} (its packed copy removed: --gguf-only)", a.out.display());
        } else {
            eprintln!("wrote {} (and its packed copy {})", a.out.display(), dir.display());
        }
    }
    eprintln!(
        "wrote a synthetic {} model (random weights: its text is meaningless) to {}: {} layers x {} experts, \
         top-{}, {:.2} GB of {} experts (gate/up {}, down {})",
        a.preset,
        if gguf && a.gguf_only { a.out.display() } else { dir.display() },
        m.config.layers,
        m.config.experts,
        m.config.top_k,
        m.experts_bytes() as f64 / 1e9,
        m.slab.dtype,
        types[0],
        types[2]
    );
    Ok(())
}
