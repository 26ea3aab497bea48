//! `floe kv-quality`: what each KV cache type costs. Relative error of keys, values and
//! attention outputs on synthetic heads with outlier channels and on the vectors a model
//! really computes over a prompt; and end to end, the next-token distributions against an
//! exact (f32) cache and greedy agreement over generated tokens.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use floe::kv_quality::{distortion, synthetic_sample, AttentionSample, Distortion, KvCodec};
use floe::{Engine, KvDType, KvTypes};

#[derive(Debug, Args)]
pub struct KvQualityArgs {
    /// A model directory made by `floe pack` or `floe synth`, or a GGUF file. Without one,
    /// only synthetic heads are measured.
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// Cache settings to measure: a type for keys and values alike, or KEY:VALUE types
    /// (e.g. `q8_0:tq3`).
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "TYPE|K:V,...",
        default_value = "f16,q8_0,q4_0,tq4,tq3,tq2"
    )]
    types: Vec<String>,
    /// Synthetic head sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "64,128,256,576")]
    dims: Vec<usize>,
    /// Positions of each synthetic head.
    #[arg(long, default_value_t = 512)]
    positions: usize,
    /// Outlier channels of synthetic keys, and how many times larger they are than the rest.
    #[arg(long, default_value_t = 4)]
    outliers: usize,
    #[arg(long, default_value_t = 30.0)]
    outlier_scale: f32,
    /// A text file for the prompt (default: a built-in English passage, repeated).
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Prompt tokens (cut to what the model's context leaves beside --greedy).
    #[arg(long, default_value_t = 1000)]
    tokens: usize,
    /// Tokens generated greedily after the prompt for the agreement column.
    #[arg(long, default_value_t = 64)]
    greedy: usize,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 128)]
    chunk: usize,
    /// Compute threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// One JSON object per measurement instead of tables.
    #[arg(long)]
    json: bool,
    /// Instead of measuring: the context each setting fits in this much KV memory (e.g.
    /// `8GiB`) for the shapes of --presets (no model is needed).
    #[arg(long, value_parser = super::size::parse_size, value_name = "BYTES")]
    fit: Option<u64>,
    /// Model shapes for --fit (`floe synth` presets).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "qwen3.5-397b-a17b,deepseek-v3-671b,gpt-oss-120b"
    )]
    presets: Vec<String>,
}

/// The context each setting fits in `budget` bytes of KV cache (beside any fixed recurrent
/// state) for each preset shape.
fn fit(a: &KvQualityArgs, settings: &[KvTypes], budget: u64) -> anyhow::Result<()> {
    use floe::formats::synth::SynthShape;
    use floe::model::spec::ModelSpec;
    use floe::runtime::SessionOptions;
    println!(
        "| shape | {} |",
        settings
            .iter()
            .map(|s| format!("{} bytes/position (context)", name(s)))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(settings.len()));
    for preset in &a.presets {
        let spec = ModelSpec::from_config(&SynthShape::preset(preset)?.config())?;
        let recurrent = SessionOptions::recurrent_bytes(&spec);
        let mut cells = Vec::new();
        for s in settings {
            let per = SessionOptions { ctx: None, kv: *s }.kv_bytes(&spec)?.total();
            let ctx = budget.saturating_sub(recurrent) / per.max(1);
            cells.push(format!("{per} ({ctx})"));
        }
        println!("| {preset} | {} |", cells.join(" | "));
    }
    Ok(())
}

fn parse_type(s: &str) -> anyhow::Result<KvDType> {
    KvDType::parse(s.trim())
        .with_context(|| format!("unknown KV cache type {s:?} (one of {})", KvDType::names()))
}

fn parse_setting(s: &str) -> anyhow::Result<KvTypes> {
    Ok(match s.split_once(':') {
        Some((k, v)) => KvTypes::split(parse_type(k)?, parse_type(v)?),
        None => KvTypes::all(parse_type(s)?),
    })
}

fn name(t: &KvTypes) -> String {
    if t.k == t.v {
        t.k.name().into()
    } else {
        format!("k {} v {}", t.k.name(), t.v.name())
    }
}

/// Each setting as codecs, plus unrotated Q4_0 beside rotated Q4_0 where that is measured.
fn codecs(settings: &[KvTypes]) -> Vec<(String, KvCodec, KvCodec)> {
    let mut out = Vec::new();
    for s in settings {
        out.push((name(s), KvCodec::Type(s.k), KvCodec::Type(s.v)));
        if s.k == KvDType::Q4_0 && s.v == KvDType::Q4_0 {
            let plain = KvCodec::Q4_0Unrotated;
            out.push((plain.name(), plain, plain));
        }
    }
    out
}

/// Bits per value of keys and values of `dim` under a setting.
type Bits = (Option<f64>, Option<f64>);

fn row(json: bool, what: &str, dim: usize, name: &str, bits: Bits, d: &Distortion) {
    if json {
        let mut v = serde_json::to_value(d).unwrap_or_default();
        v["sample"] = what.into();
        v["dim"] = dim.into();
        v["setting"] = name.into();
        v["key_bits_per_value"] = bits.0.into();
        v["value_bits_per_value"] = bits.1.into();
        println!("{v}");
    } else {
        let show = |b: Option<f64>| b.map_or("-".into(), |b| format!("{b:.2}"));
        println!(
            "| {what} | {dim} | {name} | {} / {} | {:.2e} | {:.2e} | {:.2e} |",
            show(bits.0),
            show(bits.1),
            d.k_rel_mse,
            d.v_rel_mse,
            d.out_rel_mse
        );
    }
}

fn header(json: bool) {
    if !json {
        println!(
            "| sample | head | cache | bits/value K / V | K rel. MSE | V rel. MSE | output rel. MSE |"
        );
        println!("|---|---|---|---|---|---|---|");
    }
}

/// Relative errors pooled over samples (each weighs the same).
fn pooled(samples: &[AttentionSample], k: KvCodec, v: KvCodec) -> anyhow::Result<Distortion> {
    let mut sum = Distortion { k_rel_mse: 0.0, v_rel_mse: 0.0, out_rel_mse: 0.0 };
    for s in samples {
        let d = distortion(s, k, v)?;
        sum.k_rel_mse += d.k_rel_mse;
        sum.v_rel_mse += d.v_rel_mse;
        sum.out_rel_mse += d.out_rel_mse;
    }
    let n = samples.len().max(1) as f64;
    Ok(Distortion {
        k_rel_mse: sum.k_rel_mse / n,
        v_rel_mse: sum.v_rel_mse / n,
        out_rel_mse: sum.out_rel_mse / n,
    })
}

pub fn run(a: KvQualityArgs) -> anyhow::Result<()> {
    let settings: Vec<KvTypes> =
        a.types.iter().map(|s| parse_setting(s)).collect::<Result<_, _>>()?;
    anyhow::ensure!(!settings.is_empty(), "nothing to measure: give --types");
    if let Some(budget) = a.fit {
        return fit(&a, &settings, budget);
    }
    let codecs = codecs(&settings);
    header(a.json);
    for &dim in &a.dims {
        for (outliers, label) in [(0, "gaussian"), (a.outliers, "outliers")] {
            if outliers == 0 && label == "outliers" {
                continue;
            }
            let s = synthetic_sample(dim, a.positions, outliers, a.outlier_scale);
            for (name, k, v) in &codecs {
                match distortion(&s, *k, *v) {
                    Ok(d) => {
                        let bits = (k.bits_per_value(dim), v.bits_per_value(dim));
                        row(a.json, label, dim, name, bits, &d)
                    }
                    Err(e) => eprintln!("{label} {dim} {name}: {e}"),
                }
            }
        }
    }
    let Some(model) = &a.model else { return Ok(()) };
    let config = floe::EngineConfig {
        experts: floe::ExpertMemory::Resident,
        threads: a.threads.unwrap_or(0),
        max_sequences: 1,
        kept_sessions: 0,
        ..Default::default()
    };
    let engine =
        Engine::open(model, config).with_context(|| format!("opening {}", model.display()))?;
    let text = match &a.file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("--file {}", f.display()))?,
        None => super::kld::DEFAULT_TEXT.to_string(),
    };
    let room = engine.context().saturating_sub(a.greedy);
    let want = a.tokens.min(room);
    let mut ids = engine.tokenizer().encode(&text)?;
    anyhow::ensure!(!ids.is_empty(), "the text has no tokens");
    while ids.len() < want {
        let again = ids.clone();
        ids.extend(again);
    }
    ids.truncate(want);
    anyhow::ensure!(ids.len() >= 2, "the context leaves fewer than 2 prompt tokens");
    eprintln!("{}: {} prompt tokens, exact (f32) cache ...", model.display(), ids.len());
    let mut samples = engine.attention_samples(&ids, a.chunk)?;
    // At most six layers, spread over the model (the f64 reference is quadratic in positions).
    let every = samples.len().div_ceil(6).max(1);
    samples = samples.into_iter().step_by(every).collect();
    let label = format!("{} layers", samples.len());
    for (name, k, v) in &codecs {
        let Some(first) = samples.first() else { break };
        let bits = (k.bits_per_row_value(&first.k_parts), v.bits_per_value(first.v_dim));
        match pooled(&samples, *k, *v) {
            Ok(d) => row(a.json, &label, first.k_dim, name, bits, &d),
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
    let exact = KvTypes::all(KvDType::F32);
    let vocab = engine.spec().vocab;
    let reference = engine.next_token_logprobs_kv(&ids, a.chunk, None, exact)?;
    let greedy_ref = engine.greedy_tokens(&ids, a.greedy, a.chunk, exact)?;
    if !a.json {
        println!();
        println!(
            "End to end over {} prompt tokens, against an f32 cache; greedy: the first {} \
             generated tokens",
            ids.len(),
            a.greedy
        );
        println!("| cache | mean KL | max KL | top-1 | greedy same | first difference |");
        println!("|---|---|---|---|---|---|");
    }
    for s in &settings {
        let run = engine.next_token_logprobs_kv(&ids, a.chunk, None, *s)?;
        let d = floe::divergence(&reference, &run, vocab, &ids)?;
        let greedy = engine.greedy_tokens(&ids, a.greedy, a.chunk, *s)?;
        let same = greedy.iter().zip(&greedy_ref).filter(|(x, y)| x == y).count();
        let first = greedy.iter().zip(&greedy_ref).position(|(x, y)| x != y);
        if a.json {
            let mut v = serde_json::to_value(d)?;
            v["setting"] = name(s).into();
            v["greedy_same"] = same.into();
            v["greedy_tokens"] = a.greedy.into();
            v["first_difference"] = first.into();
            println!("{v}");
        } else {
            println!(
                "| {} | {:.2e} | {:.2e} | {:.1}% | {same}/{} | {} |",
                name(s),
                d.mean_kl,
                d.max_kl,
                100.0 * d.top1_agreement,
                a.greedy,
                first.map_or("none".into(), |p| p.to_string())
            );
        }
    }
    Ok(())
}
