//! The model protocol: [`LanguageModel`], what a call sends ([`ModelRequest`]) and receives
//! ([`ModelChunk`], [`ModelResponse`]), and generation settings.

mod assemble;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use serde::{Deserialize, Serialize};

pub use assemble::ResponseAssembler;

use crate::error::{Error, ModelError};
use crate::message::{FinishReason, Message, Thinking, ToolCall, Usage};
use crate::tool::ToolSpec;

/// A stream of model output chunks.
pub type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelChunk, ModelError>> + Send>>;

/// The one interface every model provider implements: a streaming call and a description of what
/// the model can do.
///
/// ```
/// use loom_core::model::{LanguageModel, ModelChunk, ModelRequest, ModelStream};
/// use loom_core::ModelError;
///
/// struct Shout;
///
/// #[async_trait::async_trait]
/// impl LanguageModel for Shout {
///     fn name(&self) -> &str { "shout" }
///     async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
///         let last = request.messages.last().map(|m| m.text()).unwrap_or_default();
///         let chunks = vec![Ok(ModelChunk::Text(last.to_uppercase()))];
///         Ok(Box::pin(futures::stream::iter(chunks)))
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait LanguageModel: Send + Sync + 'static {
    /// The model's name, such as `gpt-4o` or `scripted`.
    fn name(&self) -> &str;

    /// The provider's name, such as `openai`. Defaults to the model's name.
    fn provider(&self) -> &str {
        self.name()
    }

    /// What the model supports.
    fn capabilities(&self) -> ModelCapabilities {
        ModelCapabilities::default()
    }

    /// The model string that builds this model again (the agent's model-string grammar), such as
    /// `openai:gpt-4o-mini` or `local`; `None` (the default) when no string builds it. A durable
    /// run records it, so a resume can run on the model the run started on.
    fn model_string(&self) -> Option<String> {
        None
    }

    /// The base URL requests go to, for models behind an HTTP API (`None` by default).
    fn base_url(&self) -> Option<&str> {
        None
    }

    /// How this model counts tokens, when it knows exactly (a provider's published tokenizer, a
    /// local model's own). `None` (the default): the runtime estimates, and corrects its estimate
    /// from the usage the provider reports.
    fn token_counter(&self) -> Option<Arc<dyn TokenCounter>> {
        None
    }

    /// Sends one request and streams the answer: text, thinking, tool-call deltas, usage and a
    /// finish reason. An error before the stream starts, or inside it, fails the call.
    async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError>;
}

/// Counts the tokens of a text the way one model's tokenizer does.
///
/// ```
/// use loom_core::model::TokenCounter;
///
/// struct Words;
/// impl TokenCounter for Words {
///     fn name(&self) -> &str { "words" }
///     fn count(&self, text: &str) -> usize { text.split_whitespace().count() }
/// }
/// assert_eq!(Words.count("two words"), 2);
/// ```
pub trait TokenCounter: Send + Sync + 'static {
    /// The tokenizer's name (`o200k_base`, `gguf`, …).
    fn name(&self) -> &str;

    /// The number of tokens of `text`.
    fn count(&self, text: &str) -> usize;
}

/// What a model supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCapabilities {
    /// Whether the model accepts tools.
    pub tools: bool,
    /// Whether the provider enforces a JSON schema on the answer natively. When false, the loop
    /// puts the schema in the instructions instead.
    pub native_structured_output: bool,
    /// The context window in tokens, when known.
    pub context_window: Option<u32>,
}

impl Default for ModelCapabilities {
    fn default() -> Self {
        ModelCapabilities { tools: true, native_structured_output: false, context_window: None }
    }
}

/// One model call: the conversation, the tools offered and the generation settings. Borrowed from
/// the run, so a call copies nothing it does not need.
#[derive(Clone, Copy, Debug)]
pub struct ModelRequest<'a> {
    /// The conversation, oldest first.
    pub messages: &'a [Message],
    /// The tools the model may call.
    pub tools: &'a [ToolSpec],
    /// Sampling and length settings.
    pub generation: &'a Generation,
    /// A JSON schema the answer must match, for providers with native structured output.
    pub output_schema: Option<&'a serde_json::Value>,
    /// The run this call belongs to.
    pub run_id: &'a str,
    /// The user the run acts for.
    pub user_id: Option<&'a str>,
    /// The turn, from 1.
    pub turn: u32,
}

/// A chunk of streamed model output.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelChunk {
    /// Visible text.
    Text(String),
    /// Reasoning text, and the block's signature when the provider sends one.
    Thinking {
        /// The text.
        text: String,
        /// The signature, usually on the last chunk of a block.
        signature: Option<String>,
        /// The provider that minted the signature (see [`Thinking::provider`]), on the chunk that
        /// carries it.
        provider: Option<String>,
    },
    /// A piece of a tool call. Pieces with the same `index` are one call: the id and name arrive
    /// once, the arguments are concatenated.
    ToolCallDelta {
        /// The call's position in this turn.
        index: usize,
        /// The call's id, when this piece carries it.
        id: Option<String>,
        /// The tool's name, when this piece carries it.
        name: Option<String>,
        /// A piece of the arguments' JSON text.
        arguments: String,
    },
    /// Token usage (may arrive more than once; the last value of each field wins).
    Usage(Usage),
    /// The model stopped.
    Finish(FinishReason),
}

/// A whole model answer, assembled from chunks.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// The visible text.
    pub text: String,
    /// Reasoning blocks.
    pub thinking: Vec<Thinking>,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Tokens and cost.
    pub usage: Usage,
    /// Why the model stopped.
    pub finish_reason: FinishReason,
}

/// Sampling and length settings, sent with every model call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// The most output tokens per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// A seed for providers that support deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Provider-specific fields, passed through into the request body as they are.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Generation {
    /// Default settings (the provider's defaults).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the temperature.
    pub fn temperature(mut self, value: f32) -> Self {
        self.temperature = Some(value);
        self
    }

    /// Sets the most output tokens per call.
    pub fn max_output_tokens(mut self, value: u32) -> Self {
        self.max_output_tokens = Some(value);
        self
    }

    /// Sets top_p.
    pub fn top_p(mut self, value: f32) -> Self {
        self.top_p = Some(value);
        self
    }

    /// Adds a stop sequence.
    pub fn stop(mut self, value: impl Into<String>) -> Self {
        self.stop.push(value.into());
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, value: u64) -> Self {
        self.seed = Some(value);
        self
    }

    /// Adds a provider-specific field, passed through as it is.
    pub fn extension(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.extensions.insert(key.into(), value);
        self
    }
}

/// A shared model, as the agent holds it.
pub type SharedModel = Arc<dyn LanguageModel>;

impl fmt::Debug for dyn LanguageModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("name", &self.name()).field("provider", &self.provider()).finish()
    }
}

/// A model as given to an agent: a value, or a model string (`"echo"`, `"openai:gpt-4o"`, …) that
/// the runtime resolves when the agent is built.
#[derive(Clone)]
pub enum ModelRef {
    /// A model value.
    Model(SharedModel),
    /// A model string, resolved by the runtime.
    Name(String),
}

impl fmt::Debug for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Model(m) => f.debug_tuple("Model").field(&m.name()).finish(),
            ModelRef::Name(n) => f.debug_tuple("Name").field(n).finish(),
        }
    }
}

/// Anything an agent accepts as a model: a model value, a shared model, or a model string.
pub trait IntoModel {
    /// The model, or the string naming it.
    fn into_model_ref(self) -> Result<ModelRef, Error>;
}

impl<M: LanguageModel> IntoModel for M {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        Ok(ModelRef::Model(Arc::new(self)))
    }
}

impl<M: LanguageModel> IntoModel for Arc<M> {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        Ok(ModelRef::Model(self))
    }
}

impl IntoModel for SharedModel {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        Ok(ModelRef::Model(self))
    }
}

impl IntoModel for ModelRef {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        Ok(self)
    }
}

impl<T: IntoModel> IntoModel for Result<T, Error> {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        self?.into_model_ref()
    }
}

impl IntoModel for &str {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        Ok(ModelRef::Name(self.to_string()))
    }
}

impl IntoModel for String {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        Ok(ModelRef::Name(self))
    }
}

impl IntoModel for &String {
    fn into_model_ref(self) -> Result<ModelRef, Error> {
        Ok(ModelRef::Name(self.clone()))
    }
}
