//! Runs across `loom serve` processes on one database (issue 15's remaining gaps): a run waiting
//! in one server's session queue is seen by the others (their busy checks, `GET`, cancel and
//! interrupt); a run whose server died can be cancelled (ended `cancelled` durably, exactly once
//! against a concurrent resume); and in queue mode, a run whose worker died keeps its session busy
//! only when a worker will take it over. On SQLite, and on PostgreSQL (a schema of its own) when
//! `LOOM_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loom_agent::config::{Execution, ServerConfig};
use loom_agent::governance::InMemoryAuditLog;
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::{ApiKeyStore, Lease};
use loom_agent::{Agent, Message, RunRequest, SessionConfig};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

fn model() -> FnModel {
    FnModel::new("test-model", |req| {
        let last = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
        let turn = ScriptedTurn::text(format!("Echo: {last}"));
        // `hang …`: longer than any test waits; only a cancel (or the process's end) stops it.
        if last.starts_with("hang") { turn.with_delay(Duration::from_secs(60)) } else { turn }
    })
}

/// A database (a SQLite file, or a PostgreSQL schema) with two tenants' keys, and the audit log
/// every server's agent writes (one log, as a shared audit store would be).
struct Db {
    url: String,
    dir: Option<PathBuf>,
    keys: Arc<dyn ApiKeyStore>,
    key_a: String,
    key_b: String,
    audit: InMemoryAuditLog,
    schema: Option<(tokio_postgres::Client, String)>,
}

impl Db {
    async fn sqlite() -> Db {
        let dir = std::env::temp_dir().join(format!("loom-across-{}", loom_agent::new_id("t")));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite:{}", dir.join("loom.db").display());
        Db::with_url(url, Some(dir), None).await
    }

    async fn postgres() -> Option<Db> {
        let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL") else {
            eprintln!("skipped: LOOM_TEST_POSTGRES_URL is not set");
            return None;
        };
        let schema = format!("loom_across_{}", loom_agent::new_id("s").replace('-', "_").to_lowercase());
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
        let audit = InMemoryAuditLog::new("secret").unwrap();
        Db { url, dir, keys, key_a, key_b, audit, schema }
    }

    async fn drop_schema(self) {
        if let Some((client, schema)) = &self.schema {
            client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
        }
    }

    fn agent(&self) -> Agent {
        Agent::builder()
            .name("bot")
            .model(model())
            .journal(self.url.as_str())
            .audit_log(self.audit.clone())
            .build()
            .unwrap()
    }

    async fn server(&self, settings: ServerConfig) -> Srv {
        let agent = self.agent();
        let queue = agent.run_queue().unwrap();
        let agents = BTreeMap::from([("bot".to_string(), agent)]);
        let mut state = AppState::new(agents, Some(self.keys.clone()), None);
        if settings.execution == Some(Execution::Queue) {
            state = state.with_queue(queue);
        }
        let server = Server::new(state, settings);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
        Srv { base: format!("http://{addr}"), http: reqwest::Client::new(), task }
    }

    /// A run of `session` (tenant `acme`, no user) begun in a "process" that then dies (a runtime
    /// of its own, shut down while the run waits for the model): its lease (400 ms) expires.
    fn dead_run(&self, session: &str) -> String {
        self.dead_runs(session, false).0
    }

    /// [`Db::dead_run`], and with `waiting` a second run of the session, waiting behind the first
    /// and held (`Agent::hold_waiting`, as `POST /runs` holds it) when the "process" dies.
    fn dead_runs(&self, session: &str, waiting: bool) -> (String, Option<String>) {
        let url = self.url.clone();
        let audit = self.audit.clone();
        let session = session.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let id = rt.block_on(async {
                let agent = Agent::builder()
                    .name("bot")
                    .model(model())
                    .journal(url.as_str())
                    .audit_log(audit)
                    .lease_ttl(Duration::from_millis(400))
                    .build()
                    .unwrap();
                let session = agent.session(SessionConfig {
                    id: Some(session),
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
                let mut second = None;
                if waiting {
                    let run = session.start(RunRequest::new("waiting when the process dies").user("acme/"));
                    let input = loom_agent::run::RunInput::Prompt("waiting when the process dies".into());
                    let request = loom_agent::queued_request(&input, &Default::default(), &Default::default());
                    assert!(agent.hold_waiting("bot", &run, request).await.unwrap());
                    second = Some(run.id().to_string());
                }
                (id, second)
            });
            rt.shutdown_background();
            id
        })
        .join()
        .unwrap()
    }

    /// The audit log's actions for one run, in order.
    fn audit_actions(&self, run_id: &str) -> Vec<String> {
        self.audit.entries().into_iter().filter(|e| e.run_id == run_id).map(|e| e.action).collect()
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
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Srv {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Srv {
    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .timeout(Duration::from_secs(20))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the run (as this server reads it) is in `state`; the last answer.
    async fn until(&self, key: &str, run_id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..500 {
            last = self.get(key, &format!("/runs/{run_id}")).await.1;
            if last["state"] == state {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {run_id} never became {state}: {last}");
    }

    /// The run's events as a JSON page (all of them).
    async fn events(&self, key: &str, run_id: &str) -> Vec<Value> {
        let (status, page) = self.get(key, &format!("/runs/{run_id}/events?limit=1000")).await;
        assert_eq!(status, 200, "{page}");
        page["events"].as_array().cloned().unwrap_or_default()
    }
}

fn id(v: &Value) -> String {
    v["run_id"].as_str().unwrap().to_string()
}

/// Exactly one start and one end entry in the audit log, in that order.
fn audited_once(db: &Db, run_id: &str) {
    let actions = db.audit_actions(run_id);
    let starts = actions.iter().filter(|a| *a == "run_started").count();
    let ends = actions.iter().filter(|a| *a == "run_finished").count();
    assert_eq!((starts, ends), (1, 1), "run {run_id}: {actions:?}");
    assert_eq!(actions.first().map(String::as_str), Some("run_started"), "{actions:?}");
    assert_eq!(actions.last().map(String::as_str), Some("run_finished"), "{actions:?}");
}

/// A run waiting in server one's session queue (behind a run executing there) is seen by server
/// two: `GET` shows it `queued`, `busy: "reject"` is refused, `POST /runs/{id}/cancel` ends it
/// `cancelled` without it starting, and `busy: "interrupt"` cancels waiting and executing runs
/// alike; another tenant gets 404.
async fn waiting_runs_are_seen(db: &Db) {
    let a = &db.key_a;
    let one = db.server(ServerConfig::default()).await;
    let two = db.server(ServerConfig::default()).await;
    let (status, first) = one.post(a, "/runs", json!({"input": "hang first", "session_id": "s"})).await;
    assert_eq!(status, 201, "{first}");
    let first = id(&first);
    one.until(a, &first, "running").await;
    let (status, second) = one.post(a, "/runs", json!({"input": "second", "session_id": "s"})).await;
    assert_eq!((status, second["state"].as_str()), (201, Some("queued")), "{second}");
    let second = id(&second);

    // Server two sees the waiting run.
    let (status, seen) = two.get(a, &format!("/runs/{second}")).await;
    assert_eq!((status, seen["state"].as_str()), (200, Some("queued")), "{seen}");
    assert_eq!(seen["session_id"], "s", "{seen}");
    let (_, list) = two.get(a, "/runs?session_id=s").await;
    assert!(list["runs"].as_array().unwrap().iter().any(|r| r["run_id"] == second.as_str()), "{list}");
    // Another tenant: 404 on both.
    assert_eq!(two.get(&db.key_b, &format!("/runs/{second}")).await.0, 404);
    assert_eq!(two.post(&db.key_b, &format!("/runs/{second}/cancel"), json!({})).await.0, 404);
    // Its events, as SSE from server two: the stream ends once the run has ended (below).
    let sse = {
        let r = two
            .http
            .get(format!("{}/runs/{second}/events", two.base))
            .bearer_auth(a)
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        tokio::spawn(async move { r.text().await.unwrap() })
    };
    assert_eq!(two.get(&db.key_b, &format!("/runs/{second}/events")).await.0, 404);
    // Its busy check refuses.
    let (status, e) = two.post(a, "/runs", json!({"input": "rejected", "session_id": "s", "busy": "reject"})).await;
    assert_eq!(status, 409, "{e}");

    // Cancelled from server two: it never starts.
    let (status, v) = two.post(a, &format!("/runs/{second}/cancel"), json!({})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    let v = one.until(a, &second, "cancelled").await;
    assert_eq!(v["turns"], 0, "{v}");
    assert_eq!(one.get(a, &format!("/runs/{first}")).await.1["state"], "running", "the cancel reached the wrong run");
    let kinds: Vec<String> =
        one.events(a, &second).await.iter().map(|e| e["type"].as_str().unwrap_or_default().to_string()).collect();
    assert!(!kinds.iter().any(|k| k.starts_with("model.")), "the cancelled run executed: {kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("run.cancelled"), "{kinds:?}");
    audited_once(db, &second);
    let sse = sse.await.unwrap();
    assert!(sse.contains("event: run.cancelled"), "the stream did not end with the run's end: {sse}");

    // Interrupt from server two: the executing run and a waiting one both end, then the new run.
    let (status, third) = one.post(a, "/runs", json!({"input": "third", "session_id": "s"})).await;
    assert_eq!((status, third["state"].as_str()), (201, Some("queued")), "{third}");
    let third = id(&third);
    let (status, after) =
        two.post(a, "/runs", json!({"input": "after", "session_id": "s", "busy": "interrupt", "wait": true})).await;
    assert_eq!((status, after["state"].as_str()), (200, Some("completed")), "{after}");
    assert_eq!(one.get(a, &format!("/runs/{first}")).await.1["state"], "cancelled");
    let v = one.get(a, &format!("/runs/{third}")).await.1;
    assert_eq!((v["state"].as_str(), v["turns"].as_u64()), (Some("cancelled"), Some(0)), "{v}");
    assert_eq!(two.get(a, &format!("/runs/{third}")).await.1["state"], "cancelled");
    audited_once(db, &third);
    audited_once(db, &first);
}

#[tokio::test]
async fn a_run_waiting_in_another_servers_session_queue_is_seen_and_cancelled() {
    waiting_runs_are_seen(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        waiting_runs_are_seen(&db).await;
        db.drop_schema().await;
    }
}

/// A run whose server died: `POST /runs/{id}/cancel` ends it `cancelled` (200), durably: its
/// events end with the terminal event, its audit log has its end, a later resume is refused; a
/// cancel and a resume at the same moment on two servers: exactly one takes the run over, and it
/// ends `cancelled` once.
async fn dead_servers_runs_are_cancelled(db: &Db) {
    let a = &db.key_a;
    let one = db.server(ServerConfig::default()).await;
    let two = db.server(ServerConfig::default()).await;
    let dead = db.dead_run("orphan");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v = one.get(a, &format!("/runs/{dead}")).await.1;
    assert_eq!(v["resumable"], true, "{v}");
    // Another tenant: 404.
    assert_eq!(one.post(&db.key_b, &format!("/runs/{dead}/cancel"), json!({})).await.0, 404);
    let (status, v) = one.post(a, &format!("/runs/{dead}/cancel"), json!({})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    let v = two.get(a, &format!("/runs/{dead}")).await.1;
    assert_eq!((v["state"].as_str(), v.get("resumable")), (Some("cancelled"), None), "{v}");
    let events = two.events(a, &dead).await;
    let terminal: Vec<&Value> = events.iter().filter(|e| e["type"] == "run.cancelled").collect();
    assert_eq!(terminal.len(), 1, "{events:?}");
    assert_eq!(events.last().unwrap()["type"], "run.cancelled");
    audited_once(db, &dead);
    let (status, e) = two.post(a, &format!("/runs/{dead}/resume"), json!({})).await;
    assert_eq!(status, 409, "a cancelled run was resumed: {e}");

    // A run that waited behind it when its server died: it never began; a cancel ends it.
    let (_, waiting) = db.dead_runs("orphan-queue", true);
    let waiting = waiting.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let v = two.get(a, &format!("/runs/{waiting}")).await.1;
    assert_eq!(v["state"], "queued", "{v}");
    let (status, v) = two.post(a, &format!("/runs/{waiting}/cancel"), json!({})).await;
    assert_eq!((status, v["state"].as_str(), v["turns"].as_u64()), (200, Some("cancelled"), Some(0)), "{v}");
    assert_eq!(one.get(a, &format!("/runs/{waiting}")).await.1["state"], "cancelled");
    audited_once(db, &waiting);

    // A cancel and a resume at once, on two servers.
    let raced = db.dead_run("raced");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (cancel_path, resume_path) = (format!("/runs/{raced}/cancel"), format!("/runs/{raced}/resume"));
    let ((cancel_status, cancelled), (resume_status, resumed)) =
        tokio::join!(one.post(a, &cancel_path, json!({})), two.post(a, &resume_path, json!({})));
    assert_eq!((cancel_status, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
    // The resume lost (409), or won and its run was then cancelled by the recorded cancel.
    assert!(resume_status == 409 || resume_status == 200, "{resume_status} {resumed}");
    let v = two.until(a, &raced, "cancelled").await;
    assert_eq!(v["state"], "cancelled");
    let events = one.events(a, &raced).await;
    assert_eq!(events.iter().filter(|e| e["type"] == "run.cancelled").count(), 1, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("run.") && t != "run.started" && t != "run.cancelled"))
            .count(),
        0,
        "{events:?}"
    );
    let ends = db.audit_actions(&raced).iter().filter(|a| *a == "run_finished").count();
    assert_eq!(ends, 1, "{:?}", db.audit_actions(&raced));
}

#[tokio::test]
async fn a_dead_servers_run_is_cancelled_once() {
    dead_servers_runs_are_cancelled(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        dead_servers_runs_are_cancelled(&db).await;
        db.drop_schema().await;
    }
}

/// Queue mode's busy check: a queued run whose worker died (its lease expired) keeps its session
/// busy until a worker has taken it over and ended it; a run that no worker takes over (begun in
/// process by a server that died) does not.
async fn queue_mode_busy_rule(db: &Db) {
    let a = &db.key_a;
    let front = db.server(ServerConfig { execution: Some(Execution::Queue), ..Default::default() }).await;
    let (status, queued) = front.post(a, "/runs", json!({"input": "work", "session_id": "q"})).await;
    assert_eq!(status, 201, "{queued}");
    let queued = id(&queued);
    // A worker claims it and dies at once: its lease lapses.
    let queue = db.agent().run_queue().unwrap();
    let claimed = queue.claim("bot", &Lease::new("a-worker-that-died", Duration::from_millis(300)), 1).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.run.run_id.as_str()).collect::<Vec<_>>(), [queued.as_str()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(queue.status(&queued).await.unwrap().unwrap().abandoned(chrono::Utc::now()));
    // A worker will take it over: still busy.
    let (status, e) = front.post(a, "/runs", json!({"input": "x", "session_id": "q", "busy": "reject"})).await;
    assert_eq!(status, 409, "{e}");
    // A worker takes it over and ends it: no longer busy.
    let worker = loom_agent::QueueWorker::new(BTreeMap::from([("bot".to_string(), db.agent())]))
        .unwrap()
        .poll_interval(Duration::from_millis(20));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(async move {
        worker
            .run(async move {
                let _ = stopped.await;
            })
            .await
    });
    front.until(a, &queued, "completed").await;
    let (status, v) =
        front.post(a, "/runs", json!({"input": "y", "session_id": "q", "busy": "reject", "wait": true})).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("completed")), "{v}");

    // A run begun in process by a server that died: nothing takes it over, so not busy.
    let dead = db.dead_run("legacy");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (status, v) =
        front.post(a, "/runs", json!({"input": "z", "session_id": "legacy", "busy": "reject", "wait": true})).await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("completed")),
        "the dead run {dead} kept the session busy: {v}"
    );
    let _ = stop.send(());
    let _ = worker.await;
}

#[tokio::test]
async fn queue_mode_counts_a_dead_workers_run_busy_only_until_it_is_taken_over() {
    queue_mode_busy_rule(&Db::sqlite().await).await;
    if let Some(db) = Db::postgres().await {
        queue_mode_busy_rule(&db).await;
        db.drop_schema().await;
    }
}
