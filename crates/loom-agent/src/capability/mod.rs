//! Capabilities: named bundles of tools and instructions (files, web, shell, MCP, skills, remote
//! A2A agents) that an agent takes as one unit.

#[cfg(feature = "a2a")]
pub mod a2a;
mod files;
#[cfg(unix)]
mod shell;
mod skills;
#[cfg(feature = "web")]
pub mod web;

#[cfg(feature = "a2a")]
pub use a2a::{A2a, A2aError, a2a};
pub use files::{Files, files};
pub use loom_core::capability::{Capability, ToolSource};
#[cfg(unix)]
pub use shell::{BASE_ENV, Shell, ShellError, is_withheld};
pub use skills::{SKILL_FILE, Skill, SkillError, Skills};
#[cfg(feature = "web")]
pub use web::{Web, web};

/// The shell capability: the `bash` tool, running commands under `root` (see [`Shell`]).
///
/// ```
/// let agent = loom_agent::Agent::builder()
///     .model("echo")
///     .capability(loom_agent::capability::shell("."))
///     .build()?;
/// assert!(agent.tools().iter().any(|t| t.name == "bash"));
/// # Ok::<(), loom_agent::Error>(())
/// ```
#[cfg(unix)]
pub fn shell(root: impl Into<std::path::PathBuf>) -> Shell {
    Shell::new(root)
}

/// The skills capability: every subfolder of `dir` with a `SKILL.md` (see [`Skills`]). Fails with an
/// error naming the file when a `SKILL.md` is malformed, or when `dir` cannot be read.
pub fn skills(dir: impl AsRef<std::path::Path>) -> Result<Skills, SkillError> {
    Skills::load(dir)
}

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
