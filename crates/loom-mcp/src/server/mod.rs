//! One MCP server: its configuration (the builder), its connection (made on `connect()` or at
//! first use, made again after the server died), and its tools as a Loom [`ToolSource`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use loom_core::capability::{Capability, ToolSource};
use loom_core::tool::{CancellationToken, Tool, ToolError, ToolErrorKind};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult,
    ElicitationAction, ElicitationCapability, FormElicitationCapability, GetPromptRequestParams, GetPromptResult,
    Implementation, JsonRpcMessage, Prompt, ProtocolVersion, ReadResourceRequestParams, ReadResourceResult, Resource,
    ServerNotification,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, RequestContext, RunningService, ServiceError};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, Transport};
use rmcp::{ClientHandler, RoleClient};

use crate::elicitation::{self, ElicitationAnswer, ElicitationFn, ElicitationRequest};
use crate::error::McpError;
#[cfg(feature = "oauth")]
use crate::oauth::{OAuthConfig, OAuthHttpClient};
use crate::stdio::{self, ProcessGuard, StderrTail, StdioSpec};
use crate::tool::McpTool;

mod connection;

use connection::{Handler, Live, Source};

/// The outcome of a handshake within its timeout.
type Served = Result<
    Result<RunningService<RoleClient, Handler>, rmcp::service::ClientInitializeError>,
    tokio::time::error::Elapsed,
>;

/// The default time a server has to complete the handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Endpoint {
    Stdio(StdioSpec),
    Http {
        url: String,
        bearer: Option<String>,
        headers: Vec<(String, String)>,
        #[cfg(feature = "oauth")]
        oauth: Option<OAuthConfig>,
    },
}

/// Everything a server value is configured with.
#[derive(Clone)]
struct Config {
    name: Option<String>,
    endpoint: Endpoint,
    allow: Option<Vec<String>>,
    deny: Vec<String>,
    call_timeout: Option<Duration>,
    handshake_timeout: Duration,
    elicitation: Option<ElicitationFn>,
}

// Keys, tokens and header values never reach Debug output.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("McpServer");
        d.field("name", &self.name);
        match &self.endpoint {
            Endpoint::Stdio(spec) => {
                let env: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
                d.field("command", &spec.command).field("args", &spec.args).field("env", &env);
            }
            Endpoint::Http { url, bearer, headers, .. } => {
                let headers: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
                d.field("url", url).field("bearer", &bearer.as_ref().map(|_| "<redacted>")).field("headers", &headers);
                #[cfg(feature = "oauth")]
                if let Endpoint::Http { oauth, .. } = &self.endpoint {
                    d.field("oauth", oauth);
                }
            }
        }
        d.field("allow", &self.allow)
            .field("deny", &self.deny)
            .field("call_timeout", &self.call_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("elicitation", &self.elicitation.is_some())
            .finish()
    }
}

/// An MCP server as a Loom capability: its tools become the agent's tools, named
/// `SERVER__TOOL`. Made by [`crate::stdio`] or [`crate::http`], configured with the builder
/// methods, then given to `AgentBuilder::capability`.
///
/// The connection is made by [`McpServer::connect`] (so errors show before the agent is built) or
/// at the first run's first model turn. A server that dies is started (or reconnected) again on
/// the next call. The child process of a stdio server is killed, with its process group, when the
/// last clone of this value (the agent's and its tools') is dropped.
///
/// The builder methods return a new, unconnected server: configure before connecting.
#[derive(Clone)]
pub struct McpServer {
    shared: Arc<Shared>,
}

impl fmt::Debug for McpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.config.fmt(f)
    }
}

pub(crate) struct Shared {
    name: String,
    config: Config,
    /// The OAuth client of an HTTP server with `.oauth(..)`, shared by all its connections (so
    /// tokens outlive reconnections), or why it could not be made.
    #[cfg(feature = "oauth")]
    oauth: Option<Result<OAuthHttpClient, String>>,
    /// Moves on `notifications/tools/list_changed` and on reconnection.
    generation: Arc<AtomicU64>,
    conn: tokio::sync::Mutex<Option<Arc<Live>>>,
}

/// A valid server or tool name part: `[A-Za-z0-9_-]`, other characters replaced by `_`.
pub(crate) fn sanitize(raw: &str) -> String {
    let s: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() { "mcp".to_string() } else { s }
}

/// The default name of a stdio server: the package or script a launcher runs
/// (`npx -y @scope/server-x@1` → `server-x`), else the command's file name.
fn default_stdio_name(command: &str, args: &[String]) -> String {
    let base = |s: &str| -> String {
        let s = s.rsplit(['/', '\\']).next().unwrap_or(s);
        // `server-x@1.2` → `server-x`; `@scope/x` was cut at the slash above.
        let s = match s.find('@') {
            Some(0) | None => s,
            Some(i) => &s[..i],
        };
        let s = s.strip_suffix(".js").or_else(|| s.strip_suffix(".py")).unwrap_or(s);
        sanitize(s)
    };
    let launcher = matches!(
        base(command).as_str(),
        "npx" | "node" | "uvx" | "uv" | "python" | "python3" | "bunx" | "bun" | "deno" | "pnpm" | "yarn" | "pipx"
    );
    if launcher && let Some(arg) = args.iter().find(|a| !a.starts_with('-') && *a != "run" && *a != "dlx") {
        return base(arg);
    }
    base(command)
}

fn default_http_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = host_port.rsplit('@').next().unwrap_or(host_port);
    let host = if host_port.starts_with('[') {
        host_port.split(']').next().unwrap_or(host_port).trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    sanitize(host)
}

impl McpServer {
    fn from_config(config: Config) -> Self {
        let name = match &config.name {
            Some(n) => sanitize(n),
            None => match &config.endpoint {
                Endpoint::Stdio(spec) => default_stdio_name(&spec.command, &spec.args),
                Endpoint::Http { url, .. } => default_http_name(url),
            },
        };
        #[cfg(feature = "oauth")]
        let oauth = match &config.endpoint {
            Endpoint::Http { url, oauth: Some(oauth), .. } => {
                Some(OAuthHttpClient::from_config(url.clone(), oauth.clone()).map_err(|e| e.to_string()))
            }
            _ => None,
        };
        McpServer {
            shared: Arc::new(Shared {
                name,
                config,
                #[cfg(feature = "oauth")]
                oauth,
                generation: Arc::new(AtomicU64::new(0)),
                conn: tokio::sync::Mutex::new(None),
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.shared.config.clone();
        f(&mut config);
        McpServer::from_config(config)
    }

    pub(crate) fn new_stdio(command: String, args: Vec<String>) -> Self {
        McpServer::from_config(Config {
            name: None,
            endpoint: Endpoint::Stdio(StdioSpec { command, args, env: Vec::new(), cwd: None }),
            allow: None,
            deny: Vec::new(),
            call_timeout: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            elicitation: None,
        })
    }

    pub(crate) fn new_http(url: String) -> Self {
        McpServer::from_config(Config {
            name: None,
            endpoint: Endpoint::Http {
                url,
                bearer: None,
                headers: Vec::new(),
                #[cfg(feature = "oauth")]
                oauth: None,
            },
            allow: None,
            deny: Vec::new(),
            call_timeout: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            elicitation: None,
        })
    }

    /// Names the server: its tools are called `NAME__TOOL`. Characters outside `[A-Za-z0-9_-]`
    /// become `_`. The default is the package a launcher runs (`npx -y @scope/server-x` →
    /// `server-x`), the command's file name, or the URL's host.
    pub fn name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.with(|c| c.name = Some(name))
    }

    /// Sets a variable in a stdio server's environment (which otherwise holds only `PATH`, `HOME`,
    /// `LANG`, `TERM`, `TZ` and `USER` from this process). Ignored for HTTP servers.
    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.with(|c| {
            if let Endpoint::Stdio(spec) = &mut c.endpoint {
                spec.env.retain(|(k, _)| *k != key);
                spec.env.push((key, value));
            }
        })
    }

    /// Passes a variable of this process, when set, to a stdio server by name.
    pub fn inherit_env(self, key: impl Into<String>) -> Self {
        let key = key.into();
        match std::env::var(&key) {
            Ok(value) => self.env(key, value),
            Err(_) => self,
        }
    }

    /// The working directory of a stdio server.
    pub fn current_dir(self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        self.with(|c| {
            if let Endpoint::Stdio(spec) = &mut c.endpoint {
                spec.cwd = Some(dir);
            }
        })
    }

    /// Sends `Authorization: Bearer TOKEN` to an HTTP server. The token is never logged or shown.
    pub fn bearer(self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.with(|c| {
            if let Endpoint::Http { bearer, .. } = &mut c.endpoint {
                *bearer = Some(token);
            }
        })
    }

    /// Authorizes with OAuth 2.1 when the HTTP server asks for it: a `401` (or
    /// `403 insufficient_scope`) with a `WWW-Authenticate` challenge runs the authorization-code
    /// flow with PKCE (metadata discovery, client registration, the config's user agent for the
    /// user's part) and the request is sent again with the token. The token is reused by every
    /// later request and reconnection, refreshed when it expires, and kept in the config's
    /// [`TokenStore`](crate::oauth::TokenStore). It replaces [`McpServer::bearer`]. A failed
    /// authorization is an [`McpError::Authorization`]. Ignored for stdio servers.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), loom_mcp::oauth::OAuthError> {
    /// use std::time::Duration;
    /// use loom_mcp::oauth::{LoopbackUserAgent, OAuthConfig};
    ///
    /// let browser = LoopbackUserAgent::bind(0, Duration::from_secs(300))?;
    /// let config = browser.configure(OAuthConfig::new("my-agent").scopes(["mcp:tools"]));
    /// let server = loom_mcp::http("https://mcp.example.com/mcp").oauth(config);
    /// # let _ = server; Ok(()) }
    /// ```
    #[cfg(feature = "oauth")]
    pub fn oauth(self, config: OAuthConfig) -> Self {
        self.with(|c| {
            if let Endpoint::Http { oauth, .. } = &mut c.endpoint {
                *oauth = Some(config);
            }
        })
    }

    /// Sends a header with every request to an HTTP server. Values are never logged or shown.
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        self.with(|c| {
            if let Endpoint::Http { headers, .. } = &mut c.endpoint {
                headers.push((name, value));
            }
        })
    }

    /// Offers only these of the server's tools (by the server's own names; a trailing `*`
    /// matches a prefix).
    pub fn allow_tools<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        self.with(|c| c.allow = Some(names))
    }

    /// Never offers these of the server's tools (by the server's own names; a trailing `*`
    /// matches a prefix). Deny wins over allow.
    pub fn deny_tools<I, S>(self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        self.with(|c| c.deny.extend(names))
    }

    /// How long one tool call may take; past it the call is cancelled on the server
    /// (`notifications/cancelled`) and the model reads a timeout error. The agent's tool timeout
    /// applies when unset.
    pub fn call_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.call_timeout = Some(timeout))
    }

    /// How long the server has to answer the handshake (default 30 s). A stdio server that does
    /// not is killed, and the error shows the end of its stderr.
    pub fn handshake_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.handshake_timeout = timeout)
    }

    /// Answers the server's elicitation requests (form mode: a message and a JSON Schema of simple
    /// fields) with this callback, and advertises the capability. Without it the client does not
    /// advertise elicitation and declines any request; URL-mode requests are always declined.
    ///
    /// ```
    /// use loom_mcp::{ElicitationAnswer, ElicitationRequest};
    /// let server = loom_mcp::stdio("my-server", Vec::<String>::new()).elicitation(|request: ElicitationRequest| async move {
    ///     eprintln!("{} asks: {}", request.server, request.message);
    ///     ElicitationAnswer::Decline
    /// });
    /// ```
    pub fn elicitation<F, Fut>(self, callback: F) -> Self
    where
        F: Fn(ElicitationRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ElicitationAnswer> + Send + 'static,
    {
        let callback = elicitation::boxed(callback);
        self.with(|c| c.elicitation = Some(callback))
    }

    /// The server's name, the prefix of its tools.
    pub fn server_name(&self) -> &str {
        &self.shared.name
    }

    /// Whether the server is reached over Streamable HTTP (not a stdio child process).
    pub fn is_http(&self) -> bool {
        matches!(self.shared.config.endpoint, Endpoint::Http { .. })
    }

    /// Connects now (starting the process of a stdio server) and returns the client. Without it
    /// the agent connects at its first run's first model turn.
    ///
    /// # Errors
    /// The process cannot start, the handshake fails or times out ([`McpError`], with the tail
    /// of the server's stderr).
    pub async fn connect(&self) -> Result<McpClient, McpError> {
        self.shared.live().await?;
        Ok(McpClient { shared: self.shared.clone() })
    }

    /// The client of this server, connecting on first use.
    pub fn client(&self) -> McpClient {
        McpClient { shared: self.shared.clone() }
    }
}

impl Capability for McpServer {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        // All of them come from the tool source, which lists them once connected.
        Vec::new()
    }

    fn tool_source(&self) -> Option<Arc<dyn ToolSource>> {
        Some(Arc::new(Source(self.shared.clone())))
    }
}

/// A handle on a server's connection: the MCP requests themselves (tools, resources, prompts).
/// Clones share the connection with the [`McpServer`] it came from.
#[derive(Clone)]
pub struct McpClient {
    shared: Arc<Shared>,
}

impl fmt::Debug for McpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpClient").field("server", &self.shared.name).finish_non_exhaustive()
    }
}

impl Capability for McpClient {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        Vec::new()
    }

    fn tool_source(&self) -> Option<Arc<dyn ToolSource>> {
        Some(Arc::new(Source(self.shared.clone())))
    }
}

impl McpClient {
    /// The server's name, the prefix of its tools.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The protocol revision agreed with the server (`2026-07-28` when it answers
    /// `server/discover`, else the `initialize` handshake's `2025-11-25` or older).
    ///
    /// # Errors
    /// As [`McpServer::connect`].
    pub async fn protocol_version(&self) -> Result<String, McpError> {
        let live = self.shared.live().await?;
        Ok(live.service.peer().peer_info().map(|i| i.protocol_version.to_string()).unwrap_or_default())
    }

    /// The server's name and version as it reports them.
    ///
    /// # Errors
    /// As [`McpServer::connect`].
    pub async fn server_info(&self) -> Result<Option<Implementation>, McpError> {
        let live = self.shared.live().await?;
        Ok(live.service.peer().peer_info().and_then(|i| i.server_info.clone()))
    }

    /// The process id of a stdio server (its process group id too), when running.
    pub async fn process_id(&self) -> Option<u32> {
        let conn = self.shared.conn.lock().await;
        let live = conn.as_ref()?;
        let process = live.process.as_ref()?;
        process.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// The end of what the current (or last) server process wrote to stderr (at most about
    /// 2 KiB; empty for HTTP servers).
    pub async fn stderr_tail(&self) -> String {
        let conn = self.shared.conn.lock().await;
        conn.as_ref().map(|live| live.stderr.tail()).unwrap_or_default()
    }

    /// The tools offered to an agent, after the allow and deny filters, named `SERVER__TOOL`.
    ///
    /// # Errors
    /// As [`McpServer::connect`], or the listing fails.
    pub async fn tools(&self) -> Result<Vec<Arc<dyn Tool>>, McpError> {
        self.shared.list_tools().await
    }

    /// Increases whenever the server's tool list changed (`notifications/tools/list_changed`)
    /// or the connection was made again.
    pub fn tools_generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// Calls a tool by the server's own name and returns the raw result.
    ///
    /// # Errors
    /// As [`McpServer::connect`], or the call fails.
    pub async fn call_tool(&self, name: &str, arguments: serde_json::Value) -> Result<CallToolResult, McpError> {
        let live = self.shared.live().await?;
        let mut params = CallToolRequestParams::new(name.to_string());
        if let serde_json::Value::Object(map) = arguments {
            params = params.with_arguments(map);
        }
        live.service.call_tool(params).await.map_err(|e| self.shared.request_error(&live, e))
    }

    /// The server's resources (all pages).
    ///
    /// # Errors
    /// As [`McpServer::connect`], or the request fails.
    pub async fn list_resources(&self) -> Result<Vec<Resource>, McpError> {
        let live = self.shared.live().await?;
        live.service.peer().list_all_resources().await.map_err(|e| self.shared.request_error(&live, e))
    }

    /// Reads a resource.
    ///
    /// # Errors
    /// As [`McpServer::connect`], or the request fails (an unknown URI, say).
    pub async fn read_resource(&self, uri: &str) -> Result<ReadResourceResult, McpError> {
        let live = self.shared.live().await?;
        live.service
            .read_resource(ReadResourceRequestParams::new(uri))
            .await
            .map_err(|e| self.shared.request_error(&live, e))
    }

    /// The server's prompts (all pages).
    ///
    /// # Errors
    /// As [`McpServer::connect`], or the request fails.
    pub async fn list_prompts(&self) -> Result<Vec<Prompt>, McpError> {
        let live = self.shared.live().await?;
        live.service.peer().list_all_prompts().await.map_err(|e| self.shared.request_error(&live, e))
    }

    /// Gets a prompt with its arguments (a JSON object of strings).
    ///
    /// # Errors
    /// As [`McpServer::connect`], or the request fails (an unknown prompt, missing arguments).
    pub async fn get_prompt(&self, name: &str, arguments: serde_json::Value) -> Result<GetPromptResult, McpError> {
        let live = self.shared.live().await?;
        let mut params = GetPromptRequestParams::new(name);
        if let serde_json::Value::Object(map) = arguments {
            params = params.with_arguments(map);
        }
        live.service.get_prompt(params).await.map_err(|e| self.shared.request_error(&live, e))
    }
}

/// The innermost cause of an error (`Connection refused`, not the transport's type names).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            default_stdio_name("npx", &args(&["-y", "@modelcontextprotocol/server-everything@2026.8.31"])),
            "server-everything"
        );
        assert_eq!(default_stdio_name("/usr/bin/node", &args(&["/x/dist/index.js", "stdio"])), "index");
        assert_eq!(default_stdio_name("uvx", &args(&["mcp-server-git"])), "mcp-server-git");
        assert_eq!(default_stdio_name("/opt/my.server", &args(&[])), "my_server");
        assert_eq!(default_http_name("http://127.0.0.1:3001/mcp"), "127_0_0_1");
        assert_eq!(default_http_name("https://user@mcp.example.com/x"), "mcp_example_com");
        assert_eq!(default_http_name("http://[::1]:80/mcp"), "1");
        assert_eq!(sanitize("a b/c"), "a_b_c");
        assert_eq!(sanitize("///"), "mcp");
    }

    #[test]
    fn filters() {
        let s = McpServer::new_stdio("x".into(), vec![]).allow_tools(["get-*", "echo"]).deny_tools(["get-env"]);
        assert!(s.shared.offered("echo"));
        assert!(s.shared.offered("get-sum"));
        assert!(!s.shared.offered("get-env"));
        assert!(!s.shared.offered("add"));
    }

    #[test]
    fn debug_hides_secrets() {
        let s = McpServer::new_http("http://h/mcp".into()).bearer("sekrit-token").header("X-Key", "sekrit-header");
        let shown = format!("{s:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("X-Key"));
        let s = McpServer::new_stdio("x".into(), vec![]).env("OPENAI_API_KEY", "sekrit-env");
        assert!(!format!("{s:?}").contains("sekrit"));
    }
}
