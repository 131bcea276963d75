use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::run::{Run, RunStream};
use super::{Agent, RunRequest, RunResult, driver};
use crate::error::{Error, RunError, RunErrorKind};
use crate::event::{EventKind, RunEnded};
use crate::governance::{AuditAction, Scope};
use crate::new_id;
use crate::run::RunState;
use crate::runtime::{Live, RunEnd, RunLog};
use crate::store::RunSummary;

/// Session-level configuration.
///
/// ```
/// use loom_agent::SessionConfig;
/// use serde_json::json;
///
/// let config = SessionConfig::new("demo").metadata("tenant", json!("acme"));
/// assert_eq!(config.id.as_deref(), Some("demo"));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionConfig {
    /// The session id; the same id (of the same user) reuses the same session. A new id is made
    /// when `None`.
    pub id: Option<String>,
    /// The user who owns the session, if any. A session belongs to one user (or to none): the same
    /// id opened for another user is another session, with its own history and runs, and a run
    /// of another user on this session is refused.
    pub user_id: Option<String>,
    /// Business metadata, merged into the session's.
    pub metadata: Map<String, Value>,
    /// Extension fields, merged into the session's.
    pub extensions: Map<String, Value>,
}

impl SessionConfig {
    /// A config for the session with this id.
    pub fn new(id: impl Into<String>) -> Self {
        SessionConfig { id: Some(id.into()), ..Self::default() }
    }

    /// The session of this user (see [`SessionConfig::user_id`]).
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Adds an extension field.
    pub fn extension(mut self, key: impl Into<String>, value: Value) -> Self {
        self.extensions.insert(key.into(), value);
        self
    }
}

/// A conversation: runs in a session see the earlier runs' prompts, answers and tool transcripts,
/// and run one after another in the order they were started. Different sessions run concurrently.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    pub(crate) id: Arc<str>,
    /// The owner, if any.
    pub(crate) user_id: Option<Arc<str>>,
    /// Whether this process made the session's id (no other process can have runs in it, so its
    /// runs need no lock in the store).
    pub(crate) fresh: bool,
    pub(crate) agent: Agent,
    pub(crate) state: Mutex<SessionState>,
    closed: AtomicBool,
}

pub(crate) struct SessionState {
    pub(crate) metadata: Map<String, Value>,
    pub(crate) extensions: Map<String, Value>,
    /// Whether the store has the current metadata.
    pub(crate) synced: bool,
    /// Fires (by being dropped) when the last started run has ended.
    tail: Option<oneshot::Receiver<()>>,
    /// Runs started here that have not been saved yet.
    pub(crate) live: HashMap<String, Run>,
    /// Whether a run of this session has been seeded here (read its history, or skipped it).
    pub(crate) seeded: bool,
}

impl SessionInner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session's key in the stores.
    pub(crate) fn key(&self) -> crate::store::SessionKey<'_> {
        crate::store::SessionKey { user_id: self.user_id.as_deref(), session_id: &self.id }
    }
}

/// The in-process registry's key of a session: (user, id).
pub(crate) type SessionId = (Option<Arc<str>>, Arc<str>);

impl Session {
    pub(crate) fn open(agent: &Agent, config: SessionConfig) -> Session {
        Session::open_with(agent, config, true)
    }

    /// Opens a session; `sweep`: a session new to this process handles its waiting signals in
    /// the background (see [`Session::process_pending`]).
    pub(crate) fn open_with(agent: &Agent, config: SessionConfig, sweep: bool) -> Session {
        let user = config.user_id.as_deref().map(Arc::from);
        let Some(id) = config.id else {
            return Session::create(
                agent.clone(),
                user,
                new_id("sess"),
                config.metadata,
                config.extensions,
                true,
                true,
            );
        };
        let key: SessionId = (user, Arc::from(id.as_str()));
        let mut registry = agent.inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = registry.get(&key).and_then(|w| w.upgrade()) {
            drop(registry);
            if !config.metadata.is_empty() || !config.extensions.is_empty() {
                let mut st = existing.lock();
                st.metadata.extend(config.metadata);
                st.extensions.extend(config.extensions);
                st.synced = false;
            }
            return Session { inner: existing };
        }
        prune(&mut registry);
        let session =
            Session::create(agent.clone(), key.0.clone(), id, config.metadata, config.extensions, false, false);
        registry.insert(key, Arc::downgrade(&session.inner));
        drop(registry);
        if sweep {
            session.sweep_pending();
        }
        session
    }

    pub(crate) fn anonymous(agent: Agent, user_id: Option<&str>) -> Session {
        Session::create(agent, user_id.map(Arc::from), new_id("sess"), Map::new(), Map::new(), false, true)
    }

    fn create(
        agent: Agent,
        user_id: Option<Arc<str>>,
        id: String,
        metadata: Map<String, Value>,
        extensions: Map<String, Value>,
        register: bool,
        fresh: bool,
    ) -> Session {
        let inner = Arc::new(SessionInner {
            id: Arc::from(id.as_str()),
            user_id,
            fresh,
            agent: agent.clone(),
            state: Mutex::new(SessionState {
                metadata,
                extensions,
                synced: false,
                tail: None,
                live: HashMap::new(),
                seeded: false,
            }),
            closed: AtomicBool::new(false),
        });
        if register {
            let mut registry = agent.inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
            prune(&mut registry);
            registry.insert((inner.user_id.clone(), inner.id.clone()), Arc::downgrade(&inner));
        }
        Session { inner }
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The user who owns the session, if any.
    pub fn user_id(&self) -> Option<&str> {
        self.inner.user_id.as_deref()
    }

    /// The session's key in the stores: its id within its user.
    pub fn key(&self) -> crate::store::SessionKey<'_> {
        crate::store::SessionKey { user_id: self.inner.user_id.as_deref(), session_id: &self.inner.id }
    }

    /// The session's metadata.
    pub fn metadata(&self) -> Map<String, Value> {
        self.inner.lock().metadata.clone()
    }

    /// The session's extension fields.
    pub fn extensions(&self) -> Map<String, Value> {
        self.inner.lock().extensions.clone()
    }

    /// Starts a run and returns its handle at once; the run proceeds in the background after the
    /// session's earlier runs. Needs a Tokio runtime: outside one the run ends `failed` at once.
    ///
    /// The run acts for the session's user. A request naming another user (or any user, on a
    /// session of no user) ends `failed` at once (kind `config`): a session's conversation is
    /// its user's alone.
    pub fn start(&self, request: impl Into<RunRequest>) -> Run {
        self.start_with(request.into(), None)
    }

    /// [`Session::start`], for a run a signal started (its `signal.received` event follows
    /// `run.started`).
    pub(crate) fn start_with(&self, mut request: RunRequest, received: Option<crate::event::SignalEvent>) -> Run {
        let input = request.input.take().unwrap_or_else(|| super::RunInput::Prompt(String::new()));
        let agent = &self.inner.agent.inner;
        // The agent's tools and hooks as they are now: the run keeps them to its end.
        let live = agent.env.live.load_full();
        let foreign_user = request.user_id.take().filter(|u| Some(u.as_str()) != self.inner.user_id.as_deref());
        let queued = request.queued.take();
        let run_id = match &queued {
            Some((id, _)) => id.clone(),
            None => {
                request.child.as_ref().and_then(|c| c.run_id.as_deref()).map_or_else(|| new_id("run"), str::to_string)
            }
        };
        let scope =
            Scope { run_id: Arc::from(run_id), session_id: self.inner.id.clone(), user_id: self.inner.user_id.clone() };
        let log = RunLog::new(
            &scope,
            input,
            request.context.clone(),
            request.metadata.clone(),
            live.hooks.hooks.clone(),
            request.child.as_ref(),
        );
        if let Some((_, fence)) = queued {
            log.fence.store(fence, Ordering::Release);
        }
        let run = Run { log: log.clone() };
        if request.cancelled {
            run.cancel();
        }
        if let Some(user) = foreign_user {
            let owner = match &self.inner.user_id {
                Some(owner) => format!("user `{owner}`"),
                None => "no user".to_string(),
            };
            let message = format!(
                "a run for user `{user}` cannot join session `{}`, which belongs to {owner}; \
                 open the user's own session (SessionConfig::user, or RunRequest::session with RunRequest::user)",
                self.inner.id
            );
            self.refuse(&log, RunError::new(RunErrorKind::Config, message));
            return run;
        }
        if self.user_id() == Some("") {
            self.refuse(&log, RunError::new(RunErrorKind::Config, "the user id is empty; omit it for no user"));
            return run;
        }
        if self.inner.closed.load(Ordering::Acquire) {
            let message = format!("session `{}` is closed", self.inner.id);
            self.refuse(&log, RunError::new(RunErrorKind::Config, message));
            return run;
        }
        if let Err(no_runtime) = self.spawn(&run, live, driver::Start::Fresh(Box::new((request, received)))) {
            fail_at_once(&log, RunError::new(RunErrorKind::Config, no_runtime));
        }
        run
    }

    /// Continues a journaled run (its lease already taken) after the session's earlier runs.
    /// `switched`: (from, to) when the resumer chose to continue on another model.
    pub(crate) fn start_resumed(
        &self,
        stored: crate::store::JournaledRun,
        switched: Option<(String, String)>,
        child: Option<&crate::runtime::ChildSpec>,
        architecture: Option<Arc<dyn crate::architecture::Architecture>>,
        fence: u64,
        cancelled: bool,
    ) -> Result<Run, Error> {
        let record = &stored.record;
        let scope = Scope {
            run_id: Arc::from(record.run_id.as_str()),
            session_id: self.inner.id.clone(),
            user_id: record.user_id.as_deref().map(Arc::from),
        };
        let live = self.inner.agent.inner.env.live.load_full();
        let log = RunLog::new(
            &scope,
            record.input.clone(),
            record.context.clone(),
            record.metadata.clone(),
            live.hooks.hooks.clone(),
            child,
        );
        log.fence.store(fence, Ordering::Release);
        log.preload(stored.events.clone(), false)?;
        // Children that finished before the crash are replayed, not run again: their spend
        // counts from their `child.finished` events.
        for event in &stored.events {
            if let EventKind::ChildFinished(finished) = &event.kind {
                log.add_usage(&finished.usage);
            }
        }
        if let Some((from, to)) = switched {
            tracing::warn!(run_id = %record.run_id, %from, %to, "the resumed run continues on another model");
            log.emit(EventKind::ModelChanged(crate::event::ModelChanged { from, to }));
        }
        if !stored.entries.is_empty() {
            // Replayed calls emit nothing until the replay catches up with the journal.
            log.start_suppressing();
        }
        let run = Run { log };
        if cancelled {
            // Before its task starts: it ends `cancelled` without executing a step.
            run.cancel();
        }
        self.spawn(&run, live, driver::Start::Resume(Box::new(stored), architecture))
            .map_err(|e| Error::Config(e.into()))?;
        Ok(run)
    }

    /// Queues a run behind the session's earlier runs and spawns its driver. Fails (saying why)
    /// outside a Tokio runtime.
    fn spawn(&self, run: &Run, live: Arc<Live>, start: driver::Start) -> Result<(), &'static str> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| "runs need a Tokio runtime; none is running")?;
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let previous = {
            let mut st = self.inner.lock();
            st.live.insert(run.id().to_string(), run.clone());
            st.tail.replace(done_rx)
        };
        let agent = self.inner.agent.inner.clone();
        handle.spawn(driver::drive(agent, live, self.inner.clone(), run.log.clone(), start, previous, done_tx));
        Ok(())
    }

    /// Starts a run and waits for it. `Ok` when it completed; otherwise [`Error::Run`]. Dropping
    /// the returned future cancels the run, as with [`Agent::run`].
    pub async fn run(&self, request: impl Into<RunRequest>) -> Result<RunResult, Error> {
        let run = self.start(request);
        let mut guard = super::CancelOnDrop(Some(run.clone()));
        let result = run.result().await;
        guard.0 = None;
        result.into_completed()
    }

    /// Starts a run and streams its events. Dropping the stream before the run ends cancels it.
    pub fn stream(&self, request: impl Into<RunRequest>) -> RunStream {
        RunStream::new(self.start(request))
    }

    /// A run of this session: a live handle while it is in flight, rebuilt from the store after.
    pub async fn get_run(&self, run_id: &str) -> Result<Option<Run>, Error> {
        if let Some(run) = self.inner.lock().live.get(run_id).cloned() {
            return Ok(Some(run));
        }
        let stored = self.inner.agent.inner.env.stores.sessions.get_run(self.key(), run_id).await?;
        Ok(stored.map(|t| Run { log: RunLog::from_transcript(&t) }))
    }

    /// The session's runs, oldest first: finished ones from the store, then those in flight.
    pub async fn list_runs(&self) -> Result<Vec<RunSummary>, Error> {
        let mut runs = self.inner.agent.inner.env.stores.sessions.list_runs(self.key()).await?;
        let live: Vec<Run> = self.inner.lock().live.values().cloned().collect();
        let in_flight: Vec<RunSummary> = live
            .iter()
            .filter(|r| !runs.iter().any(|s| s.run_id == r.id()))
            .map(|r| r.transcript().summary())
            .collect();
        runs.extend(in_flight);
        // Run ids are time-ordered from the moment a run is started: this is start order.
        runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(runs)
    }

    /// Closes the session: later runs fail at once, runs already started finish, then the store
    /// marks the session closed.
    pub async fn close(&self) -> Result<(), Error> {
        self.inner.closed.store(true, Ordering::Release);
        let tail = self.inner.lock().tail.take();
        if let Some(tail) = tail {
            let _ = tail.await;
        }
        {
            let mut registry = self.inner.agent.inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
            let key: SessionId = (self.inner.user_id.clone(), self.inner.id.clone());
            if registry.get(&key).is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.inner))) {
                registry.remove(&key);
            }
        }
        self.inner.agent.inner.env.stores.sessions.close_session(self.key()).await
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

impl Session {
    /// Refuses a run at once (a closed session, another user's run): it ends `failed`, and the
    /// audit log gets its start and end entries, like every run's, before the result is published.
    fn refuse(&self, log: &Arc<RunLog>, error: RunError) {
        let env = &self.inner.agent.inner.env;
        let handle = tokio::runtime::Handle::try_current();
        let (true, Ok(handle)) = (env.policies.audit.is_some(), handle) else {
            fail_at_once(log, error);
            return;
        };
        seal_failed(log, error.clone());
        let (env, log) = (env.clone(), log.clone());
        handle.spawn(async move {
            let scope = log.scope();
            let end = serde_json::json!({"state": RunState::Failed, "turns": 0, "error": error.message});
            let written = match env.audit_unexecuted_start(&scope, &log.input()).await {
                Ok(()) => env.policies.audit(&scope, AuditAction::RunFinished, end).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                tracing::error!(run_id = %scope.run_id, error = %e, "the audit log refused a refused run's entries");
            }
            log.publish();
        });
    }
}

/// Ends a run that cannot start: its log still ends with a `run.failed` event.
fn fail_at_once(log: &RunLog, error: RunError) {
    seal_failed(log, error);
    log.publish();
}

/// Emits `run.failed` and seals the result, without publishing it.
fn seal_failed(log: &RunLog, error: RunError) {
    log.emit(EventKind::RunFailed(RunEnded { error: error.clone(), turns: 0, usage: Default::default() }));
    log.finish(RunEnd {
        state: RunState::Failed,
        output: String::new(),
        parsed: None,
        error: Some(error),
        messages: Vec::new(),
    });
}

/// Drops the registry's dead entries, amortized: only when it has doubled since the last pruning
/// (its capacity is the high-water mark), so opening sessions stays O(1) on average.
fn prune(registry: &mut HashMap<SessionId, Weak<SessionInner>>) {
    if registry.len() >= 1024 && registry.len() == registry.capacity() {
        registry.retain(|_, w| w.strong_count() > 0);
        if registry.len() * 2 > registry.capacity() {
            registry.reserve(registry.len());
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("user_id", &self.inner.user_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}
