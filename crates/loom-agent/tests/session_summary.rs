//! The session summary (context management) in every session store: memory, SQLite and
//! PostgreSQL (with `LOOM_TEST_POSTGRES_URL` and the `postgres` feature; "skipped" otherwise).
//! Saved, replaced, scoped by user, and kept across reopening the store; an agent run on a store
//! with a summary starts from it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use loom_agent::message::Message;
use loom_agent::model::ScriptedTurn;
use loom_agent::store::{InMemorySessionStore, SessionKey, SessionRecord, SessionStore, SessionSummary, SqliteStore};
use loom_agent::{Agent, RunRequest, Runtime};

fn summary(text: &str, covers: usize) -> SessionSummary {
    SessionSummary { text: text.into(), covers, run_id: "run_1".into(), created_at: chrono::Utc::now() }
}

async fn conformance(store: Arc<dyn SessionStore>, id: &str) {
    let alice = SessionKey::of_user("alice", id);
    let bob = SessionKey::of_user("bob", id);
    store
        .open_session(&SessionRecord { id: id.into(), user_id: Some("alice".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(store.summary(alice).await.unwrap(), None);
    store.save_summary(alice, &summary("first", 4)).await.unwrap();
    store.save_summary(alice, &summary("second", 9)).await.unwrap();
    let got = store.summary(alice).await.unwrap().unwrap();
    assert_eq!((got.text.as_str(), got.covers), ("second", 9), "the newest replaces the older");
    assert_eq!(store.summary(bob).await.unwrap(), None, "another user's session of the same id has none");
    assert_eq!(store.summary(SessionKey::new(id)).await.unwrap(), None, "nor the session of no user");
}

#[tokio::test]
async fn in_memory() {
    conformance(Arc::new(InMemorySessionStore::new()), "mem").await;
}

#[tokio::test]
async fn sqlite_keeps_it_across_reopening() {
    let dir = std::env::temp_dir().join(format!("loom-summary-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("loom.db");
    conformance(Arc::new(SqliteStore::open(&path).unwrap()), "sq").await;
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.summary(SessionKey::of_user("alice", "sq")).await.unwrap().unwrap().text, "second");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_old_sqlite_database_is_migrated() {
    let dir = std::env::temp_dir().join(format!("loom-summary-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.db");
    drop(SqliteStore::open(&path).unwrap());
    // As a version-3 database: without the summaries table (v4) nor the signal tables (v5).
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE loom_session_summaries; DROP TABLE loom_signals; DROP TABLE loom_schedules;
         DROP TABLE loom_schedule_fires; PRAGMA user_version = 3;",
    )
    .unwrap();
    drop(conn);
    conformance(Arc::new(SqliteStore::open(&path).unwrap()), "old").await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL") else {
        eprintln!("skipped: LOOM_TEST_POSTGRES_URL not set");
        return;
    };
    // A schema of its own, so the migration under test starts from nothing.
    let schema = format!("loom_summary_{}", loom_agent::new_id("s").replace('-', "_").to_lowercase());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-csearch_path%3D{schema}");
    let store = Arc::new(loom_agent::store::PostgresStore::connect(&scoped).await.unwrap());
    conformance(store, "pg").await;
    let again = loom_agent::store::PostgresStore::connect(&scoped).await.unwrap();
    assert_eq!(again.summary(SessionKey::of_user("alice", "pg")).await.unwrap().unwrap().covers, 9);
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

#[tokio::test]
async fn a_run_starts_from_the_stored_summary_only_with_context_management() {
    let store = Arc::new(InMemorySessionStore::new());
    let key = SessionKey::new("s");
    store.open_session(&SessionRecord { id: "s".into(), ..Default::default() }).await.unwrap();
    let history = [Message::user("q1"), Message::assistant("a1"), Message::user("q2"), Message::assistant("a2")];
    store.append_history(key, "run_0", &history).await.unwrap();
    store.save_summary(key, &summary("the user asked q1; answered a1", 2)).await.unwrap();

    let (model, shared) = scripted([ScriptedTurn::text("a3")]);
    let agent = Agent::builder()
        .model(shared)
        .session_store(store.clone())
        .runtime(Runtime::long_running(Vec::<String>::new()))
        .build()
        .unwrap();
    agent.run(RunRequest::new("q3").session("s")).await.unwrap();
    let sent = &model.requests()[0].messages;
    assert_eq!(sent.len(), 4);
    assert!(sent[0].text().ends_with("\nthe user asked q1; answered a1"), "{:?}", sent[0]);
    assert_eq!(&sent[1..], &[Message::user("q2"), Message::assistant("a2"), Message::user("q3")]);
    assert_eq!(store.history(key).await.unwrap().len(), 6, "the history stays whole");

    // Without context management, the whole history is sent.
    let (model, shared) = scripted([ScriptedTurn::text("a4")]);
    let agent = Agent::builder().model(shared).session_store(store.clone()).build().unwrap();
    agent.run(RunRequest::new("q4").session("s")).await.unwrap();
    assert_eq!(model.requests()[0].messages.len(), 7);
}
