//! The endpoints of signals, schedules, memory, knowledge and per-tenant budgets: happy paths,
//! 401 without a key, another tenant's key (404 or empty, never data), malformed bodies and
//! unknown fields.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod budgets;
mod knowledge;
mod memory;
mod signals;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use loom_agent::config::ServerConfig;
use loom_agent::knowledge::KnowledgeSource;
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::{Agent, Message, Tool, ToolContext, ToolError, ToolOutput, Usage};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

/// Tokens each model call reports (10 in, 10 out) and its cost.
pub(crate) const TOKENS_PER_CALL: u64 = 20;
pub(crate) const COST_PER_CALL: f64 = 0.01;

/// Echoes the last user message (after 3 s for `slow …`; `nap …` calls the `nap` tool first),
/// reporting usage.
pub(crate) fn model() -> FnModel {
    FnModel::new("test-model", |req| {
        let usage = Usage { input_tokens: 10, output_tokens: 10, cost_usd: COST_PER_CALL, ..Usage::default() };
        if let Some(Message::Tool { .. }) = req.messages.last() {
            return ScriptedTurn::text("rested").with_usage(usage);
        }
        let last = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
        if last.starts_with("nap") {
            return ScriptedTurn::tool_call("nap", json!({})).with_usage(usage);
        }
        let turn = ScriptedTurn::text(format!("Echo: {last}")).with_usage(usage);
        if last.starts_with("slow") { turn.with_delay(Duration::from_secs(3)) } else { turn }
    })
}

/// A tool that takes 1.5 s.
pub(crate) struct Nap;

#[async_trait::async_trait]
impl Tool for Nap {
    fn name(&self) -> &str {
        "nap"
    }
    fn description(&self) -> &str {
        "Rests for a while."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    async fn call(&self, _ctx: ToolContext, _args: Value) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(ToolOutput::text("rested"))
    }
}

/// An agent with a SQLite journal (so signals and schedules are stored there), an in-process
/// memory without embedder or extraction, a shared knowledge source and one of tenant `acme`.
pub(crate) fn agent(journal: &str) -> Agent {
    Agent::builder()
        .name("bot")
        .model(model())
        .tool(Nap)
        .journal(journal)
        .memory("memory")
        .no_embedder()
        .auto_extract(false)
        .knowledge(
            KnowledgeSource::inline("faq")
                .document("refunds", "Refunds are paid within 14 days of the request.")
                .document("shipping", "Parcels ship from Lisbon every weekday."),
        )
        .knowledge(
            KnowledgeSource::inline("acme-notes")
                .document("pricing", "Acme confidential: the refunds discount code is ZEBRA-42.")
                .tenant("acme"),
        )
        .build()
        .unwrap()
}

pub(crate) struct Srv {
    pub(crate) base: String,
    pub(crate) key_a: String,
    pub(crate) key_b: String,
    pub(crate) http: reqwest::Client,
    pub(crate) dir: PathBuf,
    pub(crate) agent: Agent,
}

pub(crate) async fn start_with(settings: ServerConfig) -> Srv {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loom-endpoints-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    let keys = loom_agent::store::open_api_keys(&url).await.unwrap();
    let (_, key_a) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
    let (_, key_b) = loom_server::create_key(keys.as_ref(), "globex").await.unwrap();
    let agent = agent(&url);
    let agents = BTreeMap::from([("bot".to_string(), agent.clone())]);
    let server = Server::new(AppState::new(agents, Some(keys), None), settings);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
    Srv { base: format!("http://{addr}"), key_a, key_b, http: reqwest::Client::new(), dir, agent }
}

pub(crate) async fn start() -> Srv {
    start_with(ServerConfig::default()).await
}

impl Srv {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn send(&self, method: &str, key: Option<&str>, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, self.url(path));
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

    pub(crate) async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        self.send("get", Some(key), path, None).await
    }

    pub(crate) async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        self.send("post", Some(key), path, Some(body)).await
    }

    pub(crate) async fn put(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        self.send("put", Some(key), path, Some(body)).await
    }

    pub(crate) async fn delete(&self, key: &str, path: &str) -> (u16, Value) {
        self.send("delete", Some(key), path, None).await
    }

    /// A raw body with a JSON content type.
    pub(crate) async fn raw(&self, method: &str, key: &str, path: &str, body: &str) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = self
            .http
            .request(m, self.url(path))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls a run until it is in `state`.
    pub(crate) async fn wait_for(&self, key: &str, run_id: &str, state: &str) -> Value {
        for _ in 0..400 {
            let (_, run) = self.get(key, &format!("/runs/{run_id}")).await;
            if run["state"] == state {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {run_id} never reached {state}");
    }
}

impl Drop for Srv {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// Every new endpoint answers 401 without a key, with a wrong key and with an empty one.
#[tokio::test]
async fn every_new_endpoint_needs_a_key() {
    let s = start().await;
    let routes: &[(&str, &str)] = &[
        ("post", "/sessions/s/signals"),
        ("get", "/sessions/s/signals"),
        ("post", "/schedules"),
        ("get", "/schedules"),
        ("delete", "/schedules/sch_x"),
        ("get", "/memory/facts?user_id=u"),
        ("post", "/memory/facts"),
        ("get", "/memory/search?q=x"),
        ("get", "/memory/blocks"),
        ("put", "/memory/blocks/profile"),
        ("delete", "/memory/blocks/profile"),
        ("delete", "/memory?all=true"),
        ("get", "/memory/export"),
        ("get", "/knowledge/search?q=refunds"),
        ("post", "/knowledge/index"),
        ("get", "/budget"),
    ];
    for (method, path) in routes {
        for key in [None, Some("loom_wrong"), Some("")] {
            let body = matches!(*method, "post" | "put").then(|| json!({}));
            let (status, answer) = s.send(method, key, path, body).await;
            assert_eq!(status, 401, "{method} {path} with {key:?}: {answer}");
            assert_eq!(answer["error"]["code"], "unauthorized");
        }
    }
    // Every one of them is in the OpenAPI document.
    let (_, doc) = s.send("get", None, "/openapi.json", None).await;
    for (method, path) in routes {
        let path = path.split('?').next().unwrap().replace("/s/", "/{session_id}/");
        let path = path.replace("sch_x", "{schedule_id}").replace("blocks/profile", "blocks/{name}");
        assert!(doc["paths"][&path][method].is_object(), "{method} {path} documented");
    }
}
