//! Where the forward pass gets routed experts' weights. The MoE block asks for the set of
//! experts a layer needs and is handed each one as it becomes available, in whatever order:
//! the resident source hands them over at once, the streaming source (floe's pipeline) as their
//! slabs land. Nothing in the forward pass assumes the experts are resident.

use floe_kernels::{DType, Matrix};

use crate::error::{Error, Result};
use crate::formats::packed::PackedModel;
use crate::formats::placement::{ExpertFile, MatrixPlace, SlabViewLayout};

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
        let m = |p: MatrixPlace| {
            let data = slab.get(p.offset..p.offset + p.bytes).ok_or_else(|| {
                Error::Invalid(format!("expert slab of {} bytes is too short", slab.len()))
            })?;
            Matrix::new(p.dtype, p.rows, p.cols, data)
                .map_err(|e| Error::Invalid(format!("expert slab: {e}")))
        };
        Ok(Self { gate: m(layout.gate)?, up: m(layout.up)?, down: m(layout.down)? })
    }

    /// The same view of a slab whose Q4_0 matrices were interleaved in place
    /// ([`interleave_slab`]).
    fn interleaved(self) -> Result<Self> {
        let mark = |m: Matrix<'a>| {
            if m.dtype() == DType::Q4_0 {
                m.interleaved8().map_err(Error::Kernel)
            } else {
                Ok(m)
            }
        };
        Ok(Self { gate: mark(self.gate)?, up: mark(self.up)?, down: mark(self.down)? })
    }
}

/// Interleaves a slab's Q4_0 matrices eight rows at a time, in place, for the kernels in use
/// (see [`floe_kernels::interleave_q4_0_here`]).
fn interleave_slab(layout: &SlabViewLayout, slab: &mut [u8]) -> Result<()> {
    for p in [layout.gate, layout.up, layout.down] {
        if p.dtype == DType::Q4_0 {
            let bytes = slab.get_mut(p.offset..p.offset + p.bytes).ok_or_else(|| {
                Error::Invalid(format!("expert slab shorter than its {} bytes", p.offset + p.bytes))
            })?;
            floe_kernels::quant::interleave_q4_0(bytes, p.rows, p.cols).map_err(Error::Kernel)?;
        }
    }
    Ok(())
}

/// What receives a batch of ready experts: (expert, weights) pairs.
pub type ExpertBatchFn<'a> = dyn FnMut(&[(usize, ExpertView<'_>)]) -> Result<()> + 'a;

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

    /// [`with_experts`](Self::with_experts) in batches: `f` gets every expert that is ready at
    /// once (the resident source: all of them; the streaming source: those in cache, then the
    /// rest as they land), so the forward pass can spread a batch's rows over its workers in
    /// one operation. The default hands them over one at a time.
    fn with_expert_batches(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        step: u64,
        f: &mut ExpertBatchFn<'_>,
    ) -> Result<()> {
        self.with_experts(layer, experts, step, &mut |e, view| f(&[(e, *view)]))
    }

    /// Tells the source what the router chose for one token (for routing-aware policies and
    /// prefetchers). The default ignores it.
    fn on_route(&self, _layer: usize, _step: u64, _experts: &[(usize, f32)]) {}

    /// Decode only, while the current MoE layer computes: `layer` is the next MoE layer, whose
    /// top-`k` experts the source may read ahead. `gate` applies that layer's router to the
    /// current hidden state (mixtral-offloading's speculative prediction), writing the ranked
    /// (expert, weight) predictions into the buffer it is given (the caller's, so nothing is
    /// allocated per layer); it costs a small matrix product, so a source calls it only if it
    /// predicts that way. The default reads nothing ahead.
    fn prefetch_next(
        &self,
        _layer: usize,
        _k: usize,
        _step: u64,
        _gate: &mut GatePrediction<'_>,
    ) -> Result<()> {
        Ok(())
    }
}

/// The gate prefetch's prediction: the next layer's ranked (expert, weight) pairs, written into
/// the given buffer.
pub type GatePrediction<'a> = dyn FnMut(&mut Vec<(usize, f32)>) -> Result<()> + 'a;

/// Every expert in memory, one slot-sized slab each, read once at load.
pub struct ResidentExperts {
    buf: floe_io::HugeBuf,
    file: ExpertFile,
    /// Slot index of expert 0 of each layer.
    first_slot: Vec<Option<usize>>,
    /// The Q4_0 matrices were interleaved at load for the kernels in use.
    interleaved: bool,
}

impl std::fmt::Debug for ResidentExperts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidentExperts").field("bytes", &self.buf.len()).finish()
    }
}

impl ResidentExperts {
    /// Reads every expert of `model` into memory.
    pub fn load(model: &PackedModel) -> Result<Self> {
        Self::load_file(model.expert_file()?)
    }

    /// Reads every expert of `file` into memory (plain buffered reads).
    pub fn load_file(file: ExpertFile) -> Result<Self> {
        use std::os::unix::fs::FileExt;
        let files = file
            .paths
            .iter()
            .map(|p| {
                std::fs::File::open(p).map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))
            })
            .collect::<Result<Vec<_>>>()?;
        let moe = file.layers.iter().flatten().count();
        let slot = file.slot_bytes.next_multiple_of(8);
        let mut buf = floe_io::HugeBuf::zeroed(moe * file.experts * slot, "resident experts")
            .map_err(Error::Io)?;
        let bytes = buf.as_mut_slice();
        let mut first_slot = vec![None; file.layers.len()];
        let interleaved = floe_kernels::interleave_q4_0_here();
        let mut next = 0;
        for (l, p) in file.layers.iter().enumerate() {
            let Some(p) = p else { continue };
            first_slot[l] = Some(next);
            for e in 0..file.experts {
                let dst = &mut bytes[(next + e) * slot..(next + e + 1) * slot];
                for r in p.read(e) {
                    let (f, len) = (&files[r.file], r.len);
                    f.read_exact_at(&mut dst[r.dst..r.dst + len], r.offset).map_err(|err| {
                        Error::Invalid(format!(
                            "{}: layer {l} expert {e}: {len} bytes at {}: {err}",
                            file.paths[r.file].display(),
                            r.offset
                        ))
                    })?;
                }
                if interleaved {
                    interleave_slab(&p.view(e, &|_| 1), dst)?;
                }
                // The bytes are ours now: their cached copy would crowd out the memory (and
                // the huge pages) that holds them.
                for r in p.read(e) {
                    floe_io::drop_cached(&files[r.file], r.offset, r.len as u64);
                }
            }
            next += file.experts;
        }
        Ok(Self { buf, file, first_slot, interleaved })
    }
}

impl ResidentExperts {
    fn view(&self, layer: usize, e: usize) -> Result<ExpertView<'_>> {
        let all = self.buf.as_slice();
        let slot = self.file.slot_bytes.next_multiple_of(8);
        let p = self.file.layer(layer, e)?;
        let first = self.first_slot[layer].expect("layer() checked it has experts");
        let bytes = &all[(first + e) * slot..(first + e + 1) * slot];
        // Read with plain reads: every segment starts exactly at its place (alignment 1).
        let view = ExpertView::from_slab(&p.view(e, &|_| 1), bytes)?;
        if self.interleaved {
            view.interleaved()
        } else {
            Ok(view)
        }
    }
}

/// Experts handed over in one batch without touching the heap (a decode step's top-k).
pub const INLINE_BATCH: usize = 16;

impl ExpertSource for ResidentExperts {
    fn with_experts(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        _step: u64,
        f: &mut dyn FnMut(usize, &ExpertView<'_>) -> Result<()>,
    ) -> Result<()> {
        for &(e, _) in experts {
            f(e, &self.view(layer, e)?)?;
        }
        Ok(())
    }

    fn with_expert_batches(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        _step: u64,
        f: &mut ExpertBatchFn<'_>,
    ) -> Result<()> {
        for part in experts.chunks(INLINE_BATCH) {
            let mut batch = smallvec::SmallVec::<[(usize, ExpertView); INLINE_BATCH]>::new();
            for &(e, _) in part {
                batch.push((e, self.view(layer, e)?));
            }
            f(&batch)?;
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
    fn with_expert_batches(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        step: u64,
        f: &mut ExpertBatchFn<'_>,
    ) -> Result<()> {
        (**self).with_expert_batches(layer, experts, step, f)
    }
    fn on_route(&self, layer: usize, step: u64, experts: &[(usize, f32)]) {
        (**self).on_route(layer, step, experts)
    }
    fn prefetch_next(
        &self,
        layer: usize,
        k: usize,
        step: u64,
        gate: &mut GatePrediction<'_>,
    ) -> Result<()> {
        (**self).prefetch_next(layer, k, step, gate)
    }
}
