//! OpenAI-compatible servers: the presets (names, default base URLs, keys), `Model::parse`,
//! `Model::compatible`, DeepSeek's usage and reasoning, and prompted (not native) structured output.
//!
//! Environment variables are process-global and tests run in parallel, so no test sets one: base
//! URLs are given with `.base_url(…)`, and the checks of defaults skip when the variable happens to
//! be set in the environment.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::StreamExt;
use loom_agent::event::DeltaKind;
use loom_agent::message::{FinishReason, Message};
use loom_agent::model::providers::{PRESETS, Preset};
use loom_agent::model::{LanguageModel, ModelChunk, ModelRequest};
use loom_agent::output::OutputSchema;
use loom_agent::{Agent, Error, EventKind, Generation, Model, ModelError, RunRequest, RunState};
use loom_testkit::wire::openai;
use loom_testkit::{MockServer, Reply};
use serde_json::json;

fn env_set(var: &str) -> bool {
    !var.is_empty() && std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

async fn ask(model: &dyn LanguageModel, prompt: &str) -> Result<Vec<ModelChunk>, ModelError> {
    let messages = [Message::user(prompt)];
    let generation = Generation::new();
    let request = ModelRequest {
        messages: &messages,
        tools: &[],
        generation: &generation,
        output_schema: None,
        run_id: "run_test",
        user_id: None,
        turn: 1,
    };
    let mut stream = within(20, "model call", model.stream(&request)).await?;
    let mut out = Vec::new();
    while let Some(chunk) = within(20, "next chunk", stream.next()).await {
        out.push(chunk?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Presets and model strings
// ---------------------------------------------------------------------------------------------

#[test]
fn the_presets_are_the_documented_ones() {
    let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        ["ollama", "vllm", "llamacpp", "lmstudio", "deepseek", "qwen", "mistral", "groq", "openrouter", "together"]
    );
    let local: Vec<&str> = PRESETS.iter().filter(|p| !p.key_required).map(|p| p.name).collect();
    assert_eq!(local, ["ollama", "vllm", "llamacpp", "lmstudio"]);
    assert_eq!(Preset::named("llama.cpp").map(|p| p.name), Some("llamacpp"));
    assert_eq!(Preset::named("LM-Studio").map(|p| p.name), Some("lmstudio"));
    assert_eq!(Preset::named("open_router").map(|p| p.name), Some("openrouter"));
    assert_eq!(Preset::named("nosuch"), None);
}

#[test]
fn every_preset_resolves_from_a_model_string() {
    for preset in PRESETS {
        let spec = format!("{}:some-model", preset.name);
        let model = Model::parse(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(model.provider(), preset.name, "{spec}");
        assert_eq!(model.name(), "some-model", "{spec}");
    }
    let cases = [
        ("ollama:qwen3", "ollama", "qwen3"),
        ("ollama:qwen3:8b", "ollama", "qwen3:8b"),
        ("groq:llama-3.3-70b", "groq", "llama-3.3-70b"),
        ("openrouter:openai/gpt-4o", "openrouter", "openai/gpt-4o"),
        ("deepseek:deepseek-chat", "deepseek", "deepseek-chat"),
        ("llama.cpp:local", "llamacpp", "local"),
        ("LMStudio:local", "lmstudio", "local"),
        ("openai:gpt-4o", "openai", "gpt-4o"),
        ("openai-responses:gpt-5.1", "openai", "gpt-5.1"),
        ("gpt-4o", "openai", "gpt-4o"),
        ("o3", "openai", "o3"),
    ];
    for (spec, provider, name) in cases {
        let model = Model::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!((model.provider(), model.name()), (provider, name), "{spec}");
    }
}

#[test]
fn unknown_providers_are_config_errors_that_list_what_is_accepted() {
    let err = Model::parse("nosuch:x").err().unwrap();
    let Error::Config(message) = &err else { panic!("{err:?}") };
    assert!(message.contains("nosuch:x"), "{message}");
    for preset in PRESETS {
        assert!(message.contains(preset.name), "{message} does not list {}", preset.name);
    }
    assert!(message.contains("openai-responses"), "{message}");

    let Error::Config(message) = Model::preset("nosuch", "x").err().unwrap() else { panic!() };
    assert!(message.contains("nosuch"), "{message}");
    for preset in PRESETS {
        assert!(message.contains(preset.name), "{message} does not list {}", preset.name);
    }

    assert!(matches!(Model::parse("ollama:"), Err(Error::Config(m)) if m.contains("names no model")));
    assert!(matches!(Model::parse("llama3"), Err(Error::Config(_))));
    assert!(matches!(Model::parse(""), Err(Error::Config(_))));
}

#[test]
fn presets_default_to_their_documented_base_urls() {
    let expected = [
        ("ollama", "http://localhost:11434/v1"),
        ("vllm", "http://localhost:8000/v1"),
        ("llamacpp", "http://localhost:8080/v1"),
        ("lmstudio", "http://localhost:1234/v1"),
        ("deepseek", "https://api.deepseek.com/v1"),
        ("qwen", "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"),
        ("mistral", "https://api.mistral.ai/v1"),
        ("groq", "https://api.groq.com/openai/v1"),
        ("openrouter", "https://openrouter.ai/api/v1"),
        ("together", "https://api.together.xyz/v1"),
    ];
    for (name, url) in expected {
        let preset = Preset::named(name).unwrap();
        assert_eq!(preset.base_url, url);
        if env_set(preset.base_url_env) {
            continue;
        }
        // The wire format's Debug shows the base URL the model will call.
        let wire = format!("{:?}", Model::preset(name, "m").unwrap().wire());
        assert!(wire.contains(&format!("base_url: \"{url}\"")), "{name}: {wire}");
    }
    if !env_set("OLLAMA_BASE_URL") {
        let wire = format!("{:?}", Model::ollama("qwen3").wire());
        assert!(wire.contains("base_url: \"http://localhost:11434/v1\""), "{wire}");
        assert!(wire.contains("provider: \"ollama\""), "{wire}");
    }
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ollama_sends_no_authorization_header() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(openai::text_stream("hello")));
    let model = Model::ollama("qwen3").base_url(server.url());
    let got = ask(&model, "hi").await.unwrap();
    assert_eq!(got[0], ModelChunk::Text("hello".into()));
    let r = &server.requests()[0];
    assert_eq!(r.path, "/chat/completions");
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.json()["model"], json!("qwen3"));
}

#[tokio::test]
async fn a_parsed_model_string_with_a_base_url_calls_that_server() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(openai::text_stream("hello")));
    let model = Model::parse_with("ollama:qwen3", Some(&server.url())).unwrap();
    assert_eq!(model.provider(), "ollama");
    let agent = Agent::builder().model(model).build().unwrap();
    let result = within(30, "run", agent.run("hi")).await.unwrap();
    assert_eq!(result.output, "hello");
    assert_eq!(server.requests()[0].header("authorization"), None);
}

#[tokio::test]
async fn local_presets_and_compatible_servers_need_no_key_but_send_one_when_given() {
    let server = MockServer::start().await;
    server.always(Reply::sse(openai::text_stream("ok")));
    let mut expected_auth = Vec::new();
    for name in ["ollama", "llamacpp", "lmstudio"] {
        ask(&Model::preset(name, "m").unwrap().base_url(server.url()), "hi").await.unwrap();
        expected_auth.push(None);
    }
    if !env_set("VLLM_API_KEY") {
        ask(&Model::preset("vllm", "m").unwrap().base_url(server.url()), "hi").await.unwrap();
        expected_auth.push(None);
    }
    ask(&Model::compatible(&server.url(), "m"), "hi").await.unwrap();
    expected_auth.push(None);
    ask(&Model::compatible(&server.url(), "m").api_key("local-secret-123"), "hi").await.unwrap();
    expected_auth.push(Some("Bearer local-secret-123".to_string()));
    ask(&Model::preset("vllm", "m").unwrap().base_url(server.url()).api_key("vllm-secret-456"), "hi").await.unwrap();
    expected_auth.push(Some("Bearer vllm-secret-456".to_string()));
    let auth: Vec<Option<String>> =
        server.requests().iter().map(|r| r.header("authorization").map(str::to_string)).collect();
    assert_eq!(auth, expected_auth);
}

#[tokio::test]
async fn presets_that_need_a_key_fail_before_any_request_without_one() {
    let server = MockServer::start().await;
    server.always(Reply::sse(openai::text_stream("should not be reached")));
    let mut checked = 0;
    for preset in PRESETS.iter().filter(|p| p.key_required) {
        if env_set(preset.key_env) {
            continue;
        }
        let model = Model::preset(preset.name, "m").unwrap().base_url(server.url());
        let err = ask(&model, "hi").await.unwrap_err();
        let ModelError::Authentication(message) = &err else { panic!("{}: {err:?}", preset.name) };
        assert!(message.contains(preset.key_env), "{}: {message}", preset.name);
        checked += 1;
    }
    assert_eq!(server.requests().len(), 0, "no request is sent without a key");

    // In a run: failed, as an authentication error, still without a request.
    if !env_set("GROQ_API_KEY") {
        let agent = Agent::builder()
            .model(Model::preset("groq", "llama-3.3-70b").unwrap().base_url(server.url()))
            .build()
            .unwrap();
        let result = failed_result(within(30, "run", agent.run("hi")).await.unwrap_err());
        assert_eq!(result.state, RunState::Failed);
        assert_eq!(result.error.unwrap().model_error.as_deref(), Some("authentication"));
        assert_eq!(server.requests().len(), 0);
    }
    // With a key given in code, the same preset works.
    let model = Model::preset("groq", "llama-3.3-70b").unwrap().base_url(server.url()).api_key("gsk_test_key_1234");
    ask(&model, "hi").await.unwrap();
    assert_eq!(server.requests()[0].header("authorization"), Some("Bearer gsk_test_key_1234"));
    assert!(checked > 0 || PRESETS.iter().filter(|p| p.key_required).all(|p| env_set(p.key_env)));
}

// ---------------------------------------------------------------------------------------------
// DeepSeek
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deepseek_cache_hit_tokens_and_reasoning_content() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::role(),
        openai::reasoning_content("The user greets; "),
        openai::reasoning_content("answer briefly."),
        openai::text("Hello"),
        openai::text("!"),
        openai::finish("stop"),
        openai::usage_deepseek(640, 360, 12),
        openai::done(),
    ]));
    let model = Model::preset("deepseek", "deepseek-reasoner").unwrap().base_url(server.url()).api_key("sk-ds-test-99");
    let agent = Agent::builder().model(model).build().unwrap();
    let result = within(30, "run", agent.run("hi")).await.unwrap();
    assert_eq!(result.output, "Hello!");
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
            (DeltaKind::Thinking, "The user greets; ".to_string()),
            (DeltaKind::Thinking, "answer briefly.".to_string()),
            (DeltaKind::Text, "Hello".to_string()),
            (DeltaKind::Text, "!".to_string()),
        ]
    );
    // prompt_tokens = 1000, of which 640 were cache hits.
    let u = result.usage;
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (360, 640, 12));
    // deepseek-reasoner: $0.28 input, $0.028 cache hit, $0.42 output per million tokens.
    let expected = 360.0 * 0.28e-6 + 640.0 * 0.028e-6 + 12.0 * 0.42e-6;
    assert!((u.cost_usd - expected).abs() < 1e-12, "{} != {expected}", u.cost_usd);

    let body = server.requests()[0].json();
    assert_eq!(server.requests()[0].header("authorization"), Some("Bearer sk-ds-test-99"));
    assert_eq!(body["model"], json!("deepseek-reasoner"));
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn deepseek_reasoning_is_not_sent_back_on_the_next_turn() {
    // DeepSeek rejects requests whose assistant messages carry reasoning_content.
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::reasoning_content("Call the tool."),
        openai::tool_call_start(0, "call_1", "echo"),
        openai::tool_call_args(0, r#"{"x":"a"}"#),
        openai::finish("tool_calls"),
        openai::usage_deepseek(0, 100, 10),
        openai::done(),
    ]));
    server.enqueue(Reply::sse([
        openai::text("done"),
        openai::finish("stop"),
        openai::usage_deepseek(100, 20, 2),
        openai::done(),
    ]));
    let model = Model::preset("deepseek", "deepseek-reasoner").unwrap().base_url(server.url()).api_key("sk-ds-test-99");
    let agent = Agent::builder().model(model).tool(echo_tool("echo")).build().unwrap();
    let result = within(30, "run", agent.run("go")).await.unwrap();
    assert_eq!(result.output, "done");
    assert_eq!(
        server.requests()[1].json()["messages"],
        json!([
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "echo", "arguments": "{\"x\":\"a\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "echo:a"}
        ])
    );
    let u = result.usage;
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (120, 100, 12));
}

// ---------------------------------------------------------------------------------------------
// Structured output and unknown prices
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn compatible_servers_get_the_schema_in_the_prompt_not_a_response_format() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse(openai::text_stream(r#"{"city": "Oslo"}"#)));
    let schema_json = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let schema = OutputSchema::new("City", schema_json).unwrap();
    let agent = Agent::builder().model(Model::ollama("qwen3").base_url(server.url())).build().unwrap();
    let result = within(30, "run", agent.run(RunRequest::new("where?").output_schema(schema.clone()))).await.unwrap();
    assert_eq!(result.parsed, Some(json!({"city": "Oslo"})));
    let body = server.requests()[0].json();
    assert!(body.get("response_format").is_none(), "{body}");
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": schema.directive()}, {"role": "user", "content": "where?"}])
    );
}

#[tokio::test]
async fn models_without_a_price_report_tokens_and_no_cost() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([openai::text("ok"), openai::finish("stop"), openai::usage(100, 40, 7), openai::done()]));
    let got = ask(&Model::ollama("qwen3").base_url(server.url()), "hi").await.unwrap();
    let usage = got
        .iter()
        .find_map(|c| match c {
            ModelChunk::Usage(u) => Some(*u),
            _ => None,
        })
        .unwrap();
    assert_eq!((usage.input_tokens, usage.cached_input_tokens, usage.output_tokens), (60, 40, 7));
    assert_eq!(usage.cost_usd, 0.0);
    assert_eq!(got.last(), Some(&ModelChunk::Finish(FinishReason::Stop)));
}

#[tokio::test]
async fn a_gateway_prefixed_model_is_priced_by_its_base_name() {
    let server = MockServer::start().await;
    server.enqueue(Reply::sse([
        openai::text("ok"),
        openai::finish("stop"),
        openai::usage(1000, 0, 100),
        openai::done(),
    ]));
    let model =
        Model::preset("openrouter", "openai/gpt-4o-mini").unwrap().base_url(server.url()).api_key("sk-or-test-1");
    let got = ask(&model, "hi").await.unwrap();
    let Some(ModelChunk::Usage(u)) = got.iter().find(|c| matches!(c, ModelChunk::Usage(_))) else { panic!("{got:?}") };
    let expected = 1000.0 * 0.15e-6 + 100.0 * 0.60e-6;
    assert!((u.cost_usd - expected).abs() < 1e-12, "{} != {expected}", u.cost_usd);
}
