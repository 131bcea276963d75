//! Elicitation answers: schema defaults applied to accepted content (SEP-1034).

use serde_json::{Map, Value};

/// Fills `content` with the `default` of every property of `requested_schema` that `content`
/// leaves out, as a client does when the user accepts a form without touching some fields.
/// Values the user gave are kept; a schema without properties leaves `content` as it is.
///
/// ```
/// use serde_json::json;
/// use loom_mcp_conformance::elicitation::apply_schema_defaults;
///
/// let schema = json!({"type": "object", "properties": {
///     "name": {"type": "string", "default": "John Doe"},
///     "age": {"type": "integer", "default": 30},
///     "email": {"type": "string"}
/// }});
/// let filled = apply_schema_defaults(&schema, json!({"age": 41}).as_object().cloned().unwrap_or_default());
/// assert_eq!(serde_json::Value::Object(filled), json!({"name": "John Doe", "age": 41}));
/// ```
pub fn apply_schema_defaults(requested_schema: &Value, mut content: Map<String, Value>) -> Map<String, Value> {
    let Some(properties) = requested_schema.get("properties").and_then(Value::as_object) else {
        return content;
    };
    for (name, property) in properties {
        if content.contains_key(name) {
            continue;
        }
        if let Some(default) = property.get("default") {
            content.insert(name.clone(), default.clone());
        }
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn defaults_fill_only_missing_fields_of_every_type() {
        let schema = json!({"type": "object", "properties": {
            "name": {"type": "string", "default": "John Doe"},
            "age": {"type": "integer", "default": 30},
            "score": {"type": "number", "default": 95.5},
            "status": {"type": "string", "enum": ["active", "inactive"], "default": "active"},
            "verified": {"type": "boolean", "default": true},
            "tags": {"type": "array", "items": {"type": "string"}, "default": ["a"]},
            "nickname": {"type": "string"}
        }});
        let filled = apply_schema_defaults(&schema, object(json!({"age": 7, "status": "inactive"})));
        assert_eq!(
            Value::Object(filled),
            json!({"name": "John Doe", "age": 7, "score": 95.5, "status": "inactive",
                   "verified": true, "tags": ["a"]})
        );
    }

    #[test]
    fn a_schema_without_properties_changes_nothing() {
        let content = object(json!({"x": 1}));
        assert_eq!(apply_schema_defaults(&json!({"type": "object"}), content.clone()), content);
        assert_eq!(apply_schema_defaults(&json!("not a schema"), content.clone()), content);
    }
}
