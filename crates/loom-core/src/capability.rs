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
    /// Tools that can change while the agent lives (an MCP server's list), on top of
    /// [`Capability::tools`]. `None` (the default) for a fixed set: the run path then never looks
    /// at it.
    fn tool_source(&self) -> Option<Arc<dyn ToolSource>> {
        None
    }
}

/// A set of tools that changes over time, loaded asynchronously (for example an MCP server's
/// tools, which need a connection and change on `notifications/tools/list_changed`).
///
/// Before each model turn the runtime reads [`ToolSource::generation`]; when it differs from the
/// generation of the tools the run holds, it calls [`ToolSource::load`] and offers the new set
/// from that turn on. The first turn of the first run always loads.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use loom_core::capability::ToolSource;
/// use loom_core::tool::{FunctionTool, Tool, ToolOutput};
///
/// struct Growing(AtomicU64);
///
/// #[async_trait::async_trait]
/// impl ToolSource for Growing {
///     fn generation(&self) -> u64 { self.0.load(Ordering::Acquire) }
///     async fn load(&self) -> Result<Vec<Arc<dyn Tool>>, String> {
///         let n = self.generation();
///         let schema = serde_json::json!({"type": "object"});
///         Ok((0..=n).map(|i| Arc::new(FunctionTool::new(format!("t{i}"), "a tool", schema.clone(),
///             |_ctx, _args| async { Ok(ToolOutput::text("ok")) })) as Arc<dyn Tool>).collect())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait ToolSource: Send + Sync + 'static {
    /// A number that changes whenever the tools may have changed. Read before every model turn:
    /// it must be cheap (an atomic load).
    fn generation(&self) -> u64;

    /// The current tools. Called when the generation changed (and once at first use); it may
    /// connect to a server. An error on the first load fails the run (kind `config`) with the
    /// message; on a later load the run keeps the tools it had.
    async fn load(&self) -> Result<Vec<Arc<dyn Tool>>, String>;
}
