//! # loom-core: the floor every Loom crate stands on
//!
//! The run's data ([`RunInput`], [`RunContext`], [`RunState`], [`RunResult`], [`Transcript`],
//! [`Artifact`], [`Scope`]), messages, events, errors and ids, and the protocol traits every
//! extension implements: [`LanguageModel`], [`Tool`], [`SessionStore`], [`Journal`], [`Memory`],
//! [`Capability`], and the governance traits ([`governance::Budget`], [`governance::Permissions`],
//! [`governance::ApprovalHandler`], [`governance::Hooks`], [`governance::Guardrail`],
//! [`governance::RateLimiter`], [`governance::AuditLog`]).
//!
//! No HTTP client, no database, no inference engine: a crate that implements a tool, a model or a
//! store depends on `loom-core` alone. Applications use `loom-agent`, which re-exports all of this
//! under the same paths (`loom_agent::message::Message`, `loom_agent::tool::Tool`, …).
//!
//! ```
//! use loom_core::tool::{Tool, ToolContext, ToolError, ToolFlags, ToolOutput};
//! use serde_json::{json, Value};
//!
//! struct Clock;
//!
//! #[async_trait::async_trait]
//! impl Tool for Clock {
//!     fn name(&self) -> &str { "clock" }
//!     fn description(&self) -> &str { "The current UTC time." }
//!     fn parameters(&self) -> Value { json!({"type": "object", "properties": {}}) }
//!     fn flags(&self) -> ToolFlags { ToolFlags::new().read_only() }
//!     async fn call(&self, _ctx: ToolContext, _args: Value) -> Result<ToolOutput, ToolError> {
//!         Ok(ToolOutput::text("12:00"))
//!     }
//! }
//! ```

pub mod capability;
pub mod embed;
pub mod error;
pub mod event;
pub mod governance;
mod id;
pub mod journal;
pub mod message;
pub mod model;
pub mod run;
pub mod signal;
pub mod store;
pub mod tool;

pub use capability::Capability;
pub use embed::Embedder;
pub use error::{Error, ModelError, RunError, RunErrorKind, RunFailure, StoreError, ToolError, ToolErrorKind};
pub use event::{Event, EventKind};
pub use id::new_id;
pub use journal::Journal;
pub use message::{ContentPart, FinishReason, Message, ToolCall, Usage};
pub use model::LanguageModel;
pub use run::{
    Artifact, CriterionVerdict, IntoKnowledge, KnowledgeItem, RunContext, RunInput, RunResult, RunState, RuntimeTask,
    Scope, Transcript,
};
pub use store::{IntoMemory, Memory, SessionStore};
pub use tool::{Tool, ToolContext, ToolOutput};
