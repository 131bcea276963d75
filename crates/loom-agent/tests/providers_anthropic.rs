//! The Anthropic Messages provider against a mock server: exact request bodies and headers, every
//! stream event, thinking replay, retries, non-streaming bodies, cost, full agent runs, and keys kept
//! out of everything a caller can see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use loom_agent::event::DeltaKind;
use loom_agent::message::{ContentPart, Thinking};
use loom_agent::model::providers::{AnthropicModel, HttpConfig, RetryPolicy};
use loom_agent::model::{LanguageModel, ModelChunk, ModelRequest, ModelResponse, ResponseAssembler};
use loom_agent::tool::{FunctionTool, ToolFlags, ToolSpec};
use loom_agent::{
    Agent, EventKind, FinishReason, Generation, Message, Model, ModelError, RunState, ToolCall, ToolError, Usage,
};
use loom_testkit::wire::anthropic as wire;
use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

const KEY: &str = "sk-ant-test-9f8e7d6c5b4a3210-SECRET";

/// A prompt-caching breakpoint.
#[allow(non_snake_case)]
fn EPHEMERAL() -> Value {
    json!({"type": "ephemeral"})
}

fn fast_retries(max_attempts: u32) -> HttpConfig {
    HttpConfig {
        retry: RetryPolicy {
            max_attempts,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
        ..HttpConfig::default()
    }
}

fn model(server: &MockServer) -> AnthropicModel {
    Model::anthropic("claude-sonnet-4-5").base_url(server.url()).api_key(KEY).with_config(fast_retries(3))
}

fn spec(name: &str, description: &str, parameters: Value) -> ToolSpec {
    ToolSpec { name: name.into(), description: description.into(), parameters, flags: ToolFlags::default() }
}

/// One model call; the chunks, or the first error (with the chunks before it).
async fn call(
    model: &(impl LanguageModel + ?Sized),
    messages: &[Message],
    tools: &[ToolSpec],
    generation: &Generation,
) -> (Vec<ModelChunk>, Option<ModelError>) {
    let request =
        ModelRequest { messages, tools, generation, output_schema: None, run_id: "run_test", user_id: None, turn: 1 };
    within(20, "model call", async {
        let mut stream = match model.stream(&request).await {
            Ok(s) => s,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut out = Vec::new();
        while let Some(c) = stream.next().await {
            match c {
                Ok(c) => out.push(c),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    })
    .await
}

async fn ok_call(model: &(impl LanguageModel + ?Sized), messages: &[Message]) -> Vec<ModelChunk> {
    let (chunks, err) = call(model, messages, &[], &Generation::default()).await;
    assert_eq!(err, None, "chunks so far: {chunks:?}");
    chunks
}

async fn err_call(model: &(impl LanguageModel + ?Sized), messages: &[Message]) -> ModelError {
    call(model, messages, &[], &Generation::default()).await.1.expect("the call should fail")
}

fn assemble(chunks: &[ModelChunk]) -> ModelResponse {
    let mut a = ResponseAssembler::new();
    for c in chunks {
        a.push(c.clone());
    }
    a.finish(1).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// claude-sonnet-4-5: $3 input, $0.30 cache read, $3.75 cache write, $15 output per million.
fn sonnet_cost(input: u64, cache_read: u64, cache_write: u64, output: u64) -> f64 {
    (input as f64 * 3.0 + cache_read as f64 * 0.3 + cache_write as f64 * 3.75 + output as f64 * 15.0) / 1e6
}

fn usage_of(chunks: &[ModelChunk]) -> Usage {
    chunks
        .iter()
        .rev()
        .find_map(|c| match c {
            ModelChunk::Usage(u) => Some(*u),
            _ => None,
        })
        .expect("a usage chunk")
}

// ---------------------------------------------------------------- requests

#[tokio::test]
async fn request_path_headers_and_body_are_exact() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let messages = vec![
        Message::system("Be brief."),
        Message::system("Context: x."),
        Message::User {
            content: vec![
                ContentPart::Text { text: "Look:".into() },
                ContentPart::Image { url: "data:image/png;base64,iVBORw0KGgo=".into(), media_type: None },
                ContentPart::Image { url: "https://example.com/cat.jpg".into(), media_type: Some("image/jpeg".into()) },
            ],
        },
        Message::user("And this."),
        Message::Assistant {
            content: "Checking.".into(),
            thinking: vec![],
            tool_calls: vec![
                ToolCall::new("toolu_1", "lookup", &json!({"x": "a", "n": [1, 2]})),
                ToolCall { id: "toolu_2".into(), name: "lookup".into(), arguments: "not json".into() },
            ],
        },
        Message::tool("toolu_1", "lookup", "lookup:a", false),
        Message::tool("toolu_2", "lookup", "Error: bad arguments", true),
        Message::user("Go on."),
    ];
    let tools = vec![
        spec("lookup", "Look a thing up.", x_schema()),
        spec("write", "Write a file.", json!({"type": "object", "properties": {"path": {"type": "string"}}})),
    ];
    let generation = Generation::new()
        .max_output_tokens(1000)
        .temperature(0.2)
        .top_p(0.9)
        .stop("END")
        .extension("thinking", json!({"type": "enabled", "budget_tokens": 1024}));
    let (_, err) = call(&model(&server), &messages, &tools, &generation).await;
    assert_eq!(err, None);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("x-api-key"), Some(KEY));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(r.header("authorization"), None, "Anthropic takes the key in x-api-key only");
    let expected = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "system": [
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Context: x.", "cache_control": EPHEMERAL()}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
                {"type": "text", "text": "And this."}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"x": "a", "n": [1, 2]}},
                {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "lookup:a"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "Error: bad arguments", "is_error": true},
                {"type": "text", "text": "Go on.", "cache_control": EPHEMERAL()}
            ]}
        ],
        "tools": [
            {"name": "lookup", "description": "Look a thing up.", "input_schema": x_schema()},
            {"name": "write", "description": "Write a file.",
             "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
             "cache_control": EPHEMERAL()}
        ],
        "stream": true,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "thinking": {"type": "enabled", "budget_tokens": 1024}
    });
    assert_eq!(r.json(), expected);
    // The numbers are written as given, not as their f32 widening (0.20000000298023224).
    let raw = String::from_utf8(r.body.clone()).unwrap();
    assert!(!raw.contains("0.2000") && !raw.contains("0.8999"), "{raw}");
}

#[tokio::test]
async fn an_extension_replaces_a_built_in_field_and_is_sent_once() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let generation = Generation::new()
        .temperature(0.2)
        .max_output_tokens(100)
        .extension("temperature", json!(0.7))
        .extension("max_tokens", json!(64));
    let (_, err) = call(&model(&server), &[Message::user("hi")], &[], &generation).await;
    assert_eq!(err, None);
    let r = &server.requests()[0];
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert_eq!(body.matches(r#""temperature""#).count(), 1, "{body}");
    assert_eq!(body.matches(r#""max_tokens""#).count(), 1, "{body}");
    let json = r.json();
    assert_eq!((&json["temperature"], &json["max_tokens"], &json["stream"]), (&json!(0.7), &json!(64), &json!(true)));
}

/// A tool call's arguments go back as its `input` as they were written when they are a JSON
/// object; anything else (a model's malformed or non-object arguments) goes back as `{}`.
#[tokio::test]
async fn tool_call_arguments_are_replayed_as_written_objects_or_as_empty_objects() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let call_with =
        |id: &str, arguments: &str| ToolCall { id: id.into(), name: "f".into(), arguments: arguments.into() };
    let messages = vec![
        Message::user("go"),
        Message::Assistant {
            content: String::new(),
            thinking: vec![],
            tool_calls: vec![
                call_with("t1", r#"{"b": 1, "a": {"z": [true, null]}, "big": 12345678901234567890123}"#),
                call_with("t2", "[1, 2]"),
                call_with("t3", r#""text""#),
                call_with("t4", r#"{"unclosed": "#),
                call_with("t5", ""),
            ],
        },
        Message::tool("t1", "f", "ok", false),
    ];
    let (_, err) = call(&model(&server), &messages, &[], &Generation::default()).await;
    assert_eq!(err, None);
    let r = &server.requests()[0];
    let body = String::from_utf8(r.body.clone()).unwrap();
    // As written: key order, spacing and a number no f64 holds exactly.
    assert!(body.contains(r#""input":{"b": 1, "a": {"z": [true, null]}, "big": 12345678901234567890123}"#), "{body}");
    let inputs: Vec<Value> =
        r.json()["messages"][1]["content"].as_array().unwrap().iter().map(|b| b["input"].clone()).collect();
    assert_eq!(inputs[1..], [json!({}), json!({}), json!({}), json!({})]);
}

#[tokio::test]
async fn default_max_tokens_and_no_cache_breakpoints_when_caching_is_off() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let model = model(&server).configure(|w| w.prompt_caching = false);
    let tools = vec![spec("lookup", "Look a thing up.", x_schema())];
    let messages = vec![Message::system("Sys."), Message::user("hi")];
    let (_, err) = call(&model, &messages, &tools, &Generation::default()).await;
    assert_eq!(err, None);
    let body = server.requests()[0].json();
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "system": [{"type": "text", "text": "Sys."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "tools": [{"name": "lookup", "description": "Look a thing up.", "input_schema": x_schema()}],
            "stream": true
        })
    );
    assert!(!body.to_string().contains("cache_control"));
}

#[tokio::test]
async fn default_max_tokens_can_be_configured_and_no_system_means_no_system_field() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let model = model(&server).configure(|w| w.default_max_tokens = 777);
    ok_call(&model, &[Message::user("hi")]).await;
    assert_eq!(
        server.requests()[0].json(),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 777,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL()}]}],
            "stream": true
        })
    );
}

#[tokio::test]
async fn model_strings_resolve_to_the_anthropic_provider() {
    for s in ["claude-sonnet-4-5", "anthropic:claude-sonnet-4-5", "claude:claude-sonnet-4-5"] {
        let m = Model::parse(s).unwrap();
        assert_eq!((m.provider(), m.name()), ("anthropic", "claude-sonnet-4-5"), "{s}");
    }
    // parse_with sends calls to the given base URL.
    let server = MockServer::start().await;
    server.enqueue(Reply::json(401, wire::error_body("authentication_error", "invalid x-api-key")));
    let m = Model::parse_with("claude-sonnet-4-5", Some(&server.url())).unwrap();
    let (_, err) = call(m.shared().as_ref(), &[Message::user("hi")], &[], &Generation::default()).await;
    // Either no key in this environment (no call), or the mock's 401: never a call elsewhere.
    match err {
        Some(ModelError::Authentication(_)) => {}
        other => panic!("expected an authentication error, got {other:?}"),
    }
    assert!(server.requests().iter().all(|r| r.path == "/v1/messages"));
}

// ---------------------------------------------------------------- streaming

#[tokio::test]
async fn every_stream_event_type_is_decoded_and_pings_are_ignored() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(vec![
        wire::message_start(1000, 500, 2000),
        wire::ping(),
        wire::text_start(0),
        wire::text_delta(0, "Let me "),
        wire::ping(),
        wire::text_delta(0, "check."),
        wire::block_stop(0),
        wire::tool_use_start(1, "toolu_a", "lookup"),
        wire::input_json_delta(1, ""),
        wire::input_json_delta(1, "{\"x\": "),
        wire::input_json_delta(1, "\"a\"}"),
        wire::block_stop(1),
        wire::tool_use_start(2, "toolu_b", "write"),
        wire::input_json_delta(2, "{\"path\":"),
        wire::ping(),
        wire::input_json_delta(2, "\"/tmp/x\"}"),
        wire::block_stop(2),
        wire::message_delta("tool_use", 100),
        wire::message_stop(),
    ]));
    let chunks = ok_call(&model(&server), &[Message::user("hi")]).await;
    let cost = sonnet_cost(1000, 2000, 500, 100);
    assert!(close(cost, 0.006975), "{cost}");
    let expected_usage = Usage {
        input_tokens: 1000,
        cached_input_tokens: 2000,
        cache_write_tokens: 500,
        output_tokens: 100,
        cost_usd: 0.0,
    };
    let delta = |index, id: Option<&str>, name: Option<&str>, args: &str| ModelChunk::ToolCallDelta {
        index,
        id: id.map(str::to_string),
        name: name.map(str::to_string),
        arguments: args.to_string(),
    };
    let without_cost: Vec<ModelChunk> = chunks
        .iter()
        .map(|c| match c {
            ModelChunk::Usage(u) => ModelChunk::Usage(Usage { cost_usd: 0.0, ..*u }),
            c => c.clone(),
        })
        .collect();
    assert_eq!(
        without_cost,
        vec![
            ModelChunk::Text("Let me ".into()),
            ModelChunk::Text("check.".into()),
            delta(0, Some("toolu_a"), Some("lookup"), ""),
            delta(0, None, None, ""),
            delta(0, None, None, "{\"x\": "),
            delta(0, None, None, "\"a\"}"),
            delta(1, Some("toolu_b"), Some("write"), ""),
            delta(1, None, None, "{\"path\":"),
            delta(1, None, None, "\"/tmp/x\"}"),
            ModelChunk::Usage(expected_usage),
            ModelChunk::Finish(FinishReason::ToolCalls),
        ]
    );
    assert!(close(usage_of(&chunks).cost_usd, cost), "{:?}", usage_of(&chunks));
    let r = assemble(&chunks);
    assert_eq!(r.text, "Let me check.");
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "toolu_a".into(), name: "lookup".into(), arguments: "{\"x\": \"a\"}".into() },
            ToolCall { id: "toolu_b".into(), name: "write".into(), arguments: "{\"path\":\"/tmp/x\"}".into() },
        ]
    );
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
}

#[tokio::test]
async fn text_after_a_tool_use_block_is_kept_in_order() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(vec![
        wire::message_start(10, 0, 0),
        wire::text_start(0),
        wire::text_delta(0, "A"),
        wire::block_stop(0),
        wire::tool_use_start(1, "toolu_a", "lookup"),
        wire::input_json_delta(1, "{\"x\":\"1\"}"),
        wire::block_stop(1),
        wire::text_start(2),
        wire::text_delta(2, "B"),
        wire::block_stop(2),
        wire::message_delta("tool_use", 7),
        wire::message_stop(),
    ]));
    let r = assemble(&ok_call(&model(&server), &[Message::user("hi")]).await);
    assert_eq!(r.text, "AB");
    assert_eq!(r.tool_calls, vec![ToolCall::new("toolu_a", "lookup", &json!({"x": "1"}))]);
}

#[tokio::test]
async fn stop_reasons_map_to_finish_reasons() {
    let cases = [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("tool_use", FinishReason::ToolCalls),
        ("max_tokens", FinishReason::Length),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other),
    ];
    for (reason, expected) in cases {
        let server = MockServer::start().await;
        server.enqueue(Reply::sse(vec![
            wire::message_start(5, 0, 0),
            wire::text_start(0),
            wire::text_delta(0, "x"),
            wire::block_stop(0),
            wire::message_delta(reason, 3),
            wire::message_stop(),
        ]));
        let chunks = ok_call(&model(&server), &[Message::user("hi")]).await;
        assert_eq!(chunks.last(), Some(&ModelChunk::Finish(expected)), "{reason}");
    }
}

#[tokio::test]
async fn a_stream_cut_before_message_stop_is_a_transient_error() {
    let server = MockServer::start().await;
    let cut = vec![wire::message_start(5, 0, 0), wire::text_start(0), wire::text_delta(0, "partial")];
    server.enqueue(Reply::sse(cut));
    let model = Model::anthropic("claude-sonnet-4-5").base_url(server.url()).api_key(KEY).with_config(fast_retries(1));
    let (chunks, err) = call(&model, &[Message::user("hi")], &[], &Generation::default()).await;
    assert_eq!(chunks, vec![ModelChunk::Text("partial".into())]);
    assert!(matches!(err, Some(ModelError::Transient { .. })), "{err:?}");
}

// ---------------------------------------------------------------- thinking

#[tokio::test]
async fn thinking_is_replayed_first_with_its_exact_signature_then_the_tool_use() {
    let server = MockServer::start().await;
    let signature = "EqQBCkgIARABGAIiQL+sig/with+slashes==";
    server.enqueue(Reply::sse(vec![
        wire::message_start(50, 0, 0),
        wire::thinking_start(0),
        wire::thinking_delta(0, "The user wants "),
        wire::thinking_delta(0, "a lookup."),
        wire::signature_delta(0, signature),
        wire::block_stop(0),
        wire::redacted_thinking_start(1, "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"),
        wire::block_stop(1),
        wire::tool_use_start(2, "toolu_1", "lookup"),
        wire::input_json_delta(2, "{\"x\":\"a\"}"),
        wire::block_stop(2),
        wire::message_delta("tool_use", 40),
        wire::message_stop(),
    ]));
    server.enqueue(Reply::sse(wire::text_stream("Found a.", 120, 5)));
    let thinking = json!({"type": "enabled", "budget_tokens": 1024});
    let agent = Agent::builder()
        .model(model(&server))
        .tool(echo_tool("lookup"))
        .generation(Generation::new().extension("thinking", thinking.clone()))
        .build()
        .unwrap();
    let result = within(20, "run", agent.run("find a")).await.unwrap();
    assert_eq!(result.output, "Found a.");

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].json()["thinking"], thinking);
    assert_eq!(
        requests[1].json(),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "find a"}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "The user wants a lookup.", "signature": signature},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT"},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"x": "a"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "lookup:a", "cache_control": EPHEMERAL()}
                ]}
            ],
            "tools": [{"name": "lookup", "description": "Echo x (lookup).", "input_schema": x_schema(),
                       "cache_control": EPHEMERAL()}],
            "stream": true,
            "thinking": thinking
        })
    );
    // The reasoning streamed as thinking deltas, never as answer text.
    let deltas: Vec<(DeltaKind, String)> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelDelta(d) => Some((d.kind, d.text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        deltas,
        vec![
            (DeltaKind::Thinking, "The user wants ".into()),
            (DeltaKind::Thinking, "a lookup.".into()),
            (DeltaKind::Text, "Foun".into()),
            (DeltaKind::Text, "d a.".into()),
        ]
    );
}

/// With `thinking.display: "omitted"` a thinking block has an empty text and only its signature: it
/// must go back as a thinking block, not as redacted_thinking.
#[tokio::test]
async fn omitted_thinking_is_replayed_as_a_thinking_block_with_its_signature() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(vec![
        wire::message_start(50, 0, 0),
        wire::thinking_start(0),
        wire::signature_delta(0, "EqQBCkgIARABGAIiQOmitted=="),
        wire::block_stop(0),
        wire::tool_use_start(1, "toolu_1", "lookup"),
        wire::input_json_delta(1, "{\"x\":\"a\"}"),
        wire::block_stop(1),
        wire::message_delta("tool_use", 40),
        wire::message_stop(),
    ]));
    server.enqueue(Reply::sse(wire::text_stream("Found a.", 120, 5)));
    let thinking = json!({"type": "enabled", "budget_tokens": 1024, "display": "omitted"});
    let agent = Agent::builder()
        .model(model(&server))
        .tool(echo_tool("lookup"))
        .generation(Generation::new().extension("thinking", thinking))
        .build()
        .unwrap();
    let run = agent.start("find a");
    let result = within(20, "run", run.result()).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(
        server.requests()[1].json()["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "", "signature": "EqQBCkgIARABGAIiQOmitted=="},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"x": "a"}}
        ]})
    );
    let transcript = run.transcript();
    assert!(transcript.messages.iter().any(|m| matches!(m, Message::Assistant { thinking, .. }
        if thinking == &vec![Thinking::signed("", "EqQBCkgIARABGAIiQOmitted==", "anthropic")])));
}

#[tokio::test]
async fn redacted_thinking_in_history_is_replayed_with_its_data() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let messages = vec![
        Message::user("q"),
        Message::Assistant {
            content: String::new(),
            thinking: vec![
                Thinking::signed("plan", "sig-1", "anthropic"),
                // A block from a transcript written before tags: replayed as before.
                Thinking { text: String::new(), signature: Some("redacted_thinking:EmwKAhgB".into()), provider: None },
            ],
            tool_calls: vec![ToolCall::new("toolu_9", "lookup", &json!({"x": "z"}))],
        },
        Message::tool("toolu_9", "lookup", "lookup:z", false),
    ];
    ok_call(&model(&server), &messages).await;
    assert_eq!(
        server.requests()[0].json()["messages"][1],
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": "plan", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
            {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"x": "z"}}
        ]})
    );
}

#[tokio::test]
async fn unsigned_thinking_is_not_replayed() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let messages = vec![
        Message::user("q"),
        Message::Assistant { content: "a".into(), thinking: vec![Thinking::text("unsigned")], tool_calls: vec![] },
        Message::user("q2"),
    ];
    ok_call(&model(&server), &messages).await;
    assert_eq!(
        server.requests()[0].json()["messages"][1],
        json!({"role": "assistant", "content": [{"type": "text", "text": "a"}]})
    );
}

// ---------------------------------------------------------------- errors and retries

#[tokio::test]
async fn an_overloaded_error_event_before_any_content_is_retried() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(vec![
        wire::message_start(10, 0, 0),
        wire::ping(),
        wire::text_start(0),
        wire::error_event("overloaded_error", "Overloaded"),
    ]));
    server.enqueue(Reply::sse(wire::text_stream("second try", 10, 3)));
    let chunks = ok_call(&model(&server), &[Message::user("hi")]).await;
    assert_eq!(assemble(&chunks).text, "second try");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the retry sends the same request");
}

#[tokio::test]
async fn an_overloaded_error_event_after_content_fails_the_run_clearly() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(vec![
        wire::message_start(10, 0, 0),
        wire::text_start(0),
        wire::text_delta(0, "Half an answer"),
        wire::error_event("overloaded_error", "Overloaded"),
    ]));
    server.enqueue(Reply::sse(wire::text_stream("must not be used", 10, 3)));
    let agent = Agent::builder().model(model(&server)).build().unwrap();
    let run = agent.start("hi");
    let result = within(20, "run", run.result()).await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.model_error.as_deref(), Some("transient"));
    assert_eq!(error.message, "transient model error: Overloaded (overloaded_error)");
    assert_eq!(server.requests().len(), 1, "text reached the caller: no retry");
    assert!(
        result.events.iter().any(|e| matches!(&e.kind, EventKind::ModelDelta(d) if d.text == "Half an answer")),
        "the partial text was streamed before the failure"
    );
    check_log(&result.events, run.id(), run.session_id(), RunState::Failed);
}

#[tokio::test]
async fn http_529_overloaded_is_retried_and_gives_up_after_the_last_attempt() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(529, wire::error_body("overloaded_error", "Overloaded")));
    server.enqueue(Reply::sse(wire::text_stream("fine", 10, 3)));
    assert_eq!(assemble(&ok_call(&model(&server), &[Message::user("hi")]).await).text, "fine");
    assert_eq!(server.requests().len(), 2);

    let server = MockServer::start().await;
    server.always(Reply::json(529, wire::error_body("overloaded_error", "Overloaded")));
    let err = err_call(&model(&server), &[Message::user("hi")]).await;
    assert_eq!(err, ModelError::Transient { message: "Overloaded (HTTP 529)".into(), status: Some(529) });
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn error_statuses_map_to_error_kinds() {
    let server = MockServer::start().await;
    let m = Model::anthropic("claude-sonnet-4-5").base_url(server.url()).api_key(KEY).with_config(fast_retries(1));
    server.enqueue(Reply::json(401, wire::error_body("authentication_error", "invalid x-api-key")));
    assert_eq!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::Authentication("invalid x-api-key (HTTP 401)".into())
    );
    server.enqueue(
        Reply::json(429, wire::error_body("rate_limit_error", "Number of request tokens has exceeded your rate limit"))
            .header("retry-after", "7"),
    );
    assert_eq!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::RateLimited {
            message: "Number of request tokens has exceeded your rate limit (HTTP 429)".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
    server.enqueue(Reply::json(
        400,
        wire::error_body("invalid_request_error", "prompt is too long: 205351 tokens > 200000 maximum"),
    ));
    assert!(matches!(err_call(&m, &[Message::user("hi")]).await, ModelError::ContextLengthExceeded(_)));
    server.enqueue(Reply::json(400, wire::error_body("invalid_request_error", "messages: field required")));
    assert_eq!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::InvalidRequest("messages: field required (HTTP 400)".into())
    );
    // In-stream errors other than overloaded map by their type.
    server.enqueue(Reply::sse(vec![
        wire::message_start(1, 0, 0),
        wire::error_event("invalid_request_error", "prompt is too long: 1 tokens > 0 maximum"),
    ]));
    assert!(matches!(err_call(&m, &[Message::user("hi")]).await, ModelError::ContextLengthExceeded(_)));
    // Authentication errors are not retried even with retries on.
    let server = MockServer::start().await;
    server.always(Reply::json(401, wire::error_body("authentication_error", "invalid x-api-key")));
    assert!(matches!(err_call(&model(&server), &[Message::user("hi")]).await, ModelError::Authentication(_)));
    assert_eq!(server.requests().len(), 1);
    // Nor are billing errors, in the stream or as a status.
    let server = MockServer::start().await;
    server.always(Reply::sse(vec![
        wire::message_start(1, 0, 0),
        wire::error_event("billing_error", "Your credit balance is too low"),
    ]));
    assert_eq!(
        err_call(&model(&server), &[Message::user("hi")]).await,
        ModelError::InvalidRequest("Your credit balance is too low (billing_error)".into())
    );
    assert_eq!(server.requests().len(), 1);
    let server = MockServer::start().await;
    server.always(Reply::json(402, wire::error_body("billing_error", "Your credit balance is too low")));
    assert!(matches!(err_call(&model(&server), &[Message::user("hi")]).await, ModelError::InvalidRequest(_)));
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------- non-streaming

#[tokio::test]
async fn non_streaming_bodies_are_decoded() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        200,
        wire::message(
            vec![
                wire::thinking_block("Think.", "sig-1"),
                wire::redacted_thinking_block("opaque"),
                wire::text_block("Here:"),
                wire::tool_use_block("toolu_1", "lookup", json!({"x": "a"})),
                wire::tool_use_block("toolu_2", "lookup", json!({"x": "b"})),
            ],
            "tool_use",
            wire::usage(100, 20, 300, 50),
        ),
    ));
    let model = model(&server).streaming(false);
    let chunks = ok_call(&model, &[Message::user("hi")]).await;
    let r = &server.requests()[0];
    assert_ne!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(
        r.json(),
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": EPHEMERAL()}]}]
        }),
        "no stream field"
    );
    let cost = sonnet_cost(100, 300, 20, 50);
    assert!(close(usage_of(&chunks).cost_usd, cost));
    let response = assemble(&chunks);
    assert_eq!(
        response,
        ModelResponse {
            text: "Here:".into(),
            thinking: vec![
                Thinking::signed("Think.", "sig-1", "anthropic"),
                Thinking::signed("", "redacted_thinking:opaque", "anthropic"),
            ],
            tool_calls: vec![
                ToolCall::new("toolu_1", "lookup", &json!({"x": "a"})),
                ToolCall::new("toolu_2", "lookup", &json!({"x": "b"})),
            ],
            usage: Usage {
                input_tokens: 100,
                cached_input_tokens: 300,
                cache_write_tokens: 20,
                output_tokens: 50,
                cost_usd: usage_of(&chunks).cost_usd,
            },
            finish_reason: FinishReason::ToolCalls,
        }
    );
}

#[tokio::test]
async fn non_streaming_error_bodies_are_errors() {
    let server = MockServer::start().await;
    let model = Model::anthropic("claude-sonnet-4-5")
        .base_url(server.url())
        .api_key(KEY)
        .with_config(fast_retries(1))
        .streaming(false);
    server.enqueue(Reply::json(200, wire::error_body("overloaded_error", "Overloaded")));
    assert!(matches!(err_call(&model, &[Message::user("hi")]).await, ModelError::Transient { .. }));
    server.enqueue(Reply::bytes(200, "application/json", "{not json"));
    assert!(matches!(err_call(&model, &[Message::user("hi")]).await, ModelError::Protocol(_)));
}

// ---------------------------------------------------------------- agent runs

async fn tool_round_trip(streaming: bool) {
    let server = MockServer::start().await;
    if streaming {
        server.enqueue(Reply::sse(vec![
            wire::message_start(400, 1000, 0),
            wire::text_start(0),
            wire::text_delta(0, "Looking."),
            wire::block_stop(0),
            wire::tool_use_start(1, "toolu_01", "lookup"),
            wire::input_json_delta(1, "{\"x\""),
            wire::input_json_delta(1, ": \"tokyo\"}"),
            wire::block_stop(1),
            wire::tool_use_start(2, "toolu_02", "fail"),
            wire::input_json_delta(2, "{}"),
            wire::block_stop(2),
            wire::message_delta("tool_use", 60),
            wire::message_stop(),
        ]));
        server.enqueue(Reply::sse(vec![
            wire::message_start(30, 0, 1400),
            wire::text_start(0),
            wire::text_delta(0, "Tokyo: "),
            wire::text_delta(0, "found."),
            wire::block_stop(0),
            wire::message_delta("end_turn", 12),
            wire::message_stop(),
        ]));
    } else {
        server.enqueue(Reply::json(
            200,
            wire::message(
                vec![
                    wire::text_block("Looking."),
                    wire::tool_use_block("toolu_01", "lookup", json!({"x": "tokyo"})),
                    wire::tool_use_block("toolu_02", "fail", json!({})),
                ],
                "tool_use",
                wire::usage(400, 1000, 0, 60),
            ),
        ));
        server.enqueue(Reply::json(
            200,
            wire::message(vec![wire::text_block("Tokyo: found.")], "end_turn", wire::usage(30, 0, 1400, 12)),
        ));
    }
    let fail = FunctionTool::new("fail", "Always fails.", json!({"type": "object"}), |_ctx, _args| async {
        Err::<loom_agent::ToolOutput, _>(ToolError::new("boom"))
    });
    let agent = Agent::builder()
        .instructions("Be terse.")
        .model(model(&server).streaming(streaming))
        .tool(echo_tool("lookup"))
        .tool(fail)
        .build()
        .unwrap();
    let run = agent.start("Where is tokyo?");
    let result = within(20, "run", run.result()).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "Tokyo: found.");
    assert_eq!(result.turns, 2);
    check_log(&result.events, run.id(), run.session_id(), RunState::Completed);

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let tools = json!([
        {"name": "lookup", "description": "Echo x (lookup).", "input_schema": x_schema()},
        {"name": "fail", "description": "Always fails.", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL()}
    ]);
    let system = json!([{"type": "text", "text": "Be terse.", "cache_control": EPHEMERAL()}]);
    let mut first = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": system,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Where is tokyo?", "cache_control": EPHEMERAL()}]}],
        "tools": tools
    });
    let mut second = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": system,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Where is tokyo?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_01", "name": "lookup", "input": {"x": "tokyo"}},
                {"type": "tool_use", "id": "toolu_02", "name": "fail", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "lookup:tokyo"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "Error: boom", "is_error": true,
                 "cache_control": EPHEMERAL()}
            ]}
        ],
        "tools": tools
    });
    if streaming {
        first["stream"] = json!(true);
        second["stream"] = json!(true);
    }
    assert_eq!(requests[0].json(), first);
    assert_eq!(requests[1].json(), second);
    for r in &requests {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(KEY));
    }

    // Usage and cost: both calls, every bucket.
    let expected_cost = sonnet_cost(400, 0, 1000, 60) + sonnet_cost(30, 1400, 0, 12);
    assert!(close(expected_cost, 0.00654), "{expected_cost}");
    assert_eq!(
        (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.cache_write_tokens),
        (430, 1400, 1000)
    );
    assert_eq!(result.usage.output_tokens, 72);
    assert!(close(result.usage.cost_usd, expected_cost), "{}", result.usage.cost_usd);
    let responses: Vec<&loom_agent::event::ModelResponseEvent> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelResponse(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0].finish_reason, FinishReason::ToolCalls);
    assert_eq!(responses[1].finish_reason, FinishReason::Stop);
    assert!(close(responses[0].usage.cost_usd, sonnet_cost(400, 0, 1000, 60)));
    let results = tool_results(&result.events);
    assert_eq!(results.len(), 2);
    assert_eq!(tool_call_ids(&result.events), vec!["toolu_01", "toolu_02"]);
}

#[tokio::test]
async fn agent_run_with_a_tool_round_trip_streaming() {
    tool_round_trip(true).await;
}

#[tokio::test]
async fn agent_run_with_a_tool_round_trip_not_streaming() {
    tool_round_trip(false).await;
}

// ---------------------------------------------------------------- keys

fn assert_no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "the key leaked into {what}: {text}");
    assert!(!text.contains("SECRET"), "part of the key leaked into {what}: {text}");
}

#[tokio::test]
async fn the_key_never_appears_in_results_events_transcripts_errors_or_debug_output() {
    let server = MockServer::start().await;
    let echo = format!("invalid x-api-key: {KEY}");
    server.enqueue(Reply::json(401, wire::error_body("authentication_error", &echo)));
    let m = model(&server);
    assert_no_key("the model's Debug", &format!("{m:?}"));
    let agent = Agent::builder().model(m).build().unwrap();
    assert_no_key("the agent's Debug", &format!("{agent:?}"));
    let run = agent.start("hi");
    let result = within(20, "run", run.result()).await;
    assert_eq!(server.requests()[0].header("x-api-key"), Some(KEY), "the key was sent");
    assert_eq!(result.state, RunState::Failed);
    assert_eq!(result.error.as_ref().unwrap().model_error.as_deref(), Some("authentication"));
    assert!(result.error.as_ref().unwrap().message.contains("[redacted]"), "{:?}", result.error);
    assert_no_key("the RunResult JSON", &serde_json::to_string(&result).unwrap());
    assert_no_key("the RunResult Debug", &format!("{result:?}"));
    assert_no_key("the events", &serde_json::to_string(&*result.events).unwrap());
    assert_no_key("the transcript", &serde_json::to_string(&run.transcript()).unwrap());
    let err = run.wait().await.unwrap_err();
    assert_no_key("the error's Display", &err.to_string());
    assert_no_key("the error's Debug", &format!("{err:?}"));

    // An in-stream error after content, echoing the key.
    server.enqueue(Reply::sse(vec![
        wire::message_start(1, 0, 0),
        wire::text_start(0),
        wire::text_delta(0, "x"),
        wire::error_event("api_error", &format!("internal error for key {KEY}")),
    ]));
    let (_, err) = call(&model(&server), &[Message::user("hi")], &[], &Generation::default()).await;
    let err = err.unwrap();
    assert_no_key("an in-stream error", &format!("{err} {err:?}"));
    // A retried error, then a final one, both echoing the key.
    let server = MockServer::start().await;
    server.always(Reply::json(500, wire::error_body("api_error", &echo)));
    let err = err_call(&model(&server), &[Message::user("hi")]).await;
    assert_no_key("a retried error", &format!("{err} {err:?}"));
}

/// Error messages are cut to 500 characters: the key must be scrubbed from the body before the cut,
/// or a key straddling it would leak its first characters.
#[tokio::test]
async fn a_key_echoed_at_the_truncation_point_does_not_leak_in_part() {
    let server = MockServer::start().await;
    let message = format!("{}{KEY} is not valid", "x".repeat(480));
    server.enqueue(Reply::json(401, wire::error_body("authentication_error", &message)));
    let err = err_call(&model(&server), &[Message::user("hi")]).await;
    assert!(!err.to_string().contains("9f8e7d"), "{err}");
}
