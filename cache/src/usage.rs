//! Per-expert use counts kept across runs (`--usage FILE`): which experts to pin at start.
//! A small versioned JSON file, keyed by the model's identity so a file learned on another
//! model is refused, written atomically (a temporary file renamed over the old one).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::CacheError;
use crate::key::ExpertKey;

/// The file format's version.
const VERSION: u32 = 1;

/// Use counts per routed expert of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertUsage {
    floe_usage: u32,
    /// What the counts belong to (see the engine's model identity).
    pub identity: String,
    /// MoE layers (including layers without experts, which count nothing).
    pub layers: u16,
    /// Routed experts per layer.
    pub experts: u16,
    /// Tokens routed to each expert, `layers x experts`, layer-major.
    counts: Vec<u64>,
}

/// What is wrong with a usage file.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a usage file of a version floe reads.
    #[error("not a floe usage file: {0}")]
    Format(String),
    /// Learned on another model.
    #[error("it was learned on another model ({found}), not this one ({expected})")]
    OtherModel {
        /// The file's identity.
        found: String,
        /// This model's.
        expected: String,
    },
}

fn usage_error(path: &Path, error: UsageError) -> CacheError {
    CacheError::Usage { path: path.display().to_string(), error }
}

impl ExpertUsage {
    /// No use counted yet.
    pub fn new(identity: &str, layers: u16, experts: u16) -> Self {
        Self {
            floe_usage: VERSION,
            identity: identity.to_string(),
            layers,
            experts,
            counts: vec![0; layers as usize * experts as usize],
        }
    }

    /// The counts in `path` if it exists (`None` if not), refused if it belongs to another
    /// model or is damaged.
    pub fn load(
        path: &Path,
        identity: &str,
        layers: u16,
        experts: u16,
    ) -> Result<Option<Self>, CacheError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(usage_error(path, e.into())),
        };
        let u: Self = serde_json::from_str(&text)
            .map_err(|e| usage_error(path, UsageError::Format(e.to_string())))?;
        if u.floe_usage != VERSION {
            return Err(usage_error(
                path,
                UsageError::Format(format!("version {} (this floe reads {VERSION})", u.floe_usage)),
            ));
        }
        if u.identity != identity || u.layers != layers || u.experts != experts {
            return Err(usage_error(
                path,
                UsageError::OtherModel {
                    found: format!("{} ({} x {})", u.identity, u.layers, u.experts),
                    expected: format!("{identity} ({layers} x {experts})"),
                },
            ));
        }
        if u.counts.len() != layers as usize * experts as usize {
            return Err(usage_error(
                path,
                UsageError::Format(format!(
                    "{} counts for {layers} x {experts} experts",
                    u.counts.len()
                )),
            ));
        }
        Ok(Some(u))
    }

    /// Writes the counts to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), CacheError> {
        let write = || -> std::io::Result<()> {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
            // Readable as any file the user writes (a temporary file is private).
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
            }
            tmp.as_file().sync_all()?;
            tmp.persist(path).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(|e| usage_error(path, e.into()))
    }

    /// One token was routed to `experts` of `layer` (out-of-range values are ignored).
    pub fn record(&mut self, layer: usize, experts: impl IntoIterator<Item = usize>) {
        if layer >= self.layers as usize {
            return;
        }
        let row = layer * self.experts as usize;
        for e in experts.into_iter().filter(|&e| e < self.experts as usize) {
            self.counts[row + e] += 1;
        }
    }

    /// The use count of `key`.
    pub fn count(&self, key: ExpertKey) -> u64 {
        if key.layer >= self.layers || key.expert >= self.experts {
            return 0;
        }
        self.counts[key.layer as usize * self.experts as usize + key.expert as usize]
    }

    /// Tokens counted in all (one per token and layer).
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `n` most used experts (used at least once), most used first; ties by key.
    pub fn hottest(&self, n: usize) -> Vec<ExpertKey> {
        let e = self.experts as usize;
        let mut keys: Vec<(u64, ExpertKey)> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| (c, ExpertKey::new((i / e) as u16, (i % e) as u16)))
            .collect();
        keys.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        keys.into_iter().take(n).map(|(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_a_wrong_model_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        assert!(ExpertUsage::load(&path, "m", 2, 4).unwrap().is_none(), "absent: nothing learned");
        let mut u = ExpertUsage::new("m", 2, 4);
        u.record(0, [1, 2]);
        u.record(0, [2, 3]);
        u.record(1, [0, 9]);
        u.record(5, [0]);
        u.save(&path).unwrap();
        let back = ExpertUsage::load(&path, "m", 2, 4).unwrap().unwrap();
        assert_eq!(back, u);
        assert_eq!(back.total(), 5);
        assert_eq!(
            back.hottest(3),
            vec![ExpertKey::new(0, 2), ExpertKey::new(0, 1), ExpertKey::new(0, 3)]
        );
        assert_eq!(back.hottest(10).len(), 4, "unused experts are never pinned");
        for (id, l, e) in [("other", 2, 4), ("m", 3, 4), ("m", 2, 8)] {
            let err = ExpertUsage::load(&path, id, l, e).unwrap_err().to_string();
            assert!(err.contains("another model") && err.contains("usage.json"), "{err}");
        }
        std::fs::write(&path, b"{\"floe_usage\":1,\"identity\":\"m\"").unwrap();
        let err = ExpertUsage::load(&path, "m", 2, 4).unwrap_err().to_string();
        assert!(err.contains("not a floe usage file"), "{err}");
        std::fs::write(
            &path,
            serde_json::to_string(&ExpertUsage { floe_usage: 9, ..u.clone() }).unwrap(),
        )
        .unwrap();
        let err = ExpertUsage::load(&path, "m", 2, 4).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
        let short = ExpertUsage { counts: vec![1; 3], ..u };
        std::fs::write(&path, serde_json::to_string(&short).unwrap()).unwrap();
        assert!(ExpertUsage::load(&path, "m", 2, 4).is_err());
    }
}
