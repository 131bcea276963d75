//! Schedules and the worker: occurrences fire as signals once each, even with two processes on
//! one database (two agents with their own store handles in one test; see the notes), missed
//! occurrences follow their policy, schedules survive restarts, and the worker handles signals
//! stored while no process was up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod signal_support;

use std::time::Duration;

use chrono::Utc;
use common::within;
use loom_agent::signal::{MissedPolicy, RuntimeSignal, Schedule, ScheduleRecord, SignalStatus, Urgency};
use loom_agent::store::SessionKey;
use loom_agent::{Agent, RunState, SessionConfig};
use signal_support::*;

fn echo(url: Option<&str>) -> Agent {
    let builder = Agent::builder().model("echo");
    match url {
        Some(url) => builder.journal(url).build().unwrap(),
        None => builder.build().unwrap(),
    }
}

#[tokio::test]
async fn an_invalid_schedule_is_refused() {
    let agent = echo(None);
    assert!(agent.schedule(Schedule::cron("every tuesday"), "s", "x").await.is_err());
    assert!(agent.schedule(Schedule::Every { every_ms: 0 }, "s", "x").await.is_err());
    let ok = agent.schedule(Schedule::cron("0 9 * * MON-FRI"), "s", "daily").await.unwrap();
    assert!(ok.next_at.unwrap() > Utc::now());
    assert_eq!(agent.schedules().await.unwrap().len(), 1);
    assert!(agent.remove_schedule(&ok.id).await.unwrap());
    assert!(agent.schedules().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_due_schedule_fires_once_and_moves_on() {
    let agent = echo(None);
    let at = Utc::now() - chrono::Duration::milliseconds(10);
    let once = agent.schedule(Schedule::once(at), "daily", "write the daily summary").await.unwrap();
    let report = within(10, "worker", agent.worker().run_until_idle()).await.unwrap();
    assert_eq!((report.fired, report.skipped), (1, 0));
    assert_eq!(report.runs.len(), 1);
    assert_eq!(report.runs[0].state, RunState::Completed);
    assert_eq!(report.runs[0].output, "Echo: [signal from schedule, schedule.fired, normal] write the daily summary");
    let stored = agent.schedules().await.unwrap();
    assert_eq!(stored[0].id, once.id);
    assert_eq!(stored[0].next_at, None, "a one-shot schedule is done");
    // Nothing more to do.
    let again = agent.worker().run_until_idle().await.unwrap();
    assert_eq!((again.fired, again.runs.len()), (0, 0));
}

#[tokio::test]
async fn missed_occurrences_follow_their_policy() {
    let agent = echo(None);
    let created = Utc::now() - chrono::Duration::hours(3);
    let every = Schedule::every(Duration::from_secs(600));
    for (session, missed) in [("skip", MissedPolicy::Skip), ("once", MissedPolicy::RunOnce)] {
        let mut record = ScheduleRecord::new(every.clone(), session, format!("catch up {session}")).missed(missed);
        // Stored three hours ago; no worker ran since.
        record.created_at = created;
        record.next_at = Some(created + chrono::Duration::minutes(10));
        agent.add_schedule(record).await.unwrap();
    }
    let report = agent.worker().grace(Duration::from_secs(60)).run_until_idle().await.unwrap();
    // Eighteen occurrences passed while no worker ran: "skip" drops them, "run once" fires one.
    assert_eq!((report.fired, report.skipped), (1, 1));
    assert_eq!(report.runs.len(), 1);
    assert!(report.runs[0].output.contains("catch up once"));
    for s in agent.schedules().await.unwrap() {
        assert!(s.next_at.unwrap() > Utc::now(), "both moved to their next occurrence");
    }
}

#[tokio::test]
async fn the_worker_handles_signals_stored_while_no_process_was_up() {
    let db = Db::Sqlite(temp_db());
    let url = db.url().unwrap();
    let store = db.open().await;
    let key = SessionKey::of_user("ana", "inbox");
    for i in 0..3 {
        store.append(key, &RuntimeSignal::new(format!("ticket {i}")), None).await.unwrap();
    }
    store.append(key, &RuntimeSignal::create("fyi", "cli", "note", Urgency::Low), None).await.unwrap();
    let agent = echo(Some(&url));
    let report = within(10, "worker", agent.worker().run_until_idle()).await.unwrap();
    assert_eq!(report.signals, 4);
    assert_eq!(report.runs.len(), 3);
    assert!(report.runs.iter().all(|r| r.state == RunState::Completed));
    let session = agent.session(SessionConfig::new("inbox").user("ana"));
    let all = session.signals().await.unwrap();
    // The note was observed, then handed to the next of those runs to start.
    assert_eq!(all[3].attention, Some(loom_agent::signal::Attention::Observe));
    assert!(all.iter().all(|s| s.status == SignalStatus::Handled));
    let runs: Vec<String> = report.runs.iter().map(|r| r.run_id.clone()).collect();
    assert!(runs.contains(all[3].run_id.as_ref().unwrap()));
    assert_eq!(session.list_runs().await.unwrap().len(), 3);
}

/// Two "processes" (two agents, each with its own store handle and lease owner) run workers on
/// one database at the same time: each occurrence fires exactly once. SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_exactly_once_across_two_processes() {
    for db in durable_backends().await {
        let name = db.name();
        let url = db.url().unwrap();
        let a = echo(Some(&url));
        let b = echo(Some(&url));
        let session = format!("report-{}", unique());
        // Three due occurrences of an interval schedule (the next one comes after the test), and
        // a one-shot.
        let mut record = ScheduleRecord::new(Schedule::every(Duration::from_secs(20)), &session, "tick");
        record.created_at = Utc::now() - chrono::Duration::seconds(70);
        record.next_at = Some(record.created_at + chrono::Duration::seconds(20));
        let record = a.add_schedule(record).await.unwrap();
        b.schedule(Schedule::once(Utc::now()), &session, "once").await.unwrap();
        let (wa, wb) = (a.worker(), b.worker());
        let (ra, rb) = tokio::join!(wa.run_until_idle(), wb.run_until_idle());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let fired = ra.fired + rb.fired;
        let runs: Vec<_> = ra.runs.iter().chain(&rb.runs).collect();
        // Every occurrence due by the end fired once: at least the three past ones and the
        // one-shot, never twice (the dedupe key and the lease row are per occurrence).
        let key = SessionKey::new(&session);
        let signals = a.signal_store().signals(key).await.unwrap();
        let mut keys: Vec<&str> = signals.iter().filter_map(|s| s.signal.dedupe_key.as_deref()).collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), total, "{name}: an occurrence fired twice");
        eprintln!(
            "{name}: a fired {} signals {} runs {}; b fired {} signals {} runs {}; stored {total}",
            ra.fired,
            ra.signals,
            ra.runs.len(),
            rb.fired,
            rb.signals,
            rb.runs.len()
        );
        assert_eq!(fired, total, "{name}");
        assert_eq!(fired, 4, "{name}: three interval occurrences and the one-shot");
        assert_eq!(runs.len(), fired, "{name}");
        assert!(runs.iter().all(|r| r.state == RunState::Completed), "{name}");
        // The schedule survives a restart: a third agent sees it.
        let c = echo(Some(&url));
        assert!(c.schedules().await.unwrap().iter().any(|s| s.id == record.id), "{name}");
        c.remove_schedule(&record.id).await.unwrap();
        eprintln!("{name}: ok ({fired} fired, {} by a, {} by b)", ra.fired, rb.fired);
    }
}
