//! Capabilities: named bundles of tools and instructions (files, web, shell, MCP, skills) that an
//! agent takes as one unit.

mod files;

use std::sync::Arc;

pub use files::Files;

use crate::tool::Tool;

/// A bundle of tools with the instructions that explain them. The agent registers the tools and
/// appends the instructions to its own when it is built.
pub trait Capability: Send + Sync + 'static {
    /// The capability's name.
    fn name(&self) -> &str;

    /// The tools it provides.
    fn tools(&self) -> Vec<Arc<dyn Tool>>;

    /// Instructions added to the agent's instructions.
    fn instructions(&self) -> Option<String> {
        None
    }
}
