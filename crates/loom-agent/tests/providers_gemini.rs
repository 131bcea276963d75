//! The Gemini provider against a mock server: exact request paths, headers and bodies, streamed and
//! whole responses, usage and cost, thought signatures, error mapping and retries, full agent runs,
//! and keys kept out of everything a caller can see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use loom_agent::event::DeltaKind;
use loom_agent::message::{ContentPart, Thinking};
use loom_agent::model::providers::{GeminiModel, HttpConfig, RetryPolicy};
use loom_agent::model::{LanguageModel, ModelChunk, ModelRequest, ModelResponse, ResponseAssembler};
use loom_agent::tool::{FunctionTool, ToolFlags, ToolSpec};
use loom_agent::{
    Agent, EventKind, FinishReason, Generation, Message, Model, ModelError, RunState, ToolCall, ToolError, Usage,
};
use loom_testkit::wire::gemini as wire;
use loom_testkit::{MockServer, Reply};
use serde_json::{Value, json};

const KEY: &str = "test-key-AIzaSyMOCK0123456789-SECRET";
const STREAM_PATH: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
const WHOLE_PATH: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

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

fn model(server: &MockServer) -> GeminiModel {
    Model::gemini("gemini-2.5-flash").base_url(server.url()).api_key(KEY).with_config(fast_retries(3))
}

fn no_retry(server: &MockServer) -> GeminiModel {
    Model::gemini("gemini-2.5-flash").base_url(server.url()).api_key(KEY).with_config(fast_retries(1))
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
    output_schema: Option<&Value>,
) -> (Vec<ModelChunk>, Option<ModelError>) {
    let request =
        ModelRequest { messages, tools, generation, output_schema, run_id: "run_test", user_id: None, turn: 1 };
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
    let (chunks, err) = call(model, messages, &[], &Generation::default(), None).await;
    assert_eq!(err, None, "chunks so far: {chunks:?}");
    chunks
}

async fn err_call(model: &(impl LanguageModel + ?Sized), messages: &[Message]) -> ModelError {
    call(model, messages, &[], &Generation::default(), None).await.1.expect("the call should fail")
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

/// gemini-2.5-flash: $0.30 input, $0.075 cached input, $2.50 output per million.
fn flash_cost(input: u64, cached: u64, output: u64) -> f64 {
    (input as f64 * 0.3 + cached as f64 * 0.075 + output as f64 * 2.5) / 1e6
}

fn zero_cost(chunks: &[ModelChunk]) -> Vec<ModelChunk> {
    chunks
        .iter()
        .map(|c| match c {
            ModelChunk::Usage(u) => ModelChunk::Usage(Usage { cost_usd: 0.0, ..*u }),
            c => c.clone(),
        })
        .collect()
}

fn delta(index: usize, id: Option<&str>, name: &str, args: &str) -> ModelChunk {
    ModelChunk::ToolCallDelta {
        index,
        id: id.map(str::to_string),
        name: Some(name.to_string()),
        arguments: args.to_string(),
    }
}

fn signature(sig: &str) -> ModelChunk {
    ModelChunk::Thinking { text: String::new(), signature: Some(sig.to_string()), provider: Some("gemini".into()) }
}

fn usage(input: u64, cached: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        cache_write_tokens: 0,
        output_tokens: output,
        cost_usd: 0.0,
    }
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
            thinking: vec![Thinking::signed("", "sig-A/b+c==", "gemini")],
            tool_calls: vec![
                ToolCall::new("call_1_0", "lookup", &json!({"x": "a"})),
                ToolCall { id: "fc-7".into(), name: "lookup".into(), arguments: "[1]".into() },
            ],
        },
        Message::tool("call_1_0", "lookup", "lookup:a", false),
        Message::tool("fc-7", "lookup", "Error: bad arguments", true),
        Message::user("Go on."),
    ];
    let tools = vec![
        spec("lookup", "Look a thing up.", x_schema()),
        spec("write", "Write a file.", json!({"type": "object", "properties": {"path": {"type": "string"}}})),
    ];
    let generation =
        Generation::new().temperature(0.2).top_p(0.9).max_output_tokens(512).stop("END").stop("STOP!").seed(7);
    let (_, err) = call(&model(&server), &messages, &tools, &generation, None).await;
    assert_eq!(err, None);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, STREAM_PATH, "the key is never in the URL");
    assert_eq!(r.header("x-goog-api-key"), Some(KEY));
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("accept"), Some("text/event-stream"));
    let expected = json!({
        "contents": [
            {"role": "user", "parts": [
                {"text": "Look:"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
                {"text": "And this."}
            ]},
            {"role": "model", "parts": [
                {"text": "Checking."},
                {"functionCall": {"name": "lookup", "args": {"x": "a"}}, "thoughtSignature": "sig-A/b+c=="},
                {"functionCall": {"name": "lookup", "args": {}, "id": "fc-7"}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "lookup", "response": {"content": "lookup:a"}}},
                {"functionResponse": {"name": "lookup", "response": {"error": "Error: bad arguments"}, "id": "fc-7"}},
                {"text": "Go on."}
            ]}
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Context: x."}]},
        "tools": [{"functionDeclarations": [
            {"name": "lookup", "description": "Look a thing up.", "parametersJsonSchema": x_schema()},
            {"name": "write", "description": "Write a file.",
             "parametersJsonSchema": {"type": "object", "properties": {"path": {"type": "string"}}}}
        ]}],
        "generationConfig": {
            "temperature": 0.2,
            "topP": 0.9,
            "maxOutputTokens": 512,
            "stopSequences": ["END", "STOP!"],
            "seed": 7
        }
    });
    assert_eq!(r.json(), expected);
    let raw = String::from_utf8(r.body.clone()).unwrap();
    assert!(!raw.contains("0.2000") && !raw.contains("0.8999"), "{raw}");
}

#[tokio::test]
async fn a_signature_on_a_text_only_turn_goes_back_on_its_first_part() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let messages = vec![
        Message::user("q"),
        Message::Assistant {
            content: "Hi.".into(),
            thinking: vec![Thinking::signed("thought summary", "sig-text", "gemini")],
            tool_calls: vec![],
        },
        Message::user("q2"),
    ];
    ok_call(&model(&server), &messages).await;
    assert_eq!(
        server.requests()[0].json()["contents"],
        json!([
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"text": "Hi.", "thoughtSignature": "sig-text"}]},
            {"role": "user", "parts": [{"text": "q2"}]}
        ]),
        "thought text is never sent back, only the signature"
    );
}

#[tokio::test]
async fn an_extension_replaces_a_built_in_setting_and_is_sent_once() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    let generation = Generation::new()
        .temperature(0.2)
        .max_output_tokens(100)
        .extension("generationConfig.temperature", json!(0.7))
        .extension("thinkingConfig", json!({"thinkingBudget": 0}));
    let (_, err) = call(&model(&server), &[Message::user("hi")], &[], &generation, None).await;
    assert_eq!(err, None);
    let r = &server.requests()[0];
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert_eq!(body.matches(r#""temperature""#).count(), 1, "{body}");
    assert_eq!(
        r.json()["generationConfig"],
        json!({"temperature": 0.7, "maxOutputTokens": 100, "thinkingConfig": {"thinkingBudget": 0}})
    );
}

#[tokio::test]
async fn a_minimal_request_has_only_contents() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(wire::text_stream("ok", 10, 2)));
    ok_call(&model(&server), &[Message::user("hi")]).await;
    assert_eq!(server.requests()[0].json(), json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}));
}

#[tokio::test]
async fn an_output_schema_sets_the_response_mime_type_and_json_schema_and_not_streaming_uses_generate_content() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(200, wire::response(vec![wire::text("{\"x\":\"y\"}")], Some("STOP"), None)));
    let schema = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                        "properties": {"x": {"type": "string"}}, "required": ["x"]});
    let generation = Generation::new()
        .temperature(0.5)
        .extension("thinkingConfig", json!({"thinkingBudget": 0}))
        .extension("generationConfig.candidateCount", json!(1))
        .extension("safetySettings", json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]));
    let model = model(&server).streaming(false);
    let (chunks, err) = call(&model, &[Message::user("give x")], &[], &generation, Some(&schema)).await;
    assert_eq!(err, None);
    assert_eq!(assemble(&chunks).text, "{\"x\":\"y\"}");
    let r = &server.requests()[0];
    assert_eq!(r.path, WHOLE_PATH);
    assert_eq!(r.header("x-goog-api-key"), Some(KEY));
    assert_ne!(r.header("accept"), Some("text/event-stream"));
    assert_eq!(
        r.json(),
        json!({
            "contents": [{"role": "user", "parts": [{"text": "give x"}]}],
            "generationConfig": {
                "temperature": 0.5,
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]},
                "thinkingConfig": {"thinkingBudget": 0},
                "candidateCount": 1
            },
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
        })
    );
}

#[tokio::test]
async fn model_strings_resolve_to_the_gemini_provider() {
    for s in ["gemini-2.5-flash", "gemini:gemini-2.5-flash", "google:gemini-2.5-flash"] {
        let m = Model::parse(s).unwrap();
        assert_eq!((m.provider(), m.name()), ("gemini", "gemini-2.5-flash"), "{s}");
    }
    assert_eq!(Model::gemini("models/gemini-2.5-flash").name(), "gemini-2.5-flash");
}

// ---------------------------------------------------------------- streaming

#[tokio::test]
async fn streamed_text_function_calls_usage_and_finish_are_decoded() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(vec![
        wire::chunk(vec![wire::thought("Planning the lookup.")], None, Some(wire::usage(1200, 200, 0, 30))),
        wire::chunk(vec![wire::text("Let me ")], None, Some(wire::usage(1200, 200, 2, 30))),
        wire::chunk(vec![wire::text("check.")], None, Some(wire::usage(1200, 200, 4, 30))),
        wire::chunk(
            vec![
                wire::signed(wire::function_call("lookup", json!({"x": "a"}), None), "sig-1"),
                wire::function_call("write", json!({"path": "/tmp/x"}), Some("fc-2")),
            ],
            Some("STOP"),
            Some(wire::usage(1200, 200, 50, 30)),
        ),
    ]));
    let chunks = ok_call(&model(&server), &[Message::user("hi")]).await;
    assert_eq!(
        zero_cost(&chunks),
        vec![
            ModelChunk::Thinking { text: "Planning the lookup.".into(), signature: None, provider: None },
            ModelChunk::Text("Let me ".into()),
            ModelChunk::Text("check.".into()),
            signature("sig-1"),
            delta(0, None, "lookup", "{\"x\":\"a\"}"),
            delta(1, Some("fc-2"), "write", "{\"path\":\"/tmp/x\"}"),
            // input = prompt - cached; output = candidates + thoughts.
            ModelChunk::Usage(usage(1000, 200, 80)),
            ModelChunk::Finish(FinishReason::ToolCalls),
        ]
    );
    let cost = flash_cost(1000, 200, 80);
    assert!(close(cost, 0.000515), "{cost}");
    let r = assemble(&chunks);
    assert!(close(r.usage.cost_usd, cost), "{}", r.usage.cost_usd);
    assert_eq!(r.text, "Let me check.");
    assert_eq!(r.thinking, vec![Thinking::signed("Planning the lookup.", "sig-1", "gemini")]);
    assert_eq!(
        r.tool_calls,
        vec![
            ToolCall { id: "call_1_0".into(), name: "lookup".into(), arguments: "{\"x\":\"a\"}".into() },
            ToolCall { id: "fc-2".into(), name: "write".into(), arguments: "{\"path\":\"/tmp/x\"}".into() },
        ]
    );
    assert_eq!(r.finish_reason, FinishReason::ToolCalls);
}

#[tokio::test]
async fn finish_reasons_map() {
    let cases = [
        ("STOP", FinishReason::Stop),
        ("MAX_TOKENS", FinishReason::Length),
        ("SAFETY", FinishReason::ContentFilter),
        ("RECITATION", FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
        ("MALFORMED_FUNCTION_CALL", FinishReason::Other),
    ];
    for (reason, expected) in cases {
        let server = MockServer::start().await;
        server.enqueue(Reply::sse(vec![wire::chunk(vec![wire::text("x")], Some(reason), None)]));
        let chunks = ok_call(&model(&server), &[Message::user("hi")]).await;
        assert_eq!(chunks.last(), Some(&ModelChunk::Finish(expected)), "{reason}");
    }
}

#[tokio::test]
async fn a_stream_ending_without_a_finish_reason_is_a_transient_error() {
    // After text reached the caller: the call fails, and is not retried.
    let server = MockServer::start().await;
    server.always(Reply::sse(vec![wire::chunk(vec![wire::text("partial")], None, None)]));
    let (chunks, err) = call(&model(&server), &[Message::user("hi")], &[], &Generation::default(), None).await;
    assert_eq!(chunks, vec![ModelChunk::Text("partial".into())]);
    assert!(matches!(&err, Some(ModelError::Transient { message, .. }) if message.contains("finishReason")), "{err:?}");
    assert_eq!(server.requests().len(), 1);

    // Before anything reached the caller: retried.
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(vec![wire::chunk(vec![], None, Some(wire::usage(5, 0, 0, 0)))]));
    server.enqueue(Reply::sse(wire::text_stream("second", 5, 1)));
    assert_eq!(assemble(&ok_call(&model(&server), &[Message::user("hi")]).await).text, "second");
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn a_blocked_prompt_is_a_content_filter_error_and_not_retried() {
    let server = MockServer::start().await;
    server.always(Reply::sse(vec![wire::event(&wire::blocked("SAFETY", 8))]));
    let err = err_call(&model(&server), &[Message::user("bad")]).await;
    assert_eq!(err, ModelError::ContentFilter("the prompt was blocked (SAFETY)".into()));
    assert_eq!(server.requests().len(), 1);

    let server = MockServer::start().await;
    server.always(Reply::json(200, wire::blocked("PROHIBITED_CONTENT", 8)));
    let err = err_call(&model(&server).streaming(false), &[Message::user("bad")]).await;
    assert_eq!(err, ModelError::ContentFilter("the prompt was blocked (PROHIBITED_CONTENT)".into()));
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------- errors and retries

#[tokio::test]
async fn error_bodies_map_to_error_kinds() {
    let server = MockServer::start().await;
    let m = no_retry(&server);
    server.enqueue(Reply::json(
        429,
        wire::error_body(429, "Resource has been exhausted (e.g. check quota).", "RESOURCE_EXHAUSTED"),
    ));
    assert_eq!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::RateLimited {
            message: "Resource has been exhausted (e.g. check quota). (HTTP 429)".into(),
            retry_after: None
        }
    );
    // The wait Gemini asks for in the body; a Retry-After header wins over it.
    server.enqueue(Reply::json(429, wire::rate_limited_body("17.5s")));
    assert!(matches!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_millis(17_500)
    ));
    server.enqueue(Reply::json(429, wire::rate_limited_body("17s")).header("retry-after", "3"));
    assert!(matches!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3)
    ));
    server.enqueue(Reply::json(400, wire::invalid_key_body()));
    assert_eq!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::Authentication("API key not valid. Please pass a valid API key. (HTTP 400)".into())
    );
    server.enqueue(Reply::json(
        400,
        wire::error_body(
            400,
            "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576).",
            "INVALID_ARGUMENT",
        ),
    ));
    assert!(
        matches!(err_call(&m, &[Message::user("hi")]).await, ModelError::ContextLengthExceeded(_)),
        "Gemini's context overflow message"
    );
    server.enqueue(Reply::json(
        400,
        wire::error_body(400, "Invalid JSON payload received. Unknown name \"foo\"", "INVALID_ARGUMENT"),
    ));
    assert!(matches!(err_call(&m, &[Message::user("hi")]).await, ModelError::InvalidRequest(_)));
    server.enqueue(Reply::json(403, wire::error_body(403, "Permission denied", "PERMISSION_DENIED")));
    assert!(matches!(err_call(&m, &[Message::user("hi")]).await, ModelError::Authentication(_)));
    server.enqueue(Reply::json(503, wire::error_body(503, "The model is overloaded.", "UNAVAILABLE")));
    assert_eq!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::Transient { message: "The model is overloaded. (HTTP 503)".into(), status: Some(503) }
    );
    // An error object inside the stream.
    server.enqueue(Reply::sse(vec![wire::event(&wire::error_body(503, "overloaded", "UNAVAILABLE"))]));
    assert_eq!(
        err_call(&m, &[Message::user("hi")]).await,
        ModelError::Transient { message: "overloaded".into(), status: Some(503) }
    );
    server.enqueue(Reply::sse(vec![wire::event(&wire::error_body(429, "quota", "RESOURCE_EXHAUSTED"))]));
    assert!(matches!(err_call(&m, &[Message::user("hi")]).await, ModelError::RateLimited { .. }));
}

#[tokio::test]
async fn rate_limits_are_retried_and_bad_keys_are_not() {
    let server = MockServer::start().await;
    server.enqueue(Reply::json(429, wire::rate_limited_body("0.001s")));
    server.enqueue(Reply::sse(wire::text_stream("after the wait", 5, 3)));
    assert_eq!(assemble(&ok_call(&model(&server), &[Message::user("hi")]).await).text, "after the wait");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);

    let server = MockServer::start().await;
    server.always(Reply::json(400, wire::invalid_key_body()));
    assert!(matches!(err_call(&model(&server), &[Message::user("hi")]).await, ModelError::Authentication(_)));
    assert_eq!(server.requests().len(), 1);
}

// ---------------------------------------------------------------- agent runs

async fn tool_round_trip(streaming: bool) {
    let server = MockServer::start().await;
    let first_parts = vec![
        wire::text("Looking."),
        wire::signed(wire::function_call("lookup", json!({"x": "tokyo"}), None), "sig/turn-1=="),
        wire::function_call("fail", json!({}), None),
    ];
    if streaming {
        server.enqueue(Reply::sse(vec![
            wire::chunk(vec![wire::thought("Need a lookup.")], None, Some(wire::usage(300, 100, 0, 20))),
            wire::chunk(first_parts, Some("STOP"), Some(wire::usage(300, 100, 15, 20))),
        ]));
        server.enqueue(Reply::sse(vec![
            wire::chunk(vec![wire::text("Tokyo: ")], None, Some(wire::usage(400, 0, 2, 0))),
            wire::chunk(
                vec![wire::text("found."), wire::signed(wire::text(""), "sig-final")],
                Some("STOP"),
                Some(wire::usage(400, 0, 6, 0)),
            ),
        ]));
    } else {
        let mut parts = vec![wire::thought("Need a lookup.")];
        parts.extend(first_parts);
        server.enqueue(Reply::json(200, wire::response(parts, Some("STOP"), Some(wire::usage(300, 100, 15, 20)))));
        server.enqueue(Reply::json(
            200,
            wire::response(vec![wire::text("Tokyo: found.")], Some("STOP"), Some(wire::usage(400, 0, 6, 0))),
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
    let path = if streaming { STREAM_PATH } else { WHOLE_PATH };
    for r in &requests {
        assert_eq!(r.path, path);
        assert_eq!(r.header("x-goog-api-key"), Some(KEY));
    }
    let system = json!({"parts": [{"text": "Be terse."}]});
    let tools = json!([{"functionDeclarations": [
        {"name": "lookup", "description": "Echo x (lookup).", "parametersJsonSchema": x_schema()},
        {"name": "fail", "description": "Always fails.", "parametersJsonSchema": {"type": "object"}}
    ]}]);
    assert_eq!(
        requests[0].json(),
        json!({
            "contents": [{"role": "user", "parts": [{"text": "Where is tokyo?"}]}],
            "systemInstruction": system,
            "tools": tools
        })
    );
    assert_eq!(
        requests[1].json(),
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Where is tokyo?"}]},
                {"role": "model", "parts": [
                    {"text": "Looking."},
                    {"functionCall": {"name": "lookup", "args": {"x": "tokyo"}}, "thoughtSignature": "sig/turn-1=="},
                    {"functionCall": {"name": "fail", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "lookup", "response": {"content": "lookup:tokyo"}}},
                    {"functionResponse": {"name": "fail", "response": {"error": "Error: boom"}}}
                ]}
            ],
            "systemInstruction": system,
            "tools": tools
        })
    );

    // Usage and cost over both calls.
    let expected = flash_cost(200, 100, 35) + flash_cost(400, 0, 6);
    assert!(close(expected, 0.00029), "{expected}");
    assert_eq!(
        (result.usage.input_tokens, result.usage.cached_input_tokens, result.usage.output_tokens),
        (600, 100, 41)
    );
    assert!(close(result.usage.cost_usd, expected), "{}", result.usage.cost_usd);
    assert_eq!(tool_call_ids(&result.events), vec!["call_1_0", "call_1_1"]);
    let results = tool_results(&result.events);
    assert_eq!(results.len(), 2);
    let thinking: Vec<String> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelDelta(d) if d.kind == DeltaKind::Thinking => Some(d.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(thinking, vec!["Need a lookup."]);
    let transcript = run.transcript();
    let assistant = transcript.messages.iter().find(|m| matches!(m, Message::Assistant { .. })).unwrap();
    assert_eq!(
        assistant,
        &Message::Assistant {
            content: "Looking.".into(),
            thinking: vec![Thinking::signed("Need a lookup.", "sig/turn-1==", "gemini")],
            tool_calls: vec![
                ToolCall::new("call_1_0", "lookup", &json!({"x": "tokyo"})),
                ToolCall::new("call_1_1", "fail", &json!({})),
            ],
        }
    );
}

#[tokio::test]
async fn agent_run_with_a_tool_round_trip_streaming() {
    tool_round_trip(true).await;
}

#[tokio::test]
async fn agent_run_with_a_tool_round_trip_not_streaming() {
    tool_round_trip(false).await;
}

#[tokio::test]
async fn function_call_ids_from_the_model_go_back_with_the_call_and_its_response() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(vec![wire::chunk(
        vec![wire::function_call("lookup", json!({"x": "q"}), Some("fc-abc"))],
        Some("STOP"),
        None,
    )]));
    server.enqueue(Reply::sse(wire::text_stream("done", 5, 1)));
    let agent = Agent::builder().model(model(&server)).tool(echo_tool("lookup")).build().unwrap();
    let result = within(20, "run", agent.run("q")).await.unwrap();
    assert_eq!(result.output, "done");
    assert_eq!(
        server.requests()[1].json()["contents"],
        json!([
            {"role": "user", "parts": [{"text": "q"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"x": "q"}, "id": "fc-abc"}}]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "lookup", "response": {"content": "lookup:q"}, "id": "fc-abc"}}
            ]}
        ])
    );
}

// ---------------------------------------------------------------- keys

fn assert_no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "the key leaked into {what}: {text}");
    assert!(!text.contains("SECRET"), "part of the key leaked into {what}: {text}");
}

#[tokio::test]
async fn the_key_never_appears_in_results_events_transcripts_errors_or_debug_output() {
    let server = MockServer::start().await;
    let echo = format!("API key not valid: {KEY}. Please pass a valid API key.");
    server.enqueue(Reply::json(400, wire::error_body(400, &echo, "INVALID_ARGUMENT")));
    let m = model(&server);
    assert_no_key("the model's Debug", &format!("{m:?}"));
    let agent = Agent::builder().model(m).build().unwrap();
    assert_no_key("the agent's Debug", &format!("{agent:?}"));
    let run = agent.start("hi");
    let result = within(20, "run", run.result()).await;
    assert_eq!(server.requests()[0].header("x-goog-api-key"), Some(KEY), "the key was sent");
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.model_error.as_deref(), Some("authentication"));
    assert!(error.message.contains("[redacted]"), "{error:?}");
    assert_no_key("the RunResult JSON", &serde_json::to_string(&result).unwrap());
    assert_no_key("the RunResult Debug", &format!("{result:?}"));
    assert_no_key("the events", &serde_json::to_string(&*result.events).unwrap());
    assert_no_key("the transcript", &serde_json::to_string(&run.transcript()).unwrap());
    let err = run.wait().await.unwrap_err();
    assert_no_key("the error's Display", &err.to_string());
    assert_no_key("the error's Debug", &format!("{err:?}"));

    // Echoed inside the stream after content, and in retried errors.
    server.enqueue(Reply::sse(vec![
        wire::chunk(vec![wire::text("x")], None, None),
        wire::event(&wire::error_body(500, &format!("internal error, key {KEY}"), "INTERNAL")),
    ]));
    let (_, err) = call(&model(&server), &[Message::user("hi")], &[], &Generation::default(), None).await;
    let err = err.unwrap();
    assert_no_key("an in-stream error", &format!("{err} {err:?}"));
    let server = MockServer::start().await;
    server.always(Reply::json(429, wire::error_body(429, &format!("quota for {KEY}"), "RESOURCE_EXHAUSTED")));
    let err = err_call(&model(&server), &[Message::user("hi")]).await;
    assert_eq!(server.requests().len(), 3);
    assert_no_key("a retried error", &format!("{err} {err:?}"));
}

#[tokio::test]
async fn a_key_echoed_at_the_truncation_point_does_not_leak_in_part() {
    let server = MockServer::start().await;
    let message = format!("{}{KEY} is not valid", "x".repeat(480));
    server.enqueue(Reply::json(403, wire::error_body(403, &message, "PERMISSION_DENIED")));
    let err = err_call(&model(&server), &[Message::user("hi")]).await;
    assert!(matches!(err, ModelError::Authentication(_)), "{err:?}");
    assert!(!err.to_string().contains("AIzaSyMOCK"), "{err}");
}

/// A run that fails over from Anthropic to Gemini mid-run must not hand Gemini the Anthropic
/// thinking signature as a `thoughtSignature` (signatures only verify with the provider that minted
/// them). The turn Anthropic produced goes to Gemini with the placeholder Google documents for
/// history Gemini did not write.
#[tokio::test]
async fn a_signature_minted_by_another_provider_is_not_replayed() {
    use loom_testkit::wire::anthropic as claude;
    let anthropic = MockServer::start().await;
    anthropic.enqueue(Reply::sse(vec![
        claude::message_start(10, 0, 0),
        claude::thinking_start(0),
        claude::thinking_delta(0, "plan"),
        claude::signature_delta(0, "AnthropicSignature=="),
        claude::block_stop(0),
        claude::tool_use_start(1, "toolu_1", "lookup"),
        claude::input_json_delta(1, "{\"x\":\"a\"}"),
        claude::block_stop(1),
        claude::message_delta("tool_use", 5),
        claude::message_stop(),
    ]));
    anthropic.always(Reply::json(529, claude::error_body("overloaded_error", "Overloaded")));
    let gemini = MockServer::start().await;
    gemini.enqueue(Reply::sse(wire::text_stream("done", 5, 1)));
    let primary = Model::anthropic("claude-sonnet-4-5")
        .base_url(anthropic.url())
        .api_key("sk-ant-test-0000000000")
        .with_config(fast_retries(1));
    let fallback = Model::fallback([Model::new(primary), Model::new(no_retry(&gemini))]).unwrap();
    let agent = Agent::builder().model(fallback).tool(echo_tool("lookup")).build().unwrap();
    let result = within(20, "run", agent.run("q")).await.unwrap();
    assert_eq!(result.output, "done");
    let body = gemini.requests()[0].json();
    assert!(!body.to_string().contains("AnthropicSignature"), "{body}");
    assert_eq!(
        body["contents"][1],
        json!({"role": "model", "parts": [{
            "functionCall": {"name": "lookup", "args": {"x": "a"}, "id": "toolu_1"},
            "thoughtSignature": "skip_thought_signature_validator"
        }]})
    );
    assert_eq!(body["contents"][2]["parts"][0]["functionResponse"]["response"], json!({"content": "lookup:a"}));
}

/// The other way round: a run that fails over from Gemini to Anthropic sends Anthropic no thinking
/// block for the turn Gemini signed (Anthropic would reject the foreign signature).
#[tokio::test]
async fn a_gemini_signature_is_not_replayed_to_anthropic() {
    use loom_testkit::wire::anthropic as claude;
    let gemini = MockServer::start().await;
    let call = wire::signed(wire::function_call("lookup", json!({"x": "a"}), None), "GeminiSignature==");
    gemini.enqueue(Reply::sse(vec![wire::chunk(vec![call], Some("STOP"), Some(wire::usage(10, 0, 5, 0)))]));
    gemini.always(Reply::json(503, wire::error_body(503, "overloaded", "UNAVAILABLE")));
    let anthropic = MockServer::start().await;
    anthropic.enqueue(Reply::sse(claude::text_stream("done", 5, 1)));
    let secondary = Model::anthropic("claude-sonnet-4-5")
        .base_url(anthropic.url())
        .api_key("sk-ant-test-0000000000")
        .with_config(fast_retries(1));
    let fallback = Model::fallback([Model::new(no_retry(&gemini)), Model::new(secondary)]).unwrap();
    let agent = Agent::builder().model(fallback).tool(echo_tool("lookup")).build().unwrap();
    let result = within(20, "run", agent.run("q")).await.unwrap();
    assert_eq!(result.output, "done");
    let body = anthropic.requests()[0].json();
    assert!(!body.to_string().contains("GeminiSignature"), "{body}");
    let assistant = &body["messages"][1];
    assert_eq!(assistant["role"], "assistant");
    let content = assistant["content"].as_array().unwrap();
    assert_eq!(content.len(), 1, "only the tool call: {assistant}");
    assert_eq!(content[0]["type"], "tool_use");
    assert_eq!(content[0]["name"], "lookup");
    assert_eq!(content[0]["input"], json!({"x": "a"}));
}
