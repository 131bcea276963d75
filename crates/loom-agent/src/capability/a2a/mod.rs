//! A remote A2A agent as a tool: [`a2a(url)`](super::a2a) reads the agent's card (A2A 1.0) and
//! offers one tool, named after the agent, whose argument is the message text. A call sends
//! `SendMessage` over the JSON-RPC binding (blocking, `A2A-Version: 1.0`) and returns the answer:
//! the text of the task's artifacts (or of a direct message). A task that ends failed, canceled or
//! rejected is a tool error saying so; one that needs more input returns the agent's question, and
//! the next call of the same Loom session continues that task.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use loom_agent::capability;
//!
//! let remote = capability::a2a("http://127.0.0.1:8080").bearer_env("REMOTE_AGENT_KEY");
//! let card = remote.connect().await?; // errors now rather than at the first run
//! println!("calling {} at {}", card.name, card.endpoint);
//! let agent = loom_agent::Agent::builder().model("echo").capability(remote).build()?;
//! # let _ = agent; Ok(()) }
//! ```
//!
//! # Conversations
//!
//! The `contextId` the remote agent gives is kept per Loom session (and user), in memory, so the
//! follow-up calls of a session continue the remote conversation; another session starts its own.
//! (A session resumed in another process starts a new remote context.)
//!
//! # What it may reach
//!
//! Unlike `web_fetch`, whose URLs the model chooses, this capability talks only to the URL the
//! developer named, so a loopback or private address is allowed: naming it is the explicit
//! permission. The model supplies only the message text. The card is fetched from that URL; the
//! JSON-RPC endpoint the card declares must be on the same origin (scheme, host and port) unless
//! [`A2a::trust_card_endpoint`] is set, so a card cannot send the agent's requests, and its token,
//! somewhere else. Redirects are not followed. The token (given, or read from an environment
//! variable at each call) is sent only to the endpoint, never logged, and `Debug` redacts it.
//!
//! # Time
//!
//! Each request has the capability's timeout (120 s by default); the tool's own timeout is that
//! plus 5 s. A task still `WORKING` when the blocking call returns is polled with `GetTask` until
//! it ends or the time is up. Cancelling the run drops the request and sends `CancelTask` for a
//! task it knows.

mod call;
mod card;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use card::RemoteCard;

use super::{Capability, ToolSource};
use crate::tool::Tool;

/// The default time one request to the remote agent may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The A2A protocol version this client speaks.
pub const PROTOCOL_VERSION: &str = "1.0";

/// Why a remote agent cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum A2aError {
    /// The URL is not an http(s) URL.
    #[error("A2A agent URL `{url}`: {message}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The card could not be fetched (connection refused, timeout, …).
    #[error("the A2A agent card at {url} is unreachable: {message}")]
    Unreachable {
        /// The card's URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The card's URL answered with an error status.
    #[error("the A2A agent card at {url} answered HTTP {status}")]
    Status {
        /// The card's URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The card is not a valid A2A 1.0 agent card.
    #[error("the A2A agent card at {url} is malformed: {message}")]
    MalformedCard {
        /// The card's URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The card is valid but offers nothing this client speaks (JSON-RPC, A2A 1.0).
    #[error("the A2A agent at {url} cannot be called: {message}")]
    Unsupported {
        /// The card's URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The card's endpoint is on another origin than the card (see
    /// [`A2a::trust_card_endpoint`]).
    #[error(
        "the A2A agent card at {card} names an endpoint on another origin ({endpoint}); \
         call .trust_card_endpoint() to allow it"
    )]
    ForeignEndpoint {
        /// The card's URL.
        card: String,
        /// The endpoint it names.
        endpoint: String,
    },
    /// The environment variable that should hold the token is not set.
    #[error("the A2A bearer token variable `{var}` is not set")]
    MissingToken {
        /// The variable's name.
        var: String,
    },
}

/// Where the bearer token comes from.
#[derive(Clone)]
enum Token {
    None,
    Value(Arc<str>),
    Env(String),
}

impl Token {
    fn get(&self) -> Result<Option<String>, A2aError> {
        match self {
            Token::None => Ok(None),
            Token::Value(v) => Ok(Some(v.to_string())),
            Token::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(A2aError::MissingToken { var: var.clone() }),
            },
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::None => f.write_str("None"),
            Token::Value(_) => f.write_str("Value([redacted])"),
            Token::Env(var) => write!(f, "Env({var})"),
        }
    }
}

/// The remote conversation of one Loom session: its `contextId`, and the task waiting for more
/// input, if any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Conversation {
    pub(crate) context_id: Option<String>,
    pub(crate) task_id: Option<String>,
}

/// How many sessions' conversations are remembered before the map is cleared.
const MAX_CONVERSATIONS: usize = 10_000;

/// What the capability's clones share: the HTTP client, the card once read, the conversations.
pub(crate) struct Shared {
    pub(crate) http: reqwest::Client,
    card: tokio::sync::Mutex<Option<RemoteCard>>,
    generation: AtomicU64,
    conversations: Mutex<HashMap<(Option<String>, String), Conversation>>,
}

impl Shared {
    pub(crate) fn conversation(&self, key: &(Option<String>, String)) -> Conversation {
        self.conversations.lock().unwrap_or_else(|p| p.into_inner()).get(key).cloned().unwrap_or_default()
    }

    pub(crate) fn remember(&self, key: (Option<String>, String), c: Conversation) {
        let mut map = self.conversations.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CONVERSATIONS && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, c);
    }
}

/// A remote A2A agent as a capability. Built by [`capability::a2a(url)`](super::a2a); see the
/// [module documentation](self).
#[derive(Clone)]
pub struct A2a {
    url: String,
    token: Token,
    name: Option<String>,
    timeout: Duration,
    trust_endpoint: bool,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for A2a {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("A2a")
            .field("url", &self.url)
            .field("token", &self.token)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("trust_endpoint", &self.trust_endpoint)
            .finish_non_exhaustive()
    }
}

/// The remote agent at `url` (its base URL, or its card's URL when it ends in `.json`).
pub fn a2a(url: impl Into<String>) -> A2a {
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap_or_default();
    A2a {
        url: url.into(),
        token: Token::None,
        name: None,
        timeout: DEFAULT_TIMEOUT,
        trust_endpoint: false,
        shared: Arc::new(Shared {
            http,
            card: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            conversations: Mutex::new(HashMap::new()),
        }),
    }
}

impl A2a {
    /// Sends `Authorization: Bearer TOKEN` with every JSON-RPC request.
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.token = Token::Value(Arc::from(token.into()));
        self
    }

    /// Sends the bearer token held by the environment variable `var` (read at each call; a call
    /// while it is unset is a tool error naming the variable).
    pub fn bearer_env(mut self, var: impl Into<String>) -> Self {
        self.token = Token::Env(var.into());
        self
    }

    /// The tool's name (by default the card's name in lower case, `weather_bot` for "Weather Bot").
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long one request may take (120 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Lets the card name a JSON-RPC endpoint on another origin than the card's.
    pub fn trust_card_endpoint(mut self) -> Self {
        self.trust_endpoint = true;
        self
    }

    /// Fetches and checks the card now (it is otherwise fetched at the first run's first model
    /// turn, and a failure fails that run with kind `config`). Kept once read.
    pub async fn connect(&self) -> Result<RemoteCard, A2aError> {
        let mut slot = self.shared.card.lock().await;
        if let Some(card) = slot.as_ref() {
            return Ok(card.clone());
        }
        let url = card::card_url(&self.url)?;
        let unreachable = |e: reqwest::Error| A2aError::Unreachable { url: url.to_string(), message: e.to_string() };
        let response = self
            .shared
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout.min(Duration::from_secs(30)))
            .send()
            .await
            .map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(A2aError::Status { url: url.to_string(), status: response.status().as_u16() });
        }
        let bytes = response.bytes().await.map_err(unreachable)?;
        if bytes.len() > 1 << 20 {
            return Err(A2aError::MalformedCard { url: url.to_string(), message: "the card is over 1 MiB".into() });
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| A2aError::MalformedCard { url: url.to_string(), message: format!("not JSON: {e}") })?;
        let card = card::parse(&url, &json, self.trust_endpoint)?;
        *slot = Some(card.clone());
        Ok(card)
    }

    fn tool(&self, card: RemoteCard) -> call::A2aTool {
        let name = self.name.clone().unwrap_or_else(|| card::tool_name(&card.name));
        let mut description = format!("Sends a message to the remote agent \"{}\" and returns its answer.", card.name);
        if !card.description.is_empty() {
            description.push(' ');
            description.push_str(&card.description);
        }
        if !card.skills.is_empty() {
            description.push_str(" Skills:");
            for (skill, about) in &card.skills {
                description.push_str(&format!("\n- {skill}: {about}"));
            }
        }
        if description.len() > 2000 {
            let mut end = 2000;
            while !description.is_char_boundary(end) {
                end -= 1;
            }
            description.truncate(end);
        }
        call::A2aTool {
            name,
            description,
            endpoint: card.endpoint,
            token: self.token.clone(),
            timeout: self.timeout,
            shared: self.shared.clone(),
        }
    }
}

impl Capability for A2a {
    fn name(&self) -> &str {
        "a2a"
    }

    /// None fixed: the tool's name comes from the card, read by [`A2a::tool_source`].
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        Vec::new()
    }

    fn tool_source(&self) -> Option<Arc<dyn ToolSource>> {
        Some(Arc::new(self.clone()))
    }
}

#[async_trait::async_trait]
impl ToolSource for A2a {
    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    async fn load(&self) -> Result<Vec<Arc<dyn Tool>>, String> {
        match self.connect().await {
            Ok(card) => Ok(vec![Arc::new(self.tool(card))]),
            Err(e) => {
                // The next turn tries again.
                self.shared.generation.fetch_add(1, Ordering::AcqRel);
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_token() {
        let a = a2a("http://127.0.0.1:1").bearer("sekret-token-value");
        let shown = format!("{a:?}");
        assert!(!shown.contains("sekret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        let e = a2a("http://127.0.0.1:1").bearer_env("MY_VAR");
        assert!(format!("{e:?}").contains("Env(MY_VAR)"));
    }
}
