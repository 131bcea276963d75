//! What the server holds: the agents, the runs and sessions it has seen (by tenant), the key store,
//! the per-tenant rate limiter and the metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use chrono::{DateTime, Utc};
use loom_agent::governance::TokenBucketLimiter;
use loom_agent::store::{ApiKeyStore, RunQueue};
use loom_agent::{Agent, Run, Session};

use crate::auth::{DEFAULT_KEY_CACHE_TTL, KeyCache};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The tenant a request acts for (set by the auth layer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenant(pub Arc<str>);

impl Tenant {
    /// The user id the stores see for a user of this tenant: `TENANT/USER` (`TENANT/` for none),
    /// so the same user name in two tenants names two users, and nothing crosses between them.
    pub fn scoped_user(&self, user: Option<&str>) -> String {
        format!("{}/{}", self.0, user.unwrap_or(""))
    }

    /// The user as the client named it, when `internal` is one of this tenant's users.
    pub fn owns(&self, internal: Option<&str>) -> Option<Option<String>> {
        let rest = internal?.strip_prefix(&*self.0)?.strip_prefix('/')?;
        Some((!rest.is_empty()).then(|| rest.to_string()))
    }
}

/// A run this server started or continued.
#[derive(Clone)]
pub(crate) struct RunEntry {
    pub tenant: Tenant,
    pub agent: String,
    pub run: Run,
}

/// A session this server opened.
#[derive(Clone)]
pub(crate) struct SessionEntry {
    pub agent: String,
    pub user: Option<String>,
    pub session: Session,
    pub created_at: DateTime<Utc>,
}

/// How many runs the server keeps handles of before it forgets finished ones.
const MAX_REMEMBERED: usize = 10_000;

/// How many sessions the server keeps open in memory by default (`[server] max_sessions`).
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// The sessions held in memory, least recently used first out.
pub(crate) type SessionMap = hashlink::LruCache<(Tenant, String), SessionEntry>;

/// The server's state, shared by every request.
pub struct AppState {
    pub(crate) agents: BTreeMap<String, Agent>,
    pub(crate) keys: Option<Arc<dyn ApiKeyStore>>,
    pub(crate) runs: Mutex<HashMap<String, RunEntry>>,
    /// The sessions in use, bounded (least recently used out): one evicted is read back from the
    /// session store when asked for (`crate::sessions::lookup`).
    pub(crate) sessions: Mutex<SessionMap>,
    pub(crate) limiter: Option<TokenBucketLimiter>,
    pub(crate) metrics: Metrics,
    pub(crate) budgets: crate::budgets::TenantBudgets,
    pub(crate) a2a: crate::a2a::A2aSettings,
    /// In queue mode, the durable run queue every run goes through.
    pub(crate) queue: Option<Arc<dyn RunQueue>>,
    pub(crate) key_cache: KeyCache,
    /// Whether a task watches this server's runs for cancels other servers recorded
    /// (`crate::elsewhere`).
    pub(crate) cancel_watch: std::sync::atomic::AtomicBool,
}

impl std::hash::Hash for Tenant {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl AppState {
    /// A state for these agents. `keys`: where API keys are checked (`None`: no authentication,
    /// every request acts for the tenant `default`; for local development only). `limiter`: the
    /// per-tenant request limit.
    pub fn new(
        agents: BTreeMap<String, Agent>,
        keys: Option<Arc<dyn ApiKeyStore>>,
        limiter: Option<TokenBucketLimiter>,
    ) -> Self {
        AppState {
            agents,
            keys,
            runs: Mutex::new(HashMap::new()),
            sessions: Mutex::new(SessionMap::new(DEFAULT_MAX_SESSIONS)),
            limiter,
            metrics: Metrics::default(),
            budgets: Default::default(),
            a2a: crate::a2a::A2aSettings::default(),
            queue: None,
            key_cache: KeyCache::new(DEFAULT_KEY_CACHE_TTL),
            cancel_watch: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sets the per-tenant daily budgets (see [`crate::TenantBudgets`]).
    /// Keeps the usage counted in the store the budgets had, if any.
    pub fn with_tenant_budget(mut self, config: Option<loom_agent::config::TenantBudgetConfig>) -> Self {
        let budgets = crate::budgets::TenantBudgets::new(config);
        self.budgets = match self.budgets.store() {
            Some(store) => budgets.with_store(store.clone()),
            None => budgets,
        };
        self
    }

    /// Counts the tenants' daily usage in `store` (the journal's database), so that every server
    /// process on it, and a restarted one, share the count; in memory otherwise.
    pub fn with_budget_store(mut self, store: Arc<dyn loom_agent::store::TenantUsageStore>) -> Self {
        self.budgets = self.budgets.with_store(store);
        self
    }

    /// Sets what the A2A agent card says beyond what the agents know (public URL, descriptions).
    pub fn with_a2a(mut self, settings: crate::a2a::A2aSettings) -> Self {
        self.a2a = settings;
        self
    }

    /// Queue mode: runs are queued in `queue` (the journal's database) for workers, and every
    /// run answer comes from it (see `[server] execution = "queue"`).
    pub fn with_queue(mut self, queue: Arc<dyn RunQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// How long a key found in the key store is trusted before the store is asked again
    /// ([`DEFAULT_KEY_CACHE_TTL`] by default): a key revoked in the store stops working within this
    /// time. `Duration::ZERO` asks the store on every request.
    pub fn key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.key_cache = KeyCache::new(ttl);
        self
    }

    pub(crate) fn runs(&self) -> MutexGuard<'_, HashMap<String, RunEntry>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many sessions are kept in memory ([`DEFAULT_MAX_SESSIONS`] by default, at least 1): past
    /// it the least recently used is dropped from memory (its data stays in the session store,
    /// where requests that name it find it again).
    pub fn max_sessions(self, max: usize) -> Self {
        self.sessions().set_capacity(max.max(1));
        self
    }

    /// How many sessions are held in memory now.
    pub fn sessions_held(&self) -> usize {
        self.sessions().len()
    }

    pub(crate) fn sessions(&self) -> MutexGuard<'_, SessionMap> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent a request names: its name, or (for `None`, `"default"`, or any name when the file
    /// has one agent) the only one.
    pub(crate) fn agent(&self, name: Option<&str>) -> Result<(String, Agent), ApiError> {
        if let Some(n) = name
            && let Some(a) = self.agents.get(n)
        {
            return Ok((n.to_string(), a.clone()));
        }
        if self.agents.len() == 1
            && let Some((n, a)) = self.agents.iter().next()
        {
            return Ok((n.clone(), a.clone()));
        }
        let known: Vec<&str> = self.agents.keys().map(String::as_str).collect();
        Err(ApiError::bad_request(format!(
            "unknown agent `{}`; this server has: {}",
            name.unwrap_or("default"),
            known.join(", ")
        )))
    }

    /// The run of this id if the tenant owns it (live here); `None` otherwise.
    pub(crate) fn run_entry(&self, tenant: &Tenant, run_id: &str) -> Option<RunEntry> {
        self.runs().get(run_id).filter(|e| &e.tenant == tenant).cloned()
    }

    /// Drops a run from the server's memory (it stays in the journal): how a restarted server sees
    /// it. For tests and retention.
    pub fn forget_run(&self, run_id: &str) {
        self.runs().remove(run_id);
    }

    /// Records a run (and has the metrics watch it).
    pub(crate) fn track(self: &Arc<Self>, tenant: &Tenant, agent: &str, run: &Run) {
        let entry = RunEntry { tenant: tenant.clone(), agent: agent.to_string(), run: run.clone() };
        let mut runs = self.runs();
        // Finished runs stay in memory up to a bound; past it they are answered from the journal.
        // Pruned when the map has doubled since the last time, so O(1) per run on average.
        if runs.len() >= MAX_REMEMBERED && runs.len() == runs.capacity() {
            runs.retain(|_, e| !e.run.state().is_terminal() || e.run.state() == loom_agent::RunState::Suspended);
            let more = runs.len().max(MAX_REMEMBERED);
            runs.reserve(more);
        }
        runs.insert(run.id().to_string(), entry);
        drop(runs);
        self.budgets.watch(tenant, run);
        self.metrics.watch(run.clone());
        if let Some(agent) = self.agents.get(agent) {
            crate::elsewhere::watch_cancels(self, agent);
        }
    }
}

/// `Json<T>` whose rejections are JSON errors: malformed JSON 400, unknown or missing fields 422,
/// a body over the limit 413, no JSON content type 415.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    axum::Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(r) => {
                let code = match &r {
                    JsonRejection::JsonSyntaxError(_) => "malformed_json",
                    JsonRejection::JsonDataError(_) => "invalid_body",
                    JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
                    _ => "body_rejected",
                };
                Err(ApiError::new(r.status(), code, r.body_text()))
            }
        }
    }
}
