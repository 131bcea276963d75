//! Correctness across server and worker processes on one database (issue 15's known limits):
//! runs that queue workers execute count in their tenant's daily budget (once, also when taken
//! over), concurrent starts on two servers never pass `max_runs` (through `POST /runs`, A2A and
//! `/mcp`), an A2A `contextId` whose session left the bounded map stays closed, `busy:
//! "interrupt"` and `POST /runs/{id}/cancel` reach a run another server executes, a run whose
//! server died does not keep its session busy, and `GET /runs` reads stored transcripts in one
//! query. On SQLite, and on PostgreSQL (a schema of its own) when `LOOM_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loom_agent::config::{Execution, ServerConfig, TenantBudgetConfig};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::ApiKeyStore;
use loom_agent::store::SessionKey;
use loom_agent::{Agent, Message, RunRequest, SessionConfig, Usage};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

/// Tokens each model call reports.
const TOKENS_PER_CALL: u64 = 20;

fn model() -> FnModel {
    FnModel::new("test-model", |req| {
        let usage = Usage { input_tokens: 10, output_tokens: 10, cost_usd: 0.01, ..Usage::default() };
        let last = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
        let turn = ScriptedTurn::text(format!("Echo: {last}")).with_usage(usage);
        if last.starts_with("hang") {
            // Longer than any test waits: only a cancel (or the process's end) stops it.
            turn.with_delay(Duration::from_secs(60))
        } else if last.starts_with("slow") {
            turn.with_delay(Duration::from_millis(500))
        } else {
            turn
        }
    })
}

/// A database (a SQLite file, or a PostgreSQL schema) with two tenants' keys.
struct Db {
    url: String,
    dir: Option<PathBuf>,
    keys: Arc<dyn ApiKeyStore>,
    key_a: String,
    key_b: String,
    /// The PostgreSQL schema and a client to drop it with.
    schema: Option<(tokio_postgres::Client, String)>,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = std::env::temp_dir().join(format!("loom-serve-limits-{}", loom_agent::new_id("t")));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite:{}", dir.join("loom.db").display());
        Db::with_url(url, Some(dir), None).await
    }

    /// A schema of its own in the test database; `None` (skipped) without one.
    async fn postgres() -> Option<Db> {
        let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL") else {
            eprintln!("skipped: LOOM_TEST_POSTGRES_URL is not set");
            return None;
        };
        let schema = format!("loom_serve_limits_{}", loom_agent::new_id("s").replace('-', "_").to_lowercase());
        let schema: String = schema.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}options=-csearch_path%3D{schema}");
        Some(Db::with_url(url, None, Some((client, schema))).await)
    }

    async fn with_url(url: String, dir: Option<PathBuf>, schema: Option<(tokio_postgres::Client, String)>) -> Db {
        let keys = loom_agent::store::open_api_keys(&url).await.unwrap();
        let (_, key_a) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
        let (_, key_b) = loom_server::create_key(keys.as_ref(), "globex").await.unwrap();
        Db { url, dir, keys, key_a, key_b, schema }
    }

    async fn drop_schema(self) {
        if let Some((client, schema)) = &self.schema {
            client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
        }
    }

    fn agent(&self) -> Agent {
        Agent::builder().name("bot").model(model()).journal(self.url.as_str()).build().unwrap()
    }

    /// A server process over this database (in queue mode: without a worker of its own).
    async fn server(&self, settings: ServerConfig) -> Srv {
        let agent = self.agent();
        let queue = agent.run_queue().unwrap();
        let agents = BTreeMap::from([("bot".to_string(), agent)]);
        let mut state = AppState::new(agents, Some(self.keys.clone()), None);
        if settings.tenant_budget.is_some() {
            state = state.with_budget_store(loom_agent::store::open_tenant_usage(&self.url).await.unwrap());
        }
        if settings.execution == Some(Execution::Queue) {
            state = state.with_queue(queue);
        }
        let server = Server::new(state, settings);
        let state = server.state().clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
        Srv { base: format!("http://{addr}"), http: reqwest::Client::new(), state, task }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            std::fs::remove_dir_all(dir).ok();
        }
    }
}

struct Srv {
    base: String,
    http: reqwest::Client,
    state: Arc<AppState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Srv {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Srv {
    async fn send(&self, method: &str, key: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        self.send("get", key, path, None).await
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        self.send("post", key, path, Some(body)).await
    }

    /// Waits until the run (as this server reads it) is in `state`; the last answer.
    async fn until(&self, key: &str, run_id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.get(key, &format!("/runs/{run_id}")).await.1;
            if last["state"] == state {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("run {run_id} never became {state}: {last}");
    }

    /// One MCP tool call of the agent `bot`: whether it ran (not an error result), and its text.
    async fn mcp_call(&self, key: &str, message: String) -> (bool, String) {
        let client = loom_mcp::http(format!("{}/mcp", self.base))
            .bearer(key)
            .name("loom")
            .handshake_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        let r = client.call_tool("bot", json!({"message": message})).await.unwrap();
        let text = r
            .content
            .iter()
            .filter_map(|c| match c {
                loom_mcp::model::ContentBlock::Text(t) => Some(t.text.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n");
        (r.is_error != Some(true), text)
    }

    async fn a2a_send(&self, key: &str, text: &str, context: &str) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
            "messageId": format!("m-{text}"), "role": "ROLE_USER", "contextId": context,
            "parts": [{"text": text}]}, "configuration": {"blocking": true}}});
        let r = self
            .http
            .post(format!("{}/a2a", self.base))
            .bearer_auth(key)
            .header("A2A-Version", "1.0")
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }
}

/// An A2A context closed, then evicted from the bounded session map, is refused when a message
/// names it again (it was reopened without its closed flag).
async fn closed_a2a_context_stays_closed(db: &Db) {
    let a = &db.key_a;
    let s = db.server(ServerConfig { max_sessions: Some(2), ..Default::default() }).await;
    let v = s.a2a_send(a, "hello", "ctx1").await;
    assert!(v["result"].is_object(), "{v}");
    assert_eq!(s.post(a, "/sessions/ctx1/close", json!({})).await.0, 200);
    // Held: refused.
    let v = s.a2a_send(a, "again", "ctx1").await;
    assert!(v["error"].is_object(), "{v}");
    for id in ["e1", "e2", "e3"] {
        assert_eq!(s.post(a, "/sessions", json!({"session_id": id})).await.0, 201);
    }
    assert!(s.state.sessions_held() <= 2);
    // Evicted, then named again: still closed, and no run started in it.
    let v = s.a2a_send(a, "after eviction", "ctx1").await;
    assert!(v["error"].is_object(), "a closed context was reopened: {v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("closed"), "{v}");
    let (_, runs) = s.get(a, "/sessions/ctx1/runs").await;
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
}

#[tokio::test]
async fn a_closed_a2a_context_stays_closed_after_eviction() {
    closed_a2a_context_stays_closed(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        closed_a2a_context_stays_closed(&db).await;
        db.drop_schema().await;
    }
}

/// Waits until the tenant's usage (as `srv` reads it) shows `tokens`; the last answer.
async fn usage_reaches(srv: &Srv, key: &str, runs: u64, tokens: u64) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        last = srv.get(key, "/budget").await.1;
        if last["usage"]["tokens"].as_u64() == Some(tokens) && last["usage"]["runs"].as_u64() == Some(runs) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("usage never reached {runs} runs and {tokens} tokens: {last}");
}

/// Queue mode: the worker counts the runs it executes for their tenant, once.
async fn workers_count_tenant_usage(db: &Db) {
    let (a, b) = (&db.key_a, &db.key_b);
    let budget = TenantBudgetConfig { max_runs: Some(3), max_tokens: Some(1000), ..Default::default() };
    let settings =
        ServerConfig { tenant_budget: Some(budget), execution: Some(Execution::Queue), ..Default::default() };
    let s = db.server(settings).await;
    let store = loom_agent::store::open_tenant_usage(&db.url).await.unwrap();
    let worker = loom_agent::QueueWorker::new([("bot".to_string(), db.agent())])
        .unwrap()
        .poll_interval(Duration::from_millis(20))
        .tenant_usage(store.clone());
    let w = tokio::spawn(async move { worker.run(std::future::pending()).await });
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, run) = s.post(a, "/runs", json!({"input": format!("r{i}"), "wait": true})).await;
        assert_eq!((status, run["state"].as_str()), (200, Some("completed")), "{run}");
        ids.push(run["run_id"].as_str().unwrap().to_string());
    }
    let shown = usage_reaches(&s, a, 3, 3 * TOKENS_PER_CALL).await;
    assert_eq!(shown["exceeded"], "max_runs", "{shown}");
    let (status, e) = s.post(a, "/runs", json!({"input": "four"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (429, Some("tenant_budget_exceeded")), "{e}");
    // A takeover counts the run again with its cumulative figures: nothing is added.
    let day = chrono::Utc::now().date_naive().to_string();
    let after = store.count_tenant_run("acme", &day, &ids[0], TOKENS_PER_CALL, 0.01).await.unwrap();
    assert_eq!((after.runs, after.tokens), (3, 3 * TOKENS_PER_CALL));
    assert_eq!(s.get(b, "/budget").await.1["usage"]["runs"], 0, "the other tenant is not charged");
    w.abort();
}

#[tokio::test]
async fn runs_executed_by_queue_workers_count_in_the_tenant_budget() {
    workers_count_tenant_usage(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        workers_count_tenant_usage(&db).await;
        db.drop_schema().await;
    }
}

/// Many run starts at the same moment on two servers against `max_runs`: exactly that many start
/// (the check and the count are one atomic statement), the others are refused with 429.
async fn concurrent_starts_stop_at_the_limit(db: &Db) {
    const LIMIT: u64 = 5;
    let a = &db.key_a;
    let budget = TenantBudgetConfig { max_runs: Some(LIMIT), ..Default::default() };
    let settings = ServerConfig { tenant_budget: Some(budget), ..Default::default() };
    let one = db.server(settings.clone()).await;
    let two = db.server(settings).await;
    let posts = (0..40).map(|i| {
        let srv = if i % 2 == 0 { &one } else { &two };
        srv.post(a, "/runs", json!({"input": format!("r{i}")}))
    });
    let answers = futures::future::join_all(posts).await;
    let started = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused = answers.iter().filter(|(s, e)| *s == 429 && e["error"]["code"] == "tenant_budget_exceeded").count();
    assert_eq!((started as u64, refused), (LIMIT, 40 - LIMIT as usize), "{answers:?}");
    let shown = usage_reaches(&one, a, LIMIT, LIMIT * TOKENS_PER_CALL).await;
    assert_eq!(shown["exceeded"], "max_runs", "{shown}");
    // A refused request that would start no run gives its reservation back: a bad body is 400
    // and the count stays.
    let (status, _) = one.post(&db.key_b, "/runs", json!({"input": 7})).await;
    assert_eq!(status, 400);
    assert_eq!(one.get(&db.key_b, "/budget").await.1["usage"]["runs"], 0);
}

#[tokio::test]
async fn concurrent_starts_on_two_servers_never_pass_max_runs() {
    concurrent_starts_stop_at_the_limit(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        concurrent_starts_stop_at_the_limit(&db).await;
        db.drop_schema().await;
    }
}

/// Two servers on one database: a run in flight on one makes the other's `busy: reject` answer
/// 409; `busy: enqueue` is accepted and completes (its ordering behind the first is the store's
/// session lock's, not asserted here).
async fn busy_sessions_across_servers(db: &Db) {
    let a = &db.key_a;
    let one = db.server(ServerConfig::default()).await;
    let two = db.server(ServerConfig::default()).await;
    let (status, run) = one.post(a, "/runs", json!({"input": "slow first", "session_id": "shared"})).await;
    assert_eq!(status, 201, "{run}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, e) = two.post(a, "/runs", json!({"input": "x", "session_id": "shared", "busy": "reject"})).await;
    assert_eq!(status, 409, "the other server's run in flight was not seen: {e}");
    let (status, second) =
        two.post(a, "/runs", json!({"input": "second", "session_id": "shared", "busy": "enqueue", "wait": true})).await;
    assert_eq!((status, second["state"].as_str()), (200, Some("completed")), "{second}");
    let first = one.get(a, &format!("/runs/{}", run["run_id"].as_str().unwrap())).await.1;
    assert_eq!(first["state"], "completed", "{first}");
}

#[tokio::test]
async fn a_run_in_flight_on_another_server_makes_the_session_busy() {
    busy_sessions_across_servers(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        busy_sessions_across_servers(&db).await;
        db.drop_schema().await;
    }
}

/// A2A messages and MCP tool calls at the same moment on two servers against `max_runs`: exactly
/// that many start — they reserve the start atomically, as `POST /runs` does, instead of checking
/// figures up to a second old.
async fn a2a_and_mcp_starts_stop_at_the_limit(db: &Db) {
    const LIMIT: u64 = 4;
    let a = &db.key_a;
    let budget = TenantBudgetConfig { max_runs: Some(LIMIT), ..Default::default() };
    let settings = ServerConfig { tenant_budget: Some(budget), ..Default::default() };
    let one = db.server(settings.clone()).await;
    let two = db.server(settings).await;
    // Both servers have read the day's figures (zero) before the burst.
    assert_eq!(one.get(a, "/budget").await.1["usage"]["runs"], 0);
    assert_eq!(two.get(a, "/budget").await.1["usage"]["runs"], 0);
    let sends = (0..16).map(|i| {
        let srv = if i % 2 == 0 { &one } else { &two };
        async move {
            let v = srv.a2a_send(a, &format!("a2a {i}"), &format!("ctx-{i}")).await;
            let refused = v["error"]["message"].as_str().is_some_and(|m| m.contains("budget"));
            (v["result"].is_object(), refused, v)
        }
    });
    let answers = futures::future::join_all(sends).await;
    let ran = answers.iter().filter(|(ok, _, _)| *ok).count() as u64;
    let refused = answers.iter().filter(|(_, r, _)| *r).count() as u64;
    assert_eq!((ran, refused), (LIMIT, 16 - LIMIT), "A2A: {answers:?}");
    usage_reaches(&one, a, LIMIT, LIMIT * TOKENS_PER_CALL).await;

    // MCP, for the other tenant (same limits).
    let b = &db.key_b;
    assert_eq!(one.get(b, "/budget").await.1["usage"]["runs"], 0);
    assert_eq!(two.get(b, "/budget").await.1["usage"]["runs"], 0);
    let calls = (0..16).map(|i| {
        let srv = if i % 2 == 0 { &one } else { &two };
        srv.mcp_call(b, format!("mcp {i}"))
    });
    let answers = futures::future::join_all(calls).await;
    let ran = answers.iter().filter(|(ok, _)| *ok).count() as u64;
    let refused = answers.iter().filter(|(ok, t)| !ok && t.contains("budget")).count() as u64;
    assert_eq!((ran, refused), (LIMIT, 16 - LIMIT), "MCP: {answers:?}");
    usage_reaches(&two, b, LIMIT, LIMIT * TOKENS_PER_CALL).await;
}

#[tokio::test]
async fn a2a_and_mcp_starts_on_two_servers_never_pass_max_runs() {
    a2a_and_mcp_starts_stop_at_the_limit(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        a2a_and_mcp_starts_stop_at_the_limit(&db).await;
        db.drop_schema().await;
    }
}

/// `busy: "interrupt"` on one server cancels the session's run that another server executes (a
/// cancel recorded on its row, noticed there), waits until it has ended, then runs; and `POST
/// /runs/{id}/cancel` on one server cancels a run the other executes.
async fn interrupt_and_cancel_across_servers(db: &Db) {
    let a = &db.key_a;
    let one = db.server(ServerConfig::default()).await;
    let two = db.server(ServerConfig::default()).await;
    let (status, first) = one.post(a, "/runs", json!({"input": "hang first", "session_id": "shared"})).await;
    assert_eq!(status, 201, "{first}");
    let first_id = first["run_id"].as_str().unwrap().to_string();
    // Begun (its row written): the other server sees it.
    two.until(a, &first_id, "running").await;
    let started = std::time::Instant::now();
    let r = two
        .http
        .post(format!("{}/runs", two.base))
        .bearer_auth(a)
        .timeout(Duration::from_secs(15))
        .json(&json!({"input": "after", "session_id": "shared", "busy": "interrupt", "wait": true}))
        .send()
        .await
        .expect("the interrupting request did not answer: the other server's run was not interrupted");
    let (status, second): (u16, Value) = (r.status().as_u16(), r.json().await.unwrap());
    assert_eq!((status, second["state"].as_str()), (200, Some("completed")), "{second}");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    // The first run ended cancelled (recorded by the server that executed it) before the second began.
    let first = one.get(a, &format!("/runs/{first_id}")).await.1;
    assert_eq!(first["state"], "cancelled", "{first}");
    let ended: chrono::DateTime<chrono::Utc> = serde_json::from_value(first["finished_at"].clone()).unwrap();
    let began: chrono::DateTime<chrono::Utc> = serde_json::from_value(second["started_at"].clone()).unwrap();
    assert!(ended <= began, "the new run began ({began}) before the interrupted one ended ({ended})");
    assert_eq!(two.get(a, &format!("/runs/{first_id}")).await.1["state"], "cancelled");

    // A cancel posted to the server that does not execute the run.
    let (status, run) = one.post(a, "/runs", json!({"input": "hang again", "session_id": "other"})).await;
    assert_eq!(status, 201, "{run}");
    let id = run["run_id"].as_str().unwrap().to_string();
    two.until(a, &id, "running").await;
    let (status, v) = two.post(a, &format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    assert_eq!(one.get(a, &format!("/runs/{id}")).await.1["state"], "cancelled");
    // Another tenant cannot cancel it (404, as for a missing run).
    assert_eq!(two.post(&db.key_b, &format!("/runs/{id}/cancel"), json!({})).await.0, 404);
}

#[tokio::test]
async fn interrupt_and_cancel_reach_a_run_another_server_executes() {
    interrupt_and_cancel_across_servers(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        interrupt_and_cancel_across_servers(&db).await;
        db.drop_schema().await;
    }
}

/// A run whose server died (simulated: a runtime of its own, shut down while the run waits for
/// the model, so its lease is no longer renewed) does not keep its session busy once its lease
/// has expired: `busy: "reject"` runs, the dead run is shown resumable, and a cancel ends it.
async fn dead_servers_runs_do_not_keep_sessions_busy(db: &Db) {
    let a = &db.key_a;
    let one = db.server(ServerConfig::default()).await;
    assert_eq!(one.post(a, "/sessions", json!({"session_id": "orphan"})).await.0, 201);
    let url = db.url.clone();
    let dead_id = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let id = rt.block_on(async {
            let agent = Agent::builder()
                .name("bot")
                .model(model())
                .journal(url.as_str())
                .lease_ttl(Duration::from_millis(400))
                .build()
                .unwrap();
            let session = agent.session(SessionConfig {
                id: Some("orphan".into()),
                user_id: Some("acme/".into()),
                ..Default::default()
            });
            let run = session.start(RunRequest::new("hang until the process dies").user("acme/"));
            let id = run.id().to_string();
            let queue = agent.run_queue().unwrap();
            for _ in 0..300 {
                if queue.status(&id).await.unwrap().is_some_and(|s| s.state == loom_agent::RunState::Running) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            id
        });
        // The "process" dies: its tasks stop, nothing renews the lease or the session lock.
        rt.shutdown_background();
        id
    })
    .join()
    .unwrap();
    let v = one.get(a, &format!("/runs/{dead_id}")).await.1;
    assert_eq!(v["state"], "running", "{v}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v = one.get(a, &format!("/runs/{dead_id}")).await.1;
    assert_eq!((v["state"].as_str(), v["resumable"].as_bool()), (Some("running"), Some(true)), "{v}");
    let (_, list) = one.get(a, "/runs?session_id=orphan").await;
    assert_eq!(list["runs"][0]["resumable"], true, "{list}");
    let (status, next) =
        one.post(a, "/runs", json!({"input": "next", "session_id": "orphan", "busy": "reject", "wait": true})).await;
    assert_eq!(
        (status, next["state"].as_str()),
        (200, Some("completed")),
        "a dead server's run kept the session busy: {next}"
    );
    // Nothing executes it: a cancel takes it over only to end it (`across_servers.rs` has more).
    let (status, v) = one.post(a, &format!("/runs/{dead_id}/cancel"), json!({})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("cancelled")), "{v}");
}

#[tokio::test]
async fn a_dead_servers_run_does_not_keep_its_session_busy() {
    dead_servers_runs_do_not_keep_sessions_busy(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        dead_servers_runs_do_not_keep_sessions_busy(&db).await;
        db.drop_schema().await;
    }
}

/// `GET /runs` from the store: the finished runs of another server, their transcripts read in one
/// batch (`SessionStore::get_runs`), shown as `GET /runs/{id}` shows each; the batch read keeps
/// users and sessions apart.
async fn listing_reads_transcripts_in_one_batch(db: &Db) {
    let a = &db.key_a;
    let one = db.server(ServerConfig::default()).await;
    let two = db.server(ServerConfig::default()).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, run) =
            one.post(a, "/runs", json!({"input": format!("r{i}"), "user_id": "ann", "wait": true})).await;
        assert_eq!(status, 200, "{run}");
        ids.push(run["run_id"].as_str().unwrap().to_string());
    }
    let (_, list) = two.get(a, "/runs?user_id=ann").await;
    let runs = list["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5, "{list}");
    for shown in runs {
        let id = shown["run_id"].as_str().unwrap();
        let mut single = two.get(a, &format!("/runs/{id}")).await.1;
        single["cancel_requested"] = json!(false);
        assert_eq!(shown, &single);
        assert!(shown["output"].as_str().unwrap().starts_with("Echo: r"), "{shown}");
    }
    // The store's batch read: the right user's runs only.
    let agent = db.agent();
    let store = agent.session_store();
    let sessions: Vec<String> = runs.iter().map(|r| r["session_id"].as_str().unwrap().to_string()).collect();
    let ids: Vec<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    let keys: Vec<(SessionKey<'_>, &str)> =
        sessions.iter().zip(&ids).map(|(s, id)| (SessionKey::of_user("acme/ann", s), *id)).collect();
    let got = store.get_runs(&keys).await.unwrap();
    assert_eq!(got.len(), 5);
    for t in &got {
        let one = store.get_run(SessionKey::of_user("acme/ann", &t.session_id), &t.run_id).await.unwrap().unwrap();
        assert_eq!((&t.output, &t.input, t.state, &t.usage), (&one.output, &one.input, one.state, &one.usage));
    }
    let wrong: Vec<(SessionKey<'_>, &str)> =
        sessions.iter().zip(&ids).map(|(s, id)| (SessionKey::of_user("globex/ann", s), *id)).collect();
    assert!(store.get_runs(&wrong).await.unwrap().is_empty(), "another user's key read the runs");
    let crossed = [(SessionKey::of_user("acme/ann", &sessions[0]), ids[1])];
    assert!(store.get_runs(&crossed).await.unwrap().is_empty(), "a run read under another session");
}

#[tokio::test]
async fn listing_runs_from_the_store_reads_transcripts_in_one_batch() {
    listing_reads_transcripts_in_one_batch(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        listing_reads_transcripts_in_one_batch(&db).await;
        db.drop_schema().await;
    }
}

/// Figures for docs/benchmarks.md (ignored; `-- --ignored --nocapture`): reading 1,000 finished
/// runs' transcripts the way `GET /runs` did (one `get_run` each) and as it does now (one
/// `get_runs`), and a `GET /runs?limit=1000` page from a server that holds none of them.
#[tokio::test]
#[ignore]
async fn listing_figures() {
    let mut dbs = vec![("sqlite", Db::sqlite().await)];
    if let Some(db) = Db::postgres().await {
        dbs.push(("postgres", db));
    }
    for (name, db) in &dbs {
        let one = db.server(ServerConfig::default()).await;
        let two = db.server(ServerConfig::default()).await;
        let answers = futures::future::join_all(
            (0..1000).map(|i| one.post(&db.key_a, "/runs", json!({"input": format!("r{i}"), "wait": true}))),
        )
        .await;
        assert!(answers.iter().all(|(s, _)| *s == 200));
        let agent = db.agent();
        let store = agent.session_store();
        let rows: Vec<(String, String)> = answers
            .iter()
            .map(|(_, v)| (v["session_id"].as_str().unwrap().to_string(), v["run_id"].as_str().unwrap().to_string()))
            .collect();
        let mut per_run = Duration::MAX;
        let mut batched = Duration::MAX;
        let mut page = Duration::MAX;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for (s, id) in &rows {
                store.get_run(SessionKey::of_user("acme/", s), id).await.unwrap().unwrap();
            }
            per_run = per_run.min(t.elapsed());
            let keys: Vec<(SessionKey<'_>, &str)> =
                rows.iter().map(|(s, id)| (SessionKey::of_user("acme/", s), id.as_str())).collect();
            let t = std::time::Instant::now();
            assert_eq!(store.get_runs(&keys).await.unwrap().len(), 1000);
            batched = batched.min(t.elapsed());
            let t = std::time::Instant::now();
            let (status, list) = two.get(&db.key_a, "/runs?limit=1000").await;
            assert_eq!((status, list["runs"].as_array().map(Vec::len)), (200, Some(1000)));
            page = page.min(t.elapsed());
        }
        println!(
            "{name}: 1,000 transcripts: get_run each {per_run:?}, get_runs {batched:?} ({:.1}x); GET /runs?limit=1000 {page:?}",
            per_run.as_secs_f64() / batched.as_secs_f64()
        );
    }
    for (_, db) in dbs {
        db.drop_schema().await;
    }
}
