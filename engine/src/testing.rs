//! Support for floe's own tests and fuzz targets; not part of the embedding API.

use std::path::Path;

use crate::error::Result;
use crate::formats::dense::DenseWeights;
use crate::formats::packed::PackedModel;
use crate::runtime::experts::ResidentExperts;
use crate::runtime::{Model, Session};

/// Opens the packed model at `dir` (checksums not verified), loads it resident on one thread
/// and runs two tokens: the whole path a damaged `floe.json` must survive. Every step may fail
/// with an error; none may panic.
pub fn open_and_run_two_tokens(dir: &Path) -> Result<Vec<f32>> {
    let packed = PackedModel::open(dir, false)?;
    let dense = DenseWeights::load(&packed)?;
    let experts = ResidentExperts::load(&packed)?;
    let model = Model::new(packed.manifest.config.clone(), dense, Box::new(experts), 1)?;
    model.forward(&mut Session::default(), &[1, 2], false)
}
