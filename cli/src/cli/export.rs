//! `floe export`: write a packed model as a GGUF file in llama.cpp's layout.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A model directory made by `floe pack` or `floe synth`.
    #[arg(long)]
    model: PathBuf,
    /// The GGUF file to write.
    #[arg(long)]
    out: PathBuf,
    /// Also split the file into parts of at most this many tensors (gguf-split's naming), and
    /// remove the single file.
    #[arg(long, value_name = "N")]
    split_max_tensors: Option<usize>,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let packed = floe::formats::packed::PackedModel::open(&a.model, false)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("writing GGUF [{bar:40}] {pos}/{len} tensors ({eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    floe::formats::gguf::write::export_gguf(&packed, &a.out, &mut |d, t| {
        bar.set_length(t);
        bar.set_position(d);
    })?;
    bar.finish_and_clear();
    match a.split_max_tensors {
        Some(n) => {
            let parts = floe::formats::gguf::write::split_gguf(&a.out, n)?;
            std::fs::remove_file(&a.out)?;
            eprintln!("wrote {} parts: {} ...", parts.len(), parts[0].display());
        }
        None => eprintln!("wrote {}", a.out.display()),
    }
    Ok(())
}
