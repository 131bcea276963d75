//! Queue mode routes everything through the queue: a server with `execution = "queue"` and NO
//! worker of its own, and a `QueueWorker` (in this test process, with its own agent) on the same
//! database. The server's agent has a model that must never be called (it counts its calls and
//! answers something else) and an approver that counts its calls: `/v1/chat/completions`,
//! `/v1/responses` (plain and streamed), A2A `SendMessage`/`SendStreamingMessage`/`CancelTask`,
//! MCP tool calls, approvals (allow, deny), `resume`, and signals (run, interrupt, observe) must
//! all execute in the worker, the server answering from the database. On SQLite, and on
//! PostgreSQL (a schema of its own) when `LOOM_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loom_agent::Agent;
use loom_agent::config::{Execution, ServerConfig};
use loom_agent::governance::{Approval, FnApproval};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_mcp::model::{CallToolResult, ContentBlock};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

struct Env {
    base: String,
    key_a: String,
    key_b: String,
    http: reqwest::Client,
    /// Calls of the server's model (must stay 0).
    server_model: Arc<AtomicUsize>,
    /// Calls of the server's approver (must stay 0).
    server_approver: Arc<AtomicUsize>,
    /// Calls of the worker's approver.
    worker_approver: Arc<AtomicUsize>,
}

fn counting_approver(calls: &Arc<AtomicUsize>) -> impl loom_agent::governance::ApprovalHandler {
    let calls = calls.clone();
    FnApproval::new(move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Approval::Defer }
    })
}

/// The queue-mode server (no worker) and a worker, on the journal `url`.
async fn env(url: String) -> Env {
    let keys = loom_agent::store::open_api_keys(&url).await.unwrap();
    let (_, key_a) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
    let (_, key_b) = loom_server::create_key(keys.as_ref(), "globex").await.unwrap();
    let server_model = Arc::new(AtomicUsize::new(0));
    let server_approver = Arc::new(AtomicUsize::new(0));
    let worker_approver = Arc::new(AtomicUsize::new(0));
    let calls = server_model.clone();
    let refusing = FnModel::new("test-model", move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        ScriptedTurn::text("the receiving server's model answered")
    });
    let server_agent = Agent::builder()
        .name("bot")
        .model(refusing)
        .tool(support::Danger)
        .journal(url.as_str())
        .approval_handler(counting_approver(&server_approver))
        .build()
        .unwrap();
    let queue = server_agent.run_queue().unwrap();
    let agents = BTreeMap::from([("bot".to_string(), server_agent)]);
    let settings = ServerConfig { execution: Some(Execution::Queue), ..Default::default() };
    let server = Server::new(AppState::new(agents, Some(keys), None).with_queue(queue), settings);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });

    let worker_agent = Agent::builder()
        .name("bot")
        .model(support::model())
        .tool(support::Danger)
        .journal(url.as_str())
        .approval_handler(counting_approver(&worker_approver))
        .build()
        .unwrap();
    let worker = loom_agent::QueueWorker::new([("bot".to_string(), worker_agent)])
        .unwrap()
        .poll_interval(Duration::from_millis(20));
    tokio::spawn(async move { worker.run(std::future::pending()).await });
    Env {
        base: format!("http://{addr}"),
        key_a,
        key_b,
        http: reqwest::Client::new(),
        server_model,
        server_approver,
        worker_approver,
    }
}

async fn sqlite_env() -> Env {
    let dir = std::env::temp_dir().join(format!("loom-server-qroutes-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    env(format!("sqlite:{}", dir.join("loom.db").display())).await
}

impl Env {
    async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(key).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(key).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The `data:` payloads of an SSE response to a POST.
    async fn sse(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Vec<String> {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key_a)
            .header("accept", "text/event-stream")
            .json(&body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let text = tokio::time::timeout(Duration::from_secs(20), r.text()).await.expect("the stream ends").unwrap();
        text.split("\n\n")
            .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string())))
            .collect()
    }

    async fn rpc(&self, key: &str, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
        let r = self
            .http
            .post(format!("{}/a2a", self.base))
            .bearer_auth(key)
            .header("A2A-Version", "1.0")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Polls until the run is in `state` (20 s at most).
    async fn until(&self, run_id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..1000 {
            let (_, v) = self.get(&self.key_a, &format!("/runs/{run_id}")).await;
            if v["state"] == state {
                return v;
            }
            last = v;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("run {run_id} never reached {state}: {last}");
    }

    /// Event types of a run's durable log.
    async fn event_types(&self, run_id: &str) -> Vec<String> {
        let (_, page) = self.get(&self.key_a, &format!("/runs/{run_id}/events")).await;
        page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_string()).collect()
    }

    /// Nothing ran in the receiving server.
    fn assert_nothing_ran_here(&self) {
        assert_eq!(self.server_model.load(Ordering::SeqCst), 0, "the receiving server's model was called");
        assert_eq!(self.server_approver.load(Ordering::SeqCst), 0, "the receiving server's approver was asked");
    }
}

async fn openai_runs_in_the_worker(e: &Env) {
    let body = json!({"model": "bot", "messages": [
        {"role": "system", "content": "ignored"}, {"role": "user", "content": "hi there"}]});
    let (status, v) = e.post(&e.key_a, "/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Echo: hi there", "{v}");
    let run_id = v["id"].as_str().unwrap().trim_start_matches("chatcmpl-").to_string();
    assert_eq!(e.get(&e.key_a, &format!("/runs/{run_id}")).await.1["state"], "completed");
    assert_eq!(e.get(&e.key_b, &format!("/runs/{run_id}")).await.0, 404);

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let data = e.sse("/v1/chat/completions", streamed, &[]).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Echo: hi there", "{chunks:?}");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");

    let (status, v) = e.post(&e.key_a, "/v1/responses", json!({"input": "hello you"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["status"].as_str(), v["output_text"].as_str()), (Some("completed"), Some("Echo: hello you")));
    let data = e.sse("/v1/responses", json!({"input": "stream you", "stream": true}), &[]).await;
    let events: Vec<Value> = data.iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(events[0]["type"], "response.created");
    let deltas: String = events
        .iter()
        .filter(|v| v["type"] == "response.output_text.delta")
        .filter_map(|v| v["delta"].as_str())
        .collect();
    assert_eq!(deltas, "Echo: stream you");
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["response"]["output_text"].as_str()),
        (Some("response.completed"), Some("Echo: stream you"))
    );
    e.assert_nothing_ran_here();
}

async fn a2a_runs_in_the_worker(e: &Env) {
    let send = |text: &str| json!({"message": {"messageId": format!("m-{text}"), "role": "ROLE_USER", "parts": [{"text": text}]}});
    let v = e.rpc(&e.key_a, "SendMessage", send("hello agent")).await;
    let task = &v["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    assert_eq!(task["artifacts"][0]["parts"], json!([{"text": "Echo: hello agent"}]), "{v}");
    let id = task["id"].as_str().unwrap().to_string();
    let got = e.rpc(&e.key_a, "GetTask", json!({"id": id})).await;
    assert_eq!(got["result"]["status"]["state"], "TASK_STATE_COMPLETED", "{got}");
    assert_eq!(e.rpc(&e.key_b, "GetTask", json!({"id": id})).await["error"]["code"], -32001);
    let listed = e.rpc(&e.key_a, "ListTasks", json!({})).await;
    assert!(listed["result"]["tasks"].as_array().unwrap().iter().any(|t| t["id"] == id.as_str()), "{listed}");

    let data = e
        .sse(
            "/a2a",
            json!({"jsonrpc": "2.0", "id": "s1", "method": "SendStreamingMessage",
        "params": send("stream agent")}),
            &[("A2A-Version", "1.0")],
        )
        .await;
    let frames: Vec<Value> = data.iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert!(frames[0]["result"]["task"]["id"].is_string(), "{frames:?}");
    let last = &frames.last().unwrap()["result"]["statusUpdate"]["status"]["state"];
    assert_eq!(last, "TASK_STATE_COMPLETED", "{frames:?}");
    let answer =
        frames.iter().rev().find_map(|f| f["result"]["artifactUpdate"]["artifact"]["parts"][0]["text"].as_str());
    assert_eq!(answer, Some("Echo: stream agent"));

    // A slow task, not awaited, cancelled: the cancel reaches the worker through the database.
    let mut slow = send("slow task");
    slow["configuration"] = json!({"returnImmediately": true});
    let v = e.rpc(&e.key_a, "SendMessage", slow).await;
    let slow_id = v["result"]["task"]["id"].as_str().unwrap().to_string();
    e.until(&slow_id, "running").await;
    // Steering a task a worker runs is not available (said, not silently done elsewhere).
    let mut steer = send("more");
    steer["message"]["taskId"] = json!(slow_id);
    let refused = e.rpc(&e.key_a, "SendMessage", steer).await;
    assert_eq!(refused["error"]["code"], -32004, "{refused}");
    let v = e.rpc(&e.key_a, "CancelTask", json!({"id": slow_id})).await;
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_CANCELED", "{v}");
    e.assert_nothing_ran_here();
}

fn text(r: &CallToolResult) -> String {
    r.content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn mcp_runs_in_the_worker(e: &Env) {
    let client = loom_mcp::http(format!("{}/mcp", e.base))
        .bearer(&e.key_a)
        .name("loom")
        .handshake_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let r = client.call_tool("bot", json!({"message": "hello mcp"})).await.unwrap();
    assert_ne!(r.is_error, Some(true), "{r:?}");
    assert_eq!(text(&r), "Echo: hello mcp");
    let meta = r.meta.as_ref().unwrap();
    assert_eq!(meta.0["loom/state"], "completed");
    let run_id = meta.0["loom/run_id"].as_str().unwrap();
    assert_eq!(e.get(&e.key_a, &format!("/runs/{run_id}")).await.1["output"], "Echo: hello mcp");
    // A run that suspends for an approval is an error result saying so.
    let r = client.call_tool("bot", json!({"message": "tool call"})).await.unwrap();
    assert_eq!(r.is_error, Some(true), "{r:?}");
    assert!(text(&r).contains("approval"), "{}", text(&r));
    e.assert_nothing_ran_here();
}

async fn approvals_and_resume_go_through_the_queue(e: &Env) {
    let (status, v) = e.post(&e.key_a, "/runs", json!({"input": "tool please"})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["run_id"].as_str().unwrap().to_string();
    e.until(&id, "suspended").await;
    let asked = e.worker_approver.load(Ordering::SeqCst);
    assert!(asked >= 1);
    let (_, pending) = e.get(&e.key_a, "/approvals").await;
    let ours: Vec<&Value> =
        pending["approvals"].as_array().unwrap().iter().filter(|p| p["run_id"] == id.as_str()).collect();
    assert_eq!(ours.len(), 1, "{pending}");
    let call = ours[0]["call_id"].as_str().unwrap().to_string();
    assert!(e.get(&e.key_b, "/approvals").await.1["approvals"].as_array().unwrap().is_empty());
    let path = format!("/runs/{id}/approvals/{call}");
    assert_eq!(e.post(&e.key_b, &path, json!({"decision": "allow"})).await.0, 404);
    let (status, v) = e.post(&e.key_a, &path, json!({"decision": "allow"})).await;
    assert_eq!(status, 200, "{v}");
    let done = e.until(&id, "completed").await;
    assert!(done["output"].as_str().unwrap().starts_with("done: ran with"), "{done}");
    // Deciding again: nothing pending any more.
    assert_eq!(e.post(&e.key_a, &path, json!({"decision": "allow"})).await.0, 404);
    // A finished run is not resumed.
    assert_eq!(e.post(&e.key_a, &format!("/runs/{id}/resume"), json!({})).await.0, 409);

    // Resume of a suspended run: queued, resumed by the worker (which asks its approver again).
    let (_, v) = e.post(&e.key_a, "/runs", json!({"input": "tool again"})).await;
    let id = v["run_id"].as_str().unwrap().to_string();
    e.until(&id, "suspended").await;
    let before = e.worker_approver.load(Ordering::SeqCst);
    assert_eq!(e.post(&e.key_b, &format!("/runs/{id}/resume"), json!({})).await.0, 404);
    let (status, v) = e.post(&e.key_a, &format!("/runs/{id}/resume"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "queued", "{v}");
    for _ in 0..1000 {
        if e.worker_approver.load(Ordering::SeqCst) > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(e.worker_approver.load(Ordering::SeqCst), before + 1, "the worker resumed it");
    e.until(&id, "suspended").await;
    // Denied: the worker resumes it and the model reads the denial.
    let (_, pending) = e.get(&e.key_a, "/approvals").await;
    let call = pending["approvals"].as_array().unwrap().iter().find(|p| p["run_id"] == id.as_str()).unwrap()["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) =
        e.post(&e.key_a, &format!("/runs/{id}/approvals/{call}"), json!({"decision": "deny", "reason": "no"})).await;
    assert_eq!(status, 200);
    let done = e.until(&id, "completed").await;
    let output = done["output"].as_str().unwrap();
    assert!(output.starts_with("done:") && output.contains("no") && !output.contains("ran with"), "{done}");

    // A run a worker holds is not resumed by a second process.
    let (_, v) = e.post(&e.key_a, "/runs", json!({"input": "slow resume"})).await;
    let id = v["run_id"].as_str().unwrap().to_string();
    e.until(&id, "running").await;
    assert_eq!(e.post(&e.key_a, &format!("/runs/{id}/resume"), json!({})).await.0, 409);
    e.until(&id, "completed").await;
    e.assert_nothing_ran_here();
}

async fn signals_go_through_the_queue(e: &Env) {
    let (status, v) = e.post(&e.key_a, "/sessions/sig1/signals", json!({"text": "hello signal"})).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!((v["outcome"].as_str(), v["attention"].as_str()), (Some("run_started"), Some("run")), "{v}");
    let id = v["run_id"].as_str().unwrap().to_string();
    let done = e.until(&id, "completed").await;
    assert_eq!(done["output"], "Echo: [signal from api, message, normal] hello signal");
    assert_eq!(done["session_id"], "sig1");
    let types = e.event_types(&id).await;
    let started = types.iter().position(|t| t == "run.started").unwrap();
    let received = types.iter().position(|t| t == "signal.received").expect("signal.received");
    assert!(received > started, "{types:?}");
    let (_, listed) = e.get(&e.key_a, "/sessions/sig1/signals").await;
    assert_eq!(listed["signals"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(e.get(&e.key_b, "/sessions/sig1/signals").await.0, 404);

    // A duplicate (same dedupe key) does nothing.
    let dup = json!({"text": "once", "dedupe_key": "k1", "urgency": "low"});
    assert_eq!(e.post(&e.key_a, "/sessions/sig3/signals", dup.clone()).await.1["outcome"], "stored");
    let (status, v) = e.post(&e.key_a, "/sessions/sig3/signals", dup).await;
    assert_eq!((status, v["outcome"].as_str()), (200, Some("duplicate")), "{v}");

    // Interrupt: the session's run in the worker is cancelled, the signal's run executes there.
    let (_, v) = e.post(&e.key_a, "/runs", json!({"input": "slow work", "session_id": "sig2"})).await;
    let slow = v["run_id"].as_str().unwrap().to_string();
    e.until(&slow, "running").await;
    let (status, v) =
        e.post(&e.key_a, "/sessions/sig2/signals", json!({"text": "stop now", "urgency": "critical"})).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["attention"], "interrupt", "{v}");
    assert_eq!(v["interrupted"], json!([slow]), "{v}");
    let next = v["run_id"].as_str().unwrap().to_string();
    e.until(&slow, "cancelled").await;
    let done = e.until(&next, "completed").await;
    assert_eq!(done["output"], "Echo: [signal from api, message, critical] stop now");

    // A `tool.result` signal cannot be routed through the queue: said, not done here.
    let (status, v) = e.post(&e.key_a, "/sessions/sig1/signals", json!({"text": "r", "type": "tool.result"})).await;
    assert_eq!(status, 501, "{v}");
    e.assert_nothing_ran_here();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_endpoints_run_in_a_worker() {
    openai_runs_in_the_worker(&sqlite_env().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a2a_runs_in_a_worker() {
    a2a_runs_in_the_worker(&sqlite_env().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_tool_calls_run_in_a_worker() {
    mcp_runs_in_the_worker(&sqlite_env().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_and_resume_run_in_a_worker() {
    approvals_and_resume_go_through_the_queue(&sqlite_env().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_run_in_a_worker() {
    signals_go_through_the_queue(&sqlite_env().await).await;
}

/// Everything above on PostgreSQL, in a schema of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_runs_in_a_worker_on_postgres() {
    let Ok(url) = std::env::var("LOOM_TEST_POSTGRES_URL") else {
        eprintln!("skipped: LOOM_TEST_POSTGRES_URL not set");
        return;
    };
    let id: String = loom_agent::new_id("s")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    let schema = format!("loom_qroutes_{id}");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let e = env(format!("{url}{sep}options=-csearch_path%3D{schema}")).await;
    openai_runs_in_the_worker(&e).await;
    a2a_runs_in_the_worker(&e).await;
    mcp_runs_in_the_worker(&e).await;
    approvals_and_resume_go_through_the_queue(&e).await;
    signals_go_through_the_queue(&e).await;
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}
