//! `[server] execution = "queue"`: two servers on one SQLite database, one of them running the queue
//! worker. Runs posted to the server that executes nothing are claimed by the other; every answer
//! (get, list, events as SSE with `Last-Event-ID` and as JSON, cancel) comes from the database, on
//! either server, and another tenant's key gets 404.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use loom_agent::config::{Execution, ServerConfig};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

struct Pair {
    /// Queues runs, executes none.
    front: String,
    /// Queues runs and runs the worker.
    back: String,
    key_a: String,
    key_b: String,
    http: reqwest::Client,
    /// The journal's URL.
    url: String,
}

async fn server(url: &str, keys: std::sync::Arc<dyn loom_agent::store::ApiKeyStore>, worker: bool) -> String {
    let agent = support::agent(url);
    let queue = agent.run_queue().unwrap();
    let agents = BTreeMap::from([("bot".to_string(), agent)]);
    let settings = ServerConfig { execution: Some(Execution::Queue), ..Default::default() };
    let mut server = Server::new(AppState::new(agents.clone(), Some(keys), None).with_queue(queue), settings);
    if worker {
        server =
            server.with_worker(loom_agent::QueueWorker::new(agents).unwrap().poll_interval(Duration::from_millis(20)));
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
    format!("http://{addr}")
}

async fn pair(with_worker: bool) -> Pair {
    let dir = std::env::temp_dir().join(format!("loom-server-queue-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    let keys = loom_agent::store::open_api_keys(&url).await.unwrap();
    let (_, key_a) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
    let (_, key_b) = loom_server::create_key(keys.as_ref(), "globex").await.unwrap();
    let front = server(&url, keys.clone(), false).await;
    let back = server(&url, keys, with_worker).await;
    Pair { front, back, key_a, key_b, http: reqwest::Client::new(), url }
}

impl Pair {
    /// Starts a queue worker on the database in this process.
    fn start_worker(&self) {
        let agents = BTreeMap::from([("bot".to_string(), support::agent(&self.url))]);
        let worker = loom_agent::QueueWorker::new(agents).unwrap().poll_interval(Duration::from_millis(20));
        tokio::spawn(async move { worker.run(std::future::pending()).await });
    }

    async fn post(&self, base: &str, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{base}{path}")).bearer_auth(key).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, base: &str, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{base}{path}")).bearer_auth(key).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Polls until the run is in `state` (10 s at most).
    async fn until(&self, base: &str, run_id: &str, state: &str) -> Value {
        for _ in 0..500 {
            let (_, v) = self.get(base, &self.key_a, &format!("/runs/{run_id}")).await;
            if v["state"] == state {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {run_id} never reached {state}");
    }

    /// The SSE stream of a run to its end: (id, event type, data).
    async fn sse(&self, base: &str, run_id: &str, last: Option<u64>) -> Vec<(u64, String, Value)> {
        let mut req = self
            .http
            .get(format!("{base}/runs/{run_id}/events"))
            .bearer_auth(&self.key_a)
            .header("accept", "text/event-stream");
        if let Some(last) = last {
            req = req.header("last-event-id", last.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let (mut buf, mut out) = (String::new(), Vec::new());
        let read = async {
            while let Some(chunk) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let (mut id, mut kind, mut data) = (None, String::new(), Value::Null);
                    for line in frame.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim().parse().ok();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            kind = v.trim().to_string();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                        }
                    }
                    if let Some(id) = id {
                        out.push((id, kind, data));
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), read).await.expect("the stream ends");
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_runs_on_the_worker_and_answers_from_any_server() {
    let p = pair(true).await;
    let (status, v) = p.post(&p.front, &p.key_a, "/runs", json!({"input": "hello there", "user_id": "ann"})).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["state"], "queued");
    assert_eq!(v["user_id"], "ann");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let done = p.until(&p.front, &run_id, "completed").await;
    assert_eq!(done["output"], "Echo: hello there");
    assert_eq!(done["user_id"], "ann");
    let (_, same) = p.get(&p.back, &p.key_a, &format!("/runs/{run_id}")).await;
    assert_eq!(same["output"], "Echo: hello there");
    // Listed on both servers, filtered by user and state.
    for base in [&p.front, &p.back] {
        let (_, list) = p.get(base, &p.key_a, "/runs?user_id=ann&state=completed").await;
        let ids: Vec<&str> = list["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![run_id.as_str()]);
        let (_, none) = p.get(base, &p.key_a, "/runs?user_id=bob").await;
        assert!(none["runs"].as_array().unwrap().is_empty());
    }
    // Another tenant: 404 everywhere, and an empty list.
    for path in [format!("/runs/{run_id}"), format!("/runs/{run_id}/events")] {
        assert_eq!(p.get(&p.front, &p.key_b, &path).await.0, 404, "{path}");
    }
    assert_eq!(p.post(&p.front, &p.key_b, &format!("/runs/{run_id}/cancel"), json!({})).await.0, 404);
    let (_, theirs) = p.get(&p.back, &p.key_b, "/runs").await;
    assert!(theirs["runs"].as_array().unwrap().is_empty());
    // `wait`: the finished run.
    let (status, v) = p.post(&p.front, &p.key_a, "/runs", json!({"input": "again", "wait": true})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["state"].as_str(), v["output"].as_str()), (Some("completed"), Some("Echo: again")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_durable_log_with_last_event_id() {
    let p = pair(true).await;
    let (_, v) = p.post(&p.front, &p.key_a, "/runs", json!({"input": "one two three four"})).await;
    let run_id = v["run_id"].as_str().unwrap().to_string();
    // Subscribed while the run is queued or running, on the server that does not run it.
    let all = p.sse(&p.front, &run_id, None).await;
    let ids: Vec<u64> = all.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(ids, (0..all.len() as u64).collect::<Vec<_>>(), "no gap, no repeat: {ids:?}");
    assert_eq!(all.first().map(|e| e.1.as_str()), Some("run.started"));
    assert_eq!(all.last().map(|e| e.1.as_str()), Some("run.completed"));
    assert_eq!(all.last().unwrap().2["payload"]["output"], "Echo: one two three four");
    // Reconnecting after event 2 gets exactly the rest.
    let rest = p.sse(&p.back, &run_id, Some(2)).await;
    assert_eq!(rest.iter().map(|e| e.0).collect::<Vec<_>>(), ids[3..].to_vec());
    // The JSON page.
    let (_, page) = p.get(&p.front, &p.key_a, &format!("/runs/{run_id}/events?after=0&limit=2")).await;
    let seqs: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(page["done"], false);
    let (_, page) = p.get(&p.front, &p.key_a, &format!("/runs/{run_id}/events?after=0")).await;
    assert_eq!(page["done"], true);
    assert_eq!(page["next_after"], ids.len() as u64 - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_are_recorded_and_honoured_by_the_worker() {
    let p = pair(true).await;
    // A run the worker is executing (the model answers after 3 s), cancelled through the other
    // server.
    let (_, v) = p.post(&p.front, &p.key_a, "/runs", json!({"input": "slow one"})).await;
    let run_id = v["run_id"].as_str().unwrap().to_string();
    p.until(&p.front, &run_id, "running").await;
    let (status, v) = p.post(&p.front, &p.key_a, &format!("/runs/{run_id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["error"]["kind"], "cancelled", "{v}");
    let events = p.sse(&p.back, &run_id, None).await;
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("run.cancelled"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cancelled_while_queued_ends_cancelled_when_claimed() {
    // No worker at first: the run waits in the queue.
    let p = pair(false).await;
    let (_, v) = p.post(&p.front, &p.key_a, "/runs", json!({"input": "never"})).await;
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let (status, v) = p.post(&p.front, &p.key_a, &format!("/runs/{run_id}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!((v["state"].as_str(), v["cancel_requested"].as_bool()), (Some("queued"), Some(true)), "{v}");
    // A busy session rejects, with the queue's view of it.
    let (_, s1) = p.post(&p.front, &p.key_a, "/runs", json!({"input": "first", "session_id": "s1"})).await;
    let (status, _) =
        p.post(&p.back, &p.key_a, "/runs", json!({"input": "second", "session_id": "s1", "busy": "reject"})).await;
    assert_eq!(status, 409);
    // A worker comes up: it claims them; the cancelled one ends cancelled, the others complete.
    p.start_worker();
    let v = p.until(&p.back, &run_id, "cancelled").await;
    assert_eq!(v["error"]["kind"], "cancelled", "{v}");
    let s1 = s1["run_id"].as_str().unwrap().to_string();
    let v = p.until(&p.back, &s1, "completed").await;
    assert_eq!(v["output"], "Echo: first");
    let events = p.sse(&p.front, &run_id, None).await;
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("run.cancelled"), "{events:?}");
    // The metrics count what waits in the database (nothing now).
    let metrics = p.http.get(format!("{}/metrics", p.front)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("loom_durable_queue_depth 0"), "{metrics}");
    // An unknown run: 404.
    assert_eq!(p.get(&p.front, &p.key_a, "/runs/run_unknown").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sqlite_one_server_queues_and_runs() {
    let dir = std::env::temp_dir().join(format!("loom-server-queue-one-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = format!(
        "model = \"echo\"\njournal = \"sqlite:{}\"\n[server]\nauth = false\nexecution = \"queue\"\nretention = \"30d\"\n",
        dir.join("loom.db").display()
    );
    let config = loom_agent::config::AgentConfig::from_toml_str(&toml).unwrap();
    let settings = config.server.clone().unwrap();
    assert_eq!(settings.execution, Some(Execution::Queue));
    assert_eq!(settings.retention, Some(Duration::from_secs(30 * 24 * 3600)));
    let bad = loom_agent::config::AgentConfig::from_toml_str("model = \"echo\"\n[server]\nexecution = \"elsewhere\"\n");
    assert!(bad.is_err());
    // Queue mode needs a durable journal.
    let none = loom_agent::config::AgentConfig::from_toml_str(
        "model = \"echo\"\n[server]\nauth = false\nexecution = \"queue\"\n",
    )
    .unwrap();
    let err = Server::from_config(&none, &Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("durable journal"), "{err}");
    // SQLite: the server runs the worker itself (no `loom worker` needed).
    let server = Server::from_config(&config, &Default::default()).await.unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
    let http = reqwest::Client::new();
    let r = http.post(format!("{base}/runs")).json(&json!({"input": "hi", "wait": true})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["state"].as_str(), v["output"].as_str()), (Some("completed"), Some("Echo: hi")), "{v}");
    // `POST /runs/stream` queues the run and follows its durable event log in the same request.
    let r = http.post(format!("{base}/runs/stream")).json(&json!({"input": "streamed"})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let location = r.headers()["content-location"].to_str().unwrap().to_string();
    let body = tokio::time::timeout(Duration::from_secs(20), r.text()).await.unwrap().unwrap();
    let ids: Vec<u64> = body.lines().filter_map(|l| l.strip_prefix("id:")).map(|v| v.trim().parse().unwrap()).collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "{body}");
    assert!(body.contains("event: run.started") && body.contains("event: run.completed"), "{body}");
    let v: Value = http.get(format!("{base}{location}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["output"].as_str(), Some("Echo: streamed"), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}
