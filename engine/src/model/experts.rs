//! Where the forward pass gets routed experts' weights. The MoE block asks for the set of
//! experts a layer needs and is handed each one as it becomes available, in whatever order:
//! the resident source hands them over at once, the streaming source (floe's pipeline) as their
//! slabs land. Nothing in the forward pass assumes the experts are resident.

use floe_kernels::{DType, Matrix};

use super::format::{LayerExperts, PackedModel, SlabViewLayout};
use crate::error::{Error, Result};

/// An expert's three matrices.
#[derive(Debug, Clone, Copy)]
pub struct ExpertView<'a> {
    /// gate [ffn, hidden].
    pub gate: Matrix<'a>,
    /// up [ffn, hidden].
    pub up: Matrix<'a>,
    /// down [hidden, ffn].
    pub down: Matrix<'a>,
}

impl<'a> ExpertView<'a> {
    /// Views the matrices of one slab (`slab` may be longer than the layout's, as a cache slot
    /// sized for the largest layer is).
    pub fn from_slab(layout: &SlabViewLayout, slab: &'a [u8]) -> Result<Self> {
        let m = |(offset, rows, cols, bytes, dtype): (usize, usize, usize, usize, DType)| {
            let data = slab.get(offset..offset + bytes).ok_or_else(|| {
                Error::Invalid(format!("expert slab of {} bytes is too short", slab.len()))
            })?;
            Matrix::new(dtype, rows, cols, data)
                .map_err(|e| Error::Invalid(format!("expert slab: {e}")))
        };
        Ok(Self { gate: m(layout.gate)?, up: m(layout.up)?, down: m(layout.down)? })
    }
}

/// Supplies routed experts to the forward pass.
pub trait ExpertSource: Send + Sync {
    /// Calls `f(expert, weights)` once for each of `experts` of decoder layer `layer`, in the
    /// order their weights become available. `step` numbers the token step (for cache policies);
    /// `weights` are the router weights of each expert (the largest over the chunk's tokens).
    fn with_experts(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        step: u64,
        f: &mut dyn FnMut(usize, &ExpertView<'_>) -> Result<()>,
    ) -> Result<()>;

    /// Tells the source what the router chose for one token (for routing-aware policies and
    /// prefetchers). The default ignores it.
    fn on_route(&self, _layer: usize, _step: u64, _experts: &[(usize, f32)]) {}

    /// Whether the source wants predictions of the next layer's experts.
    fn wants_prefetch(&self) -> bool {
        false
    }

    /// A prediction: `experts` of `layer` will likely be needed soon.
    fn prefetch(&self, _layer: usize, _experts: &[(usize, f32)], _step: u64) {}
}

/// Every expert in memory: experts.bin read whole.
pub struct ResidentExperts {
    buf: Vec<u64>,
    layers: Vec<Option<LayerExperts>>,
    experts: usize,
}

impl std::fmt::Debug for ResidentExperts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidentExperts").field("bytes", &(self.buf.len() * 8)).finish()
    }
}

impl ResidentExperts {
    /// Reads experts.bin of `model` into memory.
    pub fn load(model: &PackedModel) -> Result<Self> {
        let path = model.dir.join("experts.bin");
        let bytes =
            std::fs::read(&path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let mut buf = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut buf)[..bytes.len()].copy_from_slice(&bytes);
        let m = &model.manifest;
        Ok(Self { buf, layers: m.expert_table()?, experts: m.config.experts })
    }
}

impl ExpertSource for ResidentExperts {
    fn with_experts(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        _step: u64,
        f: &mut dyn FnMut(usize, &ExpertView<'_>) -> Result<()>,
    ) -> Result<()> {
        let slabs = self
            .layers
            .get(layer)
            .copied()
            .flatten()
            .ok_or_else(|| Error::Invalid(format!("layer {layer} has no routed experts")))?;
        let all: &[u8] = bytemuck::cast_slice(&self.buf);
        for &(e, _) in experts {
            if e >= self.experts {
                return Err(Error::Invalid(format!(
                    "expert {e} of {} in layer {layer}",
                    self.experts
                )));
            }
            let off = slabs.offset(e) as usize;
            let bytes = all.get(off..off + slabs.layout.slab_bytes).ok_or_else(|| {
                Error::Invalid(format!("layer {layer} expert {e}: experts.bin is too short"))
            })?;
            let view = ExpertView::from_slab(&slabs.layout, bytes)?;
            f(e, &view)?;
        }
        Ok(())
    }
}

/// A shared source (keep an `Arc` to read its counters while the model uses it).
impl<T: ExpertSource + ?Sized> ExpertSource for std::sync::Arc<T> {
    fn with_experts(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        step: u64,
        f: &mut dyn FnMut(usize, &ExpertView<'_>) -> Result<()>,
    ) -> Result<()> {
        (**self).with_experts(layer, experts, step, f)
    }
    fn on_route(&self, layer: usize, step: u64, experts: &[(usize, f32)]) {
        (**self).on_route(layer, step, experts)
    }
    fn wants_prefetch(&self) -> bool {
        (**self).wants_prefetch()
    }
    fn prefetch(&self, layer: usize, experts: &[(usize, f32)], step: u64) {
        (**self).prefetch(layer, experts, step)
    }
}
