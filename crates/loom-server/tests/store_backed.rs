//! What `loom serve` answers from its database rather than its memory: `GET /runs` and
//! `GET /runs/{id}` after a restart and across two servers on one database, sessions past the
//! bounded session map, and per-tenant daily budgets shared by two servers (SQLite, and
//! PostgreSQL when `LOOM_TEST_POSTGRES_URL` is set). Each with 401 and another tenant's 404.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loom_agent::config::{ServerConfig, TenantBudgetConfig};
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
        if last.starts_with("slow") { turn.with_delay(Duration::from_secs(3)) } else { turn }
    })
}

/// A database (a SQLite file, or a PostgreSQL schema) with two tenants' keys.
struct Db {
    url: String,
    dir: Option<PathBuf>,
    keys: Arc<dyn ApiKeyStore>,
    key_a: String,
    key_b: String,
}

impl Db {
    async fn sqlite() -> Db {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("loom-store-backed-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite:{}", dir.join("loom.db").display());
        Db::with_url(url, Some(dir)).await
    }

    async fn with_url(url: String, dir: Option<PathBuf>) -> Db {
        let keys = loom_agent::store::open_api_keys(&url).await.unwrap();
        let (_, key_a) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
        let (_, key_b) = loom_server::create_key(keys.as_ref(), "globex").await.unwrap();
        Db { url, dir, keys, key_a, key_b }
    }

    /// A server process over this database: its own agent, state and listener.
    async fn server(&self, settings: ServerConfig) -> Srv {
        let agent = Agent::builder().name("bot").model(model()).journal(self.url.as_str()).build().unwrap();
        let agents = BTreeMap::from([("bot".to_string(), agent)]);
        let mut state = AppState::new(agents, Some(self.keys.clone()), None);
        if settings.tenant_budget.is_some() {
            state = state.with_budget_store(loom_agent::store::open_tenant_usage(&self.url).await.unwrap());
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
    async fn send(&self, method: &str, key: Option<&str>, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        self.send("get", Some(key), path, None).await
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        self.send("post", Some(key), path, Some(body)).await
    }

    /// Runs to the end; the run's id.
    async fn run(&self, key: &str, body: Value) -> String {
        let mut body = body;
        body["wait"] = json!(true);
        let (status, run) = self.post(key, "/runs", body).await;
        assert_eq!((status, run["state"].as_str()), (200, Some("completed")), "{run}");
        run["run_id"].as_str().unwrap().to_string()
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn runs_are_listed_and_read_from_the_store_after_a_restart() {
    runs_after_a_restart(&Db::sqlite().await).await;
}

async fn runs_after_a_restart(db: &Db) {
    let (a, b) = (&db.key_a, &db.key_b);
    let first = db.server(ServerConfig::default()).await;
    let mut acme = Vec::new();
    for (i, (user, session)) in [("alice", "s1"), ("alice", "s1"), ("bob", "s2"), ("alice", "s3")].iter().enumerate() {
        acme.push(first.run(a, json!({"input": format!("hello {i}"), "user_id": user, "session_id": session})).await);
    }
    let globex = first.run(b, json!({"input": "theirs"})).await;
    drop(first);

    // A new server over the same database: nothing in memory.
    let second = db.server(ServerConfig::default()).await;
    let (status, list) = second.get(a, "/runs").await;
    assert_eq!(status, 200, "{list}");
    let newest_first: Vec<String> = acme.iter().rev().cloned().collect();
    assert_eq!(ids(&list), newest_first, "the tenant's runs, newest first, none of globex's");
    assert_eq!(list["next"], Value::Null, "one page");
    let top = &list["runs"][0];
    assert_eq!((top["state"].as_str(), top["output"].as_str()), (Some("completed"), Some("Echo: hello 3")), "{top}");
    assert_eq!((top["user_id"].as_str(), top["session_id"].as_str()), (Some("alice"), Some("s3")));

    // Pages: `limit` and the cursor `before` (the `next` of the page before).
    let (_, page1) = second.get(a, "/runs?limit=3").await;
    assert_eq!(ids(&page1), newest_first[..3].to_vec());
    let next = page1["next"].as_str().unwrap();
    let (_, page2) = second.get(a, &format!("/runs?limit=3&before={next}")).await;
    assert_eq!(ids(&page2), newest_first[3..].to_vec());
    assert_eq!(page2["next"], Value::Null);

    // Filters: session, user, state.
    let (_, s1) = second.get(a, "/runs?session_id=s1").await;
    assert_eq!(ids(&s1), vec![acme[1].clone(), acme[0].clone()]);
    let (_, bob) = second.get(a, "/runs?user_id=bob").await;
    assert_eq!(ids(&bob), vec![acme[2].clone()]);
    let (_, failed) = second.get(a, "/runs?state=failed").await;
    assert!(ids(&failed).is_empty(), "{failed}");

    // A new run here and the stored ones, in one list.
    let fresh = second.run(a, json!({"input": "after restart", "user_id": "alice"})).await;
    let (_, list) = second.get(a, "/runs?limit=2").await;
    assert_eq!(ids(&list), vec![fresh.clone(), acme[3].clone()]);

    // GET /runs/{id} falls back to the store too.
    let (status, run) = second.get(a, &format!("/runs/{}", acme[0])).await;
    assert_eq!((status, run["output"].as_str()), (200, Some("Echo: hello 0")), "{run}");

    // Another tenant: nothing of acme's, and 404 on its runs; without a key, 401.
    let (_, theirs) = second.get(b, "/runs").await;
    assert_eq!(ids(&theirs), vec![globex.clone()]);
    assert_eq!(second.get(b, &format!("/runs/{}", acme[0])).await.0, 404);
    assert_eq!(second.get(a, &format!("/runs/{globex}")).await.0, 404);
    assert_eq!(second.send("get", None, "/runs", None).await.0, 401);
    assert_eq!(second.send("get", Some("loom_wrong"), &format!("/runs/{}", acme[0]), None).await.0, 401);

    // A second server process on the same database sees the first one's new run at once.
    let third = db.server(ServerConfig::default()).await;
    let (_, list) = third.get(a, "/runs?limit=1").await;
    assert_eq!(ids(&list), vec![fresh]);
}

#[tokio::test]
async fn sessions_past_the_bound_are_read_back_from_the_store() {
    sessions_past_the_bound(&Db::sqlite().await).await;
}

async fn sessions_past_the_bound(db: &Db) {
    let (a, b) = (&db.key_a, &db.key_b);
    let s = db.server(ServerConfig { max_sessions: Some(2), ..Default::default() }).await;
    let (status, made) =
        s.post(a, "/sessions", json!({"session_id": "s1", "user_id": "alice", "metadata": {"topic": "tea"}})).await;
    assert_eq!(status, 201, "{made}");
    s.run(a, json!({"input": "first", "session_id": "s1", "user_id": "alice"})).await;
    for id in ["s2", "s3", "s4"] {
        assert_eq!(s.post(a, "/sessions", json!({"session_id": id, "user_id": "bob"})).await.0, 201);
    }
    assert_eq!(s.post(a, "/sessions/s3/close", json!({})).await.0, 200);
    s.post(a, "/sessions", json!({"session_id": "s5"})).await;
    s.post(a, "/sessions", json!({"session_id": "s6"})).await;
    assert!(s.state.sessions_held() <= 2, "bounded: {}", s.state.sessions_held());

    // s1 left memory long ago: it answers from the store, as it was.
    let (status, s1) = s.get(a, "/sessions/s1").await;
    assert_eq!(status, 200, "{s1}");
    assert_eq!(
        (s1["user_id"].as_str(), s1["agent"].as_str(), s1["closed"].as_bool()),
        (Some("alice"), Some("bot"), Some(false))
    );
    assert_eq!(s1["metadata"]["topic"], "tea", "{s1}");
    let (_, history) = s.get(a, "/sessions/s1/history").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 2, "{history}");
    // Its next run continues the conversation; another user may not use it.
    s.run(a, json!({"input": "second", "session_id": "s1", "user_id": "alice"})).await;
    let (_, history) = s.get(a, "/sessions/s1/history").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 4, "{history}");
    let (_, runs) = s.get(a, "/sessions/s1/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "{runs}");
    for id in ["s2", "s4", "s5"] {
        s.get(a, &format!("/sessions/{id}")).await;
    }
    let (status, e) = s.post(a, "/runs", json!({"input": "x", "session_id": "s1", "user_id": "mallory"})).await;
    assert_eq!(status, 409, "{e}");
    // A closed session stays closed after leaving memory; an existing id is still taken.
    let (_, s3) = s.get(a, "/sessions/s3").await;
    assert_eq!(s3["closed"], true, "{s3}");
    let (status, e) = s.post(a, "/runs", json!({"input": "x", "session_id": "s3", "user_id": "bob"})).await;
    assert_eq!(status, 409, "{e}");
    for id in ["s2", "s4", "s5", "s6"] {
        s.get(a, &format!("/sessions/{id}")).await;
    }
    assert_eq!(s.post(a, "/sessions", json!({"session_id": "s1"})).await.0, 409);
    assert!(s.state.sessions_held() <= 2);

    // The list has every session of the tenant, held or not; by user.
    let (_, list) = s.get(a, "/sessions").await;
    let mut listed: Vec<&str> =
        list["sessions"].as_array().unwrap().iter().map(|x| x["session_id"].as_str().unwrap()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["s1", "s2", "s3", "s4", "s5", "s6"], "{list}");
    let (_, bobs) = s.get(a, "/sessions?user_id=bob").await;
    assert_eq!(bobs["sessions"].as_array().unwrap().len(), 3, "{bobs}");

    // Another tenant: 404 on acme's sessions (in memory or not), none listed; 401 without a key.
    for id in ["s1", "s6"] {
        assert_eq!(s.get(b, &format!("/sessions/{id}")).await.0, 404, "{id}");
        assert_eq!(s.get(b, &format!("/sessions/{id}/history")).await.0, 404, "{id}");
    }
    let (_, theirs) = s.get(b, "/sessions").await;
    assert_eq!(theirs["sessions"], json!([]));
    assert_eq!(s.send("get", None, "/sessions/s1", None).await.0, 401);
}

/// Waits until the tenant's usage (as `srv` reads it) shows `tokens`.
async fn tokens_reach(srv: &Srv, key: &str, tokens: u64) -> Value {
    for _ in 0..300 {
        let (_, b) = srv.get(key, "/budget").await;
        if b["usage"]["tokens"].as_u64() == Some(tokens) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("usage never reached {tokens} tokens");
}

/// Two servers on one database share a tenant's budget, and a restarted one keeps it.
async fn budgets_are_shared(db: &Db) {
    let (a, b) = (&db.key_a, &db.key_b);
    let budget = TenantBudgetConfig { max_runs: Some(3), max_tokens: Some(1000), ..Default::default() };
    let settings = ServerConfig { tenant_budget: Some(budget), ..Default::default() };
    let one = db.server(settings.clone()).await;
    let two = db.server(settings.clone()).await;
    one.run(a, json!({"input": "one"})).await;
    two.run(a, json!({"input": "two"})).await;
    let shown = tokens_reach(&one, a, 2 * TOKENS_PER_CALL).await;
    assert_eq!(shown["usage"]["runs"], 2, "{shown}");
    let shown = tokens_reach(&two, a, 2 * TOKENS_PER_CALL).await;
    assert_eq!(shown["usage"]["runs"], 2, "{shown}");
    // The third run (on either server) spends the budget: both refuse the fourth at once.
    let (status, started) = one.post(a, "/runs", json!({"input": "slow three"})).await;
    assert_eq!(status, 201, "{started}");
    // (The start is written to the database just after the answer: the other server sees it once
    // it is; this server counts it at once.)
    for _ in 0..300 {
        if two.get(a, "/budget").await.1["usage"]["runs"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for srv in [&two, &one] {
        let (status, e) = srv.post(a, "/runs", json!({"input": "four"})).await;
        assert_eq!((status, e["error"]["code"].as_str()), (429, Some("tenant_budget_exceeded")), "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("max_runs"), "{e}");
    }
    // The other tenant is not affected.
    two.run(b, json!({"input": "theirs"})).await;
    let shown = tokens_reach(&one, b, TOKENS_PER_CALL).await;
    assert_eq!(shown["usage"]["runs"], 1);
    assert_eq!(shown["tenant"], "globex");
    // The metrics count every server's runs.
    let text = one.http.get(format!("{}/metrics", one.base)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("loom_tenant_runs_today{tenant=\"acme\"} 3"), "{text}");
    assert!(text.contains("loom_tenant_runs_today{tenant=\"globex\"} 1"), "{text}");

    // Restarted: the count stays (and the run in flight is counted once, when it ends).
    drop(one);
    drop(two);
    let again = db.server(settings).await;
    let (status, shown) = again.get(a, "/budget").await;
    assert_eq!((status, shown["usage"]["runs"].as_u64()), (200, Some(3)), "{shown}");
    assert_eq!(shown["exceeded"], "max_runs");
    let (status, e) = again.post(a, "/runs", json!({"input": "five"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (429, Some("tenant_budget_exceeded")), "{e}");
    assert_eq!(again.send("get", None, "/budget", None).await.0, 401);
    assert_eq!(again.get(b, "/budget").await.1["usage"]["runs"], 1, "globex sees its own figures");
}

#[tokio::test]
async fn budgets_are_shared_by_two_servers_on_one_sqlite_file_and_survive_a_restart() {
    let db = Db::sqlite().await;
    budgets_are_shared(&db).await;
}

/// A schema of its own in the test database; `None` (the test is skipped) without one.
async fn postgres() -> Option<(tokio_postgres::Client, String, Db)> {
    let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL") else {
        eprintln!("skipped: LOOM_TEST_POSTGRES_URL is not set");
        return None;
    };
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let schema = format!("loom_serve1_{}_{}_{n}", std::process::id(), fastrand_suffix());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let db = Db::with_url(format!("{url}{sep}options=-csearch_path%3D{schema}"), None).await;
    Some((client, schema, db))
}

#[tokio::test]
async fn runs_and_sessions_answer_from_postgres() {
    for scenario in 0..2 {
        let Some((client, schema, db)) = postgres().await else { return };
        if scenario == 0 {
            runs_after_a_restart(&db).await;
        } else {
            sessions_past_the_bound(&db).await;
        }
        drop(db);
        client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    }
}

#[tokio::test]
async fn budgets_are_shared_on_postgres() {
    let Some((client, schema, db)) = postgres().await else { return };
    budgets_are_shared(&db).await;
    // Concurrent counts of one run from two connections add its spend once.
    let store = loom_agent::store::open_tenant_usage(&db.url).await.unwrap();
    let other = loom_agent::store::open_tenant_usage(&db.url).await.unwrap();
    let (x, y) = tokio::join!(
        store.count_tenant_run("initech", "2026-01-01", "run_1", 50, 0.5),
        other.count_tenant_run("initech", "2026-01-01", "run_1", 50, 0.5)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.runs.max(y.runs), 1);
    assert_eq!(x.tokens.max(y.tokens), 50);
    let day = store.tenant_usage("initech", "2026-01-01").await.unwrap();
    assert_eq!((day.runs, day.tokens), (1, 50));
    assert!((day.cost_usd - 0.5).abs() < 1e-9);
    store.count_tenant_run("initech", "2026-01-01", "run_1", 70, 0.5).await.unwrap();
    assert_eq!(store.tenant_usage("initech", "2026-01-01").await.unwrap().tokens, 70);
    assert!(store.prune_tenant_usage("2026-01-02").await.unwrap() >= 2);
    assert_eq!(store.tenant_usage("initech", "2026-01-01").await.unwrap().runs, 0);
    drop(db);
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

fn fastrand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
        % 1_000_000_007
}

/// This process's CPU time (all threads, the SQLite one included).
#[allow(unsafe_code)]
fn cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The costs measured for docs/benchmarks.md (run with `--ignored --nocapture`): CPU per
/// `GET /runs` (100 of 200 runs) held in memory against read from SQLite, and CPU per run with a
/// tenant budget counted in memory against in SQLite.
#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn measure_store_backed_costs() {
    const RUNS: usize = 200;
    const LISTS: u32 = 200;
    let db = Db::sqlite().await;
    let a = &db.key_a;
    let held = db.server(ServerConfig::default()).await;
    for i in 0..RUNS {
        held.run(a, json!({"input": format!("r{i}")})).await;
    }
    let restarted = db.server(ServerConfig::default()).await;
    let mut per_list = Vec::new();
    for srv in [&held, &restarted] {
        let (_, l) = srv.get(a, "/runs?limit=100").await;
        assert_eq!(l["runs"].as_array().unwrap().len(), 100);
        let start = cpu();
        for _ in 0..LISTS {
            assert_eq!(srv.get(a, "/runs?limit=100").await.0, 200);
        }
        per_list.push((cpu() - start) / LISTS);
    }
    println!("GET /runs?limit=100 CPU: held {:?}, from SQLite {:?}", per_list[0], per_list[1]);

    let budget = TenantBudgetConfig { max_runs: Some(1_000_000), ..Default::default() };
    let mut per_run = Vec::new();
    for stored in [false, true] {
        let db = Db::sqlite().await;
        let settings = ServerConfig { tenant_budget: Some(budget.clone()), ..Default::default() };
        let srv = if stored {
            db.server(settings).await
        } else {
            // The same server with the budget counted in memory.
            let agent = Agent::builder().name("bot").model(model()).journal(db.url.as_str()).build().unwrap();
            let state = AppState::new(BTreeMap::from([("bot".to_string(), agent)]), Some(db.keys.clone()), None);
            let server = Server::new(state, settings);
            let state = server.state().clone();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let task = tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
            Srv { base: format!("http://{addr}"), http: reqwest::Client::new(), state, task }
        };
        for i in 0..20 {
            srv.run(&db.key_a, json!({"input": format!("warm {i}")})).await;
        }
        let start = cpu();
        for i in 0..RUNS {
            srv.run(&db.key_a, json!({"input": format!("r{i}")})).await;
        }
        per_run.push((cpu() - start) / RUNS as u32);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, b) = srv.get(&db.key_a, "/budget").await;
        assert_eq!(b["usage"]["runs"].as_u64(), Some(RUNS as u64 + 20), "{b}");
    }
    println!(
        "POST /runs (wait) CPU per run with a tenant budget: in memory {:?}, in SQLite {:?}",
        per_run[0], per_run[1]
    );
}
