//! Tools: the [`Tool`] trait, the context a call receives, what a call returns, and a closure-based
//! [`FunctionTool`]. Most tools are written with the `#[tool]` attribute (in `loom-agent`) instead.

mod output;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use tokio_util::sync::CancellationToken;

pub use output::{IntoToolOutput, IntoToolResult, Json, ToolOutput};

pub use crate::error::{ToolError, ToolErrorKind};
use crate::run::{Artifact, Scope};

/// A tool the model can call.
///
/// Implement it directly for tools with a dynamic schema; for typed functions use the
/// `#[tool]` attribute (in `loom-agent`), which implements it for you.
///
/// ```
/// use loom_core::tool::{Tool, ToolContext, ToolError, ToolFlags, ToolOutput};
/// use serde_json::{json, Value};
///
/// struct Clock;
///
/// #[async_trait::async_trait]
/// impl Tool for Clock {
///     fn name(&self) -> &str { "clock" }
///     fn description(&self) -> &str { "The current UTC time." }
///     fn parameters(&self) -> Value { json!({"type": "object", "properties": {}}) }
///     fn flags(&self) -> ToolFlags { ToolFlags::new().read_only().concurrency_safe() }
///     async fn call(&self, _ctx: ToolContext, _args: Value) -> Result<ToolOutput, ToolError> {
///         Ok(ToolOutput::text("12:00"))
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Tool: Send + Sync + 'static {
    /// The name the model calls it by: letters, digits, `_` and `-`, at most 64 characters.
    fn name(&self) -> &str;

    /// What the tool does, for the model.
    fn description(&self) -> &str;

    /// The JSON Schema of the arguments object.
    fn parameters(&self) -> serde_json::Value;

    /// Behaviour flags the runtime enforces.
    fn flags(&self) -> ToolFlags {
        ToolFlags::default()
    }

    /// How long one call may take; the agent's default when `None`.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs the tool. `args` has already been checked against [`Tool::parameters`].
    async fn call(&self, ctx: ToolContext, args: serde_json::Value) -> Result<ToolOutput, ToolError>;
}

/// Behaviour flags of a tool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ToolFlags {
    /// The tool changes nothing. A resumed run runs such a call again when its result was not
    /// recorded (running it twice has no effect to repeat).
    #[serde(default)]
    pub read_only: bool,
    /// The tool may destroy data; it needs approval before it runs.
    #[serde(default)]
    pub destructive: bool,
    /// Calls may run at the same time as other concurrency-safe calls of the same turn.
    #[serde(default)]
    pub concurrency_safe: bool,
    /// The tool needs approval before it runs.
    #[serde(default)]
    pub requires_permission: bool,
    /// Running the tool twice with the same arguments has the effect of running it once. A
    /// resumed run runs such a call again when its result was not recorded.
    #[serde(default)]
    pub idempotent: bool,
    /// A resumed run may run this call again when it started before the process died and its
    /// result was not recorded (without this, `idempotent` or `read_only`, such a run fails as
    /// ambiguous).
    #[serde(default)]
    pub rerun_on_resume: bool,
}

impl ToolFlags {
    /// No flags set.
    pub const fn new() -> Self {
        ToolFlags {
            read_only: false,
            destructive: false,
            concurrency_safe: false,
            requires_permission: false,
            idempotent: false,
            rerun_on_resume: false,
        }
    }

    /// Marks the tool read-only.
    pub const fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Marks the tool destructive.
    pub const fn destructive(mut self) -> Self {
        self.destructive = true;
        self
    }

    /// Marks the tool safe to run concurrently.
    pub const fn concurrency_safe(mut self) -> Self {
        self.concurrency_safe = true;
        self
    }

    /// Marks the tool as needing approval.
    pub const fn requires_permission(mut self) -> Self {
        self.requires_permission = true;
        self
    }

    /// Marks the tool idempotent.
    pub const fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Lets a resumed run run an unfinished call of this tool again.
    pub const fn rerun_on_resume(mut self) -> Self {
        self.rerun_on_resume = true;
        self
    }

    /// Whether a call needs approval before it runs (destructive or requires_permission).
    pub const fn needs_approval(&self) -> bool {
        self.destructive || self.requires_permission
    }

    /// Whether a resumed run may run a call again that started and has no recorded result:
    /// the tool is read-only, idempotent, or marked `rerun_on_resume`.
    pub const fn safe_to_rerun(&self) -> bool {
        self.read_only || self.idempotent || self.rerun_on_resume
    }
}

/// A tool as offered to a model: name, description, argument schema and flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name.
    pub name: String,
    /// The description.
    pub description: String,
    /// The JSON Schema of the arguments.
    pub parameters: serde_json::Value,
    /// The flags.
    #[serde(default)]
    pub flags: ToolFlags,
}

/// What a tool call receives besides its arguments: who it runs for, a cancellation signal, and a
/// way to create artifacts.
#[derive(Clone)]
pub struct ToolContext {
    run_id: Arc<str>,
    session_id: Arc<str>,
    user_id: Option<Arc<str>>,
    call_id: Arc<str>,
    cancel: CancellationToken,
    artifacts: Option<Arc<dyn ArtifactSink>>,
    run: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// Where a run records the artifacts its tools create. The runtime gives each call's
/// [`ToolContext`] one; a detached context has none.
pub trait ArtifactSink: Send + Sync + 'static {
    /// Records an artifact with the run (and announces it, as the runtime sees fit).
    fn add_artifact(&self, artifact: Artifact);
}

impl ToolContext {
    /// A context outside any run, for calling a tool directly (in a unit test, say). Artifacts
    /// created through it are returned but recorded nowhere.
    pub fn detached(run_id: impl Into<Arc<str>>, session_id: impl Into<Arc<str>>) -> Self {
        ToolContext {
            run_id: run_id.into(),
            session_id: session_id.into(),
            user_id: None,
            call_id: Arc::from("call_0"),
            cancel: CancellationToken::new(),
            artifacts: None,
            run: None,
        }
    }

    /// The context of one call in a run: who it runs for, the call's cancellation token, and the
    /// run's artifact sink. The runtime builds these; tools only read them.
    pub fn for_call(
        scope: &Scope,
        call_id: &str,
        cancel: CancellationToken,
        artifacts: Option<Arc<dyn ArtifactSink>>,
    ) -> Self {
        ToolContext {
            run_id: scope.run_id.clone(),
            session_id: scope.session_id.clone(),
            user_id: scope.user_id.clone(),
            call_id: Arc::from(call_id),
            cancel,
            artifacts,
            run: None,
        }
    }

    /// Sets the user (for detached contexts).
    pub fn with_user(mut self, user_id: impl Into<Arc<str>>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Attaches the runtime's handle on the calling run (opaque here). The runtime sets it so the
    /// tools it provides itself (an agent used as a tool) can link the runs they start to it.
    pub fn with_run_handle(mut self, handle: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self.run = Some(handle);
        self
    }

    /// The runtime's handle on the calling run, if it set one (see [`ToolContext::with_run_handle`]).
    pub fn run_handle(&self) -> Option<&Arc<dyn std::any::Any + Send + Sync>> {
        self.run.as_ref()
    }

    /// The run.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The session.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The user the run acts for.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// This call's id.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Fires when the run is cancelled or the call times out. Long tools should watch it.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the call should stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Creates an artifact: recorded with the run and announced by an `artifact.created` event.
    pub fn create_artifact(
        &self,
        name: impl Into<String>,
        media_type: impl Into<String>,
        content: impl Into<String>,
    ) -> Artifact {
        let artifact = Artifact {
            id: crate::id::new_id("art"),
            name: name.into(),
            media_type: media_type.into(),
            content: content.into(),
            call_id: Some(self.call_id.to_string()),
        };
        if let Some(sink) = &self.artifacts {
            sink.add_artifact(artifact.clone());
        }
        artifact
    }
}

impl fmt::Debug for ToolContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolContext")
            .field("run_id", &self.run_id)
            .field("session_id", &self.session_id)
            .field("user_id", &self.user_id)
            .field("call_id", &self.call_id)
            .finish_non_exhaustive()
    }
}

type BoxedHandler = dyn Fn(ToolContext, serde_json::Value) -> Pin<Box<dyn Future<Output = Result<ToolOutput, ToolError>> + Send>>
    + Send
    + Sync;

/// A tool made from a name, a description, a JSON schema and an async closure: for tools whose
/// schema is only known at run time.
///
/// ```
/// use loom_core::tool::{FunctionTool, ToolOutput};
/// use serde_json::json;
///
/// let add = FunctionTool::new(
///     "add",
///     "Add two numbers.",
///     json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
///            "required": ["a", "b"]}),
///     |_ctx, args| async move {
///         let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
///         Ok(ToolOutput::text(sum.to_string()))
///     },
/// )
/// .read_only()
/// .concurrency_safe();
/// ```
pub struct FunctionTool {
    name: String,
    description: String,
    parameters: serde_json::Value,
    flags: ToolFlags,
    timeout: Option<Duration>,
    handler: Box<BoxedHandler>,
}

impl FunctionTool {
    /// A tool calling `handler(ctx, args)`.
    pub fn new<F, Fut>(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: serde_json::Value,
        handler: F,
    ) -> Self
    where
        F: Fn(ToolContext, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ToolOutput, ToolError>> + Send + 'static,
    {
        FunctionTool {
            name: name.into(),
            description: description.into(),
            parameters,
            flags: ToolFlags::default(),
            timeout: None,
            handler: Box::new(move |ctx, args| Box::pin(handler(ctx, args))),
        }
    }

    /// Sets all flags.
    pub fn flags(mut self, flags: ToolFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Marks the tool read-only.
    pub fn read_only(mut self) -> Self {
        self.flags.read_only = true;
        self
    }

    /// Marks the tool destructive.
    pub fn destructive(mut self) -> Self {
        self.flags.destructive = true;
        self
    }

    /// Marks the tool concurrency-safe.
    pub fn concurrency_safe(mut self) -> Self {
        self.flags.concurrency_safe = true;
        self
    }

    /// Marks the tool as needing approval.
    pub fn requires_permission(mut self) -> Self {
        self.flags.requires_permission = true;
        self
    }

    /// Marks the tool idempotent: a resumed run runs an unfinished call again.
    pub fn idempotent(mut self) -> Self {
        self.flags.idempotent = true;
        self
    }

    /// Lets a resumed run run an unfinished call of this tool again.
    pub fn rerun_on_resume(mut self) -> Self {
        self.flags.rerun_on_resume = true;
        self
    }

    /// Sets the per-call timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl fmt::Debug for FunctionTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionTool").field("name", &self.name).field("flags", &self.flags).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Tool for FunctionTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> serde_json::Value {
        self.parameters.clone()
    }

    fn flags(&self) -> ToolFlags {
        self.flags
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    async fn call(&self, ctx: ToolContext, args: serde_json::Value) -> Result<ToolOutput, ToolError> {
        (self.handler)(ctx, args).await
    }
}

/// Parses a tool's arguments into a typed struct, with an error the model can act on. Used by the
/// code the `#[tool]` attribute (in `loom-agent`) generates.
pub fn parse_arguments<T: serde::de::DeserializeOwned>(tool: &str, args: serde_json::Value) -> Result<T, ToolError> {
    serde_json::from_value(args)
        .map_err(|e| ToolError::invalid_arguments(format!("invalid arguments for `{tool}`: {e}")))
}

/// Anything an agent accepts as a tool: a tool value or a shared one.
pub trait IntoTool {
    /// Converts into a shared tool.
    fn into_tool(self) -> Arc<dyn Tool>;
}

impl<T: Tool> IntoTool for T {
    fn into_tool(self) -> Arc<dyn Tool> {
        Arc::new(self)
    }
}

impl IntoTool for Arc<dyn Tool> {
    fn into_tool(self) -> Arc<dyn Tool> {
        self
    }
}
