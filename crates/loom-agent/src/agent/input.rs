use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::message::Message;
use crate::output::OutputSchema;

/// What a run is asked to do: a prompt, or a structured task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunInput {
    /// A plain prompt.
    Prompt(String),
    /// A task with a goal, structured input and acceptance criteria.
    Task(RuntimeTask),
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
            RunInput::Task(t) => Message::user(t.render()),
        }
    }

    /// A short text for logs and listings: the prompt or the goal.
    pub fn summary(&self) -> &str {
        match self {
            RunInput::Prompt(p) => p,
            RunInput::Task(t) => &t.goal,
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

impl From<RuntimeTask> for RunInput {
    fn from(t: RuntimeTask) -> Self {
        RunInput::Task(t)
    }
}

/// A task with a goal, structured input, acceptance criteria and metadata.
///
/// ```
/// use loom_agent::RuntimeTask;
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
/// Knowledge:
/// [1] Title (source, uri)
/// content
/// ````
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

    /// Adds a knowledge item.
    pub fn knowledge(mut self, item: KnowledgeItem) -> Self {
        self.knowledge.push(item);
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
            out.push_str("\n\nKnowledge:");
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

/// A runtime profile: a named bundle of run policy. Its criteria are added to the instructions
/// (under "Acceptance criteria for every answer:"), and its max_turns applies when the agent sets none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// The profile's name.
    pub name: String,
    /// Criteria every answer should meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub criteria: Vec<String>,
    /// The turn limit for runs under this profile.
    pub max_turns: u32,
}

impl Runtime {
    /// For SDK-style request/response use: 32 turns.
    pub fn sdk() -> Self {
        Runtime { name: "sdk".into(), criteria: Vec::new(), max_turns: 32 }
    }

    /// For long tasks held to criteria: 128 turns.
    pub fn long_running<I, S>(criteria: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Runtime {
            name: "long_running".into(),
            criteria: criteria.into_iter().map(Into::into).collect(),
            max_turns: 128,
        }
    }

    /// For supervised work held to criteria: 80 turns.
    pub fn supervised<I, S>(criteria: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Runtime { name: "supervised".into(), criteria: criteria.into_iter().map(Into::into).collect(), max_turns: 80 }
    }

    /// Sets max_turns.
    pub fn with_max_turns(mut self, max_turns: u32) -> Self {
        self.max_turns = max_turns;
        self
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::sdk()
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
