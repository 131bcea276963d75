//! The budget protocol: limits on what runs may spend.

use crate::message::Usage;
use crate::run::Scope;

/// Which limit a budget verdict is about, with the amounts when known.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetNotice {
    /// The limit's name, such as `max_tokens` or `per_user_max_cost_usd`.
    pub limit: String,
    /// How much has been used.
    pub used: Option<f64>,
    /// The limit.
    pub max: Option<f64>,
}

impl BudgetNotice {
    /// A notice with amounts.
    pub fn new(limit: impl Into<String>, used: f64, max: f64) -> Self {
        BudgetNotice { limit: limit.into(), used: Some(used), max: Some(max) }
    }
}

impl From<&str> for BudgetNotice {
    fn from(limit: &str) -> Self {
        BudgetNotice { limit: limit.to_string(), used: None, max: None }
    }
}

impl From<String> for BudgetNotice {
    fn from(limit: String) -> Self {
        BudgetNotice { limit, used: None, max: None }
    }
}

/// A budget's verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum BudgetVerdict {
    /// Within limits.
    Ok,
    /// Past the soft-warning threshold of a limit: a `budget.warning` event (once per limit and run).
    Warn(BudgetNotice),
    /// A limit is reached; the run stops interrupted with reason `budget: <limit>`.
    Exceeded(BudgetNotice),
}

/// Limits on what runs may spend, checked before every model call and tool call.
pub trait Budget: Send + Sync + 'static {
    /// Checks the limits given what this run has spent so far.
    fn check(&self, scope: &Scope, run_usage: &Usage, turns: u32, tool_calls: u32) -> BudgetVerdict;

    /// Records the usage of one model call.
    fn record(&self, _scope: &Scope, _usage: &Usage) {}

    /// A run is starting (for wall-clock limits).
    fn run_started(&self, _scope: &Scope) {}

    /// A run has ended.
    fn run_finished(&self, _scope: &Scope) {}
}
