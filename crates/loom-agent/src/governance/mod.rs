//! Governance slots: hooks, permissions and approval, budget, and the audit log.
//!
//! Each is a small trait. A bare agent has no hooks, no budget and no audit log, and pays nothing
//! for them. Permissions always apply: by default a tool flagged `destructive` or
//! `requires_permission` needs approval, and with no approval handler the answer is no.

use std::sync::Arc;

use serde_json::Value;

use crate::agent::{RunInput, RunResult};
use crate::event::{Event, ToolResultEvent};
use crate::message::{Message, ToolCall, Usage};
use crate::model::ModelResponse;
use crate::tool::ToolSpec;

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

/// A permission decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The call may run.
    Allow,
    /// The call may not run.
    Deny(String),
    /// A person (the approval handler) must decide.
    Ask(String),
}

/// Decides whether a tool call may run.
#[async_trait::async_trait]
pub trait Permissions: Send + Sync + 'static {
    /// The decision for one call.
    async fn check(&self, scope: &Scope, tool: &ToolSpec, args: &Value) -> Decision;
}

/// The default policy: tools flagged `destructive` or `requires_permission` need approval; every
/// other tool is allowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPermissions;

#[async_trait::async_trait]
impl Permissions for DefaultPermissions {
    async fn check(&self, _scope: &Scope, tool: &ToolSpec, _args: &Value) -> Decision {
        if tool.flags.destructive {
            Decision::Ask(format!("`{}` is destructive", tool.name))
        } else if tool.flags.requires_permission {
            Decision::Ask(format!("`{}` requires permission", tool.name))
        } else {
            Decision::Allow
        }
    }
}

/// A request for approval of one tool call.
#[derive(Clone, Debug)]
pub struct ApprovalRequest {
    /// Who the run acts for.
    pub scope: Scope,
    /// The tool.
    pub tool: ToolSpec,
    /// The call.
    pub call: ToolCall,
    /// The parsed arguments.
    pub args: Value,
    /// Why approval is needed.
    pub reason: String,
}

/// An approval decision.
#[derive(Clone, Debug, PartialEq)]
pub enum Approval {
    /// Run it.
    Allow,
    /// Do not run it.
    Deny(String),
    /// Run it with these arguments.
    Edit(Value),
}

/// Answers approval requests (a person at a terminal, a web UI, a policy service).
#[async_trait::async_trait]
pub trait ApprovalHandler: Send + Sync + 'static {
    /// Decides one request.
    async fn approve(&self, request: ApprovalRequest) -> Approval;
}

/// A budget's verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum BudgetVerdict {
    /// Within limits.
    Ok,
    /// A limit is reached; the run stops interrupted with reason `budget: <limit>`.
    Exceeded(String),
}

/// Limits on what runs may spend, checked before every model call and tool call.
pub trait Budget: Send + Sync + 'static {
    /// Checks the limits given what this run has spent so far.
    fn check(&self, scope: &Scope, run_usage: &Usage, turns: u32, tool_calls: u32) -> BudgetVerdict;

    /// Records the usage of one model call.
    fn record(&self, _scope: &Scope, _usage: &Usage) {}
}

/// One audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Who the run acts for.
    pub scope: Scope,
    /// `run_started`, `tool_call`, `tool_result` or `run_finished`.
    pub action: &'static str,
    /// Details.
    pub payload: Value,
}

/// An append-only audit log.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends one record.
    async fn append(&self, record: AuditRecord) -> Result<(), crate::Error>;
}
