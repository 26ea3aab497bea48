//! What a KV cache type costs in accuracy: relative error of the keys, the values and the
//! attention outputs they produce, on the queries, keys and values a model really computed
//! ([`Engine::attention_samples`]) or on synthetic ones with outlier channels (as real keys
//! have). Outputs are computed in f64 over what each cache would hold (stored, then read back),
//! against f64 over the exact vectors.

use floe_kernels::ops::KvDType;
use floe_kernels::quant::{dequantize_q4_0, quantize_q4_0, BlockQ4_0};

use super::Engine;
use crate::error::{Error, Result};
use crate::runtime::{KvTypes, Session, SessionOptions};

/// One attention layer's queries, keys and values over a prompt.
#[derive(Debug, Clone)]
pub struct AttentionSample {
    /// The layer.
    pub layer: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Values per query and key head.
    pub k_dim: usize,
    /// How a key row splits into separately stored parts (one part, or MLA's latent and RoPE
    /// key): each part is cached on its own.
    pub k_parts: Vec<usize>,
    /// Values per value head.
    pub v_dim: usize,
    /// Score scale.
    pub scale: f32,
    /// `positions x heads x k_dim`: query `t` sees keys `0..=t`.
    pub queries: Vec<f32>,
    /// `positions x kv_heads x k_dim`.
    pub keys: Vec<f32>,
    /// `positions x kv_heads x v_dim`.
    pub values: Vec<f32>,
}

impl AttentionSample {
    /// Positions.
    pub fn positions(&self) -> usize {
        self.keys.len() / (self.kv_heads * self.k_dim)
    }
}

/// How a measured cache stores its vectors: one of floe's types, or Q4_0 without the rotation
/// (what llama.cpp's q4_0 cache did before it rotated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCodec {
    /// A floe cache type.
    Type(KvDType),
    /// Plain Q4_0 blocks, not rotated.
    Q4_0Unrotated,
}

impl KvCodec {
    /// The name in tables.
    pub fn name(&self) -> String {
        match self {
            KvCodec::Type(t) => t.name().to_string(),
            KvCodec::Q4_0Unrotated => "q4_0 (unrotated)".into(),
        }
    }

    /// Bits per value of a head of `dim`, or None if the codec cannot hold it.
    pub fn bits_per_value(&self, dim: usize) -> Option<f64> {
        match self {
            KvCodec::Type(t) => t.bits_per_value(dim),
            KvCodec::Q4_0Unrotated => dim.is_multiple_of(32).then_some(4.5),
        }
    }

    /// Bits per value of rows split into `parts` (each stored on its own).
    pub fn bits_per_row_value(&self, parts: &[usize]) -> Option<f64> {
        let mut bits = 0.0;
        for &p in parts {
            bits += self.bits_per_value(p)? * p as f64;
        }
        Some(bits / parts.iter().sum::<usize>().max(1) as f64)
    }

    /// `x` (heads of `dim`) as this codec stores and reads it back.
    pub fn round_trip(&self, x: &[f32], dim: usize) -> Result<Vec<f32>> {
        let bad = || Error::Invalid(format!("{} cannot hold heads of {dim} values", self.name()));
        let mut out = vec![0.0f32; x.len()];
        match self {
            KvCodec::Type(t) => {
                let mut bytes = vec![0u8; t.head_bytes(dim).ok_or_else(bad)?];
                for (h, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
                    t.store(h, &mut bytes);
                    t.load(&bytes, o);
                }
            }
            KvCodec::Q4_0Unrotated => {
                if !dim.is_multiple_of(32) {
                    return Err(bad());
                }
                let mut blocks = vec![BlockQ4_0 { d: half::f16::ZERO, qs: [0; 16] }; dim / 32];
                for (h, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
                    quantize_q4_0(h, &mut blocks);
                    dequantize_q4_0(&blocks, o);
                }
            }
        }
        Ok(out)
    }
}

/// Relative errors of one (key codec, value codec) pair on a sample.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Distortion {
    /// `sum |k - k'|^2 / sum |k|^2`.
    pub k_rel_mse: f64,
    /// The same for values.
    pub v_rel_mse: f64,
    /// The same for the attention outputs (every causal query of every head).
    pub out_rel_mse: f64,
}

fn rel_mse(exact: &[f32], got: &[f32]) -> f64 {
    let num: f64 = exact.iter().zip(got).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
    let den: f64 = exact.iter().map(|a| (*a as f64).powi(2)).sum();
    num / den.max(f64::MIN_POSITIVE)
}

/// Causal attention outputs in f64: `positions x heads x v_dim`.
fn outputs(s: &AttentionSample, keys: &[f32], values: &[f32]) -> Vec<f32> {
    let (p, group) = (s.positions(), s.heads / s.kv_heads);
    let mut out = vec![0.0f32; p * s.heads * s.v_dim];
    let mut scores = vec![0.0f64; p];
    let stride = p.div_ceil(64).max(1);
    for t in (0..p).rev().step_by(stride) {
        for h in 0..s.heads {
            let kvh = h / group;
            let q = &s.queries[(t * s.heads + h) * s.k_dim..][..s.k_dim];
            for (j, sc) in scores[..=t].iter_mut().enumerate() {
                let k = &keys[(j * s.kv_heads + kvh) * s.k_dim..][..s.k_dim];
                *sc = q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                    * s.scale as f64;
            }
            let max = scores[..=t].iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores[..=t].iter().map(|v| (v - max).exp()).sum();
            let o = &mut out[(t * s.heads + h) * s.v_dim..][..s.v_dim];
            for (j, sc) in scores[..=t].iter().enumerate() {
                let w = (sc - max).exp() / z;
                let v = &values[(j * s.kv_heads + kvh) * s.v_dim..][..s.v_dim];
                o.iter_mut().zip(v).for_each(|(y, x)| *y = (*y as f64 + w * *x as f64) as f32);
            }
        }
    }
    out
}

/// `x` (rows split into `parts`) as `codec` stores each part and reads it back.
fn round_trip_parts(codec: KvCodec, x: &[f32], parts: &[usize]) -> Result<Vec<f32>> {
    let row: usize = parts.iter().sum();
    let mut out = x.to_vec();
    let mut at = 0;
    for &p in parts {
        let part: Vec<f32> = x.chunks_exact(row).flat_map(|r| r[at..at + p].to_vec()).collect();
        let back = codec.round_trip(&part, p)?;
        for (o, b) in out.chunks_exact_mut(row).zip(back.chunks_exact(p)) {
            o[at..at + p].copy_from_slice(b);
        }
        at += p;
    }
    Ok(out)
}

/// The errors of caching `s`'s keys with `k` and its values with `v`. Outputs are compared at
/// up to 64 query positions spread over the sample (the last included), each over all its keys.
pub fn distortion(s: &AttentionSample, k: KvCodec, v: KvCodec) -> Result<Distortion> {
    let keys = round_trip_parts(k, &s.keys, &s.k_parts)?;
    let values = v.round_trip(&s.values, s.v_dim)?;
    let exact = outputs(s, &s.keys, &s.values);
    let got = outputs(s, &keys, &values);
    Ok(Distortion {
        k_rel_mse: rel_mse(&s.keys, &keys),
        v_rel_mse: rel_mse(&s.values, &values),
        out_rel_mse: rel_mse(&exact, &got),
    })
}

/// A deterministic Gaussian stream (Box-Muller over splitmix64).
struct Gauss(u64);

impl Gauss {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// Synthetic queries, keys and values of one head of `dim`: Gaussian, the keys with `outliers`
/// fixed channels `scale` times the rest (as real keys have), queries correlated with a key
/// direction so the softmax is not flat.
pub fn synthetic_sample(
    dim: usize,
    positions: usize,
    outliers: usize,
    scale: f32,
) -> AttentionSample {
    let mut g = Gauss(dim as u64 * 7919 + positions as u64);
    let channel = |i: usize| if i * 997 % dim < outliers { scale } else { 1.0 };
    let keys: Vec<f32> = (0..positions * dim).map(|i| g.next() * channel(i % dim)).collect();
    let values: Vec<f32> = (0..positions * dim).map(|_| g.next()).collect();
    let queries: Vec<f32> = (0..positions * dim)
        .map(|i| g.next() + 0.5 * keys[(i / dim) / 2 * dim + i % dim] / channel(i % dim))
        .collect();
    AttentionSample {
        layer: 0,
        heads: 1,
        kv_heads: 1,
        k_dim: dim,
        k_parts: vec![dim],
        v_dim: dim,
        scale: 1.0 / (dim as f32).sqrt(),
        queries,
        keys,
        values,
    }
}

impl Engine {
    /// Runs `ids` through the model with an exact (f32) cache and returns each attention
    /// layer's queries, keys and values, for [`distortion`].
    pub fn attention_samples(&self, ids: &[u32], chunk: usize) -> Result<Vec<AttentionSample>> {
        let model = &self.core.model;
        let options =
            SessionOptions { kv: KvTypes::all(KvDType::F32), ..self.core.session_options };
        let mut session = Session::new(options).record_queries();
        for part in ids.chunks(chunk.max(1)) {
            model.step(&mut session, part, false)?;
        }
        let mut out = Vec::new();
        for l in 0..model.spec.layers.len() {
            let Some(kv) = session.kv_cache(l) else { continue };
            let layout = kv.layout();
            let (keys, values) = kv.rows(ids.len());
            let queries = kv.queries().unwrap_or_default().to_vec();
            let (k_dim, v_dim) = (layout.k.dim(), layout.v.dim());
            let k_parts = layout.k.parts().iter().map(|p| p.dim).collect();
            let heads = queries.len() / (ids.len() * k_dim);
            let scale = model.spec.layers[l].mixer.score_scale().unwrap_or(1.0);
            out.push(AttentionSample {
                layer: l,
                heads,
                kv_heads: layout.heads,
                k_dim,
                k_parts,
                v_dim,
                scale,
                queries,
                keys,
                values,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exact cache costs nothing, and error grows as bits shrink; on keys with outlier
    /// channels the rotation cuts q4_0's key error (what it is for).
    #[test]
    fn distortion_orders_the_types_and_the_rotation_helps_outliers() {
        let s = synthetic_sample(64, 96, 4, 30.0);
        let exact = KvCodec::Type(KvDType::F32);
        let d = distortion(&s, exact, exact).unwrap();
        assert_eq!((d.k_rel_mse, d.v_rel_mse, d.out_rel_mse), (0.0, 0.0, 0.0));
        let err = |t: KvDType| distortion(&s, KvCodec::Type(t), KvCodec::Type(t)).unwrap();
        let order = [KvDType::F16, KvDType::Q8_0, KvDType::Tq4, KvDType::Tq3, KvDType::Tq2];
        for w in order.windows(2) {
            let (a, b) = (err(w[0]), err(w[1]));
            assert!(
                a.v_rel_mse < b.v_rel_mse && a.out_rel_mse < b.out_rel_mse,
                "{w:?}: {a:?} {b:?}"
            );
        }
        let rotated = err(KvDType::Q4_0);
        let plain = distortion(&s, KvCodec::Q4_0Unrotated, KvCodec::Q4_0Unrotated).unwrap();
        assert!(rotated.k_rel_mse < plain.k_rel_mse / 2.0, "{rotated:?} vs {plain:?}");
        // A two-part row is stored part by part: bits count each part's own padding.
        let bits = KvCodec::Type(KvDType::Q8_0).bits_per_row_value(&[32, 8]).unwrap();
        assert!((bits - (34.0 + 34.0) * 8.0 / 40.0).abs() < 1e-9, "{bits}");
    }
}
