//! The HTTP machinery every provider shares: one generic [`HttpModel`] over a [`WireFormat`].
//!
//! A wire format only builds request bodies and decodes responses. The model around it owns the
//! rest: timeouts (connect, first byte, between chunks, total), retries with exponential backoff and
//! jitter that honour `Retry-After`, a limit on concurrent requests, the rule that a stream is
//! retried only before its first chunk reached the caller, and keeping keys out of every error.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::pricing::Price;
use super::sse::{SseEvent, SseParser};
use crate::error::ModelError;
use crate::message::Usage;
use crate::model::{LanguageModel, ModelCapabilities, ModelChunk, ModelRequest, ModelStream};

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

/// Retries with exponential backoff and full jitter.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff.
    pub initial_delay: Duration,
    /// The longest backoff (and the longest `Retry-After` honoured).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 3, initial_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Self::default() }
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    pub fn delay(&self, attempt: u32, error: &ModelError) -> Duration {
        if let ModelError::RateLimited { retry_after: Some(after), .. } = error {
            return (*after).min(self.max_delay);
        }
        let exp = self.initial_delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let cap = exp.min(self.max_delay);
        // Jitter: anywhere in [cap/2, cap], so concurrent clients spread out but never retry at once.
        let half = cap / 2;
        half + Duration::from_nanos(fastrand_u64() % (half.as_nanos() as u64 + 1))
    }
}

fn fastrand_u64() -> u64 {
    // Each RandomState gets fresh random keys: enough randomness for backoff jitter.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5EED);
    h.finish()
}

/// Timeouts, retries and limits of one provider.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConfig {
    /// Establishing the connection.
    pub connect_timeout: Duration,
    /// From sending the request to the response headers and the first body bytes.
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
            first_byte_timeout: Duration::from_secs(120),
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
    /// The full URL.
    pub url: String,
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

/// The error kind of an HTTP status and body, the rules every provider shares.
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> ModelError {
    let message = error_message(body).unwrap_or_else(|| format!("HTTP {status}"));
    let lower = body.to_ascii_lowercase();
    let message = format!("{message} (HTTP {status})");
    // Body phrases decide the kind only for client errors: a 429 saying "too many tokens per
    // minute" is a rate limit, and a 5xx mentioning a filter is still transient.
    let client_error = matches!(status, 400 | 413 | 422);
    if client_error
        && (lower.contains("context_length_exceeded")
            || lower.contains("maximum context length")
            || lower.contains("prompt is too long")
            || lower.contains("too many tokens"))
    {
        return ModelError::ContextLengthExceeded(message);
    }
    if client_error
        && (lower.contains("content_filter")
            || lower.contains("content_policy")
            || lower.contains("content filtering")
            || lower.contains("safety"))
    {
        return ModelError::ContentFilter(message);
    }
    match status {
        401 | 403 => ModelError::Authentication(message),
        429 => ModelError::RateLimited { message, retry_after },
        408 | 409 | 500..=599 => ModelError::Transient { message, status: Some(status) },
        _ if lower.contains("overloaded") => ModelError::Transient { message, status: Some(status) },
        _ => ModelError::InvalidRequest(message),
    }
}

/// The human message in a provider's JSON error body (`error.message`, `message`, or `error` as a
/// string), cut to a readable length.
pub fn error_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let v = if v.is_array() { v.get(0)?.clone() } else { v };
    let msg = v
        .pointer("/error/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("error").filter(|e| e.is_string()))
        .and_then(|m| m.as_str())?;
    Some(msg.chars().take(500).collect())
}

/// The wait a response asks for: `retry-after-ms` (milliseconds, OpenAI and Azure), else
/// `Retry-After` in seconds or as an HTTP date. Values that make no sense are ignored; huge ones
/// saturate (the retry policy caps them).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    fn seconds(v: f64) -> Option<Duration> {
        (v.is_finite() && v >= 0.0).then(|| Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX))
    }
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(after) = value("retry-after-ms").and_then(|s| s.parse::<f64>().ok()).and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(after);
    }
    let s = value("retry-after")?;
    if let Ok(v) = s.parse::<f64>() {
        return seconds(v);
    }
    let at = chrono::DateTime::parse_from_rfc2822(s).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
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
}

impl<W: WireFormat> HttpModel<W> {
    /// A model over `wire`, streaming, with the default configuration and the key from the wire
    /// format's environment variable (if set).
    pub fn new(wire: W) -> Self {
        let price = super::pricing::price_for(wire.model());
        let key = env_key(wire.key_env());
        HttpModel { wire, config: HttpConfig::default(), client: None, limiter: None, price, stream: true, key }
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
            .post(&req.url)
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
        if let Some(len) = response.content_length().filter(|n| *n > self.config.max_response_bytes as u64) {
            return Err(too_large(self.config.max_response_bytes, Some(len)).into());
        }
        let mut body = BodyDecoder {
            bytes: Box::pin(response.bytes_stream()),
            parser: SseParser::with_limit(self.config.max_response_bytes),
            decoder: self.wire.decoder(),
            events: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(first_byte_at.into())),
            timer_at: first_byte_at,
            due: None,
            drained: 64 * 1024,
            done: false,
            eof: false,
            read: 0,
            max_bytes: self.config.max_response_bytes,
        };
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

/// The end of a call: its total timeout, from the moment it got its place in the concurrency limit.
#[derive(Clone, Copy, Debug)]
struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    fn new(total: Duration) -> Self {
        Deadline { at: after(total), total }
    }

    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn exceeded(&self) -> ModelError {
        transient(format!("the call exceeded its total timeout of {} ms", self.total.as_millis()))
    }

    /// Runs `fut` for at most `limit`, and never past the deadline. The error says which one ran out.
    async fn run<F: Future>(
        &self,
        limit: Duration,
        fut: F,
        message: impl FnOnce() -> String,
    ) -> Result<F::Output, ModelError> {
        let remaining = self.remaining();
        if limit < remaining {
            tokio::time::timeout(limit, fut).await.map_err(|_| transient(message()))
        } else {
            tokio::time::timeout(remaining, fut).await.map_err(|_| self.exceeded())
        }
    }
}

/// A failed attempt, and how long the server asked us to wait before the next one.
struct Failed {
    error: ModelError,
    retry_after: Option<Duration>,
}

impl From<ModelError> for Failed {
    fn from(error: ModelError) -> Self {
        Failed { error, retry_after: None }
    }
}

struct Opened {
    chunks: VecDeque<ModelChunk>,
    body: Option<BodyDecoder>,
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

struct BodyDecoder {
    bytes: ByteStream,
    parser: SseParser,
    decoder: Box<dyn StreamDecoder>,
    /// Events of the network chunk being decoded (kept for its allocation).
    events: Vec<SseEvent>,
    /// One timer for the whole body. It is armed for `timer_at` and only moved when it fires early
    /// (each read pushes the idle deadline forward) or a read's deadline is earlier: reads cost no
    /// timer registration each.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    timer_at: Instant,
    /// The deadline of the read in progress (and whether it is the call's total timeout).
    due: Option<(Instant, bool)>,
    /// What the drain after the last event may still read.
    drained: usize,
    /// The decoder has seen the end of the answer.
    done: bool,
    /// The body has ended.
    eof: bool,
    read: usize,
    max_bytes: usize,
}

impl BodyDecoder {
    /// Reads one network chunk (waiting at most `limit` from the first poll of this read, and never
    /// past the deadline) and decodes what it completes into `out`. On an error, `out` keeps the
    /// chunks decoded before it.
    fn poll_next_chunks(
        &mut self,
        cx: &mut Context<'_>,
        deadline: &Deadline,
        limit: Duration,
        timed_out: impl FnOnce() -> String,
        out: &mut Vec<ModelChunk>,
    ) -> Poll<Result<(), ModelError>> {
        let (due, by_total) =
            *self.due.get_or_insert_with(|| match Instant::now().checked_add(limit).filter(|at| *at < deadline.at) {
                Some(at) => (at, false),
                None => (deadline.at, true),
            });
        let next = match self.bytes.poll_next_unpin(cx) {
            Poll::Ready(next) => next,
            Poll::Pending => {
                if !self.poll_timer(cx, due) {
                    return Poll::Pending;
                }
                self.due = None;
                return Poll::Ready(Err(if by_total { deadline.exceeded() } else { transient(timed_out()) }));
            }
        };
        self.due = None;
        let mut events = std::mem::take(&mut self.events);
        let result = self.decode(next, &mut events, out);
        events.clear();
        self.events = events;
        Poll::Ready(result)
    }

    /// Whether `due` has passed, by the one timer: it is moved only when it is armed later than
    /// `due`, or fires for an earlier read's deadline.
    fn poll_timer(&mut self, cx: &mut Context<'_>, due: Instant) -> bool {
        if self.timer_at > due {
            self.timer.as_mut().reset(due.into());
            self.timer_at = due;
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= due {
                return true;
            }
            self.timer.as_mut().reset(due.into());
            self.timer_at = due;
        }
        false
    }

    fn decode(
        &mut self,
        next: Option<reqwest::Result<bytes::Bytes>>,
        events: &mut Vec<SseEvent>,
        out: &mut Vec<ModelChunk>,
    ) -> Result<(), ModelError> {
        match next {
            Some(Ok(bytes)) => {
                self.read += bytes.len();
                if self.read > self.max_bytes {
                    return Err(too_large(self.max_bytes, None));
                }
                self.parser.feed(&bytes, |e| events.push(e)).map_err(sse_error)?;
            }
            Some(Err(e)) => return Err(transport_error(&e)),
            None => {
                self.eof = true;
                self.parser.finish(|e| events.push(e)).map_err(sse_error)?;
                for e in events.drain(..) {
                    if self.decoder.event(e, out)? {
                        break;
                    }
                }
                self.done = true;
                return self.decoder.end(out);
            }
        }
        for e in events.drain(..) {
            if self.decoder.event(e, out)? {
                self.done = true;
                return self.decoder.end(out);
            }
        }
        Ok(())
    }

    /// After the last event: reads what is left of the body (normally just the end of the chunked
    /// encoding, already on its way) so the connection goes back to the pool instead of being
    /// closed. Gives up after `wait` or 64 KiB.
    fn poll_drain(&mut self, cx: &mut Context<'_>, wait: Duration) -> Poll<()> {
        let due = *self.due.get_or_insert_with(|| (after(wait), false));
        loop {
            match self.bytes.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(b))) => match self.drained.checked_sub(b.len()) {
                    Some(left) => self.drained = left,
                    None => return Poll::Ready(()),
                },
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending if self.poll_timer(cx, due.0) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Now plus `d`; a century when `d` is too large to add (`Duration::MAX` for "no limit").
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

fn transient(message: String) -> ModelError {
    ModelError::Transient { message, status: None }
}

fn stalled(idle: Duration) -> String {
    format!("the stream stalled for {} ms", idle.as_millis())
}

fn too_large(max: usize, declared: Option<u64>) -> ModelError {
    match declared {
        Some(n) => ModelError::Protocol(format!(
            "the response exceeded {max} bytes (max_response_bytes): it declared {n} bytes"
        )),
        None => ModelError::Protocol(format!("the response exceeded {max} bytes (max_response_bytes)")),
    }
}

fn sse_error(e: super::sse::SseError) -> ModelError {
    match e {
        super::sse::SseError::TooLarge(n) => {
            ModelError::Protocol(format!("malformed event stream: one event exceeded {n} bytes (max_response_bytes)"))
        }
        other => ModelError::Protocol(format!("malformed event stream: {other}")),
    }
}

fn transport_error(e: &reqwest::Error) -> ModelError {
    // reqwest's Display includes the URL but never headers, so no key can leak from here.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_decode() || e.is_body() && !e.is_timeout() && !e.is_connect() {
        return ModelError::Transient { message: format!("the connection broke: {msg}"), status: None };
    }
    ModelError::Transient { message: msg, status: None }
}

/// Reads a whole body of at most `max` bytes, within `wait` and the deadline.
async fn read_limited(
    response: reqwest::Response,
    max: usize,
    wait: Duration,
    deadline: &Deadline,
) -> Result<Vec<u8>, ModelError> {
    if let Some(len) = response.content_length().filter(|n| *n > max as u64) {
        return Err(too_large(max, Some(len)));
    }
    let mut out = Vec::with_capacity(response.content_length().map_or(0, |n| n as usize));
    let mut stream = response.bytes_stream();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport_error(&e))?;
            if out.len() + chunk.len() > max {
                return Err(too_large(max, None));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(())
    };
    let message = || format!("the response body did not arrive within {} ms", wait.as_millis());
    deadline.run(wait, read, message).await??;
    Ok(out)
}

fn priced(chunk: ModelChunk, price: Option<&Price>) -> ModelChunk {
    match (chunk, price) {
        (ModelChunk::Usage(u), Some(p)) => ModelChunk::Usage(Usage { cost_usd: p.cost(&u), ..u }),
        (c, _) => c,
    }
}

/// What the stream handed to the caller carries between polls.
struct Streaming {
    chunks: VecDeque<ModelChunk>,
    body: Option<BodyDecoder>,
    /// An error to yield once the chunks decoded before it are out.
    error: Option<ModelError>,
    buf: Vec<ModelChunk>,
    price: Option<Price>,
    idle: Duration,
    deadline: Deadline,
    key: Option<ApiKey>,
    _permit: Option<OwnedSemaphorePermit>,
    /// Whether the stream already yielded once after the body ended.
    yielded: bool,
}

impl futures::Stream for Streaming {
    type Item = Result<ModelChunk, ModelError>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.chunks.pop_front() {
                return Poll::Ready(Some(Ok(priced(chunk, this.price.as_ref()))));
            }
            if let Some(e) = this.error.take() {
                return Poll::Ready(Some(Err(e)));
            }
            let Some(body) = this.body.as_mut() else {
                this._permit = None;
                return Poll::Ready(None);
            };
            if body.done {
                if !body.eof {
                    let wait = this.idle.min(this.deadline.remaining()).min(Duration::from_millis(500));
                    std::task::ready!(body.poll_drain(cx, wait));
                }
                if !this.yielded {
                    // Give hyper's connection task one turn to put the connection back in the pool,
                    // so the next call (often right after a quick tool) reuses it.
                    this.yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                // The connection is back in the pool (or closed): the place in the limit is free.
                this.body = None;
                this._permit = None;
                return Poll::Ready(None);
            }
            let idle = this.idle;
            let result =
                std::task::ready!(body.poll_next_chunks(cx, &this.deadline, idle, || stalled(idle), &mut this.buf));
            this.chunks.extend(this.buf.drain(..));
            if let Err(e) = result {
                this.body = None;
                this.error = Some(scrub_error(this.key.as_ref(), e));
            }
        }
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
        self.wire.capabilities()
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
                    let last = attempt >= self.config.retry.max_attempts;
                    if !e.is_retryable() || last {
                        return Err(e);
                    }
                    // A wait the server asked for (Retry-After on a 429 or a 5xx), else backoff.
                    let wait = match retry_after {
                        Some(after) => after.min(self.config.retry.max_delay),
                        None => self.config.retry.delay(attempt, &e),
                    };
                    if wait >= deadline.remaining() {
                        return Err(e);
                    }
                    tracing::debug!(provider = self.wire.provider(), attempt, error = %e, "retrying model call");
                    tokio::time::sleep(wait).await;
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
            yielded: false,
        };
        Ok(Box::pin(state))
    }
}

/// Removes the key from any message an error carries.
fn scrub_error(key: Option<&ApiKey>, e: ModelError) -> ModelError {
    let Some(key) = key else { return e };
    match e {
        ModelError::Transient { message, status } => ModelError::Transient { message: key.scrub(&message), status },
        ModelError::RateLimited { message, retry_after } => {
            ModelError::RateLimited { message: key.scrub(&message), retry_after }
        }
        ModelError::Authentication(m) => ModelError::Authentication(key.scrub(&m)),
        ModelError::InvalidRequest(m) => ModelError::InvalidRequest(key.scrub(&m)),
        ModelError::ContentFilter(m) => ModelError::ContentFilter(key.scrub(&m)),
        ModelError::ContextLengthExceeded(m) => ModelError::ContextLengthExceeded(key.scrub(&m)),
        ModelError::Protocol(m) => ModelError::Protocol(key.scrub(&m)),
        ModelError::Unavailable(m) => ModelError::Unavailable(key.scrub(&m)),
        other => other,
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

#[cfg(test)]
mod classify_tests {
    use super::classify;
    use crate::error::ModelError;

    #[test]
    fn classify_uses_body_phrases_only_for_client_errors() {
        let filtered = r#"{"error":{"message":"Output blocked by content filtering policy"}}"#;
        assert!(matches!(classify(400, filtered, None), ModelError::ContentFilter(_)));
        assert!(matches!(classify(503, filtered, None), ModelError::Transient { .. }));
        let tpm = r#"{"error":{"message":"Too many tokens per minute"}}"#;
        assert!(matches!(classify(429, tpm, None), ModelError::RateLimited { .. }));
        assert!(matches!(classify(400, tpm, None), ModelError::ContextLengthExceeded(_)));
        let policy = r#"{"error":{"code":"content_policy_violation","message":"no"}}"#;
        assert!(matches!(classify(429, policy, None), ModelError::RateLimited { .. }));
    }
}
