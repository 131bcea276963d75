//! A2A 1.0 over HTTP: the agent card, the JSON-RPC methods and their errors (parse, invalid
//! request, method not found, invalid params, version, task not found / not cancelable,
//! unsupported), tenancy, SSE streams, the official Python SDK (`a2a-sdk==1.3.0`, installed by
//! .ci/run; skipped when missing), and a Loom agent calling `loom serve` through
//! `capability::a2a`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::{Agent, Message, RunState};
use serde_json::{Value, json};
use support::TestServer;

/// A JSON-RPC call with the version header; the HTTP status and the body.
async fn rpc_raw(s: &TestServer, key: &str, version: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = s.http.post(s.url("/a2a")).bearer_auth(key).header("content-type", "application/json");
    if let Some(v) = version {
        req = req.header("A2A-Version", v);
    }
    let r = req.body(body.to_string()).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn rpc(s: &TestServer, key: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
    let (status, v) = rpc_raw(s, key, Some("1.0"), &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["jsonrpc"].clone(), v["id"].clone()), (json!("2.0"), json!(7)), "{v}");
    v
}

fn send(text: &str) -> Value {
    json!({"message": {"messageId": format!("m-{text}"), "role": "ROLE_USER", "parts": [{"text": text}]}})
}

fn code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or_else(|| panic!("not an error: {v}"))
}

/// The SSE `data` lines of a response, parsed.
async fn sse(r: reqwest::Response) -> Vec<Value> {
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|f| {
            f.lines().find_map(|l| l.strip_prefix("data:").map(|d| serde_json::from_str(d.trim()).unwrap()))
        })
        .collect()
}

async fn stream(s: &TestServer, key: &str, method: &str, params: Value) -> reqwest::Response {
    s.http
        .post(s.url("/a2a"))
        .bearer_auth(key)
        .header("A2A-Version", "1.0")
        .header("accept", "text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": "s1", "method": method, "params": params}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_agent_card_is_public_and_describes_the_jsonrpc_interface() {
    let s = support::start().await;
    let r = s.http.get(s.url("/.well-known/agent-card.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("max-age"));
    assert!(r.headers().contains_key("etag"));
    let card: Value = r.json().await.unwrap();
    assert_eq!(card["name"], "bot");
    assert_eq!(
        card["supportedInterfaces"],
        json!([{"url": s.url("/a2a"), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}])
    );
    assert_eq!(
        card["capabilities"],
        json!({"streaming": true, "pushNotifications": false, "extendedAgentCard": false})
    );
    assert_eq!(card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"], "Bearer");
    assert_eq!(card["securityRequirements"], json!([{"schemes": {"bearer": {"list": []}}}]));
    assert_eq!(card["skills"][0]["id"], "bot");
    assert!(card["skills"][0]["tags"].is_array() && card["defaultInputModes"].is_array());
    assert!(card["version"].is_string() && card["description"].is_string());
    assert!(card.get("url").is_none(), "no 0.3 fields");
}

#[tokio::test]
async fn the_endpoint_needs_a_key_and_a_supported_version() {
    let s = support::start().await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}).to_string();
    let r = s.http.post(s.url("/a2a")).header("A2A-Version", "1.0").body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    for version in [Some("0.3"), Some("2.0"), None] {
        let (status, v) = rpc_raw(&s, &s.key_a, version, &body).await;
        assert_eq!((status, code(&v)), (200, -32009), "{version:?}: {v}");
        assert_eq!(v["error"]["data"][0]["reason"], "VERSION_NOT_SUPPORTED");
        assert_eq!(v["error"]["data"][0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    }
    // A patch number is ignored; the version may come as a query parameter.
    let (_, v) = rpc_raw(&s, &s.key_a, Some("1.0.3"), &body).await;
    assert_eq!(code(&v), -32001);
    let r = s.http.post(s.url("/a2a?A2A-Version=1.0")).bearer_auth(&s.key_a).body(body).send().await.unwrap();
    assert_eq!(code(&r.json::<Value>().await.unwrap()), -32001);
}

#[tokio::test]
async fn malformed_requests_get_the_jsonrpc_errors() {
    let s = support::start().await;
    let k = &s.key_a;
    let (status, v) = rpc_raw(&s, k, Some("1.0"), "{not json").await;
    assert_eq!((status, code(&v), v["id"].clone()), (200, -32700, Value::Null));
    assert_eq!(code(&rpc_raw(&s, k, Some("1.0"), "[]").await.1), -32600);
    assert_eq!(code(&rpc_raw(&s, k, Some("1.0"), r#"{"jsonrpc":"2.0","id":1}"#).await.1), -32600);
    let (_, v) = rpc_raw(&s, k, Some("1.0"), r#"{"jsonrpc":"1.0","id":"a","method":"GetTask"}"#).await;
    assert_eq!((code(&v), v["id"].clone()), (-32600, json!("a")));
    assert_eq!(code(&rpc(&s, k, "tasks/get", json!({})).await), -32601);
    assert_eq!(code(&rpc(&s, k, "NoSuchMethod", json!({})).await), -32601);
    assert_eq!(code(&rpc(&s, k, "GetTask", json!({})).await), -32602);
    assert_eq!(code(&rpc(&s, k, "SendMessage", json!({})).await), -32602);
    let no_parts = json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": []}});
    assert_eq!(code(&rpc(&s, k, "SendMessage", no_parts).await), -32602);
    let image = json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"raw": "AAAA", "mediaType": "image/png"}]}});
    assert_eq!(code(&rpc(&s, k, "SendMessage", image).await), -32005);
    let v = rpc(&s, k, "CreateTaskPushNotificationConfig", json!({"taskId": "x", "url": "http://127.0.0.1/"})).await;
    assert_eq!(code(&v), -32003);
    assert_eq!(code(&rpc(&s, k, "GetExtendedAgentCard", json!({})).await), -32004);
    let unknown_agent = json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
        "metadata": {"skill": "nope"}});
    // One agent: any skill name picks it (as `model` does for /v1).
    assert_eq!(
        rpc(&s, k, "SendMessage", unknown_agent).await["result"]["task"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
}

#[tokio::test]
async fn send_message_runs_a_task_that_maps_to_a_run() {
    let s = support::start().await;
    let v = rpc(&s, &s.key_a, "SendMessage", send("hello there")).await;
    let task = &v["result"]["task"];
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    assert!(task["status"]["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(task["artifacts"][0]["parts"], json!([{"text": "Echo: hello there"}]));
    assert_eq!(task["history"][0]["role"], "ROLE_USER");
    let (id, ctx) = (task["id"].as_str().unwrap(), task["contextId"].as_str().unwrap());
    // The task is the run, the context its session.
    let (status, run) = s.get(&s.key_a, &format!("/runs/{id}")).await;
    assert_eq!(
        (status, run["session_id"].as_str(), run["output"].as_str()),
        (200, Some(ctx), Some("Echo: hello there"))
    );
    // A follow-up in the same context continues the session.
    let mut follow = send("more");
    follow["message"]["contextId"] = json!(ctx);
    let v = rpc(&s, &s.key_a, "SendMessage", follow).await;
    assert_eq!(v["result"]["task"]["contextId"], ctx);
    let (_, history) = s.get(&s.key_a, &format!("/sessions/{ctx}/history")).await;
    let text = history.to_string();
    assert!(text.contains("hello there") && text.contains("Echo: more"), "{history}");
    // GetTask, with historyLength.
    let got = rpc(&s, &s.key_a, "GetTask", json!({"id": id, "historyLength": 1})).await;
    assert_eq!(got["result"]["id"], id);
    assert_eq!(got["result"]["history"].as_array().unwrap().len(), 1);
    assert_eq!(got["result"]["history"][0]["role"], "ROLE_AGENT");
    let got = rpc(&s, &s.key_a, "GetTask", json!({"id": id, "historyLength": 0})).await;
    assert!(got["result"].get("history").is_none());
    // A message to a finished task is refused; a task id that does not exist is not found.
    let mut to_done = send("again");
    to_done["message"]["taskId"] = json!(id);
    assert_eq!(code(&rpc(&s, &s.key_a, "SendMessage", to_done).await), -32004);
    let mut to_none = send("again");
    to_none["message"]["taskId"] = json!("run_nope");
    assert_eq!(code(&rpc(&s, &s.key_a, "SendMessage", to_none).await), -32001);
    // Cancelling a completed task is refused.
    let v = rpc(&s, &s.key_a, "CancelTask", json!({"id": id})).await;
    assert_eq!((code(&v), v["error"]["data"][0]["metadata"]["taskId"].as_str()), (-32002, Some(id)));
    // Subscribing to a terminal task is refused.
    let r = stream(&s, &s.key_a, "SubscribeToTask", json!({"id": id})).await;
    assert_eq!(code(&r.json::<Value>().await.unwrap()), -32004);
}

#[tokio::test]
async fn non_blocking_cancel_and_approval_states() {
    let s = support::start().await;
    let mut p = send("slow please");
    p["configuration"] = json!({"returnImmediately": true});
    let v = rpc(&s, &s.key_a, "SendMessage", p).await;
    let task = &v["result"]["task"];
    assert!(matches!(task["status"]["state"].as_str(), Some("TASK_STATE_SUBMITTED" | "TASK_STATE_WORKING")), "{v}");
    let id = task["id"].as_str().unwrap().to_string();
    let v = rpc(&s, &s.key_a, "CancelTask", json!({"id": id})).await;
    assert_eq!(v["result"]["status"]["state"], "TASK_STATE_CANCELED", "{v}");
    let (_, run) = s.get(&s.key_a, &format!("/runs/{id}")).await;
    assert_eq!(run["state"], "cancelled");
    assert_eq!(code(&rpc(&s, &s.key_a, "CancelTask", json!({"id": id})).await), -32002);

    // A tool call that waits for a person's approval: AUTH_REQUIRED, saying how to decide it.
    let v = rpc(&s, &s.key_a, "SendMessage", send("tool please")).await;
    let status = &v["result"]["task"]["status"];
    assert_eq!(status["state"], "TASK_STATE_AUTH_REQUIRED", "{v}");
    let why = status["message"]["parts"][0]["text"].as_str().unwrap();
    assert!(why.contains("approvals"), "{why}");
    let id = v["result"]["task"]["id"].as_str().unwrap();
    assert_eq!(code(&rpc(&s, &s.key_a, "CancelTask", json!({"id": id})).await), -32002);
    let (_, pending) = s.get(&s.key_a, "/approvals").await;
    assert!(pending.to_string().contains(id), "{pending}");
}

#[tokio::test]
async fn another_tenants_task_is_not_found() {
    let s = support::start().await;
    let v = rpc(&s, &s.key_a, "SendMessage", send("mine")).await;
    let id = v["result"]["task"]["id"].as_str().unwrap();
    let ctx = v["result"]["task"]["contextId"].as_str().unwrap();
    let b = &s.key_b;
    for (method, params) in [
        ("GetTask", json!({"id": id})),
        ("CancelTask", json!({"id": id})),
        ("SubscribeToTask", json!({"id": id})),
        (
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "taskId": id, "parts": [{"text": "x"}]}}),
        ),
    ] {
        let v = rpc(&s, b, method, params).await;
        assert_eq!(code(&v), -32001, "{method}: {v}");
        assert!(!v.to_string().contains("Echo"), "no data leaks: {v}");
    }
    // The same context id in another tenant is another session.
    let mut p = send("theirs");
    p["message"]["contextId"] = json!(ctx);
    let v = rpc(&s, b, "SendMessage", p).await;
    assert_eq!(v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED");
    let (_, history) = s.get(b, &format!("/sessions/{ctx}/history")).await;
    assert!(!history.to_string().contains("mine"), "{history}");
    // ListTasks shows each tenant its own.
    let mine = rpc(&s, &s.key_a, "ListTasks", json!({})).await;
    let theirs = rpc(&s, b, "ListTasks", json!({"includeArtifacts": true})).await;
    assert_eq!(mine["result"]["totalSize"], 1, "{mine}");
    assert_eq!(mine["result"]["tasks"][0]["id"], id);
    assert!(mine["result"]["tasks"][0].get("artifacts").is_none());
    assert_eq!(mine["result"]["nextPageToken"], "");
    assert_eq!(theirs["result"]["totalSize"], 1);
    assert!(theirs["result"]["tasks"][0]["artifacts"].is_array());
}

#[tokio::test]
async fn streaming_sends_the_task_then_updates_until_the_end() {
    let s = support::start().await;
    let events = sse(stream(&s, &s.key_a, "SendStreamingMessage", send("one two three")).await).await;
    assert!(events.iter().all(|e| e["jsonrpc"] == "2.0" && e["id"] == "s1"), "{events:?}");
    let results: Vec<&Value> = events.iter().map(|e| &e["result"]).collect();
    assert!(results[0]["task"]["id"].is_string(), "the task first: {results:?}");
    let task_id = results[0]["task"]["id"].as_str().unwrap();
    assert!(results.iter().any(|r| r["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING"));
    // Applying the artifact updates in order gives the answer.
    let mut text = String::new();
    let mut chunks = 0;
    for r in &results {
        if let Some(u) = r.get("artifactUpdate") {
            assert_eq!(u["taskId"], task_id);
            let chunk = u["artifact"]["parts"][0]["text"].as_str().unwrap();
            if u["append"] == true {
                text.push_str(chunk)
            } else {
                text = chunk.to_string()
            }
            chunks += 1;
        }
    }
    assert_eq!(text, "Echo: one two three");
    assert!(chunks > 3, "word by word, then the whole answer: {results:?}");
    let last = results.last().unwrap();
    assert_eq!(last["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED", "{results:?}");
    assert_eq!(last["statusUpdate"]["taskId"], task_id);

    // Subscribing to a running task follows it to its end.
    let mut p = send("slow stream");
    p["configuration"] = json!({"returnImmediately": true});
    let id = rpc(&s, &s.key_a, "SendMessage", p).await["result"]["task"]["id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let events = sse(stream(&s, &s.key_a, "SubscribeToTask", json!({"id": id})).await).await;
    assert!(started.elapsed() > Duration::from_millis(500), "it waited for the run");
    assert_eq!(events[0]["result"]["task"]["id"], id.as_str());
    let last = &events.last().unwrap()["result"];
    assert_eq!(last["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED", "{events:?}");
    // A streaming request with bad params is a JSON-RPC error, not a stream.
    let r = stream(&s, &s.key_a, "SendStreamingMessage", json!({})).await;
    assert_eq!(code(&r.json::<Value>().await.unwrap()), -32602);
}

/// A Loom agent whose tool is the `loom serve` agent, over A2A.
#[tokio::test]
async fn a_loom_agent_calls_loom_serve_through_capability_a2a() {
    let s = support::start().await;
    let model = FnModel::new("caller", |req| {
        if let Some(Message::Tool { content, .. }) = req.messages.last() {
            return ScriptedTurn::text(format!("remote said: {content}"));
        }
        let last = req.messages.iter().rev().find(|m| m.role() == "user").map(Message::text).unwrap_or_default();
        ScriptedTurn::tool_call("bot", json!({"message": last}))
    });
    let remote = loom_agent::capability::a2a(&s.base).bearer(s.key_a.clone());
    let caller = Agent::builder().model(model).capability(remote).build().unwrap();
    let session = caller.session(Default::default());
    let r = session.start("from afar").result().await;
    assert_eq!(r.state, RunState::Completed, "{:?}", r.error);
    assert_eq!(r.output, "remote said: Echo: from afar");
    let r = session.start("second").result().await;
    assert_eq!(r.output, "remote said: Echo: second");
    // Both calls landed in one remote session of tenant acme.
    let (_, runs) = s.get(&s.key_a, "/runs").await;
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["session_id"], runs[1]["session_id"]);
    // A remote run that waits for approval is a tool error the caller's model reads.
    let r = caller.run("tool please").await.unwrap();
    let failed = r.events.iter().any(|e| match &e.kind {
        loom_agent::EventKind::ToolResult(t) => t.is_error && t.output.contains("authorization"),
        _ => false,
    });
    assert!(failed, "{:?}", r.output);
    // A wrong key is refused.
    let wrong = Agent::builder()
        .model(FnModel::new("c", |req| match req.messages.last() {
            Some(Message::Tool { content, .. }) => ScriptedTurn::text(content.clone()),
            _ => ScriptedTurn::tool_call("bot", json!({"message": "x"})),
        }))
        .capability(loom_agent::capability::a2a(&s.base).bearer("loom_wrong"))
        .build()
        .unwrap();
    let r = wrong.run("x").await.unwrap();
    assert!(r.output.contains("refused the credentials (HTTP 401)"), "{}", r.output);
}

/// The official A2A Python SDK (`pip install 'a2a-sdk[http-server]==1.3.0'`, done by .ci/run).
#[tokio::test]
async fn the_a2a_python_sdk_completes_tasks_against_loom_serve() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import a2a.client, importlib.metadata as m; print(m.version('a2a-sdk'))"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        _ => {
            println!(
                "skipped: python3 with the `a2a-sdk` package is not installed (pip install 'a2a-sdk[http-server]==1.3.0')"
            );
            return;
        }
    }
    let s = support::start().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/a2a/sdk_client.py");
    let out =
        tokio::process::Command::new("python3").args([script, &s.base, &s.key_a, &s.key_b]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("card: bot JSONRPC 1.0 {} streaming=True skills=['bot']", s.url("/a2a")).as_str(),
            "send: TASK_STATE_COMPLETED Echo: hello sdk",
            "follow-up: same-context=True TASK_STATE_COMPLETED",
            "stream: first=task artifact_updates=5 text='Echo: stream this please' final=TASK_STATE_COMPLETED",
            "get: TASK_STATE_COMPLETED Echo: stream this please history=2",
            "non-blocking: in-progress=True",
            "subscribe: first=task last=status_update",
            "cancel: TASK_STATE_CANCELED",
            "cancel again: TaskNotCancelableError",
            "other tenant: TaskNotFoundError",
        ]
    );
}

/// From a configuration file: descriptions and `[server] public_url` reach the card (the
/// instructions do not), and `metadata.skill` picks one of several agents.
#[tokio::test]
async fn the_card_follows_the_configuration_and_skills_pick_the_agent() {
    use axum::body::Body;
    use tower::ServiceExt;
    let config = loom_agent::config::AgentConfig::from_toml_str(
        r#"
        [server]
        auth = false
        public_url = "https://agents.example.com/"
        [agents.planner]
        model = "echo"
        description = "Plans trips."
        instructions = "SECRET SYSTEM PROMPT"
        [agents.writer]
        model = "echo"
        "#,
    )
    .unwrap();
    let server = loom_server::Server::from_config(&config, &Default::default()).await.unwrap();
    let app = server.router().unwrap();
    let call = |req: axum::http::Request<Body>| {
        let app = app.clone();
        async move {
            let r = app.oneshot(req).await.unwrap();
            let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    let card = call(axum::http::Request::get("/.well-known/agent-card.json").body(Body::empty()).unwrap()).await;
    assert_eq!(card["supportedInterfaces"][0]["url"], "https://agents.example.com/a2a");
    assert_eq!(card["name"], "Loom agents");
    let skills: Vec<(&str, &str)> = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["description"].as_str().unwrap()))
        .collect();
    assert_eq!(skills, [("planner", "Plans trips."), ("writer", "The Loom agent `writer`.")]);
    assert!(card.get("securitySchemes").is_none(), "no keys, no scheme");
    assert!(!card.to_string().contains("SECRET"), "the instructions are not published");
    let rpc = |params: Value| {
        axum::http::Request::post("/a2a")
            .header("content-type", "application/json")
            .header("A2A-Version", "1.0")
            .body(Body::from(json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}).to_string()))
            .unwrap()
    };
    let mut p = send("hi writer");
    p["metadata"] = json!({"skill": "writer"});
    let v = call(rpc(p)).await;
    let id = v["result"]["task"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{v}");
    let run = call(axum::http::Request::get(format!("/runs/{id}")).body(Body::empty()).unwrap()).await;
    assert_eq!(run["agent"], "writer", "{run}");
    let v = call(rpc(send("which one?"))).await;
    assert_eq!(code(&v), -32602, "several agents and no skill: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("planner"), "{v}");
}
