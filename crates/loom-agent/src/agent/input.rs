//! [`RunRequest`]: one run's input and per-run options.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::message::ContentPart;
use crate::output::OutputSchema;
use crate::run::{RunContext, RunInput, RuntimeTask};

/// One run's request: the input and per-run options.
///
/// ```
/// use loom_agent::{RunContext, RunRequest};
/// use serde_json::json;
///
/// let request = RunRequest::new("Explain the session model.")
///     .user("alice")
///     .session("conv_42")
///     .context(RunContext::new().input("repo", json!("loom-agent")));
/// assert_eq!(request.user_id.as_deref(), Some("alice"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct RunRequest {
    /// What to do.
    pub input: Option<RunInput>,
    /// The user the run acts for.
    pub user_id: Option<String>,
    /// The session to continue; a new session when `None`.
    pub session_id: Option<String>,
    /// Structured context.
    pub context: RunContext,
    /// A JSON schema the final answer must match (overrides the agent's).
    pub output_schema: Option<OutputSchema>,
    /// Metadata kept with the run.
    pub metadata: Map<String, Value>,
    /// Overrides the agent's max_turns.
    pub max_turns: Option<u32>,
    /// Overrides the agent's timeout.
    pub timeout: Option<Duration>,
    /// Set when the run is another run's child (see `Agent::as_tool`).
    pub(crate) child: Option<crate::runtime::ChildSpec>,
    /// Set for a run a worker claimed from the durable queue: its id and the fencing number of
    /// the claim.
    pub(crate) queued: Option<(String, u64)>,
    /// Start the run cancelled (before its task runs): it ends `cancelled` without a step.
    pub(crate) cancelled: bool,
}

impl RunRequest {
    /// A request with an input.
    pub fn new(input: impl Into<RunInput>) -> Self {
        RunRequest { input: Some(input.into()), ..Self::default() }
    }

    /// Sets the user.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the session to continue.
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// Sets the context.
    pub fn context(mut self, context: RunContext) -> Self {
        self.context = context;
        self
    }

    /// Sets the output schema.
    pub fn output_schema(mut self, schema: OutputSchema) -> Self {
        self.output_schema = Some(schema);
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Overrides max_turns for this run.
    pub fn max_turns(mut self, max_turns: u32) -> Self {
        self.max_turns = Some(max_turns);
        self
    }

    /// Adds an image (or another content part) to the input: a prompt becomes a message of parts,
    /// a task carries it as an attachment. Use [`ContentPart::image_bytes`] for bytes with their
    /// media type and [`ContentPart::image_url`] for a URL.
    ///
    /// ```
    /// use loom_agent::{ContentPart, RunInput, RunRequest};
    ///
    /// let request = RunRequest::new("What is in this picture?").image(ContentPart::image_bytes(b"png", "image/png"));
    /// let Some(RunInput::Parts(parts)) = &request.input else { unreachable!() };
    /// assert_eq!(parts.len(), 2);
    /// ```
    pub fn image(mut self, image: ContentPart) -> Self {
        let input = self.input.take().unwrap_or_else(|| RunInput::Parts(Vec::new()));
        self.input = Some(input.with_part(image));
        self
    }

    /// Overrides the timeout for this run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl From<&str> for RunRequest {
    fn from(p: &str) -> Self {
        RunRequest::new(p)
    }
}

impl From<String> for RunRequest {
    fn from(p: String) -> Self {
        RunRequest::new(p)
    }
}

impl From<&String> for RunRequest {
    fn from(p: &String) -> Self {
        RunRequest::new(p.clone())
    }
}

impl From<RuntimeTask> for RunRequest {
    fn from(t: RuntimeTask) -> Self {
        RunRequest::new(t)
    }
}

impl From<RunInput> for RunRequest {
    fn from(i: RunInput) -> Self {
        RunRequest::new(i)
    }
}
