//! `floe pack`: a Hugging Face checkpoint to floe's packed format.

use std::path::PathBuf;

use clap::Args;
use floe::formats::pack::{pack, PackOptions};
use floe::kernels::DType;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub struct PackArgs {
    /// Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json), or a
    /// GGUF file (any architecture and tensor type `floe run` takes; tensors copied, not
    /// requantised).
    #[arg(long)]
    from: PathBuf,
    /// For a GGUF file: a directory with the tokenizer.json to use instead of the one rebuilt from
    /// the file's metadata.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Output directory (written under a temporary name, renamed when complete and verified).
    #[arg(long)]
    out: PathBuf,
    /// Format of the routed experts: f32, f16, bf16, q8_0, q4_0.
    #[arg(long, default_value = "q4_0")]
    dtype: DType,
    /// Format of the dense matrices (default: as in the checkpoint). Norms, biases and routers
    /// always stay f32.
    #[arg(long)]
    dense_dtype: Option<DType>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(a: PackArgs) -> anyhow::Result<()> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("packing [{bar:40}] {pos}/{len} tensors ({eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let opts = PackOptions { dtype: a.dtype, dense_dtype: a.dense_dtype, force: a.force };
    let mut progress = |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let m = if a.from.extension().is_some_and(|e| e == "gguf") {
        anyhow::ensure!(
            a.force || !a.out.exists(),
            "{} exists (use --force to replace it)",
            a.out.display()
        );
        floe::formats::gguf::pack_gguf(&a.from, &a.out, a.tokenizer.as_deref(), &mut progress)?
    } else {
        pack(&a.from, &a.out, &opts, &mut progress)?
    };
    bar.finish_and_clear();
    let c = &m.config;
    eprintln!(
        "packed {} ({} layers, {} experts x {} MoE layers, top-{}): experts {} as {} in {} slabs of {} bytes; \
         dense {} bytes; checksums verified -> {}",
        c.arch.name(),
        c.layers,
        c.experts,
        m.expert_layers.len(),
        c.top_k,
        m.experts_bytes(),
        m.slab.dtype,
        m.expert_layers.len() * c.experts,
        m.slab.slab_bytes,
        m.dense.iter().map(|d| d.bytes).sum::<u64>(),
        a.out.display()
    );
    Ok(())
}
