//! Where the run a request starts executes: in this server (the default), or — with `[server]
//! execution = "queue"` — in whichever worker claims it from the journal's database, the server
//! answering from the database (the run's status, its saved transcript, and its durable event
//! log followed by polling). `/v1/*`, A2A, `/mcp` and signals start runs through [`start`], so
//! none of them executes a run in the receiving server in queue mode.

use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use loom_agent::run::RunInput;
use loom_agent::store::{RunQueue, RunStatus, SessionKey};
use loom_agent::{
    Agent, Event, EventKind, Run, RunContext, RunRequest, RunResult, RunState, Transcript, queued_request,
};

use crate::error::{ApiError, ApiResult};
use crate::queued::{Follow, POLL};
use crate::runs::start_in_session;
use crate::state::{AppState, Tenant};

/// A run a request started: executing here, or queued for a worker.
#[derive(Clone)]
pub(crate) enum Started {
    /// In this process.
    Local(Run),
    /// In the durable queue (queue mode).
    Queued(Box<QueuedRun>),
}

/// A run of the durable queue, as a server that does not execute it sees it.
#[derive(Clone)]
pub(crate) struct QueuedRun {
    pub queue: Arc<dyn RunQueue>,
    /// The agent (of this server's configuration) that runs it: its stores are the worker's.
    pub agent: Agent,
    pub run_id: String,
    pub session_id: String,
    /// The internal (tenant-scoped) user.
    pub user_id: Option<String>,
    /// What was asked, for a run whose journal has no record yet.
    pub input: RunInput,
    pub context: RunContext,
}

/// Starts a run in the tenant's session `session_id` (a new session when `None`) for `user`
/// (within the tenant): in this server, or queued for a worker in queue mode.
pub(crate) async fn start(
    state: &Arc<AppState>,
    tenant: &Tenant,
    agent_name: &str,
    agent: &Agent,
    user: Option<&str>,
    session_id: Option<&str>,
    request: RunRequest,
) -> ApiResult<Started> {
    if let Some(id) = session_id
        && let Some(held) = crate::sessions::lookup(state, tenant, id).await?
        && held.session.is_closed()
    {
        // A session that left the bounded map is read back with its closed flag: it stays closed.
        return Err(ApiError::conflict(format!("session `{id}` is closed")));
    }
    let Some(queue) = state.queue.clone() else {
        return start_in_session(state, tenant, agent_name, agent, user, session_id, request).map(Started::Local);
    };
    let input = request.input.clone().ok_or_else(|| ApiError::bad_request("the run has no input"))?;
    let scoped = tenant.scoped_user(user);
    let body = queued_request(&input, &request.context, &request.metadata);
    let queued = agent.enqueue(agent_name, session_id, Some(&scoped), body).await?;
    state.budgets.adopt(tenant, &queued.run_id).await;
    Ok(Started::Queued(Box::new(QueuedRun {
        queue,
        agent: agent.clone(),
        run_id: queued.run_id,
        session_id: queued.session_id,
        user_id: queued.user_id,
        input,
        context: request.context,
    })))
}

impl Started {
    /// The run's id.
    pub(crate) fn id(&self) -> &str {
        match self {
            Started::Local(run) => run.id(),
            Started::Queued(q) => &q.run_id,
        }
    }

    /// The run's events from its first, ending with its last (the live log here; the durable log,
    /// followed, for a queued run).
    pub(crate) fn events(&self) -> BoxStream<'static, Event> {
        match self {
            Started::Local(run) => run.events().boxed(),
            Started::Queued(q) => q.events(),
        }
    }

    /// How the run ended (or suspended): awaited here, or polled from the database.
    pub(crate) async fn result(&self) -> ApiResult<RunResult> {
        match self {
            Started::Local(run) => Ok(run.result().await),
            Started::Queued(q) => q.result().await,
        }
    }

    /// The run as it is now.
    pub(crate) async fn transcript(&self) -> ApiResult<Transcript> {
        match self {
            Started::Local(run) => {
                let mut t = run.transcript();
                t.state = run.state();
                Ok(t)
            }
            Started::Queued(q) => q.transcript().await,
        }
    }

    /// Cancels the run: at once here; for a queued run, recorded for the worker that holds it (or
    /// claims it next).
    pub(crate) async fn cancel(&self) {
        match self {
            Started::Local(run) => run.cancel(),
            Started::Queued(q) => {
                if let Err(e) = q.queue.request_cancel(&q.run_id).await {
                    tracing::warn!(run_id = %q.run_id, error = %e, "recording a cancel failed");
                }
            }
        }
    }
}

impl QueuedRun {
    /// The queued run of a status the caller has checked the tenant owns, run by `agent`.
    pub(crate) fn of_status(queue: Arc<dyn RunQueue>, agent: Agent, s: &RunStatus) -> QueuedRun {
        QueuedRun {
            queue,
            agent,
            run_id: s.run_id.clone(),
            session_id: s.session_id.clone(),
            user_id: s.user_id.clone(),
            input: RunInput::Prompt(String::new()),
            context: RunContext::default(),
        }
    }

    /// The durable event log from its start, followed until the run's end (or suspension).
    pub(crate) fn events(&self) -> BoxStream<'static, Event> {
        let follow = Follow::new(self.queue.clone(), self.run_id.clone(), None);
        stream::unfold(follow, |mut f| async move { f.next_batch().await.map(|batch| (stream::iter(batch), f)) })
            .flatten()
            .boxed()
    }

    /// Waits (polling the database) until a worker has ended or suspended the run.
    pub(crate) async fn result(&self) -> ApiResult<RunResult> {
        loop {
            match self.queue.status(&self.run_id).await? {
                Some(s) if s.finished || s.state == RunState::Suspended => break,
                Some(_) => tokio::time::sleep(POLL * 2).await,
                None => return Err(ApiError::not_found("run", &self.run_id)),
            }
        }
        Ok(self.transcript().await?.to_result())
    }

    /// The run as the database knows it: the transcript its worker saved once it ended; before
    /// that, its journal record (or its queued request) with its durable events, and the output,
    /// usage and error of its last event when that ended or suspended it.
    pub(crate) async fn transcript(&self) -> ApiResult<Transcript> {
        let status = self.queue.status(&self.run_id).await?.ok_or_else(|| ApiError::not_found("run", &self.run_id))?;
        let key = SessionKey::scoped(self.user_id.as_deref(), &self.session_id);
        if status.finished
            && let Some(t) = self.agent.session_store().get_run(key, &self.run_id).await?
        {
            return Ok(Arc::unwrap_or_clone(t));
        }
        let record = match self.agent.journal() {
            Some(journal) => journal.load(&self.run_id).await?.map(|r| r.record),
            None => None,
        };
        let events = self.queue.events_after(&self.run_id, None, 100_000).await?;
        let mut t = status_transcript(&status);
        match &record {
            Some(r) => {
                t.input = r.input.clone();
                t.context = r.context.clone();
                t.metadata = r.metadata.clone();
                t.messages = r.seeds.clone();
            }
            None => {
                t.input = self.input.clone();
                t.context = self.context.clone();
                t.started_at = None;
            }
        }
        if status.state.is_terminal()
            && let Some(last) = events.last()
        {
            match &last.kind {
                EventKind::RunCompleted(c) => {
                    t.output = c.output.clone();
                    t.parsed = c.parsed.clone();
                    t.turns = c.turns;
                    t.usage = c.usage;
                }
                EventKind::RunFailed(e)
                | EventKind::RunCancelled(e)
                | EventKind::RunInterrupted(e)
                | EventKind::RunSuspended(e) => {
                    t.error = Some(e.error.clone());
                    t.turns = e.turns;
                    t.usage = e.usage;
                }
                _ => {}
            }
        }
        t.events = Arc::from(events);
        Ok(t)
    }
}

/// A run as its status alone tells (no input, events or output): for listings.
pub(crate) fn status_transcript(s: &RunStatus) -> Transcript {
    Transcript {
        run_id: s.run_id.clone(),
        session_id: s.session_id.clone(),
        user_id: s.user_id.clone(),
        state: s.state,
        input: RunInput::Prompt(String::new()),
        context: RunContext::default(),
        metadata: Default::default(),
        messages: Vec::new(),
        output: String::new(),
        parsed: None,
        events: Arc::from(Vec::new()),
        artifacts: Vec::new(),
        usage: Default::default(),
        error: None,
        turns: 0,
        started_at: Some(s.created_at),
        finished_at: s.finished_at,
        parent_run_id: None,
    }
}
