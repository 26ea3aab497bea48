//! PNG plots for `floe sim --plot`.

use std::path::Path;

use floe::cache::sim::SimResult;

/// Hit ratio against capacity, one line per policy.
pub fn miss_ratio_curves(
    path: &Path,
    title: &str,
    results: &[(SimResult, f64)],
) -> anyhow::Result<()> {
    let _ = (path, title, results);
    anyhow::bail!("--plot is not available in this build")
}
