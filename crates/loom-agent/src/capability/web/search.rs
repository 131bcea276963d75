//! Web search backends: the [`SearchBackend`] trait, [`SearXng`] (a SearXNG instance by URL) and
//! [`Brave`] (the Brave Search API by key).
//!
//! Search requests go to the backend the developer configured, not to a URL the model chose, so
//! they do not pass through `web_fetch`'s SSRF guard: a SearXNG instance on the intranet or on
//! 127.0.0.1 works without `allow_private`.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// One search result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SearchResult {
    /// The page title.
    pub title: String,
    /// The page URL.
    pub url: String,
    /// A short extract of the page.
    pub snippet: String,
}

/// Why a search failed. The text names the backend and what went wrong, never a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The backend answered with an error status.
    #[error("the {backend} search backend answered HTTP {status}{detail}")]
    Status {
        /// The backend's name.
        backend: String,
        /// The HTTP status code.
        status: u16,
        /// A short extract of the answer, led by `: ` (empty when there is none).
        detail: String,
    },
    /// The request did not complete (connection refused, timeout, …).
    #[error("the {backend} search backend could not be reached: {message}")]
    Request {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        message: String,
    },
    /// The answer was not the JSON the backend speaks.
    #[error("the {backend} search backend sent an answer that could not be read: {message}")]
    Decode {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        message: String,
    },
    /// The backend was configured wrongly (a bad base URL, …).
    #[error("the {backend} search backend is misconfigured: {message}")]
    Config {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        message: String,
    },
}

/// A web search engine `web_search` asks.
///
/// ```
/// use loom_agent::capability::web::{SearchBackend, SearchError, SearchResult};
///
/// struct Fixed;
///
/// #[async_trait::async_trait]
/// impl SearchBackend for Fixed {
///     fn name(&self) -> &str { "fixed" }
///     async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError> {
///         let hit = SearchResult { title: query.into(), url: "https://example.com/".into(), snippet: String::new() };
///         Ok(vec![hit; limit.min(1)])
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait SearchBackend: Send + Sync + 'static {
    /// The backend's name (`searxng`, `brave`, …), for messages.
    fn name(&self) -> &str;

    /// Searches for `query`, returning at most `limit` results, best first.
    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError>;
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// The most bytes of an answer a backend reads (a search answer is a few KiB).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("loom/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// Sends `request` and decodes its JSON answer, with every failure as a [`SearchError`] whose
/// text has `secret` (a key) scrubbed out.
async fn get_json<T: serde::de::DeserializeOwned>(
    backend: &str,
    request: reqwest::RequestBuilder,
    secret: Option<&str>,
) -> Result<T, SearchError> {
    let scrub = |text: String| match secret {
        Some(s) if !s.is_empty() => text.replace(s, "[redacted]"),
        _ => text,
    };
    let response = request
        .send()
        .await
        .map_err(|e| SearchError::Request { backend: backend.into(), message: scrub(error_text(&e)) })?;
    let status = response.status();
    let body = read_capped(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| SearchError::Request { backend: backend.into(), message: scrub(error_text(&e)) })?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let extract: String = text.trim().chars().take(300).collect();
        let detail = if extract.is_empty() { String::new() } else { format!(": {}", scrub(extract)) };
        return Err(SearchError::Status { backend: backend.into(), status: status.as_u16(), detail });
    }
    serde_json::from_slice(&body)
        .map_err(|e| SearchError::Decode { backend: backend.into(), message: scrub(e.to_string()) })
}

/// A reqwest error's text with its causes (reqwest's own text is often just "error sending
/// request").
pub(crate) fn error_text(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() { "timed out".to_string() } else { err.to_string() };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Reads at most `max` bytes of a body.
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    Ok(body)
}

/// `base` with `path` appended to its path (keeping a path prefix such as `/searx/`).
fn endpoint(base: &Url, path: &str) -> Result<Url, url::ParseError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let with_slash = format!("{}/", base.path());
        base.set_path(&with_slash);
    }
    base.join(path)
}

fn parse_base(backend: &str, base: &str) -> Result<Url, SearchError> {
    let url = Url::parse(base)
        .map_err(|e| SearchError::Config { backend: backend.into(), message: format!("`{base}` is not a URL: {e}") })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(SearchError::Config {
            backend: backend.into(),
            message: format!("`{base}` is not an http(s) URL"),
        });
    }
    Ok(url)
}

/// A SearXNG instance, asked at `{base}/search?q=…&format=json` (the instance must have the JSON
/// format enabled in its `settings.yml`: `search.formats: [html, json]`).
///
/// ```
/// use loom_agent::capability::web::SearXng;
///
/// let searx = SearXng::new("http://127.0.0.1:8888").unwrap();
/// # let _ = searx;
/// ```
#[derive(Clone)]
pub struct SearXng {
    base: Url,
    timeout: Duration,
    client: reqwest::Client,
}

impl SearXng {
    /// The instance at `base_url` (its root, for example `https://searx.example.org/`).
    pub fn new(base_url: &str) -> Result<Self, SearchError> {
        let base = parse_base("searxng", base_url)?;
        let client = client().map_err(|message| SearchError::Config { backend: "searxng".into(), message })?;
        Ok(SearXng { base, timeout: DEFAULT_TIMEOUT, client })
    }

    /// Gives each request at most `timeout` (20 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for SearXng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearXng").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct SearxAnswer {
    #[serde(default)]
    results: Vec<SearxResult>,
}

#[derive(Deserialize)]
struct SearxResult {
    #[serde(default)]
    title: String,
    url: String,
    #[serde(default)]
    content: Option<String>,
}

#[async_trait::async_trait]
impl SearchBackend for SearXng {
    fn name(&self) -> &str {
        "searxng"
    }

    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError> {
        let mut url = endpoint(&self.base, "search")
            .map_err(|e| SearchError::Config { backend: "searxng".into(), message: e.to_string() })?;
        url.query_pairs_mut().append_pair("q", query).append_pair("format", "json");
        let request = self.client.get(url).timeout(self.timeout).header(reqwest::header::ACCEPT, "application/json");
        let answer: SearxAnswer = get_json("searxng", request, None).await?;
        Ok(answer
            .results
            .into_iter()
            .take(limit)
            .map(|r| SearchResult { title: r.title, url: r.url, snippet: r.content.unwrap_or_default() })
            .collect())
    }
}

/// The Brave Search API (`https://api.search.brave.com/res/v1/web/search`), with a subscription
/// key sent as `X-Subscription-Token`. The key appears in no Debug output, error or event.
///
/// ```
/// use loom_agent::capability::web::Brave;
///
/// let brave = Brave::new("BSA-key").unwrap();
/// assert!(!format!("{brave:?}").contains("BSA-key"));
/// ```
#[derive(Clone)]
pub struct Brave {
    key: String,
    base: Url,
    timeout: Duration,
    client: reqwest::Client,
}

/// Where the Brave Search API lives.
pub const BRAVE_API_URL: &str = "https://api.search.brave.com/res/v1/web/search";

impl Brave {
    /// The Brave Search API with this subscription key.
    pub fn new(key: impl Into<String>) -> Result<Self, SearchError> {
        let client = client().map_err(|message| SearchError::Config { backend: "brave".into(), message })?;
        let base = parse_base("brave", BRAVE_API_URL)?;
        Ok(Brave { key: key.into(), base, timeout: DEFAULT_TIMEOUT, client })
    }

    /// Sends requests to `url` instead of the real API (the full endpoint URL, for tests and
    /// proxies).
    pub fn endpoint(mut self, url: &str) -> Result<Self, SearchError> {
        self.base = parse_base("brave", url)?;
        Ok(self)
    }

    /// Gives each request at most `timeout` (20 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for Brave {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Brave")
            .field("endpoint", &self.base.as_str())
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct BraveAnswer {
    #[serde(default)]
    web: Option<BraveWeb>,
}

#[derive(Deserialize)]
struct BraveWeb {
    #[serde(default)]
    results: Vec<BraveResult>,
}

#[derive(Deserialize)]
struct BraveResult {
    #[serde(default)]
    title: String,
    url: String,
    #[serde(default)]
    description: Option<String>,
}

/// Brave marks the query's words in titles and descriptions with `<strong>` and escapes
/// entities; the model reads text (with `**` for the marked words).
fn strip_markup(text: &str) -> String {
    if !text.contains('<') && !text.contains('&') {
        return text.to_string();
    }
    super::html_to_text(text).trim().to_string()
}

#[async_trait::async_trait]
impl SearchBackend for Brave {
    fn name(&self) -> &str {
        "brave"
    }

    async fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchResult>, SearchError> {
        let mut url = self.base.clone();
        // Brave answers at most 20 results per request.
        url.query_pairs_mut().append_pair("q", query).append_pair("count", &limit.clamp(1, 20).to_string());
        // Marked sensitive, so no Debug output of the request shows it.
        let mut token = reqwest::header::HeaderValue::from_str(&self.key).map_err(|_| SearchError::Config {
            backend: "brave".into(),
            message: "the key holds characters an HTTP header cannot carry".into(),
        })?;
        token.set_sensitive(true);
        let request = self
            .client
            .get(url)
            .timeout(self.timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .header("X-Subscription-Token", token);
        let answer: BraveAnswer = get_json("brave", request, Some(&self.key)).await?;
        Ok(answer
            .web
            .map(|w| w.results)
            .unwrap_or_default()
            .into_iter()
            .take(limit)
            .map(|r| SearchResult {
                title: strip_markup(&r.title),
                url: r.url,
                snippet: strip_markup(&r.description.unwrap_or_default()),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_path_prefix() {
        let base = Url::parse("https://host/searx").unwrap();
        assert_eq!(endpoint(&base, "search").unwrap().as_str(), "https://host/searx/search");
        let root = Url::parse("http://127.0.0.1:8888").unwrap();
        assert_eq!(endpoint(&root, "search").unwrap().as_str(), "http://127.0.0.1:8888/search");
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        assert!(matches!(SearXng::new("not a url"), Err(SearchError::Config { .. })));
        assert!(matches!(SearXng::new("file:///tmp"), Err(SearchError::Config { .. })));
    }
}
