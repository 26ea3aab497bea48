//! PNG plots for `floe sim --plot`: hit ratio against capacity, one line per policy.

use std::path::{Path, PathBuf};

use anyhow::Context;
use floe::cache::sim::SimResult;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// Where common distributions keep a sans-serif TrueType font; `FLOE_FONT` overrides.
const FONT_CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

fn load_font() -> anyhow::Result<()> {
    let path = std::env::var_os("FLOE_FONT")
        .map(PathBuf::from)
        .or_else(|| FONT_CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists()))
        .context(
            "--plot needs a TrueType font for its labels and found none: install one \
             (apt-get install fonts-dejavu-core) or point FLOE_FONT at a .ttf file",
        )?;
    let bytes = std::fs::read(&path).with_context(|| format!("reading font {}", path.display()))?;
    // plotters keeps the font for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a usable TrueType font", path.display()))?;
    Ok(())
}

/// Draws hit ratio (y) against capacity as a share of all experts (x), one line per policy.
pub fn miss_ratio_curves(
    path: &Path,
    title: &str,
    results: &[(SimResult, f64, u64)],
) -> anyhow::Result<()> {
    load_font()?;
    let mut policies: Vec<&str> = Vec::new();
    for (r, _, _) in results {
        if !policies.contains(&r.policy.as_str()) {
            policies.push(&r.policy);
        }
    }
    let max_x = results.iter().map(|(r, _, _)| r.capacity_fraction).fold(0.0, f64::max).max(0.01);
    let root = BitMapBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("hit ratio vs capacity: {title}"), ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x * 1.05 * 100.0, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("capacity (% of all experts)")
        .y_desc("hit ratio")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (i, name) in policies.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let mut pts: Vec<(f64, f64)> = results
            .iter()
            .filter(|(r, _, _)| r.policy == *name)
            .map(|(r, _, _)| (100.0 * r.capacity_fraction, r.hit_ratio))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let width = if *name == "belady" { 3 } else { 2 };
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(width)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    root.present().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
