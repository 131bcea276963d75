//! Errors as values: one crate error, a model error taxonomy, the error a run ends with, and the
//! error a tool returns.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::run::{RunResult, RunState};

/// The crate's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad configuration: an unknown model string, a duplicate tool name, an invalid schema.
    #[error("configuration error: {0}")]
    Config(String),
    /// A run ended in a state other than completed. The full result is inside.
    #[error("{0}")]
    Run(RunFailure),
    /// A model call failed outside of a run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A session or run store failed.
    #[error("store error: {0}")]
    Store(#[source] StoreError),
    /// The run's structured output could not be turned into the requested type.
    #[error("output does not fit the requested type: {0}")]
    Output(String),
    /// Another process holds the run's lease (it is driving the run, or died less than a lease
    /// ago).
    #[error("run {run_id} is held by another process (lease owner {owner}, until {until})")]
    LeaseHeld {
        /// The run.
        run_id: String,
        /// The lease holder.
        owner: String,
        /// When the lease expires (RFC 3339).
        until: String,
    },
    /// This process lost the run's lease: another process took the run over.
    #[error("lost the lease of run {run_id}: another process took it over")]
    LeaseLost {
        /// The run.
        run_id: String,
    },
    /// No run with this id is stored.
    #[error("run {0} not found")]
    RunNotFound(String),
    /// The run has already finished; a finished run is never replayed.
    #[error("run {run_id} has already finished ({state}); a finished run is never replayed")]
    RunFinished {
        /// The run.
        run_id: String,
        /// How it ended.
        state: RunState,
    },
    /// A resume would run on another model than the run started on. Resume with the recorded
    /// model, or say that the switch is meant (`ResumeOptions::allow_model_change`).
    #[error(
        "run {run_id} started on {recorded}; this agent's model is {current}. Resume with the same model, \
         or allow the change explicitly"
    )]
    ModelChanged {
        /// The run.
        run_id: String,
        /// The model the run started on (model string or provider:name, and base URL).
        recorded: String,
        /// The model the resume was given.
        current: String,
    },
    /// Stored data could not be read back (a corrupt or truncated row).
    #[error("corrupt store data: {0}")]
    Corrupt(#[source] StoreError),
    /// The database was written by a newer version of Loom.
    #[error(
        "the database schema is version {found}, newer than this version of Loom supports ({supported}); upgrade Loom"
    )]
    SchemaTooNew {
        /// The schema version found.
        found: i64,
        /// The newest this version supports.
        supported: i64,
    },
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file was refused as an audit log: it is not one, it was written with another key, or it
    /// is shorter than its signed head. Nothing was written to it.
    #[error("refusing to append to {}: {reason}", path.display())]
    AuditLogRefused {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        reason: crate::governance::AuditRefusal,
    },
    /// Fetching a local model failed: pip is missing, the download failed (the `local` feature).
    #[error("model pull failed: {0}")]
    ModelPull(String),
    /// A local model file is missing, truncated, or not a model (the `local` feature).
    #[error("model file error: {0}")]
    ModelFile(String),
    /// A local model is not in the cache and is not fetched implicitly (the `local` feature):
    /// `command` fetches it once, after which it works offline.
    #[error("the {model} model is not in the cache ({}): run `{command}` once", path.display())]
    ModelNotPulled {
        /// The model, such as `all-MiniLM-L6-v2`.
        model: String,
        /// Where it is looked for.
        path: std::path::PathBuf,
        /// The command that fetches it, such as `loom model pull --embedder`.
        command: String,
    },
    /// A local model file does not have the expected sha256 (the `local` feature). Nothing was
    /// written to the cache.
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {actual}", path.display())]
    ModelChecksum {
        /// The file that was checked.
        path: std::path::PathBuf,
        /// The expected sha256, hex.
        expected: String,
        /// The sha256 of the file, hex.
        actual: String,
    },
}

impl Error {
    /// The run result, when this error is a run that did not complete.
    pub fn run_result(&self) -> Option<&RunResult> {
        match self {
            Error::Run(failure) => Some(&failure.0),
            _ => None,
        }
    }
}

impl Error {
    /// A store failure, keeping the driver's error as its source.
    pub fn store(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Store(StoreError::with_source(message, source))
    }

    /// Stored data that could not be read back, keeping the decoding error as its source.
    pub fn corrupt(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Corrupt(StoreError::with_source(message, source))
    }
}

/// What a store reports when it fails: a message (already saying what failed, with the driver's
/// text), and the driver's error itself as the [`source`](std::error::Error::source) when there is
/// one. Reads as its message (`Deref<Target = str>`), and converts from a `String` or `&str` for
/// stores that have no source to keep.
#[derive(Debug)]
pub struct StoreError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A failure with no underlying error.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError { message: message.into(), source: None }
    }

    /// A failure caused by `source`.
    pub fn with_source(message: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError { message: message.into(), source: Some(Box::new(source)) }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl std::ops::Deref for StoreError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.message
    }
}

impl From<String> for StoreError {
    fn from(message: String) -> Self {
        StoreError::new(message)
    }
}

impl From<&str> for StoreError {
    fn from(message: &str) -> Self {
        StoreError::new(message)
    }
}

/// A run that ended failed, cancelled or interrupted. Holds the whole [`RunResult`], so nothing
/// about the run is lost when it travels as an error.
#[derive(Debug)]
pub struct RunFailure(pub Box<RunResult>);

impl RunFailure {
    /// The run's result.
    pub fn result(&self) -> &RunResult {
        &self.0
    }

    /// Takes the run's result.
    pub fn into_result(self) -> RunResult {
        *self.0
    }
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.0;
        match &r.error {
            Some(e) => write!(f, "run {} {}: {}", r.run_id, r.state, e.message),
            None => write!(f, "run {} {}", r.run_id, r.state),
        }
    }
}

/// Why a model call failed. Providers map their wire errors onto these kinds.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A failure that may pass: a dropped connection, a 5xx, an overloaded server.
    #[error("transient model error: {message}")]
    Transient {
        /// What happened.
        message: String,
        /// The HTTP status, when there was one.
        status: Option<u16>,
    },
    /// The provider asked us to slow down.
    #[error("rate limited: {message}")]
    RateLimited {
        /// What happened.
        message: String,
        /// How long the provider asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The key was missing, wrong or not allowed.
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The provider rejected the request as malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A content filter refused the request or the answer.
    #[error("content filtered: {0}")]
    ContentFilter(String),
    /// The conversation is longer than the model's context window.
    #[error("context length exceeded: {0}")]
    ContextLengthExceeded(String),
    /// The model or provider sent something we could not understand.
    #[error("malformed model response: {0}")]
    Protocol(String),
    /// No model could be reached or is configured.
    #[error("model unavailable: {0}")]
    Unavailable(String),
    /// The model is configured wrongly (a malformed base URL, say): no request was sent, and
    /// retrying cannot help.
    #[error("model configuration error: {0}")]
    Configuration(String),
    /// The call was cancelled.
    #[error("model call cancelled")]
    Cancelled,
}

impl ModelError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ModelError::Transient { .. } | ModelError::RateLimited { .. })
    }

    /// A short snake_case name of the kind, as it appears in run errors and events.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Transient { .. } => "transient",
            ModelError::RateLimited { .. } => "rate_limited",
            ModelError::Authentication(_) => "authentication",
            ModelError::InvalidRequest(_) => "invalid_request",
            ModelError::ContentFilter(_) => "content_filter",
            ModelError::ContextLengthExceeded(_) => "context_length_exceeded",
            ModelError::Protocol(_) => "protocol",
            ModelError::Unavailable(_) => "unavailable",
            ModelError::Configuration(_) => "configuration",
            ModelError::Cancelled => "cancelled",
        }
    }
}

/// What a run that did not complete ended with; `RunResult::error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    /// The kind of failure.
    pub kind: RunErrorKind,
    /// A sentence a person can read.
    pub message: String,
    /// For interrupted runs: the reason, such as `max_turns`, `timeout`, `budget: max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For model errors: the provider error kind (`rate_limited`, `authentication`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_error: Option<String>,
    /// For structured output failures: the model's last raw answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_output: Option<String>,
}

impl RunError {
    /// A new run error.
    pub fn new(kind: RunErrorKind, message: impl Into<String>) -> Self {
        RunError { kind, message: message.into(), reason: None, model_error: None, raw_output: None }
    }

    /// An interruption with its reason.
    pub fn interrupted(kind: RunErrorKind, reason: impl Into<String>, message: impl Into<String>) -> Self {
        RunError { reason: Some(reason.into()), ..RunError::new(kind, message) }
    }

    /// The error a run ends with when a model call failed: `cancelled` for a cancelled call,
    /// otherwise `model`, keeping the model error's kind.
    pub fn from_model(err: &ModelError) -> Self {
        if matches!(err, ModelError::Cancelled) {
            return RunError::new(RunErrorKind::Cancelled, "the run was cancelled");
        }
        RunError { model_error: Some(err.kind().to_string()), ..RunError::new(RunErrorKind::Model, err.to_string()) }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The kinds of run failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunErrorKind {
    /// The model call failed (after any retries).
    Model,
    /// The run reached max_turns without a final answer.
    MaxTurns,
    /// The run took longer than its timeout.
    Timeout,
    /// The run was cancelled.
    Cancelled,
    /// The final answer never matched the output schema.
    OutputValidation,
    /// A budget limit stopped the run.
    Budget,
    /// A guardrail or hook stopped the run.
    Guardrail,
    /// The user's rate limit refused a model call.
    RateLimit,
    /// The answer still failed acceptance criteria after the criteria gate's last round.
    Criteria,
    /// The run's configuration or input was invalid.
    Config,
    /// A store (session, journal, memory) failed.
    Store,
    /// A resumed run found a tool call that started before the process stopped, with no recorded
    /// result, and the tool is not safe to run again.
    Ambiguous,
    /// The run waits for a human decision on a tool call (see `Agent::decide`).
    ApprovalPending,
    /// The run waits for a background tool's result (see `ToolOutput::pending` and
    /// `Agent::complete_tool`).
    ToolPending,
    /// A bug or an unexpected state inside the runtime.
    Internal,
    /// A workflow node failed.
    Node,
}

/// The error a tool returns. The loop turns it into an error result for the model; the run goes on.
///
/// Any `std::error::Error` converts into it, so `?` works in tool bodies.
pub struct ToolError {
    kind: ToolErrorKind,
    message: String,
}

/// The kinds of tool failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolErrorKind {
    /// The tool ran and failed.
    Failed,
    /// The arguments did not fit the tool's schema or types.
    InvalidArguments,
    /// No tool of that name is offered.
    NotFound,
    /// The tool took longer than its timeout.
    Timeout,
    /// The tool panicked.
    Panicked,
    /// A policy or a person refused the call.
    Denied,
    /// The run was cancelled while the tool ran.
    Cancelled,
}

impl ToolError {
    /// A failure with a message for the model.
    pub fn new(message: impl Into<String>) -> Self {
        ToolError { kind: ToolErrorKind::Failed, message: message.into() }
    }

    /// An error of a given kind.
    pub fn with_kind(kind: ToolErrorKind, message: impl Into<String>) -> Self {
        ToolError { kind, message: message.into() }
    }

    /// Arguments that do not fit.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self::with_kind(ToolErrorKind::InvalidArguments, message)
    }

    /// The kind.
    pub fn kind(&self) -> ToolErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ToolError {
    fn from(err: E) -> Self {
        ToolError::new(err.to_string())
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolError").field("kind", &self.kind).field("message", &self.message).finish()
    }
}

/// A shorthand for results with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
