//! The capability protocol: a named bundle of tools and instructions.

use std::sync::Arc;

use crate::governance::Hooks;
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

    /// Hooks the capability needs around its tools (the skills capability uses one to keep the
    /// model to a skill's allowed tools). The agent adds them when it is built, after the hooks
    /// given to the builder.
    fn hooks(&self) -> Option<Arc<dyn Hooks>> {
        None
    }
}
