//! The embedding engine: the shipped tokenizer, candle-transformers' BERT on the CPU, mean pooling
//! over the attention mask and L2 normalization, as sentence-transformers computes
//! all-MiniLM-L6-v2's vectors. Texts are sorted by length and cut into batches of similar length
//! (little padding), and the batches run on the engine's own thread pool.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use super::fetch::{TOKENIZER_FILE, WEIGHTS_FILE};
use crate::engine::cerr;
use loom_core::error::Error;

/// all-MiniLM-L6-v2's `config.json`.
const CONFIG: &str = r#"{
  "hidden_act": "gelu", "hidden_size": 384, "intermediate_size": 1536, "num_attention_heads": 12,
  "num_hidden_layers": 6, "vocab_size": 30522, "max_position_embeddings": 512, "type_vocab_size": 2,
  "hidden_dropout_prob": 0.1, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
  "position_embedding_type": "absolute", "model_type": "bert"
}"#;

/// Tokens per text at most (sentence-transformers' `max_seq_length` for this model); longer
/// texts are truncated, as sentence-transformers does.
pub const MAX_TOKENS: usize = 256;

/// The vector length.
pub const DIMENSIONS: usize = 384;

/// How texts are cut into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Batching {
    /// Texts per batch at most.
    pub texts: usize,
    /// Padded tokens per batch at most (texts × longest text), which bounds the attention's memory.
    pub tokens: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { texts: 32, tokens: 4096 }
    }
}

/// A loaded embedder.
pub(crate) struct Bert {
    model: BertModel,
    tokenizer: Tokenizer,
    pool: rayon::ThreadPool,
    device: Device,
}

impl Bert {
    /// Loads the weights and the tokenizer from `dir`, with a pool of `threads` threads.
    pub(crate) fn load(dir: &Path, threads: usize) -> Result<Bert, Error> {
        let device = Device::Cpu;
        let config: Config = serde_json::from_str(CONFIG)
            .map_err(|e| Error::ModelFile(format!("the embedder's built-in config is invalid: {e}")))?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights_path, &device)
            .map_err(cerr(&format!("reading {}", weights_path.display())))?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let model = BertModel::load(vb, &config).map_err(cerr("loading the embedder's weights"))?;
        let tokenizer_path = dir.join(TOKENIZER_FILE);
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::ModelFile(format!("reading {}: {e}", tokenizer_path.display())))?;
        // tokenizer.json pads every text to 128 tokens and truncates there; sentence-transformers
        // overrides both (no fixed padding, truncation at 256).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..TruncationParams::default() }))
            .map_err(|e| Error::ModelFile(format!("configuring the embedder's tokenizer: {e}")))?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("loom-embed-{i}"))
            .build()
            .map_err(|e| Error::ModelFile(format!("starting the embedder's threads: {e}")))?;
        Ok(Bert { model, tokenizer, pool, device })
    }

    /// Embeds `texts`, in order: one L2-normalized vector of [`DIMENSIONS`] per text.
    pub(crate) fn embed(&self, texts: &[String], batching: Batching) -> Result<Vec<Vec<f32>>, Error> {
        self.pool.install(|| self.embed_in_pool(texts, batching))
    }

    fn embed_in_pool(&self, texts: &[String], batching: Batching) -> Result<Vec<Vec<f32>>, Error> {
        let mut encoded = Vec::with_capacity(texts.len());
        for text in texts {
            let encoding = self
                .tokenizer
                .encode(text.as_str(), true)
                .map_err(|e| Error::ModelFile(format!("tokenizing for the embedder: {e}")))?;
            encoded.push(encoding.get_ids().to_vec());
        }
        // Longest first: each batch holds texts of similar length, so little padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encoded.get(i).map_or(0, Vec::len)));
        let mut out = vec![Vec::new(); texts.len()];
        let mut start = 0;
        while start < order.len() {
            let longest = order.get(start).and_then(|&i| encoded.get(i)).map_or(1, Vec::len).max(1);
            let fit = (batching.tokens / longest).clamp(1, batching.texts.max(1));
            let end = (start + fit).min(order.len());
            let batch: Vec<&[u32]> = order
                .get(start..end)
                .unwrap_or_default()
                .iter()
                .filter_map(|&i| encoded.get(i))
                .map(Vec::as_slice)
                .collect();
            let vectors = self.forward(&batch, longest)?;
            for (&i, vector) in order.get(start..end).unwrap_or_default().iter().zip(vectors) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = vector;
                }
            }
            start = end;
        }
        Ok(out)
    }

    /// One batch, padded to `len` tokens.
    fn forward(&self, batch: &[&[u32]], len: usize) -> Result<Vec<Vec<f32>>, Error> {
        let n = batch.len();
        let mut ids = vec![0u32; n * len];
        let mut mask = vec![0f32; n * len];
        for (row, tokens) in batch.iter().enumerate() {
            for (col, &token) in tokens.iter().enumerate().take(len) {
                if let Some(slot) = ids.get_mut(row * len + col) {
                    *slot = token;
                }
                if let Some(slot) = mask.get_mut(row * len + col) {
                    *slot = 1.0;
                }
            }
        }
        let e = cerr("running the embedder");
        let ids = Tensor::from_vec(ids, (n, len), &self.device).map_err(&e)?;
        let mask = Tensor::from_vec(mask, (n, len), &self.device).map_err(&e)?;
        let types = ids.zeros_like().map_err(&e)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask)).map_err(&e)?;
        // Mean over the real tokens, then unit length (sentence-transformers' Pooling + Normalize).
        let mask3 = mask.unsqueeze(2).map_err(&e)?;
        let summed = hidden.broadcast_mul(&mask3).and_then(|t| t.sum(1)).map_err(&e)?;
        let counts = mask.sum_keepdim(1).and_then(|t| t.clamp(1e-9f32, f32::MAX)).map_err(&e)?;
        let mean = summed.broadcast_div(&counts).map_err(&e)?;
        let norms = mean.sqr().and_then(|t| t.sum_keepdim(1)).and_then(|t| t.sqrt()).map_err(&e)?;
        let unit = mean.broadcast_div(&norms.clamp(1e-12f32, f32::MAX).map_err(&e)?).map_err(&e)?;
        unit.to_vec2::<f32>().map_err(&e)
    }
}
