//! Loom's spans, checked through a real OpenTelemetry pipeline with an in-memory exporter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::telemetry::Telemetry;
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, Usage};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> Option<String> {
    attr(span, key).map(|v| v.as_str().to_string())
}

fn agent(capture: bool) -> Agent {
    let model = ScriptedModel::new([
        ScriptedTurn::tool_call("lookup", json!({"q": "rust"})).with_usage(Usage {
            input_tokens: 100,
            cached_input_tokens: 20,
            output_tokens: 10,
            ..Usage::default()
        }),
        ScriptedTurn::text("Rust is a language.").with_usage(Usage {
            input_tokens: 150,
            output_tokens: 8,
            ..Usage::default()
        }),
    ])
    .named("gpt-test");
    let tool = FunctionTool::new("lookup", "Look something up.", json!({"type": "object"}), |_c, _a| async {
        Ok(ToolOutput::text("a secret-free answer"))
    });
    Agent::builder()
        .name("researcher")
        .instructions("You research.")
        .model(model)
        .tool(tool)
        .telemetry(Telemetry::new().capture_content(capture))
        .build()
        .unwrap()
}

async fn spans_of(agent: Agent, prompt: &str) -> (Vec<SpanData>, loom_agent::RunResult) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry().with(loom_otel::trace_layer(&provider));
    let _guard = tracing::subscriber::set_default(subscriber);
    let result = agent.run(prompt).await.unwrap();
    provider.force_flush().unwrap();
    (exporter.get_finished_spans().unwrap(), result)
}

#[tokio::test(flavor = "current_thread")]
async fn a_run_produces_genai_spans_with_usage_and_hierarchy() {
    let (spans, result) = spans_of(agent(false), "Tell me about Rust, my email is a@b.example").await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert!(names.contains(&"invoke_agent researcher"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "chat gpt-test").count(), 2, "{names:?}");
    assert!(names.contains(&"execute_tool lookup"), "{names:?}");

    let run = spans.iter().find(|s| s.name == "invoke_agent researcher").unwrap();
    assert_eq!(text(run, "gen_ai.operation.name").as_deref(), Some("invoke_agent"));
    assert_eq!(text(run, "gen_ai.agent.name").as_deref(), Some("researcher"));
    assert_eq!(text(run, "gen_ai.conversation.id"), Some(result.session_id.clone()));
    assert_eq!(text(run, "loom.run_id"), Some(result.run_id.clone()));
    assert_eq!(text(run, "loom.run.state").as_deref(), Some("completed"));
    assert_eq!(attr(run, "gen_ai.usage.input_tokens"), Some(&Value::I64(270)));
    assert_eq!(attr(run, "gen_ai.usage.output_tokens"), Some(&Value::I64(18)));

    let chats: Vec<&SpanData> = spans.iter().filter(|s| s.name == "chat gpt-test").collect();
    for chat in &chats {
        assert_eq!(chat.parent_span_id, run.span_context.span_id(), "chat spans are children of the run span");
        assert_eq!(text(chat, "gen_ai.operation.name").as_deref(), Some("chat"));
        assert_eq!(text(chat, "gen_ai.provider.name").as_deref(), Some("scripted"));
        assert_eq!(text(chat, "gen_ai.request.model").as_deref(), Some("gpt-test"));
    }
    let first = chats.iter().find(|c| attr(c, "loom.turn") == Some(&Value::I64(1))).unwrap();
    assert_eq!(attr(first, "gen_ai.usage.input_tokens"), Some(&Value::I64(120)));
    assert_eq!(attr(first, "gen_ai.usage.cache_read.input_tokens"), Some(&Value::I64(20)));
    assert_eq!(attr(first, "gen_ai.usage.output_tokens"), Some(&Value::I64(10)));
    assert_eq!(text(first, "gen_ai.response.finish_reasons").as_deref(), Some("[\"tool_calls\"]"));

    let tool = spans.iter().find(|s| s.name == "execute_tool lookup").unwrap();
    assert_eq!(tool.parent_span_id, run.span_context.span_id());
    assert_eq!(text(tool, "gen_ai.tool.name").as_deref(), Some("lookup"));
    assert_eq!(text(tool, "gen_ai.tool.call.id").as_deref(), Some("call_1_0"));
    assert!(attr(tool, "error.type").is_none());

    // Content stays off spans by default.
    for span in &spans {
        for kv in &span.attributes {
            let v = kv.value.as_str();
            assert!(!v.contains("a@b.example") && !v.contains("Rust is a language"), "{}: {v}", kv.key);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn content_goes_on_chat_spans_only_when_opted_in() {
    let (spans, _) = spans_of(agent(true), "Tell me about Rust").await;
    let last =
        spans.iter().find(|s| s.name == "chat gpt-test" && attr(s, "loom.turn") == Some(&Value::I64(2))).unwrap();
    assert!(text(last, "gen_ai.input.messages").unwrap().contains("Tell me about Rust"));
    assert!(text(last, "gen_ai.output.messages").unwrap().contains("Rust is a language."));
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_model_call_marks_error_type() {
    let model = ScriptedModel::new([ScriptedTurn::error("upstream exploded")]);
    let agent = Agent::builder().model(model).build().unwrap();
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry().with(loom_otel::trace_layer(&provider));
    let _guard = tracing::subscriber::set_default(subscriber);
    let err = agent.run("hi").await.unwrap_err();
    assert_eq!(err.run_result().unwrap().state, loom_agent::RunState::Failed);
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let chat = spans.iter().find(|s| s.name.starts_with("chat ")).unwrap();
    assert_eq!(text(chat, "error.type").as_deref(), Some("transient"));
    let run = spans.iter().find(|s| s.name.starts_with("invoke_agent")).unwrap();
    assert_eq!(text(run, "error.type").as_deref(), Some("model"));
    assert_eq!(text(run, "loom.run.state").as_deref(), Some("failed"));
}
