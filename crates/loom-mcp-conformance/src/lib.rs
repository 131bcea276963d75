//! Loom's MCP client under the official MCP conformance suite.
//!
//! The `loom-mcp-conformance-client` binary is the `--command` of
//! `npx @modelcontextprotocol/conformance client`: the suite starts a test server per scenario,
//! runs the binary with the server's URL as its last argument and the scenario's name in
//! `MCP_CONFORMANCE_SCENARIO` (and, for some scenarios, JSON in `MCP_CONFORMANCE_CONTEXT`), and
//! judges what the client did. [`scenarios::run`] is that client (on `loom-mcp`, every scenario
//! through `McpServer`; the `auth/*` scenarios through `McpServer::oauth`), and [`elicitation`] holds the SEP-1034 defaults.
//!
//! `.ci/mcp-conformance` installs the suite and runs every client scenario of spec 2025-11-25.

pub mod elicitation;
pub mod scenarios;
