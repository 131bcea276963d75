//! The run's log: its events (append-only, replayable by any number of consumers), its state and
//! counters, and the result and transcript it is sealed into. Shared by the run's task, its
//! handles and its event consumers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, RunError};
use crate::event::{ArtifactCreated, Event, EventKind};
use crate::governance::{Hooks, Scope};
use crate::message::{Message, ToolCall, Usage};
use crate::run::{Artifact, RunContext, RunInput, RunResult, RunState, Transcript};
use crate::tool::ArtifactSink;

/// Per-run state shared by the run's task, its handles and its event consumers.
pub(crate) struct RunLog {
    pub(crate) run_id: Arc<str>,
    pub(crate) session_id: Arc<str>,
    pub(crate) user_id: Option<Arc<str>>,
    pub(crate) cancel: CancellationToken,
    /// The fencing number the run's journal writes carry (set before the run is spawned: 0 for a
    /// run that begins itself, the acquired number for a resumed or claimed one).
    pub(crate) fence: std::sync::atomic::AtomicU64,
    /// Why the run was cancelled, when something other than its owner cancelled it (a signal).
    cancel_reason: std::sync::OnceLock<(String, String)>,
    /// A resumed run whose journal records that memory already has it.
    memory_written: std::sync::atomic::AtomicBool,
    hooks: Arc<[Arc<dyn Hooks>]>,
    /// The run that started this one (child runs only).
    pub(crate) parent: Option<Arc<super::child::ParentLink>>,
    /// The child runs this run started (see child.rs).
    pub(super) children: Mutex<Vec<Arc<RunLog>>>,
    inner: Mutex<RunInner>,
}

struct RunInner {
    state: RunState,
    events: Vec<Event>,
    /// Events already written to the journal.
    persisted: usize,
    /// A resumed run replaying its journal: the events it would emit are already in the log.
    suppress: bool,
    frozen: Option<Arc<[Event]>>,
    artifacts: Vec<Artifact>,
    input: RunInput,
    /// The run's context and metadata, boxed and only when either is non-empty: most runs have
    /// neither, and inline their empty maps would be about 240 B of every run's log.
    extras: Option<Box<(RunContext, Map<String, Value>)>>,
    seeds: Vec<Message>,
    usage: Usage,
    turns: u32,
    tool_calls: u32,
    started_at: Option<DateTime<Utc>>,
    result: Option<Arc<RunResult>>,
    transcript: Option<Arc<Transcript>>,
    published: bool,
    /// Event consumers: woken by each event and at publish.
    wakers: Vec<Waker>,
    /// Result waiters: woken only at publish (an event does not change the result, and waking a
    /// waiter on another thread for each of a run's events costs a thread wake-up each).
    result_wakers: Vec<Waker>,
    /// Steering messages not yet seen by the model.
    steering: Vec<String>,
}

/// The boxed context and metadata of a run, `None` when both are empty.
fn extras(context: RunContext, metadata: Map<String, Value>) -> Option<Box<(RunContext, Map<String, Value>)>> {
    let empty = context.inputs.is_empty()
        && context.knowledge.is_empty()
        && context.extensions.is_empty()
        && metadata.is_empty();
    (!empty).then(|| Box::new((context, metadata)))
}

impl RunInner {
    fn context(&self) -> RunContext {
        self.extras.as_ref().map(|e| e.0.clone()).unwrap_or_default()
    }

    fn metadata(&self) -> Map<String, Value> {
        self.extras.as_ref().map(|e| e.1.clone()).unwrap_or_default()
    }
}

/// Counters a run keeps while it executes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    pub(crate) usage: Usage,
    pub(crate) turns: u32,
    pub(crate) tool_calls: u32,
}

impl RunLog {
    pub(crate) fn new(
        scope: &Scope,
        input: RunInput,
        context: RunContext,
        metadata: Map<String, Value>,
        hooks: Arc<[Arc<dyn Hooks>]>,
        child: Option<&super::child::ChildSpec>,
    ) -> Arc<Self> {
        Arc::new(RunLog {
            run_id: scope.run_id.clone(),
            session_id: scope.session_id.clone(),
            user_id: scope.user_id.clone(),
            cancel: child.map_or_else(CancellationToken::new, |c| c.cancel.child_token()),
            fence: std::sync::atomic::AtomicU64::new(0),
            cancel_reason: std::sync::OnceLock::new(),
            memory_written: std::sync::atomic::AtomicBool::new(false),
            hooks,
            parent: child.map(|c| c.link.clone()),
            children: Mutex::new(Vec::new()),
            inner: Mutex::new(RunInner {
                state: RunState::Queued,
                events: Vec::new(),
                persisted: 0,
                suppress: false,
                frozen: None,
                artifacts: Vec::new(),
                input,
                extras: extras(context, metadata),
                seeds: Vec::new(),
                usage: Usage::default(),
                turns: 0,
                tool_calls: 0,
                started_at: None,
                result: None,
                transcript: None,
                published: false,
                wakers: Vec::new(),
                result_wakers: Vec::new(),
                steering: Vec::new(),
            }),
        })
    }

    /// A finished run rebuilt from its stored transcript.
    pub(crate) fn from_transcript(t: &Transcript) -> Arc<Self> {
        let result = Arc::new(t.to_result());
        Arc::new(RunLog {
            run_id: Arc::from(t.run_id.as_str()),
            session_id: Arc::from(t.session_id.as_str()),
            user_id: t.user_id.as_deref().map(Arc::from),
            cancel: CancellationToken::new(),
            fence: std::sync::atomic::AtomicU64::new(0),
            cancel_reason: std::sync::OnceLock::new(),
            memory_written: std::sync::atomic::AtomicBool::new(false),
            hooks: Arc::from(Vec::new()),
            parent: None,
            children: Mutex::new(Vec::new()),
            inner: Mutex::new(RunInner {
                state: t.state,
                events: Vec::new(),
                persisted: 0,
                suppress: false,
                frozen: Some(t.events.clone()),
                artifacts: t.artifacts.clone(),
                input: t.input.clone(),
                extras: extras(t.context.clone(), t.metadata.clone()),
                seeds: Vec::new(),
                usage: t.usage,
                turns: t.turns,
                tool_calls: 0,
                started_at: t.started_at,
                result: Some(result),
                transcript: Some(Arc::new(t.clone())),
                published: true,
                wakers: Vec::new(),
                result_wakers: Vec::new(),
                steering: Vec::new(),
            }),
        })
    }

    /// Cancels the run, saying why: the run ends `cancelled` with this reason and message (the
    /// first reason given wins).
    pub(crate) fn cancel_because(&self, reason: String, message: String) {
        let _ = self.cancel_reason.set((reason, message));
        self.cancel.cancel();
    }

    /// Why the run was cancelled, when [`RunLog::cancel_because`] said: (reason, message).
    pub(crate) fn cancel_reason(&self) -> Option<&(String, String)> {
        self.cancel_reason.get()
    }

    pub(crate) fn scope(&self) -> Scope {
        Scope { run_id: self.run_id.clone(), session_id: self.session_id.clone(), user_id: self.user_id.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, RunInner> {
        // A poisoned lock only means a panic happened while it was held; the data is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an event to the log and wakes every consumer. Returns its sequence number.
    pub(crate) fn emit(&self, kind: EventKind) -> u64 {
        let (seq, wakers, for_hooks) = {
            let mut inner = self.lock();
            if inner.frozen.is_some() {
                return inner.frozen.as_ref().map(|f| f.len() as u64).unwrap_or(0);
            }
            if inner.suppress {
                return inner.events.len() as u64;
            }
            let seq = inner.events.len() as u64;
            let event =
                Event { run_id: self.run_id.clone(), session_id: self.session_id.clone(), seq, at: Utc::now(), kind };
            let for_hooks = if self.hooks.is_empty() { None } else { Some(event.clone()) };
            // Room for two events first (`run.started` and `model.request`: where a run waits on
            // its model), not the four a Vec starts with: an event is a few hundred bytes inline.
            if inner.events.capacity() == 0 {
                inner.events.reserve_exact(2);
            }
            inner.events.push(event);
            (seq, std::mem::take(&mut inner.wakers), for_hooks)
        };
        for w in wakers {
            w.wake();
        }
        if let Some(event) = for_hooks {
            for h in self.hooks.iter() {
                h.on_event(&event);
            }
        }
        seq
    }

    /// A resumed run's log: the events its earlier execution persisted. While `replaying`, the
    /// events the replay would emit again are dropped. Fails unless the events are numbered 0..n.
    pub(crate) fn preload(&self, events: Vec<Event>, replaying: bool) -> Result<(), Error> {
        if let Some((i, e)) = events.iter().enumerate().find(|(i, e)| e.seq != *i as u64) {
            return Err(Error::Corrupt(
                format!(
                    "run {}: the stored events have a gap or duplicate at position {i} (seq {})",
                    self.run_id, e.seq
                )
                .into(),
            ));
        }
        let mut inner = self.lock();
        inner.persisted = events.len();
        inner.events = events;
        inner.suppress = replaying;
        Ok(())
    }

    /// Marks the run's memory write as done (a resumed run whose journal records it).
    pub(crate) fn set_memory_written(&self) {
        self.memory_written.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the run's memory write is already done.
    pub(crate) fn memory_written(&self) -> bool {
        self.memory_written.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Starts replay suppression: events are dropped until [`RunLog::stop_suppressing`].
    pub(crate) fn start_suppressing(&self) {
        self.lock().suppress = true;
    }

    /// Ends replay suppression: from now on events are emitted again.
    pub(crate) fn stop_suppressing(&self) {
        self.lock().suppress = false;
    }

    /// Whether events are being dropped (a resumed run still replaying its journal).
    pub(crate) fn is_suppressing(&self) -> bool {
        self.lock().suppress
    }

    /// The events not yet written to the journal, and the log length they end at.
    pub(crate) fn unpersisted(&self) -> (Vec<Event>, usize) {
        let inner = self.lock();
        let events = inner.frozen.as_deref().unwrap_or(&inner.events);
        let from = inner.persisted.min(events.len());
        (events[from..].to_vec(), events.len())
    }

    /// The events not written to the journal yet, where they start in the log, and where they end.
    pub(crate) fn unpersisted_span(&self) -> (Vec<Event>, usize, usize) {
        let inner = self.lock();
        let events = inner.frozen.as_deref().unwrap_or(&inner.events);
        let from = inner.persisted.min(events.len());
        (events[from..].to_vec(), from, events.len())
    }

    /// How many events the log holds (the end of [`RunLog::unpersisted`] now).
    pub(crate) fn event_count(&self) -> usize {
        let inner = self.lock();
        inner.frozen.as_deref().unwrap_or(&inner.events).len()
    }

    /// Marks the log up to `end` as written to the journal.
    pub(crate) fn mark_persisted(&self, end: usize) {
        let mut inner = self.lock();
        inner.persisted = inner.persisted.max(end);
    }

    /// Restores artifacts a replayed tool call created (their events are already in the log).
    pub(crate) fn restore_artifacts(&self, artifacts: &[Artifact]) {
        self.lock().artifacts.extend_from_slice(artifacts);
    }

    /// Artifacts created by one tool call.
    pub(crate) fn artifacts_of(&self, call_id: &str) -> Vec<Artifact> {
        self.lock().artifacts.iter().filter(|a| a.call_id.as_deref() == Some(call_id)).cloned().collect()
    }

    pub(crate) fn set_running(&self, seeds: Vec<Message>) -> DateTime<Utc> {
        let now = Utc::now();
        let mut inner = self.lock();
        inner.state = RunState::Running;
        inner.started_at = Some(now);
        inner.seeds = seeds;
        now
    }

    /// Sets when the run started executing (a resumed run keeps its first start).
    pub(crate) fn set_started_at(&self, at: DateTime<Utc>) {
        self.lock().started_at = Some(at);
    }

    /// When the run started executing.
    pub(crate) fn started_at(&self) -> Option<DateTime<Utc>> {
        self.lock().started_at
    }

    /// Tool calls announced by a `tool.call` event that have no `tool.result` yet.
    pub(crate) fn pending_tool_calls(&self) -> Vec<(u32, ToolCall)> {
        let inner = self.lock();
        let mut pending: Vec<(u32, &ToolCall)> = Vec::new();
        for e in &inner.events {
            match &e.kind {
                EventKind::ToolCall(c) => pending.push((c.turn, &c.call)),
                EventKind::ToolResult(r) => pending.retain(|(_, c)| c.id != r.call_id),
                _ => {}
            }
        }
        pending.into_iter().map(|(t, c)| (t, c.clone())).collect()
    }

    pub(crate) fn set_input(&self, input: RunInput) {
        self.lock().input = input;
    }

    /// Whether the run began executing (it may have been cancelled while queued).
    pub(crate) fn was_started(&self) -> bool {
        self.lock().started_at.is_some()
    }

    pub(crate) fn input(&self) -> RunInput {
        self.lock().input.clone()
    }

    pub(crate) fn state(&self) -> RunState {
        self.lock().state
    }

    pub(crate) fn progress(&self) -> Progress {
        let inner = self.lock();
        Progress { usage: inner.usage, turns: inner.turns, tool_calls: inner.tool_calls }
    }

    pub(crate) fn record_turn(&self, turn: u32, usage: &Usage) {
        let mut inner = self.lock();
        inner.turns = inner.turns.max(turn);
        inner.usage.add(usage);
    }

    /// Adds the usage of a call that is not a turn (the judge, a summary).
    pub(crate) fn add_usage(&self, usage: &Usage) {
        self.lock().usage.add(usage);
    }

    /// Queues a steering message for the run's next model call. `false` once the run has ended.
    pub(crate) fn steer(&self, text: String) -> bool {
        let mut inner = self.lock();
        if inner.state.is_terminal() {
            return false;
        }
        inner.steering.push(text);
        true
    }

    /// Takes the queued steering messages.
    pub(crate) fn take_steering(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().steering)
    }

    /// Whether steering messages wait for the next model call.
    pub(crate) fn has_steering(&self) -> bool {
        !self.lock().steering.is_empty()
    }

    pub(crate) fn record_tool_calls(&self, n: u32) {
        self.lock().tool_calls += n;
    }

    pub(crate) fn set_turns(&self, turn: u32) {
        let mut inner = self.lock();
        inner.turns = inner.turns.max(turn);
    }

    /// Seals the run: freezes the event log and builds the result and the transcript. Waiters see
    /// them only after [`RunLog::publish`], so the run can be persisted in between.
    pub(crate) fn finish(&self, end: RunEnd) -> (Arc<RunResult>, Arc<Transcript>) {
        let finished_at = Utc::now();
        let (result, transcript) = {
            let mut inner = self.lock();
            if let (Some(r), Some(t)) = (&inner.result, &inner.transcript) {
                return (r.clone(), t.clone());
            }
            let events: Arc<[Event]> = Arc::from(std::mem::take(&mut inner.events));
            inner.frozen = Some(events.clone());
            inner.state = end.state;
            let started_at = inner.started_at.unwrap_or(finished_at);
            let result = Arc::new(RunResult {
                run_id: self.run_id.to_string(),
                session_id: self.session_id.to_string(),
                user_id: self.user_id.as_deref().map(str::to_string),
                state: end.state,
                output: end.output.clone(),
                parsed: end.parsed.clone(),
                artifacts: inner.artifacts.clone(),
                events: events.clone(),
                error: end.error.clone(),
                usage: inner.usage,
                turns: inner.turns,
                started_at,
                finished_at,
                duration_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
                criteria: crate::run::last_criteria(&events),
            });
            let messages = if end.messages.is_empty() { std::mem::take(&mut inner.seeds) } else { end.messages };
            let transcript = Arc::new(Transcript {
                run_id: result.run_id.clone(),
                session_id: result.session_id.clone(),
                user_id: result.user_id.clone(),
                state: end.state,
                input: inner.input.clone(),
                context: inner.context(),
                metadata: inner.metadata(),
                messages,
                output: end.output,
                parsed: end.parsed,
                events,
                artifacts: inner.artifacts.clone(),
                usage: inner.usage,
                error: end.error,
                turns: inner.turns,
                started_at: inner.started_at,
                finished_at: Some(finished_at),
                parent_run_id: self.parent_run_id(),
            });
            inner.result = Some(result.clone());
            inner.transcript = Some(transcript.clone());
            (result, transcript)
        };
        (result, transcript)
    }

    /// Makes the sealed result visible and wakes every waiter and consumer.
    /// Marks a finished (not yet published) run failed with `error`, keeping its output and
    /// events: its work ended, but saving it did not. Returns the amended result.
    pub(crate) fn amend_failed(&self, sealed: &RunResult, error: RunError) -> Arc<RunResult> {
        let result = Arc::new(RunResult { state: RunState::Failed, error: Some(error.clone()), ..sealed.clone() });
        let mut inner = self.lock();
        inner.state = RunState::Failed;
        if let Some(t) = inner.transcript.as_mut() {
            let t = Arc::make_mut(t);
            t.state = RunState::Failed;
            t.error = Some(error.clone());
        }
        inner.result = Some(result.clone());
        result
    }

    pub(crate) fn publish(&self) {
        let wakers = {
            let mut inner = self.lock();
            inner.published = true;
            let mut wakers = std::mem::take(&mut inner.wakers);
            wakers.append(&mut inner.result_wakers);
            wakers
        };
        for w in wakers {
            w.wake();
        }
    }

    pub(crate) fn poll_result(&self, cx: &mut Context<'_>) -> Poll<Arc<RunResult>> {
        let mut inner = self.lock();
        match &inner.result {
            Some(r) if inner.published => Poll::Ready(r.clone()),
            _ => {
                register(&mut inner.result_wakers, cx.waker());
                Poll::Pending
            }
        }
    }

    pub(crate) fn poll_event(&self, cursor: usize, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut inner = self.lock();
        if let Some(frozen) = &inner.frozen {
            if let Some(e) = frozen.get(cursor) {
                return Poll::Ready(Some(e.clone()));
            }
            if inner.published {
                return Poll::Ready(None);
            }
            register(&mut inner.wakers, cx.waker());
            return Poll::Pending;
        }
        if let Some(e) = inner.events.get(cursor) {
            return Poll::Ready(Some(e.clone()));
        }
        register(&mut inner.wakers, cx.waker());
        Poll::Pending
    }

    pub(crate) fn transcript(&self) -> Transcript {
        let inner = self.lock();
        if let (Some(t), true) = (&inner.transcript, inner.published) {
            return (**t).clone();
        }
        Transcript {
            run_id: self.run_id.to_string(),
            session_id: self.session_id.to_string(),
            user_id: self.user_id.as_deref().map(str::to_string),
            state: inner.state,
            input: inner.input.clone(),
            context: inner.context(),
            metadata: inner.metadata(),
            messages: inner.seeds.clone(),
            output: String::new(),
            parsed: None,
            events: Arc::from(inner.events.clone()),
            artifacts: inner.artifacts.clone(),
            usage: inner.usage,
            error: None,
            turns: inner.turns,
            started_at: inner.started_at,
            finished_at: None,
            parent_run_id: self.parent_run_id(),
        }
    }
}

impl RunLog {
    /// The artifacts created so far.
    pub(crate) fn artifacts(&self) -> Vec<Artifact> {
        self.lock().artifacts.clone()
    }
}

impl ArtifactSink for RunLog {
    fn add_artifact(&self, artifact: Artifact) {
        self.lock().artifacts.push(artifact.clone());
        self.emit(EventKind::ArtifactCreated(ArtifactCreated { artifact }));
    }
}

fn register(wakers: &mut Vec<Waker>, waker: &Waker) {
    if !wakers.iter().any(|w| w.will_wake(waker)) {
        wakers.push(waker.clone());
    }
}

/// How a run ended, as the driver reports it.
pub(crate) struct RunEnd {
    pub(crate) state: RunState,
    pub(crate) output: String,
    pub(crate) parsed: Option<Value>,
    pub(crate) error: Option<RunError>,
    pub(crate) messages: Vec<Message>,
}
