//! Per-tenant daily budgets (`[server.tenant_budget]`): what each tenant's runs may spend per UTC
//! day, counted from the runs the servers start or continue, and refused up front once spent.
//!
//! - A run counts against `max_runs` when it starts; its tokens and cost are added as each model
//!   call answers, and checked against the run's total when it ends (a run continued after an
//!   approval or a resume adds only what it spent beyond what was counted for it).
//! - A request that starts or continues a run (`POST /runs`, `/runs/{id}/resume`,
//!   `/runs/{id}/approvals/{call_id}`, `/sessions/{id}/signals`, `/v1/chat/completions`,
//!   `/v1/responses`, and A2A's and MCP's sending calls) while the tenant's usage of the day has
//!   reached one of its limits is answered 429 with the code `tenant_budget_exceeded`, naming the
//!   limit; other tenants are not affected.
//! - Runs in flight when a limit is reached are not stopped: the day's figures may pass a token or
//!   cost limit by what they spend after it. (A per-run cap is the agent's own `budget`, enforced by
//!   `StandardBudget`.)
//! - Where usage is counted: with a database ([`TenantBudgets::with_store`]; `loom serve` uses the
//!   journal's SQLite or PostgreSQL database), one row per tenant and day with atomic increments,
//!   and one per run and day with what it was counted for, so every server process on that
//!   database and a restarted one share the count. The routes check and reserve the start in one
//!   atomic statement ([`TenantBudgets::reserve`]: a conditional upsert), so servers starting runs
//!   at the same moment cannot pass `max_runs`; A2A's and MCP's sending calls reserve the same
//!   way around the run they start ([`TenantBudgets::reserving`]). Without a database, in memory:
//!   per server process, from zero at each start.
//! - `GET /budget` shows the caller's limits and usage of the day.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, Utc};
use futures::StreamExt;
use loom_agent::config::{TenantBudgetConfig, TenantLimits};
use loom_agent::store::{TenantDayUsage, TenantUsageStore};
use loom_agent::{EventKind, Run, Usage};
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Tenant};

/// A run start the request being served reserved (the guard's atomic check-and-reserve): taken by
/// the first run the request starts, given back when it starts none.
#[derive(Clone, Debug)]
pub(crate) struct Reserved {
    tenant: Arc<str>,
    day: String,
}

tokio::task_local! {
    static RESERVED: std::cell::RefCell<Option<Reserved>>;
}

/// The reservation of the request being served for `tenant`, taken (at most once).
fn take_reserved(tenant: &Tenant) -> Option<Reserved> {
    RESERVED
        .try_with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_some_and(|r| r.tenant == tenant.0) { c.take() } else { None }
        })
        .ok()
        .flatten()
}

/// How old the figures the synchronous check ([`TenantBudgets::check`]) uses may be before it reads
/// them again.
pub const REFRESH: Duration = Duration::from_secs(1);

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

impl From<TenantDayUsage> for DayUsage {
    fn from(u: TenantDayUsage) -> Self {
        DayUsage { runs: u.runs, tokens: u.tokens, cost_usd: u.cost_usd }
    }
}

#[derive(Default)]
struct Ledger {
    day: Option<NaiveDate>,
    /// Without a store: the usage. With one: the figures last read from it (and when).
    usage: HashMap<Arc<str>, DayUsage>,
    read_at: HashMap<Arc<str>, Instant>,
    /// With a store: run starts of this process not yet written to it, by tenant.
    pending: HashMap<Arc<str>, u64>,
    /// Requests refused today, by tenant.
    refused: HashMap<Arc<str>, u64>,
    /// What each run of the day has been counted for already (tokens, cost).
    counted: HashMap<String, (u64, f64)>,
}

impl Ledger {
    /// Starts a new day when the date has changed; `true` when it did.
    fn roll(&mut self, today: NaiveDate) -> bool {
        if self.day == Some(today) {
            return false;
        }
        let first = self.day.is_none();
        self.day = Some(today);
        self.usage.clear();
        self.read_at.clear();
        self.refused.clear();
        self.counted.clear();
        !first
    }
}

/// The tenants' daily budgets and usage (cheap to clone).
#[derive(Clone, Default)]
pub struct TenantBudgets {
    config: Option<Arc<TenantBudgetConfig>>,
    ledger: Arc<Mutex<Ledger>>,
    store: Option<Arc<dyn TenantUsageStore>>,
    /// Reading the store with the pending starts (shared) against writing a start and taking it
    /// off the pending ones (exclusive): a check never counts a start twice or misses it.
    gate: Arc<tokio::sync::RwLock<()>>,
}

impl std::fmt::Debug for TenantBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantBudgets")
            .field("config", &self.config)
            .field("store", &self.store.is_some())
            .finish_non_exhaustive()
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

fn today() -> String {
    Utc::now().date_naive().to_string()
}

impl TenantBudgets {
    /// Budgets with these limits (`None`: unlimited, nothing is counted), counted in memory.
    pub fn new(config: Option<TenantBudgetConfig>) -> Self {
        TenantBudgets { config: config.map(Arc::new), ..Default::default() }
    }

    /// Counts usage in `store` (a database every server process shares) instead of in memory.
    pub fn with_store(mut self, store: Arc<dyn TenantUsageStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// The store usage is counted in, if any.
    pub fn store(&self) -> Option<&Arc<dyn TenantUsageStore>> {
        self.store.as_ref()
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let today = Utc::now().date_naive();
        if ledger.roll(today)
            && let Some(store) = self.store.clone()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            // A new day: what was counted before yesterday goes.
            let keep_from = (today - chrono::Days::new(1)).to_string();
            handle.spawn(async move {
                if let Err(e) = store.prune_tenant_usage(&keep_from).await {
                    tracing::warn!(error = %e, "pruning the tenants' past usage failed");
                }
            });
        }
        ledger
    }

    /// The tenant's limits (all unset without a configuration).
    pub fn limits(&self, tenant: &str) -> TenantLimits {
        self.config.as_ref().map(|c| c.limits_for(tenant)).unwrap_or_default()
    }

    /// The tenant's usage today as this process knows it now: without a store, the count; with
    /// one, the figures last read from it plus this process's starts not yet written.
    pub fn usage_known(&self, tenant: &str) -> DayUsage {
        let ledger = self.ledger();
        let mut used = ledger.usage.get(tenant).copied().unwrap_or_default();
        used.runs += ledger.pending.get(tenant).copied().unwrap_or(0);
        used
    }

    /// The tenant's usage today: read from the store when there is one.
    pub async fn usage(&self, tenant: &str) -> Result<DayUsage, loom_agent::Error> {
        let Some(store) = &self.store else { return Ok(self.usage_known(tenant)) };
        let _shared = self.gate.read().await;
        let stored: DayUsage = store.tenant_usage(tenant, &today()).await?.into();
        let mut ledger = self.ledger();
        let key: Arc<str> = Arc::from(tenant);
        ledger.usage.insert(key.clone(), stored);
        ledger.read_at.insert(key, Instant::now());
        let mut used = stored;
        used.runs += ledger.pending.get(tenant).copied().unwrap_or(0);
        Ok(used)
    }

    /// Refuses (429, `tenant_budget_exceeded`) when the tenant's usage today, as read from the
    /// store when there is one, has reached a limit.
    pub async fn check_fresh(&self, tenant: &Tenant) -> Result<(), ApiError> {
        if self.config.is_none() {
            return Ok(());
        }
        let used = self.usage(&tenant.0).await?;
        self.verdict(tenant, &used)
    }

    /// Refuses (429, `tenant_budget_exceeded`) when the tenant's usage today has reached a limit,
    /// without waiting: with a store, by the figures this process last read (read again, for the
    /// next check, when older than [`REFRESH`]).
    pub fn check(&self, tenant: &Tenant) -> Result<(), ApiError> {
        if self.config.is_none() {
            return Ok(());
        }
        let stale =
            self.store.is_some() && self.ledger().read_at.get(&tenant.0).is_none_or(|at| at.elapsed() >= REFRESH);
        if stale && let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (this, name) = (self.clone(), tenant.0.clone());
            handle.spawn(async move {
                if let Err(e) = this.usage(&name).await {
                    tracing::warn!(tenant = %name, error = %e, "reading the tenant's usage failed");
                }
            });
        }
        self.verdict(tenant, &self.usage_known(&tenant.0))
    }

    /// Checks and reserves a run start in one atomic step: with a store, a conditional upsert
    /// that counts the start only while the tenant's day is under its limits (two servers starting
    /// runs at the same moment cannot both pass the last one); in memory, under the ledger's lock.
    /// 429 (`tenant_budget_exceeded`) when a limit is reached; `None` without a configuration.
    pub(crate) async fn reserve(&self, tenant: &Tenant) -> Result<Option<Reserved>, ApiError> {
        if self.config.is_none() {
            return Ok(None);
        }
        let limits = self.limits(&tenant.0);
        let reserved = Reserved { tenant: tenant.0.clone(), day: today() };
        let Some(store) = &self.store else {
            let mut ledger = self.ledger();
            let used = ledger.usage.get(&tenant.0).copied().unwrap_or_default();
            if reached(&limits, &used).is_some() {
                drop(ledger);
                return Err(self.refusal(tenant, &used));
            }
            ledger.usage.entry(tenant.0.clone()).or_default().runs += 1;
            return Ok(Some(reserved));
        };
        let (runs, tokens, cost) = (limits.max_runs, limits.max_tokens, limits.max_cost_usd);
        if store.reserve_tenant_run(&tenant.0, &reserved.day, runs, tokens, cost).await? {
            return Ok(Some(reserved));
        }
        let used = self.usage(&tenant.0).await?;
        Err(self.refusal(tenant, &used))
    }

    /// Runs `start` (which starts at most one run for `tenant`) under a reserved run start, as the
    /// HTTP routes' [`guard`] does: refused (429) when a limit is reached; the run `start` starts
    /// takes the reservation, and it is given back when `start` started none. What A2A's and
    /// MCP's sending calls do (their other methods spend nothing, so the route has no guard).
    pub(crate) async fn reserving<T, E: From<ApiError>>(
        &self,
        tenant: &Tenant,
        start: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let Some(reserved) = self.reserve(tenant).await? else { return start.await };
        let cell = std::cell::RefCell::new(Some(reserved));
        let (result, left) = RESERVED
            .scope(cell, async {
                let result = start.await;
                (result, RESERVED.with(|c| c.borrow_mut().take()))
            })
            .await;
        if let Some(r) = left {
            self.release(r).await;
        }
        result
    }

    /// Gives back a reservation no run took.
    async fn release(&self, r: Reserved) {
        let Some(store) = &self.store else {
            if let Some(day) = self.ledger().usage.get_mut(&r.tenant) {
                day.runs = day.runs.saturating_sub(1);
            }
            return;
        };
        if let Err(e) = store.release_tenant_run(&r.tenant, &r.day).await {
            tracing::warn!(tenant = %r.tenant, error = %e, "giving back a reserved run start failed");
        }
    }

    /// A run queued for a worker by the request being served: its reserved start is tied to it
    /// (the worker that runs it then counts its spend, not a second start).
    pub(crate) async fn adopt(&self, tenant: &Tenant, run_id: &str) {
        let (Some(r), Some(store)) = (take_reserved(tenant), &self.store) else { return };
        if let Err(e) = store.adopt_tenant_run(&r.tenant, &r.day, run_id).await {
            tracing::warn!(run_id, error = %e, "tying a reserved start to its run failed");
        }
    }

    /// The 429 of a refused reservation.
    fn refusal(&self, tenant: &Tenant, used: &DayUsage) -> ApiError {
        match self.verdict(tenant, used) {
            Err(e) => e,
            // Reached between the reservation and this read: the run limit, by another process.
            Ok(()) => {
                let limits = self.limits(&tenant.0);
                let at = DayUsage { runs: used.runs.max(limits.max_runs.unwrap_or(used.runs)), ..*used };
                self.verdict(tenant, &at).err().unwrap_or_else(|| {
                    ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "tenant_budget_exceeded",
                        format!("tenant `{}` has reached its daily budget", tenant.0),
                    )
                })
            }
        }
    }

    fn verdict(&self, tenant: &Tenant, used: &DayUsage) -> Result<(), ApiError> {
        let limits = self.limits(&tenant.0);
        let Some((limit, used, max)) = reached(&limits, used) else { return Ok(()) };
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

    /// The tenants' figures of the day in the Prometheus text format (nothing without a
    /// configuration): `loom_tenant_runs_today`, `loom_tenant_tokens_today`,
    /// `loom_tenant_cost_usd_today` (from the store when there is one: every process's runs) and
    /// `loom_tenant_budget_refusals_today` (this process's refusals), labelled by tenant.
    pub async fn render(&self) -> String {
        use std::fmt::Write as _;
        if self.config.is_none() {
            return String::new();
        }
        let stored = match &self.store {
            Some(store) => match store.tenant_usages(&today()).await {
                Ok(rows) => Some(rows),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the tenants' usage for /metrics failed");
                    None
                }
            },
            None => None,
        };
        let ledger = self.ledger();
        let mut tenants: Vec<(Arc<str>, DayUsage)> = match stored {
            Some(rows) => rows.into_iter().map(|(t, u)| (Arc::from(t), u.into())).collect(),
            None => ledger.usage.iter().map(|(t, u)| (t.clone(), *u)).collect(),
        };
        tenants.sort_by(|a, b| a.0.cmp(&b.0));
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
            "Requests this server refused today: the tenant's budget was spent.",
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
        let handle = tokio::runtime::Handle::try_current().ok();
        if self.store.is_some() && handle.is_none() {
            tracing::warn!(run_id = %run.id(), "no tokio runtime: the run is not counted against the tenant's budget");
            return;
        }
        let (first, reserved) = {
            let mut ledger = self.ledger();
            let first = !ledger.counted.contains_key(run.id());
            // The start the request reserved, when this is its first run: counted already.
            let reserved = if first { take_reserved(tenant) } else { None };
            if first {
                ledger.counted.insert(run.id().to_string(), (0, 0.0));
                if reserved.is_some() {
                } else if self.store.is_some() {
                    *ledger.pending.entry(tenant.0.clone()).or_default() += 1;
                } else {
                    ledger.usage.entry(tenant.0.clone()).or_default().runs += 1;
                }
            }
            (first, reserved)
        };
        let Some(handle) = handle else { return };
        let (this, tenant, run) = (self.clone(), tenant.clone(), run.clone());
        handle.spawn(async move {
            if let (Some(r), Some(store)) = (&reserved, &this.store) {
                if let Err(e) = store.adopt_tenant_run(&r.tenant, &r.day, run.id()).await {
                    tracing::warn!(run_id = %run.id(), error = %e, "tying a reserved start to its run failed");
                }
            } else if first && let Some(store) = &this.store {
                let _exclusive = this.gate.write().await;
                match store.count_tenant_run(&tenant.0, &today(), run.id(), 0, 0.0).await {
                    Ok(day) => this.remember(&tenant, day.into()),
                    Err(e) => tracing::warn!(run_id = %run.id(), error = %e, "counting the run's start failed"),
                }
                if let Some(n) = this.ledger().pending.get_mut(&tenant.0) {
                    *n = n.saturating_sub(1);
                }
            }
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
                this.spent(&tenant, run.id(), &live).await;
            }
            // When it ends: the run's own total (child runs included).
            let result = run.result().await;
            this.spent(&tenant, run.id(), &result.usage).await;
        });
    }

    /// The tenant's figures as the store answered them.
    fn remember(&self, tenant: &Tenant, day: DayUsage) {
        let mut ledger = self.ledger();
        ledger.usage.insert(tenant.0.clone(), day);
        ledger.read_at.insert(tenant.0.clone(), Instant::now());
    }

    /// Counts a run's cumulative usage `usage`: adds what goes beyond what was counted for it
    /// before (so a resumed run, whose events and total include the part before the pause, is not
    /// counted twice).
    async fn spent(&self, tenant: &Tenant, run_id: &str, usage: &Usage) {
        let (tokens, cost) = (usage.total_tokens(), usage.cost_usd);
        {
            let mut ledger = self.ledger();
            let before = ledger.counted.get(run_id).copied().unwrap_or((0, 0.0));
            if self.store.is_some() && tokens <= before.0 && cost <= before.1 {
                return;
            }
            ledger.counted.insert(run_id.to_string(), (tokens.max(before.0), cost.max(before.1)));
            if self.store.is_none() {
                let day = ledger.usage.entry(tenant.0.clone()).or_default();
                day.tokens += tokens.saturating_sub(before.0);
                day.cost_usd += (cost - before.1).max(0.0);
                return;
            }
        }
        let Some(store) = &self.store else { return };
        match store.count_tenant_run(&tenant.0, &today(), run_id, tokens, cost).await {
            Ok(day) => self.remember(tenant, day.into()),
            Err(e) => tracing::warn!(run_id, error = %e, "counting the run's usage failed"),
        }
    }
}

/// The middleware on the routes that start or continue runs: 429 when the caller's tenant has
/// spent its budget of the day.
/// The check reserves a run start atomically ([`TenantBudgets::reserve`]); the request's first run
/// takes it, and it is given back when the request started none.
pub(crate) async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(tenant) = req.extensions().get::<Tenant>().cloned() else { return next.run(req).await };
    let reserved = match state.budgets.reserve(&tenant).await {
        Ok(Some(r)) => r,
        Ok(None) => return next.run(req).await,
        Err(e) => return e.into_response(),
    };
    let cell = std::cell::RefCell::new(Some(reserved));
    let (response, left) = RESERVED
        .scope(cell, async {
            let response = next.run(req).await;
            (response, RESERVED.with(|c| c.borrow_mut().take()))
        })
        .await;
    if let Some(r) = left {
        state.budgets.release(r).await;
    }
    response
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
    let used = state.budgets.usage(&tenant.0).await?;
    let exceeded = reached(&limits, &used).map(|(l, _, _)| l);
    Ok(Json(json!({
        "tenant": &*tenant.0,
        "day": Utc::now().date_naive().to_string(),
        "limits": limits_json(&limits),
        "usage": {"runs": used.runs, "tokens": used.tokens, "cost_usd": used.cost_usd},
        "exceeded": exceeded,
    })))
}
