use serde::Serialize;

use super::ToolError;

/// What a tool returns to the model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolOutput {
    /// The text the model reads.
    pub content: String,
    /// Set by [`ToolOutput::pending`]: the result comes later, from a background job with this
    /// handle.
    pub pending: Option<String>,
}

impl ToolOutput {
    /// Text output.
    pub fn text(content: impl Into<String>) -> Self {
        ToolOutput { content: content.into(), pending: None }
    }

    /// JSON output, serialized compactly.
    pub fn json(value: &serde_json::Value) -> Self {
        ToolOutput { content: value.to_string(), pending: None }
    }

    /// The result will come later: the tool started a background job (for minutes or hours) known
    /// by `handle`. A journaled run records the call as pending and ends `suspended` (reason
    /// `tool_pending`), holding nothing; `Agent::complete_tool(run_id, call_id, result)`, or a
    /// `tool.result` signal ([`crate::signal::RuntimeSignal::tool_result`]), in any process that
    /// shares the journal, records the result and continues the run. Without a journal the model
    /// receives an error result saying so.
    pub fn pending(handle: impl Into<String>) -> Self {
        ToolOutput { content: String::new(), pending: Some(handle.into()) }
    }

    /// Whether the result comes later (see [`ToolOutput::pending`]).
    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }
}

/// Wraps any `Serialize` value so a tool can return it; the model receives its JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Json<T>(pub T);

/// Values a tool function may return as its output.
pub trait IntoToolOutput {
    /// Converts into the tool output.
    fn into_tool_output(self) -> Result<ToolOutput, ToolError>;
}

impl IntoToolOutput for ToolOutput {
    fn into_tool_output(self) -> Result<ToolOutput, ToolError> {
        Ok(self)
    }
}

impl IntoToolOutput for String {
    fn into_tool_output(self) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text(self))
    }
}

impl IntoToolOutput for &str {
    fn into_tool_output(self) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text(self.to_string()))
    }
}

impl IntoToolOutput for serde_json::Value {
    fn into_tool_output(self) -> Result<ToolOutput, ToolError> {
        Ok(match self {
            serde_json::Value::String(s) => ToolOutput::text(s),
            other => ToolOutput::text(other.to_string()),
        })
    }
}

impl IntoToolOutput for () {
    fn into_tool_output(self) -> Result<ToolOutput, ToolError> {
        Ok(ToolOutput::text("done"))
    }
}

impl<T: Serialize> IntoToolOutput for Json<T> {
    fn into_tool_output(self) -> Result<ToolOutput, ToolError> {
        serde_json::to_string(&self.0)
            .map(ToolOutput::text)
            .map_err(|e| ToolError::new(format!("cannot serialize the tool output: {e}")))
    }
}

macro_rules! display_outputs {
    ($($t:ty),*) => {$(
        impl IntoToolOutput for $t {
            fn into_tool_output(self) -> Result<ToolOutput, ToolError> {
                Ok(ToolOutput::text(self.to_string()))
            }
        }
    )*};
}
display_outputs!(bool, i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64, char);

/// What a tool function may return: an output, or a `Result` of an output and any error that
/// converts into [`ToolError`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a tool's result",
    label = "a tool returns a `String`, `&str`, `()`, a number, `bool`, `char`, a `serde_json::Value`, a `ToolOutput`, a `Json<T>`, or a `Result` of one",
    note = "to return your own type, derive `serde::Serialize` for it and return `Json(value)`"
)]
pub trait IntoToolResult {
    /// Converts into the tool's result.
    fn into_tool_result(self) -> Result<ToolOutput, ToolError>;
}

impl<T: IntoToolOutput, E: Into<ToolError>> IntoToolResult for Result<T, E> {
    fn into_tool_result(self) -> Result<ToolOutput, ToolError> {
        match self {
            Ok(v) => v.into_tool_output(),
            Err(e) => Err(e.into()),
        }
    }
}

macro_rules! plain_results {
    ($($t:ty),*) => {$(
        impl IntoToolResult for $t {
            fn into_tool_result(self) -> Result<ToolOutput, ToolError> {
                self.into_tool_output()
            }
        }
    )*};
}
plain_results!(
    ToolOutput,
    String,
    &str,
    serde_json::Value,
    (),
    bool,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    f32,
    f64,
    char
);

impl<T: Serialize> IntoToolResult for Json<T> {
    fn into_tool_result(self) -> Result<ToolOutput, ToolError> {
        self.into_tool_output()
    }
}
