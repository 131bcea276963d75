//! Runs from the durable queue: [`Agent::start_claimed`] starts a run a worker claimed (fresh, or
//! resumed from its journal when it had begun), and [`QueueWorker`] claims and drives queued runs
//! for a set of agents: it renews nothing itself (each run's driver renews its lease), honours
//! cancels recorded by other processes, and never holds more than its concurrency.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::signals::Receipt;
use super::{Agent, ResumeOptions, Run, RunRequest, Session, SessionConfig};
use crate::error::{Error, RunError, RunErrorKind};
use crate::event::SignalEvent;
use crate::governance::{AuditAction, Scope};
use crate::run::{RunContext, RunInput, RunState};
use crate::signal::{Attention, Incoming, SessionState, SignalAdapter};
use crate::store::{ClaimedRun, Journal, QueuedRun, RunQueue, TenantUsageStore};

/// The request of a queued run as the queue keeps it: `{"input", "context", "metadata"}`.
pub fn queued_request(input: &RunInput, context: &RunContext, metadata: &Map<String, Value>) -> Value {
    serde_json::json!({ "input": input, "context": context, "metadata": metadata })
}

/// The `signal.received` event a queued run carries when a signal started it (see
/// [`Session::receive_queued`]).
fn parse_signal(run: &QueuedRun) -> Option<SignalEvent> {
    let signal = run.request.get("signal").filter(|v| !v.is_null())?;
    serde_json::from_value(signal.clone())
        .map_err(|e| tracing::warn!(run_id = %run.run_id, error = %e, "a queued run's `signal` does not parse"))
        .ok()
}

fn parse_request(run: &QueuedRun) -> Result<RunRequest, Error> {
    let bad = |what: &str, e: serde_json::Error| {
        Error::Config(format!("queued run {}: its request's `{what}` does not parse: {e}", run.run_id))
    };
    let input: RunInput = serde_json::from_value(run.request.get("input").cloned().unwrap_or(Value::Null))
        .map_err(|e| bad("input", e))?;
    let mut request = RunRequest::new(input);
    if let Some(context) = run.request.get("context").filter(|v| !v.is_null()) {
        request.context = serde_json::from_value(context.clone()).map_err(|e| bad("context", e))?;
    }
    if let Some(Value::Object(metadata)) = run.request.get("metadata") {
        request.metadata = metadata.clone();
    }
    Ok(request)
}

impl Agent {
    /// Queues a run in this agent's journal database for a worker (see [`QueueWorker`]) under
    /// `agent_name`, and returns it (its id, and its session: a new one when none is given) at
    /// once. Needs a journal with a run queue (SQLite or PostgreSQL).
    pub async fn enqueue(
        &self,
        agent_name: &str,
        session_id: Option<&str>,
        user_id: Option<&str>,
        request: Value,
    ) -> Result<QueuedRun, Error> {
        let queue = self.run_queue()?;
        let run = QueuedRun {
            run_id: crate::new_id("run"),
            agent: agent_name.to_string(),
            session_id: session_id.map_or_else(|| crate::new_id("sess"), str::to_string),
            user_id: user_id.map(str::to_string),
            request,
            queued_at: chrono::Utc::now(),
        };
        queue.enqueue(&run).await?;
        Ok(run)
    }

    /// Records `run`, a run of this agent started in this process that may wait before it
    /// executes (behind its session's earlier runs, here or in another process), as `queued` in
    /// the journal's database under `agent_name`, held by this process's lease
    /// ([`RunQueue::hold`]): other processes on the database then see it in flight (a busy check,
    /// `GET`, a cancel they record, which this process honours). Keep it held with
    /// [`Agent::renew_waiting`] while it waits. `false` when its row exists already (it began or
    /// ended first). [`Error::Config`] without a run queue.
    pub async fn hold_waiting(&self, agent_name: &str, run: &Run, request: Value) -> Result<bool, Error> {
        let queue = self.run_queue()?;
        let queued = QueuedRun {
            run_id: run.id().to_string(),
            agent: agent_name.to_string(),
            session_id: run.session_id().to_string(),
            user_id: run.user_id().map(str::to_string),
            request,
            queued_at: chrono::Utc::now(),
        };
        queue.hold(&queued, &self.inner.env.stores.lease).await
    }

    /// Ends `cancelled` a run of this agent that has not begun and that no live lease holds (one
    /// whose process died while it waited): claimed by id ([`RunQueue::claim_run`], a fencing
    /// number of its own) and started cancelled, so it ends without executing a step, its end
    /// saved (transcript, the `run.cancelled` event, the audit log's start and end). `None` when
    /// it is not such a run (it began, ended, or a live process holds it).
    pub async fn cancel_unbegun(&self, run_id: &str) -> Result<Option<Run>, Error> {
        let Some(mut claimed) = self.run_queue()?.claim_run(run_id, &self.inner.env.stores.lease).await? else {
            return Ok(None);
        };
        claimed.cancel_requested = true;
        self.start_claimed(&claimed).await.map(Some)
    }

    /// Renews this process's lease on runs it [holds](Agent::hold_waiting) that have not begun.
    pub async fn renew_waiting(&self, run_ids: &[String]) -> Result<(), Error> {
        self.run_queue()?.renew_held(run_ids, &self.inner.env.stores.lease).await
    }

    /// How long this process's leases last after each renewal (`AgentBuilder::lease_ttl`).
    pub fn lease_ttl(&self) -> Duration {
        self.inner.env.stores.lease.ttl
    }

    /// The run queue of this agent's journal; [`Error::Config`] when it has none.
    pub fn run_queue(&self) -> Result<Arc<dyn RunQueue>, Error> {
        self.journal()
            .and_then(|j| j.run_queue())
            .ok_or_else(|| Error::Config("a run queue needs a durable journal: `sqlite:…` or `postgres://…`".into()))
    }

    /// Starts a run this process claimed from the queue ([`RunQueue::claim`], with this agent's
    /// lease): a run that had not begun starts under its queued id, session and user, writing
    /// with the claim's fencing number; one that had (its worker died) is resumed from its journal
    /// ([`Agent::resume`]: completed model and tool calls are replayed, not repeated). A run whose
    /// cancel was requested is cancelled at once, so it ends `cancelled` (and says so in the
    /// stores).
    pub async fn start_claimed(&self, claimed: &ClaimedRun) -> Result<Run, Error> {
        let run = &claimed.run;
        if let Some(why) = &claimed.unreadable {
            return Err(Error::Config(format!("queued run {}: its stored request is unreadable ({why})", run.run_id)));
        }
        let handle = if claimed.begun {
            let mut options = ResumeOptions::default();
            if let Some(user) = &run.user_id {
                options = options.user(user.clone());
            }
            if claimed.cancel_requested {
                // Cancelled before its task starts: no step executes again.
                options = options.cancelled();
            }
            self.resume_with(&run.run_id, options).await?
        } else {
            let mut request = parse_request(run)?;
            request.queued = Some((run.run_id.clone(), claimed.fence));
            // Cancelled before its task starts: no step executes.
            request.cancelled = claimed.cancel_requested;
            let session = self.session(SessionConfig {
                id: Some(run.session_id.clone()),
                user_id: run.user_id.clone(),
                ..Default::default()
            });
            session.start_with(request, parse_signal(run))
        };
        if claimed.cancel_requested {
            handle.cancel();
        }
        Ok(handle)
    }
}

impl Agent {
    /// Ends `failed` a run this process claimed that cannot start (`why`: what
    /// [`Agent::start_claimed`] returned — an unreadable request, a journal that does not load, a
    /// model or architecture this agent does not run), so that no worker claims it again: the
    /// queue finishes it with a `run.failed` event that says why ([`RunQueue::fail_claimed`]), and
    /// the audit log records its end (and its start, when it never began). `false` when another
    /// claim took the run since.
    pub async fn fail_claimed(&self, claimed: &ClaimedRun, why: &Error) -> Result<bool, Error> {
        let run = &claimed.run;
        let kind = match why {
            Error::Corrupt(_) | Error::Store(_) => RunErrorKind::Store,
            Error::Config(_) | Error::ModelChanged { .. } => RunErrorKind::Config,
            _ => RunErrorKind::Internal,
        };
        let error = RunError::new(kind, format!("the queued run cannot start: {why}"));
        let lease = self.inner.env.stores.lease.fenced(claimed.fence);
        if !self.run_queue()?.fail_claimed(&run.run_id, &lease, &error).await? {
            return Ok(false);
        }
        let env = &self.inner.env;
        if env.policies.audit.is_some() {
            let scope = Scope {
                run_id: Arc::from(run.run_id.as_str()),
                session_id: Arc::from(run.session_id.as_str()),
                user_id: run.user_id.as_deref().map(Arc::from),
            };
            if !claimed.begun {
                let input =
                    parse_request(run).ok().and_then(|r| r.input).unwrap_or_else(|| RunInput::Prompt(String::new()));
                env.audit_unexecuted_start(&scope, &input).await?;
            }
            let end = serde_json::json!({"state": RunState::Failed, "turns": 0, "error": error.message});
            env.policies.audit(&scope, AuditAction::RunFinished, end).await?;
        }
        Ok(true)
    }

    /// [`Session::receive`] for a server whose runs execute in queue workers, in the session
    /// `session_id` of `user_id` (opened without handling its waiting signals here: that is a
    /// worker's job). The signal is stored (a duplicate dedupe key stops there) and the attention policy decides, seeing
    /// `in_flight` (the ids of the session's runs in flight, as the queue knows them); a run it
    /// starts is queued under `agent_name` for a worker (which emits `signal.received` after
    /// `run.started`, as here), and an interrupt records a cancel for each run in flight, honoured
    /// by the workers that hold them. Returns the receipt (with no run handle: the run is not
    /// here) and the queued run. A `tool.result` signal continues a suspended run in the receiving
    /// process, so it is [`Error::Config`] here.
    pub async fn receive_queued(
        &self,
        agent_name: &str,
        session_id: &str,
        user_id: Option<&str>,
        incoming: impl Into<Incoming>,
        adapter: Option<&SignalAdapter>,
        in_flight: &[String],
    ) -> Result<(Receipt, Option<QueuedRun>), Error> {
        let config = SessionConfig {
            id: Some(session_id.to_string()),
            user_id: user_id.map(str::to_string),
            ..Default::default()
        };
        Session::open_with(self, config, false).receive_queued(agent_name, incoming, adapter, in_flight).await
    }
}

impl Session {
    async fn receive_queued(
        &self,
        agent_name: &str,
        incoming: impl Into<Incoming>,
        adapter: Option<&SignalAdapter>,
        in_flight: &[String],
    ) -> Result<(Receipt, Option<QueuedRun>), Error> {
        let signal = incoming.into().into_signal(adapter)?;
        if signal.kind == crate::signal::TOOL_RESULT {
            return Err(Error::Config(
                "a `tool.result` signal cannot go through the run queue: complete the call in a worker".into(),
            ));
        }
        let agent = &self.inner.agent;
        let queue = agent.run_queue()?;
        let store = agent.signal_store().clone();
        let lease = &agent.inner.env.stores.lease;
        let until = lease.expiry_ms(chrono::Utc::now().timestamp_millis());
        let state = SessionState::new(self.user_id(), self.id()).with_runs_in_flight(in_flight.len());
        let attention = agent.inner.attention.decide(&signal, &state);
        if matches!(attention, Attention::Ignore | Attention::Observe) {
            let stored = store.append_decided(self.key(), &signal, attention, (&*lease.owner, until)).await?;
            let mut receipt = Receipt::nothing(signal.id, !stored);
            receipt.attention = stored.then_some(attention);
            return Ok((receipt, None));
        }
        // Stored claimed by this process, which settles it once the run is queued.
        if !store.append(self.key(), &signal, Some((&*lease.owner, until))).await? {
            return Ok((Receipt::nothing(signal.id, true), None));
        }
        let mut receipt = Receipt::nothing(signal.id.clone(), false);
        receipt.attention = Some(attention);
        if attention == Attention::Interrupt {
            for id in in_flight {
                if queue.request_cancel(id).await? {
                    receipt.interrupted.push(id.clone());
                }
            }
        }
        let mut metadata = Map::new();
        metadata.insert("signal_id".into(), Value::String(signal.id.clone()));
        let mut request = queued_request(&RunInput::Prompt(signal.to_prompt()), &RunContext::default(), &metadata);
        let event = serde_json::to_value(SignalEvent::of(&signal, attention))
            .map_err(|e| Error::Config(format!("the signal does not serialize: {e}")))?;
        if let Value::Object(fields) = &mut request {
            fields.insert("signal".into(), event);
        }
        let queued = agent.enqueue(agent_name, Some(self.id()), self.user_id(), request).await?;
        store.settle(self.key(), &signal.id, attention, Some(queued.run_id.as_str())).await?;
        Ok((receipt, Some(queued)))
    }
}

/// What a [`QueueWorker`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueReport {
    /// Runs it claimed and started (resumed ones included).
    pub started: usize,
    /// Of those, runs that had begun elsewhere (taken over).
    pub resumed: usize,
    /// Runs that ended here, by state.
    pub ended: BTreeMap<String, usize>,
    /// Cancels it honoured for other processes.
    pub cancelled: usize,
}

/// Claims queued runs for a set of agents (by the names the queue records) and drives them:
/// `loom worker --config` runs one. Any number of workers may share a database: each run is
/// claimed by one (`FOR UPDATE SKIP LOCKED` with a lease), and a run whose worker died is claimed
/// again once its lease expires, then resumed from its journal.
#[derive(Clone)]
pub struct QueueWorker {
    agents: Vec<(String, Agent)>,
    queue: Arc<dyn RunQueue>,
    concurrency: usize,
    poll: Duration,
    tenant_usage: Option<Arc<dyn TenantUsageStore>>,
}

impl std::fmt::Debug for QueueWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.agents.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("QueueWorker").field("agents", &names).field("concurrency", &self.concurrency).finish()
    }
}

impl QueueWorker {
    /// A worker for these agents (name → agent), on the run queue of the first agent's journal.
    /// [`Error::Config`] when there is no agent or its journal has no queue.
    pub fn new(agents: impl IntoIterator<Item = (String, Agent)>) -> Result<QueueWorker, Error> {
        let agents: Vec<(String, Agent)> = agents.into_iter().collect();
        let Some((_, first)) = agents.first() else {
            return Err(Error::Config("a queue worker needs at least one agent".into()));
        };
        let queue = first.run_queue()?;
        Ok(QueueWorker { agents, queue, concurrency: 64, poll: Duration::from_millis(100), tenant_usage: None })
    }

    /// How many runs it drives at once (default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Counts the runs it drives in `store`'s per-tenant daily usage (`loom serve`'s tenant
    /// budgets): a run whose user is `TENANT/…` (a server's scoped user) counts for `TENANT` when
    /// it ends or suspends — one run started, its tokens and cost. The per-run usage row is the
    /// idempotence key: a run taken over after its worker died, or whose start a server already
    /// counted, is counted once (the run's cumulative figures, never added twice).
    pub fn tenant_usage(mut self, store: Arc<dyn TenantUsageStore>) -> Self {
        self.tenant_usage = Some(store);
        self
    }

    /// How often it looks for queued runs and cancels when idle (default 100 ms).
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(1));
        self
    }

    /// Claims and drives queued runs until `shutdown` completes, then stops claiming and waits for
    /// the runs it holds to end. A pass that fails (the database is down) is logged and retried.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> QueueReport {
        let mut report = QueueReport::default();
        let mut running: HashMap<String, (Run, usize)> = HashMap::new();
        let mut cancelled: HashSet<String> = HashSet::new();
        let mut renewed = tokio::time::Instant::now();
        tokio::pin!(shutdown);
        loop {
            if renewed.elapsed() >= self.renew_every() {
                renewed = tokio::time::Instant::now();
                self.renew_waiting(&running).await;
            }
            let full = match self.pass(&mut running, &mut cancelled, &mut report).await {
                Ok(full) => full,
                Err(e) => {
                    tracing::warn!(error = %e, "a queue worker pass failed");
                    false
                }
            };
            let pause = if full { Duration::ZERO } else { self.poll };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        for (_, (run, _)) in running.drain() {
            let result = run.result().await;
            *report.ended.entry(result.state.as_str().to_string()).or_default() += 1;
        }
        report
    }

    /// How often the claims of runs that have not started are renewed: a third of the shortest
    /// lease.
    fn renew_every(&self) -> Duration {
        self.agents.iter().map(|(_, a)| a.inner.env.stores.lease.ttl / 3).min().unwrap_or(Duration::from_secs(1))
    }

    /// Renews the claims of the runs that wait to start (behind their session's earlier runs, or
    /// on a busy machine): once a run executes, its driver renews its lease.
    async fn renew_waiting(&self, running: &HashMap<String, (Run, usize)>) {
        for (id, (run, agent)) in running {
            if run.state() != crate::run::RunState::Queued {
                continue;
            }
            let Some((_, agent)) = self.agents.get(*agent) else { continue };
            let Some(journal) = agent.journal() else { continue };
            let fence = run.log.fence.load(std::sync::atomic::Ordering::Acquire);
            if let Err(e) = journal.renew(id, &agent.inner.env.stores.lease.fenced(fence)).await {
                tracing::warn!(run_id = %id, error = %e, "renewing a claim failed");
            }
        }
    }

    /// One pass: collects ended runs, honours requested cancels, claims as many runs as there is
    /// room for. Returns whether a claim filled the room (more may wait: no pause).
    async fn pass(
        &self,
        running: &mut HashMap<String, (Run, usize)>,
        cancelled: &mut HashSet<String>,
        report: &mut QueueReport,
    ) -> Result<bool, Error> {
        running.retain(|id, (run, _)| {
            let state = run.state();
            let live = !state.is_terminal();
            if !live {
                *report.ended.entry(state.as_str().to_string()).or_default() += 1;
                cancelled.remove(id);
            }
            live
        });
        if !running.is_empty() {
            let ids: Vec<String> = running.keys().filter(|id| !cancelled.contains(*id)).cloned().collect();
            for id in self.queue.cancels_requested(&ids).await? {
                if let Some((run, _)) = running.get(&id) {
                    run.cancel();
                    report.cancelled += 1;
                    cancelled.insert(id);
                }
            }
        }
        let mut full = false;
        for (index, (name, agent)) in self.agents.iter().enumerate() {
            let room = self.concurrency.saturating_sub(running.len());
            if room == 0 {
                return Ok(true);
            }
            let lease = &agent.inner.env.stores.lease;
            let claimed = self.queue.claim(name, lease, room).await?;
            full |= claimed.len() == room;
            for claim in claimed {
                match agent.start_claimed(&claim).await {
                    Ok(run) => {
                        if claim.cancel_requested {
                            report.cancelled += 1;
                            cancelled.insert(claim.run.run_id.clone());
                        }
                        report.started += 1;
                        report.resumed += usize::from(claim.begun);
                        self.count_usage(&run);
                        running.insert(claim.run.run_id.clone(), (run, index));
                    }
                    // The database or another process stood in the way: its lease lapses and a
                    // later claim retries it.
                    Err(e) if transient(&e) => {
                        tracing::warn!(run_id = %claim.run.run_id, error = %e, "starting a claimed run failed; it is retried")
                    }
                    // It can never start here: it ends failed, not claimed again forever.
                    Err(e) => match agent.fail_claimed(&claim, &e).await {
                        Ok(ended) => {
                            tracing::warn!(run_id = %claim.run.run_id, error = %e, "a claimed run cannot start: it ends failed");
                            if ended {
                                *report.ended.entry(RunState::Failed.as_str().to_string()).or_default() += 1;
                            }
                        }
                        Err(f) => tracing::warn!(
                            run_id = %claim.run.run_id, error = %e, failure = %f,
                            "a claimed run cannot start, and ending it failed; it is retried"
                        ),
                    },
                }
            }
        }
        Ok(full)
    }
}

/// Whether starting a claimed run failed for a reason that may pass (the database, another
/// process holding the run): then a later claim retries it.
fn transient(e: &Error) -> bool {
    matches!(e, Error::Store(_) | Error::LeaseHeld { .. } | Error::LeaseLost { .. })
}

impl QueueWorker {
    /// With a tenant usage store: counts the run for its tenant once it ends (or suspends).
    fn count_usage(&self, run: &Run) {
        let Some(store) = self.tenant_usage.clone() else { return };
        let Some(tenant) = run.user_id().and_then(|u| u.split_once('/')).map(|(t, _)| t.to_string()) else {
            return;
        };
        let run = run.clone();
        tokio::spawn(async move {
            let result = run.result().await;
            let day = chrono::Utc::now().date_naive().to_string();
            let usage = &result.usage;
            if let Err(e) = store.count_tenant_run(&tenant, &day, run.id(), usage.total_tokens(), usage.cost_usd).await
            {
                tracing::warn!(run_id = %run.id(), error = %e, "counting the run's tenant usage failed");
            }
        });
    }
}

/// Applies a retention policy until `shutdown`: every `every`, deletes the runs of `journal` that
/// finished more than `keep` ago ([`Journal::prune`]). Failures are logged.
pub async fn prune_periodically(
    journal: Arc<dyn Journal>,
    keep: Duration,
    every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let cut = chrono::Utc::now().checked_sub_signed(keep).unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        match journal.prune(cut).await {
            Ok(r) if r.runs > 0 => tracing::info!(runs = r.runs, events = r.events, entries = r.entries, "pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention: pruning finished runs failed"),
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(every.max(Duration::from_secs(1))) => {}
        }
    }
}
