//! Correctness across server and worker processes on one database (issue 15's known limits):
//! runs that queue workers execute count in their tenant's daily budget (once, also when taken
//! over), concurrent starts on two servers never pass `max_runs`, and an A2A `contextId` whose
//! session left the bounded map stays closed. On SQLite, and on PostgreSQL (a schema of its own)
//! when `LOOM_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loom_agent::config::{Execution, ServerConfig, TenantBudgetConfig};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::ApiKeyStore;
use loom_agent::{Agent, Message, Usage};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

/// Tokens each model call reports.
const TOKENS_PER_CALL: u64 = 20;

fn model() -> FnModel {
    FnModel::new("test-model", |req| {
        let usage = Usage { input_tokens: 10, output_tokens: 10, cost_usd: 0.01, ..Usage::default() };
        let last = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
        let turn = ScriptedTurn::text(format!("Echo: {last}")).with_usage(usage);
        if last.starts_with("slow") { turn.with_delay(Duration::from_millis(500)) } else { turn }
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
