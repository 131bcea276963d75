//! Tenants: every endpoint that names a run, a session or an approval answers another tenant's
//! key with 404 and no data; lists show only the tenant's own; the same user and session names in
//! two tenants are two users and two sessions. Also the per-tenant rate limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::{start, start_with};

fn leaks(body: &Value, secret: &str) -> bool {
    body.to_string().contains(secret)
}

#[tokio::test]
async fn another_tenants_ids_are_404_on_every_endpoint() {
    let s = start().await;
    // Tenant A: a finished run in a session, a suspended run waiting for approval.
    let done = s.run(&s.key_a, json!({"input": "acme secret words", "session_id": "shared", "user_id": "u"})).await;
    let run_id = done["run_id"].as_str().unwrap().to_string();
    let waiting = s.run(&s.key_a, json!({"input": "tool acme", "user_id": "u"})).await;
    let wait_id = waiting["run_id"].as_str().unwrap().to_string();
    let (_, pending) = s.get(&s.key_a, "/approvals").await;
    let call_id = pending["approvals"][0]["call_id"].as_str().unwrap().to_string();

    let b = &s.key_b;
    let gets = [
        format!("/runs/{run_id}"),
        format!("/runs/{run_id}/events"),
        format!("/runs/{run_id}/events?after=0"),
        "/sessions/shared".to_string(),
        "/sessions/shared/history".to_string(),
        "/sessions/shared/runs".to_string(),
    ];
    for path in &gets {
        let (status, body) = s.get(b, path).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        assert!(!leaks(&body, "acme secret"), "{path}: {body}");
    }
    let r = s
        .http
        .get(s.url(&format!("/runs/{run_id}/events")))
        .bearer_auth(b)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "SSE");
    let posts = [
        (format!("/runs/{run_id}/cancel"), json!({})),
        (format!("/runs/{wait_id}/cancel"), json!({})),
        (format!("/runs/{wait_id}/resume"), json!({})),
        (format!("/runs/{wait_id}/approvals/{call_id}"), json!({"decision": "allow"})),
        ("/sessions/shared/close".to_string(), json!({})),
    ];
    for (path, body) in &posts {
        let (status, answer) = s.post(b, path, body.clone()).await;
        assert_eq!(status, 404, "POST {path}: {answer}");
    }
    // Nothing B did touched A's things.
    let (_, w) = s.get(&s.key_a, &format!("/runs/{wait_id}")).await;
    assert_eq!(w["state"], "suspended");
    let (_, sess) = s.get(&s.key_a, "/sessions/shared").await;
    assert_eq!(sess["closed"], false);

    // Lists are per tenant.
    let (_, runs) = s.get(b, "/runs").await;
    assert_eq!(runs["runs"], json!([]));
    let (_, runs) = s.get(b, "/runs?user_id=u").await;
    assert_eq!(runs["runs"], json!([]));
    let (_, sessions) = s.get(b, "/sessions").await;
    assert_eq!(sessions["sessions"], json!([]));
    let (_, approvals) = s.get(b, "/approvals").await;
    assert_eq!(approvals["approvals"], json!([]));

    // The same session id and user name in tenant B are B's own, with an empty history.
    let mine = s.run(b, json!({"input": "globex words", "session_id": "shared", "user_id": "u"})).await;
    assert_eq!(mine["output"], "Echo: globex words");
    let (_, history) = s.get(b, "/sessions/shared/history").await;
    assert!(!leaks(&history, "acme secret"), "{history}");
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);
    let (_, a_history) = s.get(&s.key_a, "/sessions/shared/history").await;
    assert!(!leaks(&a_history, "globex"), "{a_history}");

    // Runs a restarted server knows only from the journal are fenced the same way.
    s.state.forget_run(&run_id);
    let (status, _) = s.get(b, &format!("/runs/{run_id}")).await;
    assert_eq!(status, 404);
    let (status, _) = s.get(b, &format!("/runs/{run_id}/events")).await;
    assert_eq!(status, 404);
    let (status, _) = s.post(b, &format!("/runs/{run_id}/resume"), json!({})).await;
    assert_eq!(status, 404);
    let (status, body) = s.get(&s.key_a, &format!("/runs/{run_id}")).await;
    assert_eq!((status, &body["output"]), (200, &json!("Echo: acme secret words")));
}

#[tokio::test]
async fn openai_endpoints_act_for_the_callers_tenant() {
    let s = start().await;
    let (status, r) = s
        .post(
            &s.key_a,
            "/v1/chat/completions",
            json!({"model": "default", "messages": [{"role": "user", "content": "a"}], "user": "x"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (_, a_runs) = s.get(&s.key_a, "/runs?user_id=x").await;
    assert_eq!(a_runs["runs"].as_array().unwrap().len(), 1);
    let (_, b_runs) = s.get(&s.key_b, "/runs").await;
    assert_eq!(b_runs["runs"], json!([]));
    let id = r["id"].as_str().unwrap().trim_start_matches("chatcmpl-");
    let (status, _) = s.get(&s.key_b, &format!("/runs/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn tenants_have_their_own_rate_limit() {
    let settings = loom_agent::config::ServerConfig {
        tenant_rate_limit: Some(loom_agent::config::RateLimiterConfig {
            capacity: 3,
            refill_per_second: 0.001,
            mode: None,
        }),
        ..Default::default()
    };
    let s = start_with(settings).await;
    for _ in 0..3 {
        assert_eq!(s.get(&s.key_a, "/runs").await.0, 200);
    }
    let (status, body) = s.get(&s.key_a, "/runs").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(s.get(&s.key_b, "/runs").await.0, 200, "another tenant is not limited");
}

#[tokio::test]
async fn cors_is_off_by_default_and_configurable() {
    let s = start().await;
    let r = s.http.get(s.url("/health")).header("origin", "https://app.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let settings =
        loom_agent::config::ServerConfig { cors_origins: vec!["https://app.example".into()], ..Default::default() };
    let s = start_with(settings).await;
    let r = s.http.get(s.url("/health")).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example");
    let r = s.http.get(s.url("/health")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let settings = loom_agent::config::ServerConfig { max_body_bytes: Some(100), ..Default::default() };
    let s = start_with(settings).await;
    let (status, body) = s.post(&s.key_a, "/runs", json!({"input": "y".repeat(200)})).await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = s.post(&s.key_a, "/runs", json!({"input": "small", "wait": true})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn runs_stream_acts_for_the_callers_tenant() {
    let s = start().await;
    let stream = |key: &str, body: Value| s.http.post(s.url("/runs/stream")).bearer_auth(key).json(&body).send();
    let r =
        stream(&s.key_a, json!({"input": "acme secret words", "session_id": "shared", "user_id": "u"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let location = r.headers()["content-location"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    assert!(body.contains("run.completed"), "{body}");
    // Another tenant cannot see the run, its events, nor resume its stream.
    let b = &s.key_b;
    for path in [location.clone(), format!("{location}/events")] {
        let (status, body) = s.get(b, &path).await;
        assert_eq!(status, 404, "GET {path}: {body}");
        assert!(!leaks(&body, "acme secret"), "{path}: {body}");
    }
    let r = s
        .http
        .get(s.url(&format!("{location}/events")))
        .bearer_auth(b)
        .header("accept", "text/event-stream")
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "SSE resume");
    // The same session name in tenant B is B's own session.
    let r = stream(b, json!({"input": "globex words", "session_id": "shared", "user_id": "u"})).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(body.contains("run.completed") && !leaks(&json!(body), "acme secret"), "{body}");
    let (_, history) = s.get(b, "/sessions/shared/history").await;
    assert!(!leaks(&history, "acme secret"), "{history}");
    assert_eq!(history["messages"].as_array().unwrap().len(), 2);
    // Without a key: 401.
    let r = s.http.post(s.url("/runs/stream")).json(&json!({"input": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
}
