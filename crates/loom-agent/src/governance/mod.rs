//! Governance: hooks, permissions and approval, budgets, guardrails, rate limits and the audit log.
//!
//! Each is a small trait. A bare agent has no hooks, budget, guardrails, rate limiter or audit log,
//! and pays nothing for them. Permissions always apply: by default a tool flagged `destructive` or
//! `requires_permission` needs approval, and with no approval handler the answer is no.

mod audit;
mod audit_file;
#[cfg(feature = "postgres")]
mod audit_postgres;
mod budget;
mod guardrails;
mod permissions;
mod rate_limit;
mod supervised;

pub use audit::{
    AuditAction, AuditEntry, AuditHead, AuditLog, AuditRecord, GENESIS_HASH, InMemoryAuditLog, Problem, ProblemKind,
    REDACTED, VerifyReport, canonical_json, redact, redact_text,
};
pub use audit_file::FileAuditLog;
#[cfg(feature = "postgres")]
pub use audit_postgres::{DEFAULT_AUDIT_TABLE, PostgresAuditLog};
pub use budget::{Budget, BudgetNotice, BudgetVerdict, StandardBudget, UserUsage};
pub use guardrails::{InjectionAction, InjectionGuard, PiiAction, PiiGuard, PiiKind, RegexAction, RegexGuard};
pub use loom_core::governance::AuditRefusal;
pub use loom_core::governance::{
    DecidedBy, GuardAction, GuardStage, GuardVerdict, Guardrail, HookAction, Hooks, PermissionDecision, Scope,
    ToolHookAction,
};
pub use permissions::{Approval, ApprovalHandler, ApprovalRequest, Decision, DefaultPermissions, Permissions};
pub use permissions::{FnApproval, PerUserPermissions, PermissionMode, StandardPermissions};
pub use rate_limit::RateLimiter;
pub use rate_limit::{RateLimitMode, TokenBucketLimiter};
pub use supervised::Supervised;
