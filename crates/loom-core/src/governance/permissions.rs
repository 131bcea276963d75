//! The permission protocol: who may run which tool, and approval by a person.

use serde_json::Value;

use crate::message::ToolCall;
use crate::run::Scope;
use crate::tool::ToolSpec;

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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "decision", content = "value", rename_all = "snake_case")]
pub enum Approval {
    /// Run it.
    Allow,
    /// Do not run it.
    Deny(String),
    /// Run it with these arguments.
    Edit(Value),
    /// Run it, and every later call of this tool in this run, without asking again.
    AllowForRun,
    /// Do not run it, nor any later call of this tool in this run.
    DenyForRun(String),
    /// Decide later: the run pauses durably (state `suspended`) until a decision arrives through
    /// `Agent::decide`, in this process or another one after a restart. Needs a durable journal;
    /// without one the call is denied.
    Defer,
}

/// Answers approval requests (a person at a terminal, a web UI, a policy service).
#[async_trait::async_trait]
pub trait ApprovalHandler: Send + Sync + 'static {
    /// Decides one request.
    async fn approve(&self, request: ApprovalRequest) -> Approval;
}
