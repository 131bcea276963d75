//! A `loom serve` on 127.0.0.1 with a SQLite journal, two tenants' keys, and a test model:
//! `slow …` answers after 3 s, `tool …` calls the `danger` tool (which needs approval, deferred),
//! anything else is echoed word by word.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use loom_agent::config::ServerConfig;
use loom_agent::governance::{Approval, FnApproval};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::tool::ToolFlags;
use loom_agent::{Agent, Message, Tool, ToolContext, ToolError, ToolOutput};
use loom_server::{AppState, Server};
use serde_json::{Value, json};

pub struct Danger;

#[async_trait::async_trait]
impl Tool for Danger {
    fn name(&self) -> &str {
        "danger"
    }
    fn description(&self) -> &str {
        "Does something that needs approval."
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"x": {"type": "integer"}}})
    }
    fn flags(&self) -> ToolFlags {
        ToolFlags::new().requires_permission()
    }
    async fn call(&self, _ctx: ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text(format!("ran with {args}")))
    }
}

pub fn model() -> FnModel {
    FnModel::new("test-model", |req| {
        if let Some(Message::Tool { content, .. }) = req.messages.last() {
            return ScriptedTurn::text(format!("done: {content}"));
        }
        let last = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
        if last.starts_with("slow") {
            ScriptedTurn::text(format!("Echo: {last}")).with_delay(Duration::from_secs(3))
        } else if last.starts_with("tool") {
            ScriptedTurn::tool_call("danger", json!({"x": 1}))
        } else {
            ScriptedTurn::text(format!("Echo: {last}")).streamed()
        }
    })
}

pub struct TestServer {
    pub base: String,
    pub key_a: String,
    pub key_b: String,
    pub http: reqwest::Client,
    pub dir: PathBuf,
    pub state: Arc<AppState>,
}

pub fn agent(journal: &str) -> Agent {
    Agent::builder()
        .name("bot")
        .model(model())
        .tool(Danger)
        .journal(journal)
        .approval_handler(FnApproval::new(|_| async { Approval::Defer }))
        .build()
        .unwrap()
}

pub async fn start_with(settings: ServerConfig) -> TestServer {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("loom-server-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    let keys = loom_agent::store::open_api_keys(&url).await.unwrap();
    let (_, key_a) = loom_server::create_key(keys.as_ref(), "acme").await.unwrap();
    let (_, key_b) = loom_server::create_key(keys.as_ref(), "globex").await.unwrap();
    let agents = BTreeMap::from([("bot".to_string(), agent(&url))]);
    let limiter = settings.tenant_rate_limit.as_ref().map(|c| c.build().unwrap());
    let server = Server::new(AppState::new(agents, Some(keys), limiter), settings);
    let state = server.state().clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_on(listener).await.unwrap() });
    TestServer { base: format!("http://{addr}"), key_a, key_b, http: reqwest::Client::new(), dir, state }
}

pub async fn start() -> TestServer {
    start_with(ServerConfig::default()).await
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, key: &str, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(self.url(path)).bearer_auth(key).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).bearer_auth(key).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Starts a run and waits for it.
    pub async fn run(&self, key: &str, body: Value) -> Value {
        let mut body = body;
        body["wait"] = json!(true);
        let (status, run) = self.post(key, "/runs", body).await;
        assert_eq!(status, 200, "{run}");
        run
    }

    /// Polls a run until it is in `state`.
    pub async fn wait_for(&self, key: &str, run_id: &str, state: &str) -> Value {
        for _ in 0..200 {
            let (_, run) = self.get(key, &format!("/runs/{run_id}")).await;
            if run["state"] == state {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("run {run_id} never reached {state}");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
