//! Budgets: limits on what runs may spend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::message::Usage;
pub use loom_core::governance::{Budget, BudgetNotice, BudgetVerdict};
use loom_core::run::Scope;

/// How many runs [`StandardBudget`] tracks at once before it forgets the oldest (a run whose end
/// was never reported).
const MAX_TRACKED_RUNS: usize = 100_000;

/// How often, at most, [`StandardBudget`] sweeps out idle users.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The standard budget: limits per run, per user (over all of that user's runs) and in total (over
/// every run that uses this budget), with a soft warning before each limit.
///
/// ```
/// use std::time::Duration;
/// use loom_agent::governance::StandardBudget;
///
/// let budget = StandardBudget::new()
///     .max_tokens(50_000)
///     .max_wall_clock(Duration::from_secs(120))
///     .per_user_max_cost_usd(5.0)
///     .total_max_cost_usd(100.0)
///     .soft_warning_at(0.8);
/// assert_eq!(budget.usage_for(Some("alice")).runs, 0);
/// ```
///
/// Semantics:
///
/// - Limits are checked before each model call and each tool batch with what has been spent so
///   far. A limit is *reached* when `used >= max`; the run then stops, interrupted with reason
///   `budget: <limit>` where `<limit>` is the builder method's name (`max_tokens`,
///   `per_user_max_cost_usd`, …). A check sees what was spent *before* the call or batch it
///   guards, so the call that crosses a limit completes, and one tool batch may take a run past
///   `max_tool_calls`.
/// - A limit on turns or tool calls that is reached stops the run at the next check, which may be
///   the tool batch of the last allowed model call (its results could not be read anyway).
/// - Tokens: `*_max_tokens` counts all tokens ([`Usage::total_tokens`]); `*_max_input_tokens`
///   counts input, cached input and cache writes; `*_max_output_tokens` counts output.
/// - Wall clock: per run from [`Budget::run_started`]; per user, the time that user's runs have
///   been in progress (finished runs plus the elapsed time of running ones). Measured with
///   [`tokio::time::Instant`], so paused test clocks apply.
/// - Per user: runs without a user id share one anonymous account ([`StandardBudget::usage_for`]
///   with `None`), which the per-user limits apply to as well. Per-user tool calls are not
///   limited: the budget learns a run's tool calls only from later checks, and a run that ends
///   right after a tool batch would escape the count.
/// - Child runs (an agent used as a tool, a supervisor's workers, a workflow's agent nodes) draw
///   on their ancestors' budgets: a child's tokens, cost and tool calls count toward every
///   ancestor's limits too (the whole tree shares a parent's `max_tokens`, `max_cost_usd`,
///   `max_tool_calls`), and a limit reached inside a child stops the child, then the parent.
///   Turns are not shared: an ancestor's `max_turns` counts that run's own model calls, as the
///   OpenAI Agents SDK's `max_turns` does for an agent used as a tool.
/// - Warnings: once a limit is at `soft_warning_at` of its maximum (default 0.8), the check answers
///   [`BudgetVerdict::Warn`] for it, once per limit and run.
/// - Memory is bounded: at most `max_users` accounts (default 100 000); accounts with no run in
///   progress that have been idle for `user_idle_ttl` (default 24 h) are forgotten, and when the
///   table is full the least recently active idle account goes first. A forgotten account starts
///   again from zero.
///
/// Clones share their usage (so a clone kept by the caller can query what the agent's copy
/// recorded). The state sits behind a short `std` mutex that is never held across an await.
#[derive(Clone, Debug)]
pub struct StandardBudget {
    limits: Limits,
    soft_warning_at: f64,
    max_users: usize,
    user_idle_ttl: Duration,
    state: Arc<Mutex<BudgetState>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Limits {
    max_tokens: Option<u64>,
    max_input_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    max_cost_usd: Option<f64>,
    max_wall_clock: Option<Duration>,
    max_turns: Option<u32>,
    max_tool_calls: Option<u32>,
    per_user_max_tokens: Option<u64>,
    per_user_max_input_tokens: Option<u64>,
    per_user_max_output_tokens: Option<u64>,
    per_user_max_cost_usd: Option<f64>,
    per_user_max_wall_clock: Option<Duration>,
    total_max_tokens: Option<u64>,
    total_max_cost_usd: Option<f64>,
}

/// What one user (or all runs together) has spent, as [`StandardBudget::usage_for`] and
/// [`StandardBudget::total_usage`] report it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UserUsage {
    /// Input tokens, including cached input and cache writes.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// All tokens.
    pub total_tokens: u64,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// Model calls recorded.
    pub model_calls: u64,
    /// Runs started.
    pub runs: u64,
    /// Runs in progress.
    pub active_runs: u32,
    /// Time spent in runs, including the elapsed time of runs in progress.
    pub wall_clock: Duration,
}

type UserKey = Option<Arc<str>>;

#[derive(Debug, Default)]
struct Account {
    usage: Usage,
    model_calls: u64,
    runs: u64,
    active_runs: u32,
    /// Wall clock of finished runs.
    finished_wall_clock: Duration,
    last_active: Option<Instant>,
}

#[derive(Debug)]
struct RunEntry {
    user: UserKey,
    started: Instant,
    /// Limits already warned about in this run.
    warned: Vec<&'static str>,
}

#[derive(Debug, Default)]
struct BudgetState {
    users: HashMap<UserKey, Account>,
    total: Account,
    runs: HashMap<Arc<str>, RunEntry>,
    last_sweep: Option<Instant>,
}

/// One limit's standing.
struct Standing {
    limit: &'static str,
    used: f64,
    max: f64,
}

impl Default for StandardBudget {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! limit_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, max: $ty) -> Self {
                self.limits.$name = Some(max);
                self
            }
        )*
    };
}

impl StandardBudget {
    /// A budget with no limits; add them with the builder methods.
    pub fn new() -> Self {
        StandardBudget {
            limits: Limits::default(),
            soft_warning_at: 0.8,
            max_users: 100_000,
            user_idle_ttl: Duration::from_secs(24 * 60 * 60),
            state: Arc::new(Mutex::new(BudgetState::default())),
        }
    }

    limit_setters! {
        /// The most tokens (all kinds) one run may use.
        max_tokens: u64;
        /// The most input tokens (with cached input and cache writes) one run may use.
        max_input_tokens: u64;
        /// The most output tokens one run may use.
        max_output_tokens: u64;
        /// The most one run may cost, in US dollars.
        max_cost_usd: f64;
        /// The longest one run may take, from its start.
        max_wall_clock: Duration;
        /// The most model calls one run may make.
        max_turns: u32;
        /// The most tool calls one run may make.
        max_tool_calls: u32;
        /// The most tokens one user may use over all their runs.
        per_user_max_tokens: u64;
        /// The most input tokens one user may use over all their runs.
        per_user_max_input_tokens: u64;
        /// The most output tokens one user may use over all their runs.
        per_user_max_output_tokens: u64;
        /// The most one user's runs may cost together, in US dollars.
        per_user_max_cost_usd: f64;
        /// The most time one user's runs may spend in progress, together.
        per_user_max_wall_clock: Duration;
        /// The most tokens all runs together may use.
        total_max_tokens: u64;
        /// The most all runs together may cost, in US dollars.
        total_max_cost_usd: f64;
    }

    /// The fraction of a limit at which a `budget.warning` is emitted (default 0.8; 1.0 or more
    /// turns warnings off).
    pub fn soft_warning_at(mut self, fraction: f64) -> Self {
        self.soft_warning_at = if fraction.is_nan() { 1.0 } else { fraction.max(0.0) };
        self
    }

    /// The most user accounts kept (default 100 000).
    pub fn max_users(mut self, n: usize) -> Self {
        self.max_users = n.max(1);
        self
    }

    /// How long an account with no run in progress is kept after its last activity (default 24 h).
    pub fn user_idle_ttl(mut self, ttl: Duration) -> Self {
        self.user_idle_ttl = ttl;
        self
    }

    /// What a user (`None`: runs without a user id) has spent so far.
    pub fn usage_for(&self, user_id: Option<&str>) -> UserUsage {
        let state = self.lock();
        let now = Instant::now();
        let key: UserKey = user_id.map(Arc::from);
        match state.users.get(&key) {
            Some(account) => account.report(state.user_wall_clock(&key, account, now)),
            None => UserUsage::default(),
        }
    }

    /// What all runs together have spent so far.
    pub fn total_usage(&self) -> UserUsage {
        let state = self.lock();
        let now = Instant::now();
        let running: Duration = state.runs.values().map(|r| now.saturating_duration_since(r.started)).sum();
        state.total.report(state.total.finished_wall_clock + running)
    }

    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every limit that applies, with what has been used against it.
    fn standings(&self, state: &BudgetState, scope: &Scope, run: &Usage, turns: u32, tool_calls: u32) -> Vec<Standing> {
        let l = &self.limits;
        let now = Instant::now();
        let mut out = Vec::new();
        let mut push = |limit: &'static str, used: f64, max: Option<f64>| {
            if let Some(max) = max {
                out.push(Standing { limit, used, max });
            }
        };
        let run_entry = state.runs.get(&scope.run_id);
        let run_elapsed = run_entry.map(|r| now.saturating_duration_since(r.started)).unwrap_or_default();
        push("max_tokens", run.total_tokens() as f64, l.max_tokens.map(|m| m as f64));
        push("max_input_tokens", input_tokens(run) as f64, l.max_input_tokens.map(|m| m as f64));
        push("max_output_tokens", run.output_tokens as f64, l.max_output_tokens.map(|m| m as f64));
        push("max_cost_usd", run.cost_usd, l.max_cost_usd);
        push("max_wall_clock", run_elapsed.as_secs_f64(), l.max_wall_clock.map(|d| d.as_secs_f64()));
        push("max_turns", f64::from(turns), l.max_turns.map(f64::from));
        push("max_tool_calls", f64::from(tool_calls), l.max_tool_calls.map(f64::from));

        let any_user_limit = l.per_user_max_tokens.is_some()
            || l.per_user_max_input_tokens.is_some()
            || l.per_user_max_output_tokens.is_some()
            || l.per_user_max_cost_usd.is_some()
            || l.per_user_max_wall_clock.is_some();
        if any_user_limit {
            let key = &scope.user_id;
            let (usage, wall) = match state.users.get(key) {
                Some(account) => (account.usage, state.user_wall_clock(key, account, now)),
                None => (Usage::default(), run_elapsed),
            };
            push("per_user_max_tokens", usage.total_tokens() as f64, l.per_user_max_tokens.map(|m| m as f64));
            push(
                "per_user_max_input_tokens",
                input_tokens(&usage) as f64,
                l.per_user_max_input_tokens.map(|m| m as f64),
            );
            push(
                "per_user_max_output_tokens",
                usage.output_tokens as f64,
                l.per_user_max_output_tokens.map(|m| m as f64),
            );
            push("per_user_max_cost_usd", usage.cost_usd, l.per_user_max_cost_usd);
            push("per_user_max_wall_clock", wall.as_secs_f64(), l.per_user_max_wall_clock.map(|d| d.as_secs_f64()));
        }
        let total = &state.total.usage;
        push("total_max_tokens", total.total_tokens() as f64, l.total_max_tokens.map(|m| m as f64));
        push("total_max_cost_usd", total.cost_usd, l.total_max_cost_usd);
        out
    }

    /// Forgets accounts idle for longer than the TTL; when `room` is needed and the table is still
    /// full, forgets the least recently active idle accounts (or, when every account is busy, the
    /// least recently active one).
    fn evict(&self, state: &mut BudgetState, now: Instant, room: bool) {
        let due =
            state.last_sweep.is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY.min(self.user_idle_ttl));
        if due || (room && state.users.len() >= self.max_users) {
            state.last_sweep = Some(now);
            let ttl = self.user_idle_ttl;
            state.users.retain(|_, a| {
                a.active_runs > 0 || a.last_active.is_none_or(|t| now.saturating_duration_since(t) < ttl)
            });
        }
        while room && state.users.len() >= self.max_users {
            let victim =
                state.users.iter().min_by_key(|(_, a)| (a.active_runs > 0, a.last_active)).map(|(k, _)| k.clone());
            match victim {
                Some(key) => {
                    state.users.remove(&key);
                }
                None => break,
            }
        }
    }

    /// The account of `key`, created (making room) when missing.
    fn account<'a>(&self, state: &'a mut BudgetState, key: &UserKey, now: Instant) -> &'a mut Account {
        if !state.users.contains_key(key) {
            self.evict(state, now, true);
        }
        let account = state.users.entry(key.clone()).or_default();
        account.last_active = Some(now);
        account
    }
}

impl Account {
    fn report(&self, wall_clock: Duration) -> UserUsage {
        UserUsage {
            input_tokens: input_tokens(&self.usage),
            output_tokens: self.usage.output_tokens,
            total_tokens: self.usage.total_tokens(),
            cost_usd: self.usage.cost_usd,
            model_calls: self.model_calls,
            runs: self.runs,
            active_runs: self.active_runs,
            wall_clock,
        }
    }
}

impl BudgetState {
    /// A user's wall clock: finished runs plus the elapsed time of their runs in progress.
    fn user_wall_clock(&self, key: &UserKey, account: &Account, now: Instant) -> Duration {
        let running: Duration = if account.active_runs == 0 {
            Duration::ZERO
        } else {
            self.runs.values().filter(|r| &r.user == key).map(|r| now.saturating_duration_since(r.started)).sum()
        };
        account.finished_wall_clock + running
    }
}

fn input_tokens(usage: &Usage) -> u64 {
    usage.input_tokens + usage.cached_input_tokens + usage.cache_write_tokens
}

impl Budget for StandardBudget {
    fn check(&self, scope: &Scope, run_usage: &Usage, turns: u32, tool_calls: u32) -> BudgetVerdict {
        let mut state = self.lock();
        let standings = self.standings(&state, scope, run_usage, turns, tool_calls);
        if let Some(s) = standings.iter().find(|s| s.used >= s.max) {
            return BudgetVerdict::Exceeded(BudgetNotice::new(s.limit, s.used, s.max));
        }
        if self.soft_warning_at >= 1.0 {
            return BudgetVerdict::Ok;
        }
        let soft = self.soft_warning_at;
        let warned = state.runs.get(&scope.run_id).map(|r| r.warned.as_slice()).unwrap_or_default();
        let Some(s) = standings.iter().find(|s| s.used >= s.max * soft && !warned.contains(&s.limit)) else {
            return BudgetVerdict::Ok;
        };
        if let Some(run) = state.runs.get_mut(&scope.run_id) {
            run.warned.push(s.limit);
        }
        BudgetVerdict::Warn(BudgetNotice::new(s.limit, s.used, s.max))
    }

    fn record(&self, scope: &Scope, usage: &Usage) {
        let mut state = self.lock();
        let now = Instant::now();
        let account = self.account(&mut state, &scope.user_id, now);
        account.usage.add(usage);
        account.model_calls += 1;
        state.total.usage.add(usage);
        state.total.model_calls += 1;
    }

    fn run_started(&self, scope: &Scope) {
        let mut state = self.lock();
        let now = Instant::now();
        self.evict(&mut state, now, false);
        if state.runs.len() >= MAX_TRACKED_RUNS
            && let Some(oldest) = state.runs.iter().min_by_key(|(_, r)| r.started).map(|(k, _)| k.clone())
        {
            let run = state.runs.remove(&oldest);
            if let Some(account) = run.and_then(|r| state.users.get_mut(&r.user)) {
                account.active_runs = account.active_runs.saturating_sub(1);
            }
        }
        if state.runs.contains_key(&scope.run_id) {
            return;
        }
        let account = self.account(&mut state, &scope.user_id, now);
        account.runs += 1;
        account.active_runs += 1;
        state.total.runs += 1;
        state.total.active_runs += 1;
        let entry = RunEntry { user: scope.user_id.clone(), started: now, warned: Vec::new() };
        state.runs.insert(scope.run_id.clone(), entry);
    }

    fn run_finished(&self, scope: &Scope) {
        let mut state = self.lock();
        let now = Instant::now();
        // A run that stopped before it started (a guardrail, a store error) was never counted.
        let Some(run) = state.runs.remove(&scope.run_id) else { return };
        let elapsed = now.saturating_duration_since(run.started);
        state.total.finished_wall_clock += elapsed;
        state.total.active_runs = state.total.active_runs.saturating_sub(1);
        if let Some(account) = state.users.get_mut(&run.user) {
            account.finished_wall_clock += elapsed;
            account.active_runs = account.active_runs.saturating_sub(1);
            account.last_active = Some(now);
        }
    }
}
