//! Embeddings over HTTP: OpenAI's `/v1/embeddings` and every server that speaks it (Ollama, vLLM,
//! llama.cpp, LM Studio, …), as a `loom_core` [`Embedder`].
//!
//! ```no_run
//! use loom_providers::embeddings::HttpEmbedder;
//!
//! let openai = HttpEmbedder::openai("text-embedding-3-small"); // OPENAI_API_KEY, OPENAI_BASE_URL
//! let ollama = HttpEmbedder::compatible("http://localhost:11434/v1", "nomic-embed-text");
//! let small = HttpEmbedder::openai("text-embedding-3-large").request_dimensions(256).api_key("sk-…");
//! # let _ = (openai, ollama, small);
//! ```
//!
//! Texts are sent in batches ([`HttpEmbedder::batch_size`]); transient failures (5xx, 429, a broken
//! connection) are retried with the [`HttpConfig`]'s policy; every vector is checked (count, index,
//! length, finite numbers) and returned at unit length. The key never appears in `Debug` output or
//! in error messages.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use loom_core::embed::Embedder;
use loom_core::error::{Error, ModelError};
use serde::Deserialize;

use crate::compatible::Preset;
use crate::http::{ApiKey, HttpConfig, classify, endpoint};

/// The vector lengths of OpenAI's embedding models.
const OPENAI_DIMENSIONS: [(&str, usize); 3] =
    [("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072), ("text-embedding-ada-002", 1536)];

/// Inputs per request unless told otherwise (OpenAI accepts up to 2048).
pub const DEFAULT_BATCH_SIZE: usize = 256;

/// An embedding model behind an OpenAI-compatible `/embeddings` endpoint. See the
/// [module docs](self).
#[derive(Clone)]
pub struct HttpEmbedder {
    base_url: String,
    model: String,
    model_id: String,
    key: Option<ApiKey>,
    /// Sent as `dimensions` (OpenAI's text-embedding-3 models shorten their vectors).
    request_dimensions: Option<usize>,
    /// The length every vector must have (known, requested or set), else learned from the first
    /// answer.
    expected: OnceLock<usize>,
    batch_size: usize,
    config: HttpConfig,
    client: Option<reqwest::Client>,
}

impl fmt::Debug for HttpEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpEmbedder")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("dimensions", &self.expected.get())
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl HttpEmbedder {
    /// An OpenAI embedding model: the key from `OPENAI_API_KEY`, the base URL from
    /// `OPENAI_BASE_URL` (default `https://api.openai.com/v1`).
    pub fn openai(model: impl Into<String>) -> HttpEmbedder {
        let model = model.into();
        let base = crate::base_url_from_env("OPENAI_BASE_URL", "https://api.openai.com/v1");
        let mut embedder = HttpEmbedder::compatible(base, model.clone());
        embedder.model_id = format!("openai:{model}");
        embedder.key = env_key("OPENAI_API_KEY");
        if let Some((_, n)) = OPENAI_DIMENSIONS.iter().find(|(m, _)| *m == model) {
            embedder.expected = OnceLock::from(*n);
        }
        embedder
    }

    /// A model on an OpenAI-compatible server at `base_url` (such as `http://localhost:11434/v1`),
    /// without a key unless [`HttpEmbedder::api_key`] sets one.
    pub fn compatible(base_url: impl Into<String>, model: impl Into<String>) -> HttpEmbedder {
        let base_url = base_url.into().trim().trim_end_matches('/').to_string();
        let model = model.into();
        HttpEmbedder {
            model_id: format!("{base_url}:{model}"),
            base_url,
            model,
            key: None,
            request_dimensions: None,
            expected: OnceLock::new(),
            batch_size: DEFAULT_BATCH_SIZE,
            config: HttpConfig::default(),
            client: None,
        }
    }

    /// A model on a known OpenAI-compatible server (`ollama`, `vllm`, …): its base URL (or the
    /// preset's variable) and key variable.
    pub fn preset(preset: &Preset, model: impl Into<String>) -> HttpEmbedder {
        let model = model.into();
        let base = crate::base_url_from_env(preset.base_url_env, preset.base_url);
        let mut embedder = HttpEmbedder::compatible(base, model.clone());
        embedder.model_id = format!("{}:{model}", preset.name);
        embedder.key = env_key(preset.key_env);
        embedder
    }

    /// Sets the API key (sent as `Authorization: Bearer …`).
    pub fn api_key(mut self, key: impl Into<String>) -> HttpEmbedder {
        self.key = Some(ApiKey::new(key));
        self
    }

    /// Sets the base URL.
    pub fn base_url(mut self, url: impl Into<String>) -> HttpEmbedder {
        self.base_url = url.into().trim().trim_end_matches('/').to_string();
        self
    }

    /// Asks for vectors of `n` dimensions (the `dimensions` parameter, which OpenAI's
    /// text-embedding-3 models support) and checks every vector has them.
    pub fn request_dimensions(mut self, n: usize) -> HttpEmbedder {
        self.request_dimensions = Some(n);
        self.expected = OnceLock::from(n);
        self.model_id = format!("{}@{n}", self.model_id.split('@').next().unwrap_or_default());
        self
    }

    /// Checks every vector has `n` dimensions without asking for them (for servers without the
    /// `dimensions` parameter). Without it the first answer sets the length.
    pub fn expect_dimensions(mut self, n: usize) -> HttpEmbedder {
        self.expected = OnceLock::from(n);
        self
    }

    /// Inputs per request (default [`DEFAULT_BATCH_SIZE`]).
    pub fn batch_size(mut self, n: usize) -> HttpEmbedder {
        self.batch_size = n.max(1);
        self
    }

    /// Sets timeouts and retries (only the connect and first-byte timeouts, the total timeout, the
    /// retry policy and the response size limit apply).
    pub fn with_config(mut self, config: HttpConfig) -> HttpEmbedder {
        self.config = config;
        self
    }

    /// Uses this HTTP client (for custom TLS, proxies, or tests).
    pub fn with_client(mut self, client: reqwest::Client) -> HttpEmbedder {
        self.client = Some(client);
        self
    }

    /// The model's name as sent.
    pub fn model(&self) -> &str {
        &self.model
    }

    fn client(&self) -> Result<reqwest::Client, ModelError> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        reqwest::Client::builder()
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ModelError::Unavailable(format!("cannot build the HTTP client: {e}")))
    }

    /// One batch, retried per the policy.
    async fn embed_batch(
        &self,
        client: &reqwest::Client,
        url: &reqwest::Url,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut body = serde_json::json!({ "model": self.model, "input": texts, "encoding_format": "float" });
        if let (Some(n), Some(obj)) = (self.request_dimensions, body.as_object_mut()) {
            obj.insert("dimensions".into(), n.into());
        }
        let body = serde_json::to_vec(&body).map_err(|e| ModelError::InvalidRequest(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.config.total_timeout;
        let mut attempt = 1;
        loop {
            let result = self.attempt(client, url, &body, texts.len()).await;
            let error = match result {
                Ok(vectors) => return Ok(vectors),
                Err(e) => self.scrub(e),
            };
            let retryable = matches!(error, ModelError::Transient { .. } | ModelError::RateLimited { .. });
            if !retryable || attempt >= self.config.retry.max_attempts {
                return Err(error);
            }
            let delay = self.config.retry.delay(attempt, &error);
            if tokio::time::Instant::now() + delay >= deadline {
                return Err(error);
            }
            tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, reason = %error, "embeddings: retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        url: &reqwest::Url,
        body: &[u8],
        count: usize,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut request = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .timeout(self.config.first_byte_timeout)
            .body(body.to_vec());
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        let transport = |e: reqwest::Error| ModelError::Transient { message: describe(&e), status: None };
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        if response.content_length().is_some_and(|n| n > self.config.max_response_bytes as u64) {
            return Err(ModelError::Protocol(format!(
                "the embeddings response exceeded {} bytes (max_response_bytes)",
                self.config.max_response_bytes
            )));
        }
        let bytes = response.bytes().await.map_err(transport)?;
        if bytes.len() > self.config.max_response_bytes {
            return Err(ModelError::Protocol(format!(
                "the embeddings response exceeded {} bytes (max_response_bytes)",
                self.config.max_response_bytes
            )));
        }
        if !(200..300).contains(&status) {
            return Err(classify(status, &String::from_utf8_lossy(&bytes), retry_after));
        }
        let parsed: EmbeddingsResponse = serde_json::from_slice(&bytes)
            .map_err(|e| ModelError::Protocol(format!("malformed embeddings response (HTTP {status}): {e}")))?;
        self.check(parsed, count)
    }

    /// Orders the vectors by index and checks them: one per input, all of the expected length,
    /// finite; then scales each to unit length.
    fn check(&self, response: EmbeddingsResponse, count: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        if response.data.len() != count {
            return Err(ModelError::Protocol(format!(
                "the embeddings response holds {} vectors for {count} inputs",
                response.data.len()
            )));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; count];
        for (position, item) in response.data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            let expected = *self.expected.get_or_init(|| item.embedding.len());
            if item.embedding.len() != expected || expected == 0 {
                return Err(ModelError::Protocol(format!(
                    "the embedding model `{}` returned a vector of {} dimensions, expected {expected}",
                    self.model,
                    item.embedding.len()
                )));
            }
            if item.embedding.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::Protocol("the embeddings response holds a non-finite number".into()));
            }
            match out.get_mut(index) {
                Some(slot @ None) => *slot = Some(normalized(item.embedding)),
                _ => {
                    return Err(ModelError::Protocol(format!(
                        "the embeddings response has a bad or repeated index {index}"
                    )));
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn scrub(&self, e: ModelError) -> ModelError {
        crate::http::scrub_error(self.key.as_ref(), e)
    }
}

#[async_trait::async_trait]
impl Embedder for HttpEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The vector length: known for OpenAI's models and when set, else learned from the first
    /// answer (0 before it).
    fn dimensions(&self) -> usize {
        self.expected.get().copied().unwrap_or(0)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let url = endpoint(&self.base_url, "/embeddings", &[])?;
        let client = self.client()?;
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            out.extend(self.embed_batch(&client, &url, batch).await?);
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn env_key(var: &str) -> Option<ApiKey> {
    if var.is_empty() {
        return None;
    }
    std::env::var(var).ok().filter(|k| !k.trim().is_empty()).map(ApiKey::new)
}

/// A transport error with its causes (reqwest's messages carry the URL, never headers).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
