//! The SQLite store's upkeep: the statements a run uses are prepared once per connection,
//! whatever values are bound to them (none is parsed and planned again at the next use: SQLite's
//! query planner stability guarantee, see `plans_ignore_bound_values`), and the WAL stays bounded
//! under writes that never pause.

use loom_core::journal::{Journal, RunFilter};
use rusqlite::StatementStatus;

use super::journal::LIST_RUNS;
use super::sessions::HISTORY;
use super::signals::pending_sql;
use super::{SqliteStore, Synchronous, db};
use crate::message::Message;
use crate::signal::SignalStore;
use crate::store::{SessionKey, SessionStore};

/// How often `sql`'s cached statement ran and was prepared again since the store opened.
async fn runs_and_reprepares(store: &SqliteStore, sql: String) -> (i32, i32) {
    store
        .call(move |conn| {
            let statement = conn.prepare_cached(&sql).map_err(db)?;
            Ok((statement.get_status(StatementStatus::Run), statement.get_status(StatementStatus::RePrepare)))
        })
        .await
        .expect("statement status")
}

#[tokio::test]
async fn a_runs_reads_are_planned_once_whatever_is_bound() {
    let dir = std::env::temp_dir().join(format!("loom-plan-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let store = SqliteStore::open_with(dir.join("plans.db"), Synchronous::Normal).expect("store");
    let owners = [None, Some("ada"), Some("bob")];
    for (i, owner) in owners.iter().enumerate() {
        let session = format!("s{i}");
        let key = SessionKey { user_id: *owner, session_id: &session };
        store.append_history(key, &format!("run_{i}"), &[Message::user(format!("hello {i}"))]).await.expect("history");
    }
    for round in 0..2 {
        for (i, owner) in owners.iter().enumerate() {
            let session = format!("s{i}");
            let key = SessionKey { user_id: *owner, session_id: &session };
            assert_eq!(store.history(key).await.expect("history").len(), 1);
            assert!(store.pending(key, 1_000 + round).await.expect("pending").is_empty());
            let filter = RunFilter { user_id: owner.map(str::to_string), limit: i + 1, ..RunFilter::default() };
            assert!(store.list(&filter).await.expect("list").is_empty());
        }
    }
    for sql in [HISTORY.to_string(), pending_sql(), LIST_RUNS.to_string()] {
        let (runs, reprepares) = runs_and_reprepares(&store, sql.clone()).await;
        assert_eq!(runs, 6, "each read ran from the one cached statement: {sql}");
        assert_eq!(reprepares, 0, "prepared again after new values were bound: {sql}");
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under writes that never pause, the WAL still starts over once it passes `WAL_MAX_FRAMES`: it
/// grew without end before (each PASSIVE checkpoint copied every frame it saw, so no RESTART
/// followed, while new frames kept the log from ever being seen entirely copied).
#[tokio::test]
async fn the_wal_stays_bounded_under_continuous_writes() {
    let dir = std::env::temp_dir().join(format!("loom-wal-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let wal = dir.join("wal.db-wal");
    let store = SqliteStore::open_with(dir.join("wal.db"), Synchronous::Normal).expect("store");
    let frame = 4096 + 24;
    let max_frames = super::WAL_MAX_FRAMES as u64;
    // Each transaction writes at least five frames (the row's page and the four overflow pages of
    // its 20 KB message), so these transactions write at least ten times the frames past which
    // the log starts over: without the restart the log ends at twice the bound or more.
    let text = "x".repeat(20_000);
    let transactions = 2 * max_frames;
    let mut largest = 0;
    for i in 0..transactions {
        let session = format!("s{}", i % 50);
        let key = SessionKey { user_id: Some("ada"), session_id: &session };
        store.append_history(key, &format!("run_{i}"), &[Message::user(text.clone())]).await.expect("history");
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    // The log passes the restart point by what is written while a checkpoint comes round (every
    // 100 ms, later on a loaded machine): room for that, far under the unbounded log's size.
    let bound = 5 * max_frames * frame;
    assert!(largest <= bound, "the WAL reached {largest} bytes (bound {bound}) in {transactions} transactions");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
