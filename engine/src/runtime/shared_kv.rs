//! The shared-KV attention mixer (DeepSeek-V4, see `SharedKvSpec`): the query LoRA, the
//! key/value row, the compressors' projections and the indexer's weights in one pool operation
//! over the layer input; rows stored and windows pooled into entries per sequence; each query
//! attends its sliding window of rows plus the compressed entries it may see (all of them, or
//! those its indexer picks), with a sink per head; RoPE undone on the output, which the grouped
//! projection takes back to the hidden width. Reads `hn`, writes `out`.

use floe_kernels::ops::{self, AttentionShape, KvDType, KvFormat, KvView};
use floe_kernels::{matmul_group, matmul_input, Matrix};
use smallvec::SmallVec;

use super::dsa::{IndexScale, IndexerBufs};
use super::forward::{rms_rows, rope_rows, rope_table_for, Model};
use super::mla::rows;
use super::session::{sized, LayerState, Scratch, Seg};
use super::shared_kv_state::SharedKvState;
use super::weights::{CompressorWeights, SharedKvWeights};
use crate::error::{Error, Result};
use crate::model::spec::{CompressorSpec, SharedKvSpec};

/// An entry the indexer did not pick (a query that sees fewer entries than `topk`).
pub(crate) const UNPICKED: usize = usize::MAX;

/// Buffers of the mixer, reused across passes.
#[derive(Debug, Default)]
pub(crate) struct SharedKvScratch {
    qa: Vec<f32>,
    qa_normed: Vec<f32>,
    q: Vec<f32>,
    kv: Vec<f32>,
    cmp_kv: Vec<f32>,
    cmp_gate: Vec<f32>,
    idx_kv: Vec<f32>,
    idx_gate: Vec<f32>,
    idx_w: Vec<f32>,
    idx_q: Vec<f32>,
    entry: Vec<f32>,
    normed: Vec<f32>,
    att: Vec<f32>,
    grouped: Vec<f32>,
    rows: Vec<f32>,
    scores: Vec<f32>,
    index: IndexerBufs,
    picks: Vec<usize>,
    ranked: Vec<(usize, f32)>,
    table: Vec<(f32, f32)>,
    gather: Vec<f32>,
    head: Vec<f32>,
}

impl SharedKvScratch {
    /// Room for what one query of a layer of `a` reads in a session of `ctx` positions (the
    /// ranked entries and their scores, the gathered rows), so decode does not allocate as the
    /// entries grow.
    pub(crate) fn reserve_for(&mut self, a: &SharedKvSpec, ctx: usize) {
        let entries = a.compressor.map_or(0, |c| ctx / c.ratio);
        // A query reads its window and, with an indexer, at most its top-k of the entries.
        let read = a.compressor.and_then(|c| c.indexer).map_or(entries, |ix| ix.topk.min(entries));
        let keys = a.window + read;
        self.ranked.reserve(entries.saturating_sub(self.ranked.len()));
        self.picks.reserve(entries.saturating_sub(self.picks.len()));
        self.scores.reserve(entries.saturating_sub(self.scores.len()));
        self.rows.reserve((keys * a.head_dim).saturating_sub(self.rows.len()));
    }
}

/// RMSNorm without a weight, in place.
fn unit_rms(x: &mut [f32], eps: f32) {
    let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + eps).sqrt();
    x.iter_mut().for_each(|v| *v *= inv);
}

fn state<'a>(seg: &'a mut Seg<'_>, l: usize) -> Result<&'a mut SharedKvState> {
    match seg.state {
        LayerState::SharedKv(s) => Ok(s),
        _ => Err(Error::Invalid(format!(
            "layer {l}: the session's state does not match the layer's mixer"
        ))),
    }
}

impl Model {
    /// Pools a closed window of `window` into its entry at `pos` (the window's last position):
    /// normed, RoPE'd at the window's first position, appended to `out`.
    #[allow(clippy::too_many_arguments)]
    fn emit_entry(
        &self,
        l: usize,
        window: &super::shared_kv_state::Window,
        pos: usize,
        c: &CompressorSpec,
        norm: &[f32],
        rope_dims: usize,
        (entry, normed, table): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<(f32, f32)>),
        out: &mut Vec<f32>,
    ) {
        let d = norm.len();
        let (e, nr) = (sized(entry, d), sized(normed, d));
        window.pool(pos, e);
        ops::rms_norm(e, norm, self.spec.rms_eps, nr);
        rope_table_for(self, l, pos + 1 - c.ratio, 1, table);
        ops::rope_from_table(&mut nr[d - rope_dims..], table, ops::RopeStyle::Interleaved);
        out.extend_from_slice(nr);
    }

    /// The shared-KV attention layer `l` over the pass's `n` rows.
    pub(crate) fn shared_kv(
        &self,
        l: usize,
        a: &SharedKvSpec,
        w: &SharedKvWeights,
        segs: &mut [Seg],
        sc: &mut Scratch,
        n: usize,
    ) -> Result<()> {
        let (heads, hd, r, rd) = (a.heads, a.head_dim, a.q_lora_rank, a.rope.dims);
        let (eps, pool, h) = (self.spec.rms_eps, self.pool.as_ref(), self.spec.hidden);
        let k = &mut sc.skv;
        let cw = a.compressor_width();
        let ix = a.compressor.and_then(|c| c.indexer);
        let (iheads, idim) = ix.map_or((0, 0), |ix| (ix.heads, ix.head_dim));
        // Every product of the layer input at once.
        {
            let (wqa, wkv) = (self.m(&w.q_a)?, self.m(&w.kv)?);
            let cmp: Option<[Matrix; 2]> = w
                .compressor
                .as_ref()
                .map(|c| Ok::<_, Error>([self.m(&c.kv)?, self.m(&c.gate)?]))
                .transpose()?;
            let idx: Option<[Matrix; 3]> = w
                .indexer
                .as_ref()
                .map(|i| {
                    let c = &i.compressor;
                    Ok::<_, Error>([self.m(&c.kv)?, self.m(&c.gate)?, self.m(&i.weights)?])
                })
                .transpose()?;
            let (qa, kv) = (sized(&mut k.qa, n * r), sized(&mut k.kv, n * hd));
            let (ckv, cgate) = (sized(&mut k.cmp_kv, n * cw), sized(&mut k.cmp_gate, n * cw));
            let (ikv, igate) =
                (sized(&mut k.idx_kv, n * 2 * idim), sized(&mut k.idx_gate, n * 2 * idim));
            let iw = sized(&mut k.idx_w, n * iheads);
            let mut products: SmallVec<[(&Matrix, &mut [f32]); 7]> = SmallVec::new();
            products.push((&wqa, qa));
            products.push((&wkv, kv));
            if let Some([a, b]) = &cmp {
                products.push((a, ckv));
                products.push((b, cgate));
            }
            if let Some([a, b, c]) = &idx {
                products.push((a, ikv));
                products.push((b, igate));
                products.push((c, iw));
            }
            let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
            for group in products.chunks_mut(floe_kernels::MAX_GROUP) {
                matmul_group(group, &mut input, pool).map_err(Error::Kernel)?;
            }
        }
        // Queries: the normed LoRA latent up, each head RMS-normed without weight, RoPE'd.
        let qa_normed = sized(&mut k.qa_normed, n * r);
        rms_rows(&k.qa, self.vec(&w.q_a_norm)?, eps, r, qa_normed);
        let q = sized(&mut k.q, n * heads * hd);
        {
            let mut input = sc.in_other.input(qa_normed, n, self.activations);
            matmul_input(&self.m(&w.q_b)?, &mut input, q, pool).map_err(Error::Kernel)?;
        }
        rope_rows(self, l, segs, &mut sc.rope_one, &mut sc.rope);
        let half = rd / 2;
        let style = ops::RopeStyle::Interleaved;
        let kv_norm = self.vec(&w.kv_norm)?;
        let normed = sized(&mut k.normed, hd);
        for t in 0..n {
            let table = &sc.rope[t * half..(t + 1) * half];
            for head in q[t * heads * hd..(t + 1) * heads * hd].chunks_exact_mut(hd) {
                unit_rms(head, eps);
                ops::rope_from_table(&mut head[hd - rd..], table, style);
            }
            let row = &mut k.kv[t * hd..(t + 1) * hd];
            ops::rms_norm(row, kv_norm, eps, normed);
            row.copy_from_slice(normed);
            ops::rope_from_table(&mut row[hd - rd..], table, style);
        }
        // The indexer's queries (RoPE'd as the layer's) and head weights.
        if let (Some(_), Some(iw)) = (ix, &w.indexer) {
            let iq = sized(&mut k.idx_q, n * iheads * idim);
            let mut input = sc.in_other.input(&k.qa_normed, n, self.activations);
            matmul_input(&self.m(&iw.q)?, &mut input, iq, pool).map_err(Error::Kernel)?;
            for t in 0..n {
                let table = &sc.rope[t * half..(t + 1) * half];
                for head in iq[t * iheads * idim..(t + 1) * iheads * idim].chunks_exact_mut(idim) {
                    ops::rope_from_table(&mut head[idim - rd..], table, style);
                }
            }
            let scale = 1.0 / (iheads as f32).sqrt();
            k.idx_w[..n * iheads].iter_mut().for_each(|v| *v *= scale);
        }
        // Room for a query's reads at the longest context of the pass (decode stays
        // allocation-free as the entries grow).
        for seg in segs.iter_mut() {
            k.reserve_for(a, state(seg, l)?.ctx());
        }
        // Each sequence: store its rows, pool closed windows, attend.
        let att = sized(&mut k.att, n * heads * hd);
        let sinks = self.vec(&w.sinks)?;
        let shape =
            AttentionShape { heads, kv_heads: 1, head_dim: hd, scale: a.scale, window: None };
        let rows_format = KvFormat::one(KvDType::F32, hd).ok_or_else(|| {
            Error::Invalid(format!("shared-KV head dim {hd} is wider than the cache takes"))
        })?;
        let cmp = match (a.compressor, &w.compressor) {
            (Some(c), Some(cwt)) => Some((c, self.cmp_parts(cwt)?)),
            _ => None,
        };
        let icmp = match (ix, &w.indexer) {
            (Some(_), Some(iw)) => Some(self.cmp_parts(&iw.compressor)?),
            _ => None,
        };
        for seg in segs.iter_mut() {
            let at = seg.at;
            let st = state(seg, l)?;
            // Position by position: its row into the ring and its share of the compressors'
            // windows (an entry when one closes), then its query, which sees exactly these.
            for t in at.range() {
                let pos = at.pos + t - at.start;
                st.reserve(pos, a);
                st.store_row(pos, &k.kv[t * hd..(t + 1) * hd]);
                if let Some((c, (ape, norm))) = cmp {
                    let slot = (pos % c.ratio) * cw;
                    let (v, g) =
                        (&k.cmp_kv[t * cw..(t + 1) * cw], &k.cmp_gate[t * cw..(t + 1) * cw]);
                    if st.window.push(pos, v, g, &ape[slot..slot + cw]) {
                        let bufs = (&mut k.entry, &mut k.normed, &mut k.table);
                        self.emit_entry(l, &st.window, pos, &c, norm, rd, bufs, &mut st.entries);
                    }
                    if let Some((iape, inorm)) = icmp {
                        let (iw2, slot) = (2 * idim, (pos % c.ratio) * 2 * idim);
                        let (v, g) = (
                            &k.idx_kv[t * iw2..(t + 1) * iw2],
                            &k.idx_gate[t * iw2..(t + 1) * iw2],
                        );
                        if st.index_window.push(pos, v, g, &iape[slot..slot + iw2]) {
                            let bufs = (&mut k.entry, &mut k.normed, &mut k.table);
                            let keys = &mut st.index_keys;
                            self.emit_entry(l, &st.index_window, pos, &c, inorm, rd, bufs, keys);
                        }
                    }
                }
                let visible = cmp.map_or(0, |(c, _)| (pos + 1) / c.ratio);
                // The entries this query reads.
                k.picks.clear();
                match ix {
                    Some(ix) => {
                        let q = &k.idx_q[t * iheads * idim..(t + 1) * iheads * idim];
                        let wts = &k.idx_w[t * iheads..(t + 1) * iheads];
                        let scale = IndexScale { inner: 1.0, outer: 1.0 / (idim as f32).sqrt() };
                        let keys = &st.index_keys[..visible * idim];
                        self.index_scores(q, keys, wts, scale, &mut k.index, &mut k.scores)?;
                        k.ranked.clear();
                        k.ranked.extend(k.scores.iter().copied().enumerate());
                        k.ranked.sort_unstable_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
                        k.picks.extend(k.ranked.iter().take(ix.topk).map(|x| x.0));
                        if let Some(sel) = st.selections.as_mut() {
                            sel.extend_from_slice(&k.picks);
                            sel.extend(std::iter::repeat_n(UNPICKED, ix.topk - k.picks.len()));
                        }
                    }
                    None => k.picks.extend(0..visible),
                }
                // The query's window of rows, then its entries, gathered into one shared
                // key/value cache for the attention kernel (with the heads' sinks).
                let lo = (pos + 1).saturating_sub(a.window);
                let keys = pos + 1 - lo + k.picks.len();
                k.rows.clear();
                for p in lo..=pos {
                    k.rows.extend_from_slice(st.row(p, hd));
                }
                for &e in &k.picks {
                    k.rows.extend_from_slice(&st.entries[e * hd..(e + 1) * hd]);
                }
                let view = KvView {
                    k_format: rows_format,
                    v_format: rows_format,
                    k: bytemuck::cast_slice(&k.rows),
                    v: bytemuck::cast_slice(&k.rows),
                    k_stride: rows_format.bytes(),
                    v_stride: rows_format.bytes(),
                };
                let (qt, out) = (
                    &k.q[t * heads * hd..][..heads * hd],
                    &mut att[t * heads * hd..][..heads * hd],
                );
                ops::attention(shape, qt, view, keys - 1, 1, out, Some(sinks), pool);
                // The value carried RoPE on its trailing channels: rotate back to the query's
                // position.
                let table = &sc.rope[t * half..(t + 1) * half];
                k.table.clear();
                k.table.extend(table.iter().map(|&(c, s)| (c, -s)));
                for head in out.chunks_exact_mut(hd) {
                    ops::rope_from_table(&mut head[hd - rd..], &k.table, style);
                }
            }
        }
        // The grouped output projection: each group of heads through its own rows of `o_a`.
        let (g, rank) = (a.o_groups, a.o_lora_rank);
        let gin = heads * hd / g;
        let o_a = self.m(&w.o_a)?;
        let grouped = sized(&mut k.grouped, n * g * rank);
        for gi in 0..g {
            let bufs = (&mut k.gather, &mut k.head, &mut sc.in_other);
            let src = (&k.att[..n * heads * hd], heads * hd, gi * gin, gin);
            let dst = (&mut *grouped, g * rank, gi * rank);
            self.head_product(&rows(&o_a, gi * rank, rank)?, n, src, dst, bufs)?;
        }
        let out = sized(&mut sc.out, n * h);
        let mut input = sc.in_other.input(grouped, n, self.activations);
        matmul_input(&self.m(&w.o_b)?, &mut input, out, pool).map_err(Error::Kernel)
    }

    /// A compressor's slot biases and entry norm.
    fn cmp_parts(&self, c: &CompressorWeights) -> Result<(&[f32], &[f32])> {
        Ok((self.vec(&c.ape)?, self.vec(&c.norm)?))
    }
}
