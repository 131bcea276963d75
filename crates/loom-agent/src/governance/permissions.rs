//! Permissions: who may run which tool, and approval by a person.

use serde_json::Value;

use super::Scope;
use crate::message::ToolCall;
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
    /// Run it, and every later call of this tool in this run, without asking again.
    AllowForRun,
    /// Do not run it, nor any later call of this tool in this run.
    DenyForRun(String),
}

/// Answers approval requests (a person at a terminal, a web UI, a policy service).
#[async_trait::async_trait]
pub trait ApprovalHandler: Send + Sync + 'static {
    /// Decides one request.
    async fn approve(&self, request: ApprovalRequest) -> Approval;
}
