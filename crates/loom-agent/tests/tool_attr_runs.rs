//! `#[tool]` functions inside real runs: offered with their generated schema, arguments checked
//! against it before the body runs, context and flags honoured by the loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use loom_agent::model::ScriptedTurn;
use loom_agent::prelude::*;
use loom_agent::tool::ToolErrorKind;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Units {
    Celsius,
    Fahrenheit,
}

/// Get the weather for a city.
#[tool(read_only, concurrency_safe)]
async fn get_weather(
    /// The city name.
    city: String,
    /// Temperature units.
    units: Option<Units>,
) -> Result<String, ToolError> {
    let u = match units.unwrap_or(Units::Celsius) {
        Units::Celsius => "C",
        Units::Fahrenheit => "F",
    };
    Ok(format!("{city}: 21 {u}"))
}

/// Writes a report.
#[tool]
async fn write_report(ctx: ToolContext, title: String) -> String {
    let a = ctx.create_artifact(format!("{title}.md"), "text/markdown", format!("# {title}"));
    format!("{} wrote {} for {}", ctx.run_id(), a.name, ctx.user_id().unwrap_or("nobody"))
}

/// Deletes everything.
#[tool(destructive)]
fn wipe() -> &'static str {
    "wiped"
}

#[tokio::test]
async fn tool_functions_run_in_the_loop_with_checked_arguments() {
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("get_weather", json!({"city": "Tokyo"}))
            .with_tool_call("get_weather", json!({"city": "Oslo", "units": "fahrenheit"}))
            .with_tool_call("get_weather", json!({"city": 5}))
            .with_tool_call("get_weather", json!({"city": "Rome", "units": "kelvin"}))
            .with_tool_call("write_report", json!({"title": "q3"}))
            .with_tool_call("wipe", json!({})),
        ScriptedTurn::text("done"),
    ]);
    let agent = Agent::builder().model(shared).tool(get_weather).tool(write_report).tool(wipe).build().unwrap();
    let result = agent.run(RunRequest::new("go").user("erin")).await.unwrap();

    let offered = &model.requests()[0].tools;
    assert_eq!(offered.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["get_weather", "write_report", "wipe"]);
    assert_eq!(offered[0].description, "Get the weather for a city.");
    assert!(offered[0].flags.read_only && offered[0].flags.concurrency_safe);
    assert!(offered[2].flags.destructive);
    assert_eq!(offered[0].parameters["required"], json!(["city"]));

    let results = tool_results(&result.events);
    assert_eq!(results.len(), 6);
    assert_eq!((results[0].output.as_str(), results[0].is_error), ("Tokyo: 21 C", false));
    assert_eq!((results[1].output.as_str(), results[1].is_error), ("Oslo: 21 F", false));
    assert_eq!(results[2].error_kind, Some(ToolErrorKind::InvalidArguments));
    assert_eq!(results[3].error_kind, Some(ToolErrorKind::InvalidArguments));
    assert!(results[3].output.contains("/units"), "{}", results[3].output);
    assert_eq!(results[4].output, format!("{} wrote q3.md for erin", result.run_id));
    assert_eq!(results[5].error_kind, Some(ToolErrorKind::Denied));
    assert_eq!(result.artifacts.len(), 1);
    assert_eq!(result.artifacts[0].content, "# q3");
    // Fed back in call order.
    let fed = tool_messages(&model.requests()[1].messages);
    assert_eq!(fed.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), tool_call_ids(&result.events));
}
