//! One conformance suite for every signal store: the same checks run against
//! `InMemorySignalStore`, `SqliteStore` and `PostgresStore` (the latter with the `postgres` feature
//! and `LOOM_TEST_POSTGRES_URL`; without them it prints "skipped"). Every check uses its own
//! session ids, so checks can share a database.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod signal_support;

use std::time::Duration;

use chrono::Utc;
use loom_agent::signal::{
    Attention, MissedPolicy, RuntimeSignal, Schedule, ScheduleRecord, SignalStatus, SignalStore, Urgency,
};
use loom_agent::store::SessionKey;
use signal_support::*;

fn now() -> i64 {
    Utc::now().timestamp_millis()
}

async fn append_and_dedupe(store: &dyn SignalStore, name: &str) {
    let sid = format!("s_{}", unique());
    let alice = SessionKey::of_user("alice", &sid);
    let bob = SessionKey::of_user("bob", &sid);
    let first = RuntimeSignal::new("one").dedupe_key("k1");
    assert!(store.append(alice, &first, None).await.unwrap(), "{name}");
    assert!(!store.append(alice, &RuntimeSignal::new("again").dedupe_key("k1"), None).await.unwrap(), "{name}");
    // The same signal id twice is a duplicate too.
    assert!(!store.append(alice, &first, None).await.unwrap(), "{name}");
    assert!(store.append(alice, &RuntimeSignal::new("two"), None).await.unwrap(), "{name}");
    assert!(store.append(alice, &RuntimeSignal::new("three"), None).await.unwrap(), "{name}");
    // Another user's session of the same id is another session: the key is free there.
    assert!(store.append(bob, &RuntimeSignal::new("bob's").dedupe_key("k1"), None).await.unwrap(), "{name}");
    let texts: Vec<String> = store.signals(alice).await.unwrap().into_iter().map(|r| r.signal.text).collect();
    assert_eq!(texts, ["one", "two", "three"], "{name}");
    let bobs = store.signals(bob).await.unwrap();
    assert_eq!(bobs.len(), 1, "{name}");
    assert_eq!(bobs[0].user_id.as_deref(), Some("bob"), "{name}");
    assert!(store.signals(SessionKey::new(&sid)).await.unwrap().is_empty(), "{name}: no user's session is empty");
    // The record round-trips every field.
    let full = RuntimeSignal::create("full", "ci", "build.failed", Urgency::Critical)
        .payload(serde_json::json!({"n": 1}))
        .dedupe_key("full");
    let key = SessionKey::new(&sid);
    store.append(key, &full, None).await.unwrap();
    let got = &store.signals(key).await.unwrap()[0];
    assert_eq!(got.signal.text, full.signal_text(), "{name}");
    assert_eq!(got.signal.kind, "build.failed", "{name}");
    assert_eq!(got.signal.urgency, Urgency::Critical, "{name}");
    assert_eq!(got.signal.payload, serde_json::json!({"n": 1}), "{name}");
    assert_eq!(got.signal.received_at.timestamp_millis(), full.received_at.timestamp_millis(), "{name}");
    assert_eq!(got.status, SignalStatus::Pending, "{name}");
}

trait Text {
    fn signal_text(&self) -> String;
}
impl Text for RuntimeSignal {
    fn signal_text(&self) -> String {
        self.text.clone()
    }
}

async fn claim_settle_observe(store: &dyn SignalStore, name: &str) {
    let sid = format!("s_{}", unique());
    let key = SessionKey::of_user("u", &sid);
    let a = RuntimeSignal::new("a");
    let b = RuntimeSignal::new("b");
    let c = RuntimeSignal::new("c");
    store.append(key, &a, None).await.unwrap();
    store.append(key, &b, None).await.unwrap();
    // Stored already claimed: not waiting.
    store.append(key, &c, Some(("me", now() + 60_000))).await.unwrap();
    let pending: Vec<String> = store.pending(key, now()).await.unwrap().into_iter().map(|r| r.signal.id).collect();
    assert_eq!(pending, [a.id.clone(), b.id.clone()], "{name}");
    assert!(store.pending_sessions(now()).await.unwrap().contains(&(Some("u".into()), sid.clone())), "{name}");
    // Exactly one claim wins.
    assert!(store.claim(key, &a.id, "p1", now() + 60_000).await.unwrap(), "{name}");
    assert!(!store.claim(key, &a.id, "p2", now() + 60_000).await.unwrap(), "{name}");
    // Another user's key cannot claim it.
    assert!(!store.claim(SessionKey::of_user("v", &sid), &b.id, "p2", now() + 60_000).await.unwrap(), "{name}");
    // An expired claim waits again.
    assert!(store.claim(key, &b.id, "p1", now() - 1).await.unwrap(), "{name}");
    let pending: Vec<String> = store.pending(key, now()).await.unwrap().into_iter().map(|r| r.signal.id).collect();
    assert_eq!(pending, vec![b.id.clone()], "{name}");
    assert!(store.claim(key, &b.id, "p2", now() + 60_000).await.unwrap(), "{name}");
    // Decisions.
    store.settle(key, &a.id, Attention::Run, Some("run_1")).await.unwrap();
    store.settle(key, &b.id, Attention::Observe, None).await.unwrap();
    store.settle(key, &c.id, Attention::Observe, None).await.unwrap();
    let all = store.signals(key).await.unwrap();
    assert_eq!(all[0].status, SignalStatus::Handled, "{name}");
    assert_eq!(all[0].attention, Some(Attention::Run), "{name}");
    assert_eq!(all[0].run_id.as_deref(), Some("run_1"), "{name}");
    assert!(all[0].handled_at.is_some(), "{name}");
    assert_eq!(all[1].status, SignalStatus::Observed, "{name}");
    assert!(store.pending(key, now()).await.unwrap().is_empty(), "{name}");
    // Observed signals go to one run, once, oldest first; another user's run gets none.
    assert!(store.take_observed(SessionKey::of_user("v", &sid), "run_x").await.unwrap().is_empty(), "{name}");
    let taken: Vec<String> =
        store.take_observed(key, "run_2").await.unwrap().into_iter().map(|r| r.signal.text).collect();
    assert_eq!(taken, ["b", "c"], "{name}");
    assert!(store.take_observed(key, "run_3").await.unwrap().is_empty(), "{name}");
    let all = store.signals(key).await.unwrap();
    assert!(all.iter().all(|r| r.status == SignalStatus::Handled), "{name}");
    assert_eq!(all[1].run_id.as_deref(), Some("run_2"), "{name}");
    assert!(store.settle(key, "sig_missing", Attention::Ignore, None).await.is_err(), "{name}");
}

/// A decision that starts no run is stored with the signal in one write: observed ones wait for
/// the next run, ignored ones are handled; duplicates and other users' keys behave as for append.
/// Waiting signals come back in the order they arrived, whatever their status: one claimed with
/// a lapsed claim after two pending ones comes last.
async fn pending_in_arrival_order(store: &dyn SignalStore, name: &str) {
    let sid = format!("s_{}", unique());
    let key = SessionKey::of_user("u", &sid);
    let (a, b, c) = (RuntimeSignal::new("a"), RuntimeSignal::new("b"), RuntimeSignal::new("c"));
    store.append(key, &a, None).await.unwrap();
    store.append(key, &b, None).await.unwrap();
    store.append(key, &c, Some(("gone", now() - 1))).await.unwrap();
    let pending: Vec<String> = store.pending(key, now()).await.unwrap().into_iter().map(|r| r.signal.id).collect();
    assert_eq!(pending, [a.id, b.id, c.id], "{name}");
}

async fn append_decided(store: &dyn SignalStore, name: &str) {
    let sid = format!("s_{}", unique());
    let key = SessionKey::of_user("u", &sid);
    let seen = RuntimeSignal::new("seen").dedupe_key("d");
    let dropped = RuntimeSignal::new("dropped");
    let until = now() + 60_000;
    assert!(store.append_decided(key, &seen, Attention::Observe, ("me", until)).await.unwrap(), "{name}");
    assert!(store.append_decided(key, &dropped, Attention::Ignore, ("me", until)).await.unwrap(), "{name}");
    let again = RuntimeSignal::new("again").dedupe_key("d");
    assert!(!store.append_decided(key, &again, Attention::Observe, ("me", until)).await.unwrap(), "{name}");
    assert!(!store.append(key, &again, None).await.unwrap(), "{name}: the dedupe key is taken");
    let other = SessionKey::of_user("v", &sid);
    assert!(store.append_decided(other, &again, Attention::Observe, ("me", until)).await.unwrap(), "{name}");
    let all = store.signals(key).await.unwrap();
    assert_eq!(all.len(), 2, "{name}");
    assert_eq!((all[0].status, all[0].attention), (SignalStatus::Observed, Some(Attention::Observe)), "{name}");
    assert_eq!(all[0].handled_at, None, "{name}");
    assert_eq!((all[1].status, all[1].attention), (SignalStatus::Handled, Some(Attention::Ignore)), "{name}");
    assert!(all[1].handled_at.is_some() && all[1].run_id.is_none(), "{name}");
    // Decided signals never wait for a decision; the observed one goes to the next run.
    assert!(store.pending(key, now() + 120_000).await.unwrap().is_empty(), "{name}");
    let taken: Vec<String> =
        store.take_observed(key, "run_1").await.unwrap().into_iter().map(|r| r.signal.text).collect();
    assert_eq!(taken, ["seen"], "{name}");
    assert_eq!(store.signals(other).await.unwrap().len(), 1, "{name}");
}

async fn schedules_and_leases(db: &Db, store: &dyn SignalStore, name: &str) {
    let sid = format!("s_{}", unique());
    let mut record = ScheduleRecord::new(Schedule::cron("0 9 * * MON-FRI"), &sid, "daily summary")
        .user("ana")
        .urgency(Urgency::High)
        .missed(MissedPolicy::RunOnce);
    record.next_at = Some(Utc::now());
    store.put_schedule(&record).await.unwrap();
    let every = ScheduleRecord::new(Schedule::every(Duration::from_secs(5)), &sid, "tick");
    store.put_schedule(&every).await.unwrap();
    let listed: Vec<ScheduleRecord> =
        store.schedules().await.unwrap().into_iter().filter(|s| s.session_id == sid).collect();
    assert_eq!(listed.len(), 2, "{name}");
    let got = listed.iter().find(|s| s.id == record.id).unwrap();
    assert_eq!(got.schedule, record.schedule, "{name}");
    assert_eq!(got.user_id.as_deref(), Some("ana"), "{name}");
    assert_eq!(got.missed, MissedPolicy::RunOnce, "{name}");
    assert_eq!(got.urgency, Urgency::High, "{name}");
    let next = Utc::now() + chrono::Duration::hours(1);
    store.advance_schedule(&record.id, Some(next)).await.unwrap();
    let got = store.schedules().await.unwrap().into_iter().find(|s| s.id == record.id).unwrap();
    assert_eq!(got.next_at.map(|t| t.timestamp_millis()), Some(next.timestamp_millis()), "{name}");
    store.advance_schedule(&record.id, None).await.unwrap();
    let got = store.schedules().await.unwrap().into_iter().find(|s| s.id == record.id).unwrap();
    assert_eq!(got.next_at, None, "{name}");
    // One lease per occurrence, across handles (processes) racing for it.
    let other = db.open().await;
    let at = now();
    let (x, y) =
        tokio::join!(store.claim_occurrence(&record.id, at, "p1"), other.claim_occurrence(&record.id, at, "p2"));
    assert!(x.unwrap() ^ y.unwrap(), "{name}: exactly one claim of the occurrence wins");
    assert!(!store.claim_occurrence(&record.id, at, "p1").await.unwrap(), "{name}");
    assert!(store.claim_occurrence(&record.id, at + 1, "p1").await.unwrap(), "{name}");
    assert!(store.remove_schedule(&record.id).await.unwrap(), "{name}");
    assert!(!store.remove_schedule(&record.id).await.unwrap(), "{name}");
    assert_eq!(store.schedules().await.unwrap().into_iter().filter(|s| s.session_id == sid).count(), 1, "{name}");
}

async fn survives_restart(db: &Db, name: &str) {
    let sid = format!("s_{}", unique());
    let key = SessionKey::of_user("u", &sid);
    {
        let store = db.open().await;
        store.append(key, &RuntimeSignal::new("kept").dedupe_key("d"), None).await.unwrap();
    }
    let store = db.open().await;
    let all = store.signals(key).await.unwrap();
    assert_eq!(all.len(), 1, "{name}");
    assert_eq!(all[0].status, SignalStatus::Pending, "{name}");
    assert!(!store.append(key, &RuntimeSignal::new("dup").dedupe_key("d"), None).await.unwrap(), "{name}");
}

#[tokio::test]
async fn every_store_conforms() {
    for db in backends().await {
        let name = db.name();
        let store = db.open().await;
        append_and_dedupe(store.as_ref(), name).await;
        claim_settle_observe(store.as_ref(), name).await;
        pending_in_arrival_order(store.as_ref(), name).await;
        append_decided(store.as_ref(), name).await;
        schedules_and_leases(&db, store.as_ref(), name).await;
        if !matches!(db, Db::Memory(_)) {
            survives_restart(&db, name).await;
        }
        eprintln!("{name}: ok");
    }
}

#[tokio::test]
async fn concurrent_claims_pick_one_winner() {
    for db in backends().await {
        let name = db.name();
        let sid = format!("s_{}", unique());
        let key = SessionKey::new(&sid);
        let a = db.open().await;
        let b = db.open().await;
        let mut ids = Vec::new();
        for i in 0..20 {
            let s = RuntimeSignal::new(format!("n{i}"));
            a.append(key, &s, None).await.unwrap();
            ids.push(s.id);
        }
        let mut wins = 0;
        for id in &ids {
            let (x, y) = tokio::join!(a.claim(key, id, "pa", now() + 60_000), b.claim(key, id, "pb", now() + 60_000));
            wins += usize::from(x.unwrap()) + usize::from(y.unwrap());
        }
        assert_eq!(wins, ids.len(), "{name}: each signal claimed exactly once");
    }
}
