//! Helpers shared by the integration tests: event-log checks, small tools, a gated model, a hook
//! that records the global order of events, and a session store the test can look into.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod provider;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use loom_agent::event::ToolResultEvent;
use loom_agent::governance::Hooks;
use loom_agent::message::Message;
use loom_agent::model::{
    FnModel, LanguageModel, ModelChunk, ModelRequest, ModelStream, ScriptedModel, ScriptedTurn, SharedModel,
};
use loom_agent::store::{InMemorySessionStore, RunSummary, SessionKey, SessionRecord, SessionStore};
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Error, Event, EventKind, ModelError, Run, RunState, Transcript};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// A scripted model the test keeps a handle on (to read `requests()`), and the same model as the
/// agent builder takes it.
pub fn scripted(turns: impl IntoIterator<Item = ScriptedTurn>) -> (Arc<ScriptedModel>, SharedModel) {
    let model = Arc::new(ScriptedModel::new(turns));
    let shared: SharedModel = model.clone();
    (model, shared)
}

/// Wraps a model so the builder takes it while the test keeps a handle.
pub fn share<M: LanguageModel>(model: M) -> (Arc<M>, SharedModel) {
    let model = Arc::new(model);
    let shared: SharedModel = model.clone();
    (model, shared)
}

/// Fails the test instead of hanging when `fut` does not finish in `secs` seconds.
pub async fn within<F: Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs} s: {what}"),
    }
}

/// The type names of some events.
pub fn types(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::type_name).collect()
}

/// Drains a stream of events.
pub async fn collect(stream: impl Stream<Item = Event>) -> Vec<Event> {
    stream.collect().await
}

/// Consumes `run.events()` until an event of this type appears (fails after 10 s).
pub async fn wait_for(run: &Run, type_name: &str) -> Event {
    let mut events = run.events();
    within(10, &format!("waiting for {type_name}"), async {
        while let Some(e) = events.next().await {
            if e.type_name() == type_name {
                return e;
            }
        }
        panic!("the run ended without a {type_name} event");
    })
    .await
}

/// The terminal event type for a state.
pub fn terminal_type(state: RunState) -> &'static str {
    match state {
        RunState::Completed => "run.completed",
        RunState::Failed => "run.failed",
        RunState::Cancelled => "run.cancelled",
        RunState::Interrupted => "run.interrupted",
        other => panic!("{other} is not terminal"),
    }
}

/// The invariants of every finished run's log: ids match, seq is 0..n, exactly one terminal event,
/// last, of the type matching `state`.
pub fn check_log(events: &[Event], run_id: &str, session_id: &str, state: RunState) {
    assert!(!events.is_empty(), "a finished run has at least its terminal event");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "seq has a gap or is out of order: {:?}", types(events));
        assert_eq!(&*e.run_id, run_id);
        assert_eq!(&*e.session_id, session_id);
    }
    let terminals: Vec<usize> = events.iter().enumerate().filter(|(_, e)| e.is_terminal()).map(|(i, _)| i).collect();
    assert_eq!(terminals, vec![events.len() - 1], "exactly one terminal event, last: {:?}", types(events));
    assert_eq!(events[events.len() - 1].type_name(), terminal_type(state));
}

/// Every `tool.result` payload, in log order.
pub fn tool_results(events: &[Event]) -> Vec<ToolResultEvent> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolResult(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// Every `tool.call` id, in log order.
pub fn tool_call_ids(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCall(c) => Some(c.call.id.clone()),
            _ => None,
        })
        .collect()
}

/// The tool messages of a conversation, as (call_id, content, is_error).
pub fn tool_messages(messages: &[Message]) -> Vec<(String, String, bool)> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Tool { call_id, content, is_error, .. } => Some((call_id.clone(), content.clone(), *is_error)),
            _ => None,
        })
        .collect()
}

/// The run result inside an `Error::Run`.
pub fn failed_result(err: Error) -> loom_agent::RunResult {
    match err {
        Error::Run(failure) => failure.into_result(),
        other => panic!("expected Error::Run, got {other:?}"),
    }
}

/// The schema `{x: string}` with `x` required and nothing else allowed.
pub fn x_schema() -> Value {
    json!({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"], "additionalProperties": false})
}

/// A tool `name` that answers `"<name>:<x>"`.
pub fn echo_tool(name: &str) -> FunctionTool {
    let label = name.to_string();
    FunctionTool::new(name, format!("Echo x ({name})."), x_schema(), move |_ctx, args| {
        let label = label.clone();
        async move { Ok(ToolOutput::text(format!("{label}:{}", args["x"].as_str().unwrap_or_default()))) }
    })
}

/// A shared, ordered log of strings.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn position(&self, s: &str) -> usize {
        let snap = self.snapshot();
        snap.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} not in the log {snap:?}"))
    }
}

/// A hook recording every event of every run as `"<run_id> <type>"`, in the global order they were
/// appended (each run's log is appended under its own lock, and this log under another, so the
/// order across runs is the real order).
#[derive(Clone, Default)]
pub struct EventOrder(pub Log);

impl Hooks for EventOrder {
    fn on_event(&self, event: &Event) {
        self.0.push(format!("{} {}", event.run_id, event.type_name()));
    }
}

/// A model that answers `"ans:<last user text>"`, records `start:<text>` and `end:<text>`, and, when
/// the text has a gate, waits for the gate to open before answering.
#[derive(Default)]
pub struct GateModel {
    pub log: Log,
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl GateModel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes calls whose last user text is `text` wait until [`GateModel::open`].
    pub fn gate(&self, text: &str) {
        self.gates.lock().unwrap().insert(text.to_string(), Arc::new(Semaphore::new(0)));
    }

    pub fn open(&self, text: &str) {
        let gate = self.gates.lock().unwrap().get(text).cloned().expect("no such gate");
        gate.add_permits(1_000);
    }
}

pub fn last_user_text(messages: &[Message]) -> String {
    messages.iter().rev().find(|m| matches!(m, Message::User { .. })).map(Message::text).unwrap_or_default()
}

#[async_trait::async_trait]
impl LanguageModel for GateModel {
    fn name(&self) -> &str {
        "gate"
    }

    async fn stream(&self, request: &ModelRequest<'_>) -> Result<ModelStream, ModelError> {
        let text = last_user_text(request.messages);
        self.log.push(format!("start:{text}"));
        let gate = self.gates.lock().unwrap().get(&text).cloned();
        if let Some(gate) = gate {
            let _permit = gate.acquire().await.map_err(|_| ModelError::Cancelled)?;
        }
        self.log.push(format!("end:{text}"));
        let chunks = vec![Ok(ModelChunk::Text(format!("ans:{text}")))];
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}

/// A model that answers every call with `text` after `delay` (for timeouts and cancellation).
pub fn slow_model(delay: Duration) -> FnModel {
    FnModel::new("slow", move |_req| ScriptedTurn::text("late").with_delay(delay))
}

/// The default in-memory store behind an `Arc`, so the test can read histories directly.
#[derive(Clone, Default)]
pub struct SharedStore(pub Arc<InMemorySessionStore>);

#[async_trait::async_trait]
impl SessionStore for SharedStore {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        self.0.open_session(record).await
    }
    async fn history(&self, session_id: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        self.0.history(session_id).await
    }
    async fn get_session(&self, session_id: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        self.0.get_session(session_id).await
    }
    async fn append_history(
        &self,
        session_id: SessionKey<'_>,
        run_id: &str,
        messages: &[Message],
    ) -> Result<(), Error> {
        self.0.append_history(session_id, run_id, messages).await
    }
    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        self.0.save_run(transcript).await
    }
    async fn get_run(&self, session_id: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        self.0.get_run(session_id, run_id).await
    }
    async fn list_runs(&self, session_id: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
        self.0.list_runs(session_id).await
    }
    async fn close_session(&self, session_id: SessionKey<'_>) -> Result<(), Error> {
        self.0.close_session(session_id).await
    }
}
