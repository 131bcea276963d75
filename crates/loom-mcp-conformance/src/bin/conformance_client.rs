//! The client the MCP conformance suite runs: `loom-mcp-conformance-client <server-url>` with the
//! scenario in `MCP_CONFORMANCE_SCENARIO` (and its context in `MCP_CONFORMANCE_CONTEXT`).
//! Exits 0 when the client side of the scenario completed, 1 (with the reason on stderr) if not.

use std::process::ExitCode;
use std::time::Duration;

use loom_mcp_conformance::scenarios::{self, Context};

/// Under the suite's own 30 s client timeout, so a hung scenario ends with our message.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);

#[tokio::main]
async fn main() -> ExitCode {
    let Some(server_url) = std::env::args().nth(1) else {
        eprintln!("usage: MCP_CONFORMANCE_SCENARIO=<scenario> loom-mcp-conformance-client <server-url>");
        return ExitCode::from(2);
    };
    let Ok(scenario) = std::env::var("MCP_CONFORMANCE_SCENARIO") else {
        eprintln!("MCP_CONFORMANCE_SCENARIO is not set");
        return ExitCode::from(2);
    };
    let timeout = std::env::var("LOOM_MCP_CONFORMANCE_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let context = match Context::parse(std::env::var("MCP_CONFORMANCE_CONTEXT").ok().as_deref()) {
        Ok(context) => context,
        Err(e) => {
            eprintln!("{scenario}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match scenarios::run(&scenario, &server_url, &context, timeout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{scenario}: {e}");
            ExitCode::FAILURE
        }
    }
}
