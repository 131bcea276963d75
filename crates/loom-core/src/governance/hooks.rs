//! Hooks around a run, each model call and each tool call.

use serde_json::Value;

use crate::event::{Event, ToolResultEvent};
use crate::message::{Message, ToolCall};
use crate::model::ModelResponse;
use crate::run::{RunInput, RunResult, Scope};

/// What a run-level or model-level hook decides.
#[derive(Clone, Debug, PartialEq)]
pub enum HookAction {
    /// Go on.
    Continue,
    /// Stop the run: it ends interrupted with reason `guardrail: <reason>`, and adds nothing to
    /// its session's history.
    Stop(String),
}

/// What a before-tool hook decides.
#[derive(Clone, Debug, PartialEq)]
pub enum ToolHookAction {
    /// Run the call as it is.
    Continue,
    /// Refuse the call; the model receives the reason as an error result.
    Deny(String),
    /// Run the call with these arguments instead (checked against the schema again).
    Rewrite(Value),
}

/// Hooks around a run, each model call and each tool call, and on every event.
///
/// Order: hooks run in the order they were added. `before_tool` hooks chain: a rewrite is what the
/// next hook sees, and the first deny wins. Hooks run after permissions: a hook cannot approve a call
/// that permissions refused.
#[async_trait::async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Before the first model call.
    async fn before_run(&self, _scope: &Scope, _input: &RunInput) -> HookAction {
        HookAction::Continue
    }

    /// Before each model call.
    async fn before_model(&self, _scope: &Scope, _turn: u32, _messages: &[Message]) -> HookAction {
        HookAction::Continue
    }

    /// After each model call.
    async fn after_model(&self, _scope: &Scope, _turn: u32, _response: &ModelResponse) {}

    /// Before each tool call (after permissions).
    async fn before_tool(&self, _scope: &Scope, _call: &ToolCall, _args: &Value) -> ToolHookAction {
        ToolHookAction::Continue
    }

    /// After each tool call.
    async fn after_tool(&self, _scope: &Scope, _call: &ToolCall, _result: &ToolResultEvent) {}

    /// After the run ended, whatever its state.
    async fn after_run(&self, _scope: &Scope, _result: &RunResult) {}

    /// On every event, synchronously, as it is appended to the run's log. Keep it quick.
    fn on_event(&self, _event: &Event) {}
}
