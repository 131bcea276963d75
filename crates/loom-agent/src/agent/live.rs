//! A live agent: tools and hooks added or removed after `build()`, on every clone of the agent.
//!
//! Each change takes effect for runs that start afterwards; a run in flight keeps the tools and
//! hooks it started with. The change is copy-on-write (`runtime/live.rs`): the run path reads the
//! current set with one atomic load and takes no lock.

use std::sync::Arc;

use super::Agent;
use crate::error::Error;
use crate::governance::Hooks;
use crate::runtime::live;
use crate::tool::IntoTool;

impl Agent {
    /// Adds a tool, for runs that start from now on (on this agent and every clone of it).
    ///
    /// ```
    /// use loom_agent::prelude::*;
    ///
    /// /// Adds two numbers.
    /// #[tool]
    /// async fn add(a: i64, b: i64) -> Result<String, ToolError> {
    ///     Ok((a + b).to_string())
    /// }
    ///
    /// # fn main() -> Result<(), loom_agent::Error> {
    /// let agent = Agent::builder().model("echo").build()?;
    /// agent.add_tool(add)?;
    /// assert_eq!(agent.tools()[0].name, "add");
    /// assert!(agent.remove_tool("add")?);
    /// assert!(agent.tools().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when the name is invalid or taken, or the parameters schema is invalid;
    /// the agent's tools are then unchanged.
    pub fn add_tool(&self, tool: impl IntoTool) -> Result<(), Error> {
        live::add_tool(&self.inner.env.live, tool.into_tool())
    }

    /// Removes the tool `name`, for runs that start from now on; `Ok(false)` when the agent has
    /// no such tool. Tools of a capability whose tools change (an MCP server) come from that
    /// capability and are not removed here.
    ///
    /// # Errors
    /// [`Error::Config`] when the remaining tools cannot be registered with the tool sources'
    /// current tools (never for agents without tool sources).
    pub fn remove_tool(&self, name: &str) -> Result<bool, Error> {
        live::remove_tool(&self.inner.env.live, name)
    }

    /// Adds hooks after the agent's others, for runs that start from now on.
    pub fn add_hook(&self, hooks: impl Hooks) {
        live::add_hook(&self.inner.env.live, Arc::new(hooks));
    }
}
