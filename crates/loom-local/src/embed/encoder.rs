//! all-MiniLM-L6-v2's BERT encoder, written out over packed token rows instead of padded batches.
//!
//! The texts of a batch are laid end to end: one row of 384 floats per real token, no padding.
//! Everything except attention works token by token, so only attention needs to know where each
//! text starts and ends; it runs per text and head over that text's own rows. The matmuls are
//! candle's (gemm, on the calling rayon pool); the rest is fused here into one pass each, spread
//! over the pool's threads: bias + GELU, bias + residual + layer norm, bias + attention.
//!
//! Compared with candle-transformers' `BertModel` this does no work on padding, no per-head
//! transposes or `contiguous()` copies, no mask tensor, one QKV matmul instead of three, and
//! the elementwise passes run on every thread instead of one.

use std::collections::HashMap;
use std::ops::Range;

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::engine::cerr;
use loom_core::error::Error;

/// Hidden size.
const HIDDEN: usize = 384;
/// Attention heads.
const HEADS: usize = 12;
/// One head's width.
const HEAD: usize = HIDDEN / HEADS;
/// The feed-forward layer's width.
const INTERMEDIATE: usize = 1536;
/// Encoder layers.
const LAYERS: usize = 6;
/// Positions the position embedding covers.
const POSITIONS: usize = 512;
/// Layer-norm epsilon.
const EPS: f32 = 1e-12;

/// A linear layer: the weight transposed to `(in, out)` for `x · W`, and the bias.
struct Dense {
    weight: Tensor,
    bias: Vec<f32>,
}

/// Layer-norm scale and shift.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One encoder layer.
struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    up: Dense,
    down: Dense,
    output_norm: Norm,
}

/// The loaded encoder.
pub(crate) struct Encoder {
    words: Vec<f32>,
    vocab: usize,
    positions: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

/// The tensors of a safetensors file, looked up with or without a `bert.` prefix.
struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Weights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, Error> {
        let key = format!("{}{name}", self.prefix);
        let tensor = self
            .tensors
            .get(&key)
            .ok_or_else(|| Error::ModelFile(format!("the embedder's weights have no `{key}`")))?;
        if tensor.dims() != shape {
            return Err(Error::ModelFile(format!(
                "the embedder's `{key}` has shape {:?}, expected {shape:?}",
                tensor.dims()
            )));
        }
        tensor.to_dtype(DType::F32).map_err(cerr("reading the embedder's weights"))
    }

    fn vec(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, Error> {
        self.get(name, shape)?
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(cerr("reading the embedder's weights"))
    }

    fn norm(&self, name: &str) -> Result<Norm, Error> {
        Ok(Norm {
            weight: self.vec(&format!("{name}.weight"), &[HIDDEN])?,
            bias: self.vec(&format!("{name}.bias"), &[HIDDEN])?,
        })
    }

    /// The linear layers `names` (each `(out_i, input)`) stacked into one `(input, Σ out_i)`.
    fn dense(&self, names: &[&str], input: usize, outputs: usize) -> Result<Dense, Error> {
        let e = cerr("reading the embedder's weights");
        let mut weights = Vec::with_capacity(names.len());
        let mut bias = Vec::with_capacity(outputs * names.len());
        for name in names {
            weights.push(self.get(&format!("{name}.weight"), &[outputs, input])?);
            bias.extend(self.vec(&format!("{name}.bias"), &[outputs])?);
        }
        let weight = Tensor::cat(&weights, 0).and_then(|w| w.t()).and_then(|w| w.contiguous()).map_err(e)?;
        Ok(Dense { weight, bias })
    }
}

impl Encoder {
    /// The encoder in `tensors` (a safetensors file's contents).
    pub(crate) fn load(tensors: HashMap<String, Tensor>) -> Result<Encoder, Error> {
        let prefix = if tensors.contains_key("embeddings.word_embeddings.weight") { "" } else { "bert." };
        let w = Weights { tensors, prefix };
        let key = format!("{prefix}embeddings.word_embeddings.weight");
        let dims = w.tensors.get(&key).map(|t| t.dims().to_vec()).unwrap_or_default();
        let vocab = match dims.as_slice() {
            [vocab, HIDDEN] => *vocab,
            _ => return Err(Error::ModelFile(format!("the embedder's `{key}` has shape {dims:?}"))),
        };
        let mut layers = Vec::with_capacity(LAYERS);
        for i in 0..LAYERS {
            let p = format!("encoder.layer.{i}");
            let qkv = [
                format!("{p}.attention.self.query"),
                format!("{p}.attention.self.key"),
                format!("{p}.attention.self.value"),
            ];
            let qkv: Vec<&str> = qkv.iter().map(String::as_str).collect();
            layers.push(Layer {
                qkv: w.dense(&qkv, HIDDEN, HIDDEN)?,
                attention_out: w.dense(&[&format!("{p}.attention.output.dense")], HIDDEN, HIDDEN)?,
                attention_norm: w.norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: w.dense(&[&format!("{p}.intermediate.dense")], HIDDEN, INTERMEDIATE)?,
                down: w.dense(&[&format!("{p}.output.dense")], INTERMEDIATE, HIDDEN)?,
                output_norm: w.norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Encoder {
            words: w.vec("embeddings.word_embeddings.weight", &[vocab, HIDDEN])?,
            vocab,
            positions: w.vec("embeddings.position_embeddings.weight", &[POSITIONS, HIDDEN])?,
            token_type: w
                .vec("embeddings.token_type_embeddings.weight", &[2, HIDDEN])?
                .get(..HIDDEN)
                .unwrap_or_default()
                .to_vec(),
            embedding_norm: w.norm("embeddings.LayerNorm")?,
            layers,
        })
    }

    /// The mean-pooled, L2-normalized vectors of `texts` (token ids, each at most 512 long), in
    /// order. Runs on the current rayon pool.
    pub(crate) fn embed(&self, texts: &[&[u32]]) -> Result<Vec<Vec<f32>>, Error> {
        let mut spans = Vec::with_capacity(texts.len());
        let mut rows = 0;
        for ids in texts {
            spans.push(rows..rows + ids.len());
            rows += ids.len();
        }
        if rows == 0 {
            return Ok(vec![vec![0.0; HIDDEN]; texts.len()]);
        }
        let mut x = self.embeddings(texts, rows)?;
        for layer in &self.layers {
            self.layer(layer, &mut x, &spans, rows)?;
        }
        Ok(spans.iter().map(|span| pool(&x, span)).collect())
    }

    /// Word + position + token-type embeddings, layer-normed: `rows × HIDDEN`.
    fn embeddings(&self, texts: &[&[u32]], rows: usize) -> Result<Vec<f32>, Error> {
        let mut tokens = Vec::with_capacity(rows);
        for ids in texts {
            for (position, &id) in ids.iter().enumerate() {
                if id as usize >= self.vocab || position >= POSITIONS {
                    return Err(Error::ModelFile(format!("the embedder got token {id} at position {position}")));
                }
                tokens.push((id as usize, position));
            }
        }
        let mut x = vec![0.0f32; rows * HIDDEN];
        x.par_chunks_mut(HIDDEN).zip(tokens.par_iter()).for_each(|(row, &(id, position))| {
            let word = self.words.get(id * HIDDEN..(id + 1) * HIDDEN).unwrap_or_default();
            let pos = self.positions.get(position * HIDDEN..(position + 1) * HIDDEN).unwrap_or_default();
            for (((out, w), p), t) in row.iter_mut().zip(word).zip(pos).zip(&self.token_type) {
                *out = w + p + t;
            }
            normalize(row, &self.embedding_norm);
        });
        Ok(x)
    }

    /// One encoder layer, in place on `x`.
    fn layer(&self, layer: &Layer, x: &mut [f32], spans: &[Range<usize>], rows: usize) -> Result<(), Error> {
        let mut qkv = matmul(x, rows, HIDDEN, &layer.qkv.weight)?;
        add_bias(&mut qkv, &layer.qkv.bias);
        let context = attention(&qkv, spans, rows);
        let attended = matmul(&context, rows, HIDDEN, &layer.attention_out.weight)?;
        add_norm(x, &attended, &layer.attention_out.bias, &layer.attention_norm);
        let mut hidden = matmul(x, rows, HIDDEN, &layer.up.weight)?;
        hidden.par_chunks_mut(INTERMEDIATE).for_each(|row| {
            for (v, b) in row.iter_mut().zip(&layer.up.bias) {
                *v = gelu(*v + b);
            }
        });
        let out = matmul(&hidden, rows, INTERMEDIATE, &layer.down.weight)?;
        add_norm(x, &out, &layer.down.bias, &layer.output_norm);
        Ok(())
    }
}

/// `x (rows × cols) · weight (cols × n)` with candle's gemm, as a flat `rows × n`.
fn matmul(x: &[f32], rows: usize, cols: usize, weight: &Tensor) -> Result<Vec<f32>, Error> {
    let e = cerr("running the embedder");
    let lhs = Tensor::from_slice(x, (rows, cols), weight.device()).map_err(&e)?;
    lhs.matmul(weight).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(e)
}

/// Adds `bias` to every row of `x`.
fn add_bias(x: &mut [f32], bias: &[f32]) {
    x.par_chunks_mut(bias.len().max(1)).for_each(|row| {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    });
}

/// `x = LayerNorm(x + y + bias)`, row by row.
fn add_norm(x: &mut [f32], y: &[f32], bias: &[f32], norm: &Norm) {
    x.par_chunks_mut(HIDDEN).zip(y.par_chunks(HIDDEN)).for_each(|(row, add)| {
        for ((v, a), b) in row.iter_mut().zip(add).zip(bias) {
            *v += a + b;
        }
        normalize(row, norm);
    });
}

/// Layer norm of one row, in place.
fn normalize(row: &mut [f32], norm: &Norm) {
    let n = row.len().max(1) as f32;
    let mean = sum(row) / n;
    let mut var = 0.0f32;
    for v in row.iter_mut() {
        *v -= mean;
    }
    for chunk in row.chunks(8) {
        var += chunk.iter().map(|v| v * v).sum::<f32>();
    }
    let scale = 1.0 / (var / n + EPS).sqrt();
    for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
        *v = *v * scale * w + b;
    }
}

/// Self-attention of each text over its own rows of `qkv` (`rows × 3·HIDDEN`: queries, keys,
/// values): `rows × HIDDEN`, the heads side by side.
fn attention(qkv: &[f32], spans: &[Range<usize>], rows: usize) -> Vec<f32> {
    let scale = 1.0 / (HEAD as f32).sqrt();
    let jobs: Vec<(usize, usize)> = (0..spans.len()).flat_map(|t| (0..HEADS).map(move |h| (t, h))).collect();
    let outputs: Vec<Vec<f32>> = jobs
        .par_iter()
        .map(|&(t, h)| {
            let span = spans.get(t).cloned().unwrap_or(0..0);
            head(qkv, span, h, scale)
        })
        .collect();
    let mut context = vec![0.0f32; rows * HIDDEN];
    for (&(t, h), out) in jobs.iter().zip(&outputs) {
        let start = spans.get(t).map_or(0, |s| s.start);
        for (i, values) in out.chunks(HEAD).enumerate() {
            let at = (start + i) * HIDDEN + h * HEAD;
            if let Some(dst) = context.get_mut(at..at + HEAD) {
                dst.copy_from_slice(values);
            }
        }
    }
    context
}

/// One head over one text's rows: `len × HEAD`.
fn head(qkv: &[f32], span: Range<usize>, h: usize, scale: f32) -> Vec<f32> {
    let width = 3 * HIDDEN;
    let part = |row: usize, which: usize| {
        let at = row * width + which * HIDDEN + h * HEAD;
        qkv.get(at..at + HEAD).unwrap_or_default()
    };
    let len = span.len();
    let mut out = vec![0.0f32; len * HEAD];
    let mut scores = vec![0.0f32; len];
    for (i, out_row) in out.chunks_mut(HEAD).enumerate() {
        let q = part(span.start + i, 0);
        let mut max = f32::NEG_INFINITY;
        for (j, s) in scores.iter_mut().enumerate() {
            *s = dot(q, part(span.start + j, 1)) * scale;
            max = max.max(*s);
        }
        let mut total = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        let inv = 1.0 / total;
        for (j, &s) in scores.iter().enumerate() {
            let p = s * inv;
            for (o, v) in out_row.iter_mut().zip(part(span.start + j, 2)) {
                *o += p * v;
            }
        }
    }
    out
}

/// Mean of a text's rows, then unit length.
fn pool(x: &[f32], span: &Range<usize>) -> Vec<f32> {
    let mut mean = vec![0.0f32; HIDDEN];
    for row in x.get(span.start * HIDDEN..span.end * HIDDEN).unwrap_or_default().chunks(HIDDEN) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    let count = span.len().max(1) as f32;
    for m in &mut mean {
        *m /= count;
    }
    let norm = dot(&mean, &mean).sqrt().max(1e-12);
    for m in &mut mean {
        *m /= norm;
    }
    mean
}

/// Sum with eight independent accumulators (so the compiler vectorizes it).
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Dot product with eight independent accumulators.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, p), q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    acc.iter().sum::<f32>() + ca.remainder().iter().zip(cb.remainder()).map(|(p, q)| p * q).sum::<f32>()
}

/// GELU with the exact (erf) form BERT uses.
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf for f32 as a rational function of x² (Eigen's `generic_fast_erf_float`), branch-free so
/// the GELU loop vectorizes; within a few float ulps of the exact value.
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn erf_is_within_two_millionths_of_the_exact_value() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 / 10_000.0;
            let exact = candle_core::cpu::erf::erf_f64(x);
            worst = worst.max((erf(x as f32) as f64 - exact).abs());
        }
        assert!(worst < 2e-6, "worst error {worst}");
    }

    #[test]
    fn layer_norm_centers_and_scales_a_row() {
        let norm = Norm { weight: vec![2.0; HIDDEN], bias: vec![1.0; HIDDEN] };
        let mut row: Vec<f32> = (0..HIDDEN).map(|i| i as f32).collect();
        normalize(&mut row, &norm);
        let mean = sum(&row) / HIDDEN as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / HIDDEN as f32;
        assert!((mean - 1.0).abs() < 1e-4, "mean {mean}");
        assert!((var - 4.0).abs() < 1e-3, "variance {var}");
    }

    #[test]
    fn attention_of_one_token_is_its_value_and_texts_do_not_mix() {
        // Two texts of one and two tokens: a one-token text attends only to itself.
        let rows = 3;
        let qkv: Vec<f32> = (0..rows * 3 * HIDDEN).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        let context = attention(&qkv, &[0..1, 1..3], rows);
        let value0 = &qkv[2 * HIDDEN..3 * HIDDEN];
        for (a, b) in context[..HIDDEN].iter().zip(value0) {
            assert!((a - b).abs() < 1e-6);
        }
        // The second text's rows are convex combinations of its own two values only.
        for h in 0..HEADS {
            let v1 = qkv[3 * HIDDEN + 2 * HIDDEN + h * HEAD];
            let v2 = qkv[2 * 3 * HIDDEN + 2 * HIDDEN + h * HEAD];
            let c = context[HIDDEN + h * HEAD];
            assert!(c >= v1.min(v2) - 1e-5 && c <= v1.max(v2) + 1e-5, "head {h}: {c} outside [{v1}, {v2}]");
        }
    }

    #[test]
    fn dot_and_sum_cover_the_remainder() {
        let a: Vec<f32> = (1..=11).map(|i| i as f32).collect();
        assert_eq!(sum(&a), 66.0);
        assert_eq!(dot(&a, &a), 506.0);
    }
}
