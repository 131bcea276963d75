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
///
/// `append` returns an error when the record was not stored (a full disk, a lost connection), so
/// that the caller can stop rather than go on unaudited.
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

/// Why a file was refused as an audit log to append to (see
/// [`Error::AuditLogRefused`](crate::Error::AuditLogRefused)). Nothing was written to it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditRefusal {
    /// The file is not empty, and its first or last line is not an audit entry: it is some other
    /// file.
    #[error("not an audit log: {detail}")]
    NotAnAuditLog {
        /// Which line is not an entry, and why.
        detail: String,
    },
    /// The last entry is not signed with the key given: the log belongs to another key.
    #[error("its last entry (seq {seq}) is not signed with this key: the log was written with another one")]
    WrongKey {
        /// The last entry's `seq`.
        seq: u64,
    },
    /// The log ends before its signed head: entries were cut from its end, or the file was
    /// emptied. Appending would hide it.
    #[error(
        "the log is shorter than its head: it ends at seq {log_seq}, its head is at seq {head_seq}; \
         entries were cut from its end (check it with `loom audit verify`)"
    )]
    ShorterThanHead {
        /// The last `seq` in the log (0 when it has no entry).
        log_seq: u64,
        /// The `seq` its head names.
        head_seq: u64,
    },
    /// The log's entry at its head's `seq` is not the one the head names: the log was rewritten.
    #[error("the entry at seq {seq} is not the one its head names: the log was rewritten")]
    HeadMismatch {
        /// The head's `seq`.
        seq: u64,
    },
    /// The head file beside the log holds no head signed with this key (another key, or damage).
    #[error("its head file holds no head signed with this key ({detail})")]
    BadHead {
        /// What is wrong with it.
        detail: String,
    },
}
