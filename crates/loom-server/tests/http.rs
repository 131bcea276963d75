//! `loom serve` over HTTP: every endpoint, malformed and oversized bodies, unknown fields, the
//! busy-session strategies, cancel, resume, approvals and SSE with `Last-Event-ID`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::start;

#[tokio::test]
async fn health_ready_openapi_metrics_need_no_key() {
    let s = start().await;
    for path in ["/health", "/ready", "/openapi.json", "/metrics"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let (_, doc) = s.get("", "/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path, _, _) in loom_server::openapi::ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} documented");
    }
    let r = s.http.get(s.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn every_api_endpoint_needs_a_valid_key() {
    let s = start().await;
    let routes = loom_server::openapi::ROUTES.iter().filter(|r| r.3);
    for (method, path, _, _) in routes {
        let path = path
            .replace("{run_id}", "run_x")
            .replace("{call_id}", "c")
            .replace("{session_id}", "s")
            .replace("{schedule_id}", "sch_x")
            .replace("{name}", "b");
        for key in [None, Some("loom_wrong"), Some("")] {
            let mut req = match *method {
                "get" => s.http.get(s.url(&path)),
                "delete" => s.http.delete(s.url(&path)),
                "put" => s.http.put(s.url(&path)).json(&json!({})),
                _ => s.http.post(s.url(&path)).json(&json!({})),
            };
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {key:?}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn runs_are_created_got_listed_and_answered() {
    let s = start().await;
    let run = s.run(&s.key_a, json!({"input": "hello", "user_id": "alice"})).await;
    assert_eq!(run["state"], "completed");
    assert_eq!(run["output"], "Echo: hello");
    assert_eq!(run["user_id"], "alice");
    let id = run["run_id"].as_str().unwrap();
    let (status, got) = s.get(&s.key_a, &format!("/runs/{id}")).await;
    assert_eq!((status, &got["output"]), (200, &json!("Echo: hello")));
    // Without wait: 201, at once.
    let (status, started) = s.post(&s.key_a, "/runs", json!({"input": "slow one", "user_id": "bob"})).await;
    assert_eq!(status, 201);
    assert!(started["state"] == "queued" || started["state"] == "running", "{started}");
    let (_, list) = s.get(&s.key_a, "/runs?user_id=alice").await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 1);
    let (_, list) = s.get(&s.key_a, "/runs?state=completed").await;
    assert!(list["runs"].as_array().unwrap().iter().all(|r| r["state"] == "completed"));
    let sid = run["session_id"].as_str().unwrap();
    let (_, list) = s.get(&s.key_a, &format!("/runs?session_id={sid}")).await;
    assert_eq!(list["runs"][0]["run_id"], id);
    // A task input and a context.
    let run = s
        .run(
            &s.key_a,
            json!({"input": {"prompt": "structured"}, "context": {"inputs": {"k": 1}}, "metadata": {"m": 2}}),
        )
        .await;
    assert_eq!(run["output"], "Echo: structured");
    let (status, _) = s.get(&s.key_a, "/runs/run_nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_bodies_are_json_errors() {
    let s = start().await;
    let send = |body: &'static str, ct: &'static str| {
        s.http.post(s.url("/runs")).bearer_auth(&s.key_a).header("content-type", ct).body(body).send()
    };
    let r = send("{not json", "application/json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "malformed_json");
    let r = send(r#"{"input": "x", "colour": 1}"#, "application/json").await.unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("colour"), "{body}");
    let r = send(r#"{"user_id": "x"}"#, "application/json").await.unwrap();
    assert_eq!(r.status(), 422, "input is required");
    let r = send(r#"{"input": "x"}"#, "text/plain").await.unwrap();
    assert_eq!(r.status(), 415);
    let (status, body) = s.post(&s.key_a, "/runs", json!({"input": 5})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = s.post(&s.key_a, "/runs", json!({"input": "x", "user_id": ""})).await;
    assert_eq!(status, 400);
    let (status, _) = s.post(&s.key_a, "/runs", json!({"input": "x", "agent": "any-name"})).await;
    assert_eq!(status, 201, "with one agent, any name picks it");
    let (status, _) = s.post(&s.key_a, "/sessions", json!({"bogus": true})).await;
    assert_eq!(status, 422);
    let r = s.http.get(s.url("/runs?colour=red")).bearer_auth(&s.key_a).send().await.unwrap();
    assert_eq!(r.status(), 400, "unknown query fields are refused");
    // Over the 1 MiB default limit.
    let big = json!({"input": "x".repeat(2 << 20)});
    let r = s.http.post(s.url("/runs")).bearer_auth(&s.key_a).json(&big).send().await.unwrap();
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn busy_sessions_enqueue_reject_or_interrupt() {
    let s = start().await;
    let (_, first) = s.post(&s.key_a, "/runs", json!({"input": "slow 1", "session_id": "conv"})).await;
    let first_id = first["run_id"].as_str().unwrap().to_string();
    let (status, body) = s.post(&s.key_a, "/runs", json!({"input": "x", "session_id": "conv", "busy": "reject"})).await;
    assert_eq!(status, 409, "{body}");
    let (status, queued) = s.post(&s.key_a, "/runs", json!({"input": "second", "session_id": "conv"})).await;
    assert_eq!(status, 201);
    assert_eq!(queued["state"], "queued");
    let (status, _) = s
        .post(&s.key_a, "/runs", json!({"input": "third", "session_id": "conv", "busy": "interrupt", "wait": true}))
        .await;
    assert_eq!(status, 200);
    let (_, first) = s.get(&s.key_a, &format!("/runs/{first_id}")).await;
    assert_eq!(first["state"], "cancelled");
    let (_, history) = s.get(&s.key_a, "/sessions/conv/history").await;
    let texts: Vec<String> = history["messages"].as_array().unwrap().iter().map(|m| m.to_string()).collect();
    assert!(texts.iter().any(|t| t.contains("Echo: third")), "{texts:?}");
}

#[tokio::test]
async fn cancel_and_resume() {
    let s = start().await;
    let (_, run) = s.post(&s.key_a, "/runs", json!({"input": "slow cancel me"})).await;
    let id = run["run_id"].as_str().unwrap();
    let (status, cancelled) = s.post(&s.key_a, &format!("/runs/{id}/cancel"), json!({})).await;
    assert_eq!((status, &cancelled["state"]), (200, &json!("cancelled")));
    let (status, body) = s.post(&s.key_a, &format!("/runs/{id}/resume"), json!({})).await;
    assert_eq!(status, 409, "a finished run is not resumed: {body}");
    let (status, _) = s.post(&s.key_a, "/runs/run_nope/cancel", json!({})).await;
    assert_eq!(status, 404);
    // A suspended run resumes (and suspends again: the decision is still pending).
    let (_, run) = s.post(&s.key_a, "/runs", json!({"input": "tool please", "wait": true})).await;
    assert_eq!(run["state"], "suspended", "{run}");
    let id = run["run_id"].as_str().unwrap();
    let (status, resumed) = s.post(&s.key_a, &format!("/runs/{id}/resume"), json!({})).await;
    assert_eq!(status, 200, "{resumed}");
    s.wait_for(&s.key_a, id, "suspended").await;
}

#[tokio::test]
async fn approvals_are_listed_and_decided() {
    let s = start().await;
    let run = s.run(&s.key_a, json!({"input": "tool now", "user_id": "u1"})).await;
    assert_eq!(run["state"], "suspended");
    let id = run["run_id"].as_str().unwrap();
    let (_, list) = s.get(&s.key_a, "/approvals").await;
    let pending = list["approvals"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{list}");
    assert_eq!(pending[0]["tool"], "danger");
    let call = pending[0]["call_id"].as_str().unwrap();
    let (status, _) = s.post(&s.key_a, &format!("/runs/{id}/approvals/{call}"), json!({"decision": "maybe"})).await;
    assert_eq!(status, 422);
    let (status, _) = s.post(&s.key_a, &format!("/runs/{id}/approvals/{call}"), json!({"decision": "edit"})).await;
    assert_eq!(status, 400, "edit needs arguments");
    let (status, _) = s.post(&s.key_a, &format!("/runs/{id}/approvals/nocall"), json!({"decision": "allow"})).await;
    assert_eq!(status, 404);
    let (status, body) = s
        .post(&s.key_a, &format!("/runs/{id}/approvals/{call}"), json!({"decision": "edit", "arguments": {"x": 7}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let done = s.wait_for(&s.key_a, id, "completed").await;
    assert_eq!(done["output"], "done: ran with {\"x\":7}");
    let (_, list) = s.get(&s.key_a, "/approvals").await;
    assert!(list["approvals"].as_array().unwrap().is_empty());
    // Deny.
    let run = s.run(&s.key_a, json!({"input": "tool again"})).await;
    let id = run["run_id"].as_str().unwrap();
    let (_, list) = s.get(&s.key_a, "/approvals").await;
    let call = list["approvals"][0]["call_id"].as_str().unwrap().to_string();
    let (status, _) =
        s.post(&s.key_a, &format!("/runs/{id}/approvals/{call}"), json!({"decision": "deny", "reason": "no"})).await;
    assert_eq!(status, 200);
    let done = s.wait_for(&s.key_a, id, "completed").await;
    assert!(done["output"].as_str().unwrap().starts_with("done: "), "{done}");
}

#[tokio::test]
async fn sessions_create_get_list_close_history_runs() {
    let s = start().await;
    let (status, made) =
        s.post(&s.key_a, "/sessions", json!({"session_id": "s1", "user_id": "ann", "metadata": {"topic": "x"}})).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["user_id"], "ann");
    let (status, _) = s.post(&s.key_a, "/sessions", json!({"session_id": "s1"})).await;
    assert_eq!(status, 409);
    let (status, fresh) = s.post(&s.key_a, "/sessions", json!({})).await;
    assert_eq!(status, 201);
    assert!(fresh["session_id"].as_str().unwrap().starts_with("sess"));
    s.run(&s.key_a, json!({"input": "first", "session_id": "s1", "user_id": "ann"})).await;
    s.run(&s.key_a, json!({"input": "second", "session_id": "s1", "user_id": "ann"})).await;
    let (status, _) = s.post(&s.key_a, "/runs", json!({"input": "x", "session_id": "s1", "user_id": "bob"})).await;
    assert_eq!(status, 409, "another user's session");
    let (_, got) = s.get(&s.key_a, "/sessions/s1").await;
    assert_eq!((got["closed"].clone(), got["metadata"]["topic"].clone()), (json!(false), json!("x")));
    let (_, list) = s.get(&s.key_a, "/sessions?user_id=ann").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    let (_, list) = s.get(&s.key_a, "/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    let (_, history) = s.get(&s.key_a, "/sessions/s1/history").await;
    assert_eq!(history["messages"].as_array().unwrap().len(), 4, "{history}");
    let (_, runs) = s.get(&s.key_a, "/sessions/s1/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
    let (status, closed) = s.post(&s.key_a, "/sessions/s1/close", json!({})).await;
    assert_eq!((status, &closed["closed"]), (200, &json!(true)));
    let (status, _) = s.post(&s.key_a, "/runs", json!({"input": "x", "session_id": "s1", "user_id": "ann"})).await;
    assert_eq!(status, 409, "a closed session");
    let (status, _) = s.get(&s.key_a, "/sessions/nope").await;
    assert_eq!(status, 404);
}

/// Reads SSE frames `(id, event, data)` from a response until `n` events or the end (a chunk may
/// carry several events: the ones after the `n`th are not read, as a client that stops there).
async fn sse(r: reqwest::Response, n: usize) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = r.bytes_stream();
    while out.len() < n {
        let Some(chunk) = body.next().await else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while out.len() < n
            && let Some(end) = buf.find("\n\n")
        {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut id, mut ev, mut data) = (None, String::new(), String::new());
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    ev = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if let Some(id) = id {
                out.push((id, ev, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_reconnects_with_last_event_id_losing_and_repeating_nothing() {
    let s = start().await;
    let run = s.run(&s.key_a, json!({"input": "one two three four five six"})).await;
    let id = run["run_id"].as_str().unwrap();
    let path = format!("/runs/{id}/events");
    let (_, page) = s.get(&s.key_a, &path).await;
    let all: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(page["done"], true);
    assert!(all.len() > 6, "{page}");
    let open = |last: Option<u64>| {
        let mut req = s.http.get(s.url(&path)).bearer_auth(&s.key_a).header("accept", "text/event-stream");
        if let Some(l) = last {
            req = req.header("last-event-id", l.to_string());
        }
        req.send()
    };
    // Read 3, drop the connection, reconnect from the last id seen, and again.
    let mut seen = Vec::new();
    let first = sse(open(None).await.unwrap(), 3).await;
    seen.extend(first.iter().map(|e| e.0));
    let second = sse(open(seen.last().copied()).await.unwrap(), 2).await;
    seen.extend(second.iter().map(|e| e.0));
    let rest = sse(open(seen.last().copied()).await.unwrap(), usize::MAX).await;
    seen.extend(rest.iter().map(|e| e.0));
    assert_eq!(seen, all, "every event once, in order");
    assert_eq!(rest.last().unwrap().1, "run.completed");
    assert_eq!(first[0].2["type"], "run.started", "{:?}", first[0]);
    // The JSON page form pages the same way.
    let (_, page) = s.get(&s.key_a, &format!("{path}?after=2&limit=2")).await;
    let seqs: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, page["next_after"].clone(), page["done"].clone()), (vec![3, 4], json!(4), json!(false)));
    let r = open(None).await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let bad = s.http.get(s.url(&path)).bearer_auth(&s.key_a).header("last-event-id", "x").send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn sse_streams_a_live_run_and_survives_a_restart_from_the_journal() {
    let s = start().await;
    let (_, run) = s.post(&s.key_a, "/runs", json!({"input": "slow live"})).await;
    let id = run["run_id"].as_str().unwrap().to_string();
    let r = s
        .http
        .get(s.url(&format!("/runs/{id}/events")))
        .bearer_auth(&s.key_a)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(10), sse(r, usize::MAX)).await.unwrap();
    assert_eq!(events.last().unwrap().1, "run.completed");
    // Forget the live handle: the events come from the durable log.
    s.state.forget_run(&id);
    let r = s
        .http
        .get(s.url(&format!("/runs/{id}/events")))
        .bearer_auth(&s.key_a)
        .header("accept", "text/event-stream")
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    let stored = sse(r, usize::MAX).await;
    let want: Vec<u64> = events.iter().map(|e| e.0).filter(|s| *s > 1).collect();
    assert_eq!(stored.iter().map(|e| e.0).collect::<Vec<_>>(), want);
    let (status, got) = s.get(&s.key_a, &format!("/runs/{id}")).await;
    assert_eq!((status, &got["output"]), (200, &json!("Echo: slow live")));
    let (status, _) = s.get(&s.key_b, &format!("/runs/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn metrics_count_runs_and_tokens() {
    let s = start().await;
    s.run(&s.key_a, json!({"input": "count me"})).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("loom_runs_finished_total{state=\"completed\"} 1"), "{text}");
    assert!(text.contains("loom_run_duration_seconds_count 1"), "{text}");
    assert!(text.contains("loom_queue_depth 0"), "{text}");
    assert!(text.contains("loom_tokens_total{kind=\"input\"}"), "{text}");
}

#[tokio::test]
async fn runs_stream_starts_a_run_and_streams_its_events_in_one_request() {
    let s = start().await;
    let r = s
        .http
        .post(s.url("/runs/stream"))
        .bearer_auth(&s.key_a)
        .json(&json!({"input": "one two three four", "user_id": "ann", "session_id": "st"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let location = r.headers()["content-location"].to_str().unwrap().to_string();
    let id = location.strip_prefix("/runs/").unwrap().to_string();
    let events = tokio::time::timeout(Duration::from_secs(10), sse(r, usize::MAX)).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(events.first().unwrap().1, "run.started");
    assert_eq!(events.last().unwrap().1, "run.completed");
    assert!(events.iter().all(|e| e.2["run_id"] == json!(id) && e.2["seq"] == json!(e.0)), "{events:?}");
    // The same ids as GET /runs/{id}/events: a client that lost the stream resumes with Last-Event-ID.
    let r = s
        .http
        .get(s.url(&format!("/runs/{id}/events")))
        .bearer_auth(&s.key_a)
        .header("accept", "text/event-stream")
        .header("last-event-id", "1")
        .send()
        .await
        .unwrap();
    let rest = sse(r, usize::MAX).await;
    assert_eq!(rest.iter().map(|e| e.0).collect::<Vec<_>>(), seqs[2..].to_vec());
    let (status, run) = s.get(&s.key_a, &location).await;
    assert_eq!(
        (status, &run["output"], &run["session_id"], &run["user_id"]),
        (200, &json!("Echo: one two three four"), &json!("st"), &json!("ann"))
    );
    // The body is POST /runs's: validated the same way; `wait` does not apply.
    let (status, body) = s.post(&s.key_a, "/runs/stream", json!({"input": "x", "wait": true})).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("bad_request")), "{body}");
    let (status, _) = s.post(&s.key_a, "/runs/stream", json!({"input": 3})).await;
    assert_eq!(status, 400);
    let (status, _) = s.post(&s.key_a, "/runs/stream", json!({"input": "x", "nope": 1})).await;
    let (runs_status, _) = s.post(&s.key_a, "/runs", json!({"input": "x", "nope": 1})).await;
    assert_eq!((status, runs_status), (422, 422), "unknown fields, as POST /runs");
}
