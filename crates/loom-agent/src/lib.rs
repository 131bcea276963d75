//! # Loom: an agent runtime for Rust
//!
//! An [`Agent`] is a configured loop driver: instructions, a model, tools, and the policies around
//! them. It is a cheap-to-clone value that serves any number of concurrent runs and users. Each run
//! has an id, an honest final [`RunState`], and a live log of typed [`Event`]s.
//!
//! ```
//! use loom_agent::prelude::*;
//! use loom_agent::model::{ScriptedModel, ScriptedTurn};
//! use serde_json::json;
//!
//! /// Get the weather for a city.
//! #[tool(read_only, concurrency_safe)]
//! async fn get_weather(city: String) -> Result<String, ToolError> {
//!     Ok(format!("{city}: sunny"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), loom_agent::Error> {
//! let model = ScriptedModel::new([
//!     ScriptedTurn::tool_call("get_weather", json!({"city": "Tokyo"})),
//!     ScriptedTurn::text("It is sunny in Tokyo."),
//! ]);
//! let agent = Agent::builder()
//!     .instructions("You are a weather assistant.")
//!     .model(model)
//!     .tool(get_weather)
//!     .build()?;
//!
//! let result = agent.run("What's the weather in Tokyo?").await?;
//! assert_eq!(result.state, RunState::Completed);
//! assert_eq!(result.output, "It is sunny in Tokyo.");
//! # Ok(())
//! # }
//! ```
//!
//! The layers, top down: [`team`], [`workflow`] and [`config`] (compositions of agents, which
//! `agent` never imports), [`agent`] (Agent, Session, Run, the driver), [`architecture`] (the ReAct
//! loop), [`runtime`] (`RunCx`, the one pipeline for a run's side effects), then the standard
//! implementations — [`model`], [`tool`](mod@tool), [`store`], [`governance`], [`capability`] — over
//! the `loom-core` crate's types and protocols, re-exported here as [`run`], [`message`], [`event`]
//! and [`error`].
//!
//! ## Cargo features
//!
//! - `providers` (default): model providers over HTTP (OpenAI, Anthropic, Gemini, compatible servers).
//! - `postgres`: the PostgreSQL audit log.
//! - `local`: the embedded local model, `model::local` (SmolLM2-135M-Instruct by default, in pure Rust
//!   with candle; constrained decoding with llguidance). Off by default to keep the core build light;
//!   the `loom` CLI and the examples turn it on. With it, an agent built without a model and without
//!   a provider key in the environment runs on the local model.

pub mod agent;
pub mod architecture;
pub mod capability;
pub mod config;
pub mod governance;
pub mod knowledge;
pub mod memory;
pub mod model;
pub mod output;
pub mod runtime;
pub mod store;
pub mod team;
pub mod telemetry;
pub mod tool;
pub mod workflow;

pub use loom_core::{embed, error, event, message, run, signal};

pub use agent::{
    Agent, AgentBuilder, ApprovalRule, ContextPolicy, CriteriaGate, ResumeOptions, Run, RunRequest, RunStream, Runtime,
    RuntimeBuilder, Session, SessionConfig,
};
pub use agent::{QueueReport, QueueWorker, Receipt, Worker, WorkerReport, prune_periodically, queued_request};
pub use loom_agent_macros::tool;
pub use loom_core::error::{Error, ModelError, RunError, RunErrorKind, RunFailure, ToolError, ToolErrorKind};
pub use loom_core::event::{Event, EventKind};
pub use loom_core::message::{ContentPart, FinishReason, Message, ToolCall, Usage};
pub use loom_core::new_id;
pub use loom_core::run::{
    Artifact, CriterionVerdict, KnowledgeItem, RunContext, RunInput, RunResult, RunState, RuntimeTask, Transcript,
};
pub use memory::parse_embedder;
pub use model::{Generation, LanguageModel, Model};
pub use tool::{Tool, ToolContext, ToolOutput};

/// The names most programs need: `use loom_agent::prelude::*;`.
pub mod prelude {
    pub use crate::agent::{Agent, Run, RunRequest, Session, SessionConfig};
    pub use crate::capability;
    pub use crate::error::{Error, RunErrorKind, ToolError};
    pub use crate::event::{Event, EventKind};
    pub use crate::model::{Generation, LanguageModel, Model};
    pub use crate::run::{RunContext, RunResult, RunState, RuntimeTask};
    pub use crate::tool;
    pub use crate::tool::{Json, Tool, ToolContext, ToolOutput};
}

/// Re-exports used by the code that `#[tool]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use async_trait;
    pub use schemars;
    pub use serde;
    pub use serde_json;
    pub use tokio;
}
