//! The audit log: an append-only record of what runs did.

use serde_json::Value;

use super::Scope;

/// One audit record.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// Who the run acts for.
    pub scope: Scope,
    /// `run_started`, `tool_call`, `tool_result`, `permission_decision`, `guardrail_triggered`,
    /// `budget_exceeded`, `rate_limited` or `run_finished`.
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
