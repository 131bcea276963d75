//! Loom's MCP client: [Model Context Protocol](https://modelcontextprotocol.io) servers as agent
//! capabilities, on the official Rust SDK (`rmcp`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//!
//! let everything = loom_mcp::stdio("npx", ["-y", "@modelcontextprotocol/server-everything"])
//!     .name("everything")
//!     .deny_tools(["get-env"])
//!     .call_timeout(Duration::from_secs(30));
//! let client = everything.connect().await?; // errors here, not at the first run
//! println!("{} speaks MCP {}", client.name(), client.protocol_version().await?);
//! for resource in client.list_resources().await? {
//!     println!("{}", resource.uri);
//! }
//! // `everything` (or `client`) is a `Capability`: `AgentBuilder::capability(everything)`.
//! let remote = loom_mcp::http("https://mcp.example.com/mcp").bearer("token").name("remote");
//! # let _ = remote; Ok(()) }
//! ```
//!
//! What it does:
//! - **Transports.** stdio: a child process with a scrubbed environment (only
//!   [`INHERITED_ENV`] from this process, plus what `.env(..)` gives), in its own process group,
//!   killed with the group when the last handle is dropped; its stderr kept in a bounded ring
//!   buffer whose tail ends every error. Streamable HTTP, with a bearer token and custom headers,
//!   or OAuth 2.1 where the server asks for it ([`McpServer::oauth`], feature `oauth`, on by
//!   default: see [`oauth`]).
//! - **Protocol.** `server/discover` with revision 2026-07-28 is tried first; a server that answers
//!   it with an error (every 2025 server) gets the `initialize` handshake with 2025-11-25. The
//!   whole handshake has a timeout ([`McpServer::handshake_timeout`], 30 s by default).
//! - **Tools.** Named `SERVER__TOOL`; schemas as the server gives them; annotations as flags (see
//!   [`flags_for`]); results as text (see [`result_text`]); `isError: true` as a tool error the
//!   model reads. A run's cancellation or the call timeout cancels the request on the server
//!   (`notifications/cancelled`). `notifications/tools/list_changed` makes the agent load the
//!   tools again before its next model turn. A server that dies makes the call fail with a clear
//!   error; the next call starts it again.
//! - **Resources and prompts** through [`McpClient`] (not offered to the model as tools).
//! - **Elicitation** is answered by the callback given to [`McpServer::elicitation`]; without
//!   one it is not advertised and a server that asks anyway is declined.

mod elicitation;
mod error;
#[cfg(feature = "oauth")]
pub mod oauth;
mod server;
mod stdio;
mod tool;

pub use elicitation::{ElicitationAnswer, ElicitationRequest};
pub use error::McpError;
pub use server::{DEFAULT_HANDSHAKE_TIMEOUT, McpClient, McpServer};
pub use stdio::INHERITED_ENV;
pub use tool::{SEPARATOR, flags_for, result_text};

/// The MCP data types (tools, resources, prompts, results), from `rmcp`.
pub use rmcp::model;

/// A server run as a child process speaking MCP over stdin and stdout.
pub fn stdio<I, S>(command: impl Into<String>, args: I) -> McpServer
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    McpServer::new_stdio(command.into(), args.into_iter().map(Into::into).collect())
}

/// A server reached over Streamable HTTP at `url` (for example `http://127.0.0.1:3001/mcp`).
pub fn http(url: impl Into<String>) -> McpServer {
    McpServer::new_http(url.into())
}

/// A server from a command-line spec: `[NAME=]URL` (`http://` or `https://`) or
/// `[NAME=]COMMAND ARGS…`, the command split as a POSIX shell would (quotes, escapes).
///
/// ```
/// let s = loom_mcp::parse("fs=npx -y '@modelcontextprotocol/server-filesystem' /tmp").unwrap();
/// assert_eq!(s.server_name(), "fs");
/// let h = loom_mcp::parse("http://127.0.0.1:3001/mcp").unwrap();
/// assert_eq!(h.server_name(), "127_0_0_1");
/// ```
///
/// # Errors
/// An empty spec or command, or unbalanced quotes.
pub fn parse(spec: &str) -> Result<McpServer, McpError> {
    let spec = spec.trim();
    let bad = |message: String| McpError::Config { server: spec.to_string(), message };
    // `name=` only when what precedes `=` is a plain name (a command or URL may hold `=` too).
    let (name, rest) = match spec.split_once('=') {
        Some((n, rest)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {
            (Some(n), rest.trim())
        }
        _ => (None, spec),
    };
    let server = if rest.starts_with("http://") || rest.starts_with("https://") {
        http(rest)
    } else {
        let words = shlex::split(rest).ok_or_else(|| bad("unbalanced quotes in the command".to_string()))?;
        let mut words = words.into_iter();
        let command = words.next().ok_or_else(|| bad("no command or URL given".to_string()))?;
        stdio(command, words)
    };
    Ok(match name {
        Some(n) => server.name(n),
        None => server,
    })
}
