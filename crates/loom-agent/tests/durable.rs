//! Durable runs in one process: sessions, runs and events that survive a restart (a new store on
//! the same file), a durable pause for approval decided after a restart, journal URLs, and the
//! in-memory journal's resume, and a read-only tool call that started without a result being run
//! again on resume.
#![cfg(feature = "sqlite")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use loom_agent::store::SessionKey;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use loom_agent::capability::Files;
use loom_agent::governance::{Approval, FnApproval, StandardPermissions};
use loom_agent::message::Message;
use loom_agent::model::ScriptedTurn;
use loom_agent::store::{
    InMemoryJournal, Journal, JournalEntry, JournalRunSummary, JournalWrite, JournaledRun, Lease, RunFilter, RunRecord,
    SqliteStore, Synchronous,
};
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, Error, Event, RunErrorKind, RunRequest, RunState, SessionConfig};
use serde_json::json;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn db_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "loom-durable-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("loom.db")
}

/// A tool that counts how often its body runs.
fn counting_tool(name: &str, runs: Arc<AtomicUsize>) -> FunctionTool {
    FunctionTool::new(name, "Deletes x.", x_schema(), move |_ctx, args| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(ToolOutput::text(format!("deleted {}", args["x"].as_str().unwrap_or_default())))
        }
    })
}

#[tokio::test]
async fn sessions_runs_and_events_survive_a_restart() {
    let db = db_path("restart");
    let url = format!("sqlite:{}", db.display());
    let run_id;
    {
        let (_, model) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("first")]);
        let agent = Agent::builder().model(model).tool(echo_tool("lookup")).journal(url.as_str()).build().unwrap();
        let session = agent.session(SessionConfig::new("s1").metadata("tenant", json!("acme")));
        let result = session.run("hello").await.unwrap();
        run_id = result.run_id.clone();
        let stored = agent.journal().unwrap().load(&run_id).await.unwrap().unwrap();
        let kinds: Vec<&str> = stored.entries.iter().map(JournalEntry::type_name).collect();
        assert_eq!(kinds, ["model_result", "tool_intent", "tool_result", "model_result"]);
        assert!(stored.finished);
        assert_eq!(stored.state, RunState::Completed);
        assert_eq!(stored.events, result.events.to_vec(), "every event is persisted, once");
    }
    // A new process: a new store handle on the same file.
    let (recorder, model) = scripted([ScriptedTurn::text("second")]);
    let agent = Agent::builder().model(model).journal(url.as_str()).build().unwrap();
    let record = agent.session_store().get_session(SessionKey::new("s1")).await.unwrap().unwrap();
    assert_eq!(record.metadata["tenant"], "acme");
    let session = agent.session(SessionConfig::new("s1"));
    let runs = session.list_runs().await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].run_id, run_id);
    assert_eq!(runs[0].state, RunState::Completed);
    let old = session.get_run(&run_id).await.unwrap().unwrap().transcript();
    assert_eq!(old.output, "first");
    assert_eq!(types(&old.events).first(), Some(&"run.started"));
    assert_eq!(types(&old.events).last(), Some(&"run.completed"));
    // The conversation continues.
    session.run("again").await.unwrap();
    let sent = &recorder.requests()[0].messages;
    let texts: Vec<String> = sent.iter().map(Message::text).collect();
    assert!(texts.contains(&"hello".to_string()) && texts.contains(&"first".to_string()), "{texts:?}");
    assert_eq!(texts.last().unwrap(), "again");
    let listed = agent.list_journaled_runs(&RunFilter { session_id: Some("s1".into()), ..Default::default() }).await;
    assert_eq!(listed.unwrap().len(), 2);
    std::fs::remove_dir_all(db.parent().unwrap()).ok();
}

#[tokio::test]
async fn a_run_waiting_for_approval_is_decided_after_a_restart() {
    let db = db_path("approval");
    let runs = Arc::new(AtomicUsize::new(0));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let run_id;
    {
        let (_, model) = scripted([ScriptedTurn::tool_call("rm", json!({"x": "report.txt"}))]);
        let asked = asked.clone();
        let agent = Agent::builder()
            .model(model)
            .tool(counting_tool("rm", runs.clone()))
            .permissions(StandardPermissions::new().ask("rm"))
            .approval_handler(FnApproval::new(move |request| {
                asked.lock().unwrap().push(request.call.id.clone());
                async { Approval::Defer }
            }))
            .journal(SqliteStore::open(&db).unwrap())
            .build()
            .unwrap();
        let result = agent.start(RunRequest::new("clean up").session("ops")).result().await;
        assert_eq!(result.state, RunState::Suspended);
        let error = result.error.clone().unwrap();
        assert_eq!(error.kind, RunErrorKind::ApprovalPending);
        assert!(error.message.contains("rm") && error.message.contains("call_1_0"), "{}", error.message);
        assert_eq!(types(&result.events).last(), Some(&"run.suspended"));
        assert!(!types(&result.events).contains(&"tool.result"), "the call waits; it is not reported cancelled");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        run_id = result.run_id.clone();
        let stored = agent.journal().unwrap().load(&run_id).await.unwrap().unwrap();
        assert!(!stored.finished);
        assert_eq!(stored.state, RunState::Suspended);
        assert_eq!(stored.lease_owner, None, "a suspended run holds no lease");
    }
    // After a restart: the decision arrives, the run continues from where it paused.
    let (recorder, model) = scripted([ScriptedTurn::text("removed")]);
    let agent = Agent::builder()
        .model(model)
        .tool(counting_tool("rm", runs.clone()))
        .permissions(StandardPermissions::new().ask("rm"))
        .journal(SqliteStore::open(&db).unwrap())
        .build()
        .unwrap();
    assert!(matches!(agent.decide(&run_id, "call_9_9", Approval::Allow).await, Err(Error::Config(_))));
    let result = agent.decide(&run_id, "call_1_0", Approval::Allow).await.unwrap().result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "removed");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the approved call ran once");
    assert_eq!(asked.lock().unwrap().len(), 1, "the approver was asked once");
    let kinds = types(&result.events);
    let suspended = kinds.iter().position(|t| *t == "run.suspended").unwrap();
    let decided = kinds.iter().rposition(|t| *t == "permission.decision").unwrap();
    assert!(decided > suspended, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run.completed"));
    let seqs: Vec<u64> = result.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    // The model saw the approved tool's result; it was asked once after the restart.
    let last = recorder.requests()[0].messages.last().unwrap().clone();
    assert!(matches!(last, Message::Tool { ref content, .. } if content == "deleted report.txt"), "{last:?}");
    assert!(matches!(agent.decide(&run_id, "call_1_0", Approval::Allow).await, Err(Error::RunFinished { .. })));
    std::fs::remove_dir_all(db.parent().unwrap()).ok();
}

#[tokio::test]
async fn a_denied_decision_reaches_the_model_as_a_denial() {
    let journal = Arc::new(InMemoryJournal::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let (_, model) = scripted([ScriptedTurn::tool_call("rm", json!({"x": "a"})), ScriptedTurn::text("ok, kept")]);
    let agent = Agent::builder()
        .model(model)
        .tool(counting_tool("rm", runs.clone()))
        .permissions(StandardPermissions::new().ask("rm"))
        .approval_handler(FnApproval::new(|_| async { Approval::Defer }))
        .journal(loom_agent::store::JournalSlot { journal: journal.clone(), session_store: None })
        .build()
        .unwrap();
    let first = agent.start("clean up").result().await;
    assert_eq!(first.state, RunState::Suspended);
    let run = agent.decide(&first.run_id, "call_1_0", Approval::Deny("keep it".into())).await.unwrap();
    let result = run.result().await;
    assert_eq!(result.state, RunState::Completed);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let denial = tool_results(&result.events).pop().unwrap();
    assert!(denial.is_error && denial.output.contains("keep it"), "{denial:?}");
}

#[tokio::test]
async fn deferring_without_a_journal_denies_the_call() {
    let runs = Arc::new(AtomicUsize::new(0));
    let (_, model) = scripted([ScriptedTurn::tool_call("rm", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder()
        .model(model)
        .tool(counting_tool("rm", runs.clone()))
        .permissions(StandardPermissions::new().ask("rm"))
        .approval_handler(FnApproval::new(|_| async { Approval::Defer }))
        .build()
        .unwrap();
    let result = agent.run("go").await.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(tool_results(&result.events)[0].output.contains("needs a journal"));
}

#[tokio::test]
async fn journal_urls_are_checked_at_build() {
    for (url, needle) in [
        ("sqlite:", "needs a path"),
        ("sqlite:./x.db?synchronous=sometimes", "synchronous"),
        ("sqlite:./x.db?cache=big", "unknown option"),
        ("mysql://localhost/db", "accepted"),
    ] {
        let err = Agent::builder().model("echo").journal(url).build().unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{url}: {err}");
        assert!(err.to_string().contains(needle), "{url}: {err}");
    }
    let db = db_path("full");
    let agent = Agent::builder().model("echo").journal(format!("sqlite:{}?synchronous=full", db.display())).build();
    agent.unwrap().run("hi").await.unwrap();
    SqliteStore::open_with(&db, Synchronous::Full).unwrap();
    std::fs::remove_dir_all(db.parent().unwrap()).ok();
}

#[tokio::test]
async fn resume_errors_are_typed() {
    let agent = Agent::builder().model("echo").build().unwrap();
    assert!(matches!(agent.resume("run_x").await, Err(Error::Config(_))));
    let agent = Agent::builder().model("echo").journal("memory").build().unwrap();
    assert!(matches!(agent.resume("run_x").await, Err(Error::RunNotFound(_))));
    let done = agent.run(RunRequest::new("hi").user("alice")).await.unwrap();
    assert!(matches!(agent.resume(&done.run_id).await, Err(Error::RunFinished { state: RunState::Completed, .. })));
    // Tenants are isolated: another user's run does not exist for bob.
    assert!(matches!(agent.resume_as("bob", &done.run_id).await, Err(Error::RunNotFound(_))));
    assert!(matches!(agent.resume_as("alice", &done.run_id).await, Err(Error::RunFinished { .. })));
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let db = db_path("newer");
    SqliteStore::open(&db).unwrap();
    rusqlite::Connection::open(&db).unwrap().pragma_update(None, "user_version", 99).unwrap();
    match SqliteStore::open(&db) {
        Err(Error::SchemaTooNew { found: 99, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let err = Agent::builder().model("echo").journal(format!("sqlite:{}", db.display())).build().unwrap_err();
    assert!(err.to_string().contains("newer"), "{err}");
    std::fs::remove_dir_all(db.parent().unwrap()).ok();
}

/// A model named `name` that asks to delete a file, then answers `done by NAME`.
fn deleting_model(name: &'static str) -> loom_agent::model::FnModel {
    loom_agent::model::FnModel::new(name, move |req| match req.messages.last() {
        Some(Message::Tool { .. }) => ScriptedTurn::text(format!("done by {name}")),
        _ => ScriptedTurn::tool_call("rm", json!({"x": "a"})),
    })
}

#[tokio::test]
async fn a_resume_never_switches_models_silently() {
    let db = db_path("model");
    let runs = Arc::new(AtomicUsize::new(0));
    let build = |name: &'static str, defer: bool| {
        let mut builder = Agent::builder()
            .model(deleting_model(name))
            .tool(counting_tool("rm", runs.clone()))
            .permissions(StandardPermissions::new().ask("rm"))
            .journal(SqliteStore::open(&db).unwrap());
        if defer {
            builder = builder.approval_handler(FnApproval::new(|_| async { Approval::Defer }));
        }
        builder.build().unwrap()
    };
    let first = build("model-a", true);
    let request = RunRequest::new("clean up").metadata("ticket", json!("T-1"));
    let suspended = first.start(request).result().await;
    assert_eq!(suspended.state, RunState::Suspended);
    let record = first.journal().unwrap().load(&suspended.run_id).await.unwrap().unwrap().record;
    let recorded = record.model.clone().expect("the record keeps the model");
    assert_eq!((recorded.provider.as_str(), recorded.name.as_str()), ("model-a", "model-a"));
    assert_eq!(record.metadata.get("ticket"), Some(&json!("T-1")), "request metadata is recorded");
    drop(first);

    // Another model: an error naming both, and the run is left as it was.
    let other = build("model-b", false);
    match other.resume(&suspended.run_id).await {
        Err(Error::ModelChanged { recorded, current, .. }) => {
            assert!(recorded.contains("model-a") && current.contains("model-b"), "{recorded} / {current}");
        }
        other => panic!("expected ModelChanged, got {other:?}"),
    }
    let stored = other.journal().unwrap().load(&suspended.run_id).await.unwrap().unwrap();
    assert_eq!((stored.state, stored.lease_owner.as_deref()), (RunState::Suspended, None));

    // The switch, chosen explicitly, is recorded in the run's events.
    other
        .journal()
        .unwrap()
        .decide(
            &suspended.run_id,
            &JournalEntry::ApprovalDecision { call_id: "call_1_0".into(), approval: Approval::Allow },
        )
        .await
        .unwrap();
    let options = loom_agent::ResumeOptions::default().allow_model_change();
    let result = other.resume_with(&suspended.run_id, options).await.unwrap().result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "done by model-b");
    let changed = result
        .events
        .iter()
        .find_map(|e| match &e.kind {
            loom_agent::EventKind::ModelChanged(c) => Some(c.clone()),
            _ => None,
        })
        .expect("a model.changed event");
    assert!(changed.from.contains("model-a") && changed.to.contains("model-b"), "{changed:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    std::fs::remove_dir_all(db.parent().unwrap()).ok();
}

/// A journal whose process "dies" right after it records a tool intent: that append and every
/// journal call after it never return (the run is stuck, as a killed process would be, and its
/// lease is no longer renewed).
struct DiesAfterToolIntent {
    inner: Arc<InMemoryJournal>,
    dead: std::sync::atomic::AtomicBool,
}

impl DiesAfterToolIntent {
    async fn alive(&self) {
        if self.dead.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl Journal for DiesAfterToolIntent {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        self.alive().await;
        self.inner.begin(record, lease, events).await
    }
    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        self.alive().await;
        self.inner.append(run_id, lease, entry, events).await?;
        if entry.type_name() == "tool_intent" {
            self.dead.store(true, Ordering::SeqCst);
            self.alive().await;
        }
        Ok(())
    }
    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        self.alive().await;
        self.inner.end(run_id, lease, state, events).await
    }
    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error> {
        self.alive().await;
        self.inner.acquire(run_id, lease).await
    }
    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        self.alive().await;
        self.inner.renew(run_id, lease).await
    }
    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        self.alive().await;
        self.inner.decide(run_id, entry).await
    }
    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error> {
        self.inner.load(run_id).await
    }
    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        self.inner.list(filter).await
    }
}

#[tokio::test]
async fn a_read_file_call_started_without_a_result_is_run_again_on_resume() {
    let root = db_path("files").parent().unwrap().to_path_buf();
    std::fs::write(root.join("notes.txt"), "remember the milk").unwrap();
    let inner = Arc::new(InMemoryJournal::new());
    let dying = DiesAfterToolIntent { inner: inner.clone(), dead: Default::default() };
    let read = ScriptedTurn::tool_call("read_file", json!({"path": "notes.txt"}));
    let (_, model) = scripted([read, ScriptedTurn::text("unused")]);
    let first = Agent::builder()
        .model(model)
        .capability(Files::new(&root))
        .journal(dying)
        .lease_ttl(Duration::from_millis(200))
        .build()
        .unwrap();
    let stuck = first.start("What do my notes say?");
    let run_id = stuck.id().to_string();
    // The process stops with the read_file intent journaled and no result.
    let stored = within(10, "the tool intent is journaled", async {
        loop {
            if let Some(run) = inner.load(&run_id).await.unwrap()
                && run.entries.iter().any(|e| e.type_name() == "tool_intent")
            {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let kinds: Vec<&str> = stored.entries.iter().map(JournalEntry::type_name).collect();
    assert_eq!(kinds, ["model_result", "tool_intent"], "started, no result");
    assert!(!stored.finished);

    // Another process resumes once the dead one's lease has expired.
    let (recorder, model) = scripted([ScriptedTurn::text("They say: remember the milk.")]);
    let second = Agent::builder()
        .model(model)
        .capability(Files::new(&root))
        .journal(loom_agent::store::JournalSlot { journal: inner.clone(), session_store: None })
        .build()
        .unwrap();
    let run = within(10, "resume", async {
        loop {
            match second.resume(&run_id).await {
                Err(Error::LeaseHeld { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
                other => return other.unwrap(),
            }
        }
    })
    .await;
    let result = within(10, "the resumed run", run.result()).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "They say: remember the milk.");
    // The read ran again in the resumed run, and the model got its result.
    let sent = &recorder.requests()[0].messages;
    let fed = tool_messages(sent);
    assert_eq!(fed.len(), 1, "{fed:?}");
    assert_eq!((fed[0].1.as_str(), fed[0].2), ("remember the milk", false));
    let after = inner.load(&run_id).await.unwrap().unwrap();
    assert!(after.finished);
    let kinds: Vec<&str> = after.entries.iter().map(JournalEntry::type_name).collect();
    // The rerun records its own intent before it runs, then the result.
    assert_eq!(kinds, ["model_result", "tool_intent", "tool_intent", "tool_result", "model_result"]);
    drop(stuck);
    std::fs::remove_dir_all(&root).ok();
}

/// A journal whose first entry write is slow to commit (it waits 200 ms, then writes): what a
/// busy disk looks like to the run's other writers.
struct SlowFirstWrite {
    inner: Arc<InMemoryJournal>,
    writes: AtomicUsize,
}

impl SlowFirstWrite {
    async fn maybe_wait(&self) {
        if self.writes.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait::async_trait]
impl Journal for SlowFirstWrite {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        self.inner.begin(record, lease, events).await
    }
    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        self.maybe_wait().await;
        self.inner.append(run_id, lease, entry, events).await
    }
    async fn append_all(&self, run_id: &str, lease: &Lease, writes: &[JournalWrite<'_>]) -> Result<(), Error> {
        self.maybe_wait().await;
        self.inner.append_all(run_id, lease, writes).await
    }
    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        self.inner.end(run_id, lease, state, events).await
    }
    async fn acquire(&self, run_id: &str, lease: &Lease) -> Result<u64, Error> {
        self.inner.acquire(run_id, lease).await
    }
    async fn renew(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        self.inner.renew(run_id, lease).await
    }
    async fn decide(&self, run_id: &str, entry: &JournalEntry) -> Result<(), Error> {
        self.inner.decide(run_id, entry).await
    }
    async fn load(&self, run_id: &str) -> Result<Option<JournaledRun>, Error> {
        self.inner.load(run_id).await
    }
    async fn list(&self, filter: &RunFilter) -> Result<Vec<JournalRunSummary>, Error> {
        self.inner.list(filter).await
    }
}

/// The model's result rides with the first tool intent; with parallel calls in its turn, no other
/// intent or result commits before that write, even when it is slow: a resumed run never finds an
/// intent without the model result that asked for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_tool_calls_never_commit_before_the_model_result() {
    let inner = Arc::new(InMemoryJournal::new());
    let journal = SlowFirstWrite { inner: inner.clone(), writes: AtomicUsize::new(0) };
    let both = ScriptedTurn::tool_call("a", json!({"x": "1"})).with_tool_call("b", json!({"x": "2"}));
    let (_, model) = scripted([both, ScriptedTurn::text("done")]);
    let agent = Agent::builder()
        .model(model)
        .tool(echo_tool("a").concurrency_safe())
        .tool(echo_tool("b").concurrency_safe())
        .journal(journal)
        .build()
        .unwrap();
    let result = within(10, "the run", agent.run("Use both.")).await.unwrap();
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    let stored = inner.load(&result.run_id).await.unwrap().unwrap();
    let kinds: Vec<&str> = stored.entries.iter().map(JournalEntry::type_name).collect();
    assert_eq!(kinds[0], "model_result", "the model's result commits first: {kinds:?}");
    let mut sorted = kinds[1..kinds.len() - 1].to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, ["tool_intent", "tool_intent", "tool_result", "tool_result"], "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"model_result"));
    for id in tool_call_ids(&result.events) {
        let at = |kind: &str| {
            stored.entries.iter().position(|e| match e {
                JournalEntry::ToolIntent { call, .. } => kind == "intent" && call.id == id,
                JournalEntry::ToolResult { call_id, .. } => kind == "result" && *call_id == id,
                _ => false,
            })
        };
        assert!(at("intent").unwrap() < at("result").unwrap(), "{id}: its intent before its result");
    }
    assert_eq!(stored.events, result.events.to_vec(), "every event is persisted, once");
}
