//! The `web_fetch` and `web_search` tools.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use url::Url;

use super::guard::{GuardedResolver, Policy, Refusal};
use super::search::{SearchBackend, error_text};
use crate::tool::{Tool, ToolContext, ToolError, ToolErrorKind, ToolFlags, ToolOutput, parse_arguments};

/// What a fetch may do.
pub(crate) struct FetchConfig {
    pub(crate) policy: Arc<Policy>,
    pub(crate) max_bytes: usize,
    pub(crate) timeout: Duration,
    pub(crate) max_redirects: usize,
    pub(crate) pinned: Vec<(String, SocketAddr)>,
}

/// The `web_fetch` tool.
pub(crate) struct WebFetch {
    config: FetchConfig,
    /// The client, or why it could not be built (a TLS backend that failed to start): every call
    /// then fails with that reason.
    client: Result<reqwest::Client, String>,
}

/// The headers sent with every fetch: what we read best first.
const ACCEPT: &str = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,text/*;q=0.8,*/*;q=0.1";

fn build_client(config: &FetchConfig) -> Result<reqwest::Client, String> {
    let policy = config.policy.clone();
    let max_redirects = config.max_redirects;
    let redirects = reqwest::redirect::Policy::custom(move |attempt| {
        // `previous` holds every URL visited so far, the first request's included.
        if attempt.previous().len() > max_redirects {
            return attempt.error(Refusal::TooManyRedirects(max_redirects));
        }
        match policy.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refusal) => attempt.error(refusal),
        }
    });
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(redirects)
        .dns_resolver(Arc::new(GuardedResolver { allow_private: config.policy.allow_private }))
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("loom/", env!("CARGO_PKG_VERSION"), " (web_fetch)"));
    for (host, addr) in &config.pinned {
        builder = builder.resolve(host, *addr);
    }
    builder.build().map_err(|e| format!("the HTTP client could not be built: {}", error_text(&e)))
}

impl WebFetch {
    pub(crate) fn new(config: FetchConfig) -> Self {
        let client = build_client(&config);
        WebFetch { config, client }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchArgs {
    url: String,
    #[serde(default)]
    format: Format,
    #[serde(default)]
    max_bytes: Option<u64>,
}

#[derive(Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    /// HTML rendered as readable text; other text as is.
    #[default]
    Text,
    /// The body as it came.
    Raw,
}

/// What a content type says about the body.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Html,
    Text,
    Binary,
    /// No content type: decided by looking at the bytes.
    Unknown,
}

fn kind_of(content_type: &str) -> Kind {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence.is_empty() {
        return Kind::Unknown;
    }
    if essence == "text/html" || essence == "application/xhtml+xml" {
        return Kind::Html;
    }
    let texty = essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/ld+json"
                | "application/xml"
                | "application/javascript"
                | "application/ecmascript"
                | "application/x-javascript"
                | "application/yaml"
                | "application/x-yaml"
                | "application/toml"
                | "application/x-ndjson"
                | "application/jsonl"
                | "application/graphql"
                | "application/sql"
        );
    if texty { Kind::Text } else { Kind::Binary }
}

/// Whether bytes of unknown type look like text: no NUL, and valid UTF-8 except perhaps a
/// character cut at the end.
fn looks_like_text(bytes: &[u8]) -> bool {
    if bytes.contains(&0) {
        return false;
    }
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// The text of `bytes` as UTF-8 (invalid sequences replaced), without a character cut in half at
/// the end of a cut body.
fn text_of(bytes: &[u8]) -> String {
    let end = match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => bytes.len(),
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Finds a guard refusal in an error's chain.
fn refusal_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refusal> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        current = e.source();
    }
    None
}

fn refused(refusal: &Refusal) -> ToolError {
    ToolError::with_kind(ToolErrorKind::Denied, format!("refused: {refusal}"))
}

fn cancelled() -> ToolError {
    ToolError::with_kind(ToolErrorKind::Cancelled, "the fetch was cancelled")
}

/// The model's error for a request that failed: a guard refusal as such, else what went wrong.
fn request_failed(url: &Url, err: &reqwest::Error) -> ToolError {
    if let Some(refusal) = refusal_in(err) {
        return refused(refusal);
    }
    let what = if err.is_redirect() {
        "the redirect could not be followed".to_string()
    } else if err.is_connect() {
        "the connection failed".to_string()
    } else {
        "the request failed".to_string()
    };
    // reqwest's own text repeats the URL; the model knows it already.
    let mut causes = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.contains(&text) {
            let _ = write!(causes, ": {text}");
        }
        source = cause.source();
    }
    ToolError::new(format!("fetching `{url}`: {what}{causes}"))
}

/// A body as far as it was read.
struct Body {
    bytes: Vec<u8>,
    /// Reading stopped at the cap.
    cut: bool,
    /// The time cap expired while the body was arriving.
    timed_out: bool,
    /// The connection broke part way (its error text).
    broken: Option<String>,
}

/// Reads at most `cap` bytes, stopping at the deadline or on cancellation.
async fn read_body(
    response: &mut reqwest::Response,
    cap: usize,
    deadline: Instant,
    ctx: &ToolContext,
) -> Result<Body, ToolError> {
    let mut body = Body { bytes: Vec::new(), cut: false, timed_out: false, broken: None };
    loop {
        let chunk = tokio::select! {
            _ = ctx.cancellation().cancelled() => return Err(cancelled()),
            chunk = tokio::time::timeout_at(deadline, response.chunk()) => chunk,
        };
        match chunk {
            Err(_) => {
                body.timed_out = true;
                return Ok(body);
            }
            Ok(Err(e)) => {
                body.broken = Some(error_text(&e));
                return Ok(body);
            }
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                // One byte past the cap tells a body of exactly `cap` bytes from a longer one.
                let room = cap + 1 - body.bytes.len();
                body.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.bytes.len() > cap {
                    body.bytes.truncate(cap);
                    body.cut = true;
                    return Ok(body);
                }
            }
        }
    }
}

impl WebFetch {
    /// A redirect reqwest did not follow (its target is not a URL reqwest follows, `file:` say;
    /// targets it does follow went through the redirect policy): refused with the guard's
    /// reason when the guard refuses the target, else described.
    fn unfollowed_redirect(&self, url: &Url, response: &reqwest::Response) -> ToolError {
        let status = response.status();
        let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
        let Some(location) = location else {
            return ToolError::new(format!("`{url}` answered HTTP {status} without a location to go to"));
        };
        match url.join(location) {
            Ok(target) => match self.config.policy.check_url(&target) {
                Err(refusal) => refused(&refusal),
                Ok(()) => ToolError::new(format!(
                    "`{url}` answered HTTP {status}; the redirect to `{target}` could not be followed"
                )),
            },
            Err(_) => ToolError::new(format!("`{url}` answered HTTP {status} with a location that is not a URL")),
        }
    }

    async fn fetch(&self, ctx: ToolContext, args: FetchArgs) -> Result<ToolOutput, ToolError> {
        let client = self.client.as_ref().map_err(|e| ToolError::new(e.clone()))?;
        let url = Url::parse(args.url.trim())
            .map_err(|e| ToolError::invalid_arguments(format!("`{}` is not a valid URL: {e}", args.url.trim())))?;
        self.config.policy.check_url(&url).map_err(|r| refused(&r))?;
        let cap = match args.max_bytes {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX).clamp(1, self.config.max_bytes),
            None => self.config.max_bytes,
        };
        let deadline = Instant::now() + self.config.timeout;
        let secs = self.config.timeout.as_secs_f64();
        let send = client.get(url.clone()).header(reqwest::header::ACCEPT, ACCEPT).send();
        let mut response = tokio::select! {
            _ = ctx.cancellation().cancelled() => return Err(cancelled()),
            sent = tokio::time::timeout_at(deadline, send) => match sent {
                Err(_) => {
                    return Err(ToolError::with_kind(
                        ToolErrorKind::Timeout,
                        format!("fetching `{url}`: no answer within {secs} s"),
                    ));
                }
                Ok(Err(e)) => return Err(request_failed(&url, &e)),
                Ok(Ok(response)) => response,
            },
        };
        self.config.policy.check_peer(response.url(), response.remote_addr()).map_err(|r| refused(&r))?;
        let final_url = response.url().clone();
        let status = response.status();
        if status.is_redirection() {
            return Err(self.unfollowed_redirect(&final_url, &response));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut kind = kind_of(&content_type);
        if kind == Kind::Binary && status.is_success() {
            let essence = content_type.split(';').next().unwrap_or_default().trim();
            return Err(ToolError::new(format!(
                "`{final_url}` is `{essence}`, a binary type; web_fetch reads HTML, text and JSON only"
            )));
        }
        let body = read_body(&mut response, cap, deadline, &ctx).await?;
        drop(response);
        if body.bytes.is_empty() && (body.timed_out || body.broken.is_some()) {
            return Err(match body.broken {
                Some(e) => ToolError::new(format!("fetching `{final_url}`: the connection broke: {e}")),
                None => ToolError::with_kind(
                    ToolErrorKind::Timeout,
                    format!("fetching `{final_url}`: the body did not arrive within {secs} s"),
                ),
            });
        }
        if kind == Kind::Unknown {
            kind = if looks_like_text(&body.bytes) { Kind::Text } else { Kind::Binary };
            if kind == Kind::Binary && status.is_success() {
                return Err(ToolError::new(format!(
                    "`{final_url}` sent binary data without a content type; web_fetch reads HTML, text and JSON only"
                )));
            }
        }
        let raw = text_of(&body.bytes);
        let content = if kind == Kind::Html && args.format == Format::Text {
            tokio::task::spawn_blocking(move || super::html_to_text(&raw))
                .await
                .map_err(|_| ToolError::new(format!("`{final_url}`: the HTML could not be rendered as text")))?
        } else {
            raw
        };
        if !status.is_success() {
            let extract: String = content.trim().chars().take(500).collect();
            let mut message = format!("`{final_url}` answered HTTP {status}");
            if !extract.is_empty() && kind != Kind::Binary {
                let _ = write!(message, ":\n{extract}");
            }
            return Err(ToolError::new(message));
        }
        let mut out = String::with_capacity(content.len() + 128);
        if final_url != url {
            let _ = write!(out, "[redirected to {final_url}]\n\n");
        }
        out.push_str(content.trim_end());
        if body.cut {
            let _ = write!(out, "\n\n[cut: only the first {} bytes of the body were read]", body.bytes.len());
        }
        if body.timed_out {
            let _ = write!(out, "\n\n[cut: the time cap of {secs} s expired while the body was arriving]");
        }
        if let Some(e) = body.broken {
            let _ = write!(out, "\n\n[cut: the connection broke while the body was arriving: {e}]");
        }
        Ok(ToolOutput::text(out))
    }
}

#[async_trait::async_trait]
impl Tool for WebFetch {
    fn name(&self) -> &str {
        "web_fetch"
    }

    fn description(&self) -> &str {
        "Fetch a web page (HTTP GET) and return its content. HTML is returned as readable text (links \
         listed as numbered references at the end); text and JSON as they are. Binary files are refused."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "url": {"type": "string", "description": "The http or https URL to fetch"},
                "format": {"type": "string", "enum": ["text", "raw"],
                           "description": "text (default): HTML rendered as readable text; raw: the body as it came"},
                "max_bytes": {"type": "integer", "minimum": 1,
                              "description": "Read at most this many bytes of the body (capped by the configured limit)"}
            },
            "required": ["url"],
            "additionalProperties": false
        })
    }

    fn flags(&self) -> ToolFlags {
        ToolFlags::new().read_only().idempotent().concurrency_safe()
    }

    fn timeout(&self) -> Option<Duration> {
        // The fetch keeps its own time cap and returns what arrived; the runtime's timeout is a
        // backstop behind it.
        Some(self.config.timeout + Duration::from_secs(5))
    }

    async fn call(&self, ctx: ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let args: FetchArgs = parse_arguments("web_fetch", args)?;
        self.fetch(ctx, args).await
    }
}

/// The `web_search` tool.
pub(crate) struct WebSearch {
    backend: Arc<dyn SearchBackend>,
    timeout: Duration,
}

impl WebSearch {
    pub(crate) fn new(backend: Arc<dyn SearchBackend>, timeout: Duration) -> Self {
        WebSearch { backend, timeout }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    query: String,
    #[serde(default)]
    count: Option<u64>,
}

/// Results per search unless the model asks for another number; and the most it may ask for.
const DEFAULT_COUNT: usize = 5;
const MAX_COUNT: usize = 20;

#[async_trait::async_trait]
impl Tool for WebSearch {
    fn name(&self) -> &str {
        "web_search"
    }

    fn description(&self) -> &str {
        "Search the web. Returns a numbered list of results, each with its title, URL and a snippet; \
         read a result with web_fetch."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to search for"},
                "count": {"type": "integer", "minimum": 1, "maximum": MAX_COUNT,
                          "description": "How many results (default 5)"}
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }

    fn flags(&self) -> ToolFlags {
        ToolFlags::new().read_only().idempotent().concurrency_safe()
    }

    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout + Duration::from_secs(5))
    }

    async fn call(&self, ctx: ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let args: SearchArgs = parse_arguments("web_search", args)?;
        let query = args.query.trim();
        if query.is_empty() {
            return Err(ToolError::invalid_arguments("the query is empty"));
        }
        let count = args.count.map_or(DEFAULT_COUNT, |n| usize::try_from(n).unwrap_or(MAX_COUNT).clamp(1, MAX_COUNT));
        let results = tokio::select! {
            _ = ctx.cancellation().cancelled() => {
                return Err(ToolError::with_kind(ToolErrorKind::Cancelled, "the search was cancelled"));
            }
            found = tokio::time::timeout(self.timeout, self.backend.search(query, count)) => match found {
                Err(_) => {
                    return Err(ToolError::with_kind(
                        ToolErrorKind::Timeout,
                        format!("the {} search backend did not answer within {} s", self.backend.name(), self.timeout.as_secs_f64()),
                    ));
                }
                Ok(found) => found.map_err(|e| ToolError::new(e.to_string()))?,
            },
        };
        if results.is_empty() {
            return Ok(ToolOutput::text(format!("No results for `{query}`.")));
        }
        let mut out = String::new();
        for (i, r) in results.iter().take(count).enumerate() {
            if i > 0 {
                out.push_str("\n\n");
            }
            let title = if r.title.trim().is_empty() { "(untitled)" } else { r.title.trim() };
            let _ = write!(out, "{}. {title}\n   {}", i + 1, r.url);
            let snippet = r.snippet.split_whitespace().collect::<Vec<_>>().join(" ");
            if !snippet.is_empty() {
                let _ = write!(out, "\n   {snippet}");
            }
        }
        Ok(ToolOutput::text(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_sorted() {
        assert_eq!(kind_of("text/html; charset=utf-8"), Kind::Html);
        assert_eq!(kind_of("application/xhtml+xml"), Kind::Html);
        assert_eq!(kind_of("text/plain"), Kind::Text);
        assert_eq!(kind_of("application/json"), Kind::Text);
        assert_eq!(kind_of("application/vnd.api+json"), Kind::Text);
        assert_eq!(kind_of("image/png"), Kind::Binary);
        assert_eq!(kind_of("application/pdf"), Kind::Binary);
        assert_eq!(kind_of("application/octet-stream"), Kind::Binary);
        assert_eq!(kind_of(""), Kind::Unknown);
    }

    #[test]
    fn unknown_bodies_are_sniffed() {
        assert!(looks_like_text(b"hello"));
        assert!(looks_like_text("h\u{e9}".as_bytes()));
        assert!(looks_like_text(&"h\u{e9}".as_bytes()[..2]), "a character cut at the cap is still text");
        assert!(!looks_like_text(b"\x89PNG\r\n\x1a\n\0\0"));
        assert!(!looks_like_text(b"\xff\xfe\xfd abc"));
    }
}
