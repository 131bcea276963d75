//! Per-tenant daily budgets (`[server.tenant_budget]`): what each tenant's runs may spend per UTC
//! day, counted from the runs this server starts or continues, and refused up front once spent.
//!
//! - A run counts against `max_runs` when it starts; its tokens and cost are added as each model
//!   call answers, and checked against the run's total when it ends (a run continued after an
//!   approval or a resume adds only what it spent beyond what was counted for it).
//! - A request that starts or continues a run (`POST /runs`, `/runs/{id}/resume`,
//!   `/runs/{id}/approvals/{call_id}`, `/sessions/{id}/signals`, `/v1/chat/completions`,
//!   `/v1/responses`) while the tenant's usage of the day has reached one of its limits is
//!   answered 429 with the code `tenant_budget_exceeded`, naming the limit; other tenants are not
//!   affected.
//! - Runs in flight when a limit is reached are not stopped: the day's figures may pass a token or
//!   cost limit by what they spend after it. (A per-run cap is the agent's own `budget`, enforced by
//!   `StandardBudget`.)
//! - Usage is kept in memory, so it starts from zero when the server restarts, and is per server
//!   process.
//! - `GET /budget` shows the caller's limits and usage of the day.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use loom_agent::config::{TenantBudgetConfig, TenantLimits};
use loom_agent::{EventKind, Run, Usage};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Tenant};

/// One tenant's usage of one day.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DayUsage {
    /// Runs started.
    pub runs: u64,
    /// Tokens used by finished runs.
    pub tokens: u64,
    /// Dollars spent by finished runs.
    pub cost_usd: f64,
}

#[derive(Default)]
struct Ledger {
    day: Option<NaiveDate>,
    usage: HashMap<Arc<str>, DayUsage>,
    /// Requests refused today, by tenant.
    refused: HashMap<Arc<str>, u64>,
    /// What each run of the day has been counted for already (tokens, cost).
    counted: HashMap<String, (u64, f64)>,
}

impl Ledger {
    /// Starts a new day when the date has changed.
    fn roll(&mut self, today: NaiveDate) {
        if self.day != Some(today) {
            self.day = Some(today);
            self.usage.clear();
            self.refused.clear();
            self.counted.clear();
        }
    }
}

/// The tenants' daily budgets and usage (cheap to clone).
#[derive(Clone, Default)]
pub struct TenantBudgets {
    config: Option<Arc<TenantBudgetConfig>>,
    ledger: Arc<Mutex<Ledger>>,
}

impl std::fmt::Debug for TenantBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantBudgets").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Which limit a tenant has reached, and the figures.
fn reached(limits: &TenantLimits, used: &DayUsage) -> Option<(&'static str, f64, f64)> {
    if let Some(max) = limits.max_runs
        && used.runs >= max
    {
        return Some(("max_runs", used.runs as f64, max as f64));
    }
    if let Some(max) = limits.max_tokens
        && used.tokens >= max
    {
        return Some(("max_tokens", used.tokens as f64, max as f64));
    }
    if let Some(max) = limits.max_cost_usd
        && used.cost_usd >= max
    {
        return Some(("max_cost_usd", used.cost_usd, max));
    }
    None
}

impl TenantBudgets {
    /// Budgets with these limits (`None`: unlimited, nothing is counted).
    pub fn new(config: Option<TenantBudgetConfig>) -> Self {
        TenantBudgets { config: config.map(Arc::new), ledger: Arc::default() }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        ledger.roll(Utc::now().date_naive());
        ledger
    }

    /// The tenant's limits (all unset without a configuration).
    pub fn limits(&self, tenant: &str) -> TenantLimits {
        self.config.as_ref().map(|c| c.limits_for(tenant)).unwrap_or_default()
    }

    /// The tenant's usage today.
    pub fn usage(&self, tenant: &str) -> DayUsage {
        self.ledger().usage.get(tenant).copied().unwrap_or_default()
    }

    /// Refuses (429, `tenant_budget_exceeded`) when the tenant's usage today has reached a limit.
    pub fn check(&self, tenant: &Tenant) -> Result<(), ApiError> {
        if self.config.is_none() {
            return Ok(());
        }
        let limits = self.limits(&tenant.0);
        let used = self.usage(&tenant.0);
        match reached(&limits, &used) {
            None => Ok(()),
            Some((limit, used, max)) => {
                *self.ledger().refused.entry(tenant.0.clone()).or_default() += 1;
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "tenant_budget_exceeded",
                    format!(
                        "tenant `{}` has reached its daily budget: {limit} ({used} of {max} today, UTC); \
                     no run can start until the next UTC day",
                        tenant.0
                    ),
                ))
            }
        }
    }

    /// The tenants' figures of the day in the Prometheus text format (nothing without a
    /// configuration): `loom_tenant_runs_today`, `loom_tenant_tokens_today`,
    /// `loom_tenant_cost_usd_today` and `loom_tenant_budget_refusals_today`, labelled by tenant.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        if self.config.is_none() {
            return String::new();
        }
        let ledger = self.ledger();
        let mut tenants: Vec<(&Arc<str>, &DayUsage)> = ledger.usage.iter().collect();
        tenants.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: &dyn Fn(&Arc<str>, &DayUsage) -> String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (tenant, used) in &tenants {
                let _ = writeln!(out, "{name}{{tenant=\"{tenant}\"}} {}", value(tenant, used));
            }
        };
        gauge("loom_tenant_runs_today", "Runs the tenant started today (UTC).", &|_, u| u.runs.to_string());
        gauge("loom_tenant_tokens_today", "Tokens the tenant's runs used today (UTC).", &|_, u| u.tokens.to_string());
        gauge("loom_tenant_cost_usd_today", "Dollars the tenant's runs cost today (UTC).", &|_, u| {
            u.cost_usd.to_string()
        });
        gauge(
            "loom_tenant_budget_refusals_today",
            "Requests refused today: the tenant's budget was spent.",
            &|t, _| ledger.refused.get(t).copied().unwrap_or(0).to_string(),
        );
        out
    }

    /// Counts a run the server started or continued: a start now (once per run and day), and what
    /// it spends as it goes and when it ends.
    pub(crate) fn watch(&self, tenant: &Tenant, run: &Run) {
        if self.config.is_none() {
            return;
        }
        {
            let mut ledger = self.ledger();
            if !ledger.counted.contains_key(run.id()) {
                ledger.counted.insert(run.id().to_string(), (0, 0.0));
                ledger.usage.entry(tenant.0.clone()).or_default().runs += 1;
            }
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let (this, tenant, run) = (self.clone(), tenant.clone(), run.clone());
        handle.spawn(async move {
            // While it runs: each model call (and judge call) as it answers, so that the tenant's
            // figures are current for the next request.
            let mut live = Usage::default();
            let mut events = std::pin::pin!(run.events().take_until(run.result()));
            while let Some(event) = events.next().await {
                let spent = match &event.kind {
                    EventKind::ModelResponse(r) => &r.usage,
                    EventKind::CriteriaChecked(c) => &c.usage,
                    _ => continue,
                };
                live.add(spent);
                this.spent(&tenant, run.id(), &live);
            }
            // When it ends: the run's own total (child runs included).
            let result = run.result().await;
            this.spent(&tenant, run.id(), &result.usage);
        });
    }

    /// Counts a run's cumulative usage `usage`: adds what goes beyond what was counted for it
    /// before (so a resumed run, whose events and total include the part before the pause, is not
    /// counted twice).
    fn spent(&self, tenant: &Tenant, run_id: &str, usage: &Usage) {
        let mut ledger = self.ledger();
        let (tokens, cost) = (usage.total_tokens(), usage.cost_usd);
        let before = ledger.counted.get(run_id).copied().unwrap_or((0, 0.0));
        ledger.counted.insert(run_id.to_string(), (tokens.max(before.0), cost.max(before.1)));
        let day = ledger.usage.entry(tenant.0.clone()).or_default();
        day.tokens += tokens.saturating_sub(before.0);
        day.cost_usd += (cost - before.1).max(0.0);
    }
}

/// The middleware on the routes that start or continue runs: 429 when the caller's tenant has
/// spent its budget of the day.
pub(crate) async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(tenant) = req.extensions().get::<Tenant>()
        && let Err(e) = state.budgets.check(tenant)
    {
        return e.into_response();
    }
    next.run(req).await
}

fn limits_json(l: &TenantLimits) -> Value {
    json!({"max_cost_usd": l.max_cost_usd, "max_tokens": l.max_tokens, "max_runs": l.max_runs})
}

/// `GET /budget`: the caller's limits and usage today.
pub(crate) async fn show(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
) -> ApiResult<Json<Value>> {
    let limits = state.budgets.limits(&tenant.0);
    let used = state.budgets.usage(&tenant.0);
    let exceeded = reached(&limits, &used).map(|(l, _, _)| l);
    Ok(Json(json!({
        "tenant": &*tenant.0,
        "day": Utc::now().date_naive().to_string(),
        "limits": limits_json(&limits),
        "usage": {"runs": used.runs, "tokens": used.tokens, "cost_usd": used.cost_usd},
        "exceeded": exceeded,
    })))
}
