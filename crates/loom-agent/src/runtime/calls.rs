//! The building blocks an architecture other than ReAct needs, all through the same pipeline as
//! [`RunCx::model_turn`] and [`RunCx::run_tools`] (budget, hooks, rate limit, permissions,
//! guardrails, journal, audit, events):
//!
//! - [`RunCx::model_call`]: a model call shaped by a [`ModelCall`] — its own prompt or extra
//!   messages for this call only, no tools, its own output schema, its answer kept out of the
//!   conversation;
//! - [`RunCx::call_tools`]: tool calls the architecture makes itself, results returned;
//! - [`RunCx::add_artifact`], [`RunCx::emit`]: what the run shows;
//! - [`RunCx::check_max_turns`], [`RunCx::input_message`].
//!
//! Every model call is one turn and is journaled by its turn number, every tool call by its id: a
//! resumed run gets the journaled results back and an architecture that decides only from them
//! (no clock, no randomness) takes the same path again, so nothing is called twice.

use super::context::RunCx;
use crate::error::{RunError, RunErrorKind};
use crate::message::{ContentPart, Message};
use crate::model::ModelResponse;
use crate::output::OutputSchema;
use crate::run::Artifact;
use crate::tool::ArtifactSink;

/// How one model call differs from a plain turn ([`RunCx::model_turn`]): what it sends, whether
/// tools are offered, the JSON schema its answer must match, and whether its answer joins the
/// conversation. `ModelCall::new()` is a plain turn.
///
/// ```
/// use loom_agent::message::Message;
/// use loom_agent::runtime::ModelCall;
///
/// // Ask for a critique of the conversation so far, without tools, and keep it out of the
/// // conversation.
/// let call = ModelCall::new()
///     .message(Message::user("Critique the last answer."))
///     .without_tools()
///     .discard_answer();
/// assert!(!call.offers_tools());
/// assert!(!call.keeps_answer());
/// ```
#[derive(Clone, Debug)]
pub struct ModelCall {
    prompt: Option<Vec<Message>>,
    extra: Vec<Message>,
    tools: bool,
    schema: Option<OutputSchema>,
    keep: bool,
}

impl Default for ModelCall {
    fn default() -> Self {
        ModelCall { prompt: None, extra: Vec::new(), tools: true, schema: None, keep: true }
    }
}

impl ModelCall {
    /// A plain turn: the conversation, the run's tools, the answer appended.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends these messages instead of the conversation.
    pub fn prompt(mut self, messages: Vec<Message>) -> Self {
        self.prompt = Some(messages);
        self
    }

    /// Adds a message after the conversation (or the prompt) for this call only.
    pub fn message(mut self, message: Message) -> Self {
        self.extra.push(message);
        self
    }

    /// Offers no tools.
    pub fn without_tools(mut self) -> Self {
        self.tools = false;
        self
    }

    /// The JSON schema this answer must match: sent natively to models that support it, else as
    /// an instruction at the end of the messages. Parse the answer with [`OutputSchema::parse`].
    /// Without one, the call carries the run's own output schema, like every turn.
    pub fn output_schema(mut self, schema: OutputSchema) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Keeps the answer out of the conversation (it is still journaled, and `model.response`
    /// shows it).
    pub fn discard_answer(mut self) -> Self {
        self.keep = false;
        self
    }

    /// Whether the run's tools are offered.
    pub fn offers_tools(&self) -> bool {
        self.tools
    }

    /// Whether the answer is appended to the conversation.
    pub fn keeps_answer(&self) -> bool {
        self.keep
    }

    /// The messages to send, when they are not the conversation as it is.
    pub(super) fn request_messages(&self, conversation: &[Message], native: bool) -> Option<Vec<Message>> {
        let directive = self.schema.as_ref().filter(|_| !native).map(OutputSchema::directive);
        if self.prompt.is_none() && self.extra.is_empty() && directive.is_none() {
            return None;
        }
        let base = self.prompt.as_deref().unwrap_or(conversation);
        let mut messages = Vec::with_capacity(base.len() + self.extra.len() + 1);
        messages.extend_from_slice(base);
        messages.extend_from_slice(&self.extra);
        if let Some(directive) = directive {
            match messages.last_mut() {
                Some(Message::User { content }) => content.push(ContentPart::Text { text: directive }),
                _ => messages.push(Message::user(directive)),
            }
        }
        Some(messages)
    }
}

/// The result of one tool call made with [`RunCx::call_tools`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCallResult {
    /// The call's id.
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// What the tool returned (capped and through the tool-result guardrails), or `Error: …`.
    pub content: String,
    /// Whether the call failed (unknown tool, bad arguments, denied, error, timeout, panic).
    pub is_error: bool,
}

impl RunCx {
    /// One model call shaped by `call`; see [`ModelCall`]. Counts as one turn, goes through the
    /// budget, hooks, rate limit, guardrails and journal like [`RunCx::model_turn`], and a
    /// resumed run gets the journaled answer instead of calling the model again.
    pub async fn model_call(&mut self, call: ModelCall) -> Result<ModelResponse, RunError> {
        self.model_step(Some(&call)).await
    }

    /// The schema sent natively with a shaped call, if any.
    pub(super) fn native_schema_for<'a>(&'a self, call: &'a ModelCall) -> Option<&'a OutputSchema> {
        match &call.schema {
            Some(schema) => self.env.model.capabilities().native_structured_output.then_some(schema),
            None => self.native_schema.as_ref(),
        }
    }

    /// Whether a shaped call's schema goes to the model natively.
    pub(super) fn native_structured(&self) -> bool {
        self.env.model.capabilities().native_structured_output
    }

    /// `Err` (interrupted, `max_turns`) when the run has made its most model calls; architectures
    /// check it before each call.
    pub fn check_max_turns(&self) -> Result<(), RunError> {
        if self.turn >= self.max_turns {
            return Err(RunError::interrupted(
                RunErrorKind::MaxTurns,
                "max_turns",
                format!("the run reached max_turns ({}) without a final answer", self.max_turns),
            ));
        }
        Ok(())
    }

    /// The run's input as the model sees it (after the input guardrails).
    pub fn input_message(&self) -> Option<&Message> {
        self.messages.get(self.history_base?)
    }

    /// Adds an artifact to the run (with an `artifact.created` event). An architecture that adds
    /// the same artifacts from the same results is replayed exactly on resume.
    pub fn add_artifact(&self, artifact: Artifact) {
        self.log.add_artifact(artifact);
    }
}
