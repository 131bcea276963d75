//! `capability::a2a(url)` against a mock A2A 1.0 server on 127.0.0.1: the card read once, one
//! tool named after the agent, `SendMessage` bodies and headers (version, bearer token), the
//! `contextId` kept per Loom session, failed/rejected tasks and JSON-RPC errors as tool errors,
//! typed errors for unreachable, missing and malformed cards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom_agent::capability::{self, A2aError};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::{Agent, EventKind, Message, RunState, SessionConfig};
use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

fn card(base: &str) -> Value {
    json!({
        "name": "Weather Bot",
        "description": "Knows the weather.",
        "supportedInterfaces": [{"url": format!("{base}/a2a"), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "version": "1.0.0",
        "capabilities": {"streaming": true},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": "forecast", "name": "forecast", "description": "Tomorrow's weather", "tags": ["weather"]}],
    })
}

fn completed(task: &str, context: &str, answer: &str) -> Reply {
    Reply::json(
        200,
        json!({"jsonrpc": "2.0", "id": "x", "result": {"task": {
            "id": task, "contextId": context,
            "status": {"state": "TASK_STATE_COMPLETED", "timestamp": "2026-01-01T00:00:00.000Z"},
            "artifacts": [{"artifactId": "a1", "name": "answer", "parts": [{"text": answer}]}],
        }}}),
    )
}

/// Calls the remote tool with the user's text, then answers with what the tool returned.
fn model() -> FnModel {
    FnModel::new("test", |req| {
        if let Some(Message::Tool { content, .. }) = req.messages.last() {
            return ScriptedTurn::text(format!("remote said: {content}"));
        }
        let last = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
        ScriptedTurn::tool_call("weather_bot", json!({"message": last}))
    })
}

fn tool_results(events: &[loom_agent::Event]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolResult(r) => Some((r.output.clone(), r.is_error)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_remote_agent_is_a_tool_and_a_session_keeps_its_context() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(200, card(&server.url())));
    server.enqueue(completed("t1", "ctx-1", "Sunny"));
    server.enqueue(completed("t2", "ctx-1", "Still sunny"));
    server.enqueue(completed("t3", "ctx-2", "Rain"));
    let remote = capability::a2a(server.url()).bearer("tok-123");
    let card = remote.connect().await.unwrap();
    assert_eq!(card.endpoint, format!("{}/a2a", server.url()));
    let agent = Agent::builder().model(model()).capability(remote).build().unwrap();

    let session = agent.session(SessionConfig { id: Some("s1".into()), ..Default::default() });
    let r = session.start("Weather in Paris?").result().await;
    assert_eq!(r.state, RunState::Completed, "{:?}", r.error);
    assert_eq!(r.output, "remote said: Sunny");
    let tools = agent.current_tools().await.unwrap();
    let spec = tools.iter().find(|t| t.name == "weather_bot").expect("the tool is offered");
    assert!(spec.description.contains("Weather Bot") && spec.description.contains("forecast"), "{}", spec.description);
    let r = session.start("And tomorrow?").result().await;
    assert_eq!(r.output, "remote said: Still sunny");
    let other = agent.session(SessionConfig { id: Some("s2".into()), ..Default::default() });
    assert_eq!(other.start("Weather in Oslo?").result().await.output, "remote said: Rain");

    let requests = server.requests();
    assert_eq!(requests.len(), 4, "the card once, then one SendMessage per call");
    assert_eq!((requests[0].method.as_str(), requests[0].path.as_str()), ("GET", "/.well-known/agent-card.json"));
    assert_eq!(requests[0].header("authorization"), None, "the token goes to the endpoint only");
    let sends: Vec<Value> = requests[1..].iter().map(|r| r.json()).collect();
    for (r, body) in requests[1..].iter().zip(&sends) {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/a2a"));
        assert_eq!(r.header("a2a-version"), Some("1.0"));
        assert_eq!(r.header("authorization"), Some("Bearer tok-123"));
        assert!(r.header("content-type").unwrap().starts_with("application/json"));
        assert_eq!(body["jsonrpc"], "2.0");
        assert_eq!(body["method"], "SendMessage");
        assert!(body["id"].is_string());
        let m = &body["params"]["message"];
        assert_eq!(m["role"], "ROLE_USER");
        assert!(m["messageId"].as_str().is_some_and(|s| !s.is_empty()));
        assert_eq!(body["params"]["configuration"]["returnImmediately"], false);
    }
    assert_eq!(sends[0]["params"]["message"]["parts"], json!([{"text": "Weather in Paris?"}]));
    assert!(sends[0]["params"]["message"].get("contextId").is_none(), "a new session starts a new context");
    assert_eq!(sends[1]["params"]["message"]["contextId"], "ctx-1", "the follow-up continues the context");
    assert!(sends[2]["params"]["message"].get("contextId").is_none(), "another session has its own");
}

#[tokio::test]
async fn failed_rejected_and_erroring_tasks_are_tool_errors() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(200, card(&server.url())));
    let ended = |state: &str, why: &str| {
        Reply::json(
            200,
            json!({"jsonrpc": "2.0", "id": 1, "result": {"task": {"id": "t", "contextId": "c",
                "status": {"state": state, "message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": why}]}}}}}),
        )
    };
    server.enqueue(ended("TASK_STATE_FAILED", "the model is down"));
    server.enqueue(ended("TASK_STATE_REJECTED", "not allowed"));
    server.enqueue(Reply::json(
        200,
        json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32009, "message": "Version not supported"}}),
    ));
    server.enqueue(Reply::json(401, json!({"error": {"code": "unauthorized"}})));
    let agent = Agent::builder().model(model()).capability(capability::a2a(server.url())).build().unwrap();
    let mut outputs = Vec::new();
    for _ in 0..4 {
        let r = agent.run("go").await.unwrap_or_else(|e| panic!("{e}"));
        outputs.extend(tool_results(&r.events));
    }
    assert_eq!(outputs.len(), 4);
    assert!(outputs.iter().all(|(_, is_error)| *is_error), "{outputs:?}");
    assert!(outputs[0].0.contains("failed the task") && outputs[0].0.contains("the model is down"), "{outputs:?}");
    assert!(outputs[1].0.contains("rejected the task"), "{outputs:?}");
    assert!(outputs[2].0.contains("-32009") && outputs[2].0.contains("Version not supported"), "{outputs:?}");
    assert!(outputs[3].0.contains("refused the credentials (HTTP 401)"), "{outputs:?}");
}

#[tokio::test]
async fn an_input_required_task_is_continued_by_the_next_call() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(200, card(&server.url())));
    server.enqueue(Reply::json(
        200,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"task": {"id": "t9", "contextId": "c9",
            "status": {"state": "TASK_STATE_INPUT_REQUIRED",
                "message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "Which city?"}]}}}}}),
    ));
    server.enqueue(completed("t9", "c9", "Sunny in Rome"));
    let agent = Agent::builder().model(model()).capability(capability::a2a(server.url())).build().unwrap();
    let session = agent.session(SessionConfig::default());
    let r = session.start("Weather?").result().await;
    assert!(r.output.contains("Which city?"), "{}", r.output);
    let r = session.start("Rome").result().await;
    assert_eq!(r.output, "remote said: Sunny in Rome");
    let follow_up = server.requests()[2].json();
    assert_eq!(follow_up["params"]["message"]["taskId"], "t9");
    assert_eq!(follow_up["params"]["message"]["contextId"], "c9");
}

#[tokio::test]
async fn a_missing_token_variable_is_a_tool_error_naming_it() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(200, card(&server.url())));
    let remote = capability::a2a(server.url()).bearer_env("LOOM_TEST_A2A_TOKEN_THAT_IS_NOT_SET");
    let agent = Agent::builder().model(model()).capability(remote).build().unwrap();
    let r = agent.run("go").await.unwrap();
    let results = tool_results(&r.events);
    assert!(results[0].1 && results[0].0.contains("LOOM_TEST_A2A_TOKEN_THAT_IS_NOT_SET"), "{results:?}");
    assert_eq!(server.requests().len(), 1, "nothing was sent without the token");
}

#[tokio::test]
async fn cards_that_cannot_be_used_are_typed_errors() {
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = capability::a2a(format!("http://{closed}")).connect().await.unwrap_err();
    assert!(matches!(err, A2aError::Unreachable { .. }), "{err}");

    let server = MockServer::start().await;
    server.enqueue(Reply::json(404, json!({})));
    assert!(matches!(capability::a2a(server.url()).connect().await, Err(A2aError::Status { status: 404, .. })));
    server.enqueue(Reply::html(200, "<html>not a card</html>"));
    assert!(matches!(capability::a2a(server.url()).connect().await, Err(A2aError::MalformedCard { .. })));
    let mut foreign = card(&server.url());
    foreign["supportedInterfaces"][0]["url"] = json!("http://169.254.169.254/a2a");
    server.enqueue(Reply::json(200, foreign.clone()));
    let err = capability::a2a(server.url()).connect().await.unwrap_err();
    assert!(matches!(err, A2aError::ForeignEndpoint { .. }), "{err}");
    server.enqueue(Reply::json(200, foreign));
    assert!(capability::a2a(server.url()).trust_card_endpoint().connect().await.is_ok());

    // A run whose card cannot be read fails honestly, before any model call.
    let agent =
        Agent::builder().model(model()).capability(capability::a2a(format!("http://{closed}"))).build().unwrap();
    let r = agent.start("go").result().await;
    assert_eq!(r.state, RunState::Failed);
    let e = r.error.unwrap();
    assert_eq!(e.kind, loom_agent::RunErrorKind::Config);
    assert!(e.message.contains("unreachable"), "{}", e.message);
}

#[test]
fn config_accepts_the_a2a_capability() {
    let config = loom_agent::config::AgentConfig::from_toml_str(
        r#"
        model = "echo"
        description = "Plans trips."
        [[capabilities]]
        kind = "a2a"
        url = "http://127.0.0.1:9/"
        token_env = "REMOTE_KEY"
        name = "weather"
        timeout = "10s"
        "#,
    )
    .unwrap();
    assert_eq!(config.description.as_deref(), Some("Plans trips."));
    assert!(config.build().is_ok());
    let bad = loom_agent::config::AgentConfig::from_toml_str(
        "model = \"echo\"\n[[capabilities]]\nkind = \"a2a\"\nurl = \"http://x/\"\ntoken_env = \"not a var\"\n",
    );
    assert!(bad.unwrap_err().to_string().contains("token_env"));
    let inline = loom_agent::config::AgentConfig::from_toml_str(
        "model = \"echo\"\n[[capabilities]]\nkind = \"a2a\"\nurl = \"http://x/\"\ntoken = \"abc\"\n",
    );
    assert!(inline.is_err(), "an inline token is refused");
}
