//! The user's side of the authorization-code flow: a [`UserAgent`] visits the authorization URL
//! and hands back the redirect ([`HeadlessUserAgent`] for servers that approve at once,
//! [`LoopbackUserAgent`] for a person with a browser).

use super::*;

/// The user's side of the authorization-code flow.
pub trait UserAgent: Send + Sync + 'static {
    /// Visits `authorization_url` and returns the URL the authorization server redirected back
    /// to (the redirect URI with `code`, `state` and possibly `iss`).
    fn authorize<'a>(&'a self, authorization_url: &'a str) -> BoxFuture<'a, Result<String, OAuthError>>;
}

/// A [`UserAgent`] without a user: it GETs the authorization URL without following redirects and
/// returns the `Location` the authorization server answered with.
#[derive(Debug, Clone)]
pub struct HeadlessUserAgent {
    http: reqwest::Client,
}

impl HeadlessUserAgent {
    /// A headless user agent with its own HTTP client (redirects not followed).
    pub fn new() -> Result<Self, OAuthError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OAuthError::UserAgent(format!("building the HTTP client: {e}")))?;
        Ok(Self { http })
    }
}

impl UserAgent for HeadlessUserAgent {
    fn authorize<'a>(&'a self, authorization_url: &'a str) -> BoxFuture<'a, Result<String, OAuthError>> {
        Box::pin(async move {
            let response = self
                .http
                .get(authorization_url)
                .send()
                .await
                .map_err(|e| OAuthError::UserAgent(format!("authorization request failed: {e}")))?;
            let status = response.status();
            response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| {
                    OAuthError::UserAgent(format!("the authorization endpoint answered {status} without a redirect"))
                })
        })
    }
}

/// The interactive [`UserAgent`] of a command-line program: listens on `127.0.0.1`, shows the
/// authorization URL (by default on stderr) for the user to open in a browser, and waits (at most
/// the timeout) for the authorization server's redirect to [`LoopbackUserAgent::redirect_uri`].
/// The browser gets a short page saying it can be closed. Give the same redirect URI to the
/// [`OAuthConfig`]: [`LoopbackUserAgent::configure`] does both.
pub struct LoopbackUserAgent {
    listener: std::net::TcpListener,
    redirect_uri: String,
    timeout: Duration,
    show: Box<dyn Fn(&str) + Send + Sync>,
}

impl fmt::Debug for LoopbackUserAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopbackUserAgent")
            .field("redirect_uri", &self.redirect_uri)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The path of [`LoopbackUserAgent`]'s redirect URI.
pub const LOOPBACK_CALLBACK_PATH: &str = "/callback";

impl LoopbackUserAgent {
    /// Listens on `127.0.0.1:port` (`0`: a free port) for the redirect, which must arrive within
    /// `timeout` of the authorization URL being shown.
    ///
    /// # Errors
    /// The port cannot be bound.
    pub fn bind(port: u16, timeout: Duration) -> Result<Self, OAuthError> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| OAuthError::UserAgent(format!("cannot listen on 127.0.0.1:{port} for the redirect: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| OAuthError::UserAgent(format!("the redirect listener has no address: {e}")))?
            .port();
        Ok(Self {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}{LOOPBACK_CALLBACK_PATH}"),
            timeout,
            show: Box::new(|url| {
                eprintln!("To authorize this MCP server, open this URL in a browser:\n  {url}");
            }),
        })
    }

    /// Shows the authorization URL with `show` instead of printing it on stderr.
    pub fn on_url(mut self, show: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.show = Box::new(show);
        self
    }

    /// The redirect URI this agent listens on (`http://127.0.0.1:PORT/callback`).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// `config` with this agent's redirect URI and this agent as its user agent.
    pub fn configure(self, config: OAuthConfig) -> OAuthConfig {
        config.redirect_uri(self.redirect_uri.clone()).user_agent(Arc::new(self))
    }

    async fn wait_for_redirect(&self) -> Result<String, OAuthError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cloned = self
            .listener
            .try_clone()
            .map_err(|e| OAuthError::UserAgent(format!("the redirect listener failed: {e}")))?;
        let listener = tokio::net::TcpListener::from_std(cloned)
            .map_err(|e| OAuthError::UserAgent(format!("the redirect listener failed: {e}")))?;
        loop {
            let (mut socket, _) = listener
                .accept()
                .await
                .map_err(|e| OAuthError::UserAgent(format!("the redirect listener failed: {e}")))?;
            // The request line is enough: `GET /callback?code=…&state=… HTTP/1.1`.
            let mut buf = vec![0u8; 8192];
            let mut len = 0;
            while len < buf.len() && !buf[..len].windows(2).any(|w| w == b"\r\n") {
                match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf[len..])).await {
                    Ok(Ok(n)) if n > 0 => len += n,
                    _ => break,
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let target = head
                .lines()
                .next()
                .and_then(|line| line.strip_prefix("GET "))
                .and_then(|rest| rest.split(' ').next())
                .filter(|target| target.split('?').next() == Some(LOOPBACK_CALLBACK_PATH))
                .map(str::to_owned);
            let (status, body) = match target {
                Some(_) => ("200 OK", "Authorization received: you can close this window."),
                None => ("404 Not Found", "Not found."),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = socket.shutdown().await;
            if let Some(target) = target {
                let base = self.redirect_uri.trim_end_matches(LOOPBACK_CALLBACK_PATH);
                return Ok(format!("{base}{target}"));
            }
        }
    }
}

impl UserAgent for LoopbackUserAgent {
    fn authorize<'a>(&'a self, authorization_url: &'a str) -> BoxFuture<'a, Result<String, OAuthError>> {
        Box::pin(async move {
            (self.show)(authorization_url);
            tokio::time::timeout(self.timeout, self.wait_for_redirect()).await.map_err(|_| {
                OAuthError::UserAgent(format!("no redirect reached {} within {:?}", self.redirect_uri, self.timeout))
            })?
        })
    }
}
