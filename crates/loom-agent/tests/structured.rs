//! Structured output: schemas from the builder, the request and Rust types; extraction from fences
//! and prose; validation errors fed back to the model; retries running out; native vs prompted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use loom_agent::event::OutputInvalid;
use loom_agent::message::Message;
use loom_agent::model::{ModelCapabilities, ScriptedModel, ScriptedTurn};
use loom_agent::output::OutputSchema;
use loom_agent::{Agent, Error, EventKind, RunErrorKind, RunRequest, RunState};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
        "required": ["city", "temp"]
    })
}

fn invalid_events(events: &[loom_agent::Event]) -> Vec<OutputInvalid> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::OutputInvalid(o) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

fn correction(problem: &str) -> Message {
    Message::user(format!(
        "Your answer does not match the required JSON schema: {problem}\n\
         Reply with only the corrected JSON value, no prose and no code fences."
    ))
}

#[tokio::test]
async fn a_builder_schema_validates_and_parses_the_final_answer() {
    let (model, shared) = scripted([ScriptedTurn::text(r#"{"city": "Tokyo", "temp": 21.5}"#)]);
    let agent =
        Agent::builder().instructions("Sys.").model(shared).output_schema("Weather", weather_schema()).build().unwrap();
    let result = agent.run("weather?").await.unwrap();
    assert_eq!(result.parsed, Some(json!({"city": "Tokyo", "temp": 21.5})));
    assert_eq!(result.output, r#"{"city": "Tokyo", "temp": 21.5}"#);
    let EventKind::RunCompleted(done) = &result.events.last().unwrap().kind else { panic!() };
    assert_eq!(done.parsed, result.parsed);
    // Not native: the schema is in the system message, once, after the instructions.
    let r = &model.requests()[0];
    assert_eq!(r.output_schema, None);
    let schema = OutputSchema::new("Weather", weather_schema()).unwrap();
    assert_eq!(r.messages[0], Message::system(format!("Sys.\n\n{}", schema.directive())));
    let directive = schema.directive();
    assert!(directive.starts_with("Structured output required"), "{directive}");
    assert!(directive.contains(&serde_json::to_string(&weather_schema()).unwrap()), "{directive}");
    assert!(directive.contains("(Weather)"), "{directive}");
    assert_eq!(r.messages.len(), 2);
}

#[tokio::test]
async fn without_instructions_the_directive_is_the_whole_system_message() {
    let (model, shared) = scripted([ScriptedTurn::text(r#"{"city": "Oslo", "temp": 3}"#)]);
    let agent = Agent::builder().model(shared).output_schema("Weather", weather_schema()).build().unwrap();
    agent.run("weather?").await.unwrap();
    let schema = OutputSchema::new("Weather", weather_schema()).unwrap();
    assert_eq!(model.requests()[0].messages[0], Message::system(schema.directive()));
}

#[tokio::test]
async fn a_native_model_gets_the_schema_in_the_request_and_not_in_the_prompt() {
    let caps = ModelCapabilities { native_structured_output: true, ..ModelCapabilities::default() };
    let (model, shared) =
        share(ScriptedModel::new([ScriptedTurn::text(r#"{"city": "Lima", "temp": 18}"#)]).with_capabilities(caps));
    let agent =
        Agent::builder().instructions("Sys.").model(shared).output_schema("Weather", weather_schema()).build().unwrap();
    let result = agent.run("weather?").await.unwrap();
    assert_eq!(result.parsed, Some(json!({"city": "Lima", "temp": 18})));
    let r = &model.requests()[0];
    assert_eq!(r.output_schema, Some(weather_schema()));
    assert_eq!(r.messages, vec![Message::system("Sys."), Message::user("weather?")]);
}

#[tokio::test]
async fn a_per_run_schema_overrides_the_agents() {
    let (model, shared) = scripted([ScriptedTurn::text(r#"{"b": 1}"#)]);
    let agent = Agent::builder()
        .model(shared)
        .output_schema("A", json!({"type": "object", "required": ["a"]}))
        .build()
        .unwrap();
    let b = OutputSchema::new("B", json!({"type": "object", "required": ["b"]})).unwrap();
    let result = agent.run(RunRequest::new("x").output_schema(b.clone())).await.unwrap();
    assert_eq!(result.parsed, Some(json!({"b": 1})));
    assert_eq!(model.requests()[0].messages[0], Message::system(b.directive()));
}

#[tokio::test]
async fn a_per_run_schema_works_on_an_agent_without_one() {
    let (_, shared) = scripted([ScriptedTurn::text("[1, 2, 3]"), ScriptedTurn::text("plain")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let schema = OutputSchema::new("Numbers", json!({"type": "array", "items": {"type": "integer"}})).unwrap();
    let result = agent.run(RunRequest::new("x").output_schema(schema)).await.unwrap();
    assert_eq!(result.parsed, Some(json!([1, 2, 3])));
    // The next run without a schema is plain text.
    let result = agent.run("y").await.unwrap();
    assert_eq!((result.output.as_str(), result.parsed), ("plain", None));
}

/// The weather in a city.
#[derive(Debug, PartialEq, Deserialize, JsonSchema)]
struct Weather {
    /// The city.
    city: String,
    /// Degrees Celsius.
    temp: f64,
}

#[tokio::test]
async fn run_typed_returns_the_typed_answer() {
    let (model, shared) = scripted([ScriptedTurn::text(r#"{"city": "Rome", "temp": 30}"#)]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let weather: Weather = agent.run_typed("weather in Rome?").await.unwrap();
    assert_eq!(weather, Weather { city: "Rome".into(), temp: 30.0 });
    let system = model.requests()[0].messages[0].text();
    assert!(system.contains("Structured output required") && system.contains("(Weather)"), "{system}");
    assert!(system.contains("\"city\"") && system.contains("\"temp\""), "{system}");
}

#[tokio::test]
async fn run_typed_surfaces_a_failed_run_as_error_run() {
    let (_, shared) = scripted([ScriptedTurn::text("no json"), ScriptedTurn::text("still none")]);
    let agent = Agent::builder().model(shared).output_retries(1).build().unwrap();
    let err = agent.run_typed::<Weather>("weather?").await.unwrap_err();
    let result = failed_result(err);
    assert_eq!(result.error.unwrap().kind, RunErrorKind::OutputValidation);
}

#[tokio::test]
async fn parse_into_the_wrong_type_is_an_output_error() {
    let (_, shared) = scripted([ScriptedTurn::text(r#"{"city": "Rome", "temp": 30}"#), ScriptedTurn::text("x")]);
    let agent = Agent::builder().model(shared).output_schema("Weather", weather_schema()).build().unwrap();
    let result = agent.run("w").await.unwrap();
    assert!(matches!(result.parse::<Vec<u8>>(), Err(Error::Output(_))));
    let plain = Agent::builder().model("echo").build().unwrap().run("hi").await.unwrap();
    assert!(matches!(plain.parse::<Weather>(), Err(Error::Output(m)) if m.contains("no structured output")));
}

#[tokio::test]
async fn json_in_fences_or_prose_is_extracted() {
    let fenced = "Sure! Here it is:\n```json\n{\"city\": \"Paris\", \"temp\": 12}\n```\nHope that helps.";
    let prose = "The weather is {\"city\": \"Kyiv\", \"temp\": -2} as requested.";
    let (_, shared) = scripted([ScriptedTurn::text(fenced), ScriptedTurn::text(prose)]);
    let agent = Agent::builder().model(shared).output_schema("Weather", weather_schema()).build().unwrap();
    let a = agent.run("a").await.unwrap();
    assert_eq!(a.parsed, Some(json!({"city": "Paris", "temp": 12})));
    assert_eq!(a.output, fenced, "the output keeps the model's raw text");
    let b = agent.run("b").await.unwrap();
    assert_eq!(b.parsed, Some(json!({"city": "Kyiv", "temp": -2})));
    assert!(invalid_events(&a.events).is_empty() && invalid_events(&b.events).is_empty());
}

#[tokio::test]
async fn an_invalid_answer_goes_back_as_a_user_message_and_the_correction_completes() {
    let bad = r#"{"city": "Tokyo", "temp": "hot"}"#;
    let (model, shared) = scripted([ScriptedTurn::text(bad), ScriptedTurn::text(r#"{"city": "Tokyo", "temp": 30}"#)]);
    let agent =
        Agent::builder().instructions("Sys.").model(shared).output_schema("Weather", weather_schema()).build().unwrap();
    let result = agent.run("weather?").await.unwrap();
    assert_eq!(result.parsed, Some(json!({"city": "Tokyo", "temp": 30})));
    assert_eq!(result.turns, 2);
    let invalid = invalid_events(&result.events);
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].attempt, 1);
    assert!(invalid[0].error.contains("/temp"), "{}", invalid[0].error);
    let requests = model.requests();
    let second = &requests[1].messages;
    assert_eq!(second.len(), 4);
    assert_eq!(&second[..2], &requests[0].messages[..]);
    assert_eq!(second[2], Message::assistant(bad));
    assert_eq!(second[3], correction(&invalid[0].error));
    assert_eq!(
        types(&result.events),
        [
            "run.started",
            "model.request",
            "model.delta",
            "model.response",
            "output.invalid",
            "model.request",
            "model.delta",
            "model.response",
            "run.completed"
        ]
    );
}

#[tokio::test]
async fn after_the_retries_run_out_the_run_fails_with_the_raw_output() {
    let (model, shared) = scripted([
        ScriptedTurn::text("I think it is warm."),
        ScriptedTurn::text(r#"{"city": "Tokyo"}"#),
        ScriptedTurn::text(r#"{"temp": 3}"#),
        ScriptedTurn::text("never asked"),
    ]);
    let agent =
        Agent::builder().model(shared).output_schema("Weather", weather_schema()).output_retries(2).build().unwrap();
    let result = failed_result(agent.run("weather?").await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::OutputValidation);
    assert_eq!(error.raw_output.as_deref(), Some(r#"{"temp": 3}"#));
    assert_eq!(result.output, r#"{"temp": 3}"#, "RunResult.output is the last raw answer");
    assert_eq!(result.parsed, None);
    assert!(error.message.contains("`Weather` after 3 attempt(s)"), "{}", error.message);
    assert_eq!(model.requests().len(), 3);
    let invalid = invalid_events(&result.events);
    assert_eq!(invalid.iter().map(|o| o.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(invalid[0].error, "the answer contains no JSON value");
    assert!(invalid[1].error.contains("temp"), "{}", invalid[1].error);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Failed);
    // Each failure's error went back before the next attempt.
    let requests = model.requests();
    assert_eq!(requests[1].messages.last(), Some(&correction(&invalid[0].error)));
    assert_eq!(requests[2].messages.last(), Some(&correction(&invalid[1].error)));
}

#[tokio::test]
async fn zero_retries_fail_on_the_first_invalid_answer() {
    let (model, shared) = scripted([ScriptedTurn::text("nope"), ScriptedTurn::text("{}")]);
    let agent =
        Agent::builder().model(shared).output_schema("Weather", weather_schema()).output_retries(0).build().unwrap();
    let result = failed_result(agent.run("w").await.unwrap_err());
    assert_eq!(result.error.unwrap().raw_output.as_deref(), Some("nope"));
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn tools_then_structured_answer() {
    let (_, shared) = scripted([
        ScriptedTurn::tool_call("lookup", json!({"x": "Tokyo"})),
        ScriptedTurn::text(r#"{"city": "Tokyo", "temp": 1}"#),
    ]);
    let agent = Agent::builder()
        .model(shared)
        .tool(echo_tool("lookup"))
        .output_schema("Weather", weather_schema())
        .build()
        .unwrap();
    let result = agent.run("w").await.unwrap();
    assert_eq!(result.parsed, Some(json!({"city": "Tokyo", "temp": 1})));
}

#[test]
fn an_invalid_schema_is_a_config_error_at_build() {
    let err = Agent::builder().model("echo").output_schema("Bad", json!({"type": 12})).build().unwrap_err();
    assert!(matches!(&err, Error::Config(m) if m.contains("`Bad`")), "{err:?}");
}
