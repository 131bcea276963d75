//! Procedural macros for `loom-agent`: the [`macro@tool`] attribute.
//!
//! Use it through `loom_agent` (`use loom_agent::prelude::*;` or `use loom_agent::tool;`): the
//! code it generates refers to `::loom_agent`, so this crate is not meant to be used on its own.

mod attr;
mod docs;
mod expand;

use proc_macro::TokenStream;

/// Turns a function into a tool.
///
/// ```ignore
/// use loom_agent::prelude::*;
///
/// /// Get the weather for a city.
/// #[tool(read_only, concurrency_safe, timeout_secs = 10)]
/// async fn get_weather(
///     /// The city name.
///     city: String,
///     /// Celsius unless given.
///     units: Option<Units>,
/// ) -> Result<String, ToolError> {
///     Ok(format!("{city}: sunny"))
/// }
///
/// let agent = Agent::builder().tool(get_weather) /* ... */;
/// let direct = get_weather::invoke("Tokyo".into(), None).await?;
/// ```
///
/// The function may be an `async fn` or a plain `fn`. The attribute generates:
///
/// - a unit struct with the function's name and visibility, implementing `loom_agent::Tool`, so
///   `get_weather` is the tool value you hand to an agent;
/// - `get_weather::invoke(..)`, the original function, still callable directly;
/// - a hidden arguments struct with one field per parameter, deriving `Deserialize` and
///   `JsonSchema`; the tool's `parameters()` is its JSON schema (an object with `properties`,
///   `required` and `additionalProperties: false`).
///
/// Parameters:
///
/// - Each parameter becomes a JSON argument of the same name. Its type must implement
///   `serde::Deserialize` and `schemars::JsonSchema` and be owned (`String`, not `&str`).
/// - `Option<T>` parameters are optional: missing or `null` gives `None`.
/// - Doc comments on a parameter become its `description` in the schema. `#[serde(...)]` and
///   `#[schemars(...)]` attributes on a parameter are applied to its field (for example
///   `#[serde(default)]`, `#[serde(rename = "type")]`, `#[schemars(range(min = 1))]`).
/// - One parameter of type `ToolContext` (any path ending in `ToolContext`, taken by value)
///   receives the call's context and is not a JSON argument.
/// - Arguments that do not fit give a `ToolError` of kind `InvalidArguments` that names the field.
///
/// The return type must implement `loom_agent::tool::IntoToolResult`: a `String`, `()`, a number,
/// `Json<T>`, a `ToolOutput`, or a `Result` of one of those and any error that converts into
/// `ToolError` (every `std::error::Error` does).
///
/// Options, all optional, in any order:
///
/// | option | effect |
/// | --- | --- |
/// | `name = "..."` | the tool name; the function's name by default |
/// | `description = "..."` | the description for the model; the function's doc comment by default, and one of the two is required |
/// | `read_only`, `destructive`, `concurrency_safe`, `requires_permission`, `idempotent`, `rerun_on_resume` | the `ToolFlags` |
/// | `timeout_secs = N` | the per-call timeout in seconds (an integer or a float) |
/// | `blocking` | for a plain `fn` that blocks: runs it with `tokio::task::spawn_blocking`; a panic in it becomes a `ToolError` of kind `Panicked` |
///
/// Inside the function, its name refers to the tool struct: a tool that calls itself writes
/// `name::invoke(..)`. The generated code refers to the `loom_agent` crate by that name.
#[proc_macro_attribute]
pub fn tool(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}
