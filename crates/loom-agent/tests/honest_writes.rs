//! Honest bookkeeping: every run that gets an id has exactly one `run_started` and one
//! `run_finished` audit entry, in order, whatever happens to it; a run whose transcript, audit or
//! journal write fails says so in its state; "for this run" approvals outlive a resume.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use loom_agent::governance::{Approval, AuditLog, AuditRecord, FnApproval, InMemoryAuditLog, StandardPermissions};
use loom_agent::message::Message;
use loom_agent::model::{ScriptedTurn, SharedModel};
use loom_agent::run::Transcript;
use loom_agent::store::{
    InMemoryJournal, InMemorySessionStore, JournalSlot, RunSummary, SessionKey, SessionRecord, SessionStore,
};
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, Error, RunErrorKind, RunRequest, RunState, SessionConfig};
use serde_json::json;

/// The audit actions of each run, in log order.
fn actions_by_run(log: &InMemoryAuditLog) -> HashMap<String, Vec<String>> {
    let mut by_run: HashMap<String, Vec<String>> = HashMap::new();
    for entry in log.entries() {
        by_run.entry(entry.run_id.clone()).or_default().push(entry.action.clone());
    }
    by_run
}

/// Exactly one start first and one end last.
fn assert_paired(actions: &[String], what: &str) {
    assert_eq!(actions.first().map(String::as_str), Some("run_started"), "{what}: {actions:?}");
    assert_eq!(actions.last().map(String::as_str), Some("run_finished"), "{what}: {actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "run_started").count(), 1, "{what}: {actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "run_finished").count(), 1, "{what}: {actions:?}");
}

/// A session store whose history reads fail (a run fails while seeding).
#[derive(Default)]
struct BrokenHistory(InMemorySessionStore);

#[async_trait::async_trait]
impl SessionStore for BrokenHistory {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        self.0.open_session(record).await
    }
    async fn history(&self, _: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        Err(Error::Store("the history table is gone".into()))
    }
    async fn get_session(&self, key: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        self.0.get_session(key).await
    }
    async fn append_history(&self, key: SessionKey<'_>, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        self.0.append_history(key, run_id, messages).await
    }
    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        self.0.save_run(transcript).await
    }
    async fn get_run(&self, key: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        self.0.get_run(key, run_id).await
    }
    async fn list_runs(&self, key: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
        self.0.list_runs(key).await
    }
    async fn close_session(&self, key: SessionKey<'_>) -> Result<(), Error> {
        self.0.close_session(key).await
    }
}

#[tokio::test]
async fn every_run_gets_one_start_and_one_end_entry_whatever_happens() {
    let audit = Arc::new(InMemoryAuditLog::new("secret-0123456789").unwrap());
    let gate = GateModel::new();
    gate.gate("slow");
    let (gate, model) = share(gate);
    let agent = Agent::builder().model(model).audit_log(audit.clone()).build().unwrap();

    // Completed; and one cancelled while it waits behind it in its session.
    let session = agent.session(SessionConfig::new("s").user("ann"));
    let first = session.start("slow");
    wait_for(&first, "model.request").await;
    let queued = session.start("queued");
    queued.cancel();
    gate.open("slow");
    assert_eq!(first.result().await.state, RunState::Completed);
    assert_eq!(queued.result().await.state, RunState::Cancelled);

    // Refused: another user's run on ann's session, then a run on a closed session.
    let foreign = session.start(RunRequest::new("let me in").user("mallory")).result().await;
    assert_eq!(foreign.state, RunState::Failed);
    session.close().await.unwrap();
    let closed = session.start("too late").result().await;
    assert_eq!(closed.state, RunState::Failed);

    let by_run = actions_by_run(&audit);
    for (what, id) in [
        ("completed", first.id().to_string()),
        ("cancelled while queued", queued.id().to_string()),
        ("another user's", foreign.run_id.clone()),
        ("closed session", closed.run_id.clone()),
    ] {
        assert_paired(by_run.get(&id).map(Vec::as_slice).unwrap_or_default(), what);
    }
    assert!(audit.verify().is_intact());
}

#[tokio::test]
async fn a_run_that_fails_while_seeding_is_paired_too() {
    let audit = Arc::new(InMemoryAuditLog::new("secret-0123456789").unwrap());
    let (_, model) = scripted([ScriptedTurn::text("never")]);
    let agent =
        Agent::builder().model(model).session_store(BrokenHistory::default()).audit_log(audit.clone()).build().unwrap();
    // A named session: the first run of a session this process made up reads no history.
    let result = agent.session(SessionConfig::new("seeding")).start("hi").result().await;
    assert_eq!(result.state, RunState::Failed);
    assert_eq!(result.error.unwrap().kind, RunErrorKind::Store);
    assert_paired(&actions_by_run(&audit)[&result.run_id], "failed while seeding");
}

/// A session store whose transcript saves fail (a full disk, a dead database).
#[derive(Default)]
struct FailingSaves {
    inner: InMemorySessionStore,
    broken: AtomicBool,
}

#[async_trait::async_trait]
impl SessionStore for FailingSaves {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        self.inner.open_session(record).await
    }
    async fn history(&self, key: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        self.inner.history(key).await
    }
    async fn get_session(&self, key: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        self.inner.get_session(key).await
    }
    async fn append_history(&self, key: SessionKey<'_>, run_id: &str, messages: &[Message]) -> Result<(), Error> {
        self.inner.append_history(key, run_id, messages).await
    }
    async fn save_run(&self, transcript: Arc<Transcript>) -> Result<(), Error> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::Store("No space left on device (os error 28)".into()));
        }
        self.inner.save_run(transcript).await
    }
    async fn get_run(&self, key: SessionKey<'_>, run_id: &str) -> Result<Option<Arc<Transcript>>, Error> {
        self.inner.get_run(key, run_id).await
    }
    async fn list_runs(&self, key: SessionKey<'_>) -> Result<Vec<RunSummary>, Error> {
        self.inner.list_runs(key).await
    }
    async fn close_session(&self, key: SessionKey<'_>) -> Result<(), Error> {
        self.inner.close_session(key).await
    }
}

#[tokio::test]
async fn a_run_whose_transcript_cannot_be_saved_fails_and_stays_resumable() {
    let store = Arc::new(FailingSaves { broken: AtomicBool::new(true), ..Default::default() });
    let journal = Arc::new(InMemoryJournal::new());
    let (_, model) = scripted([ScriptedTurn::text("the answer")]);
    let agent = Agent::builder()
        .model(model)
        .session_store(store.clone())
        .journal(JournalSlot { journal: journal.clone(), session_store: None })
        .build()
        .unwrap();
    let err = agent.run("question").await.unwrap_err();
    let result = failed_result(err);
    assert_eq!(result.state, RunState::Failed);
    assert_eq!(result.output, "the answer", "the work is kept");
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Store);
    assert!(error.message.contains("No space left on device"), "{}", error.message);
    assert!(error.message.contains("journal keeps it unfinished"), "{}", error.message);
    let stored = agent.journal().unwrap().load(&result.run_id).await.unwrap().unwrap();
    assert!(!stored.finished, "the journal does not claim the run finished");
    assert_eq!(stored.lease_owner, None, "the lease is released");

    // Space again: a resume saves it, without calling the model again.
    store.broken.store(false, Ordering::SeqCst);
    let resumed = agent.resume(&result.run_id).await.unwrap().result().await;
    assert_eq!(resumed.state, RunState::Completed, "{:?}", resumed.error);
    assert_eq!(resumed.output, "the answer");
    let key = SessionKey::new(&resumed.session_id);
    assert!(store.get_run(key, &resumed.run_id).await.unwrap().is_some());
    let terminal = resumed
        .events
        .iter()
        .filter(|e| e.kind.type_name().starts_with("run.") && e.kind.type_name() != "run.started")
        .count();
    assert_eq!(terminal, 1, "one terminal event: {:?}", types(&resumed.events));
}

/// An audit log that refuses writes once `full` is set.
struct FullAudit {
    inner: InMemoryAuditLog,
    full: AtomicBool,
}

#[async_trait::async_trait]
impl AuditLog for FullAudit {
    async fn append(&self, record: AuditRecord) -> Result<(), Error> {
        if self.full.load(Ordering::SeqCst) {
            return Err(Error::Store("audit log: No space left on device (os error 28)".into()));
        }
        self.inner.append(record).await
    }
}

#[tokio::test]
async fn a_run_whose_audit_entry_cannot_be_written_fails() {
    let audit = Arc::new(FullAudit {
        inner: InMemoryAuditLog::new("secret-0123456789").unwrap(),
        full: AtomicBool::new(false),
    });
    let audit_for_tool = audit.clone();
    let tool = FunctionTool::new("fill", "Fills the disk.", x_schema(), move |_ctx, _args| {
        let audit = audit_for_tool.clone();
        async move {
            audit.full.store(true, Ordering::SeqCst);
            Ok(ToolOutput::text("full"))
        }
    });
    let (_, model) = scripted([ScriptedTurn::tool_call("fill", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(model).tool(tool).audit_log(audit.clone()).build().unwrap();
    let result = agent.start("go").result().await;
    assert_eq!(result.state, RunState::Failed, "{:?}", result.error);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Store);
    assert!(error.message.contains("audit log"), "{}", error.message);
}

/// A tool that counts its runs.
fn counted(name: &str, runs: Arc<AtomicUsize>) -> FunctionTool {
    FunctionTool::new(name, "Does x.", x_schema(), move |_ctx, _args| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(ToolOutput::text("ok"))
        }
    })
}

fn approvals_agent(
    model: SharedModel,
    journal: Arc<InMemoryJournal>,
    runs: Arc<AtomicUsize>,
    asked: Arc<Mutex<Vec<String>>>,
) -> Agent {
    Agent::builder()
        .model(model)
        .tool(counted("rm", runs.clone()))
        .tool(counted("publish", runs))
        .permissions(StandardPermissions::new().ask("rm").ask("publish"))
        .approval_handler(FnApproval::new(move |request| {
            let asked = asked.clone();
            async move {
                asked.lock().unwrap().push(request.call.name.clone());
                match request.call.name.as_str() {
                    "rm" => Approval::AllowForRun,
                    _ => Approval::Defer,
                }
            }
        }))
        .journal(JournalSlot { journal, session_store: None })
        .build()
        .unwrap()
}

#[tokio::test]
async fn allow_for_this_run_is_remembered_across_a_resume() {
    let journal = Arc::new(InMemoryJournal::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let (_, model) = scripted([
        ScriptedTurn::tool_call("rm", json!({"x": "a"})),
        ScriptedTurn::tool_call("publish", json!({"x": "b"})),
    ]);
    let first = approvals_agent(model, journal.clone(), runs.clone(), asked.clone());
    let suspended = first.start("clean up, then publish").result().await;
    assert_eq!(suspended.state, RunState::Suspended, "{:?}", suspended.error);
    assert_eq!(*asked.lock().unwrap(), ["rm", "publish"]);
    drop(first);

    // After a restart: publish is approved, and the model asks for rm again. "Allow rm for this
    // run" still holds: the approver is not asked again.
    let (_, model) = scripted([ScriptedTurn::tool_call("rm", json!({"x": "c"})), ScriptedTurn::text("done")]);
    let second = approvals_agent(model, journal, runs.clone(), asked.clone());
    let run = second.decide(&suspended.run_id, "call_2_0", Approval::Allow).await.unwrap();
    let result = run.result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(*asked.lock().unwrap(), ["rm", "publish"], "the approver was asked again");
    assert_eq!(runs.load(Ordering::SeqCst), 3, "rm, publish, rm");
}

/// A tiny tmpfs the test mounts (root only); `None`, with a message, where it cannot.
struct TinyFs(std::path::PathBuf);

impl TinyFs {
    fn mount(kib: u32) -> Option<TinyFs> {
        let dir = std::env::temp_dir().join(format!("loom-tinyfs-{}-{}", std::process::id(), loom_agent::new_id("d")));
        std::fs::create_dir_all(&dir).ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            std::fs::remove_dir(&dir).ok();
            return None;
        }
        Some(TinyFs(dir))
    }

    /// Writes a filler file until the file system is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![b'x'; 4096];
        while f.write_all(&block).and_then(|()| f.flush()).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_full_disk_under_the_audit_log_fails_the_run_and_the_log_still_verifies() {
    let Some(fs) = TinyFs::mount(64) else { return };
    let path = fs.0.join("audit.jsonl");
    let secret = "secret-0123456789abcdef";
    let audit = loom_agent::governance::FileAuditLog::open(&path, secret).unwrap();
    let fs = Arc::new(fs);
    let filler = fs.clone();
    let tool = FunctionTool::new("fill", "Fills the disk.", x_schema(), move |_ctx, _args| {
        let filler = filler.clone();
        async move {
            filler.fill();
            Ok(ToolOutput::text("the disk is full"))
        }
    });
    // The model then fails with a long message: the `run_finished` entry that records it needs
    // more room than the log file's last page has left.
    let long = "the provider broke down in a long and winding way; ".repeat(120);
    let (_, model) = scripted([ScriptedTurn::tool_call("fill", json!({"x": "a"})), ScriptedTurn::error(long)]);
    let agent = Agent::builder().model(model).tool(tool).audit_log(audit).build().unwrap();
    let result = agent.start("go").result().await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Store, "the lost audit entry is the news: {}", error.message);
    assert!(error.message.contains("audit log"), "{}", error.message);
    drop(agent);

    // Space again: the log verifies, and appending goes on with a valid chain.
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let reopened = loom_agent::governance::FileAuditLog::open(&path, secret).unwrap();
    let (_, model) = scripted([ScriptedTurn::text("fine")]);
    let agent = Agent::builder().model(model).audit_log(reopened).build().unwrap();
    agent.run("again").await.unwrap();
    let report = loom_agent::governance::FileAuditLog::verify(&path, secret).unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
}
