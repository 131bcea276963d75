//! The audit protocol: an append-only record of what runs did.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::run::Scope;

/// One audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Who the run acts for.
    pub scope: Scope,
    /// What happened.
    pub action: AuditAction,
    /// Details.
    pub payload: Value,
}

/// An append-only audit log.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends one record.
    async fn append(&self, record: AuditRecord) -> Result<(), crate::Error>;
}

/// A shared audit log is an audit log (keep a handle to read it while the agent writes).
#[async_trait::async_trait]
impl<T: AuditLog + ?Sized> AuditLog for std::sync::Arc<T> {
    async fn append(&self, record: AuditRecord) -> Result<(), crate::Error> {
        (**self).append(record).await
    }
}

/// What an audit record is about. Serialized (and hashed into the chain) as its snake_case name:
/// `run_started`, `tool_call`, `tool_result`, `permission_decision`, `guardrail_triggered`,
/// `budget_exceeded`, `rate_limited`, `run_finished`, or an application's own name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
#[non_exhaustive]
pub enum AuditAction {
    /// A run started executing.
    RunStarted,
    /// A tool call is about to run.
    ToolCall,
    /// A tool call ended.
    ToolResult,
    /// A permission decision on a tool call.
    PermissionDecision,
    /// A guardrail redacted or blocked something.
    GuardrailTriggered,
    /// A budget limit was reached.
    BudgetExceeded,
    /// The rate limiter refused a model call.
    RateLimited,
    /// A run ended.
    RunFinished,
    /// An application's own action (appended through [`AuditLog::append`] directly).
    Custom(String),
}

impl AuditAction {
    /// The snake_case name written to the log.
    pub fn as_str(&self) -> &str {
        match self {
            AuditAction::RunStarted => "run_started",
            AuditAction::ToolCall => "tool_call",
            AuditAction::ToolResult => "tool_result",
            AuditAction::PermissionDecision => "permission_decision",
            AuditAction::GuardrailTriggered => "guardrail_triggered",
            AuditAction::BudgetExceeded => "budget_exceeded",
            AuditAction::RateLimited => "rate_limited",
            AuditAction::RunFinished => "run_finished",
            AuditAction::Custom(name) => name,
        }
    }
}

impl From<&str> for AuditAction {
    fn from(name: &str) -> Self {
        match name {
            "run_started" => AuditAction::RunStarted,
            "tool_call" => AuditAction::ToolCall,
            "tool_result" => AuditAction::ToolResult,
            "permission_decision" => AuditAction::PermissionDecision,
            "guardrail_triggered" => AuditAction::GuardrailTriggered,
            "budget_exceeded" => AuditAction::BudgetExceeded,
            "rate_limited" => AuditAction::RateLimited,
            "run_finished" => AuditAction::RunFinished,
            other => AuditAction::Custom(other.to_string()),
        }
    }
}

impl From<String> for AuditAction {
    fn from(name: String) -> Self {
        match AuditAction::from(name.as_str()) {
            AuditAction::Custom(_) => AuditAction::Custom(name),
            known => known,
        }
    }
}

impl From<AuditAction> for String {
    fn from(action: AuditAction) -> Self {
        action.as_str().to_string()
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
