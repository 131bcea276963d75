//! Sessions belong to users: the same session id from two users names two conversations, and no
//! history, run, transcript or event crosses from one user to another, whatever the store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use common::*;
use loom_agent::message::Message;
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::{SessionKey, SessionStore, SqliteStore};
use loom_agent::{Agent, EventKind, RunErrorKind, RunRequest, RunState, SessionConfig};
use proptest::prelude::*;

/// A model that answers with every user message it was sent, joined by `|`: a run's output is
/// exactly the conversation it saw.
fn witness() -> FnModel {
    FnModel::new("witness", |req| {
        let seen: Vec<String> = req
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::User { .. } => Some(m.text()),
                _ => None,
            })
            .collect();
        ScriptedTurn::text(seen.join("|"))
    })
}

fn agent_with(store: impl SessionStore) -> Agent {
    Agent::builder().model(witness()).session_store(store).build().unwrap()
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn temp_db(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "loom-tenancy-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("loom.db")
}

#[tokio::test]
async fn the_same_session_id_from_two_users_is_two_conversations() {
    let agent = agent_with(SharedStore::default());
    let alice = agent.run(RunRequest::new("alice: my PIN is 4711").session("chat").user("alice")).await.unwrap();
    let bob = agent.run(RunRequest::new("bob: what is the PIN?").session("chat").user("bob")).await.unwrap();
    assert_eq!(bob.output, "bob: what is the PIN?", "bob's model call saw alice's conversation");
    let alice2 = agent.run(RunRequest::new("alice: again").session("chat").user("alice")).await.unwrap();
    assert_eq!(alice2.output, "alice: my PIN is 4711|alice: again");

    // Run lookups through a session are scoped the same way.
    let bobs = agent.session(SessionConfig::new("chat").user("bob"));
    assert!(bobs.get_run(&alice.run_id).await.unwrap().is_none(), "bob reads alice's run");
    let listed: Vec<String> = bobs.list_runs().await.unwrap().into_iter().map(|r| r.run_id).collect();
    assert_eq!(listed, vec![bob.run_id.clone()]);
    let nobody = agent.session(SessionConfig::new("chat"));
    assert!(nobody.get_run(&alice.run_id).await.unwrap().is_none());
    assert!(nobody.list_runs().await.unwrap().is_empty());
    let alices = agent.session(SessionConfig::new("chat").user("alice"));
    assert_eq!(alices.list_runs().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_run_for_another_user_cannot_join_a_session() {
    let agent = agent_with(SharedStore::default());
    agent.run(RunRequest::new("secret").session("chat").user("alice")).await.unwrap();
    let alices = agent.session(SessionConfig::new("chat").user("alice"));
    let result = alices.start(RunRequest::new("let me in").user("mallory")).result().await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Config);
    assert!(error.message.contains("belongs to user `alice`"), "{}", error.message);
    assert!(!result.output.contains("secret"));
    // A session of no user takes no user's runs either.
    let open = agent.session(SessionConfig::new("lobby"));
    let result = open.start(RunRequest::new("hi").user("alice")).result().await;
    assert_eq!(result.state, RunState::Failed);
    // A run without a user on a user's session acts for the session's user.
    let own = alices.run(RunRequest::new("and now?")).await.unwrap();
    assert_eq!(own.user_id.as_deref(), Some("alice"));
    assert_eq!(own.output, "secret|and now?");
    // An empty user id is refused, not read as "no user".
    let result = agent.start(RunRequest::new("hi").session("chat").user("")).result().await;
    assert_eq!(result.state, RunState::Failed);
}

#[tokio::test]
async fn sqlite_sessions_are_scoped_by_user_across_agents() {
    let db = temp_db("sqlite");
    let first = agent_with(SqliteStore::open(&db).unwrap());
    first.run(RunRequest::new("alice's words").session("s").user("alice")).await.unwrap();
    drop(first);
    // Another process (here: another agent on the same file) sees the same separation.
    let second = agent_with(SqliteStore::open(&db).unwrap());
    let bob = second.run(RunRequest::new("bob asks").session("s").user("bob")).await.unwrap();
    assert_eq!(bob.output, "bob asks");
    let alice = second.run(RunRequest::new("alice asks").session("s").user("alice")).await.unwrap();
    assert_eq!(alice.output, "alice's words|alice asks");
    std::fs::remove_dir_all(db.parent().unwrap()).ok();
}

const USERS: [Option<&str>; 3] = [None, Some("ann"), Some("bob")];
const SESSIONS: [&str; 2] = ["s0", "s1"];

/// Runs `plan` (each: user index, session index) on `agent`, all started at once, and checks that
/// no history, run, transcript or event crossed from one (user, session) to another.
async fn check_isolation(agent: &Agent, plan: &[(usize, usize)]) {
    let mut runs = Vec::new();
    for (i, &(u, s)) in plan.iter().enumerate() {
        let prompt = format!("u{u}s{s}#{i}");
        let mut request = RunRequest::new(prompt.clone()).session(SESSIONS[s]);
        if let Some(user) = USERS[u] {
            request = request.user(user);
        }
        runs.push(((u, s), prompt, agent.start(request)));
    }
    let mut seen_by_key: HashMap<(usize, usize), Vec<String>> = HashMap::new();
    let mut ids_by_key: HashMap<(usize, usize), Vec<String>> = HashMap::new();
    for (key, prompt, run) in &runs {
        let result = within(20, "run", run.result()).await;
        assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
        let own = seen_by_key.entry(*key).or_default();
        own.push(prompt.clone());
        // The run saw its own (user, session)'s earlier prompts and nothing else, in order.
        assert_eq!(result.output, own.join("|"), "run {prompt}");
        assert_eq!(result.user_id.as_deref(), USERS[key.0]);
        for event in result.events.iter() {
            assert_eq!(&*event.session_id, SESSIONS[key.1]);
            assert_eq!(&*event.run_id, result.run_id.as_str());
            if let EventKind::RunStarted(started) = &event.kind {
                assert_eq!(started.user_id.as_deref(), USERS[key.0]);
            }
        }
        ids_by_key.entry(*key).or_default().push(result.run_id.clone());
    }
    for (u, user) in USERS.iter().enumerate() {
        for (s, session) in SESSIONS.iter().enumerate() {
            let config = SessionConfig {
                id: Some(session.to_string()),
                user_id: user.map(str::to_string),
                ..Default::default()
            };
            let handle = agent.session(config);
            let mine = ids_by_key.get(&(u, s)).cloned().unwrap_or_default();
            let listed: Vec<String> = handle.list_runs().await.unwrap().into_iter().map(|r| r.run_id).collect();
            assert_eq!(listed, mine, "{user:?}/{session} lists exactly its runs");
            for (key, ids) in &ids_by_key {
                for id in ids {
                    let found = handle.get_run(id).await.unwrap();
                    assert_eq!(found.is_some(), *key == (u, s), "{user:?}/{session} reading run {id} of {key:?}");
                }
            }
            let history = agent.session_store().history(SessionKey::scoped(*user, session)).await.unwrap();
            let expected: Vec<String> = seen_by_key.get(&(u, s)).cloned().unwrap_or_default();
            let prompts: Vec<String> =
                history.iter().filter(|m| matches!(m, Message::User { .. })).map(|m| m.text()).collect();
            assert_eq!(prompts, expected, "history of {user:?}/{session}");
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_history_run_or_event_crosses_users_in_memory(plan in proptest::collection::vec((0..3usize, 0..2usize), 1..16)) {
        runtime().block_on(check_isolation(&agent_with(SharedStore::default()), &plan));
    }

    #[test]
    fn no_history_run_or_event_crosses_users_in_sqlite(plan in proptest::collection::vec((0..3usize, 0..2usize), 1..12)) {
        let db = temp_db("props");
        runtime().block_on(check_isolation(&agent_with(SqliteStore::open(&db).unwrap()), &plan));
        std::fs::remove_dir_all(db.parent().unwrap()).ok();
    }
}

/// Two processes (here: two agents, each with its own in-process session registry, on one SQLite
/// file) run in one session one after the other, each seeing the other's earlier run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_runs_are_serialized_across_processes() {
    let db = temp_db("lock");
    let gate = GateModel::new();
    gate.gate("first");
    let (gate, gated) = share(gate);
    let first = Agent::builder().model(gated).session_store(SqliteStore::open(&db).unwrap()).build().unwrap();
    let second = agent_with(SqliteStore::open(&db).unwrap());

    let a = first.start(RunRequest::new("first").session("shared").user("ann"));
    wait_for(&a, "model.request").await;
    let b = second.start(RunRequest::new("second").session("shared").user("ann"));
    // B waits for A's run, though its own process knows nothing of it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(b.state(), RunState::Queued, "{:?}", types(&b.transcript().events));
    gate.open("first");
    assert_eq!(within(10, "a", a.result()).await.state, RunState::Completed);
    let b = within(10, "b", b.result()).await;
    assert_eq!(b.state, RunState::Completed, "{:?}", b.error);
    assert_eq!(b.output, "first|second", "the second run saw the first one's turn");
    std::fs::remove_dir_all(db.parent().unwrap()).ok();
}
