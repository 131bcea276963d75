//! One conformance suite for every journal and session store: the same checks run against
//! `InMemoryJournal` (and `InMemorySessionStore`), `SqliteStore` and `PostgresStore`.
//!
//! The PostgreSQL checks need `LOOM_TEST_POSTGRES_URL` (and the `postgres` feature); without it
//! they print a note and pass. The database is shared by every test, so each test uses its own
//! run, session and user ids.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom_agent::store::{RecordedModel, SessionKey};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use loom_agent::agent::{Artifact, RunContext, RunInput, RunState, Transcript};
use loom_agent::event::{DeltaKind, ModelDelta, RunStarted};
use loom_agent::governance::Approval;
use loom_agent::message::Thinking;
use loom_agent::model::ModelResponse;
use loom_agent::store::{
    InMemoryJournal, InMemorySessionStore, Journal, JournalEntry, Lease, RunFilter, RunRecord, SessionRecord,
    SessionStore,
};
use loom_agent::{Error, Event, EventKind, FinishReason, Message, ToolCall, ToolErrorKind, Usage};
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// Where a backend's data lives, to open more handles on it.
enum Db {
    Memory(Arc<InMemoryJournal>),
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    #[cfg(feature = "postgres")]
    Postgres(String),
}

/// One store under test.
struct Backend {
    db: Db,
    journal: Arc<dyn Journal>,
    sessions: Arc<dyn SessionStore>,
}

impl Backend {
    fn memory() -> Backend {
        let journal = Arc::new(InMemoryJournal::new());
        Backend { db: Db::Memory(journal.clone()), journal, sessions: Arc::new(InMemorySessionStore::new()) }
    }

    #[cfg(feature = "sqlite")]
    fn sqlite() -> Backend {
        let path = temp_db();
        let store = Arc::new(loom_agent::store::SqliteStore::open(&path).unwrap());
        Backend { db: Db::Sqlite(path), journal: store.clone(), sessions: store }
    }

    #[cfg(feature = "postgres")]
    async fn postgres() -> Option<Backend> {
        let url = postgres_url()?;
        let store = Arc::new(loom_agent::store::PostgresStore::connect(&url).await.unwrap());
        Some(Backend { db: Db::Postgres(url), journal: store.clone(), sessions: store })
    }

    /// Another handle on the same data: its own connection for the durable stores, so
    /// concurrent calls really race in the database.
    async fn another_journal(&self) -> Arc<dyn Journal> {
        match &self.db {
            Db::Memory(journal) => journal.clone(),
            #[cfg(feature = "sqlite")]
            Db::Sqlite(path) => Arc::new(loom_agent::store::SqliteStore::open(path).unwrap()),
            #[cfg(feature = "postgres")]
            Db::Postgres(url) => Arc::new(loom_agent::store::PostgresStore::connect(url).await.unwrap()),
        }
    }

    fn durable(&self) -> bool {
        !matches!(self.db, Db::Memory(_))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        #[cfg(feature = "sqlite")]
        if let Db::Sqlite(path) = &self.db {
            remove_db(path);
        }
    }
}

#[cfg(feature = "postgres")]
fn postgres_url() -> Option<String> {
    match std::env::var("LOOM_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipped: LOOM_TEST_POSTGRES_URL not set");
            None
        }
    }
}

/// A unique suffix: time, process and a counter.
fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{nanos}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn temp_db() -> PathBuf {
    std::env::temp_dir().join(format!("loom-conformance-{}.db", unique()))
}

fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// The fencing, queue and retention checks (in their own file).
#[path = "journal_conformance/fencing.rs"]
mod fencing;
use fencing::*;
/// The final commit that carries the transcript, and the lease check (in their own file).
#[path = "journal_conformance/final_commit.rs"]
mod final_commit;
use final_commit::*;

#[path = "journal_conformance/append_all.rs"]
mod append_all;
use append_all::*;

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

fn lease(owner: &str, ttl: Duration) -> Lease {
    Lease::new(owner, ttl)
}

fn long(owner: &str) -> Lease {
    lease(owner, Duration::from_secs(60))
}

/// `now`, to the millisecond (what the stores keep in their timestamp columns).
fn now_ms() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap()
}

fn record(run_id: &str, session_id: &str, user_id: Option<&str>) -> RunRecord {
    let mut metadata = Map::new();
    metadata.insert("tenant".into(), json!("acme"));
    RunRecord {
        run_id: run_id.into(),
        session_id: session_id.into(),
        user_id: user_id.map(Into::into),
        input: RunInput::Prompt("what is the weather?".into()),
        context: RunContext::default(),
        metadata,
        seeds: vec![Message::system("be brief"), Message::user("what is the weather?")],
        history_base: 1,
        history_start: None,
        summary_covers: 0,
        max_turns: 8,
        timeout_ms: Some(30_000),
        output_schema: Some(("answer".into(), json!({"type": "object"}))),
        started_at: Utc::now(),
        model: Some(RecordedModel {
            provider: "openai".into(),
            name: "gpt-4o-mini".into(),
            spec: Some("openai:gpt-4o-mini".into()),
            base_url: Some("http://127.0.0.1:9/v1".into()),
        }),
        parent_run_id: None,
        architecture: Some("react".into()),
    }
}

fn event(run_id: &str, session_id: &str, seq: u64) -> Event {
    Event {
        run_id: run_id.into(),
        session_id: session_id.into(),
        seq,
        at: Utc::now(),
        kind: EventKind::ModelDelta(ModelDelta { turn: 1, kind: DeltaKind::Text, text: format!("delta {seq}") }),
    }
}

fn events(run_id: &str, session_id: &str, seqs: std::ops::Range<u64>) -> Vec<Event> {
    seqs.map(|seq| event(run_id, session_id, seq)).collect()
}

fn call() -> ToolCall {
    ToolCall::new("call_1", "weather", &json!({"city": "Oslo"}))
}

/// One entry of every kind.
fn every_entry() -> Vec<JournalEntry> {
    vec![
        JournalEntry::ModelResult {
            turn: 1,
            response: ModelResponse {
                text: "let me look".into(),
                thinking: vec![Thinking::signed("weather tool", "sig", "anthropic")],
                tool_calls: vec![call()],
                usage: Usage { input_tokens: 12, output_tokens: 7, cost_usd: 0.25, ..Usage::default() },
                finish_reason: FinishReason::ToolCalls,
            },
        },
        JournalEntry::ApprovalPending { turn: 1, call: call(), reason: "needs a human".into() },
        JournalEntry::ApprovalDecision {
            call_id: "call_1".into(),
            approval: Approval::Edit(json!({"city": "Bergen"})),
        },
        JournalEntry::ToolIntent { turn: 1, call: call(), arguments: json!({"city": "Bergen"}) },
        JournalEntry::MemoryWritten,
        JournalEntry::ToolResult {
            turn: 1,
            call_id: "call_1".into(),
            output: "rain".into(),
            is_error: true,
            error_kind: Some(ToolErrorKind::Timeout),
            truncated: true,
            blocked: Some(("pii".into(), "an email address".into())),
            duration_ms: 42,
            artifacts: vec![Artifact {
                id: "art_1".into(),
                name: "forecast".into(),
                media_type: "text/markdown".into(),
                content: "# Rain".into(),
                call_id: Some("call_1".into()),
            }],
        },
        JournalEntry::StepCompleted { key: "node:review.2".into(), output: json!({"draft": "v2", "rounds": 2}) },
    ]
}

fn transcript(run_id: &str, session_id: &str, state: RunState, output: &str, events: Vec<Event>) -> Transcript {
    Transcript {
        run_id: run_id.into(),
        session_id: session_id.into(),
        user_id: Some("ulla".into()),
        state,
        input: RunInput::Prompt(format!("input of {run_id}")),
        context: RunContext::default(),
        metadata: Map::new(),
        messages: vec![Message::user(format!("input of {run_id}")), Message::assistant(output)],
        output: output.into(),
        parsed: Some(json!({"answer": output})),
        events: Arc::from(events),
        artifacts: Vec::new(),
        usage: Usage { input_tokens: 3, output_tokens: 4, ..Usage::default() },
        error: None,
        turns: 1,
        started_at: Some(now_ms()),
        finished_at: state.is_terminal().then(now_ms),
        parent_run_id: None,
    }
}

fn ids(tag: &str) -> (String, String, String) {
    let u = unique();
    (format!("run_{tag}_{u}"), format!("ses_{tag}_{u}"), format!("user_{tag}_{u}"))
}

// ---------------------------------------------------------------------------------------------
// Journal checks
// ---------------------------------------------------------------------------------------------

async fn begin_then_load(b: &Backend) {
    let (run, ses, user) = ids("begin");
    let rec = record(&run, &ses, Some(&user));
    let evs = events(&run, &ses, 0..2);
    let before = Utc::now();
    b.journal.begin(&rec, &long("a"), &evs).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().expect("the run is journaled");
    assert_eq!(loaded.record, rec);
    assert!(loaded.entries.is_empty());
    assert_eq!(loaded.events, evs);
    assert_eq!(loaded.state, RunState::Running);
    assert!(!loaded.finished);
    assert_eq!(loaded.lease_owner.as_deref(), Some("a"));
    let expires = loaded.lease_expires_at.expect("a lease expiry");
    assert!(expires > before + chrono::Duration::seconds(50), "{expires} is about a minute away");
}

async fn entries_round_trip(b: &Backend) {
    let (run, ses, _) = ids("entries");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    let entries = every_entry();
    let mut all_events = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let seq = i as u64 * 2;
        let evs = events(&run, &ses, seq..seq + 2);
        b.journal.append(&run, &a, entry, &evs).await.unwrap();
        all_events.extend(evs);
    }
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries, entries, "every kind of entry, in order");
    assert_eq!(loaded.events, all_events, "the events, in order");
    assert_eq!(loaded.lease_owner.as_deref(), Some("a"));
}

async fn events_are_not_duplicated(b: &Backend) {
    let (run, ses, _) = ids("events");
    let a = long("a");
    let evs = events(&run, &ses, 0..4);
    b.journal.begin(&record(&run, &ses, None), &a, &evs[..2]).await.unwrap();
    // A retried write re-sends event 1.
    b.journal.append(&run, &a, &every_entry()[0], &evs[1..3]).await.unwrap();
    b.journal.end(&run, &a, RunState::Completed, &evs[2..4]).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    let seqs: Vec<u64> = loaded.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3], "numbered, each once");
    assert_eq!(loaded.events, evs);
}

async fn second_begin_fails(b: &Backend) {
    let (run, ses, _) = ids("twice");
    let rec = record(&run, &ses, None);
    b.journal.begin(&rec, &long("a"), &[]).await.unwrap();
    let again = b.journal.begin(&rec, &long("b"), &[]).await;
    assert!(again.is_err(), "a second begin of one run must fail: {again:?}");
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.lease_owner.as_deref(), Some("a"), "the first lease stands");
}

fn assert_lease_lost(result: Result<(), Error>, what: &str) {
    match result {
        Err(Error::LeaseLost { .. }) => {}
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

async fn foreign_lease_is_lost(b: &Backend) {
    let (run, ses, _) = ids("foreign");
    b.journal.begin(&record(&run, &ses, None), &long("a"), &[]).await.unwrap();
    let other = long("b");
    let entry = &every_entry()[0];
    assert_lease_lost(b.journal.append(&run, &other, entry, &events(&run, &ses, 0..1)).await, "append");
    assert_lease_lost(b.journal.renew(&run, &other).await, "renew");
    assert_lease_lost(b.journal.end(&run, &other, RunState::Completed, &[]).await, "end");
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert!(loaded.entries.is_empty() && loaded.events.is_empty(), "nothing written");
    assert_eq!(loaded.lease_owner.as_deref(), Some("a"));
    assert_eq!(loaded.state, RunState::Running);
}

async fn lease_held_until_it_expires(b: &Backend) {
    let (run, ses, _) = ids("held");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    match b.journal.acquire(&run, &long("b")).await {
        Err(Error::LeaseHeld { owner, .. }) => assert_eq!(owner, "a"),
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    // The holder may take its own run again (with the next fencing number).
    let fence = b.journal.acquire(&run, &a).await.unwrap();
    assert_eq!(fence, 1);
    // Now let it lapse: renew with a 50 ms lease, then wait.
    b.journal.renew(&run, &lease("a", Duration::from_millis(50)).fenced(fence)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let taken = b.journal.acquire(&run, &long("b")).await.unwrap();
    assert_eq!(taken, 2);
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.lease_owner.as_deref(), Some("b"));
    assert_eq!(loaded.state, RunState::Running);
    assert_lease_lost(b.journal.append(&run, &a.fenced(fence), &every_entry()[0], &[]).await, "the old owner appends");
    b.journal.append(&run, &long("b").fenced(taken), &every_entry()[0], &[]).await.unwrap();
}

async fn one_of_many_acquirers_wins(b: &Backend) {
    let (run, ses, _) = ids("race");
    b.journal.begin(&record(&run, &ses, None), &lease("dead", Duration::from_millis(1)), &[]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(b.another_journal().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(handles.len()));
    let tasks: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, journal)| {
            let run = run.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                journal.acquire(&run, &long(&format!("owner{i}"))).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => winners.push(format!("owner{i}")),
            Err(Error::LeaseHeld { .. }) => {}
            Err(e) => panic!("acquirer {i}: expected Ok or LeaseHeld, got {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one acquirer wins: {winners:?}");
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.lease_owner.as_ref(), Some(&winners[0]));
}

async fn concurrent_writers_get_distinct_seqs(b: &Backend) {
    // Decisions may arrive from several processes at once; none may be lost to a seq collision.
    let (run, ses, _) = ids("seq");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    b.journal.end(&run, &a, RunState::Suspended, &[]).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..6 {
        handles.push(b.another_journal().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(handles.len()));
    let mut tasks = Vec::new();
    for (i, journal) in handles.into_iter().enumerate() {
        let run = run.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let entry = JournalEntry::ApprovalDecision { call_id: format!("call_{i}"), approval: Approval::Allow };
            barrier.wait().await;
            journal.decide(&run, &entry).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 6, "every decision kept");
}

async fn concurrent_appends_and_decisions_get_distinct_seqs(b: &Backend) {
    // The lease holder's writes (several at once, as parallel tool calls make them) and decisions
    // from other processes race for the next seq: every entry is kept, each at its own seq, and the
    // events of every append are there.
    let (run, ses, _) = ids("race");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..8 {
        handles.push(b.another_journal().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(handles.len()));
    let mut tasks = Vec::new();
    for (i, journal) in handles.into_iter().enumerate() {
        let (run, ses, a, barrier) = (run.clone(), ses.clone(), a.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            for round in 0..3u64 {
                let call_id = format!("call_{i}_{round}");
                if i % 2 == 0 {
                    let entry = JournalEntry::ApprovalDecision { call_id, approval: Approval::Allow };
                    journal.decide(&run, &entry).await?;
                } else {
                    let entry = JournalEntry::ToolIntent {
                        turn: 1,
                        call: ToolCall::new(call_id, "weather", &json!({})),
                        arguments: json!({}),
                    };
                    let seq = (i as u64) * 10 + round;
                    journal.append(&run, &a, &entry, &[event(&run, &ses, seq)]).await?;
                }
            }
            Ok::<_, Error>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries.len(), 24, "every entry kept");
    // (The in-memory journal keeps only events that continue its sequence; these have gaps.)
    if !matches!(b.db, Db::Memory(_)) {
        assert_eq!(loaded.events.len(), 12, "every append's event kept");
    }
}

async fn session_lock_rule(b: &Backend) {
    // A session's run lock: free, expired or the caller's is granted; another live holder's is not,
    // unless that holder is a process of this machine that is gone; only the holder releases it.
    let (_, ses, user) = ids("lock");
    let key = SessionKey { user_id: Some(&user), session_id: &ses };
    let now = Utc::now().timestamp_millis();
    let later = now + 60_000;
    let s = &b.sessions;
    assert!(s.lock_session(key, "a#1", later).await.unwrap(), "a free lock (the session is created)");
    assert!(s.get_session(key).await.unwrap().is_some());
    assert!(!s.lock_session(key, "b#1", later).await.unwrap(), "held by a");
    assert!(s.lock_session(key, "a#1", later + 1).await.unwrap(), "a renews");
    s.unlock_session(key, "b#1").await.unwrap();
    assert!(!s.lock_session(key, "b#1", later).await.unwrap(), "only the holder releases it");
    s.unlock_session(key, "a#1").await.unwrap();
    assert!(s.lock_session(key, "b#1", now - 1).await.unwrap(), "released");
    assert!(s.lock_session(key, "c#1", later).await.unwrap(), "b's lock has expired");
    let other = SessionKey { user_id: None, session_id: &ses };
    assert!(s.lock_session(other, "d#1", later).await.unwrap(), "another user's session of the same id");
    // A holder of this machine whose process is gone (this process's identity, another start time).
    let mine = Lease::for_this_process(Duration::from_secs(60)).owner.to_string();
    if let Some((name, identity)) = mine.split_once('@') {
        let mut parts: Vec<&str> = identity.split('/').collect();
        if let Some(start) = parts.last_mut() {
            *start = "1";
        }
        let dead = format!("{name}@{}#run", parts.join("/"));
        let (_, ses, _) = ids("lock_dead");
        let key = SessionKey { user_id: None, session_id: &ses };
        assert!(s.lock_session(key, &dead, later).await.unwrap());
        assert!(s.lock_session(key, "e#1", later).await.unwrap(), "its holder is gone");
        assert!(!s.lock_session(key, &mine, later).await.unwrap(), "e is alive (not of this machine)");
    }
}

async fn terminal_end_finishes(b: &Backend) {
    let (run, ses, _) = ids("terminal");
    let a = long("a");
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    b.journal.end(&run, &a, RunState::Completed, &events(&run, &ses, 0..1)).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert!(loaded.finished);
    assert_eq!(loaded.state, RunState::Completed);
    assert_eq!(loaded.lease_owner, None);
    assert_eq!(loaded.lease_expires_at, None);
    assert_eq!(loaded.events.len(), 1);
    match b.journal.acquire(&run, &long("b")).await {
        Err(Error::RunFinished { state, .. }) => assert_eq!(state, RunState::Completed),
        other => panic!("acquire: expected RunFinished, got {other:?}"),
    }
    let decision = &every_entry()[2];
    match b.journal.decide(&run, decision).await {
        Err(Error::RunFinished { state, .. }) => assert_eq!(state, RunState::Completed),
        other => panic!("decide: expected RunFinished, got {other:?}"),
    }
    assert_lease_lost(b.journal.append(&run, &a, decision, &[]).await, "append after the end");
    assert_lease_lost(b.journal.renew(&run, &a).await, "renew after the end");
    assert!(b.journal.load(&run).await.unwrap().unwrap().entries.is_empty());
}

async fn suspended_end_waits(b: &Backend) {
    let (run, ses, _) = ids("suspended");
    let a = long("a");
    let entries = every_entry();
    b.journal.begin(&record(&run, &ses, None), &a, &[]).await.unwrap();
    b.journal.append(&run, &a, &entries[1], &[]).await.unwrap();
    b.journal.end(&run, &a, RunState::Suspended, &events(&run, &ses, 0..1)).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert!(!loaded.finished, "a suspended run is not finished");
    assert_eq!(loaded.state, RunState::Suspended);
    assert_eq!(loaded.lease_owner, None, "the lease is released");
    assert_eq!(loaded.lease_expires_at, None);
    // Nobody holds it: the old owner's lease is gone.
    assert_lease_lost(b.journal.renew(&run, &a).await, "renew while suspended");
    b.journal.decide(&run, &entries[2]).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.entries, vec![entries[1].clone(), entries[2].clone()]);
    assert_eq!(loaded.state, RunState::Suspended);
    // Another process resumes it.
    b.journal.acquire(&run, &long("b")).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.state, RunState::Running);
    assert_eq!(loaded.lease_owner.as_deref(), Some("b"));
}

async fn list_filters(b: &Backend) {
    let u = unique();
    let (s1, s2) = (format!("ses_list1_{u}"), format!("ses_list2_{u}"));
    let (u1, u2) = (format!("user_list1_{u}"), format!("user_list2_{u}"));
    let run = |x: &str| format!("run_list_{u}_{x}");
    let a = long("a");
    let rec_a = record(&run("a"), &s1, Some(&u1));
    b.journal.begin(&rec_a, &a, &[]).await.unwrap();
    b.journal.begin(&record(&run("b"), &s1, Some(&u1)), &a, &[]).await.unwrap();
    b.journal.begin(&record(&run("c"), &s2, Some(&u2)), &a, &[]).await.unwrap();
    b.journal.begin(&record(&run("d"), &s2, None), &a, &[]).await.unwrap();
    // A child run of `a` (an agent used as a tool), listed under its parent.
    let child =
        RunRecord { parent_run_id: Some(run("a")), ..record(&run("a.call_1"), &format!("{s1}-child"), Some(&u1)) };
    b.journal.begin(&child, &a, &[]).await.unwrap();
    for entry in &every_entry()[..2] {
        b.journal.append(&run("a"), &a, entry, &[]).await.unwrap();
    }
    b.journal.end(&run("b"), &a, RunState::Failed, &[]).await.unwrap();
    if b.durable() {
        // A transcript saved without a journal is not a journaled run.
        let t = transcript(&run("e"), &s1, RunState::Running, "", Vec::new());
        b.sessions.save_run(Arc::new(t)).await.unwrap();
    }

    let list = |filter: RunFilter| {
        let journal = b.journal.clone();
        async move { journal.list(&filter).await.unwrap() }
    };
    let names =
        |rows: &[loom_agent::store::JournalRunSummary]| rows.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>();

    let by_session = list(RunFilter { session_id: Some(s1.clone()), ..RunFilter::default() }).await;
    assert_eq!(names(&by_session), vec![run("b"), run("a")], "newest first");
    let a_row = &by_session[1];
    assert_eq!(a_row.session_id, s1);
    assert_eq!(a_row.user_id.as_deref(), Some(u1.as_str()));
    assert_eq!(a_row.state, RunState::Running);
    assert!(!a_row.finished);
    assert_eq!(a_row.entries, 2);
    assert_eq!(a_row.started_at.timestamp_millis(), rec_a.started_at.timestamp_millis());
    assert_eq!(by_session[0].state, RunState::Failed);
    assert!(by_session[0].finished);

    let by_user = list(RunFilter { user_id: Some(u2.clone()), ..RunFilter::default() }).await;
    assert_eq!(names(&by_user), vec![run("c")]);
    let by_both =
        list(RunFilter { session_id: Some(s2.clone()), user_id: Some(u1.clone()), ..RunFilter::default() }).await;
    assert!(by_both.is_empty());
    let unfinished = list(RunFilter { session_id: Some(s1.clone()), unfinished: true, ..RunFilter::default() }).await;
    assert_eq!(names(&unfinished), vec![run("a")]);
    let limited = list(RunFilter { session_id: Some(s2.clone()), limit: 1, ..RunFilter::default() }).await;
    assert_eq!(names(&limited), vec![run("d")]);
    let children = list(RunFilter { parent_run_id: Some(run("a")), ..RunFilter::default() }).await;
    assert_eq!(names(&children), vec![run("a.call_1")]);
    assert_eq!(children[0].parent_run_id.as_deref(), Some(run("a").as_str()));
    assert_eq!(b.journal.load(&run("a.call_1")).await.unwrap().unwrap().record.parent_run_id, Some(run("a")));
    assert_eq!(by_session[1].parent_run_id, None);
    let everything = list(RunFilter::default()).await;
    for x in ["a", "b", "c", "d"] {
        assert!(everything.iter().any(|r| r.run_id == run(x)), "no filter lists run {x}");
    }
    assert!(!everything.iter().any(|r| r.run_id == run("e")));
}

async fn unknown_runs(b: &Backend) {
    let (run, _, _) = ids("unknown");
    assert!(b.journal.load(&run).await.unwrap().is_none());
    match b.journal.acquire(&run, &long("a")).await {
        Err(Error::RunNotFound(id)) => assert_eq!(id, run),
        other => panic!("acquire: expected RunNotFound, got {other:?}"),
    }
    match b.journal.decide(&run, &every_entry()[2]).await {
        Err(Error::RunNotFound(_)) => {}
        other => panic!("decide: expected RunNotFound, got {other:?}"),
    }
    match b.journal.renew(&run, &long("a")).await {
        Err(Error::RunNotFound(_)) => {}
        other => panic!("renew: expected RunNotFound, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Session store checks
// ---------------------------------------------------------------------------------------------

fn obj(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

async fn sessions_merge(b: &Backend) {
    let (_, ses, _) = ids("merge");
    let s = &b.sessions;
    assert!(s.get_session(SessionKey::new(&ses)).await.unwrap().is_none());
    let first = SessionRecord {
        id: ses.clone(),
        user_id: None,
        metadata: obj(json!({"a": 1, "keep": true})),
        extensions: obj(json!({"x": "1"})),
    };
    assert_eq!(s.open_session(&first).await.unwrap(), first);
    let second = SessionRecord {
        id: ses.clone(),
        user_id: None,
        metadata: obj(json!({"a": 3, "b": 2})),
        extensions: Map::new(),
    };
    let merged = s.open_session(&second).await.unwrap();
    let expected = SessionRecord {
        id: ses.clone(),
        user_id: None,
        metadata: obj(json!({"a": 3, "b": 2, "keep": true})),
        extensions: obj(json!({"x": "1"})),
    };
    assert_eq!(merged, expected);
    assert_eq!(s.get_session(SessionKey::new(&ses)).await.unwrap(), Some(expected.clone()));
    s.close_session(SessionKey::new(&ses)).await.unwrap();
    assert_eq!(s.get_session(SessionKey::new(&ses)).await.unwrap(), Some(expected), "a closed session stays readable");
}

async fn history_is_idempotent_per_run(b: &Backend) {
    let (_, ses, _) = ids("history");
    let s = &b.sessions;
    s.open_session(&SessionRecord { id: ses.clone(), ..SessionRecord::default() }).await.unwrap();
    assert!(s.history(SessionKey::new(&ses)).await.unwrap().is_empty());
    let first = vec![Message::user("one"), Message::assistant("two")];
    let second = vec![Message::user("three"), Message::assistant("four")];
    s.append_history(SessionKey::new(&ses), "run_1", &first).await.unwrap();
    s.append_history(SessionKey::new(&ses), "run_1", &first).await.unwrap();
    assert_eq!(s.history(SessionKey::new(&ses)).await.unwrap(), first, "a second append of one run adds nothing");
    s.append_history(SessionKey::new(&ses), "run_2", &second).await.unwrap();
    s.append_history(SessionKey::new(&ses), "run_1", &first).await.unwrap();
    let all: Vec<Message> = first.iter().chain(&second).cloned().collect();
    assert_eq!(s.history(SessionKey::new(&ses)).await.unwrap(), all, "runs in the order appended");
}

async fn save_run_replaces(b: &Backend) {
    let (run, ses, _) = ids("save");
    let s = &b.sessions;
    s.open_session(&SessionRecord { id: ses.clone(), ..SessionRecord::default() }).await.unwrap();
    // Events are immutable by seq: the second save re-sends the first one's.
    let evs = events(&run, &ses, 0..3);
    let early = transcript(&run, &ses, RunState::Running, "", evs[..1].to_vec());
    let started_at = early.started_at;
    s.save_run(Arc::new(early)).await.unwrap();
    let done = Transcript { started_at, ..transcript(&run, &ses, RunState::Completed, "sunny", evs) };
    s.save_run(Arc::new(done.clone())).await.unwrap();
    let got = s.get_run(SessionKey::of_user("ulla", &ses), &run).await.unwrap().expect("the run is saved");
    assert_eq!(*got, done, "the latest save, with its events");
    assert!(s.get_run(SessionKey::of_user("ulla", &ses), "run_missing").await.unwrap().is_none());

    let later = format!("{run}_z");
    let other = transcript(&later, &ses, RunState::Failed, "no", Vec::new());
    s.save_run(Arc::new(other.clone())).await.unwrap();
    let runs = s.list_runs(SessionKey::of_user("ulla", &ses)).await.unwrap();
    assert_eq!(runs, vec![done.summary(), other.summary()], "one line per run, oldest first");
}

/// One session id under two users and under none names three sessions: none of them sees another's
/// metadata, history or runs, and closing one leaves the others open.
async fn sessions_are_scoped_by_user(b: &Backend) {
    let (run, ses, user) = ids("scoped");
    let other = format!("{user}_other");
    let s = &b.sessions;
    let (mine, theirs, nobody) =
        (SessionKey::of_user(&user, &ses), SessionKey::of_user(&other, &ses), SessionKey::new(&ses));
    let opened = s
        .open_session(&SessionRecord {
            id: ses.clone(),
            user_id: Some(user.clone()),
            metadata: obj(json!({"secret": "mine"})),
            ..SessionRecord::default()
        })
        .await
        .unwrap();
    assert_eq!(opened.user_id.as_deref(), Some(user.as_str()));
    s.append_history(mine, &run, &[Message::user("my secret")]).await.unwrap();
    let t = Transcript { user_id: Some(user.clone()), ..transcript(&run, &ses, RunState::Completed, "ok", Vec::new()) };
    s.save_run(Arc::new(t.clone())).await.unwrap();

    for key in [theirs, nobody] {
        assert!(s.get_session(key).await.unwrap().is_none(), "{key:?} sees the session");
        assert!(s.history(key).await.unwrap().is_empty(), "{key:?} sees the history");
        assert!(s.get_run(key, &run).await.unwrap().is_none(), "{key:?} sees the run");
        assert!(s.list_runs(key).await.unwrap().is_empty(), "{key:?} lists the run");
    }
    // The other user's session of the same id is a session of its own.
    s.open_session(&SessionRecord { id: ses.clone(), user_id: Some(other.clone()), ..SessionRecord::default() })
        .await
        .unwrap();
    s.append_history(theirs, &format!("{run}_b"), &[Message::user("their words")]).await.unwrap();
    assert_eq!(s.history(mine).await.unwrap(), vec![Message::user("my secret")]);
    assert_eq!(s.history(theirs).await.unwrap(), vec![Message::user("their words")]);
    assert!(s.get_session(theirs).await.unwrap().unwrap().metadata.is_empty(), "metadata stays with its user");
    assert_eq!(s.get_session(mine).await.unwrap().unwrap().metadata, obj(json!({"secret": "mine"})));
    assert_eq!(*s.get_run(mine, &run).await.unwrap().unwrap(), t);
    assert_eq!(s.list_runs(mine).await.unwrap(), vec![t.summary()]);
    s.close_session(theirs).await.unwrap();
    assert!(s.get_session(mine).await.unwrap().is_some());
}

/// A large prompt (stored once in a SQL store) reads back everywhere it appears: the record's
/// input and seeded message, `run.started`, the transcript's input and message, the history.
/// Returns the run and session, for stores that count their bytes.
async fn large_prompts_round_trip(b: &Backend) -> (String, String, usize) {
    let (run, ses, _) = ids("large");
    let prompt = "lorem \"ipsum\" \u{1F600}\n\u{0}loom:input\u{0} ".repeat(4_000);
    let input = RunInput::Prompt(prompt.clone());
    let mut rec = record(&run, &ses, Some("ulla"));
    rec.input = input.clone();
    rec.seeds = vec![Message::system("be brief"), Message::user(prompt.clone())];
    let mut started = event(&run, &ses, 0);
    started.kind = EventKind::RunStarted(Box::new(RunStarted {
        input: input.clone(),
        user_id: Some("ulla".into()),
        model: "gpt-test".into(),
        context: RunContext::default(),
    }));
    b.journal.begin(&rec, &long("a"), std::slice::from_ref(&started)).await.unwrap();
    let loaded = b.journal.load(&run).await.unwrap().unwrap();
    assert_eq!(loaded.record, rec);
    assert_eq!(loaded.events, vec![started.clone()]);

    let own = vec![Message::user(prompt.clone()), Message::assistant("ok")];
    let t = Transcript {
        input: input.clone(),
        messages: own.clone(),
        ..transcript(&run, &ses, RunState::Completed, "ok", vec![started.clone()])
    };
    b.sessions.save_finished_run(Arc::new(t.clone()), Some(&own)).await.unwrap();
    let key = SessionKey::of_user("ulla", &ses);
    let got = b.sessions.get_run(key, &run).await.unwrap().unwrap();
    assert_eq!(*got, t);
    assert_eq!(b.sessions.history(key).await.unwrap(), own);
    (run, ses, serde_json::to_string(&prompt).unwrap().len())
}

/// Two large prompts whose text already holds the stored-once token are stored as they are.
async fn large_prompt_check(b: &Backend) {
    large_prompts_round_trip(b).await;
}

// ---------------------------------------------------------------------------------------------
// Durable-store checks
// ---------------------------------------------------------------------------------------------

/// In a store that is both journal and session store, a journaled run's events come from the
/// journal only: saving its transcript before the final commit adds none (a resumed run would
/// otherwise find events past its last boundary and emit them twice).
async fn journaled_events_come_from_the_journal(b: &Backend) {
    let (run, ses, _) = ids("journaled");
    let a = long("a");
    let evs = events(&run, &ses, 0..3);
    b.journal.begin(&record(&run, &ses, Some("ulla")), &a, &evs[..1]).await.unwrap();
    let done = transcript(&run, &ses, RunState::Completed, "sunny", evs.clone());
    b.sessions.save_run(Arc::new(done)).await.unwrap();
    assert_eq!(b.journal.load(&run).await.unwrap().unwrap().events, evs[..1], "only the journal's events");
    b.journal.end(&run, &a, RunState::Completed, &evs[1..]).await.unwrap();
    assert_eq!(b.journal.load(&run).await.unwrap().unwrap().events, evs);
    assert_eq!(*b.sessions.get_run(SessionKey::of_user("ulla", &ses), &run).await.unwrap().unwrap().events, evs[..]);
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) {
    match result {
        Err(Error::Corrupt(_)) => {}
        other => panic!("{what}: expected Corrupt, got {other:?}"),
    }
}

/// Runs and sessions for [`corrupt_data_is_an_error`], before the garbage is written.
struct Victims {
    record_run: String,
    event_run: String,
    state_session: String,
    transcript_run: String,
    session: String,
}

async fn prepare_victims(b: &Backend) -> Victims {
    let (record_run, ses, _) = ids("corrupt_record");
    let (event_run, _, _) = ids("corrupt_event");
    let (transcript_run, _, _) = ids("corrupt_transcript");
    let state_session = format!("{ses}_state");
    let a = long("a");
    b.journal.begin(&record(&record_run, &ses, None), &a, &[]).await.unwrap();
    b.journal.begin(&record(&event_run, &state_session, None), &a, &events(&event_run, &ses, 0..2)).await.unwrap();
    let t = transcript(&transcript_run, &ses, RunState::Completed, "x", Vec::new());
    b.sessions.save_run(Arc::new(t)).await.unwrap();
    b.sessions.open_session(&SessionRecord { id: ses.clone(), ..SessionRecord::default() }).await.unwrap();
    b.sessions.append_history(SessionKey::new(&ses), &record_run, &[Message::user("hi")]).await.unwrap();
    Victims { record_run, event_run, state_session, transcript_run, session: ses }
}

/// The SQL that spoils the victims (the same statements run on SQLite and PostgreSQL).
fn spoil_sql(v: &Victims) -> Vec<String> {
    vec![
        format!("UPDATE loom_runs SET record = '{{not json' WHERE run_id = '{}'", v.record_run),
        format!("UPDATE loom_events SET event = 'garbage' WHERE run_id = '{}' AND seq = 1", v.event_run),
        format!("UPDATE loom_runs SET state = 'exploded' WHERE run_id = '{}'", v.event_run),
        format!("UPDATE loom_runs SET transcript = '[1, 2' WHERE run_id = '{}'", v.transcript_run),
        format!("UPDATE loom_sessions SET metadata = 'nope' WHERE id = '{}'", v.session),
        format!("UPDATE loom_history SET message = '{{}}' WHERE session_id = '{}'", v.session),
    ]
}

async fn check_victims(b: &Backend, v: &Victims) {
    assert_corrupt(b.journal.load(&v.record_run).await, "load with a bad record");
    assert_corrupt(b.journal.load(&v.event_run).await, "load with a bad event or state");
    assert_corrupt(
        b.journal.list(&RunFilter { session_id: Some(v.state_session.clone()), ..RunFilter::default() }).await,
        "list with a bad state",
    );
    assert_corrupt(
        b.sessions.get_run(SessionKey::of_user("ulla", &v.session), &v.transcript_run).await,
        "get_run with a bad transcript",
    );
    assert_corrupt(b.sessions.get_session(SessionKey::new(&v.session)).await, "get_session with bad metadata");
    assert_corrupt(b.sessions.history(SessionKey::new(&v.session)).await, "history with a bad message");
}

/// A version-1 database (sessions keyed by id alone) where users `ann` and `bob` shared the session
/// `shared`, and `solo` had runs of no user: rows for both SQL backends (SQLite and PostgreSQL
/// accept the same statements).
fn v1_rows() -> Vec<String> {
    let msg = |text: &str| serde_json::to_string(&Message::user(text)).unwrap();
    let mut sql = vec![
        "INSERT INTO loom_sessions (id, metadata, extensions, updated_at) VALUES ('shared', '{\"m\":1}', '{}', 0)"
            .into(),
        "INSERT INTO loom_sessions (id, metadata, extensions, updated_at) VALUES ('solo', '{}', '{}', 0)".into(),
    ];
    for (run, session, user) in [("r1", "shared", "'ann'"), ("r2", "shared", "'bob'"), ("r3", "solo", "NULL")] {
        sql.push(format!(
            "INSERT INTO loom_runs (run_id, session_id, user_id, state, started_at) VALUES ('{run}', '{session}', {user}, 'completed', 0)"
        ));
        sql.push(format!(
            "INSERT INTO loom_history (session_id, run_id, idx, message) VALUES ('{session}', '{run}', 0, '{}')",
            msg(run)
        ));
    }
    sql
}

/// After the upgrade, each user holds only the history of their own runs.
async fn check_v1_upgrade(s: &dyn SessionStore) {
    assert_eq!(s.history(SessionKey::of_user("ann", "shared")).await.unwrap(), vec![Message::user("r1")]);
    assert_eq!(s.history(SessionKey::of_user("bob", "shared")).await.unwrap(), vec![Message::user("r2")]);
    assert!(s.history(SessionKey::new("shared")).await.unwrap().is_empty(), "no user inherits the shared history");
    assert!(s.get_session(SessionKey::new("shared")).await.unwrap().is_none());
    let ann = s.get_session(SessionKey::of_user("ann", "shared")).await.unwrap().expect("ann's session");
    assert_eq!(ann.metadata, obj(json!({"m": 1})));
    assert_eq!(s.history(SessionKey::new("solo")).await.unwrap(), vec![Message::user("r3")]);
    assert!(s.get_session(SessionKey::new("solo")).await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// The suites
// ---------------------------------------------------------------------------------------------

/// Declares one `#[tokio::test]` per check for a backend built by `$make` (an async block that
/// yields `Option<Backend>`; `None` skips).
macro_rules! suite {
    ($make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(backend) = $make.await else { return };
                super::$check(&backend).await;
            }
        )*
    };
}

mod memory {
    use super::Backend;

    suite!(async { Some(Backend::memory()) };
        begin_then_load, entries_round_trip, events_are_not_duplicated, second_begin_fails,
        foreign_lease_is_lost, lease_held_until_it_expires, one_of_many_acquirers_wins,
        concurrent_writers_get_distinct_seqs, concurrent_appends_and_decisions_get_distinct_seqs, terminal_end_finishes, suspended_end_waits, list_filters,
        unknown_runs, a_stale_writer_is_fenced, acquire_increments_the_fence,
        begin_keeps_the_lease_fence, concurrent_takeovers_fence_each_other, prune_deletes_finished_runs,
        // The in-memory session store, held to the same session checks.
        sessions_merge, history_is_idempotent_per_run, save_run_replaces, sessions_are_scoped_by_user,
        large_prompt_check, final_commit_is_one_step, final_commit_needs_the_lease, check_lease_writes_nothing,
        begin_opens_the_session, lock_and_open_is_one_step,
        append_all_keeps_order_and_events, append_all_is_fenced, concurrent_batches_get_distinct_seqs,
    );
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    suite!(async { Some(Backend::sqlite()) };
        begin_then_load, entries_round_trip, events_are_not_duplicated, second_begin_fails,
        foreign_lease_is_lost, lease_held_until_it_expires, one_of_many_acquirers_wins,
        concurrent_writers_get_distinct_seqs, concurrent_appends_and_decisions_get_distinct_seqs, terminal_end_finishes, suspended_end_waits, list_filters,
        unknown_runs, sessions_merge, history_is_idempotent_per_run, save_run_replaces,
        sessions_are_scoped_by_user, journaled_events_come_from_the_journal, session_lock_rule,
        large_prompt_check, a_stale_writer_is_fenced, acquire_increments_the_fence,
        begin_keeps_the_lease_fence, concurrent_takeovers_fence_each_other,
        prune_deletes_finished_runs, queued_runs_are_claimed_once, final_commit_is_one_step,
        final_commit_needs_the_lease, check_lease_writes_nothing,
        begin_opens_the_session, lock_and_open_is_one_step,
        append_all_keeps_order_and_events, append_all_is_fenced, concurrent_batches_get_distinct_seqs,
        suspended_runs_are_queued_for_resume,
    );

    /// A 10 MB prompt is not stored seven times over: every row that holds it refers to the run's
    /// `input` column instead.
    #[tokio::test]
    async fn a_large_prompt_is_stored_once() {
        let b = Backend::sqlite();
        let (prompt_run, _, literal) = large_prompts_round_trip(&b).await;
        let Db::Sqlite(path) = &b.db else { unreachable!() };
        let conn = rusqlite::Connection::open(path).unwrap();
        let stored: i64 = conn
            .query_row(
                "SELECT (SELECT SUM(LENGTH(input) + LENGTH(record) + COALESCE(LENGTH(transcript), 0))
                         FROM loom_runs WHERE run_id = ?1)
                      + (SELECT COALESCE(SUM(LENGTH(event)), 0) FROM loom_events WHERE run_id = ?1)
                      + (SELECT COALESCE(SUM(LENGTH(message)), 0) FROM loom_history WHERE run_id = ?1)",
                [&prompt_run],
                |r| r.get(0),
            )
            .unwrap();
        assert!((stored as usize) < literal + literal / 5, "{stored} bytes stored for a {literal}-byte prompt");
    }

    #[tokio::test]
    async fn corrupt_data_is_an_error() {
        let b = Backend::sqlite();
        let v = prepare_victims(&b).await;
        let Db::Sqlite(path) = &b.db else { unreachable!() };
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        for sql in spoil_sql(&v) {
            assert_eq!(conn.execute(&sql, []).unwrap(), 1, "{sql}");
        }
        drop(conn);
        check_victims(&b, &v).await;
    }

    #[tokio::test]
    async fn version_1_databases_are_split_by_user() {
        let path = temp_db();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE loom_sessions (
                id TEXT PRIMARY KEY, metadata TEXT NOT NULL, extensions TEXT NOT NULL,
                closed INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL);
             CREATE TABLE loom_history (
                id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, run_id TEXT NOT NULL,
                idx INTEGER NOT NULL, message TEXT NOT NULL, UNIQUE (session_id, run_id, idx));
             CREATE TABLE loom_runs (
                run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, user_id TEXT, state TEXT NOT NULL,
                finished INTEGER NOT NULL DEFAULT 0, input TEXT, record TEXT, transcript TEXT,
                started_at INTEGER NOT NULL, finished_at INTEGER, lease_owner TEXT, lease_expires INTEGER);
             CREATE TABLE loom_journal (
                run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, entry TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
             CREATE TABLE loom_events (
                run_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
             PRAGMA user_version = 1;",
        )
        .unwrap();
        for sql in v1_rows() {
            conn.execute(&sql, []).unwrap();
        }
        drop(conn);
        let store = loom_agent::store::SqliteStore::open(&path).unwrap();
        check_v1_upgrade(&store).await;
        drop(store);
        remove_db(&path);
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let path = temp_db();
        drop(loom_agent::store::SqliteStore::open(&path).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let result = loom_agent::store::SqliteStore::open(&path);
        remove_db(&path);
        match result {
            Err(Error::SchemaTooNew { found, supported }) => {
                assert_eq!(found, 99);
                assert!(supported < 99);
            }
            other => panic!("expected SchemaTooNew, got {other:?}"),
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use loom_agent::store::PostgresStore;
    use tokio_postgres::{Client, NoTls};

    suite!(Backend::postgres();
        a_stale_writer_is_fenced, acquire_increments_the_fence, begin_keeps_the_lease_fence,
        concurrent_takeovers_fence_each_other, prune_deletes_finished_runs, queued_runs_are_claimed_once,
        suspended_runs_are_queued_for_resume, begin_then_load, entries_round_trip, events_are_not_duplicated, second_begin_fails,
        foreign_lease_is_lost, lease_held_until_it_expires, one_of_many_acquirers_wins,
        concurrent_writers_get_distinct_seqs, concurrent_appends_and_decisions_get_distinct_seqs, terminal_end_finishes, suspended_end_waits, list_filters,
        unknown_runs, sessions_merge, history_is_idempotent_per_run, save_run_replaces,
        sessions_are_scoped_by_user, journaled_events_come_from_the_journal, session_lock_rule,
        large_prompt_check, final_commit_is_one_step, final_commit_needs_the_lease, check_lease_writes_nothing,
        begin_opens_the_session, lock_and_open_is_one_step,
        append_all_keeps_order_and_events, append_all_is_fenced, concurrent_batches_get_distinct_seqs,
    );

    async fn raw_client(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// `url` with its `search_path` set to `schema`.
    fn with_schema(url: &str, schema: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-csearch_path%3D{schema}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn corrupt_data_is_an_error() {
        let Some(url) = postgres_url() else { return };
        // In a schema of its own: the garbage must not reach the other tests' listings.
        let schema = format!("loom_conformance_{}", unique());
        let client = raw_client(&url).await;
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let scoped = with_schema(&url, &schema);
        let check = tokio::spawn(async move {
            let store = Arc::new(PostgresStore::connect(&scoped).await.unwrap());
            let b = Backend { db: Db::Postgres(scoped.clone()), journal: store.clone(), sessions: store };
            let v = prepare_victims(&b).await;
            let client = raw_client(&scoped).await;
            for sql in spoil_sql(&v) {
                assert_eq!(client.execute(sql.as_str(), &[]).await.unwrap(), 1, "{sql}");
            }
            check_victims(&b, &v).await;
        })
        .await;
        client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
        if let Err(e) = check {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn version_1_databases_are_split_by_user() {
        let Some(url) = postgres_url() else { return };
        let schema = format!("loom_conformance_{}", unique());
        let client = raw_client(&url).await;
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let scoped = with_schema(&url, &schema);
        let check = tokio::spawn(async move {
            let v1 = raw_client(&scoped).await;
            v1.batch_execute(
                "CREATE TABLE loom_schema_version (version BIGINT NOT NULL, applied_at BIGINT NOT NULL);
                 INSERT INTO loom_schema_version VALUES (1, 0);
                 CREATE TABLE loom_sessions (
                    id TEXT PRIMARY KEY, metadata TEXT NOT NULL, extensions TEXT NOT NULL,
                    closed BOOLEAN NOT NULL DEFAULT FALSE, updated_at BIGINT NOT NULL);
                 CREATE TABLE loom_history (
                    id BIGSERIAL PRIMARY KEY, session_id TEXT NOT NULL, run_id TEXT NOT NULL,
                    idx BIGINT NOT NULL, message TEXT NOT NULL, UNIQUE (session_id, run_id, idx));
                 CREATE INDEX loom_history_by_session ON loom_history (session_id, id);
                 CREATE TABLE loom_runs (
                    run_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, user_id TEXT, state TEXT NOT NULL,
                    finished BOOLEAN NOT NULL DEFAULT FALSE, input TEXT, record TEXT, transcript TEXT,
                    started_at BIGINT NOT NULL, finished_at BIGINT, lease_owner TEXT, lease_expires BIGINT);
                 CREATE TABLE loom_journal (
                    run_id TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, entry TEXT NOT NULL,
                    PRIMARY KEY (run_id, seq));
                 CREATE TABLE loom_events (
                    run_id TEXT NOT NULL, seq BIGINT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (run_id, seq));",
            )
            .await
            .unwrap();
            for sql in v1_rows() {
                v1.execute(sql.as_str(), &[]).await.unwrap();
            }
            let store = PostgresStore::connect(&scoped).await.unwrap();
            check_v1_upgrade(&store).await;
        })
        .await;
        client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
        if let Err(e) = check {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn newer_schema_is_refused() {
        let Some(url) = postgres_url() else { return };
        let schema = format!("loom_conformance_{}", unique());
        let client = raw_client(&url).await;
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let scoped = with_schema(&url, &schema);
        let result = async {
            // A fresh schema is created in the scoped search path.
            let store = PostgresStore::connect(&scoped).await?;
            let (run, ses, _) = ids("schema");
            store.begin(&record(&run, &ses, None), &long("a"), &[]).await?;
            let found = client
                .query_one(&format!("SELECT COUNT(*) FROM {schema}.loom_runs"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0);
            assert_eq!(found, 1, "the store wrote into the scoped schema");
            client
                .batch_execute(&format!(
                    "INSERT INTO {schema}.loom_schema_version (version, applied_at) VALUES (99, 0)"
                ))
                .await
                .unwrap();
            let lazy = PostgresStore::new(&scoped)?;
            let first_use = lazy.load(&run).await.map(|_| ());
            let eager = PostgresStore::connect(&scoped).await.map(|_| ());
            Ok::<_, Error>((first_use, eager))
        }
        .await;
        client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
        let (first_use, eager) = result.unwrap();
        for (what, result) in [("first use", first_use), ("connect", eager)] {
            match result {
                Err(Error::SchemaTooNew { found, supported }) => {
                    assert_eq!(found, 99, "{what}");
                    assert!(supported < 99, "{what}");
                }
                other => panic!("{what}: expected SchemaTooNew, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn new_checks_the_url_without_connecting() {
        // Nothing listens on port 1: `new` must still succeed, and the first call must fail cleanly.
        let store = PostgresStore::new("postgres://loom:hunter2-secret@127.0.0.1:1/loom?connect_timeout=2").unwrap();
        let debug = format!("{store:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        match store.load("run_x").await {
            Err(Error::Store(msg)) => assert!(!msg.contains("hunter2-secret"), "{msg}"),
            other => panic!("expected a Store error, got {other:?}"),
        }
        match PostgresStore::new("postgres://loom:hunter2-secret@127.0.0.1:notaport/loom") {
            Err(Error::Config(msg)) => assert!(!msg.contains("hunter2-secret"), "{msg}"),
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_journal_accepts_postgres_urls() {
        let Some(url) = postgres_url() else { return };
        let slot = loom_agent::store::open_journal(&url).unwrap();
        let sessions = slot.session_store.expect("a postgres journal brings its session store");
        let (run, ses, _) = ids("slot");
        slot.journal.begin(&record(&run, &ses, None), &long("a"), &[]).await.unwrap();
        assert!(slot.journal.load(&run).await.unwrap().is_some());
        assert!(sessions.get_session(SessionKey::new(&ses)).await.unwrap().is_none());
    }
}
