//! The OpenAI Responses API against a mock server: the exact request bodies (instructions, input
//! items, tools, text format), streamed events and whole responses, full agent runs with a tool
//! round trip, and failures (`response.failed`, `error` events, HTTP errors, refusals, streams cut
//! short).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::provider::*;
use common::*;
use loom_agent::event::DeltaKind;
use loom_agent::message::{ContentPart, FinishReason, Message, ToolCall};
use loom_agent::model::providers::OpenAIResponsesModel;
use loom_agent::model::{LanguageModel, ModelChunk, ModelResponse, ResponseAssembler};
use loom_agent::output::OutputSchema;
use loom_agent::{Agent, EventKind, Generation, Model, ModelError, RunErrorKind, RunRequest, RunResult, RunState};
use loom_testkit::wire::responses::{self, Events};
use loom_testkit::{MockServer, Reply};
use serde_json::json;

const KEY: &str = "sk-test-Rsp0nses9Xk2LmQ";

fn model(server: &MockServer, name: &str) -> OpenAIResponsesModel {
    Model::openai_responses(name).base_url(server.url()).api_key(KEY)
}

fn gpt4o(server: &MockServer) -> OpenAIResponsesModel {
    model(server, "gpt-4o")
}

async fn ask(model: &dyn LanguageModel, prompt: &str) -> Result<Vec<ModelChunk>, ModelError> {
    let messages = [Message::user(prompt)];
    let generation = Generation::new();
    chunks(model, request(&messages, &[], &generation)).await
}

fn assemble(chunks: Vec<ModelChunk>) -> ModelResponse {
    let mut a = ResponseAssembler::new();
    for c in chunks {
        a.push(c);
    }
    a.finish(1).unwrap()
}

fn gpt4o_cost(input: u64, cached: u64, out: u64) -> f64 {
    (input - cached) as f64 * 2.5e-6 + cached as f64 * 1.25e-6 + out as f64 * 10e-6
}

fn text_deltas(result: &RunResult) -> Vec<(u32, String)> {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelDelta(d) if d.kind == DeltaKind::Text => Some((d.turn, d.text.clone())),
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
    server.enqueue(Reply::sse(responses::text_stream("ok", responses::usage(10, 0, 1))));
    let model = model(&server, "gpt-4.1");
    let messages = vec![
        Message::system("You are terse."),
        Message::system("Be kind."),
        Message::User {
            content: vec![
                ContentPart::Text { text: "What is this?".into() },
                ContentPart::Image { url: "data:image/png;base64,iVBORw0KGgo=".into(), media_type: None },
            ],
        },
        Message::Assistant {
            content: "Let me look.".into(),
            thinking: Vec::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "lookup".into(),
                arguments: r#"{"q":"cat"}"#.into(),
            }],
        },
        Message::tool("call_1", "lookup", "a small cat", false),
        Message::system("Now summarize."),
        Message::user("Thanks"),
    ];
    let generation = Generation::new()
        .temperature(0.25)
        .top_p(0.5)
        .max_output_tokens(256)
        .extension("reasoning", json!({"effort": "low"}))
        .extension("prompt_cache_key", json!("tenant-1"));
    let tools = [lookup_spec()];
    chunks(&model, request(&messages, &tools, &generation)).await.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/responses"));
    assert_eq!(r.header("authorization"), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(
        r.json(),
        json!({
            "model": "gpt-4.1",
            "instructions": "You are terse.\n\nBe kind.",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
                ]},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
                {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{\"q\":\"cat\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a small cat"},
                {"role": "developer", "content": "Now summarize."},
                {"role": "user", "content": [{"type": "input_text", "text": "Thanks"}]}
            ],
            "store": false,
            "tools": [{
                "type": "function",
                "name": "lookup",
                "description": "Look something up.",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
                "strict": false
            }],
            "stream": true,
            "temperature": 0.25,
            "top_p": 0.5,
            "max_output_tokens": 256,
            "reasoning": {"effort": "low"},
            "prompt_cache_key": "tenant-1"
        })
    );
}

#[tokio::test]
async fn reasoning_models_get_no_temperature_and_the_rest_as_given() {
    let server = MockServer::start().await;
    server.always(Reply::sse(responses::text_stream("ok", responses::usage(10, 0, 1))));
    let messages = [Message::user("hi")];
    let generation = Generation::new().temperature(0.2).max_output_tokens(64);
    for name in ["o3", "o4-mini", "gpt-5", "gpt-5.1"] {
        chunks(&model(&server, name), request(&messages, &[], &generation)).await.unwrap();
        let body = server.requests().last().unwrap().json();
        assert_eq!(body["model"], json!(name));
        assert!(body.get("temperature").is_none(), "{name}: {body}");
        assert_eq!(body["max_output_tokens"], json!(64));
    }
    chunks(&gpt4o(&server), request(&messages, &[], &generation)).await.unwrap();
    let body = String::from_utf8(server.requests().last().unwrap().body.clone()).unwrap();
    assert!(body.contains(r#""temperature":0.2"#) && !body.contains("0.2000"), "{body}");
}

#[tokio::test]
async fn an_extension_replaces_a_built_in_field_and_is_sent_once() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(responses::text_stream("ok", responses::usage(10, 0, 1))));
    let messages = [Message::system("Be terse."), Message::user("hi")];
    let generation = Generation::new()
        .max_output_tokens(64)
        .extension("store", json!(true))
        .extension("instructions", json!("Mine."));
    chunks(&gpt4o(&server), request(&messages, &[], &generation)).await.unwrap();
    let r = &server.requests()[0];
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert_eq!(body.matches(r#""store""#).count(), 1, "{body}");
    assert_eq!(body.matches(r#""instructions""#).count(), 1, "{body}");
    let json = r.json();
    assert_eq!(
        (&json["store"], &json["instructions"], &json["max_output_tokens"]),
        (&json!(true), &json!("Mine."), &json!(64))
    );
}

#[tokio::test]
async fn a_request_without_settings_or_system_message_has_no_instructions() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(responses::text_stream("ok", responses::usage(10, 0, 1))));
    ask(&gpt4o(&server), "hi").await.unwrap();
    assert_eq!(
        server.requests()[0].json(),
        json!({
            "model": "gpt-4o",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
            "store": false,
            "stream": true
        })
    );
}

#[tokio::test]
async fn an_output_schema_is_sent_as_a_strict_text_format() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(responses::text_stream(r#"{"city":"Oslo","temp":3.5}"#, responses::usage(10, 0, 5))));
    let agent = Agent::builder().model(gpt4o(&server)).build().unwrap();
    let schema = OutputSchema::new(
        "Weather",
        json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "temp": {"type": "number"}, "note": {"type": "string"}},
            "required": ["city", "temp"]
        }),
    )
    .unwrap();
    let result = within(30, "run", agent.run(RunRequest::new("weather?").output_schema(schema))).await.unwrap();
    assert_eq!(result.parsed, Some(json!({"city": "Oslo", "temp": 3.5})));
    let body = server.requests()[0].json();
    assert!(body.get("instructions").is_none(), "native structured output puts nothing in the prompt: {body}");
    assert_eq!(body["input"], json!([{"role": "user", "content": [{"type": "input_text", "text": "weather?"}]}]));
    assert_eq!(
        body["text"],
        json!({"format": {"type": "json_schema", "name": "output", "strict": true, "schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "note": {"type": ["string", "null"]}, "temp": {"type": "number"}},
            "required": ["city", "note", "temp"],
            "additionalProperties": false
        }}})
    );
}

// ---------------------------------------------------------------------------------------------
// Streamed answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn streamed_text_and_usage_with_cached_tokens() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(
        Events::new().message("msg_1", &["Hel", "lo", "!"]).completed(responses::usage(1000, 200, 50)),
    ));
    let got = ask(&gpt4o(&server), "hi").await.unwrap();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[..3], [ModelChunk::Text("Hel".into()), ModelChunk::Text("lo".into()), ModelChunk::Text("!".into())]);
    let ModelChunk::Usage(u) = &got[3] else { panic!("{got:?}") };
    // input_tokens (1000) includes the 200 cached ones.
    assert_eq!(tokens(u), (800, 200, 0, 50));
    assert_close(u.cost_usd, gpt4o_cost(1000, 200, 50));
    assert_eq!(got[4], ModelChunk::Finish(FinishReason::Stop));
}

#[tokio::test]
async fn streamed_function_calls_reasoning_and_text_are_decoded() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(
        Events::new()
            .reasoning("rs_1", &["Need ", "both."])
            .message("msg_1", &["Checking."])
            .function_call("fc_1", "call_a", "get_weather", &["{\"city\":", "\"Oslo\"}"])
            .function_call("fc_2", "call_b", "get_time", &["{\"tz\":", "\"UTC\"}"])
            .completed(responses::usage(300, 0, 40)),
    ));
    let got = ask(&gpt4o(&server), "weather and time").await.unwrap();
    assert_eq!(got[0], ModelChunk::Thinking { text: "Need ".into(), signature: None, provider: None });
    let r = assemble(got);
    assert_eq!(r.thinking.len(), 1);
    assert_eq!(r.thinking[0].text, "Need both.");
    assert_eq!(r.text, "Checking.");
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "call_a".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
            ToolCall { id: "call_b".into(), name: "get_time".into(), arguments: r#"{"tz":"UTC"}"#.into() },
        ]
    );
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
    assert_eq!(tokens(&r.usage), (300, 0, 0, 40));
}

#[tokio::test]
async fn interleaved_argument_deltas_follow_their_output_index() {
    let server = MockServer::start().await;
    let mut e = Events::new();
    let a = e.function_call_added("fc_1", "call_a", "get_weather");
    let b = e.function_call_added("fc_2", "call_b", "get_time");
    e.args_delta(b, "fc_2", "{\"tz\":");
    e.args_delta(a, "fc_1", "{\"city\":");
    e.args_delta(a, "fc_1", "\"Oslo\"}");
    e.args_delta(b, "fc_2", "\"UTC\"}");
    e.function_call_done(a, "fc_1", "call_a", "get_weather", r#"{"city":"Oslo"}"#);
    e.function_call_done(b, "fc_2", "call_b", "get_time", r#"{"tz":"UTC"}"#);
    server.enqueue(Reply::sse(e.completed(responses::usage(30, 0, 20))));
    let r = assemble(ask(&gpt4o(&server), "both").await.unwrap());
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "call_a".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
            ToolCall { id: "call_b".into(), name: "get_time".into(), arguments: r#"{"tz":"UTC"}"#.into() },
        ]
    );
}

#[tokio::test]
async fn arguments_sent_only_whole_at_the_end_are_used_once() {
    // A server that does not stream arguments: item added (empty), then the whole arguments.
    let server = MockServer::start().await;
    let mut e = Events::new();
    let a = e.function_call_added("fc_1", "call_a", "get_weather");
    e.function_call_done(a, "fc_1", "call_a", "get_weather", r#"{"city":"Oslo"}"#);
    let b = e.function_call_added("fc_2", "call_b", "get_time");
    e.item_done(b, responses::function_call_item("fc_2", "call_b", "get_time", r#"{"tz":"UTC"}"#));
    server.enqueue(Reply::sse(e.completed(responses::usage(30, 0, 20))));
    let r = assemble(ask(&gpt4o(&server), "both").await.unwrap());
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "call_a".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
            ToolCall { id: "call_b".into(), name: "get_time".into(), arguments: r#"{"tz":"UTC"}"#.into() },
        ]
    );
}

#[tokio::test]
async fn an_incomplete_response_finishes_with_its_reason() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(
        Events::new().message("msg_1", &["cut sh"]).incomplete("max_output_tokens", responses::usage(10, 0, 16)),
    ));
    let r = assemble(ask(&gpt4o(&server), "hi").await.unwrap());
    assert_eq!((r.text.as_str(), r.finish_reason), ("cut sh", FinishReason::Length));
    assert_eq!(r.usage.output_tokens, 16);

    server.enqueue(Reply::sse(
        Events::new().message("msg_1", &["hm"]).incomplete("content_filter", responses::usage(10, 0, 1)),
    ));
    let r = assemble(ask(&gpt4o(&server), "hi").await.unwrap());
    assert_eq!(r.finish_reason, FinishReason::ContentFilter);
}

#[tokio::test]
async fn a_stream_cut_before_response_completed_is_an_error_and_not_retried_after_text() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(Events::new().message("msg_1", &["partial"]).unfinished()));
    let err = ask(&gpt4o(&server), "hi").await.unwrap_err();
    assert!(matches!(&err, ModelError::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("response.completed"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_refusal_is_a_content_filter_error_with_the_whole_text() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(
        Events::new().refusal("msg_1", &["I can't ", "help with that."]).completed(responses::usage(10, 0, 5)),
    ));
    let err = ask(&gpt4o(&server), "bad").await.unwrap_err();
    assert!(matches!(&err, ModelError::ContentFilter(m) if m.contains("I can't help with that.")), "{err:?}");

    server.enqueue(Reply::json(
        200,
        responses::response_body(vec![responses::refusal_item("msg_1", "No.")], responses::usage(10, 0, 1)),
    ));
    let err = ask(&gpt4o(&server).streaming(false), "bad").await.unwrap_err();
    assert!(matches!(&err, ModelError::ContentFilter(m) if m.contains("No.")), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Whole (non-streamed) answers
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn non_streaming_sends_no_stream_field_and_decodes_the_response() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        200,
        responses::response_body(
            vec![responses::reasoning_item("rs_1", "Easy."), responses::message_item("msg_1", "Hello")],
            responses::usage(1000, 200, 50),
        ),
    ));
    let got = ask(&gpt4o(&server).streaming(false), "hi").await.unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.path, "/responses");
    assert_ne!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(
        r.json(),
        json!({
            "model": "gpt-4o",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
            "store": false
        })
    );
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[0], ModelChunk::Thinking { text: "Easy.".into(), signature: None, provider: None });
    assert_eq!(got[1], ModelChunk::Text("Hello".into()));
    let ModelChunk::Usage(u) = &got[2] else { panic!("{got:?}") };
    assert_eq!(tokens(u), (800, 200, 0, 50));
    assert_close(u.cost_usd, gpt4o_cost(1000, 200, 50));
    assert_eq!(got[3], ModelChunk::Finish(FinishReason::Stop));
}

#[tokio::test]
async fn non_streaming_function_calls_are_decoded_in_order() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        200,
        responses::response_body(
            vec![
                responses::function_call_item("fc_1", "call_a", "get_weather", r#"{"city":"Oslo"}"#),
                responses::function_call_item("fc_2", "call_b", "get_time", r#"{"tz":"UTC"}"#),
            ],
            responses::usage(30, 0, 20),
        ),
    ));
    let r = assemble(ask(&gpt4o(&server).streaming(false), "both").await.unwrap());
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "call_a".into(), name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
            ToolCall { id: "call_b".into(), name: "get_time".into(), arguments: r#"{"tz":"UTC"}"#.into() },
        ]
    );
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
}

// ---------------------------------------------------------------------------------------------
// Agent runs
// ---------------------------------------------------------------------------------------------

const TURN1: (u64, u64, u64) = (1200, 1000, 20);
const TURN2: (u64, u64, u64) = (1300, 1100, 8);

fn round_trip_agent(model: OpenAIResponsesModel) -> Agent {
    Agent::builder().instructions("Use tools.").model(model).tool(echo_tool("echo")).build().unwrap()
}

fn check_round_trip(server: &MockServer, result: &RunResult) {
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "The tool said echo:hi.");
    assert_eq!(result.turns, 2);
    assert_eq!(tokens(&result.usage), (TURN1.0 - TURN1.1 + TURN2.0 - TURN2.1, TURN1.1 + TURN2.1, 0, TURN1.2 + TURN2.2));
    assert_close(result.usage.cost_usd, 0.003905);
    assert_close(result.usage.cost_usd, gpt4o_cost(TURN1.0, TURN1.1, TURN1.2) + gpt4o_cost(TURN2.0, TURN2.1, TURN2.2));
    assert_eq!(finish_reasons(result), vec![FinishReason::ToolCalls, FinishReason::Stop]);
    let results = tool_results(&result.events);
    assert_eq!(results.len(), 1);
    assert_eq!((results[0].call_id.as_str(), results[0].output.as_str()), ("call_1", "echo:hi"));

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let tools = json!([{
        "type": "function", "name": "echo", "description": "Echo x (echo).", "parameters": x_schema(), "strict": false
    }]);
    let first = requests[0].json();
    assert_eq!(first["instructions"], json!("Use tools."));
    assert_eq!(first["input"], json!([{"role": "user", "content": [{"type": "input_text", "text": "say hi"}]}]));
    assert_eq!(first["tools"], tools);
    assert_eq!(first["store"], json!(false));
    let second = requests[1].json();
    assert_eq!(second["instructions"], json!("Use tools."));
    assert_eq!(
        second["input"],
        json!([
            {"role": "user", "content": [{"type": "input_text", "text": "say hi"}]},
            {"type": "function_call", "call_id": "call_1", "name": "echo", "arguments": "{\"x\":\"hi\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "echo:hi"}
        ])
    );
    assert_eq!(second["tools"], tools);
    assert_eq!(second["store"], json!(false));
    assert!(second.get("previous_response_id").is_none(), "stateless: the whole conversation is sent");
}

#[tokio::test]
async fn a_streamed_agent_run_round_trips_a_tool_call() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(
        Events::new()
            .function_call("fc_1", "call_1", "echo", &["{\"x\":", "\"hi\"}"])
            .completed(responses::usage(TURN1.0, TURN1.1, TURN1.2)),
    ));
    server.enqueue(Reply::sse(
        Events::new()
            .message("msg_2", &["The tool said ", "echo:hi."])
            .completed(responses::usage(TURN2.0, TURN2.1, TURN2.2)),
    ));
    let agent = round_trip_agent(gpt4o(&server));
    let result = within(30, "run", agent.run("say hi")).await.unwrap();
    check_round_trip(&server, &result);
    assert_eq!(text_deltas(&result), vec![(2, "The tool said ".to_string()), (2, "echo:hi.".to_string())]);
    assert!(server.requests().iter().all(|r| r.json()["stream"] == json!(true)));
}

#[tokio::test]
async fn a_non_streamed_agent_run_round_trips_a_tool_call() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        200,
        responses::response_body(
            vec![responses::function_call_item("fc_1", "call_1", "echo", r#"{"x":"hi"}"#)],
            responses::usage(TURN1.0, TURN1.1, TURN1.2),
        ),
    ));
    server.enqueue(Reply::json(
        200,
        responses::response_body(
            vec![responses::message_item("msg_2", "The tool said echo:hi.")],
            responses::usage(TURN2.0, TURN2.1, TURN2.2),
        ),
    ));
    let agent = round_trip_agent(gpt4o(&server).streaming(false));
    let result = within(30, "run", agent.run("say hi")).await.unwrap();
    check_round_trip(&server, &result);
    assert_eq!(text_deltas(&result), vec![(2, "The tool said echo:hi.".to_string())]);
    assert!(server.requests().iter().all(|r| r.json().get("stream").is_none()));
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn response_failed_fails_the_run_with_its_message_after_the_retries() {
    let server = MockServer::start().await;
    server.always(Reply::sse(Events::new().failed("server_error", "The model failed to generate a response.")));
    let agent = Agent::builder().model(gpt4o(&server).with_config(quick_retries())).build().unwrap();
    let result = failed_result(within(30, "run", agent.run("hi")).await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Model);
    assert_eq!(error.model_error.as_deref(), Some("transient"));
    assert!(error.message.contains("The model failed to generate a response."), "{}", error.message);
    // A failure before any output is a transient error, retried: 3 attempts in all.
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn response_failed_kinds_follow_the_error_code() {
    let server = MockServer::start().await;
    let cases = [
        ("invalid_prompt", "invalid_request", 1),
        ("context_length_exceeded", "context_length_exceeded", 1),
        ("rate_limit_exceeded", "rate_limited", 3),
    ];
    let mut sent = 0;
    for (code, kind, attempts) in cases {
        server.always(Reply::sse(Events::new().failed(code, "nope")));
        let err = ask(&gpt4o(&server).with_config(quick_retries()), "hi").await.unwrap_err();
        assert_eq!(err.kind(), kind, "{code}: {err:?}");
        sent += attempts;
        assert_eq!(server.requests().len(), sent, "{code}");
    }
}

#[tokio::test]
async fn an_error_event_fails_the_call() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(Events::new().message("msg_1", &["Hal"]).error("server_error", "Stream interrupted")));
    let agent = Agent::builder().model(gpt4o(&server)).build().unwrap();
    let result = failed_result(within(30, "run", agent.run("hi")).await.unwrap_err());
    let error = result.error.clone().unwrap();
    assert_eq!(error.model_error.as_deref(), Some("transient"));
    assert!(error.message.contains("Stream interrupted"), "{}", error.message);
    assert_eq!(text_deltas(&result), vec![(1, "Hal".to_string())]);
    assert_eq!(server.requests().len(), 1, "not retried once text reached the run");

    server.enqueue(Reply::sse(Events::new().error("context_length_exceeded", "Too long")));
    let err = ask(&gpt4o(&server), "hi").await.unwrap_err();
    assert!(matches!(&err, ModelError::ContextLengthExceeded(m) if m.contains("Too long")), "{err:?}");
}

#[tokio::test]
async fn http_errors_follow_the_taxonomy_and_the_key_never_leaks() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(
        401,
        responses::error_body(
            "invalid_request_error",
            Some("invalid_api_key"),
            &format!("Incorrect API key provided: {KEY}."),
        ),
    ));
    let agent = Agent::builder().model(gpt4o(&server)).build().unwrap();
    let run = agent.start("hi");
    let result = within(30, "run", run.result()).await;
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.model_error.as_deref(), Some("authentication"));
    assert!(error.message.contains("Incorrect API key provided"), "{}", error.message);
    assert_eq!(server.requests().len(), 1);
    assert!(!serde_json::to_string(&result).unwrap().contains(KEY));
    assert!(!serde_json::to_string(&run.transcript()).unwrap().contains(KEY));
    assert!(!format!("{:?}", gpt4o(&server)).contains(KEY));

    server.enqueue(Reply::json(
        400,
        responses::error_body(
            "invalid_request_error",
            Some("context_length_exceeded"),
            "Your input exceeds the context window of this model.",
        ),
    ));
    let err = ask(&gpt4o(&server), "hi").await.unwrap_err();
    assert!(matches!(err, ModelError::ContextLengthExceeded(_)), "{err:?}");

    server.enqueue(Reply::json(400, responses::error_body("invalid_request_error", None, "Unknown parameter: 'foo'.")));
    let err = ask(&gpt4o(&server), "hi").await.unwrap_err();
    assert!(matches!(&err, ModelError::InvalidRequest(m) if m.contains("Unknown parameter")), "{err:?}");
    assert_eq!(server.requests().len(), 3, "4xx errors are not retried");
}
