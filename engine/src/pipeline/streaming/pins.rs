//! Learned pins: per-expert use counted across runs (`--usage FILE`), and the hottest experts
//! read into slots held for good before the first token (`--pin-mb`), in file order so the
//! read is one sequential pass.

use std::io::Read;
use std::path::Path;

use floe_cache::{ExpertKey, ExpertUsage};
use floe_io::Priority;

use super::StreamingExperts;
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;

/// Bytes of the experts file hashed into the model's identity: enough for a GGUF header and
/// its metadata, or a packed model's first slabs.
const FINGERPRINT_BYTES: u64 = 1 << 16;

impl StreamingExperts {
    /// What a usage file must have been learned on: the model's shape and a fingerprint of
    /// its experts file (its size and first bytes). The expert count per token is left out:
    /// counts learned with fewer experts per token still rank the experts.
    pub fn model_identity(&self, config: &ModelConfig) -> Result<String> {
        let path = &self.experts.paths[0];
        let mut f = std::fs::File::open(path)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut head = Vec::new();
        f.by_ref()
            .take(FINGERPRINT_BYTES)
            .read_to_end(&mut head)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let hash = head.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Ok(format!(
            "{:?} {} layers x {} experts, hidden {}, expert ffn {}, {} bytes of experts, {hash:016x}",
            config.arch, config.layers, config.experts, config.hidden, config.expert_ffn, len
        ))
    }

    /// Counts every routing decision from now on into `usage` (`with_usage` hands it back).
    pub fn set_usage(&self, usage: ExpertUsage) {
        *self.usage.lock() = Some(usage);
    }

    /// The use counted so far, if counting.
    pub fn usage(&self) -> Option<ExpertUsage> {
        self.usage.lock().clone()
    }

    /// Reads `keys` into slots held for good (as many as fit beside one layer's top-k),
    /// sorted by file offset, and waits for them. Returns how many were pinned.
    pub fn pin(&self, keys: &[ExpertKey]) -> Result<usize> {
        let mut sorted = Vec::with_capacity(keys.len());
        for &k in keys {
            let first = self.layer(k)?.read(k.expert as usize)[0];
            sorted.push(((first.file, first.offset), k));
        }
        sorted.sort();
        let mut inner = self.inner.lock();
        let mut pinned = 0;
        for (_, key) in sorted {
            let Some(slot) = self.cache.pin_resident(key) else { break };
            self.submit(&mut inner, key, slot, Priority::Demand)?;
            pinned += 1;
        }
        while inner.in_flight > 0 {
            let done = self.io.next_completion()?;
            let (key, ok) = self.land(&mut inner, done)?;
            if !ok {
                return Err(Error::Invalid(format!("pinning {key}: its read failed")));
            }
        }
        Ok(pinned)
    }
}

/// Loads the usage file at `path` for `streaming`'s model (a new count if there is none),
/// pins its hottest experts up to `pin_bytes`, starts the cache policy from its counts, and
/// counts from now on. Returns the experts
/// pinned and whether the file had counts.
pub(crate) fn start_usage(
    streaming: &StreamingExperts,
    config: &ModelConfig,
    path: &Path,
    pin_bytes: u64,
) -> Result<(usize, bool)> {
    let identity = streaming.model_identity(config)?;
    let (layers, experts) = (config.layers as u16, config.experts as u16);
    let loaded = ExpertUsage::load(path, &identity, layers, experts)?;
    let learned = loaded.as_ref().is_some_and(|u| u.total() > 0);
    let usage = loaded.unwrap_or_else(|| ExpertUsage::new(&identity, layers, experts));
    let slots = (pin_bytes / streaming.cache.slab_bytes()) as usize;
    let pinned = if slots > 0 && learned { streaming.pin(&usage.hottest(slots))? } else { 0 };
    if learned {
        // The policy starts from what earlier runs chose (the moe policy weighs it).
        streaming.cache.learn_prior(&usage);
    }
    streaming.set_usage(usage);
    Ok((pinned, learned))
}
