//! OpenAI Chat Completions against a mock server: the exact request bodies, streamed and whole
//! answers (text, parallel tool calls, usage with cached tokens, finish reasons, reasoning), full
//! agent runs with a tool round trip, native structured output, the error taxonomy, retries, and
//! keeping the API key out of everything a run produces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::provider::*;
use common::*;
use futures::StreamExt;
use loom_agent::event::DeltaKind;
use loom_agent::message::{ContentPart, FinishReason, Message, ToolCall};
use loom_agent::model::providers::OpenAIModel;
use loom_agent::model::{LanguageModel, ModelChunk, ModelResponse, ResponseAssembler};
use loom_agent::output::OutputSchema;
use loom_agent::{Agent, EventKind, Generation, Model, ModelError, RunErrorKind, RunRequest, RunResult, RunState};
use loom_testkit::wire::openai;
use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

const KEY: &str = "sk-test-7Qe2b9XkLm4R8s1T";

fn gpt4o(server: &MockServer) -> OpenAIModel {
    Model::openai("gpt-4o").base_url(server.url()).api_key(KEY)
}

fn assemble(chunks: Vec<ModelChunk>) -> ModelResponse {
    let mut a = ResponseAssembler::new();
    for c in chunks {
        a.push(c);
    }
    a.finish(1).unwrap()
}

async fn ask(model: &dyn LanguageModel, prompt: &str) -> Result<Vec<ModelChunk>, ModelError> {
    let messages = [Message::user(prompt)];
    let generation = Generation::new();
    chunks(model, request(&messages, &[], &generation)).await
}

fn deltas(result: &RunResult, kind: DeltaKind) -> Vec<(u32, String)> {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelDelta(d) if d.kind == kind => Some((d.turn, d.text.clone())),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_streamed_request_has_the_documented_shape() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(openai::text_stream("ok")));
    let model = gpt4o(&server);
    let messages = vec![
        Message::system("You are terse."),
        Message::User {
            content: vec![
                ContentPart::Text { text: "What is this?".into() },
                ContentPart::Image {
                    url: "https://example.invalid/cat.png".into(),
                    media_type: Some("image/png".into()),
                },
            ],
        },
        Message::Assistant {
            content: String::new(),
            thinking: Vec::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "lookup".into(),
                arguments: r#"{"q":"cat"}"#.into(),
            }],
        },
        Message::tool("call_1", "lookup", "a small cat", false),
        Message::assistant("It is a cat."),
        Message::tool("call_2", "lookup", "no such thing", true),
        Message::user("Thanks"),
    ];
    let generation = Generation::new()
        .temperature(0.25)
        .top_p(0.5)
        .stop("END")
        .seed(42)
        .max_output_tokens(256)
        .extension("reasoning_effort", json!("low"))
        .extension("prompt_cache_key", json!("tenant-1"));
    let tools = [lookup_spec()];
    chunks(&model, request(&messages, &tools, &generation)).await.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/chat/completions"));
    assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(
        r.json(),
        json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a small cat"},
                {"role": "assistant", "content": "It is a cat."},
                {"role": "tool", "tool_call_id": "call_2", "content": "no such thing"},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {
                "name": "lookup",
                "description": "Look something up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
            }}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": 0.25,
            "top_p": 0.5,
            "max_tokens": 256,
            "stop": ["END"],
            "seed": 42,
            "reasoning_effort": "low",
            "prompt_cache_key": "tenant-1"
        })
    );
}

/// An extension that names a built-in field replaces it: the key is sent once, with the
/// extension's value (the body is written straight from the request, not through a map).
#[tokio::test]
async fn an_extension_replaces_a_built_in_field_and_is_sent_once() {
    let server = MockServer::start().await;
    server.always(Reply::sse(openai::text_stream("ok")));
    let model = gpt4o(&server);
    let messages = [Message::user("hi")];
    let generation = Generation::new()
        .temperature(0.2)
        .max_output_tokens(100)
        .extension("temperature", json!(0.7))
        .extension("stream_options", json!({"include_usage": false}));
    chunks(&model, request(&messages, &[], &generation)).await.unwrap();
    let r = &server.requests()[0];
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert_eq!(body.matches(r#""temperature""#).count(), 1, "{body}");
    assert_eq!(body.matches(r#""stream_options""#).count(), 1, "{body}");
    let json = r.json();
    assert_eq!(json["temperature"], json!(0.7));
    assert_eq!(json["stream_options"], json!({"include_usage": false}));
    assert_eq!(json["max_tokens"], json!(100));
    assert_eq!(json["stream"], json!(true));
}

#[tokio::test]
async fn sampling_settings_are_sent_as_written_not_widened_from_f32() {
    let server = MockServer::start().await;
    server.always(Reply::sse(openai::text_stream("ok")));
    let model = gpt4o(&server);
    let messages = [Message::user("hi")];
    let generation = Generation::new().temperature(0.2).top_p(0.9);
    chunks(&model, request(&messages, &[], &generation)).await.unwrap();
    let body = String::from_utf8(server.requests()[0].body.clone()).unwrap();
    assert!(body.contains(r#""temperature":0.2"#) && !body.contains("0.2000"), "{body}");
    assert!(body.contains(r#""top_p":0.9"#) && !body.contains("0.8999"), "{body}");
}

#[tokio::test]
async fn reasoning_models_take_max_completion_tokens_and_others_max_tokens() {
    let server = MockServer::start().await;
    server.always(Reply::sse(openai::text_stream("ok")));
    let messages = [Message::user("hi")];
    let generation = Generation::new().max_output_tokens(100);
    let cases = [
        ("o1", "max_completion_tokens"),
        ("o3", "max_completion_tokens"),
        ("o3-mini", "max_completion_tokens"),
        ("o4-mini", "max_completion_tokens"),
        ("gpt-5", "max_completion_tokens"),
        ("gpt-5-mini", "max_completion_tokens"),
        ("gpt-5.1", "max_completion_tokens"),
        ("gpt-4o", "max_tokens"),
        ("gpt-4o-mini", "max_tokens"),
        ("gpt-4.1", "max_tokens"),
        ("chatgpt-4o-latest", "max_tokens"),
    ];
    for (i, (name, field)) in cases.iter().enumerate() {
        let model = Model::openai(name).base_url(server.url()).api_key(KEY);
        chunks(&model, request(&messages, &[], &generation)).await.unwrap();
        let body = server.requests()[i].json();
        assert_eq!(body["model"], json!(name));
        assert_eq!(body[field], json!(100), "{name}: {body}");
        let other = if *field == "max_tokens" { "max_completion_tokens" } else { "max_tokens" };
        assert!(body.get(other).is_none(), "{name} must not send {other}: {body}");
    }
    // Another server hosting a model named like an OpenAI reasoning model keeps max_tokens.
    let model = Model::compatible(&server.url(), "o3");
    chunks(&model, request(&messages, &[], &generation)).await.unwrap();
    let body = server.requests().last().unwrap().json();
    assert_eq!(body["max_tokens"], json!(100));
    assert!(body.get("max_completion_tokens").is_none());
}

#[tokio::test]
async fn a_request_without_settings_sends_only_model_messages_and_stream_options() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(openai::text_stream("ok")));
    ask(&gpt4o(&server), "hi").await.unwrap();
    assert_eq!(
        server.requests()[0].json(),
        json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[tokio::test]
async fn a_base_url_with_a_trailing_slash_and_a_path_is_joined_cleanly() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(openai::text_stream("ok")));
    let model = Model::openai("gpt-4o").base_url(format!("{}/v1/", server.url())).api_key(KEY);
    ask(&model, "hi").await.unwrap();
    assert_eq!(server.requests()[0].path, "/v1/chat/completions");
}

// ---------------------------------------------------------------------------------------------
// Streamed answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn streamed_text_usage_with_cached_tokens_and_cost() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::role(),
        openai::text("Hel"),
        openai::text("lo"),
        openai::text(", world"),
        openai::finish("stop"),
        openai::usage(1000, 200, 50),
        openai::done(),
    ]));
    let got = ask(&gpt4o(&server), "hi").await.unwrap();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(
        got[..3],
        [ModelChunk::Text("Hel".into()), ModelChunk::Text("lo".into()), ModelChunk::Text(", world".into())]
    );
    let ModelChunk::Usage(u) = &got[3] else { panic!("{got:?}") };
    // prompt_tokens (1000) includes the cached 200: input is the rest.
    assert_eq!(tokens(u), (800, 200, 0, 50));
    // gpt-4o: $2.50 input, $1.25 cached input, $10 output per million tokens.
    assert_close(u.cost_usd, 800.0 * 2.5e-6 + 200.0 * 1.25e-6 + 50.0 * 10e-6);
    assert_eq!(got[4], ModelChunk::Finish(FinishReason::Stop));
}

#[tokio::test]
async fn parallel_tool_calls_with_interleaved_argument_pieces_are_assembled_by_index() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::role(),
        openai::tool_call_start(0, "call_a", "get_weather"),
        openai::tool_call_start(1, "call_b", "get_time"),
        openai::tool_call_args(1, "{\"tz\":"),
        openai::tool_call_args(0, "{\"city\":"),
        openai::tool_call_pieces(&[(0, None, None, "\"Oslo\"}"), (1, None, None, "\"UTC\"}")]),
        openai::finish("tool_calls"),
        openai::usage(50, 0, 30),
        openai::done(),
    ]));
    let r = assemble(ask(&gpt4o(&server), "weather and time").await.unwrap());
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "call_a".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
            ToolCall { id: "call_b".into(), name: "get_time".into(), arguments: r#"{"tz":"UTC"}"#.into() },
        ]
    );
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.text, "");
    assert_eq!(tokens(&r.usage), (50, 0, 0, 30));
}

#[tokio::test]
async fn tool_calls_without_an_index_each_start_a_new_call() {
    // Some compatible servers send each call whole, in its own chunk, without `index`.
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::tool_call_without_index("call_a", "get_weather", r#"{"city":"Oslo"}"#),
        openai::tool_call_without_index("call_b", "get_time", r#"{"tz":"UTC"}"#),
        openai::finish("tool_calls"),
        openai::done(),
    ]));
    let model = Model::compatible(&server.url(), "local");
    let r = assemble(ask(&model, "weather and time").await.unwrap());
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "call_a".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
            ToolCall { id: "call_b".into(), name: "get_time".into(), arguments: r#"{"tz":"UTC"}"#.into() },
        ]
    );
}

#[tokio::test]
async fn finish_reasons_are_mapped() {
    let server = MockServer::start().await;
    let cases = [
        ("stop", FinishReason::Stop),
        ("length", FinishReason::Length),
        ("content_filter", FinishReason::ContentFilter),
        ("tool_calls", FinishReason::ToolCalls),
        ("function_call", FinishReason::ToolCalls),
        ("eos_token", FinishReason::Other),
    ];
    for (reason, expected) in cases {
        server.enqueue(Reply::sse([openai::text("x"), openai::finish(reason), openai::done()]));
        let got = ask(&gpt4o(&server), "hi").await.unwrap();
        assert_eq!(got.last(), Some(&ModelChunk::Finish(expected)), "{reason}");
    }
}

#[tokio::test]
async fn nothing_after_done_is_read() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::text("a"),
        openai::finish("stop"),
        openai::done(),
        "data: {this is not json\n\n".to_string(),
    ]));
    let got = ask(&gpt4o(&server), "hi").await.unwrap();
    assert_eq!(got, vec![ModelChunk::Text("a".into()), ModelChunk::Finish(FinishReason::Stop)]);
}

#[tokio::test]
async fn a_stream_that_ends_without_a_finish_reason_is_an_error() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([openai::text("partial"), openai::done()]));
    let err = ask(&gpt4o(&server), "hi").await.unwrap_err();
    assert!(matches!(&err, ModelError::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("finish_reason"), "{err}");
    assert_eq!(server.requests().len(), 1, "a stream that already produced text is not retried");
}

#[tokio::test]
async fn a_stream_without_done_still_ends_at_the_end_of_the_body() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([openai::text("a"), openai::finish("length"), openai::usage(3, 0, 1)]));
    let got = ask(&gpt4o(&server), "hi").await.unwrap();
    assert_eq!(got.last(), Some(&ModelChunk::Finish(FinishReason::Length)));
}

#[tokio::test]
async fn reasoning_fields_become_thinking_chunks() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::role(),
        openai::reasoning_content("Let me "),
        openai::reasoning("think. "),
        openai::text("42"),
        openai::finish("stop"),
        openai::done(),
    ]));
    let model = Model::compatible(&server.url(), "r1");
    let got = ask(&model, "answer?").await.unwrap();
    assert_eq!(
        got,
        vec![
            ModelChunk::Thinking { text: "Let me ".into(), signature: None, provider: None },
            ModelChunk::Thinking { text: "think. ".into(), signature: None, provider: None },
            ModelChunk::Text("42".into()),
            ModelChunk::Finish(FinishReason::Stop),
        ]
    );
}

#[tokio::test]
async fn a_refusal_is_a_content_filter_error_with_its_text() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::role(),
        openai::refusal("I can't "),
        openai::refusal("help with that."),
        openai::finish("stop"),
        openai::done(),
    ]));
    let err = ask(&gpt4o(&server), "something bad").await.unwrap_err();
    assert!(matches!(&err, ModelError::ContentFilter(m) if m.contains("I can't help with that.")), "{err:?}");

    server.enqueue(Reply::json(
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": "No."},
                         "finish_reason": "stop"}]
        }),
    ));
    let err = ask(&gpt4o(&server).streaming(false), "something bad").await.unwrap_err();
    assert!(matches!(&err, ModelError::ContentFilter(m) if m.contains("No.")), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Whole (non-streamed) answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn non_streaming_sends_no_stream_fields_and_decodes_a_chat_completion() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(200, openai::completion_cached(Some("Hello"), &[], 1000, 200, 50)));
    let model = gpt4o(&server).streaming(false);
    let got = ask(&model, "hi").await.unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.path, "/chat/completions");
    assert_ne!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(r.json(), json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], ModelChunk::Text("Hello".into()));
    let ModelChunk::Usage(u) = &got[1] else { panic!("{got:?}") };
    assert_eq!(tokens(u), (800, 200, 0, 50));
    assert_close(u.cost_usd, 800.0 * 2.5e-6 + 200.0 * 1.25e-6 + 50.0 * 10e-6);
    assert_eq!(got[2], ModelChunk::Finish(FinishReason::Stop));
}

#[tokio::test]
async fn non_streaming_tool_calls_are_decoded_in_order() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        200,
        openai::completion_cached(
            None,
            &[("call_a", "get_weather", r#"{"city":"Oslo"}"#), ("call_b", "get_time", r#"{"tz":"UTC"}"#)],
            40,
            0,
            20,
        ),
    ));
    let r = assemble(ask(&gpt4o(&server).streaming(false), "weather and time").await.unwrap());
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "call_a".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
            ToolCall { id: "call_b".into(), name: "get_time".into(), arguments: r#"{"tz":"UTC"}"#.into() },
        ]
    );
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(r.text, "");
}

#[tokio::test]
async fn non_streaming_malformed_body_is_a_protocol_error() {
    let server = MockServer::start().await;
    server.enqueue(Reply::bytes(200, "application/json", "{\"choices\": [ oops"));
    let err = ask(&gpt4o(&server).streaming(false), "hi").await.unwrap_err();
    assert!(matches!(err, ModelError::Protocol(_)), "{err:?}");
    server.enqueue(Reply::json(200, json!({"id": "x", "object": "chat.completion", "choices": []})));
    let err = ask(&gpt4o(&server).streaming(false), "hi").await.unwrap_err();
    assert!(matches!(err, ModelError::Protocol(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Agent runs
// ---------------------------------------------------------------------------------------------

/// Both turns' usage: turn 1 prompt 1200 (1000 cached), 20 out; turn 2 prompt 1300 (1100 cached),
/// 8 out.
const TURN1: (u64, u64, u64) = (1200, 1000, 20);
const TURN2: (u64, u64, u64) = (1300, 1100, 8);

fn gpt4o_cost(prompt: u64, cached: u64, out: u64) -> f64 {
    (prompt - cached) as f64 * 2.5e-6 + cached as f64 * 1.25e-6 + out as f64 * 10e-6
}

fn round_trip_agent(model: OpenAIModel) -> Agent {
    Agent::builder().instructions("Use tools.").model(model).tool(echo_tool("echo")).build().unwrap()
}

async fn check_round_trip(server: &MockServer, result: RunResult) {
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "The tool said echo:hi.");
    assert_eq!(result.turns, 2);
    assert_eq!(tokens(&result.usage), (TURN1.0 - TURN1.1 + TURN2.0 - TURN2.1, TURN1.1 + TURN2.1, 0, TURN1.2 + TURN2.2));
    // 0.00195 + 0.001955
    assert_close(result.usage.cost_usd, 0.003905);
    assert_close(result.usage.cost_usd, gpt4o_cost(TURN1.0, TURN1.1, TURN1.2) + gpt4o_cost(TURN2.0, TURN2.1, TURN2.2));
    assert_eq!(finish_reasons(&result), vec![FinishReason::ToolCalls, FinishReason::Stop]);
    let results = tool_results(&result.events);
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].call_id.as_str(), results[0].output.as_str()), ("call_1", "echo:hi"));

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let first = requests[0].json();
    assert_eq!(
        first["messages"],
        json!([{"role": "system", "content": "Use tools."}, {"role": "user", "content": "say hi"}])
    );
    assert_eq!(
        first["tools"],
        json!([{"type": "function", "function": {"name": "echo", "description": "Echo x (echo).", "parameters": x_schema()}}])
    );
    let second = requests[1].json();
    assert_eq!(
        second["messages"],
        json!([
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "say hi"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": "{\"x\":\"hi\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "echo:hi"}
        ])
    );
    assert_eq!(second["tools"], first["tools"]);
    for r in &requests {
        assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    }
}

#[tokio::test]
async fn a_streamed_agent_run_round_trips_a_tool_call() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::role(),
        openai::tool_call_start(0, "call_1", "echo"),
        openai::tool_call_args(0, "{\"x\":"),
        openai::tool_call_args(0, "\"hi\"}"),
        openai::finish("tool_calls"),
        openai::usage(TURN1.0, TURN1.1, TURN1.2),
        openai::done(),
    ]));
    server.enqueue(Reply::sse([
        openai::role(),
        openai::text("The tool said "),
        openai::text("echo:hi."),
        openai::finish("stop"),
        openai::usage(TURN2.0, TURN2.1, TURN2.2),
        openai::done(),
    ]));
    let agent = round_trip_agent(gpt4o(&server));
    let result = within(30, "run", agent.run("say hi")).await.unwrap();
    assert_eq!(deltas(&result, DeltaKind::Text), vec![(2, "The tool said ".to_string()), (2, "echo:hi.".to_string())]);
    check_round_trip(&server, result).await;
    for r in server.requests() {
        assert_eq!(r.json()["stream"], json!(true));
    }
}

/// After `data: [DONE]` the stream stops reading the body, so the end of the chunked body is left
/// for the connection task to read later; a call sent right away (a fast tool) finds the connection
/// still busy and opens another one (a new TLS handshake against a real provider). Whole responses
/// are read to their end and reuse the connection (see the non-streamed round trip). The fix belongs
/// to http.rs: read the body to its end (briefly) once the decoder is done, before ending the stream.
#[tokio::test]
async fn a_streamed_tool_round_trip_reuses_the_connection() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(openai::tool_call_stream(&[("call_1", "echo", r#"{"x":"hi"}"#)], 10, 2)));
    server.enqueue(Reply::sse(openai::text_stream("ok")));
    let agent = round_trip_agent(gpt4o(&server));
    within(30, "run", agent.run("say hi")).await.unwrap();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_non_streamed_agent_run_round_trips_a_tool_call() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        200,
        openai::completion_cached(None, &[("call_1", "echo", r#"{"x":"hi"}"#)], TURN1.0, TURN1.1, TURN1.2),
    ));
    server.enqueue(Reply::json(
        200,
        openai::completion_cached(Some("The tool said echo:hi."), &[], TURN2.0, TURN2.1, TURN2.2),
    ));
    let agent = round_trip_agent(gpt4o(&server).streaming(false));
    let result = within(30, "run", agent.run("say hi")).await.unwrap();
    // A whole answer is still reported as one delta.
    assert_eq!(deltas(&result, DeltaKind::Text), vec![(2, "The tool said echo:hi.".to_string())]);
    check_round_trip(&server, result).await;
    for r in server.requests() {
        assert!(r.json().get("stream").is_none());
    }
    assert_eq!(server.connections(), 1, "both calls go over one kept-alive connection");
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
        "required": ["city", "temp"]
    })
}

#[tokio::test]
async fn an_output_schema_is_sent_as_a_strict_response_format() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(openai::text_stream(r#"{"city":"Oslo","temp":3.5}"#)));
    let agent = Agent::builder().model(gpt4o(&server)).build().unwrap();
    let schema = OutputSchema::new("Weather", weather_schema()).unwrap();
    let result = within(30, "run", agent.run(RunRequest::new("weather?").output_schema(schema))).await.unwrap();
    assert_eq!(result.parsed, Some(json!({"city": "Oslo", "temp": 3.5})));
    let body = server.requests()[0].json();
    // Native structured output: no directive in the prompt.
    assert_eq!(body["messages"], json!([{"role": "user", "content": "weather?"}]));
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "output", "strict": true, "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
            "required": ["city", "temp"],
            "additionalProperties": false
        }}})
    );
}

/// Strict mode makes optional fields required-but-nullable, so OpenAI answers `null` for a field it
/// has no value for. The run then validates the answer against the schema as written, where that
/// field is optional but not nullable, and rejects it: every correction turn gets the same kind of
/// answer and the run fails. The fix belongs to output validation (drop or accept `null` for
/// properties the original schema made optional), not to the provider.
#[tokio::test]
async fn a_strict_answer_with_null_for_an_optional_field_is_accepted() {
    let server = MockServer::start().await;
    server.always(Reply::sse(openai::text_stream(r#"{"city":"Oslo","note":null,"temp":3.5}"#)));
    let agent = Agent::builder().model(gpt4o(&server)).build().unwrap();
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "note": {"type": "string"}, "temp": {"type": "number"}},
        "required": ["city", "temp"]
    });
    let schema = OutputSchema::new("Weather", schema).unwrap();
    let result = within(30, "run", agent.start(RunRequest::new("weather?").output_schema(schema)).result()).await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn strict_normalization_makes_optional_fields_nullable_and_open_maps_non_strict() {
    let server = MockServer::start().await;
    server.always(Reply::sse(openai::text_stream(r#"{"a": 1}"#)));
    let model = gpt4o(&server);
    let messages = [Message::user("x")];
    let generation = Generation::new();
    let send = |schema: Value| {
        let model = &model;
        let messages = &messages;
        let generation = &generation;
        async move {
            let mut req = request(messages, &[], generation);
            req.output_schema = Some(&schema);
            chunks(model, req).await.unwrap();
        }
    };
    let sent = |i: usize| server.requests()[i].json()["response_format"]["json_schema"].clone();

    // Nested objects, optional fields, $defs/$ref, oneOf, enums and defaults.
    send(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer", "default": 3},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "place": {"$ref": "#/$defs/Place"},
            "tags": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
            "shape": {"oneOf": [{"type": "string"}, {"type": "number"}]}
        },
        "required": ["city", "tags", "shape"],
        "$defs": {"Place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}}
    }))
    .await;
    assert_eq!(
        sent(0),
        json!({"name": "output", "strict": true, "schema": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": ["integer", "null"]},
                "unit": {"anyOf": [{"type": "string", "enum": ["c", "f"]}, {"type": "null"}]},
                "place": {"anyOf": [{"$ref": "#/$defs/Place"}, {"type": "null"}]},
                "tags": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"k": {"type": ["string", "null"]}},
                    "required": ["k"],
                    "additionalProperties": false
                }},
                "shape": {"anyOf": [{"type": "string"}, {"type": "number"}]}
            },
            "required": ["city", "days", "place", "shape", "tags", "unit"],
            "additionalProperties": false,
            "$defs": {"Place": {
                "type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"],
                "additionalProperties": false
            }}
        }})
    );

    // Open maps cannot be strict: sent as they are (without $schema), strict false.
    let open_maps = [
        json!({"type": "object", "properties": {"m": {"type": "object", "additionalProperties": {"type": "number"}}}}),
        json!({"type": "object", "properties": {"meta": {"type": "object", "additionalProperties": true}}}),
        json!({"type": "object", "properties": {"meta": {"type": "object"}}, "required": ["meta"]}),
        json!({"type": "object", "patternProperties": {"^x": {"type": "string"}}}),
    ];
    for (i, schema) in open_maps.iter().enumerate() {
        send(schema.clone()).await;
        assert_eq!(sent(i + 1), json!({"name": "output", "strict": false, "schema": schema}), "{schema}");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

fn echoing_401() -> Reply {
    // OpenAI echoes (part of) the key it was given; this mock echoes all of it.
    Reply::json(
        401,
        openai::error_with_code(
            "invalid_request_error",
            "invalid_api_key",
            &format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com."),
        ),
    )
}

#[tokio::test]
async fn a_401_fails_the_run_as_authentication_without_retrying_and_never_leaks_the_key() {
    let server = MockServer::start().await;
    server.always(echoing_401());
    let model = gpt4o(&server);
    let debug = format!("{model:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");
    let agent = Agent::builder().model(model).build().unwrap();
    assert!(!format!("{agent:?}").contains(KEY));
    assert!(!format!("{:?}", agent.model()).contains(KEY));

    let run = agent.start("hi");
    let result = within(30, "run", run.result()).await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Model);
    assert_eq!(error.model_error.as_deref(), Some("authentication"));
    assert!(error.message.contains("Incorrect API key provided"), "{}", error.message);
    assert!(error.message.contains("[redacted]"), "{}", error.message);
    assert_eq!(server.requests().len(), 1, "authentication errors are not retried");

    let result_json = serde_json::to_string(&result).unwrap();
    assert!(!result_json.contains(KEY), "the key leaked into the result: {result_json}");
    let transcript = serde_json::to_string(&run.transcript()).unwrap();
    assert!(!transcript.contains(KEY), "the key leaked into the transcript");
    for e in run.events().collect::<Vec<_>>().await {
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains(KEY), "the key leaked into an event: {line}");
        assert!(!format!("{e:?}").contains(KEY));
    }
    let err = result.clone().into_completed().unwrap_err();
    assert!(!err.to_string().contains(KEY));
    assert!(!format!("{err:?}").contains(KEY));
}

#[tokio::test]
async fn a_direct_call_error_does_not_carry_the_key() {
    let server = MockServer::start().await;
    server.always(echoing_401());
    let err = ask(&gpt4o(&server), "hi").await.unwrap_err();
    assert!(matches!(&err, ModelError::Authentication(_)), "{err:?}");
    assert!(!err.to_string().contains(KEY), "{err}");
    assert!(!format!("{err:?}").contains(KEY), "{err:?}");

    // The same for an in-stream error and for a server error that is retried.
    server.enqueue(Reply::sse([openai::text("a"), openai::stream_error(Some("server_error"), None, KEY)]));
    let err = ask(&gpt4o(&server), "hi").await.unwrap_err();
    assert!(!format!("{err:?}").contains(KEY), "{err:?}");
    for _ in 0..3 {
        server.enqueue(Reply::json(500, openai::error("server_error", &format!("bad key {KEY}"))));
    }
    let err = ask(&gpt4o(&server).with_config(quick_retries()), "hi").await.unwrap_err();
    assert!(matches!(&err, ModelError::Transient { status: Some(500), .. }), "{err:?}");
    assert!(!format!("{err:?}").contains(KEY), "{err:?}");
}

#[tokio::test]
async fn a_400_is_an_invalid_request_and_is_not_retried() {
    let server = MockServer::start().await;
    server.always(Reply::json(
        400,
        openai::error("invalid_request_error", "Invalid value for 'temperature': must be at most 2."),
    ));
    let agent = Agent::builder().model(gpt4o(&server)).build().unwrap();
    let result = failed_result(within(30, "run", agent.run("hi")).await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.model_error.as_deref(), Some("invalid_request"));
    assert!(error.message.contains("Invalid value for 'temperature'"), "{}", error.message);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_400_context_length_exceeded_is_its_own_kind() {
    let server = MockServer::start().await;
    server.always(Reply::json(
        400,
        openai::error_with_code(
            "invalid_request_error",
            "context_length_exceeded",
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
        ),
    ));
    let agent = Agent::builder().model(gpt4o(&server)).build().unwrap();
    let result = failed_result(within(30, "run", agent.run("hi")).await.unwrap_err());
    assert_eq!(result.error.unwrap().model_error.as_deref(), Some("context_length_exceeded"));
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_error_inside_the_stream_fails_the_run_with_its_message() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::role(),
        openai::text("Partial "),
        openai::stream_error(
            Some("server_error"),
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
    ]));
    let agent = Agent::builder().model(gpt4o(&server)).build().unwrap();
    let result = failed_result(within(30, "run", agent.run("hi")).await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Model);
    assert_eq!(error.model_error.as_deref(), Some("transient"));
    assert!(error.message.contains("The server had an error while processing your request"), "{}", error.message);
    // The partial text was streamed before the error; the stream is not retried after that.
    assert_eq!(deltas(&result, DeltaKind::Text), vec![(1, "Partial ".to_string())]);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(result.events.last().unwrap().type_name(), "run.failed");
}

#[tokio::test]
async fn in_stream_error_kinds_are_read_from_the_code_as_well_as_the_type() {
    let server = MockServer::start().await;
    let cases: [(Option<&str>, Option<&str>, &str); 4] = [
        (Some("invalid_request_error"), Some("context_length_exceeded"), "context_length_exceeded"),
        (None, Some("context_length_exceeded"), "context_length_exceeded"),
        (Some("requests"), Some("rate_limit_exceeded"), "rate_limited"),
        (Some("invalid_request_error"), None, "invalid_request"),
    ];
    for (kind, code, expected) in cases {
        server.enqueue(Reply::sse([openai::text("a"), openai::stream_error(kind, code, "boom")]));
        let err = ask(&gpt4o(&server), "hi").await.unwrap_err();
        assert_eq!(err.kind(), expected, "{kind:?}/{code:?}: {err:?}");
    }
}

#[tokio::test]
async fn an_error_before_the_first_chunk_is_retried_when_transient() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(503, openai::error("server_error", "overloaded")));
    server.enqueue(Reply::sse([openai::stream_error(Some("server_error"), None, "try again")]));
    server.enqueue(Reply::sse(openai::text_stream("finally")));
    let model = gpt4o(&server).with_config(quick_retries());
    let r = assemble(ask(&model, "hi").await.unwrap());
    assert_eq!(r.text, "finally");
    assert_eq!(server.requests().len(), 3);
    // Every attempt sends the same body.
    let bodies: Vec<Value> = server.requests().iter().map(|r| r.json()).collect();
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test]
async fn a_429_honours_retry_after_and_gives_up_after_the_attempts() {
    let server = MockServer::start().await;
    server.always(Reply::json(429, openai::error("requests", "Rate limit reached")).header("retry-after-ms", "10"));
    let model = gpt4o(&server).with_config(quick_retries());
    let err = ask(&model, "hi").await.unwrap_err();
    assert!(matches!(&err, ModelError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_millis(10)));
    assert_eq!(server.requests().len(), 3);
}
