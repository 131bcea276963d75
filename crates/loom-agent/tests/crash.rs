//! Crash tests: an agent runs in a child process (this test binary, re-executed) against the mock
//! OpenAI server, with a SQLite journal (and, with `LOOM_TEST_POSTGRES_URL`, a PostgreSQL one). The child stops at a journal boundary and the parent kills
//! it with SIGKILL, then resumes the run in this process and checks: the same final result, each
//! completed tool body executed exactly once, completed model calls not sent again, no event lost
//! or duplicated, a sound database. Also: an ambiguous tool call, concurrent resumers, and corrupt
//! journal rows.
#![cfg(all(unix, feature = "sqlite", feature = "providers"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom_agent::store::SessionKey;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loom_agent::governance::Scope;
use loom_agent::model::Model;
use loom_agent::store::Memory;
use loom_agent::store::{
    FinalCommit, Journal, JournalEntry, JournalRunSummary, JournalWrite, JournaledRun, Lease, RunFilter, RunRecord,
    SessionStore, SqliteStore, open_journal,
};
use loom_agent::tool::{FunctionTool, ToolFlags, ToolOutput};
use loom_agent::{Agent, Error, Event, RunErrorKind, RunInput, RunRequest, RunState};
use loom_testkit::wire::openai;
use loom_testkit::{MockServer, Reply};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const ARGS: &str = r#"{"note":"hello"}"#;

/// The two scripted model answers: a tool call, then the final text.
fn replies() -> Vec<Reply> {
    vec![
        Reply::sse(openai::tool_call_stream(&[("call_1", "record", ARGS)], 12, 4)),
        Reply::sse(openai::text_stream("All done.")),
    ]
}

/// A tool that appends a line to a file each time its body runs.
fn record_tool(log: PathBuf, idempotent: bool) -> FunctionTool {
    let flags = if idempotent { ToolFlags::new().idempotent() } else { ToolFlags::new() };
    FunctionTool::new(
        "record",
        "Records a note.",
        json!({"type": "object", "properties": {"note": {"type": "string"}}, "required": ["note"]}),
        move |_ctx, args: serde_json::Value| {
            let log = log.clone();
            async move {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
                writeln!(f, "{}", args["note"].as_str().unwrap_or_default())?;
                f.sync_all()?;
                Ok(ToolOutput::text("recorded"))
            }
        },
    )
    .flags(flags)
}

/// A memory that appends the run id to a file each time a run is remembered.
struct FileMemory(PathBuf);

#[async_trait::async_trait]
impl Memory for FileMemory {
    async fn recall(&self, _: &Scope, _: &RunInput) -> Result<loom_agent::store::Recalled, Error> {
        Ok(Default::default())
    }
    async fn remember(&self, scope: &Scope, _: &loom_agent::Transcript) -> Result<(), Error> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.0).unwrap();
        writeln!(f, "{}", scope.run_id).unwrap();
        f.sync_all().unwrap();
        Ok(())
    }
}

fn agent(journal: impl Journal, store: impl SessionStore, url: &str, log: PathBuf, idempotent: bool) -> Agent {
    Agent::builder()
        .memory(FileMemory(log.with_extension("memory")))
        .instructions("Use the tool, then answer.")
        .model(Model::compatible(url, "gpt-test").api_key("sk-test"))
        .tool(record_tool(log, idempotent))
        .journal(journal)
        .session_store(store)
        .lease_ttl(Duration::from_millis(300))
        .build()
        .unwrap()
}

/// Where the child stops: before or after the `nth` call of a journal operation.
#[derive(Clone, Debug)]
struct Boundary {
    after: bool,
    op: String,
    nth: usize,
}

impl Boundary {
    fn parse(s: &str) -> Boundary {
        let mut parts = s.split(':');
        let after = parts.next() == Some("after");
        let op = parts.next().unwrap().to_string();
        let nth = parts.next().unwrap().parse().unwrap();
        Boundary { after, op, nth }
    }
}

/// A journal that stops the process (waits forever, to be killed) at one boundary.
struct Stopping {
    inner: Arc<dyn Journal>,
    at: Boundary,
    seen: Mutex<std::collections::HashMap<String, usize>>,
}

impl Stopping {
    async fn check(&self, op: &str, after: bool) {
        let n = {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.entry(format!("{op}:{after}")).or_insert(0);
            *n += 1;
            *n
        };
        if self.at.op == op && self.at.after == after && self.at.nth == n {
            say("STOPPED");
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl Journal for Stopping {
    async fn begin(&self, record: &RunRecord, lease: &Lease, events: &[Event]) -> Result<(), Error> {
        self.check("begin", false).await;
        self.inner.begin(record, lease, events).await?;
        self.check("begin", true).await;
        Ok(())
    }
    async fn append(&self, run_id: &str, lease: &Lease, entry: &JournalEntry, events: &[Event]) -> Result<(), Error> {
        self.check(entry.type_name(), false).await;
        self.inner.append(run_id, lease, entry, events).await?;
        self.check(entry.type_name(), true).await;
        Ok(())
    }
    // A combined write (a held-back model result and the tool intent that carries it) is one
    // write of the inner journal: its boundaries are before and after all of its entries.
    async fn append_all(&self, run_id: &str, lease: &Lease, writes: &[JournalWrite<'_>]) -> Result<(), Error> {
        for w in writes {
            self.check(w.entry.type_name(), false).await;
        }
        self.inner.append_all(run_id, lease, writes).await?;
        for w in writes {
            self.check(w.entry.type_name(), true).await;
        }
        Ok(())
    }
    async fn end(&self, run_id: &str, lease: &Lease, state: RunState, events: &[Event]) -> Result<(), Error> {
        self.check("end", false).await;
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
    // The final commit that carries the transcript (the store shares the journal's database).
    fn database_id(&self) -> Option<usize> {
        self.inner.database_id()
    }
    async fn check_lease(&self, run_id: &str, lease: &Lease) -> Result<(), Error> {
        self.inner.check_lease(run_id, lease).await
    }
    async fn end_with(&self, run_id: &str, lease: &Lease, commit: &FinalCommit<'_>) -> Result<bool, Error> {
        self.check("end", false).await;
        self.inner.end_with(run_id, lease, commit).await
    }
}

/// Writes a line for the parent straight to stdout (the test harness captures `println!`).
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The child: runs the agent until the journal stops it. A no-op unless started by a crash test.
#[test]
fn crash_child() {
    let Ok(db) = std::env::var("LOOM_CRASH_DB") else { return };
    let url = std::env::var("LOOM_CRASH_URL").unwrap();
    let session = std::env::var("LOOM_CRASH_SESSION").unwrap();
    let at = Boundary::parse(&std::env::var("LOOM_CRASH_AT").unwrap());
    let log = PathBuf::from(std::env::var("LOOM_CRASH_LOG").unwrap());
    let idempotent = std::env::var("LOOM_CRASH_IDEMPOTENT").is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async move {
        let slot = open_journal(&db).unwrap();
        let journal = Stopping { inner: slot.journal, at, seen: Mutex::new(Default::default()) };
        let agent = agent(journal, slot.session_store.unwrap(), &url, log, idempotent);
        let run = agent.start(RunRequest::new("Record hello.").session(session));
        say(&format!("RUN {}", run.id()));
        let result = run.result().await;
        say(&format!("FINISHED {} {:?}", result.state, result.error.map(|e| e.message)));
    });
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "loom-crash-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tool_runs(log: &Path) -> usize {
    std::fs::read_to_string(log).map(|s| s.lines().count()).unwrap_or(0)
}

/// Runs the child until it stops at `at`, kills it with SIGKILL, returns the run id.
async fn run_child_until(db: &str, session: &str, url: &str, log: &Path, at: &str, idempotent: bool) -> String {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env("LOOM_CRASH_DB", db)
        .env("LOOM_CRASH_SESSION", session)
        .env("LOOM_CRASH_URL", url)
        .env("LOOM_CRASH_AT", at)
        .env("LOOM_CRASH_LOG", log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    if idempotent {
        cmd.env("LOOM_CRASH_IDEMPOTENT", "1");
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut run_id = None;
    let mut stopped = false;
    let stopped = tokio::time::timeout(Duration::from_secs(60), async {
        // The two lines come from different threads, in either order.
        while let Some(line) = lines.next_line().await.unwrap() {
            // The harness may print "test crash_child ... " on the same line first.
            if let Some(i) = line.find("RUN run_") {
                run_id = Some(line[i + 4..].trim().to_string());
            } else if line.ends_with("STOPPED") {
                stopped = true;
            } else if line.contains("FINISHED") {
                panic!("the child finished without reaching {at}: {line}");
            }
            if stopped && run_id.is_some() {
                return true;
            }
        }
        false
    })
    .await
    .expect("the child did not reach its boundary in time");
    assert!(stopped, "the child exited before reaching {at}");
    child.start_kill().unwrap(); // SIGKILL
    let status = child.wait().await.unwrap();
    assert!(!status.success(), "the child was killed");
    run_id.expect("the child printed its run id")
}

/// A run whose child process was killed at a boundary: its scratch folder, SQLite database (or
/// PostgreSQL URL), journal URL, session, tool log and id.
struct Crashed {
    dir: PathBuf,
    db: PathBuf,
    url: String,
    session: String,
    log: PathBuf,
    run_id: String,
}

impl Crashed {
    /// The journal and session store, opened afresh (as another process would).
    fn open(&self) -> (Arc<dyn Journal>, Arc<dyn SessionStore>) {
        let slot = open_journal(&self.url).unwrap();
        (slot.journal, slot.session_store.unwrap())
    }
}

/// Starts the child on a fresh SQLite database against a mock serving the whole script, and kills
/// it at `at`.
async fn crashed(name: &str, at: &str, idempotent: bool) -> Crashed {
    let dir = scratch(name);
    let db = dir.join("loom.db");
    crashed_on(dir, db.clone(), format!("sqlite:{}", db.display()), at, idempotent).await
}

async fn crashed_on(dir: PathBuf, db: PathBuf, url: String, at: &str, idempotent: bool) -> Crashed {
    let log = dir.join("tool.log");
    let session = format!("crash-session-{}", loom_agent::new_id("s"));
    let first = MockServer::start().await;
    for r in replies() {
        first.enqueue(r);
    }
    let run_id = run_child_until(&url, &session, &first.url(), &log, at, idempotent).await;
    Crashed { dir, db, url, session, log, run_id }
}

/// Resumes, retrying while the dead child's lease has not expired yet.
async fn resume(agent: &Agent, run_id: &str) -> Result<loom_agent::Run, Error> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match agent.resume(run_id).await {
            Err(Error::LeaseHeld { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0)).unwrap()
}

/// The event types of an uninterrupted run, for comparison.
async fn reference_types() -> Vec<String> {
    let dir = scratch("reference");
    let server = MockServer::start().await;
    for r in replies() {
        server.enqueue(r);
    }
    let store = SqliteStore::open(dir.join("loom.db")).unwrap();
    let agent = agent(store.clone(), store, &server.url(), dir.join("tool.log"), false);
    let result = agent.run(RunRequest::new("Record hello.").session("crash-session")).await.unwrap();
    assert_eq!(result.output, "All done.");
    assert_eq!(tool_runs(&dir.join("tool.log")), 1);
    result.events.iter().map(|e| e.type_name().to_string()).collect()
}

fn model_results(stored: &JournaledRun) -> usize {
    stored.entries.iter().filter(|e| matches!(e, JournalEntry::ModelResult { .. })).count()
}

/// Kill at one boundary, resume, and check everything (SQLite).
async fn crash_and_resume(at: &str, expect_tool_ran_before_kill: bool) {
    let crashed = crashed("run", at, false).await;
    assert_eq!(integrity(&crashed.db), "ok", "{at}: the database is sound after SIGKILL");
    check_resume(crashed, at, expect_tool_ran_before_kill).await;
}

/// Resumes a killed run and checks everything: result, effects once, calls not repeated, events.
async fn check_resume(crashed: Crashed, at: &str, expect_tool_ran_before_kill: bool) {
    let reference = reference_types().await;
    let (store, sessions) = crashed.open();
    let Crashed { dir, db, url, session: session_id, log, run_id } = crashed;
    assert_eq!(tool_runs(&log), usize::from(expect_tool_ran_before_kill), "{at}: tool runs before the kill");
    let stored = store.load(&run_id).await.unwrap().expect("the run is journaled");
    assert!(!stored.finished, "{at}: a killed run is not finished");
    let done_calls = model_results(&stored);

    // The resumed process gets only the answers it has not journaled.
    let second = MockServer::start().await;
    for r in replies().into_iter().skip(done_calls) {
        second.enqueue(r);
    }
    let agent = agent(store.clone(), sessions, &second.url(), log.clone(), false);
    let started = std::time::Instant::now();
    let run = resume(&agent, &run_id).await.unwrap_or_else(|e| panic!("{at}: resume failed: {e}"));
    // The dead owner ran on this machine: its lease is not waited for.
    assert!(started.elapsed() < Duration::from_millis(250), "{at}: waited {:?} for a dead owner", started.elapsed());
    let result = run.result().await;
    assert_eq!(result.state, RunState::Completed, "{at}: {:?}", result.error);
    assert_eq!(result.output, "All done.", "{at}");
    assert_eq!(result.turns, 2, "{at}");
    assert_eq!(tool_runs(&log), 1, "{at}: the tool body ran exactly once");
    assert_eq!(tool_runs(&log.with_extension("memory")), 1, "{at}: memory got the run once");
    assert_eq!(second.requests().len(), 2 - done_calls, "{at}: completed model calls are not sent again");
    if done_calls == 1 {
        // The resumed call carries the replayed tool result.
        let body = second.requests()[0].json();
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.last().unwrap()["role"], "tool", "{at}");
        assert_eq!(messages.last().unwrap()["content"], "recorded", "{at}");
    }
    // No event lost or duplicated: numbered without gaps, same kinds in the same order.
    let seqs: Vec<u64> = result.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..result.events.len() as u64).collect::<Vec<_>>(), "{at}");
    let types: Vec<String> = result.events.iter().map(|e| e.type_name().to_string()).collect();
    assert_eq!(types, reference, "{at}: the resumed run's events equal an uninterrupted run's");
    // What is stored agrees: the journal's events and the transcript.
    let after = store.load(&run_id).await.unwrap().unwrap();
    assert!(after.finished, "{at}");
    assert_eq!(after.state, RunState::Completed);
    let stored_types: Vec<String> = after.events.iter().map(|e| e.type_name().to_string()).collect();
    assert_eq!(stored_types, reference, "{at}: stored events");
    let session = agent.session(loom_agent::SessionConfig::new(session_id.clone()));
    let transcript = session.get_run(&run_id).await.unwrap().unwrap().transcript();
    assert_eq!(transcript.state, RunState::Completed);
    let history = agent.session_store().history(SessionKey::new(&session_id)).await.unwrap();
    assert_eq!(history.len(), 4, "{at}: user, assistant call, tool result, answer; never twice");
    if url.starts_with("sqlite:") {
        assert_eq!(integrity(&db), "ok");
    }
    // A finished run is never replayed.
    assert!(matches!(agent.resume(&run_id).await, Err(Error::RunFinished { .. })), "{at}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_the_first_model_call_then_resume() {
    crash_and_resume("after:begin:1", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_a_model_call_before_it_is_journaled_then_resume() {
    crash_and_resume("before:model_result:1", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_a_journaled_model_call_then_resume() {
    let crashed = crashed("combined", "after:model_result:1", true).await;
    assert_eq!(integrity(&crashed.db), "ok");
    check_combined_write(crashed).await;
}

/// Killed right after the model's result was journaled: it is written with the first tool intent,
/// in one write, before the tool's side effect. The resumed run takes the model's answer back
/// (the model is not asked again) and runs the idempotent call, once.
async fn check_combined_write(crashed: Crashed) {
    let (store, sessions) = crashed.open();
    let Crashed { dir, log, run_id, .. } = crashed;
    assert_eq!(tool_runs(&log), 0, "killed before the tool's body");
    let stored = store.load(&run_id).await.unwrap().unwrap();
    let kinds: Vec<&str> = stored.entries.iter().map(JournalEntry::type_name).collect();
    assert_eq!(kinds, ["model_result", "tool_intent"], "the model's result and the intent, written together");
    let second = MockServer::start().await;
    second.enqueue(replies().remove(1));
    let agent = agent(store.clone(), sessions, &second.url(), log.clone(), true);
    let result = resume(&agent, &run_id).await.unwrap().result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "All done.");
    assert_eq!(tool_runs(&log), 1, "the idempotent call ran once, in the resumed process");
    assert_eq!(second.requests().len(), 1, "the journaled model call is not sent again");
    let seqs: Vec<u64> = result.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..result.events.len() as u64).collect::<Vec<_>>(), "no event lost or duplicated");
    assert_eq!(
        result.events.iter().map(|e| e.type_name().to_string()).collect::<Vec<_>>(),
        reference_types().await,
        "the resumed run's events equal an uninterrupted run's"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_a_tool_intent_then_resume() {
    // The intent is recorded, the body has not run: a non-idempotent tool's call is ambiguous.
    let Crashed { dir, db, log, run_id, .. } = crashed("intent", "after:tool_intent:1", false).await;
    assert_eq!(tool_runs(&log), 0);
    let store = SqliteStore::open(&db).unwrap();
    let second = MockServer::start().await;
    let agent = agent(store.clone(), store.clone(), &second.url(), log.clone(), false);
    let result = resume(&agent, &run_id).await.unwrap().result().await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Ambiguous);
    assert!(error.message.contains("record") && error.message.contains("idempotent"), "{}", error.message);
    assert_eq!(tool_runs(&log), 0, "an ambiguous call is not run again");
    assert!(second.requests().is_empty());
    assert!(store.load(&run_id).await.unwrap().unwrap().finished);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_a_tool_intent_reruns_an_idempotent_tool() {
    let Crashed { dir, db, log, run_id, .. } = crashed("intent-idem", "after:tool_intent:1", true).await;
    let store = SqliteStore::open(&db).unwrap();
    let second = MockServer::start().await;
    second.enqueue(replies().remove(1));
    let agent = agent(store.clone(), store.clone(), &second.url(), log.clone(), true);
    let result = resume(&agent, &run_id).await.unwrap().result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(tool_runs(&log), 1, "the idempotent call ran once, in the resumed process");
    assert_eq!(second.requests().len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_a_tool_result_then_resume() {
    crash_and_resume("after:tool_result:1", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_before_the_final_commit_then_resume() {
    crash_and_resume("before:end:1", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_the_memory_write_then_resume() {
    // Memory has the run and the journal says so: the resumed run does not write it again.
    crash_and_resume("after:memory_written:1", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resumers_of_one_run_exactly_one_wins() {
    let Crashed { dir, db, log, run_id, .. } = crashed("race", "after:tool_result:1", false).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // the dead child's lease expires
    let second = MockServer::start().await;
    second.always(replies().remove(1));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        // Separate store handles and agents: as separate processes would be.
        let store = SqliteStore::open(&db).unwrap();
        let agent = agent(store.clone(), store, &second.url(), log.clone(), false);
        let run_id = run_id.clone();
        tasks.push(tokio::spawn(async move {
            match agent.resume(&run_id).await {
                Ok(run) => Ok(run.result().await),
                Err(e) => Err(e),
            }
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(result) => {
                won += 1;
                assert_eq!(result.state, RunState::Completed);
            }
            Err(Error::LeaseHeld { .. } | Error::RunFinished { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one resumer drives the run");
    assert_eq!(second.requests().len(), 1, "the last model call was sent once");
    assert_eq!(tool_runs(&log), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_journal_rows_are_clear_errors() {
    let Crashed { dir, db, log, run_id, .. } = crashed("corrupt", "after:tool_result:1", false).await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE loom_journal SET entry = substr(entry, 1, 20) WHERE run_id = ?1 AND seq = 1", [&run_id])
        .unwrap();
    let store = SqliteStore::open(&db).unwrap();
    match store.load(&run_id).await {
        Err(Error::Corrupt(message)) => assert!(message.contains("journal entry 1"), "{message}"),
        other => panic!("expected a corrupt-row error, got {other:?}"),
    }
    let second = MockServer::start().await;
    let agent = agent(store.clone(), store.clone(), &second.url(), log.clone(), false);
    let err = resume(&agent, &run_id).await.unwrap_err();
    assert!(matches!(err, Error::Corrupt(_)), "{err}");
    // The failed resume released its lease: a second attempt fails the same way, not as "held".
    assert!(matches!(agent.resume(&run_id).await, Err(Error::Corrupt(_))));
    std::fs::remove_dir_all(&dir).ok();
}

/// The same kills against PostgreSQL (skipped without `LOOM_TEST_POSTGRES_URL`).
#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    async fn crash_and_resume(at: &str, expect_tool_ran_before_kill: bool) {
        let Some(url) = std::env::var("LOOM_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipped: LOOM_TEST_POSTGRES_URL is not set");
            return;
        };
        let dir = scratch("pg");
        let crashed = crashed_on(dir.clone(), dir.join("unused.db"), url, at, false).await;
        check_resume(crashed, at, expect_tool_ran_before_kill).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_before_the_first_model_call_then_resume() {
        crash_and_resume("after:begin:1", false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_after_a_model_call_before_it_is_journaled_then_resume() {
        crash_and_resume("before:model_result:1", false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_after_a_journaled_model_call_then_resume() {
        let Some(url) = std::env::var("LOOM_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipped: LOOM_TEST_POSTGRES_URL is not set");
            return;
        };
        let dir = scratch("pg-combined");
        let crashed = crashed_on(dir.clone(), dir.join("unused.db"), url, "after:model_result:1", true).await;
        check_combined_write(crashed).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_after_a_tool_result_then_resume() {
        crash_and_resume("after:tool_result:1", true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_before_the_final_commit_then_resume() {
        crash_and_resume("before:end:1", true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigkill_after_the_memory_write_then_resume() {
        crash_and_resume("after:memory_written:1", true).await;
    }
}
