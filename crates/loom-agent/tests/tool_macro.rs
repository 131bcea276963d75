//! Behaviour of the `#[tool]` attribute: the generated schema, name, description, flags and
//! timeout, and what calling the tool does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use loom_agent::prelude::*;
use loom_agent::tool::{ToolErrorKind, ToolFlags};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

fn ctx() -> ToolContext {
    ToolContext::detached("run_1", "sess_1")
}

async fn call(tool: &dyn Tool, args: Value) -> Result<String, ToolError> {
    tool.call(ctx(), args).await.map(|out| out.content)
}

async fn call_err(tool: &dyn Tool, args: Value) -> ToolError {
    match tool.call(ctx(), args).await {
        Ok(out) => panic!("expected an error, got output {:?}", out.content),
        Err(err) => err,
    }
}

/// Asserts `args` are valid for the tool's schema, checked the way the runtime checks them.
fn assert_valid(tool: &dyn Tool, args: &Value) {
    let validator = jsonschema::validator_for(&tool.parameters()).unwrap();
    assert!(validator.is_valid(args), "{args} should be valid for {}", tool.parameters());
}

fn assert_invalid(tool: &dyn Tool, args: &Value) {
    let validator = jsonschema::validator_for(&tool.parameters()).unwrap();
    assert!(!validator.is_valid(args), "{args} should be invalid for {}", tool.parameters());
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Units {
    Celsius,
    Fahrenheit,
}

/// A point on Earth.
#[derive(Debug, Deserialize, JsonSchema)]
struct Location {
    /// Latitude in degrees.
    lat: f64,
    /// Longitude in degrees.
    lon: f64,
}

/// Get the weather for a city.
#[tool(read_only, concurrency_safe)]
async fn get_weather(
    /// The city name.
    city: String,
    /// Temperature units; Celsius when omitted.
    units: Option<Units>,
) -> Result<String, ToolError> {
    let units = match units.unwrap_or(Units::Celsius) {
        Units::Celsius => "C",
        Units::Fahrenheit => "F",
    };
    Ok(format!("{city}: 21 {units}"))
}

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

#[test]
fn schema_has_param_docs_required_and_no_extra_keys() {
    assert_eq!(
        get_weather.parameters(),
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city name."},
                "units": {
                    "description": "Temperature units; Celsius when omitted.",
                    "anyOf": [{"$ref": "#/$defs/Units"}, {"type": "null"}]
                }
            },
            "required": ["city"],
            "additionalProperties": false,
            "$defs": {"Units": {"type": "string", "enum": ["celsius", "fahrenheit"]}}
        })
    );
    assert_valid(&get_weather, &json!({"city": "Tokyo"}));
    assert_valid(&get_weather, &json!({"city": "Tokyo", "units": "fahrenheit"}));
    assert_valid(&get_weather, &json!({"city": "Tokyo", "units": null}));
    assert_invalid(&get_weather, &json!({"city": "Tokyo", "units": "kelvin"}));
    assert_invalid(&get_weather, &json!({"units": "celsius"}));
    assert_invalid(&get_weather, &json!({"city": "Tokyo", "extra": 1}));
}

/// Takes one of everything.
#[tool]
fn scalars(
    name: String,
    count: u32,
    offset: i64,
    verbose: bool,
    ratio: f64,
    tags: Vec<String>,
    limit: Option<u8>,
    note: Option<String>,
) -> String {
    format!("{name} {count} {offset} {verbose} {ratio} {tags:?} {limit:?} {note:?}")
}

#[test]
fn schema_of_scalars_vec_and_options() {
    assert_eq!(
        scalars.parameters(),
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer", "format": "uint32", "minimum": 0},
                "offset": {"type": "integer", "format": "int64"},
                "verbose": {"type": "boolean"},
                "ratio": {"type": "number", "format": "double"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "limit": {"type": ["integer", "null"], "format": "uint8", "minimum": 0, "maximum": 255},
                "note": {"type": ["string", "null"]}
            },
            "required": ["name", "count", "offset", "verbose", "ratio", "tags"],
            "additionalProperties": false
        })
    );
}

/// Find places near a point.
#[tool]
fn nearby(
    /// Where to search from.
    origin: Location,
    units: Units,
    /// At most this many results.
    limit: Option<u32>,
) -> String {
    format!("{:.1},{:.1} {units:?} {limit:?}", origin.lat, origin.lon)
}

#[test]
fn schema_of_nested_struct_and_enum_uses_defs_with_field_docs() {
    assert_eq!(
        nearby.parameters(),
        json!({
            "type": "object",
            "properties": {
                "origin": {"$ref": "#/$defs/Location", "description": "Where to search from."},
                "units": {"$ref": "#/$defs/Units"},
                "limit": {
                    "type": ["integer", "null"],
                    "format": "uint32",
                    "minimum": 0,
                    "description": "At most this many results."
                }
            },
            "required": ["origin", "units"],
            "additionalProperties": false,
            "$defs": {
                "Location": {
                    "description": "A point on Earth.",
                    "type": "object",
                    "properties": {
                        "lat": {"type": "number", "format": "double", "description": "Latitude in degrees."},
                        "lon": {"type": "number", "format": "double", "description": "Longitude in degrees."}
                    },
                    "required": ["lat", "lon"]
                },
                "Units": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            }
        })
    );
    assert_valid(&nearby, &json!({"origin": {"lat": 1.0, "lon": 2.0}, "units": "celsius"}));
    assert_invalid(&nearby, &json!({"origin": {"lat": 1.0}, "units": "celsius"}));
}

/// Says hello.
#[tool]
fn hello() -> &'static str {
    "hello"
}

#[tokio::test]
async fn a_tool_without_parameters_has_an_empty_object_schema() {
    assert_eq!(
        hello.parameters(),
        json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
    );
    assert_eq!(call(&hello, json!({})).await.unwrap(), "hello");
    assert_eq!(call(&hello, Value::Null).await.unwrap(), "hello");
    let err = call_err(&hello, json!({"x": 1})).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert!(err.message().contains("unknown field `x`"), "{}", err.message());
}

/// Look something up.
#[tool]
fn lookup(
    /// What kind of thing.
    r#type: String,
    /// The key, as the model sends it.
    #[serde(rename = "key")]
    lookup_key: String,
    /// How many; 10 when omitted.
    #[serde(default = "ten")]
    #[schemars(range(min = 1, max = 100))]
    count: u32,
) -> String {
    format!("{type} {lookup_key} {count}", type = r#type)
}

fn ten() -> u32 {
    10
}

#[tokio::test]
async fn raw_identifiers_and_serde_and_schemars_attributes_on_parameters() {
    assert_eq!(
        lookup.parameters(),
        json!({
            "type": "object",
            "properties": {
                "type": {"type": "string", "description": "What kind of thing."},
                "key": {"type": "string", "description": "The key, as the model sends it."},
                "count": {
                    "type": "integer",
                    "format": "uint32",
                    "minimum": 1,
                    "maximum": 100,
                    "default": 10,
                    "description": "How many; 10 when omitted."
                }
            },
            "required": ["type", "key"],
            "additionalProperties": false
        })
    );
    assert_eq!(call(&lookup, json!({"type": "user", "key": "ada"})).await.unwrap(), "user ada 10");
    assert_eq!(call(&lookup, json!({"type": "user", "key": "ada", "count": 3})).await.unwrap(), "user ada 3");
    let err = call_err(&lookup, json!({"type": "user", "key": 7})).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert!(err.message().contains("field `key`"), "{}", err.message());
}

#[test]
fn parameters_are_computed_once_and_cloned() {
    assert_eq!(get_weather.parameters(), get_weather.parameters());
    let tool: Arc<dyn Tool> = Arc::new(get_weather);
    assert_eq!(tool.parameters(), get_weather.parameters());
}

// ---------------------------------------------------------------------------------------------
// Name, description, flags, timeout
// ---------------------------------------------------------------------------------------------

/// This doc comment is not used.
#[tool(name = "web-search", description = "Search the web.")]
fn search(query: String) -> String {
    query
}

/// Reads a file from the workspace.
///
/// Paths are relative to the workspace root
/// and may not leave it.
///
/// Modes:
/// - `text`: the content as text
/// - `base64`: the content encoded
#[tool]
fn read_file(path: String) -> String {
    path
}

#[test]
fn name_and_description_come_from_the_fn_or_the_attribute() {
    assert_eq!(get_weather.name(), "get_weather");
    assert_eq!(get_weather.description(), "Get the weather for a city.");
    assert_eq!(search.name(), "web-search");
    assert_eq!(search.description(), "Search the web.");
    assert_eq!(
        read_file.description(),
        "Reads a file from the workspace.\n\nPaths are relative to the workspace root and may not leave it.\n\n\
         Modes:\n- `text`: the content as text\n- `base64`: the content encoded"
    );
}

/// Deletes everything.
#[tool(destructive, requires_permission, idempotent, timeout_secs = 30)]
fn wipe() {}

/// Quick check.
#[tool(read_only = true, destructive = false, timeout_secs = 2.5)]
fn quick() -> bool {
    true
}

#[test]
fn flags_and_timeout() {
    assert_eq!(get_weather.flags(), ToolFlags::new().read_only().concurrency_safe());
    assert_eq!(get_weather.timeout(), None);
    assert_eq!(wipe.flags(), ToolFlags::new().destructive().requires_permission().idempotent());
    assert!(wipe.flags().needs_approval());
    assert_eq!(wipe.timeout(), Some(Duration::from_secs(30)));
    assert_eq!(quick.flags(), ToolFlags::new().read_only());
    assert_eq!(quick.timeout(), Some(Duration::from_millis(2500)));
    assert_eq!(hello.flags(), ToolFlags::default());
}

// ---------------------------------------------------------------------------------------------
// Calling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn calling_with_good_arguments() {
    assert_eq!(call(&get_weather, json!({"city": "Tokyo"})).await.unwrap(), "Tokyo: 21 C");
    assert_eq!(call(&get_weather, json!({"city": "Tokyo", "units": null})).await.unwrap(), "Tokyo: 21 C");
    assert_eq!(call(&get_weather, json!({"city": "Oslo", "units": "fahrenheit"})).await.unwrap(), "Oslo: 21 F");
    assert_eq!(
        call(
            &scalars,
            json!({"name": "n", "count": 2, "offset": -3, "verbose": true, "ratio": 0.5, "tags": ["a", "b"], "limit": 7})
        )
        .await
        .unwrap(),
        "n 2 -3 true 0.5 [\"a\", \"b\"] Some(7) None"
    );
    assert_eq!(
        call(&nearby, json!({"origin": {"lat": 59.9, "lon": 10.7}, "units": "celsius"})).await.unwrap(),
        "59.9,10.7 Celsius None"
    );
}

#[tokio::test]
async fn a_wrong_type_is_an_invalid_arguments_error_naming_the_field() {
    let err = call_err(&get_weather, json!({"city": 5})).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert_eq!(
        err.message(),
        "invalid arguments for `get_weather`: field `city`: invalid type: integer `5`, expected a string"
    );

    let err = call_err(&get_weather, json!({"city": "Tokyo", "units": "kelvin"})).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert!(err.message().contains("field `units`"), "{}", err.message());
    assert!(err.message().contains("unknown variant `kelvin`"), "{}", err.message());

    let err = call_err(&nearby, json!({"origin": {"lat": "north", "lon": 1.0}, "units": "celsius"})).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert!(err.message().contains("field `origin`"), "{}", err.message());

    let err = call_err(&get_weather, json!(["Tokyo"])).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert_eq!(err.message(), "invalid arguments for `get_weather`: expected a JSON object, got an array");
}

#[tokio::test]
async fn a_missing_required_argument_is_an_invalid_arguments_error_naming_the_field() {
    let err = call_err(&get_weather, json!({"units": "celsius"})).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert_eq!(err.message(), "invalid arguments for `get_weather`: missing field `city`");
}

#[tokio::test]
async fn an_unknown_argument_is_an_invalid_arguments_error_naming_the_field() {
    let err = call_err(&get_weather, json!({"city": "Tokyo", "country": "JP"})).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    assert!(
        err.message().starts_with("invalid arguments for `get_weather`: unknown field `country`"),
        "{}",
        err.message()
    );
}

/// Adds two numbers.
#[tool]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Adds two numbers, slowly.
#[tool]
async fn add_async(a: i64, b: i64) -> i64 {
    tokio::task::yield_now().await;
    a + b
}

/// Reports the thread it ran on.
#[tool(blocking)]
fn which_thread() -> String {
    format!("{:?}", std::thread::current().id())
}

/// Reports the thread it ran on.
#[tool]
fn which_thread_inline() -> String {
    format!("{:?}", std::thread::current().id())
}

/// Panics.
#[tool(blocking)]
fn explode(message: String) -> String {
    panic!("{message}")
}

#[tokio::test]
async fn sync_async_and_blocking_functions() {
    assert_eq!(call(&add, json!({"a": 2, "b": 3})).await.unwrap(), "5");
    assert_eq!(call(&add_async, json!({"a": 2, "b": -3})).await.unwrap(), "-1");

    let here = format!("{:?}", std::thread::current().id());
    assert_eq!(call(&which_thread_inline, json!({})).await.unwrap(), here);
    assert_ne!(call(&which_thread, json!({})).await.unwrap(), here);
}

#[tokio::test]
async fn a_panicking_blocking_function_is_a_panicked_tool_error() {
    let err = call_err(&explode, json!({"message": "boom"})).await;
    assert_eq!(err.kind(), ToolErrorKind::Panicked);
    assert_eq!(err.message(), "tool `explode` panicked: boom");
}

/// Tells where it runs.
#[tool]
async fn whoami(ctx: ToolContext, greeting: String) -> String {
    format!("{greeting} from {} in {}", ctx.run_id(), ctx.session_id())
}

/// Tells where it runs, from a blocking thread.
#[tool(blocking)]
fn whoami_blocking(prefix: Option<String>, context: loom_agent::tool::ToolContext) -> String {
    format!("{}{}", prefix.unwrap_or_default(), context.run_id())
}

/// Ignores its context.
#[tool]
fn ignores_context(_: ToolContext) -> String {
    "ok".to_string()
}

#[tokio::test]
async fn a_tool_context_parameter_receives_the_call_context_and_is_not_an_argument() {
    assert_eq!(
        whoami.parameters(),
        json!({
            "type": "object",
            "properties": {"greeting": {"type": "string"}},
            "required": ["greeting"],
            "additionalProperties": false
        })
    );
    assert_eq!(call(&whoami, json!({"greeting": "hi"})).await.unwrap(), "hi from run_1 in sess_1");
    assert_eq!(call(&whoami_blocking, json!({"prefix": "run: "})).await.unwrap(), "run: run_1");
    assert_eq!(call(&whoami_blocking, json!({})).await.unwrap(), "run_1");
    assert_eq!(call(&ignores_context, json!({})).await.unwrap(), "ok");
    let err = call_err(&whoami, json!({"greeting": "hi", "ctx": {}})).await;
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
}

#[derive(Debug, Serialize)]
struct Forecast {
    city: String,
    high: i32,
}

/// Forecast as JSON.
#[tool]
async fn forecast(city: String) -> Result<Json<Forecast>, ToolError> {
    if city.is_empty() {
        return Err(ToolError::new("no city given"));
    }
    Ok(Json(Forecast { city, high: 25 }))
}

/// Counts the bytes of a file.
#[tool]
fn file_len(path: String) -> Result<u32, std::io::Error> {
    if path == "missing.txt" {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "missing.txt: no such file"));
    }
    Ok(42)
}

/// Does nothing.
#[tool]
async fn nothing() {}

#[tokio::test]
async fn return_types() {
    assert_eq!(call(&search, json!({"query": "rust"})).await.unwrap(), "rust");
    assert_eq!(call(&forecast, json!({"city": "Lima"})).await.unwrap(), r#"{"city":"Lima","high":25}"#);
    let err = call_err(&forecast, json!({"city": ""})).await;
    assert_eq!(err.kind(), ToolErrorKind::Failed);
    assert_eq!(err.message(), "no city given");
    assert_eq!(call(&file_len, json!({"path": "a.txt"})).await.unwrap(), "42");
    let err = call_err(&file_len, json!({"path": "missing.txt"})).await;
    assert_eq!(err.kind(), ToolErrorKind::Failed);
    assert_eq!(err.message(), "missing.txt: no such file");
    assert_eq!(call(&nothing, json!({})).await.unwrap(), "done");
    assert_eq!(call(&wipe, json!({})).await.unwrap(), "done");
    assert_eq!(call(&quick, json!({})).await.unwrap(), "true");
}

// ---------------------------------------------------------------------------------------------
// The generated items
// ---------------------------------------------------------------------------------------------

mod tools {
    use loom_agent::prelude::*;

    /// Multiplies two numbers.
    #[tool(read_only)]
    pub fn multiply(a: i64, b: i64) -> i64 {
        a * b
    }

    /// Echoes.
    #[tool]
    pub(crate) async fn echo(text: String) -> Result<String, ToolError> {
        Ok(text)
    }
}

#[tokio::test]
async fn the_original_function_stays_callable_as_invoke() {
    assert_eq!(add::invoke(1, 2), 3);
    assert_eq!(add_async::invoke(1, 2).await, 3);
    assert_eq!(get_weather::invoke("Rome".to_string(), Some(Units::Fahrenheit)).await.unwrap(), "Rome: 21 F");
    assert_eq!(whoami::invoke(ctx(), "yo".into()).await, "yo from run_1 in sess_1");
    assert_eq!(tools::multiply::invoke(6, 7), 42);
    assert_eq!(tools::echo::invoke("hi".into()).await.unwrap(), "hi");
    assert_eq!(call(&tools::multiply, json!({"a": 6, "b": 7})).await.unwrap(), "42");
}

#[test]
fn the_tool_is_a_copyable_unit_struct() {
    fn assert_traits<T: Tool + Clone + Copy + Default + std::fmt::Debug + Send + Sync + 'static>(_: T) {}
    assert_traits(get_weather);
    assert_traits(tools::echo);
    assert_eq!(format!("{:?}", get_weather), "get_weather");
    let tools: Vec<Arc<dyn Tool>> = vec![Arc::new(get_weather), Arc::new(tools::multiply), Arc::new(add)];
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["get_weather", "multiply", "add"]);
}

#[tokio::test]
async fn tools_can_be_defined_inside_a_function() {
    /// Doubles a number.
    #[tool]
    fn double(
        /// The number.
        n: i32,
    ) -> i32 {
        n * 2
    }
    assert_eq!(call(&double, json!({"n": 21})).await.unwrap(), "42");
    assert_eq!(double.parameters()["properties"]["n"]["description"], "The number.");
}

// ---------------------------------------------------------------------------------------------
// Through an agent
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn macro_tools_run_inside_an_agent_run() {
    use loom_agent::event::EventKind;
    use loom_agent::model::{ScriptedModel, ScriptedTurn};

    let model = ScriptedModel::new([
        ScriptedTurn::tool_call("nearby", json!({"origin": {"lat": 1.5, "lon": 2.5}, "units": "celsius"})),
        ScriptedTurn::tool_call("whoami", json!({"greeting": "hello"})),
        ScriptedTurn::tool_call("get_weather", json!({"city": 3})),
        ScriptedTurn::text("finished"),
    ]);
    let agent = Agent::builder()
        .instructions("Use the tools.")
        .model(model)
        .tool(nearby)
        .tool(whoami)
        .tool(get_weather)
        .build()
        .unwrap();
    let result = agent.run("go").await.unwrap();
    assert_eq!(result.state, RunState::Completed);
    assert_eq!(result.output, "finished");

    let results: Vec<_> = result
        .events
        .iter()
        .filter_map(|event| match &event.kind {
            EventKind::ToolResult(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(
        (results[0].name.as_str(), results[0].output.as_str(), results[0].is_error),
        ("nearby", "1.5,2.5 Celsius None", false)
    );
    assert_eq!(results[1].output, format!("hello from {} in {}", result.run_id, result.session_id));
    assert!(results[2].is_error);
    assert_eq!(results[2].error_kind, Some(ToolErrorKind::InvalidArguments));
}
