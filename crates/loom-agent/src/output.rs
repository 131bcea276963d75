//! Structured output: a JSON schema the final answer must match, extraction of the JSON from the
//! model's text, and validation.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::Error;

/// A JSON schema for the final answer, compiled once.
#[derive(Clone)]
pub struct OutputSchema {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    schema: serde_json::Value,
    validator: jsonschema::Validator,
}

impl OutputSchema {
    /// A schema from JSON. Fails when the schema itself is invalid.
    pub fn new(name: impl Into<String>, schema: serde_json::Value) -> Result<Self, Error> {
        let name = name.into();
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| Error::Config(format!("output schema `{name}` is invalid: {e}")))?;
        Ok(OutputSchema { inner: Arc::new(Inner { name, schema, validator }) })
    }

    /// The schema of a Rust type (cached per type).
    pub fn of<T: schemars::JsonSchema + 'static>() -> Result<Self, Error> {
        static CACHE: OnceLock<Mutex<HashMap<TypeId, OutputSchema>>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(found) = cache.lock().ok().and_then(|c| c.get(&TypeId::of::<T>()).cloned()) {
            return Ok(found);
        }
        let mut value = serde_json::to_value(schemars::schema_for!(T))
            .map_err(|e| Error::Config(format!("cannot build the output schema: {e}")))?;
        let name = value
            .get("title")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| short_type_name(std::any::type_name::<T>()));
        if let Some(obj) = value.as_object_mut() {
            obj.remove("$schema");
        }
        let schema = OutputSchema::new(name, value)?;
        if let Ok(mut c) = cache.lock() {
            c.insert(TypeId::of::<T>(), schema.clone());
        }
        Ok(schema)
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The schema.
    pub fn schema(&self) -> &serde_json::Value {
        &self.inner.schema
    }

    /// Extracts the JSON value from a model's answer and validates it.
    ///
    /// Providers in strict structured-output mode answer `null` for properties the schema leaves
    /// optional (strict mode makes every property required and nullable). When the answer fails
    /// validation, those `null`s are dropped and it is checked again.
    pub fn parse(&self, text: &str) -> Result<serde_json::Value, String> {
        let value = extract_json(text).ok_or_else(|| "the answer contains no JSON value".to_string())?;
        match self.validate(&value) {
            Ok(()) => Ok(value),
            Err(first) => {
                let mut cleaned = value;
                drop_optional_nulls(&mut cleaned, &self.inner.schema, &self.inner.schema, 0);
                self.validate(&cleaned).map(|()| cleaned).map_err(|_| first)
            }
        }
    }

    /// Validates a value; the error lists each violation with its location.
    pub fn validate(&self, value: &serde_json::Value) -> Result<(), String> {
        check_schema(&self.inner.validator, value)
    }

    /// The instruction given to models without native structured output.
    pub fn directive(&self) -> String {
        let schema = serde_json::to_string(&self.inner.schema).unwrap_or_default();
        format!(
            "Structured output required: your final answer must be only a JSON value matching this JSON Schema, \
             with no prose and no code fences.\nSchema ({}): {schema}",
            self.inner.name
        )
    }
}

impl fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputSchema").field("name", &self.inner.name).field("schema", &self.inner.schema).finish()
    }
}

/// Removes `null` values of properties that `schema` does not require, recursively through
/// properties, items and local `$ref`s.
fn drop_optional_nulls(
    value: &mut serde_json::Value,
    schema: &serde_json::Value,
    root: &serde_json::Value,
    depth: u32,
) {
    if depth > 32 {
        return;
    }
    let schema = match schema.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => match r.strip_prefix('#').and_then(|p| root.pointer(p)) {
            Some(target) => target,
            None => return,
        },
        None => schema,
    };
    match value {
        serde_json::Value::Object(map) => {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(|r| r.as_array())
                .map(|r| r.iter().filter_map(|s| s.as_str()).collect())
                .unwrap_or_default();
            map.retain(|k, v| !v.is_null() || required.contains(&k.as_str()));
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (k, v) in map.iter_mut() {
                    if let Some(sub) = props.get(k) {
                        drop_optional_nulls(v, sub, root, depth + 1);
                    }
                }
            }
        }
        serde_json::Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for v in items {
                    drop_optional_nulls(v, sub, root, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Checks a value against a compiled schema; the error lists up to eight violations, each with its
/// location (`at /city: 5 is not of type "string"`). Shared by tool arguments and structured output.
pub(crate) fn check_schema(validator: &jsonschema::Validator, value: &serde_json::Value) -> Result<(), String> {
    if validator.is_valid(value) {
        return Ok(());
    }
    let problems: Vec<String> = validator
        .iter_errors(value)
        .take(8)
        .map(|e| {
            let path = e.instance_path().as_str();
            if path.is_empty() { e.to_string() } else { format!("at {path}: {e}") }
        })
        .collect();
    Err(problems.join("; "))
}

fn short_type_name(full: &str) -> String {
    full.rsplit("::").next().unwrap_or(full).to_string()
}

/// Finds the JSON value in a model's answer: the whole text, else the first ```json (or plain ```)
/// fenced block that parses, else the first balanced `{…}` or `[…]` span that parses.
pub fn extract_json(text: &str) -> Option<serde_json::Value> {
    let trimmed = text.trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Some(v);
    }
    // Fenced blocks.
    let mut rest = trimmed;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(0);
        let lang = after[..body_start].trim();
        let body = &after[body_start..];
        let Some(end) = body.find("```") else { break };
        if (lang.is_empty() || lang.eq_ignore_ascii_case("json"))
            && let Ok(v) = serde_json::from_str(body[..end].trim())
        {
            return Some(v);
        }
        rest = &body[end + 3..];
    }
    // Balanced spans in prose.
    let bytes = trimmed.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'{' && b != b'[' {
            continue;
        }
        if let Some(end) = balanced_end(&trimmed[i..])
            && let Ok(v) = serde_json::from_str(&trimmed[i..i + end])
        {
            return Some(v);
        }
    }
    None
}

/// The length of the balanced bracket span at the start of `s`, skipping brackets inside strings.
fn balanced_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_plain_fenced_and_embedded_json() {
        assert_eq!(extract_json(" {\"a\": 1} "), Some(json!({"a": 1})));
        assert_eq!(extract_json("Here:\n```json\n{\"a\": 2}\n```\nDone."), Some(json!({"a": 2})));
        assert_eq!(extract_json("```\n[1,2]\n```"), Some(json!([1, 2])));
        assert_eq!(
            extract_json("The answer is {\"s\": \"a } b\", \"n\": [1]} as asked."),
            Some(json!({"s": "a } b", "n": [1]}))
        );
        assert_eq!(extract_json("no json here"), None);
        assert_eq!(extract_json("broken {\"a\": } then {\"b\": 1}"), Some(json!({"b": 1})));
    }

    #[test]
    fn validation_errors_name_the_location() {
        let s = OutputSchema::new(
            "w",
            json!({"type": "object", "properties": {"t": {"type": "number"}}, "required": ["t"]}),
        )
        .unwrap();
        assert!(s.parse("{\"t\": 3}").is_ok());
        let err = s.parse("{\"t\": \"hot\"}").unwrap_err();
        assert!(err.contains("/t"), "{err}");
        assert!(s.parse("{}").unwrap_err().contains("t"));
    }

    #[test]
    fn invalid_schema_is_a_config_error() {
        assert!(matches!(OutputSchema::new("bad", json!({"type": 12})), Err(Error::Config(_))));
    }
}
