//! OAuth 2.1 for MCP over Streamable HTTP, driven by the server's challenges.
//!
//! [`OAuthHttpClient`] is an rmcp [`StreamableHttpClient`]: it sends each request with the current
//! access token (none at first), and when the server answers `401` (or `403 insufficient_scope`)
//! with a `WWW-Authenticate` challenge it runs the authorization-code flow with PKCE through rmcp's
//! `auth` module — protected-resource and authorization-server metadata discovery from the
//! challenge, client registration (pre-registered credentials, a Client ID Metadata Document, or
//! dynamic registration, in that order), scopes from the challenge or `scopes_supported`, the
//! token endpoint's authentication method, the `resource` parameter — and retries the request
//! with the new token. A step-up (`403` naming more scopes) asks for the union of the scopes
//! granted so far and the ones the challenge names. At most
//! [`OAuthConfig::max_consecutive_authorizations`] authorizations run without a request
//! succeeding in between, so a server that never accepts a token cannot loop the client.
//!
//! The user's side of the flow (opening the authorization URL, and getting the redirect back) is
//! a [`UserAgent`]; [`HeadlessUserAgent`] follows the URL with an HTTP GET and reads the redirect
//! from the `Location` header, which is what an authorization server that needs no login (the
//! conformance suite's) does. An interactive agent (a browser and a loopback listener on the
//! redirect URI) implements the same trait.
//!
//! [`McpServer::oauth`](crate::McpServer::oauth) turns it on for an HTTP server
//! (`loom_mcp::http(url).oauth(config)`); the server's connection, its reconnections and its
//! tool calls then share one client, so a token is reused until it expires, refreshed with the
//! refresh token when it does, and the user is asked again only when that fails. Tokens live in a
//! [`TokenStore`] (in memory by default; a store of your own keeps them across processes).
//! [`LoopbackUserAgent`] is the interactive user agent of a command-line program: it shows the
//! authorization URL and waits for the browser's redirect on `127.0.0.1`.
//!
//! The client is also a transport-level building block. With rmcp's Streamable HTTP transport:
//!
//! ```no_run
//! # fn demo() -> Result<(), loom_mcp::oauth::OAuthError> {
//! use std::sync::Arc;
//!
//! use loom_mcp::oauth::{HeadlessUserAgent, OAuthConfig, OAuthHttpClient};
//! use rmcp::transport::StreamableHttpClientTransport;
//! use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
//!
//! let url = "https://mcp.example.com/mcp";
//! let config = OAuthConfig::new("my-agent")
//!     .client_metadata_url("https://agent.example.com/oauth/client-metadata.json");
//! let http = OAuthHttpClient::new(url, config, Arc::new(HeadlessUserAgent::new()?));
//! let transport = StreamableHttpClientTransport::with_client(
//!     http,
//!     StreamableHttpClientTransportConfig::with_uri(url),
//! );
//! # let _ = transport; Ok(()) }
//! ```
//!
//! The token goes in the `Authorization` header of every request; a bearer set on the transport
//! config is not used. Secrets (the client secret, tokens) are not in any `Debug` output.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::auth::{
    AuthError, AuthorizationCallback, AuthorizationManager, AuthorizationRequest, CredentialRefreshGuard,
    CredentialStore, InMemoryCredentialStore, OAuthClientConfig, OAuthState, StoredCredentials, WWWAuthenticateParams,
};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::Sse;
use tokio::sync::Mutex;

mod user_agent;

pub use user_agent::{HeadlessUserAgent, LOOPBACK_CALLBACK_PATH, LoopbackUserAgent, UserAgent};

/// The redirect URI registered for the authorization-code flow when none is configured.
pub const DEFAULT_REDIRECT_URI: &str = "http://localhost:3000/callback";

/// Where OAuth tokens are kept between requests, reconnections and (for a persistent store)
/// processes: rmcp's `CredentialStore` trait (`load`, `save`, `clear`), whose values are
/// [`StoredTokens`]. One store holds the tokens of one MCP server: do not share a store between
/// servers. rmcp refreshes a token through the store when it nears expiry.
pub use rmcp::transport::auth::CredentialStore as TokenStore;
/// The default [`TokenStore`]: in memory, for the life of the client.
pub use rmcp::transport::auth::InMemoryCredentialStore as InMemoryTokenStore;
/// What a [`TokenStore`] keeps: the client id, the token response (access and refresh tokens,
/// expiry), the granted scopes and the issuer. Serializable; its `Debug` hides the tokens.
pub use rmcp::transport::auth::StoredCredentials as StoredTokens;

/// An error of the OAuth flow. Messages never hold tokens, authorization codes or the client
/// secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// rmcp's OAuth machinery failed (discovery, registration, token exchange, refresh).
    #[error("OAuth: {0}")]
    Auth(#[from] AuthError),
    /// The user agent could not complete the authorization step.
    #[error("OAuth authorization step: {0}")]
    UserAgent(String),
    /// The authorization server redirected back with an error (the user refused, say).
    #[error("the authorization server refused the authorization: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Denied {
        /// The OAuth error code (`access_denied`, `invalid_scope`, …).
        error: String,
        /// The server's `error_description`, when given.
        description: Option<String>,
    },
    /// The server kept refusing the tokens it was given.
    #[error("the server refused the access token after {0} authorization(s) in a row")]
    Refused(u32),
}

/// How the client identifies itself to authorization servers.
///
/// Client identity, in the order the client tries them: pre-registered credentials
/// ([`OAuthConfig::preregistered`]), a Client ID Metadata Document
/// ([`OAuthConfig::client_metadata_url`], when the authorization server supports it), dynamic
/// client registration (the default). The `Debug` output hides the client secret.
#[derive(Clone)]
pub struct OAuthConfig {
    redirect_uri: String,
    client_name: String,
    client_metadata_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scopes: Option<Vec<String>>,
    max_consecutive_authorizations: u32,
    user_agent: Option<Arc<dyn UserAgent>>,
    token_store: Option<Arc<dyn CredentialStore>>,
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("redirect_uri", &self.redirect_uri)
            .field("client_name", &self.client_name)
            .field("client_metadata_url", &self.client_metadata_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("scopes", &self.scopes)
            .field("max_consecutive_authorizations", &self.max_consecutive_authorizations)
            .field("user_agent", &self.user_agent.as_ref().map(|_| "<set>"))
            .field("token_store", &self.token_store.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl OAuthConfig {
    /// A public client named `client_name` that registers dynamically, with
    /// [`DEFAULT_REDIRECT_URI`] and at most 3 consecutive authorizations.
    pub fn new(client_name: impl Into<String>) -> Self {
        Self {
            redirect_uri: DEFAULT_REDIRECT_URI.to_owned(),
            client_name: client_name.into(),
            client_metadata_url: None,
            client_id: None,
            client_secret: None,
            scopes: None,
            max_consecutive_authorizations: 3,
            user_agent: None,
            token_store: None,
        }
    }

    /// The scopes to ask for. Without them: the scopes the server's challenge names, else the
    /// authorization server's `scopes_supported`, else none. A step-up (`403 insufficient_scope`)
    /// adds the scopes it names to those granted.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Who visits the authorization URL and brings the redirect back: a [`LoopbackUserAgent`]
    /// for a person at a terminal, or your own (a browser, a GUI). Without one,
    /// [`McpServer::oauth`](crate::McpServer::oauth) uses a [`HeadlessUserAgent`], which works only
    /// with authorization servers that redirect without asking anyone.
    pub fn user_agent(mut self, agent: Arc<dyn UserAgent>) -> Self {
        self.user_agent = Some(agent);
        self
    }

    /// Keeps the tokens in `store` (for example one that persists them), so a client made later
    /// with the same store starts with them instead of asking the user. The default is a
    /// [`InMemoryTokenStore`] per client. One store holds one server's tokens.
    pub fn token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.token_store = Some(store);
        self
    }

    /// The redirect URI to register and to send in authorization requests.
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = uri.into();
        self
    }

    /// The HTTPS URL of this client's Client ID Metadata Document, used as its `client_id` by
    /// authorization servers that advertise `client_id_metadata_document_supported`.
    pub fn client_metadata_url(mut self, url: impl Into<String>) -> Self {
        self.client_metadata_url = Some(url.into());
        self
    }

    /// Credentials registered with the authorization server out of band (no registration).
    pub fn preregistered(mut self, client_id: impl Into<String>, client_secret: Option<String>) -> Self {
        self.client_id = Some(client_id.into());
        self.client_secret = client_secret;
        self
    }

    /// How many authorizations may run without a request succeeding in between (at least 1).
    pub fn max_consecutive_authorizations(mut self, n: u32) -> Self {
        self.max_consecutive_authorizations = n.max(1);
        self
    }

    fn request(&self, challenge: &str, scopes: Option<Vec<String>>) -> AuthorizationRequest {
        let mut request = AuthorizationRequest::new(self.redirect_uri.clone())
            .with_client_name(self.client_name.clone())
            .with_challenge(challenge);
        if let Some(url) = &self.client_metadata_url {
            request = request.with_client_metadata_url(url.clone());
        }
        if let Some(id) = &self.client_id {
            request = request.with_preregistered_client(id.clone());
            if let Some(secret) = &self.client_secret {
                request = request.with_client_secret(secret.clone());
            }
        }
        if let Some(scopes) = scopes.or_else(|| self.scopes.clone()) {
            request = request.with_scopes(scopes);
        }
        request
    }
}

/// A shared [`TokenStore`] handed to rmcp (which takes a store by value).
struct SharedStore(Arc<dyn CredentialStore>);

#[async_trait::async_trait]
impl CredentialStore for SharedStore {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        self.0.load().await
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        self.0.save(credentials).await
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.0.clear().await
    }

    async fn on_refresh_token_rejected(&self, credentials: &StoredCredentials) -> Result<(), AuthError> {
        self.0.on_refresh_token_rejected(credentials).await
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        self.0.acquire_refresh_guard().await
    }
}

struct Shared {
    server_url: String,
    config: OAuthConfig,
    agent: Arc<dyn UserAgent>,
    /// Where the tokens are kept (the configured store, else one in memory for this client).
    store: Arc<dyn CredentialStore>,
    /// Whether to look for tokens in the store before the first authorization (a configured
    /// store may hold some; it is looked at once).
    restore: AtomicBool,
    /// The authorized manager (tokens, refresh), `None` until the first authorization.
    manager: Mutex<Option<AuthorizationManager>>,
    /// Why the last authorization failed, until a request succeeds.
    failure: std::sync::Mutex<Option<String>>,
    /// Authorizations since the last request that succeeded with a token.
    consecutive: AtomicU32,
    /// Authorizations run in total.
    total: AtomicU32,
}

/// A Streamable HTTP client that authorizes with OAuth when the server challenges it.
#[derive(Clone)]
pub struct OAuthHttpClient {
    http: reqwest::Client,
    shared: Arc<Shared>,
}

impl fmt::Debug for OAuthHttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthHttpClient")
            .field("server_url", &self.shared.server_url)
            .field("config", &self.shared.config)
            .field("authorizations", &self.authorizations())
            .finish_non_exhaustive()
    }
}

impl OAuthHttpClient {
    /// A client for the MCP server at `server_url` (the URL the transport posts to), with
    /// `agent` as its user agent (in place of the config's).
    pub fn new(server_url: impl Into<String>, config: OAuthConfig, agent: Arc<dyn UserAgent>) -> Self {
        Self::with_http(reqwest::Client::new(), server_url, config, agent)
    }

    /// A client for the MCP server at `server_url` with the config's user agent, or a
    /// [`HeadlessUserAgent`] when it has none.
    ///
    /// # Errors
    /// The headless user agent's HTTP client cannot be built.
    pub fn from_config(server_url: impl Into<String>, config: OAuthConfig) -> Result<Self, OAuthError> {
        let agent: Arc<dyn UserAgent> = match &config.user_agent {
            Some(agent) => agent.clone(),
            None => Arc::new(HeadlessUserAgent::new()?),
        };
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| OAuthError::UserAgent(format!("building the HTTP client: {e}")))?;
        Ok(Self::with_http(http, server_url, config, agent))
    }

    /// Like [`OAuthHttpClient::new`], sending MCP requests through `http`.
    pub fn with_http(
        http: reqwest::Client,
        server_url: impl Into<String>,
        config: OAuthConfig,
        agent: Arc<dyn UserAgent>,
    ) -> Self {
        let (store, restore) = match &config.token_store {
            Some(store) => (store.clone(), true),
            None => (Arc::new(InMemoryCredentialStore::new()) as Arc<dyn CredentialStore>, false),
        };
        Self {
            http,
            shared: Arc::new(Shared {
                server_url: server_url.into(),
                config,
                agent,
                store,
                restore: AtomicBool::new(restore),
                manager: Mutex::new(None),
                failure: std::sync::Mutex::new(None),
                consecutive: AtomicU32::new(0),
                total: AtomicU32::new(0),
            }),
        }
    }

    /// How many authorization flows this client has run.
    pub fn authorizations(&self) -> u32 {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Why the last authorization failed, when no request has succeeded since (the message of an
    /// [`OAuthError`]; it holds no token or secret).
    pub fn last_failure(&self) -> Option<String> {
        self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_failure(&self, failure: Option<String>) {
        *self.shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = failure;
    }

    /// A manager for the server with the client's token store.
    async fn manager(&self) -> Result<AuthorizationManager, AuthError> {
        let mut manager = AuthorizationManager::new(self.shared.server_url.as_str()).await?;
        manager.set_credential_store(SharedStore(self.shared.store.clone()));
        Ok(manager)
    }

    /// A manager on the tokens a configured store already holds, when it holds some for this
    /// server's authorization server.
    async fn restore(&self) -> Option<AuthorizationManager> {
        let mut manager = self.manager().await.ok()?;
        match manager.initialize_from_store().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!(server = %self.shared.server_url, error = %e, "the stored OAuth tokens cannot be used");
                return None;
            }
        }
        // A confidential client authenticates its refreshes.
        let config = &self.shared.config;
        if let (Some(id), Some(secret)) = (&config.client_id, &config.client_secret) {
            let stored = self.shared.store.load().await.ok().flatten();
            if stored.is_some_and(|s| &s.client_id == id) {
                let client =
                    OAuthClientConfig::new(id.clone(), config.redirect_uri.clone()).with_client_secret(secret.clone());
                manager.configure_client(client).ok()?;
            }
        }
        Some(manager)
    }

    /// The current access token (refreshed when it is about to expire), or `None` before the
    /// first authorization.
    async fn current_token(&self) -> Result<Option<String>, AuthError> {
        let mut guard = self.shared.manager.lock().await;
        if guard.is_none() && self.shared.restore.swap(false, Ordering::AcqRel) {
            *guard = self.restore().await;
        }
        match guard.as_ref() {
            None => Ok(None),
            Some(manager) => match manager.get_access_token().await {
                Ok(token) => Ok(Some(token)),
                Err(AuthError::AuthorizationRequired) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    /// Answers a challenge to a request sent with `sent`: the token to retry with, or `None`
    /// when the retry budget is spent.
    async fn answer_challenge(&self, sent: Option<&str>, challenge: &str) -> Result<Option<String>, OAuthError> {
        let mut guard = self.shared.manager.lock().await;
        // Another request may have authorized while this one waited for the lock.
        if let Some(manager) = guard.as_ref()
            && let Ok(token) = manager.get_access_token().await
            && Some(token.as_str()) != sent
        {
            return Ok(Some(token));
        }
        if self.shared.consecutive.load(Ordering::Relaxed) >= self.shared.config.max_consecutive_authorizations {
            return Ok(None);
        }
        self.shared.consecutive.fetch_add(1, Ordering::Relaxed);
        self.shared.total.fetch_add(1, Ordering::Relaxed);

        // A step-up keeps what was granted and adds what the challenge asks for.
        let scopes = match guard.as_ref() {
            Some(manager) => {
                let base = reqwest::Url::parse(&self.shared.server_url).map_err(AuthError::from)?;
                let params = WWWAuthenticateParams::parse(challenge, &base);
                match (params.is_insufficient_scope(), params.scope) {
                    (true, Some(required)) => {
                        let mut all: BTreeSet<String> = manager.get_current_scopes().await.into_iter().collect();
                        all.extend(required.split_whitespace().map(str::to_owned));
                        Some(all.into_iter().collect())
                    }
                    _ => None,
                }
            }
            None => None,
        };

        let manager = self.authorize(challenge, scopes).await?;
        let token = manager.get_access_token().await?;
        *guard = Some(manager);
        Ok(Some(token))
    }

    async fn authorize(
        &self,
        challenge: &str,
        scopes: Option<Vec<String>>,
    ) -> Result<AuthorizationManager, OAuthError> {
        let shared = &self.shared;
        let mut state = OAuthState::Unauthorized(self.manager().await?);
        state.start_authorization(shared.config.request(challenge, scopes)).await?;
        let url = state.get_authorization_url().await?;
        let redirect = shared.agent.authorize(&url).await?;
        if let Some(denied) = redirect_error(&redirect) {
            return Err(denied);
        }
        let callback = AuthorizationCallback::from_redirect_url(&redirect)?;
        state.handle_callback_with_issuer(&callback.code, &callback.csrf_token, callback.issuer.as_deref()).await?;
        state
            .into_authorization_manager()
            .ok_or_else(|| OAuthError::Auth(AuthError::InternalError("the authorization did not complete".to_owned())))
    }

    /// Runs `call` with the current token; on a challenge, authorizes and runs it again.
    async fn send<T, F, Fut>(&self, call: F) -> Result<T, StreamableHttpError<reqwest::Error>>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<T, StreamableHttpError<reqwest::Error>>>,
    {
        let mut token = self.current_token().await?;
        loop {
            match call(token.clone()).await {
                Ok(value) => {
                    if token.is_some() {
                        self.shared.consecutive.store(0, Ordering::Relaxed);
                        self.set_failure(None);
                    }
                    return Ok(value);
                }
                Err(error) => {
                    let Some(challenge) = error.auth_challenge().map(str::to_owned) else {
                        return Err(error);
                    };
                    match self.answer_challenge(token.as_deref(), &challenge).await {
                        Ok(Some(fresh)) => token = Some(fresh),
                        Ok(None) => {
                            let refused = OAuthError::Refused(self.shared.consecutive.load(Ordering::Relaxed));
                            self.set_failure(Some(refused.to_string()));
                            return Err(error);
                        }
                        Err(e) => {
                            self.set_failure(Some(e.to_string()));
                            return Err(match e {
                                OAuthError::Auth(e) => StreamableHttpError::Auth(e),
                                e => StreamableHttpError::Auth(AuthError::AuthorizationFailed(e.to_string())),
                            });
                        }
                    }
                }
            }
        }
    }
}

/// The error an authorization server put in its redirect (`?error=access_denied&…`), if any.
fn redirect_error(redirect: &str) -> Option<OAuthError> {
    let url = reqwest::Url::parse(redirect).ok()?;
    let mut error = None;
    let mut description = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "error" => error = Some(value.into_owned()),
            "error_description" => description = Some(value.into_owned()),
            _ => {}
        }
    }
    error.map(|error| OAuthError::Denied { error, description })
}

impl StreamableHttpClient for OAuthHttpClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.send(|token| {
            self.http.post_message(uri.clone(), message.clone(), session_id.clone(), token, custom_headers.clone())
        })
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.send(|token| {
            self.http.post_message_with_max_sse_event_size(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.send(|token| {
            self.http.post_message_with_response_limits(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
                limits,
            )
        })
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.send(|token| self.http.delete_session(uri.clone(), session_id.clone(), token, custom_headers.clone()))
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.send(|token| {
            self.http.get_stream(uri.clone(), session_id.clone(), last_event_id.clone(), token, custom_headers.clone())
        })
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.send(|token| {
            self.http.get_stream_with_max_sse_event_size(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                token,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_client_secret() {
        let config = OAuthConfig::new("agent").preregistered("client-1", Some("s3cr3t-value".to_owned()));
        let client =
            OAuthHttpClient::new("http://127.0.0.1:9/mcp", config.clone(), Arc::new(HeadlessUserAgent::new().unwrap()));
        for shown in [format!("{config:?}"), format!("{client:?}")] {
            assert!(!shown.contains("s3cr3t-value"), "{shown}");
            assert!(shown.contains("client-1") && shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn at_least_one_authorization_is_allowed() {
        let config = OAuthConfig::new("agent").max_consecutive_authorizations(0);
        assert_eq!(config.max_consecutive_authorizations, 1);
    }

    #[tokio::test]
    async fn the_headless_agent_returns_the_redirect_location() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for reply in [
                "HTTP/1.1 302 Found\r\nLocation: http://localhost:3000/callback?code=c&state=s\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",
            ] {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        let agent = HeadlessUserAgent::new().unwrap();
        let url = format!("http://127.0.0.1:{port}/authorize");
        let redirect = agent.authorize(&url).await.unwrap();
        assert_eq!(redirect, "http://localhost:3000/callback?code=c&state=s");
        let Err(OAuthError::UserAgent(message)) = agent.authorize(&url).await else {
            panic!("a 200 without a redirect is an error")
        };
        assert!(message.contains("200 OK"), "{message}");
    }
}
