//! The HTTP machinery every provider shares: one generic [`HttpModel`] over a [`WireFormat`].
//!
//! A wire format only builds request bodies and decodes responses. The model around it owns the
//! rest: timeouts (connect, first byte, between chunks, total), retries with exponential backoff and
//! jitter that honour `Retry-After`, a limit on concurrent requests, the rule that a stream is
//! retried only before its first chunk reached the caller, and keeping keys out of every error.
//!
//! The parts: `retry` (the retry policy and `Retry-After`), `errors` (the error taxonomy of a
//! response, and keeping keys out of messages), `body` (deadlines and reading a streamed body),
//! `stream` (the [`ModelStream`] handed to the caller).

mod body;
mod endpoint;
mod errors;
mod retry;
mod stream;

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use loom_core::error::ModelError;
use loom_core::model::{LanguageModel, ModelCapabilities, ModelChunk, ModelRequest, ModelStream};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::pricing::Price;
use crate::sse::SseEvent;
use body::{BodyDecoder, Deadline, Failed, Opened, after, read_head, read_limited};
pub(crate) use endpoint::endpoint;
pub(crate) use errors::scrub_error;
pub use errors::{classify, error_message};
use errors::{stalled, too_large, transport_error};
pub use retry::RetryPolicy;
use retry::retry_after;
use stream::Streaming;

/// An API key. Its `Debug` shows only that it is set; it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(Arc::from(key.into().trim()))
    }

    /// The key itself, for building a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces any occurrence of the key in `text` (error bodies can echo it).
    pub(crate) fn scrub(&self, text: &str) -> String {
        if self.0.len() >= 8 && text.contains(&*self.0) {
            text.replace(&*self.0, "[redacted]")
        } else {
            text.to_string()
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// Timeouts, retries and limits of one provider.
///
/// The defaults: connect 10 s; first byte 60 s per attempt; 120 s of silence between chunks; 15 min
/// for the whole call, retries included; 3 attempts with backoff from 0.5 s up to 30 s. A server
/// that never answers is therefore given up on after about three minutes (three attempts of 60 s),
/// and every retry is announced with a `tracing` warning (`attempt`, `delay_ms`, `reason`) a
/// subscriber can show, so the wait is never silent. A call that does not stream waits for its
/// whole answer within the first-byte timeout: raise it for long answers without streaming.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConfig {
    /// Establishing the connection.
    pub connect_timeout: Duration,
    /// From sending the request to the response headers and the first body bytes, per attempt.
    pub first_byte_timeout: Duration,
    /// The longest silence between two body chunks.
    pub idle_timeout: Duration,
    /// The whole call, streaming included.
    pub total_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// The most requests in flight at once through this model (`None`: no limit).
    pub max_concurrency: Option<usize>,
    /// The largest response body accepted, and the largest single SSE event.
    pub max_response_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(900),
            retry: RetryPolicy::default(),
            max_concurrency: None,
            max_response_bytes: 32 * 1024 * 1024,
        }
    }
}

/// What a provider's wire format does: build a request, decode a response.
pub trait WireFormat: Send + Sync + 'static {
    /// The provider's name (`openai`, `anthropic`, …).
    fn provider(&self) -> &str;

    /// The model's name as sent.
    fn model(&self) -> &str;

    /// What the model supports.
    fn capabilities(&self) -> ModelCapabilities;

    /// The environment variable holding the key (`""` for none).
    fn key_env(&self) -> &str;

    /// Whether calls fail without a key (false for local servers).
    fn key_required(&self) -> bool {
        true
    }

    /// Sets the base URL.
    fn set_base_url(&mut self, url: String);

    /// The base URL, for [`HttpModel::check`] (`None`: the wire format has none to check).
    fn base_url(&self) -> Option<&str> {
        None
    }

    /// The model string that builds this model again (`PROVIDER:MODEL` by default).
    fn model_string(&self) -> String {
        format!("{}:{}", self.provider(), self.model())
    }

    /// The URL, the headers (the key included) and the JSON body of one call.
    fn build(&self, request: &ModelRequest<'_>, stream: bool, key: Option<&ApiKey>) -> Result<HttpRequest, ModelError>;

    /// A fresh decoder for one streamed response.
    fn decoder(&self) -> Box<dyn StreamDecoder>;

    /// Decodes a whole (non-streamed) response body.
    fn decode_body(&self, body: &[u8]) -> Result<Vec<ModelChunk>, ModelError>;

    /// Maps an error response to the error taxonomy.
    fn error(&self, status: u16, body: &str, retry_after: Option<Duration>) -> ModelError {
        classify(status, body, retry_after)
    }
}

/// Turns the server-sent events of one streamed response into chunks.
pub trait StreamDecoder: Send {
    /// One event; chunks go to `out`. Return `Ok(true)` when the stream is complete.
    fn event(&mut self, event: SseEvent, out: &mut Vec<ModelChunk>) -> Result<bool, ModelError>;

    /// The body ended; anything still pending goes to `out`.
    fn end(&mut self, _out: &mut Vec<ModelChunk>) -> Result<(), ModelError> {
        Ok(())
    }
}

/// One HTTP call, as a wire format builds it.
#[derive(Debug)]
pub struct HttpRequest {
    /// The full URL, parsed once where the wire format builds it (reqwest takes it as is).
    pub url: reqwest::Url,
    /// Headers beyond `content-type: application/json`.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// A sensitive header value (its Debug is redacted by reqwest).
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, ModelError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| ModelError::Authentication("the API key contains characters not allowed in a header".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// A plain header.
pub(crate) fn header(headers: &mut HeaderMap, name: &'static str, value: &str) -> Result<(), ModelError> {
    let v = HeaderValue::from_str(value)
        .map_err(|_| ModelError::InvalidRequest(format!("invalid value for header {name}")))?;
    headers.insert(HeaderName::from_static(name), v);
    Ok(())
}

fn env_key(var: &str) -> Option<ApiKey> {
    if var.is_empty() {
        return None;
    }
    std::env::var(var).ok().filter(|k| !k.trim().is_empty()).map(ApiKey::new)
}

/// The process-wide client for a connect timeout (reqwest sets that timeout per client, so models
/// with different ones cannot share one; models with the same one share its connection pool).
fn shared_client(connect_timeout: Duration) -> Result<reqwest::Client, ModelError> {
    static CLIENTS: OnceLock<Mutex<Vec<(Duration, reqwest::Client)>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = clients.iter().find(|(t, _)| *t == connect_timeout) {
        return Ok(c.clone());
    }
    let client = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ModelError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
    clients.push((connect_timeout, client.clone()));
    Ok(client)
}

/// A model served over HTTP through a [`WireFormat`].
pub struct HttpModel<W: WireFormat> {
    wire: W,
    config: HttpConfig,
    client: Option<reqwest::Client>,
    limiter: Option<Arc<Semaphore>>,
    price: Option<Price>,
    stream: bool,
    key: Option<ApiKey>,
    /// The model's context window from the pricing table, looked up once (not at every
    /// `capabilities()` call: several per model call).
    context_window: Option<u32>,
}

impl<W: WireFormat> HttpModel<W> {
    /// A model over `wire`, streaming, with the default configuration and the key from the wire
    /// format's environment variable (if set).
    pub fn new(wire: W) -> Self {
        let price = crate::pricing::price_for(wire.model());
        let key = env_key(wire.key_env());
        let context_window = crate::pricing::context_window_for(wire.model());
        HttpModel {
            wire,
            config: HttpConfig::default(),
            client: None,
            limiter: None,
            price,
            stream: true,
            key,
            context_window,
        }
    }

    /// Sets the API key (instead of the provider's environment variable).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(ApiKey::new(key));
        self
    }

    /// Sets the base URL (instead of the default or the provider's environment variable).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        let url: String = url.into();
        self.wire.set_base_url(url.trim_end_matches('/').to_string());
        self
    }

    /// Changes the wire format's settings.
    pub fn configure(mut self, f: impl FnOnce(&mut W)) -> Self {
        f(&mut self.wire);
        self.context_window = crate::pricing::context_window_for(self.wire.model());
        self
    }

    /// Sets timeouts, retries and limits.
    pub fn with_config(mut self, config: HttpConfig) -> Self {
        self.limiter = config.max_concurrency.map(|n| Arc::new(Semaphore::new(n.max(1))));
        self.config = config;
        self
    }

    /// Uses this HTTP client (for custom TLS, proxies, or tests).
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Streams (the default) or makes plain request/response calls.
    pub fn streaming(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Overrides the price used to compute cost.
    pub fn with_price(mut self, price: Price) -> Self {
        self.price = Some(price);
        self
    }

    /// The wire format.
    pub fn wire(&self) -> &W {
        &self.wire
    }

    /// The configuration.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Checks the configuration without sending anything: the base URL must be an absolute
    /// `http://` or `https://` URL. A call with a malformed base URL fails the same way
    /// ([`ModelError::Configuration`]), at once and without a retry.
    pub fn check(&self) -> Result<(), ModelError> {
        match self.wire.base_url() {
            Some(base) => endpoint::parse_base(base).map(|_| ()),
            None => Ok(()),
        }
    }

    fn scrub(&self, e: ModelError) -> ModelError {
        scrub_error(self.key.as_ref(), e)
    }

    /// One attempt: send, check the status, and (streaming) read up to the first chunk.
    async fn attempt(
        &self,
        client: &reqwest::Client,
        req: &HttpRequest,
        body: &bytes::Bytes,
        deadline: &Deadline,
    ) -> Result<Opened, Failed> {
        let mut builder = client
            .post(req.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .headers(req.headers.clone())
            .body(body.clone());
        if self.stream {
            builder = builder.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        // The response headers and the first body bytes must come within first_byte_timeout.
        let first_byte = self.config.first_byte_timeout;
        let first_byte_at = after(first_byte);
        let no_response = || format!("no response within {} ms", first_byte.as_millis());
        let response = match deadline.run(first_byte, builder.send(), no_response).await? {
            Err(e) => return Err(transport_error(&e).into()),
            Ok(r) => r,
        };
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let after = retry_after(response.headers());
            let body =
                read_limited(response, self.config.max_response_bytes, first_byte, deadline).await.unwrap_or_default();
            // Scrubbed before the wire format sees it: the message it keeps may be cut anywhere.
            let body = String::from_utf8_lossy(&body);
            let body = match &self.key {
                Some(key) => key.scrub(&body),
                None => body.into_owned(),
            };
            return Err(Failed { error: self.wire.error(status, &body, after), retry_after: after });
        }
        // A streamed call answered with plain JSON (a server that does not stream, or an error
        // sent with 200): decode it as a whole body.
        let json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
        if !self.stream || json {
            let body = read_limited(response, self.config.max_response_bytes, deadline.remaining(), deadline).await?;
            let chunks = self.wire.decode_body(&body)?;
            return Ok(Opened { chunks: chunks.into(), body: None });
        }
        // A streamed call answered with something else (an HTML page from a proxy or a login
        // portal, say): say so, with the start of the body, instead of failing to find events.
        // A response without a content type is read as an event stream.
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .filter(|ct| !ct.is_empty());
        if let Some(ct) = content_type.filter(|ct| !ct.to_ascii_lowercase().starts_with("text/event-stream")) {
            let head = read_head(response, 512, first_byte, deadline).await;
            let head = String::from_utf8_lossy(&head);
            let head = match &self.key {
                Some(key) => key.scrub(&head),
                None => head.into_owned(),
            };
            let head: String = head.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            return Err(ModelError::Protocol(format!(
                "the streamed response (HTTP {status}) has content type `{ct}`, not `text/event-stream`; \
                 is the base URL right? The body begins: {:?}",
                head.trim()
            ))
            .into());
        }
        if let Some(len) = response.content_length().filter(|n| *n > self.config.max_response_bytes as u64) {
            return Err(too_large(self.config.max_response_bytes, Some(len)).into());
        }
        let mut body = BodyDecoder::new(response, self.wire.decoder(), first_byte_at, self.config.max_response_bytes);
        // Read until the first chunk (or the end): until then, a failure can still be retried.
        let mut chunks = Vec::new();
        let wait = first_byte_at.saturating_duration_since(Instant::now());
        std::future::poll_fn(|cx| body.poll_next_chunks(cx, deadline, wait, no_response, &mut chunks)).await?;
        let idle = self.config.idle_timeout;
        while chunks.is_empty() && !body.done {
            std::future::poll_fn(|cx| body.poll_next_chunks(cx, deadline, idle, || stalled(idle), &mut chunks)).await?;
        }
        Ok(Opened { chunks: chunks.into(), body: Some(body) })
    }
}

#[async_trait::async_trait]
impl<W: WireFormat> LanguageModel for HttpModel<W> {
    fn name(&self) -> &str {
        self.wire.model()
    }

    fn provider(&self) -> &str {
        self.wire.provider()
    }

    fn capabilities(&self) -> ModelCapabilities {
        let mut caps = self.wire.capabilities();
        caps.context_window = self.context_window.or(caps.context_window);
        caps
    }

    fn token_counter(&self) -> Option<std::sync::Arc<dyn loom_core::model::TokenCounter>> {
        crate::tokens::for_model(self.wire.model())
    }

    fn model_string(&self) -> Option<String> {
        Some(self.wire.model_string())
    }

    fn base_url(&self) -> Option<&str> {
        self.wire.base_url()
    }

    async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        if self.key.is_none() && self.wire.key_required() {
            return Err(ModelError::Authentication(format!(
                "no API key for {}: set {} or give one with .api_key(…)",
                self.wire.provider(),
                self.wire.key_env()
            )));
        }
        let mut http = self.wire.build(request, self.stream, self.key.as_ref()).map_err(|e| self.scrub(e))?;
        // Built once, shared by every attempt without copying.
        let body = bytes::Bytes::from(std::mem::take(&mut http.body));
        let client = match &self.client {
            Some(c) => c.clone(),
            None => shared_client(self.config.connect_timeout)?,
        };
        let permit: Option<OwnedSemaphorePermit> = match &self.limiter {
            Some(sem) => Some(
                sem.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ModelError::Unavailable("the request limiter closed".into()))?,
            ),
            None => None,
        };
        let deadline = Deadline::new(self.config.total_timeout);
        let mut attempt = 0;
        let opened = loop {
            attempt += 1;
            match self.attempt(&client, &http, &body, &deadline).await {
                Ok(o) => break o,
                Err(Failed { error, retry_after }) => {
                    let e = self.scrub(error);
                    let max_attempts = self.config.retry.max_attempts;
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    let (provider, model) = (self.wire.provider(), self.wire.model());
                    if attempt >= max_attempts {
                        tracing::warn!(provider, model, attempt, max_attempts, reason = %e, "model call failed; no attempts left");
                        return Err(e);
                    }
                    // A wait the server asked for (Retry-After on a 429 or a 5xx), else backoff.
                    let wait = match retry_after {
                        Some(after) => after.min(self.config.retry.max_delay),
                        None => self.config.retry.delay(attempt, &e),
                    };
                    if wait >= deadline.remaining() {
                        tracing::warn!(provider, model, attempt, max_attempts, reason = %e, "model call failed; no time left to retry");
                        return Err(e);
                    }
                    let delay_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                    tracing::warn!(
                        provider,
                        model,
                        attempt,
                        max_attempts,
                        delay_ms,
                        reason = %e,
                        "model call failed; retrying in {delay_ms} ms (attempt {} of {max_attempts} next)",
                        attempt + 1
                    );
                    tokio::time::sleep(wait).await;
                    tracing::info!(provider, model, attempt = attempt + 1, max_attempts, "retrying the model call");
                }
            }
        };
        let state = Streaming {
            chunks: opened.chunks,
            body: opened.body,
            error: None,
            buf: Vec::new(),
            price: self.price,
            idle: self.config.idle_timeout,
            deadline,
            key: self.key.clone(),
            _permit: permit,
            yield_at_end: stream::yields_at_end(),
        };
        Ok(Box::pin(state))
    }
}

impl<W: WireFormat> fmt::Debug for HttpModel<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpModel")
            .field("provider", &self.wire.provider())
            .field("model", &self.wire.model())
            .field("stream", &self.stream)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
