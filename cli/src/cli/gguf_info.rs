//! `floe gguf-info`: what a GGUF file holds (metadata and tensors), like gguf-dump.

use std::path::PathBuf;

use clap::Args;
use floe::formats::gguf::{GgufFile, GgufValue};

#[derive(Debug, Args)]
pub struct GgufInfoArgs {
    /// The GGUF file.
    file: PathBuf,
    /// Also list every tensor.
    #[arg(long)]
    tensors: bool,
}

fn show(v: &GgufValue) -> String {
    match v {
        GgufValue::String(s) if s.len() > 80 => {
            format!("{:?}... ({} bytes)", s.chars().take(77).collect::<String>(), s.len())
        }
        GgufValue::String(s) => format!("{s:?}"),
        GgufValue::Array(a) if a.len() > 8 => format!(
            "[{} values: {}, ...]",
            a.len(),
            a.iter().take(4).map(show).collect::<Vec<_>>().join(", ")
        ),
        GgufValue::Array(a) => format!("[{}]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        other => format!("{other:?}").split(['(', ')']).nth(1).unwrap_or_default().to_string(),
    }
}

pub fn run(a: GgufInfoArgs) -> anyhow::Result<()> {
    let g = GgufFile::open(&a.file)?;
    println!(
        "{}: GGUF v{}, {} tensors, alignment {}",
        a.file.display(),
        g.version,
        g.tensors.len(),
        g.alignment
    );
    for (k, v) in &g.metadata {
        println!("  {k} = {}", show(v));
    }
    let mut by_type = std::collections::BTreeMap::new();
    for t in &g.tensors {
        let e = by_type.entry(t.ggml_type.name()).or_insert((0usize, 0u64));
        e.0 += 1;
        e.1 += t.bytes;
    }
    for (ty, (n, bytes)) in by_type {
        println!("  {n} tensors of {ty}, {bytes} bytes");
    }
    if a.tensors {
        for t in &g.tensors {
            println!("  {:<40} {:>6} {:?} @ {}", t.name, t.ggml_type.name(), t.dims, t.offset);
        }
    }
    Ok(())
}
