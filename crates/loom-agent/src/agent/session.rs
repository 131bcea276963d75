use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::run::{Run, RunEnd, RunShared, RunStream};
use super::{Agent, RunRequest, RunResult, driver};
use crate::error::{Error, RunError, RunErrorKind};
use crate::event::{EventKind, RunEnded};
use crate::governance::Scope;
use crate::new_id;
use crate::run::RunState;
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
    /// The session id; the same id reuses the same session. A new id is made when `None`.
    pub id: Option<String>,
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
}

impl SessionInner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Session {
    pub(crate) fn open(agent: &Agent, config: SessionConfig) -> Session {
        let Some(id) = config.id else {
            return Session::create(agent.clone(), new_id("sess"), config.metadata, config.extensions, true);
        };
        let mut registry = agent.inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = registry.get(&id).and_then(|w| w.upgrade()) {
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
        let session = Session::create(agent.clone(), id.clone(), config.metadata, config.extensions, false);
        registry.insert(id, Arc::downgrade(&session.inner));
        session
    }

    pub(crate) fn anonymous(agent: Agent) -> Session {
        Session::create(agent, new_id("sess"), Map::new(), Map::new(), false)
    }

    fn create(
        agent: Agent,
        id: String,
        metadata: Map<String, Value>,
        extensions: Map<String, Value>,
        register: bool,
    ) -> Session {
        let inner = Arc::new(SessionInner {
            id: Arc::from(id.as_str()),
            agent: agent.clone(),
            state: Mutex::new(SessionState { metadata, extensions, synced: false, tail: None, live: HashMap::new() }),
            closed: AtomicBool::new(false),
        });
        if register {
            let mut registry = agent.inner.sessions.lock().unwrap_or_else(|p| p.into_inner());
            prune(&mut registry);
            registry.insert(id, Arc::downgrade(&inner));
        }
        Session { inner }
    }

    /// The session's id.
    pub fn id(&self) -> &str {
        &self.inner.id
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
    pub fn start(&self, request: impl Into<RunRequest>) -> Run {
        let mut request = request.into();
        let input = request.input.take().unwrap_or_else(|| super::RunInput::Prompt(String::new()));
        let agent = self.inner.agent.inner.clone();
        let scope = Scope {
            run_id: Arc::from(new_id("run")),
            session_id: self.inner.id.clone(),
            user_id: request.user_id.as_deref().map(Arc::from),
        };
        let shared = RunShared::new(
            &scope,
            input,
            request.context.clone(),
            std::mem::take(&mut request.metadata),
            agent.hooks.clone(),
        );
        let run = Run { shared: shared.clone() };
        if self.inner.closed.load(Ordering::Acquire) {
            let message = format!("session `{}` is closed", self.inner.id);
            fail_at_once(&shared, RunError::new(RunErrorKind::Config, message));
            return run;
        }
        let handle = match tokio::runtime::Handle::try_current() {
            Ok(h) => h,
            Err(_) => {
                let error = RunError::new(RunErrorKind::Config, "runs need a Tokio runtime; none is running");
                fail_at_once(&shared, error);
                return run;
            }
        };
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let previous = {
            let mut st = self.inner.lock();
            st.live.insert(run.id().to_string(), run.clone());
            st.tail.replace(done_rx)
        };
        handle.spawn(driver::drive(
            agent,
            self.inner.clone(),
            shared,
            driver::Start::Fresh(request),
            previous,
            done_tx,
        ));
        run
    }

    /// Continues a journaled run (its lease already taken) after the session's earlier runs.
    pub(crate) fn start_resumed(&self, stored: crate::store::JournaledRun) -> Result<Run, Error> {
        let agent = self.inner.agent.inner.clone();
        let record = &stored.record;
        let scope = Scope {
            run_id: Arc::from(record.run_id.as_str()),
            session_id: self.inner.id.clone(),
            user_id: record.user_id.as_deref().map(Arc::from),
        };
        let shared = RunShared::new(
            &scope,
            record.input.clone(),
            record.context.clone(),
            record.metadata.clone(),
            agent.hooks.clone(),
        );
        shared.preload(stored.events.clone(), !stored.entries.is_empty())?;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("runs need a Tokio runtime; none is running".into()))?;
        let run = Run { shared: shared.clone() };
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let previous = {
            let mut st = self.inner.lock();
            st.live.insert(run.id().to_string(), run.clone());
            st.tail.replace(done_rx)
        };
        let start = driver::Start::Resume(Box::new(stored));
        handle.spawn(driver::drive(agent, self.inner.clone(), shared, start, previous, done_tx));
        Ok(run)
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
        let stored = self.inner.agent.inner.session_store.get_run(&self.inner.id, run_id).await?;
        Ok(stored.map(|t| Run { shared: RunShared::from_transcript(&t) }))
    }

    /// The session's runs, oldest first: finished ones from the store, then those in flight.
    pub async fn list_runs(&self) -> Result<Vec<RunSummary>, Error> {
        let mut runs = self.inner.agent.inner.session_store.list_runs(&self.inner.id).await?;
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
            if registry.get(&*self.inner.id).is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.inner))) {
                registry.remove(&*self.inner.id);
            }
        }
        self.inner.agent.inner.session_store.close_session(&self.inner.id).await
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

/// Ends a run that cannot start: its log still ends with a `run.failed` event.
fn fail_at_once(shared: &RunShared, error: RunError) {
    shared.emit(EventKind::RunFailed(RunEnded { error: error.clone(), turns: 0, usage: Default::default() }));
    shared.finish(RunEnd {
        state: RunState::Failed,
        output: String::new(),
        parsed: None,
        error: Some(error),
        messages: Vec::new(),
    });
    shared.publish();
}

/// Drops the registry's dead entries, amortized: only when it has doubled since the last pruning
/// (its capacity is the high-water mark), so opening sessions stays O(1) on average.
fn prune(registry: &mut HashMap<String, Weak<SessionInner>>) {
    if registry.len() >= 1024 && registry.len() == registry.capacity() {
        registry.retain(|_, w| w.strong_count() > 0);
        if registry.len() * 2 > registry.capacity() {
            registry.reserve(registry.len());
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("id", &self.inner.id).field("closed", &self.is_closed()).finish()
    }
}
