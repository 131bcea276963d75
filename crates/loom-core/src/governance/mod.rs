//! The governance protocols: hooks, permissions and approval, budgets, guardrails, rate limits and
//! the audit log. Each is a small trait; the standard implementations live in `loom-agent`.

mod audit;
mod budget;
mod decision;
mod guardrail;
mod hooks;
mod permissions;
mod rate_limit;

pub use crate::run::Scope;
pub use audit::{AuditAction, AuditLog, AuditRecord, AuditRefusal};
pub use budget::{Budget, BudgetNotice, BudgetVerdict};
pub use decision::{DecidedBy, GuardAction, PermissionDecision};
pub use guardrail::{GuardStage, GuardVerdict, Guardrail};
pub use hooks::{HookAction, Hooks, ToolHookAction};
pub use permissions::{Approval, ApprovalHandler, ApprovalRequest, Decision, Permissions};
pub use rate_limit::RateLimiter;
