use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Generation, LanguageModel, ModelCapabilities, ModelChunk, ModelRequest, ModelStream};
use crate::error::{Error, ModelError};
use crate::message::{FinishReason, Message, Usage};
use crate::tool::ToolSpec;

/// One scripted model answer.
///
/// In a script file (`scripted:FILE.json`) a turn is an object with any of `text`, `thinking`,
/// `tool_calls` (`[{"name": …, "arguments": {…}}]`, or `"arguments": "raw text"` to send malformed
/// JSON), `usage`, `delay_ms`, `stream` (split the text into word deltas) and `error` (fail the call
/// with that message).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedTurn {
    /// Visible text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Reasoning text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ScriptedToolCall>,
    /// Usage reported for the call.
    #[serde(default)]
    pub usage: Usage,
    /// A pause before the answer starts, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Split the text into one delta per word.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// Fail the call with this message (a transient model error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A scripted tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedToolCall {
    /// The call id (generated when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool's name.
    pub name: String,
    /// The arguments: a JSON value, or a string sent as raw argument text.
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl ScriptedTurn {
    /// A final answer.
    pub fn text(text: impl Into<String>) -> Self {
        ScriptedTurn { text: Some(text.into()), ..Self::default() }
    }

    /// One tool call with JSON arguments.
    pub fn tool_call(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self::default().with_tool_call(name, arguments)
    }

    /// Adds a tool call with JSON arguments.
    pub fn with_tool_call(mut self, name: impl Into<String>, arguments: serde_json::Value) -> Self {
        self.tool_calls.push(ScriptedToolCall { id: None, name: name.into(), arguments });
        self
    }

    /// Adds a tool call whose argument text is sent exactly as given (for malformed JSON).
    pub fn with_raw_tool_call(mut self, name: impl Into<String>, raw_arguments: impl Into<String>) -> Self {
        self.tool_calls.push(ScriptedToolCall {
            id: None,
            name: name.into(),
            arguments: serde_json::Value::String(raw_arguments.into()),
        });
        self
    }

    /// A failing call (a transient model error with this message).
    pub fn error(message: impl Into<String>) -> Self {
        ScriptedTurn { error: Some(message.into()), ..Self::default() }
    }

    /// Adds reasoning text.
    pub fn with_thinking(mut self, text: impl Into<String>) -> Self {
        self.thinking = Some(text.into());
        self
    }

    /// Sets the reported usage.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }

    /// Waits before answering.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(delay.as_millis() as u64);
        self
    }

    /// Streams the text one word at a time.
    pub fn streamed(mut self) -> Self {
        self.stream = true;
        self
    }

    fn chunks(&self, turn: u32) -> Result<Vec<Result<ModelChunk, ModelError>>, ModelError> {
        if let Some(message) = &self.error {
            return Err(ModelError::Transient { message: message.clone(), status: None });
        }
        let mut out = Vec::with_capacity(3 + self.tool_calls.len());
        if let Some(thinking) = &self.thinking {
            out.push(Ok(ModelChunk::Thinking { text: thinking.clone(), signature: None, provider: None }));
        }
        if let Some(text) = &self.text {
            if self.stream {
                for piece in text.split_inclusive(' ') {
                    out.push(Ok(ModelChunk::Text(piece.to_string())));
                }
            } else if !text.is_empty() {
                out.push(Ok(ModelChunk::Text(text.clone())));
            }
        }
        for (index, call) in self.tool_calls.iter().enumerate() {
            let arguments = match &call.arguments {
                serde_json::Value::String(raw) => raw.clone(),
                other => other.to_string(),
            };
            out.push(Ok(ModelChunk::ToolCallDelta {
                index,
                id: Some(call.id.clone().unwrap_or_else(|| format!("call_{turn}_{index}"))),
                name: Some(call.name.clone()),
                arguments,
            }));
        }
        out.push(Ok(ModelChunk::Usage(self.usage)));
        let finish = if self.tool_calls.is_empty() { FinishReason::Stop } else { FinishReason::ToolCalls };
        out.push(Ok(ModelChunk::Finish(finish)));
        Ok(out)
    }

    async fn play(&self, turn: u32) -> Result<ModelStream, ModelError> {
        if let Some(ms) = self.delay_ms.filter(|ms| *ms > 0) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let chunks = self.chunks(turn)?;
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

/// A request as a [`ScriptedModel`] recorded it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// The messages sent.
    pub messages: Vec<Message>,
    /// The tools offered.
    pub tools: Vec<ToolSpec>,
    /// The generation settings.
    pub generation: Generation,
    /// The output schema, when one was sent natively.
    pub output_schema: Option<serde_json::Value>,
    /// The run.
    pub run_id: String,
    /// The user.
    pub user_id: Option<String>,
    /// The turn.
    pub turn: u32,
}

impl RecordedRequest {
    fn from_request(request: &ModelRequest<'_>) -> Self {
        RecordedRequest {
            messages: request.messages.to_vec(),
            tools: request.tools.to_vec(),
            generation: request.generation.clone(),
            output_schema: request.output_schema.cloned(),
            run_id: request.run_id.to_string(),
            user_id: request.user_id.map(str::to_string),
            turn: request.turn,
        }
    }
}

/// A model that replays scripted turns, one per call, in order: the basis of offline tests and
/// examples. It records every request it receives, so tests can assert on what was sent.
///
/// ```
/// use loom_agent::model::{ScriptedModel, ScriptedTurn};
/// use serde_json::json;
///
/// let model = ScriptedModel::new([
///     ScriptedTurn::tool_call("get_weather", json!({"city": "Tokyo"})),
///     ScriptedTurn::text("It is sunny in Tokyo."),
/// ]);
/// assert_eq!(model.remaining(), 2);
/// ```
#[derive(Debug)]
pub struct ScriptedModel {
    name: String,
    turns: Vec<ScriptedTurn>,
    state: Mutex<ScriptState>,
    looping: bool,
    record: bool,
    capabilities: ModelCapabilities,
}

#[derive(Debug, Default)]
struct ScriptState {
    cursor: usize,
    requests: Vec<RecordedRequest>,
}

impl ScriptedModel {
    /// A model that plays these turns in order and then fails with "no more turns".
    pub fn new(turns: impl IntoIterator<Item = ScriptedTurn>) -> Self {
        ScriptedModel {
            name: "scripted".to_string(),
            turns: turns.into_iter().collect(),
            state: Mutex::new(ScriptState::default()),
            looping: false,
            record: true,
            capabilities: ModelCapabilities::default(),
        }
    }

    /// Loads a script file: a JSON array of turns, or `{"turns": [...]}`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { context: format!("cannot read script {}", path.display()), source })?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses a script: a JSON array of turns, or `{"turns": [...]}`.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Script {
            turns: Vec<ScriptedTurn>,
        }
        let invalid = |e: serde_json::Error| Error::Config(format!("invalid script: {e}"));
        let value: serde_json::Value = serde_json::from_str(text).map_err(invalid)?;
        let turns = if value.is_array() {
            serde_json::from_value::<Vec<ScriptedTurn>>(value).map_err(invalid)?
        } else {
            serde_json::from_value::<Script>(value).map_err(invalid)?.turns
        };
        Ok(Self::new(turns))
    }

    /// Sets the name the model reports.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts again from the first turn when the script ends.
    pub fn looping(mut self) -> Self {
        self.looping = true;
        self
    }

    /// Stops recording requests (for benchmarks).
    pub fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    /// Declares capabilities (for example native structured output).
    pub fn with_capabilities(mut self, capabilities: ModelCapabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().map(|s| s.requests.clone()).unwrap_or_default()
    }

    /// How many turns are left to play.
    pub fn remaining(&self) -> usize {
        let cursor = self.state.lock().map(|s| s.cursor).unwrap_or(0);
        self.turns.len().saturating_sub(cursor)
    }
}

#[async_trait::async_trait]
impl LanguageModel for ScriptedModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn provider(&self) -> &str {
        "scripted"
    }

    fn capabilities(&self) -> ModelCapabilities {
        self.capabilities
    }

    async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        let turn = {
            let mut state = self.state.lock().map_err(|_| ModelError::Unavailable("script state poisoned".into()))?;
            if self.record {
                state.requests.push(RecordedRequest::from_request(request));
            }
            if state.cursor >= self.turns.len() {
                if self.looping && !self.turns.is_empty() {
                    state.cursor = 0;
                } else {
                    return Err(ModelError::Unavailable(format!(
                        "the scripted model has no more turns ({} played)",
                        self.turns.len()
                    )));
                }
            }
            let turn = self.turns[state.cursor].clone();
            state.cursor += 1;
            turn
        };
        turn.play(request.turn).await
    }
}

type TurnFn = dyn Fn(&ModelRequest<'_>) -> ScriptedTurn + Send + Sync;

/// A model whose answer is computed from the request by a function: for tests where many runs share
/// one model and each must get an answer that depends on its own conversation.
pub struct FnModel {
    name: String,
    f: Box<TurnFn>,
}

impl FnModel {
    /// A model answering with `f(request)`.
    pub fn new(name: impl Into<String>, f: impl Fn(&ModelRequest<'_>) -> ScriptedTurn + Send + Sync + 'static) -> Self {
        FnModel { name: name.into(), f: Box::new(f) }
    }
}

impl std::fmt::Debug for FnModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnModel").field("name", &self.name).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl LanguageModel for FnModel {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        let turn = (self.f)(request);
        turn.play(request.turn).await
    }
}
