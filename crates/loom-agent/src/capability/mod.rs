//! Capabilities: named bundles of tools and instructions (files, web, shell, MCP, skills) that an
//! agent takes as one unit.

mod files;

pub use files::Files;
pub use loom_core::capability::{Capability, ToolSource};

/// MCP servers as capabilities (the `loom-mcp` crate, feature `mcp`): their tools become the
/// agent's tools, named `SERVER__TOOL`.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use loom_agent::capability::mcp;
///
/// let fs = mcp::stdio("npx", ["-y", "@modelcontextprotocol/server-everything"]).name("everything");
/// fs.connect().await?; // errors now rather than at the first run
/// let agent = loom_agent::Agent::builder().model("ollama:qwen3").capability(fs).build()?;
/// # let _ = agent; Ok(()) }
/// ```
#[cfg(feature = "mcp")]
pub mod mcp {
    pub use loom_mcp::*;
}
