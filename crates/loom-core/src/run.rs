//! The run's data: what it is asked ([`RunInput`], [`RuntimeTask`], [`RunContext`]), who it acts
//! for ([`Scope`]), how it ends ([`RunState`], [`RunResult`]), and its record ([`Transcript`], [`Artifact`]).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, RunError, RunFailure};
use crate::event::Event;
use crate::message::{ContentPart, Message, Usage};
use crate::store::RunSummary;

/// What a run is asked to do: a prompt, or a structured task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunInput {
    /// A plain prompt.
    Prompt(String),
    /// A task with a goal, structured input and acceptance criteria.
    Task(RuntimeTask),
    /// A user message of several parts: text and images (for models with vision).
    Parts(Vec<ContentPart>),
}

impl RunInput {
    /// The user message the model receives.
    ///
    /// A prompt is sent as it is. A task is rendered as its goal, then `Input:` and the input as
    /// pretty JSON (when not null), then `Acceptance criteria:` as a bulleted list (when any).
    /// Task metadata is never sent to the model.
    pub fn to_message(&self) -> Message {
        match self {
            RunInput::Prompt(p) => Message::user(p.clone()),
            RunInput::Task(t) if t.attachments.is_empty() => Message::user(t.render()),
            RunInput::Task(t) => {
                let mut content = vec![ContentPart::Text { text: t.render() }];
                content.extend(t.attachments.iter().cloned());
                Message::User { content }
            }
            RunInput::Parts(parts) => Message::User { content: parts.clone() },
        }
    }

    /// The acceptance criteria the input carries (a task's; none for a prompt).
    pub fn criteria(&self) -> &[String] {
        match self {
            RunInput::Task(t) => &t.criteria,
            _ => &[],
        }
    }

    /// Adds a content part (an image): a prompt becomes a message of parts, a task keeps it as an
    /// attachment, parts get one more.
    pub fn with_part(self, part: ContentPart) -> RunInput {
        match self {
            RunInput::Prompt(p) => RunInput::Parts(vec![ContentPart::Text { text: p }, part]),
            RunInput::Task(mut t) => {
                t.attachments.push(part);
                RunInput::Task(t)
            }
            RunInput::Parts(mut parts) => {
                parts.push(part);
                RunInput::Parts(parts)
            }
        }
    }

    /// A short text for logs and listings: the prompt or the goal.
    pub fn summary(&self) -> &str {
        match self {
            RunInput::Prompt(p) => p,
            RunInput::Task(t) => &t.goal,
            RunInput::Parts(parts) => parts
                .iter()
                .find_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .unwrap_or(""),
        }
    }
}

impl From<&str> for RunInput {
    fn from(p: &str) -> Self {
        RunInput::Prompt(p.to_string())
    }
}

impl From<String> for RunInput {
    fn from(p: String) -> Self {
        RunInput::Prompt(p)
    }
}

impl From<Vec<ContentPart>> for RunInput {
    fn from(parts: Vec<ContentPart>) -> Self {
        RunInput::Parts(parts)
    }
}

impl From<RuntimeTask> for RunInput {
    fn from(t: RuntimeTask) -> Self {
        RunInput::Task(t)
    }
}

/// A task with a goal, structured input, acceptance criteria and metadata.
///
/// ```
/// use loom_core::RuntimeTask;
/// use serde_json::json;
///
/// let task = RuntimeTask::new("Refactor the provider tool-call path")
///     .input(json!({"providers": ["openai", "anthropic"]}))
///     .criterion("tool call round-trip works");
/// assert_eq!(task.criteria.len(), 1);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeTask {
    /// What to achieve.
    pub goal: String,
    /// Structured input.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// What a good answer satisfies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<String>,
    /// Business metadata: kept with the run, not sent to the model.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Images (and other parts) sent with the task, after its text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<ContentPart>,
}

impl RuntimeTask {
    /// A task with a goal.
    pub fn new(goal: impl Into<String>) -> Self {
        RuntimeTask { goal: goal.into(), ..Self::default() }
    }

    /// Sets the structured input.
    pub fn input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// Adds an acceptance criterion.
    pub fn criterion(mut self, criterion: impl Into<String>) -> Self {
        self.criteria.push(criterion.into());
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    fn render(&self) -> String {
        let mut out = self.goal.clone();
        if !self.input.is_null() {
            out.push_str("\n\nInput:\n");
            out.push_str(&serde_json::to_string_pretty(&self.input).unwrap_or_else(|_| self.input.to_string()));
        }
        if !self.criteria.is_empty() {
            out.push_str("\n\nAcceptance criteria:");
            for c in &self.criteria {
                out.push_str("\n- ");
                out.push_str(c);
            }
        }
        out
    }
}

/// A piece of grounded knowledge for a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KnowledgeItem {
    /// Where it comes from.
    pub source: String,
    /// A title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The text.
    pub content: String,
    /// A link to the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// A relevance score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// What [`RunContext::knowledge`] takes: one [`KnowledgeItem`], several, or a bundle of cited
/// passages (loom-agent's `KnowledgeBundle`).
pub trait IntoKnowledge {
    /// The items, in order (their markers are `[1]`, `[2]`, … after those already in the context).
    fn into_knowledge(self) -> Vec<KnowledgeItem>;
}

impl IntoKnowledge for KnowledgeItem {
    fn into_knowledge(self) -> Vec<KnowledgeItem> {
        vec![self]
    }
}

impl IntoKnowledge for Vec<KnowledgeItem> {
    fn into_knowledge(self) -> Vec<KnowledgeItem> {
        self
    }
}

/// Run-scoped structured context: business inputs, grounded knowledge, and extension fields.
///
/// `inputs` and `knowledge` reach the model as one system message placed after the instructions
/// and before the conversation history, in this form:
///
/// ````text
/// Context for this run.
///
/// Inputs (JSON):
/// {
///   "repo": "loom-agent"
/// }
///
/// Knowledge (cite it by the numbers in brackets, such as [1]):
/// [1] Title (source, uri)
/// content
/// ````
///
/// When it holds knowledge, the run emits `knowledge.injected` after `run.started`.
///
/// `extensions` never reach the model; they are kept with the run for hooks and stores.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    /// Structured inputs for this run.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    /// Grounded knowledge evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knowledge: Vec<KnowledgeItem>,
    /// Extension fields, not sent to the model.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extensions: Map<String, Value>,
}

impl RunContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an input.
    pub fn input(mut self, key: impl Into<String>, value: Value) -> Self {
        self.inputs.insert(key.into(), value);
        self
    }

    /// Adds knowledge: a [`KnowledgeItem`], a `Vec` of them, or a bundle of cited passages.
    pub fn knowledge(mut self, knowledge: impl IntoKnowledge) -> Self {
        self.knowledge.extend(knowledge.into_knowledge());
        self
    }

    /// Adds an extension field.
    pub fn extension(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extensions.insert(key.into(), value);
        self
    }

    /// Whether anything here is sent to the model.
    pub fn is_empty_for_model(&self) -> bool {
        self.inputs.is_empty() && self.knowledge.is_empty()
    }

    /// The system message the model receives, or `None` when there are no inputs and no knowledge.
    pub fn to_message(&self) -> Option<Message> {
        if self.is_empty_for_model() {
            return None;
        }
        let mut out = String::from("Context for this run.");
        if !self.inputs.is_empty() {
            out.push_str("\n\nInputs (JSON):\n");
            // Keys sorted at every level, whether or not serde_json keeps insertion order (its
            // `preserve_order` feature, which the `local` feature's llguidance turns on).
            let pretty =
                serde_json::to_string_pretty(&sorted_keys(&Value::Object(self.inputs.clone()))).unwrap_or_default();
            out.push_str(&pretty);
        }
        if !self.knowledge.is_empty() {
            out.push_str("\n\nKnowledge (cite it by the numbers in brackets, such as [1]):");
            for (i, k) in self.knowledge.iter().enumerate() {
                out.push_str(&format!("\n[{}] ", i + 1));
                let title = k.title.as_deref().unwrap_or("untitled");
                match &k.uri {
                    Some(uri) => out.push_str(&format!("{title} ({}, {uri})", k.source)),
                    None => out.push_str(&format!("{title} ({})", k.source)),
                }
                out.push('\n');
                out.push_str(&k.content);
            }
        }
        Some(Message::system(out))
    }
}

/// A copy of `value` with every object's keys in sorted order.
fn sorted_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}

/// The state of a run. Serialized in lower case: `"completed"`, `"interrupted"`, …
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for earlier runs of its session to finish.
    Queued,
    /// Executing.
    Running,
    /// Ended with a final answer.
    Completed,
    /// Ended by an error (a model error, invalid structured output, a store failure).
    Failed,
    /// Ended by `cancel()`.
    Cancelled,
    /// Stopped by a limit or a policy: max turns, timeout, budget, guardrail. The reason is in
    /// `RunResult::error`.
    Interrupted,
    /// Paused durably, waiting for a human decision on a tool call: this execution has ended, and
    /// `Agent::decide` (in this process or another, after a restart) continues the run.
    Suspended,
}

impl RunState {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
            RunState::Suspended => "suspended",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a run produced besides its answer: a file, a report, a diff.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// The id.
    pub id: String,
    /// A name.
    pub name: String,
    /// The media type (`text/markdown`, `application/json`, …).
    pub media_type: String,
    /// The content.
    pub content: String,
    /// The tool call that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

/// The judge's verdict on one acceptance criterion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct CriterionVerdict {
    /// The criterion, as written.
    pub criterion: String,
    /// Whether the answer meets it.
    pub passed: bool,
    /// Why (the judge's words).
    #[serde(default)]
    pub reason: String,
}

/// The outcome of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The run.
    pub run_id: String,
    /// Its session.
    pub session_id: String,
    /// The user it acted for.
    pub user_id: Option<String>,
    /// How it ended.
    pub state: RunState,
    /// The final answer (for structured output that failed validation: the last raw answer).
    pub output: String,
    /// The validated structured output, when a schema was set.
    pub parsed: Option<Value>,
    /// Artifacts created by tools.
    pub artifacts: Vec<Artifact>,
    /// Every event, in order.
    pub events: Arc<[Event]>,
    /// What went wrong, for any state but completed.
    pub error: Option<RunError>,
    /// Tokens and cost of all model calls.
    pub usage: Usage,
    /// Model calls made.
    pub turns: u32,
    /// When it started executing.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How long it executed.
    pub duration_ms: u64,
    /// The acceptance criteria as last judged (empty when none were judged): one verdict per
    /// criterion, from the last `criteria.checked` event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<CriterionVerdict>,
}

impl RunResult {
    /// Whether the run completed.
    pub fn is_completed(&self) -> bool {
        self.state == RunState::Completed
    }

    /// For interrupted runs: the reason (`max_turns`, `timeout`, `budget: max_tokens`, …).
    pub fn interruption_reason(&self) -> Option<&str> {
        self.error.as_ref().and_then(|e| e.reason.as_deref())
    }

    /// Deserializes the structured output into a type.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        let value = self.parsed.clone().ok_or_else(|| Error::Output("the run has no structured output".into()))?;
        serde_json::from_value(value).map_err(|e| Error::Output(e.to_string()))
    }

    /// `Ok(self)` when completed, else the error carrying this result.
    pub fn into_completed(self) -> Result<RunResult, Error> {
        if self.is_completed() { Ok(self) } else { Err(Error::Run(RunFailure(Box::new(self)))) }
    }
}

/// A serializable record of a run: ids, state, input, context, messages, output, events,
/// artifacts and usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    /// The run.
    pub run_id: String,
    /// Its session.
    pub session_id: String,
    /// The user.
    pub user_id: Option<String>,
    /// The state.
    pub state: RunState,
    /// The input.
    pub input: RunInput,
    /// The context.
    pub context: RunContext,
    /// Metadata given with the request.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// The conversation as the model saw it: instructions, context, history, input, and every
    /// model answer and tool result. While the run is in flight: the seeded messages only.
    pub messages: Vec<Message>,
    /// The final answer.
    pub output: String,
    /// The structured output.
    pub parsed: Option<Value>,
    /// Every event.
    pub events: Arc<[Event]>,
    /// Artifacts.
    pub artifacts: Vec<Artifact>,
    /// Usage.
    pub usage: Usage,
    /// The error, for runs that did not complete.
    pub error: Option<RunError>,
    /// Model calls made.
    pub turns: u32,
    /// When it started executing.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The run that started this one as its child, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<String>,
}

impl Transcript {
    /// The key of the run's session: its id within the run's user.
    pub fn session_key(&self) -> crate::store::SessionKey<'_> {
        crate::store::SessionKey { user_id: self.user_id.as_deref(), session_id: &self.session_id }
    }

    /// The run's line in a listing.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            run_id: self.run_id.clone(),
            session_id: self.session_id.clone(),
            user_id: self.user_id.clone(),
            state: self.state,
            input: self.input.clone(),
            started_at: self.started_at.or(self.finished_at).unwrap_or_else(Utc::now),
            finished_at: self.finished_at,
        }
    }

    /// The result this transcript records.
    pub fn to_result(&self) -> RunResult {
        // A run that never started (cancelled while queued) reports its start as its end, as
        // `RunLog::finish` does.
        let finished_at = self.finished_at.or(self.started_at).unwrap_or_else(Utc::now);
        let started_at = self.started_at.unwrap_or(finished_at);
        RunResult {
            run_id: self.run_id.clone(),
            session_id: self.session_id.clone(),
            user_id: self.user_id.clone(),
            state: self.state,
            output: self.output.clone(),
            parsed: self.parsed.clone(),
            artifacts: self.artifacts.clone(),
            events: self.events.clone(),
            error: self.error.clone(),
            usage: self.usage,
            turns: self.turns,
            started_at,
            finished_at,
            duration_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
            criteria: last_criteria(&self.events),
        }
    }
}
/// The verdicts of the last `criteria.checked` event, if any.
pub fn last_criteria(events: &[Event]) -> Vec<CriterionVerdict> {
    events
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            crate::event::EventKind::CriteriaChecked(c) => Some(c.verdicts.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Who a run acts for: run, session and user ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The run.
    pub run_id: Arc<str>,
    /// The session.
    pub session_id: Arc<str>,
    /// The user.
    pub user_id: Option<Arc<str>>,
}

impl Scope {
    /// The key of the run's session: its id within the run's user.
    pub fn session_key(&self) -> crate::store::SessionKey<'_> {
        crate::store::SessionKey { user_id: self.user_id.as_deref(), session_id: &self.session_id }
    }
}
