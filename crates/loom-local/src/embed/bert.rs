//! The embedding engine: the shipped tokenizer, the BERT encoder in [`super::encoder`] on the CPU,
//! mean pooling over each text's tokens and L2 normalization, as sentence-transformers computes
//! all-MiniLM-L6-v2's vectors. Texts are cut into batches by count and by tokens (the encoder packs
//! a batch's tokens without padding), and the batches run on the engine's own thread pool.

use std::path::Path;

use candle_core::Device;
use tokenizers::{Tokenizer, TruncationParams};

use super::encoder::Encoder;
use super::fetch::{TOKENIZER_FILE, WEIGHTS_FILE};
use crate::engine::cerr;
use loom_core::error::Error;

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
    /// Tokens per batch at most (a text longer than this is a batch of its own), which bounds the
    /// activations' memory (about 10 KiB per token).
    pub tokens: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { texts: 64, tokens: 4096 }
    }
}

/// A loaded embedder.
pub(crate) struct Bert {
    encoder: Encoder,
    tokenizer: Tokenizer,
    pool: rayon::ThreadPool,
}

impl Bert {
    /// Loads the weights and the tokenizer from `dir`, with a pool of `threads` threads.
    pub(crate) fn load(dir: &Path, threads: usize) -> Result<Bert, Error> {
        let weights_path = dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(cerr(&format!("reading {}", weights_path.display())))?;
        let encoder = Encoder::load(tensors)?;
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
        Ok(Bert { encoder, tokenizer, pool })
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
        let mut out = Vec::with_capacity(texts.len());
        let mut batch: Vec<&[u32]> = Vec::new();
        let mut tokens = 0;
        for ids in &encoded {
            if !batch.is_empty() && (batch.len() >= batching.texts.max(1) || tokens + ids.len() > batching.tokens) {
                out.extend(self.encoder.embed(&batch)?);
                batch.clear();
                tokens = 0;
            }
            batch.push(ids);
            tokens += ids.len();
        }
        if !batch.is_empty() {
            out.extend(self.encoder.embed(&batch)?);
        }
        Ok(out)
    }
}
