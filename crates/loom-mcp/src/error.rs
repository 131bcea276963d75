//! The errors of the MCP client.

use std::time::Duration;

/// What can go wrong talking to an MCP server. Messages name the server and, for a child process,
/// end with the tail of what it wrote to stderr.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The configuration cannot work (an empty command, a bad URL or header).
    #[error("MCP server `{server}`: {message}")]
    Config {
        /// The server's name.
        server: String,
        /// What is wrong.
        message: String,
    },
    /// The server process could not be started.
    #[error("MCP server `{server}`: cannot start `{command}`: {message}")]
    Spawn {
        /// The server's name.
        server: String,
        /// The command.
        command: String,
        /// The operating system's error.
        message: String,
    },
    /// The server did not complete the handshake within the handshake timeout.
    #[error("MCP server `{server}` did not answer the handshake within {timeout:?}{}", tail(stderr))]
    HandshakeTimeout {
        /// The server's name.
        server: String,
        /// The timeout.
        timeout: Duration,
        /// The tail of the server's stderr (empty when there is none).
        stderr: String,
    },
    /// The handshake failed (the server exited, refused the protocol, or the HTTP request failed).
    #[error("MCP server `{server}`: the handshake failed: {message}{}", tail(stderr))]
    Handshake {
        /// The server's name.
        server: String,
        /// What failed.
        message: String,
        /// The tail of the server's stderr (empty when there is none).
        stderr: String,
    },
    /// The OAuth authorization the server asked for failed (the user or the authorization server
    /// refused, no redirect came back in time, discovery or the token exchange failed, or the
    /// server kept refusing the token). The message holds no token or secret.
    #[error("MCP server `{server}`: OAuth authorization failed: {message}")]
    Authorization {
        /// The server's name.
        server: String,
        /// Why.
        message: String,
    },
    /// A request failed after the connection was made.
    #[error("MCP server `{server}`: {message}{}", tail(stderr))]
    Request {
        /// The server's name.
        server: String,
        /// What failed.
        message: String,
        /// The tail of the server's stderr (empty when there is none).
        stderr: String,
    },
}

fn tail(stderr: &str) -> String {
    if stderr.trim().is_empty() { String::new() } else { format!("; its stderr ends with:\n{}", stderr.trim_end()) }
}
