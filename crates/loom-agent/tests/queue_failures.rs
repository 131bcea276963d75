//! Queued runs that can never start (an unreadable stored request, an input that does not parse)
//! end `failed` at their first claim, with a `run.failed` event that says why and a paired audit
//! start and end; they are not claimed again at every lease expiry, and they do not hold up the
//! runs queued behind them. On SQLite, and on PostgreSQL with `LOOM_TEST_POSTGRES_URL`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[cfg(feature = "postgres")]
mod signal_support;

use std::path::PathBuf;
use std::time::Duration;

use loom_agent::governance::{AuditEntry, FileAuditLog};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::{Lease, RunQueue};
use loom_agent::{Agent, QueueWorker, RunInput, RunState};
use serde_json::json;

const SECRET: &str = "queue-failures-secret-0123456789";

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-queue-failures-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn agent(journal: &str, audit: &std::path::Path) -> Agent {
    let model = FnModel::new("test-model", |_req| ScriptedTurn::text("done"));
    Agent::builder()
        .name("bot")
        .model(model)
        .journal(journal)
        .audit_log(FileAuditLog::open(audit, SECRET).unwrap())
        .build()
        .unwrap()
}

/// A queued run's request as `loom serve` stores it.
fn request(prompt: &str) -> serde_json::Value {
    loom_agent::queued_request(&RunInput::Prompt(prompt.into()), &Default::default(), &Default::default())
}

fn audit_actions(path: &std::path::Path, run_id: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| AuditEntry::from_json(serde_json::from_str(l).unwrap()).unwrap())
        .filter(|e| e.run_id == run_id)
        .map(|e| e.action)
        .collect()
}

/// Queues a good run, a run whose input does not parse, and a run whose stored request is then
/// made unreadable by `corrupt`, then runs a worker until all three finished.
async fn poisoned_runs_end_failed<F, Fut>(journal: &str, corrupt: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let audit = dir().join("audit.jsonl");
    let agent = agent(journal, &audit);
    let queue = agent.run_queue().unwrap();
    let unreadable = agent.enqueue("bot", None, Some("ann"), request("first")).await.unwrap();
    corrupt(unreadable.run_id.clone()).await;
    let bad_input = agent.enqueue("bot", None, Some("ann"), json!({"input": 42})).await.unwrap();
    let good = agent.enqueue("bot", None, Some("ann"), request("hello")).await.unwrap();

    let worker =
        QueueWorker::new([("bot".to_string(), agent.clone())]).unwrap().poll_interval(Duration::from_millis(10));
    let ids = [unreadable.run_id.clone(), bad_input.run_id.clone(), good.run_id.clone()];
    let watch = queue.clone();
    let all_finished = async move {
        for _ in 0..1_000 {
            let mut finished = 0;
            for id in &ids {
                if watch.status(id).await.unwrap().is_some_and(|s| s.finished) {
                    finished += 1;
                }
            }
            if finished == ids.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the queued runs did not all finish");
    };
    let report = common::within(30, "the worker", worker.run(all_finished)).await;
    assert_eq!(report.ended.get("failed"), Some(&2), "{report:?}");
    assert_eq!(report.ended.get("completed"), Some(&1), "{report:?}");

    for (run, why) in [(&unreadable, "unreadable"), (&bad_input, "does not parse")] {
        let status = queue.status(&run.run_id).await.unwrap().unwrap();
        assert_eq!((status.state, status.finished, status.lease_owner), (RunState::Failed, true, None));
        let events = queue.events_after(&run.run_id, None, 100).await.unwrap();
        let last = events.last().expect("an event");
        assert_eq!(last.type_name(), "run.failed");
        assert_eq!(last.seq, events.len() as u64 - 1);
        let payload = serde_json::to_value(last).unwrap()["payload"].clone();
        let message = payload["error"]["message"].as_str().unwrap();
        assert!(message.contains("cannot start") && message.contains(why), "{message}");
        assert_eq!(payload["error"]["kind"], "config", "{payload}");
        // One start and one end in the audit log, in order.
        assert_eq!(audit_actions(&audit, &run.run_id), ["run_started", "run_finished"]);
    }
    let good_status = queue.status(&good.run_id).await.unwrap().unwrap();
    assert_eq!(good_status.state, RunState::Completed);

    // Nothing is left to claim, even with every lease long expired.
    let later = Lease::new("another-worker", Duration::from_secs(30));
    assert!(queue.claim("bot", &later, 10).await.unwrap().is_empty());
}

/// `fail_claimed` writes nothing for a run another live claim holds, or one that finished.
async fn a_stale_claimer_cannot_fail_the_run(queue: &dyn RunQueue, agent: &Agent) {
    let run = agent.enqueue("bot", None, None, request("x")).await.unwrap();
    let first = Lease::new("worker-a", Duration::from_millis(1));
    let claimed = queue.claim("bot", &first, 1).await.unwrap();
    assert_eq!(claimed.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = Lease::new("worker-b", Duration::from_secs(30));
    let retaken = queue.claim("bot", &second, 1).await.unwrap();
    assert_eq!(retaken.len(), 1);
    let error = loom_agent::RunError::new(loom_agent::RunErrorKind::Config, "no");
    let stale = first.fenced(claimed[0].fence);
    assert!(!queue.fail_claimed(&run.run_id, &stale, &error).await.unwrap());
    let status = queue.status(&run.run_id).await.unwrap().unwrap();
    assert!(!status.finished);
    assert!(queue.events_after(&run.run_id, None, 10).await.unwrap().is_empty());
    // The live claimer can; then nobody can again.
    let live = second.fenced(retaken[0].fence);
    assert!(queue.fail_claimed(&run.run_id, &live, &error).await.unwrap());
    assert!(!queue.fail_claimed(&run.run_id, &live, &error).await.unwrap());
    assert_eq!(queue.events_after(&run.run_id, None, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_runs_that_cannot_start_end_failed_once() {
    let path = dir().join("loom.db");
    let url = format!("sqlite:{}", path.display());
    let db = path.clone();
    poisoned_runs_end_failed(&url, |run_id| async move {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n = conn.execute("UPDATE loom_runs SET request = '{\"input\": ' WHERE run_id = ?1", [&run_id]).unwrap();
        assert_eq!(n, 1);
    })
    .await;
    let agent = agent(&url, &dir().join("audit.jsonl"));
    a_stale_claimer_cannot_fail_the_run(agent.run_queue().unwrap().as_ref(), &agent).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_runs_that_cannot_start_end_failed_once() {
    let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL") else {
        eprintln!("skipped: LOOM_TEST_POSTGRES_URL is not set");
        return;
    };
    // A schema of its own: the agent names and queue of other tests stay apart.
    let scoped = signal_support::fresh_schema(&url).await;
    let (client, conn) = tokio_postgres::connect(&scoped, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let schema: String = client.query_one("SELECT current_schema()", &[]).await.unwrap().get(0);
    let target = format!("{schema}.loom_runs");
    poisoned_runs_end_failed(&scoped, |run_id| {
        let client = &client;
        async move {
            let n = client
                .execute(&format!("UPDATE {target} SET request = '{{\"input\": ' WHERE run_id = $1"), &[&run_id])
                .await
                .unwrap();
            assert_eq!(n, 1);
        }
    })
    .await;
    let agent = agent(&scoped, &dir().join("audit.jsonl"));
    a_stale_claimer_cannot_fail_the_run(agent.run_queue().unwrap().as_ref(), &agent).await;
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
