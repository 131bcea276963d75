//! A schedule fires exactly once per occurrence across two `loom worker` processes on one
//! PostgreSQL database (issue 13): two real OS processes poll the same schedules for a few
//! seconds, racing for every occurrence (an interval schedule every second, and one-shot
//! schedules due before either started), then stop on SIGINT. Every occurrence becomes exactly one
//! lease row, one stored signal and one run, in one of the two processes.
//!
//! Needs `LOOM_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/loom_test`); skipped
//! without it. The test works in a schema of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

fn loom() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    for var in ["OPENAI_API_KEY", "OPENAI_BASE_URL", "LOOM_MODEL", "LOOM_JOURNAL", "RUST_LOG"] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

async fn run(args: &[&str]) -> Output {
    loom().args(args).output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Stops a worker as Ctrl-C would (it finishes its pass and prints what it did).
async fn interrupt(child: &Child) {
    let pid = child.id().expect("the worker is running");
    let status = Command::new("kill").args(["-INT", &pid.to_string()]).status().await.unwrap();
    assert!(status.success(), "kill -INT {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_fires_exactly_once_across_two_worker_processes() {
    let Some(database) = std::env::var("LOOM_TEST_POSTGRES_URL").ok().filter(|url| !url.is_empty()) else {
        println!("skipped: LOOM_TEST_POSTGRES_URL not set (e.g. postgres://postgres@127.0.0.1:5432/test)");
        return;
    };
    let schema = loom_agent::new_id("loom_sched").to_lowercase();
    let (client, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let separator = if database.contains('?') { '&' } else { '?' };
    let pg = format!("{database}{separator}options=-csearch_path%3D{schema}");

    // An interval schedule (every second), and five one-shots due before either worker starts,
    // which both workers find due on their first pass.
    let add = run(&["schedule", "add", "--journal", &pg, "--session", "ticks", "--every", "1s", "tick"]).await;
    assert_eq!(add.status.code(), Some(0), "{}", text(&add.stderr));
    let ticks = text(&add.stdout).trim().to_string();
    assert!(ticks.starts_with("sch_"), "{ticks}");
    let mut once = Vec::new();
    for i in 0..5 {
        let session = format!("once-{i}");
        let input = format!("once {i}");
        let args = ["schedule", "add", "--journal", &pg, "--session", &session, "--at", "2020-01-01T00:00:00Z"];
        let add = run(&[&args[..], &["--run-missed", &input]].concat()).await;
        assert_eq!(add.status.code(), Some(0), "{}", text(&add.stderr));
        once.push((session, input));
    }

    // Two worker processes on the same database, at the same time.
    let worker = || loom().args(["worker", "--journal", &pg, "--model", "echo", "--json"]).spawn().unwrap();
    let (a, b) = (worker(), worker());
    tokio::time::sleep(Duration::from_secs(7)).await;
    interrupt(&a).await;
    interrupt(&b).await;
    let (a, b) = (a.wait_with_output().await.unwrap(), b.wait_with_output().await.unwrap());
    for (name, out) in [("a", &a), ("b", &b)] {
        assert_eq!(out.status.code(), Some(0), "worker {name}: {}\n{}", text(&out.stdout), text(&out.stderr));
    }
    let runs: Vec<(&str, Value)> = [("a", &a), ("b", &b)]
        .into_iter()
        .flat_map(|(name, out)| {
            text(&out.stdout)
                .lines()
                .map(move |l| (name, serde_json::from_str::<Value>(l).unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    eprintln!("worker a: {}; worker b: {}", text(&a.stderr).trim(), text(&b.stderr).trim());
    assert!(runs.iter().all(|(_, r)| r["state"] == "completed"), "{runs:?}");
    let ids: HashSet<&str> = runs.iter().map(|(_, r)| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), runs.len(), "a run reported twice");
    let mut per_session: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, r) in &runs {
        per_session.entry(r["session_id"].as_str().unwrap()).or_default().push(name);
    }

    // Each one-shot ran exactly once, in one of the two processes.
    for (session, input) in &once {
        let by = per_session.get(session.as_str()).cloned().unwrap_or_default();
        assert_eq!(by.len(), 1, "{session}: ran {} times ({by:?})", by.len());
        let run = runs.iter().find(|(_, r)| r["session_id"] == session.as_str()).unwrap();
        assert_eq!(run.1["output"], format!("Echo: [signal from schedule, schedule.fired, normal] {input}"));
    }

    // The interval schedule: one lease row per occurrence, one signal per lease row (distinct
    // dedupe keys), one run per signal, over about seven occurrences.
    let fired: i64 = client
        .query_one(&format!("SELECT COUNT(*) FROM {schema}.loom_schedule_fires WHERE schedule_id = $1"), &[&ticks])
        .await
        .unwrap()
        .get(0);
    let keys: Vec<String> = client
        .query(&format!("SELECT dedupe_key FROM {schema}.loom_signals WHERE session_id = 'ticks'"), &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get::<_, Option<String>>(0).unwrap())
        .collect();
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "a signal stored twice: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with(&format!("schedule:{ticks}:"))), "{keys:?}");
    let tick_runs = per_session.get("ticks").cloned().unwrap_or_default();
    assert_eq!(keys.len() as i64, fired, "one signal per occurrence");
    assert_eq!(tick_runs.len() as i64, fired, "one run per occurrence: {tick_runs:?}");
    assert!(fired >= 3, "the interval schedule fired {fired} times in 7 s");
    // Every one-shot and interval occurrence is one row in loom_runs, none more.
    let stored: i64 = client.query_one(&format!("SELECT COUNT(*) FROM {schema}.loom_runs"), &[]).await.unwrap().get(0);
    assert_eq!(stored as usize, runs.len());
    eprintln!(
        "{} occurrences of the interval schedule, {} runs in all; by a: {}, by b: {}",
        fired,
        runs.len(),
        runs.iter().filter(|(n, _)| *n == "a").count(),
        runs.iter().filter(|(n, _)| *n == "b").count()
    );
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
