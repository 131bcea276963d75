//! The signed audit chain in PostgreSQL: a real run writes it, many appenders keep one chain,
//! verification names tampering done with SQL. Needs `LOOM_TEST_POSTGRES_URL`; skipped without it.

#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use loom_agent::governance::{
    AuditAction, AuditLog, AuditRecord, GENESIS_HASH, PostgresAuditLog, ProblemKind, Scope, VerifyReport,
};
use loom_agent::model::ScriptedTurn;
use loom_agent::{Agent, Error, RunRequest};
use serde_json::{Value, json};
use tokio_postgres::{Client, NoTls};

const SECRET: &str = "test-secret-0123456789abcdef";

/// The test database's URL, or `None` (and a note) when it is not set.
fn database_url() -> Option<String> {
    match std::env::var("LOOM_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped: LOOM_TEST_POSTGRES_URL not set");
            None
        }
    }
}

/// A table name no other test (or test process) uses.
fn unique_table() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("loom_audit_test_{}_{nanos}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A plain client, for looking at and tampering with the table.
async fn raw_client(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn log(url: &str, table: &str, secret: &str) -> PostgresAuditLog {
    PostgresAuditLog::connect(url, secret).await.unwrap().table(table).unwrap()
}

async fn drop_table(client: &Client, table: &str) {
    client.batch_execute(&format!("DROP TABLE IF EXISTS {table}")).await.unwrap();
}

fn record(run: &str, n: u64) -> AuditRecord {
    AuditRecord {
        scope: Scope { run_id: run.into(), session_id: "ses_1".into(), user_id: Some("ulla".into()) },
        action: AuditAction::ToolCall,
        payload: json!({"n": n, "tool": "lookup", "nested": {"b": 1.5, "a": [1, "x"]}}),
    }
}

/// Checks a report has exactly one problem, of this kind, at this line and seq.
fn only_problem(report: &VerifyReport, kind: ProblemKind, line: usize, seq: u64) {
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    let p = &report.problems[0];
    assert_eq!((p.kind, p.line, p.seq), (kind, line, Some(seq)), "{p}");
}

/// A table of six entries written through `PostgresAuditLog`, checked intact.
async fn six_entries(url: &str, table: &str) -> PostgresAuditLog {
    let log = log(url, table, SECRET).await;
    for n in 1..=6 {
        log.append(record("run_1", n)).await.unwrap();
    }
    let report = log.verify().await.unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!((report.entries, report.last_seq), (6, Some(6)));
    log
}

#[tokio::test]
async fn a_run_writes_a_signed_chain_of_its_actions() {
    let Some(url) = database_url() else { return };
    let table = unique_table();
    let audit = log(&url, &table, SECRET).await;
    let (_, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).audit_log(audit.clone()).build().unwrap();
    let result = agent.run(RunRequest::new("go").user("dora")).await.unwrap();

    let client = raw_client(&url).await;
    let rows = client
        .query(
            &format!("SELECT seq, action, run_id, session_id, user_id, prev_hash, hash, payload::text FROM {table} ORDER BY seq"),
            &[],
        )
        .await
        .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(actions, ["run_started", "tool_call", "tool_result", "run_finished"]);
    let mut prev = GENESIS_HASH.to_string();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i64>(0), i as i64 + 1);
        assert_eq!(row.get::<_, String>(2), result.run_id.to_string());
        assert_eq!(row.get::<_, String>(3), result.session_id.to_string());
        assert_eq!(row.get::<_, Option<String>>(4).as_deref(), Some("dora"));
        assert_eq!(row.get::<_, String>(5), prev);
        prev = row.get(6);
    }
    // The JSONB column holds the payload, for queries.
    let call: Value = serde_json::from_str(&rows[1].get::<_, String>(7)).unwrap();
    assert_eq!(call["args"], json!({"x": "a"}));

    let report = audit.verify().await.unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!((report.entries, report.last_seq), (4, Some(4)));
    assert_eq!(report.last_hash.as_deref(), Some(prev.as_str()));

    // A second run, through another value on the same table, goes on with the chain.
    let (_, shared) = scripted([ScriptedTurn::text("again")]);
    let agent = Agent::builder().model(shared).audit_log(log(&url, &table, SECRET).await).build().unwrap();
    agent.run(RunRequest::new("more")).await.unwrap();
    let report = audit.verify().await.unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!((report.entries, report.last_seq), (6, Some(6)));

    drop_table(&client, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_keep_one_chain() {
    let Some(url) = database_url() else { return };
    let table = unique_table();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (url, table) = (url.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            let log = log(&url, &table, SECRET).await;
            for n in 0..25 {
                log.append(record(&format!("run_{t}"), n)).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let report = log(&url, &table, SECRET).await.verify().await.unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!((report.entries, report.last_seq), (200, Some(200)));

    let client = raw_client(&url).await;
    let per_run = client
        .query(&format!("SELECT run_id, count(*) FROM {table} GROUP BY run_id ORDER BY run_id"), &[])
        .await
        .unwrap();
    let counts: Vec<(String, i64)> = per_run.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(counts, (0..8).map(|t| (format!("run_{t}"), 25)).collect::<Vec<_>>());
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn an_edited_row_is_reported_as_edited_at_its_seq() {
    let Some(url) = database_url() else { return };
    let table = unique_table();
    let log = six_entries(&url, &table).await;
    let client = raw_client(&url).await;
    let changed = client
        .execute(
            &format!("UPDATE {table} SET payload_text = replace(payload_text, '\"n\":3', '\"n\":30') WHERE seq = 3"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changed, 1);
    only_problem(&log.verify().await.unwrap(), ProblemKind::Edited, 3, 3);

    // Another column, on another row: the time.
    client.execute(&format!("UPDATE {table} SET at = at + interval '1 second' WHERE seq = 5"), &[]).await.unwrap();
    let report = log.verify().await.unwrap();
    assert_eq!(report.problems.len(), 2, "{:#?}", report.problems);
    assert_eq!((report.problems[1].kind, report.problems[1].seq), (ProblemKind::Edited, Some(5)));

    // A payload_text that is not JSON at all.
    client.execute(&format!("UPDATE {table} SET payload_text = '{{oops' WHERE seq = 1"), &[]).await.unwrap();
    let report = log.verify().await.unwrap();
    assert_eq!((report.problems[0].kind, report.problems[0].seq), (ProblemKind::Malformed, Some(1)));
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_deleted_row_is_reported_as_dropped() {
    let Some(url) = database_url() else { return };
    let table = unique_table();
    let log = six_entries(&url, &table).await;
    let client = raw_client(&url).await;
    client.execute(&format!("DELETE FROM {table} WHERE seq = 3"), &[]).await.unwrap();
    let report = log.verify().await.unwrap();
    only_problem(&report, ProblemKind::Dropped, 3, 4);
    assert!(report.problems[0].detail.contains("seq 3 is missing"), "{}", report.problems[0]);
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn a_wrong_secret_is_reported_as_bad_signatures() {
    let Some(url) = database_url() else { return };
    let table = unique_table();
    six_entries(&url, &table).await;
    let report = log(&url, &table, "another-secret-0123456789").await.verify().await.unwrap();
    assert_eq!(report.problems.len(), 6, "{:#?}", report.problems);
    assert!(report.problems.iter().all(|p| p.kind == ProblemKind::BadSignature), "{:#?}", report.problems);
    drop_table(&raw_client(&url).await, &table).await;
}

#[tokio::test]
async fn a_secret_reaches_no_row() {
    let Some(url) = database_url() else { return };
    let table = unique_table();
    let log = log(&url, &table, SECRET).await;
    let secret = "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123456789";
    let record = AuditRecord {
        scope: Scope { run_id: "run_1".into(), session_id: "ses_1".into(), user_id: None },
        action: AuditAction::ToolCall,
        payload: json!({"api_key": secret, "text": format!("key {secret}")}),
    };
    log.append(record).await.unwrap();
    let client = raw_client(&url).await;
    let row =
        client.query_one(&format!("SELECT payload::text, payload_text, user_id FROM {table}"), &[]).await.unwrap();
    assert!(!row.get::<_, String>(0).contains(secret));
    assert!(!row.get::<_, String>(1).contains(secret));
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert!(log.verify().await.unwrap().is_intact());
    drop_table(&client, &table).await;
}

#[tokio::test]
async fn bad_table_names_and_unreachable_servers_are_errors() {
    // No server listens on port 1: a clear store error, no panic.
    match PostgresAuditLog::connect("postgres://postgres@127.0.0.1:1/test?connect_timeout=2", SECRET).await {
        Err(Error::Store(message)) => assert!(message.contains("connecting"), "{message}"),
        other => panic!("expected a store error, got {other:?}"),
    }
    assert!(matches!(PostgresAuditLog::connect("not a url ::", SECRET).await, Err(Error::Store(_))));
    assert!(matches!(PostgresAuditLog::connect("postgres://127.0.0.1:1/test", "").await, Err(Error::Config(_))));

    let Some(url) = database_url() else { return };
    let log = PostgresAuditLog::connect(&url, SECRET).await.unwrap();
    assert_eq!(log.table_name(), "loom_audit_log");
    for bad in ["", "Audit", "9lives", "a-b", "x; DROP TABLE y", "\"q\""] {
        assert!(matches!(log.clone().table(bad), Err(Error::Config(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn a_log_built_on_a_store_shares_its_pool_and_survives_a_dropped_connection() {
    let Some(url) = database_url() else { return };
    let table = unique_table();
    // The pool's connections carry a name of their own, so the test can kill exactly those.
    let sep = if url.contains('?') { '&' } else { '?' };
    let store =
        loom_agent::store::PostgresStore::connect(&format!("{url}{sep}application_name={table}")).await.unwrap();
    let log = PostgresAuditLog::with_store(&store, SECRET).unwrap().table(&table).unwrap();
    log.append(record("run_pool", 1)).await.unwrap();
    // Kill the pool's connections: the next append opens a new one instead of failing for good.
    let admin = raw_client(&url).await;
    let killed = admin
        .query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", &[&table.as_str()])
        .await
        .unwrap();
    assert!(!killed.is_empty(), "the pool holds a connection");
    // The server ends a terminated backend asynchronously, and under load the client may learn of
    // it only when it next uses the connection: a connection killed between checkout and use fails
    // that one call. The pool must then open a new one, so within a few calls (the pool may hold
    // several killed connections) an append succeeds; a pool that kept handing out dead
    // connections would fail every one of them.
    let mut appended = false;
    let mut failures = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        match log.append(record("run_pool", 2)).await {
            Ok(_) => {
                appended = true;
                break;
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(appended, "the log did not reconnect: {failures:#?}");
    assert!(failures.len() <= killed.len(), "more failed appends than killed connections: {failures:#?}");
    let report = log.verify().await.unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.entries, 2);
    assert!(PostgresAuditLog::with_store(&store, "").is_err(), "an empty secret is refused");
    drop_table(&admin, &table).await;
}
