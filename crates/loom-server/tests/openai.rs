//! The OpenAI-compatible endpoints over HTTP (the official Python SDK is exercised in loom-cli's
//! tests/serve.rs): chat completions with and without streaming, the Responses API, errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};

async fn sse_data(r: reqwest::Response) -> Vec<String> {
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_string())))
        .collect()
}

#[tokio::test]
async fn chat_completions() {
    let s = support::start().await;
    let body = json!({
        "model": "bot",
        "messages": [
            {"role": "system", "content": "ignored: the agent has its own instructions"},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "now this"}]},
        ],
        "temperature": 0.3,
    });
    let (status, r) = s.post(&s.key_a, "/v1/chat/completions", body).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["model"], "bot");
    assert_eq!(r["choices"][0]["message"], json!({"role": "assistant", "content": "Echo: now this"}));
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    // The earlier turns reached the run as context.
    let run_id = r["id"].as_str().unwrap().trim_start_matches("chatcmpl-");
    let (_, events) = s.get(&s.key_a, &format!("/runs/{run_id}/events?limit=1000")).await;
    assert!(events.to_string().contains("earlier"), "{events}");

    let (status, e) =
        s.post(&s.key_a, "/v1/chat/completions", json!({"messages": [{"role": "system", "content": "x"}]})).await;
    assert_eq!((status, e["error"]["code"].clone()), (400, json!("bad_request")));
    let (status, _) = s.post(&s.key_a, "/v1/chat/completions", json!({"model": "default"})).await;
    assert_eq!(status, 422, "messages are required");
    // A run that does not complete is an error, not an answer.
    let (status, e) = s
        .post(&s.key_a, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "tool please"}]}))
        .await;
    assert_eq!(status, 500, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("suspended"), "{e}");
}

#[tokio::test]
async fn streamed_chat_completions() {
    let s = support::start().await;
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&s.key_a)
        .json(&json!({"model": "default", "stream": true, "messages": [{"role": "user", "content": "one two three"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let data = sse_data(r).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.len() > 3, "word by word: {chunks:?}");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(text, "Echo: one two three");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
}

#[tokio::test]
async fn responses_api() {
    let s = support::start().await;
    let (status, r) = s.post(&s.key_a, "/v1/responses", json!({"model": "bot", "input": "hi there"})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!((r["object"].clone(), r["status"].clone()), (json!("response"), json!("completed")));
    assert_eq!(r["output"][0]["content"][0]["text"], "Echo: hi there");
    assert_eq!(r["output_text"], "Echo: hi there");
    let (status, r) = s
        .post(
            &s.key_a,
            "/v1/responses",
            json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "parts"}]}]}),
        )
        .await;
    assert_eq!((status, r["output_text"].clone()), (200, json!("Echo: parts")));
    let (status, _) = s.post(&s.key_a, "/v1/responses", json!({"input": 3})).await;
    assert_eq!(status, 400);
    let r = s
        .http
        .post(s.url("/v1/responses"))
        .bearer_auth(&s.key_a)
        .json(&json!({"input": "stream it", "stream": true}))
        .send()
        .await
        .unwrap();
    let events: Vec<Value> = sse_data(r).await.iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(events[0]["type"], "response.created");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["output_text"], "Echo: stream it");
    let text: String = events.iter().filter_map(|e| e["delta"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(text, "Echo: stream it");
}
