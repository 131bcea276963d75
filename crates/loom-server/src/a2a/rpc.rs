//! JSON-RPC 2.0 framing for A2A: request validation, responses, and the error codes of the A2A
//! 1.0 specification (§5.4, §9.5). Errors are answered with HTTP 200 and a JSON-RPC error object,
//! as the official SDKs do; A2A errors carry a `google.rpc.ErrorInfo` detail.

use serde_json::{Map, Value, json};

/// The protocol version this server speaks (`Major.Minor`).
pub const PROTOCOL_VERSION: &str = "1.0";

/// The header (and query parameter) naming the protocol version of a request.
pub const VERSION_HEADER: &str = "a2a-version";

/// A JSON-RPC error answered to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The JSON-RPC error code.
    pub code: i64,
    /// What went wrong, for people.
    pub message: String,
    /// The `ErrorInfo.reason` of A2A-specific errors (`TASK_NOT_FOUND`, …).
    pub reason: Option<&'static str>,
    /// The `ErrorInfo.metadata` (string values).
    pub metadata: Vec<(&'static str, String)>,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into(), reason: None, metadata: Vec::new() }
    }

    fn a2a(code: i64, reason: &'static str, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into(), reason: Some(reason), metadata: Vec::new() }
    }

    fn with(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.metadata.push((key, value.into()));
        self
    }

    /// -32700: the body is not JSON.
    pub fn parse(detail: impl std::fmt::Display) -> Self {
        Self::new(-32700, format!("Invalid JSON payload: {detail}"))
    }

    /// -32600: the JSON is not a valid JSON-RPC request.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(-32600, format!("Request payload validation error: {}", detail.into()))
    }

    /// -32601.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(-32601, format!("Method not found: `{method}`"))
    }

    /// -32602.
    pub fn invalid_params(detail: impl Into<String>) -> Self {
        Self::new(-32602, format!("Invalid parameters: {}", detail.into()))
    }

    /// -32603.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(-32603, format!("Internal error: {}", detail.into()))
    }

    /// -32001: no such task, or another tenant's (the same answer, on purpose).
    pub fn task_not_found(id: &str) -> Self {
        Self::a2a(-32001, "TASK_NOT_FOUND", format!("Task not found: `{id}`")).with("taskId", id)
    }

    /// -32002.
    pub fn task_not_cancelable(id: &str, why: &str) -> Self {
        Self::a2a(-32002, "TASK_NOT_CANCELABLE", format!("Task `{id}` cannot be canceled: {why}")).with("taskId", id)
    }

    /// -32003.
    pub fn push_not_supported() -> Self {
        Self::a2a(-32003, "PUSH_NOTIFICATION_NOT_SUPPORTED", "Push notifications are not supported by this agent")
    }

    /// -32004.
    pub fn unsupported(detail: impl Into<String>) -> Self {
        Self::a2a(-32004, "UNSUPPORTED_OPERATION", format!("Unsupported operation: {}", detail.into()))
    }

    /// -32005.
    pub fn content_type(detail: impl Into<String>) -> Self {
        Self::a2a(-32005, "CONTENT_TYPE_NOT_SUPPORTED", format!("Content type not supported: {}", detail.into()))
    }

    /// -32009.
    pub fn version_not_supported(requested: &str) -> Self {
        Self::a2a(
            -32009,
            "VERSION_NOT_SUPPORTED",
            format!(
                "A2A protocol version `{requested}` is not supported; this agent speaks {PROTOCOL_VERSION} \
                 (send the header `A2A-Version: {PROTOCOL_VERSION}`)"
            ),
        )
        .with("requestedVersion", requested)
        .with("supportedVersions", PROTOCOL_VERSION)
    }

    /// The JSON-RPC error object.
    pub fn to_json(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(reason) = self.reason {
            error["data"] = json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "a2a-protocol.org",
                "metadata": self.metadata.iter().map(|(k, v)| (k.to_string(), Value::String(v.clone()))).collect::<Map<String, Value>>(),
            }]);
        }
        error
    }
}

impl From<crate::error::ApiError> for RpcError {
    fn from(e: crate::error::ApiError) -> Self {
        match e.status.as_u16() {
            400 | 409 | 422 => RpcError::invalid_params(e.message),
            _ => RpcError::internal(e.message),
        }
    }
}

impl From<loom_agent::Error> for RpcError {
    fn from(e: loom_agent::Error) -> Self {
        tracing::error!(error = %e, "A2A request failed");
        RpcError::internal(e.to_string())
    }
}

/// A success response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response.
pub fn error(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()})
}

/// A validated request: its id (echoed in the answer), method and params.
#[derive(Debug)]
pub struct Request {
    /// `id` (a string, a number or null).
    pub id: Value,
    /// The method.
    pub method: String,
    /// The params (an empty object when absent).
    pub params: Value,
}

/// A request that could not be read: the id to answer with (null when unknown) and the error.
pub type Failure = Box<(Value, RpcError)>;

fn fail(id: Value, e: RpcError) -> Failure {
    Box::new((id, e))
}

/// Parses a body into a request.
pub fn parse_request(body: &[u8]) -> Result<Request, Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| fail(Value::Null, RpcError::parse(e)))?;
    let Value::Object(mut obj) = value else {
        let what = if value.is_array() { "batch requests are not supported" } else { "the request is not an object" };
        return Err(fail(Value::Null, RpcError::invalid_request(what)));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => Value::Null,
        Some(v @ (Value::String(_) | Value::Number(_))) => v,
        Some(_) => return Err(fail(Value::Null, RpcError::invalid_request("`id` must be a string, a number or null"))),
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(fail(id, RpcError::invalid_request("`jsonrpc` must be exactly \"2.0\"")));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(fail(id, RpcError::invalid_request("`method` is required and must be a string"))),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(fail(id, RpcError::invalid_params("`params` must be an object"))),
    };
    Ok(Request { id, method, params })
}

/// Whether a requested version is one this server speaks: `1.0` (a patch number is ignored, as
/// the specification says). An empty or missing value means 0.3 (§3.6.2), which is not.
pub fn version_supported(requested: &str) -> bool {
    let mut parts = requested.trim().split('.');
    matches!((parts.next(), parts.next()), (Some("1"), Some("0"))) && parts.all(|p| p.parse::<u32>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(version_supported("1.0"));
        assert!(version_supported("1.0.2"));
        assert!(!version_supported(""));
        assert!(!version_supported("0.3"));
        assert!(!version_supported("1.1"));
        assert!(!version_supported("1"));
        assert!(!version_supported("1.0.x"));
    }

    #[test]
    fn requests() {
        assert_eq!(parse_request(b"{").unwrap_err().1.code, -32700);
        assert_eq!(parse_request(b"[]").unwrap_err().1.code, -32600);
        let (id, e) = *parse_request(br#"{"jsonrpc":"1.0","id":7,"method":"GetTask"}"#).unwrap_err();
        assert_eq!((id, e.code), (json!(7), -32600));
        let (id, e) = *parse_request(br#"{"jsonrpc":"2.0","id":"a","method":"GetTask","params":[1]}"#).unwrap_err();
        assert_eq!((id, e.code), (json!("a"), -32602));
        let r = parse_request(br#"{"jsonrpc":"2.0","id":"a","method":"GetTask"}"#).unwrap();
        assert_eq!((r.method.as_str(), r.params), ("GetTask", json!({})));
        let e = RpcError::task_not_found("run_1").to_json();
        assert_eq!(e["code"], -32001);
        assert_eq!(e["data"][0]["reason"], "TASK_NOT_FOUND");
        assert_eq!(e["data"][0]["metadata"]["taskId"], "run_1");
    }
}
