//! OpenAI strict-mode JSON schema normalization.
//!
//! Strict structured output requires every object to list all its properties as required and to
//! forbid additional ones. Optional properties become nullable instead. Schemas that cannot be made
//! strict (open maps, pattern properties) are sent non-strict, as they are.

use serde_json::{Map, Value, json};

/// The schema to send and whether it can be strict.
pub fn strict_schema(schema: &Value) -> (Value, bool) {
    let mut out = schema.clone();
    if let Some(obj) = out.as_object_mut() {
        obj.remove("$schema");
    }
    let strict = normalize(&mut out);
    if strict { (out, true) } else { (without_meta(schema), false) }
}

fn without_meta(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.remove("$schema");
    }
    s
}

/// Normalizes in place; false when the schema cannot be strict.
fn normalize(v: &mut Value) -> bool {
    let Some(obj) = v.as_object_mut() else { return true };
    obj.remove("default");
    let mut ok = true;
    if obj.contains_key("patternProperties") {
        return false;
    }
    // An open map (a schema for extra properties, `true`, or an object without properties, whose
    // extra properties are allowed by default) would be closed by strict mode: keep it as it is.
    let is_object = obj.get("type").is_some_and(|t| t == "object") || obj.contains_key("properties");
    match obj.get("additionalProperties") {
        Some(Value::Bool(false)) => {}
        Some(_) => return false,
        None if is_object && !obj.contains_key("properties") => return false,
        None => {}
    }
    if is_object {
        let required: Vec<String> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let mut all: Vec<String> = Vec::new();
        if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
            for (name, prop) in props.iter_mut() {
                ok &= normalize(prop);
                if !required.contains(name) {
                    make_nullable(prop);
                }
                all.push(name.clone());
            }
        }
        // Sorted, so the list is the same whether or not serde_json keeps insertion order (its
        // `preserve_order` feature, which the `local` feature's llguidance turns on).
        all.sort();
        obj.insert("required".into(), json!(all));
        obj.insert("additionalProperties".into(), json!(false));
    }
    for key in ["items", "not"] {
        if let Some(child) = obj.get_mut(key) {
            ok &= normalize(child);
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(list) = obj.get_mut(key).and_then(Value::as_array_mut) {
            for child in list {
                ok &= normalize(child);
            }
        }
    }
    for key in ["$defs", "definitions"] {
        if let Some(defs) = obj.get_mut(key).and_then(Value::as_object_mut) {
            for child in defs.values_mut() {
                ok &= normalize(child);
            }
        }
    }
    // Strict mode does not take oneOf: anyOf has the same meaning for disjoint branches.
    if let Some(one_of) = obj.remove("oneOf") {
        obj.insert("anyOf".into(), one_of);
    }
    ok
}

fn make_nullable(prop: &mut Value) {
    let Some(obj) = prop.as_object_mut() else { return };
    // A `null` type alone would still fail an `enum` or `const` without null: wrap those instead.
    if obj.contains_key("enum") || obj.contains_key("const") {
        let inner = Value::Object(std::mem::take(obj));
        obj.insert("anyOf".into(), json!([inner, {"type": "null"}]));
        return;
    }
    match obj.get_mut("type") {
        Some(Value::String(t)) if t != "null" => {
            let t = t.clone();
            obj.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) => {
            if !types.iter().any(|t| t == "null") {
                types.push(json!("null"));
            }
        }
        _ => {
            let inner = Value::Object(std::mem::take(obj));
            let mut wrapped = Map::new();
            wrapped.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            *obj = wrapped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_objects_strict_and_optional_fields_nullable() {
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "default": 3},
                "unit": {"$ref": "#/$defs/Unit"}
            },
            "required": ["city"],
            "$defs": {"Unit": {"type": "string", "enum": ["c", "f"]}}
        });
        let (out, strict) = strict_schema(&schema);
        assert!(strict);
        assert_eq!(out["required"], json!(["city", "days", "unit"]));
        assert_eq!(out["additionalProperties"], json!(false));
        assert_eq!(out["properties"]["days"], json!({"type": ["integer", "null"]}));
        assert_eq!(out["properties"]["unit"], json!({"anyOf": [{"$ref": "#/$defs/Unit"}, {"type": "null"}]}));
        assert!(out.get("$schema").is_none());
    }

    #[test]
    fn open_maps_are_sent_non_strict() {
        let schema = json!({"type": "object", "additionalProperties": {"type": "number"}});
        let (out, strict) = strict_schema(&schema);
        assert!(!strict);
        assert_eq!(out, schema);
    }
}
