//! The `generateContent` request body, serialized straight from the borrowed request: no JSON
//! tree built and cloned first (that tree copied every string, every tool schema and every tool
//! call's arguments at every call).

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::Value;

use loom_core::message::{ContentPart, Message};
use loom_core::model::ModelRequest;
use loom_core::tool::ToolSpec;

use super::{FOREIGN_TURN_SIGNATURE, GenerateContent, SIGNATURE_PROVIDER};
use crate::json::{Body, ObjectArgs, Turn, decimal, object_args, push_turn, put};

/// Where an extension goes: into `generationConfig` (under this key), or at the top level.
fn config_key(key: &str) -> Option<&str> {
    match key.strip_prefix("generationConfig.") {
        Some(inner) => Some(inner),
        None if key == "thinkingConfig" || key == "responseModalities" => Some(key),
        None => None,
    }
}

/// The body of one call. Extensions named `generationConfig.<key>`, `thinkingConfig` and
/// `responseModalities` go into `generationConfig`, the others at the top level; either way an
/// extension naming a built-in field replaces it. Streaming changes only the URL.
impl Serialize for Body<'_, GenerateContent> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let request = self.request;
        let ext = &request.generation.extensions;
        let (system, turns) = contents(request.messages);
        let mut map = serializer.serialize_map(None)?;
        put(&mut map, ext, "contents", &turns)?;
        if !system.is_empty() {
            put(&mut map, ext, "systemInstruction", &SystemInstruction { parts: &system })?;
        }
        if !request.tools.is_empty() {
            put(&mut map, ext, "tools", &[Declarations { function_declarations: Tools(request.tools) }])?;
        }
        let config = Config { request };
        if !config.is_empty() {
            put(&mut map, ext, "generationConfig", &config)?;
        }
        // safetySettings, cachedContent, … pass through as given.
        for (k, v) in ext.iter().filter(|(k, _)| config_key(k).is_none()) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// `generationConfig`: the generation settings, then the extensions that go into it.
struct Config<'a> {
    request: &'a ModelRequest<'a>,
}

impl Config<'_> {
    fn is_empty(&self) -> bool {
        let g = self.request.generation;
        g.temperature.is_none()
            && g.top_p.is_none()
            && g.max_output_tokens.is_none()
            && g.stop.is_empty()
            && g.seed.is_none()
            && self.request.output_schema.is_none()
            && !g.extensions.keys().any(|k| config_key(k).is_some())
    }
}

impl Serialize for Config<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let g = self.request.generation;
        // A setting an extension gives is the extension's (written with the extensions below).
        let given = |key: &str| g.extensions.keys().any(|k| config_key(k) == Some(key));
        let mut map = serializer.serialize_map(None)?;
        if let Some(t) = g.temperature.filter(|_| !given("temperature")) {
            map.serialize_entry("temperature", &decimal(t))?;
        }
        if let Some(p) = g.top_p.filter(|_| !given("topP")) {
            map.serialize_entry("topP", &decimal(p))?;
        }
        if let Some(n) = g.max_output_tokens.filter(|_| !given("maxOutputTokens")) {
            map.serialize_entry("maxOutputTokens", &n)?;
        }
        if !g.stop.is_empty() && !given("stopSequences") {
            map.serialize_entry("stopSequences", &g.stop)?;
        }
        if let Some(seed) = g.seed.filter(|_| !given("seed")) {
            map.serialize_entry("seed", &seed)?;
        }
        if let Some(schema) = self.request.output_schema {
            if !given("responseMimeType") {
                map.serialize_entry("responseMimeType", "application/json")?;
            }
            if !given("responseJsonSchema") {
                map.serialize_entry("responseJsonSchema", &WithoutSchemaKey(schema))?;
            }
        }
        for (k, v) in &g.extensions {
            if let Some(key) = config_key(k) {
                map.serialize_entry(key, v)?;
            }
        }
        map.end()
    }
}

/// A JSON schema without its `$schema` key (Gemini rejects it).
struct WithoutSchemaKey<'a>(&'a Value);

impl Serialize for WithoutSchemaKey<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_object() {
            Some(o) => serializer.collect_map(o.iter().filter(|(k, _)| k.as_str() != "$schema")),
            None => self.0.serialize(serializer),
        }
    }
}

/// `{"parts": [...]}`.
#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: &'a [Part<'a>],
}

/// `{"functionDeclarations": [...]}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Declarations<'a> {
    function_declarations: Tools<'a>,
}

struct Tools<'a>(&'a [ToolSpec]);

impl Serialize for Tools<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|t| Declaration {
            name: &t.name,
            description: &t.description,
            parameters_json_schema: &t.parameters,
        }))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Declaration<'a> {
    name: &'a str,
    description: &'a str,
    parameters_json_schema: &'a Value,
}

/// One part: exactly one of its fields, plus a thought signature on the part that carries it.
#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Part<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<InlineData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<FileData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<FunctionResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InlineData<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileData<'a> {
    mime_type: &'a str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: ObjectArgs<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Serialize)]
struct FunctionResponse<'a> {
    name: &'a str,
    response: Response<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

/// `{"content": …}` or `{"error": …}`.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Response<'a> {
    Content(&'a str),
    Error(&'a str),
}

/// A call id Gemini gave (ours, `call_…`, are made up for calls that came without one and are not
/// sent).
fn gemini_id(id: &str) -> Option<&str> {
    (!id.starts_with("call_")).then_some(id)
}

fn user_part(p: &ContentPart) -> Part<'_> {
    match p {
        ContentPart::Text { text } => Part { text: Some(text), ..Part::default() },
        ContentPart::Image { url, media_type } => {
            let given = media_type.as_deref().unwrap_or("image/png");
            if let Some(rest) = url.strip_prefix("data:")
                && let Some((meta, data)) = rest.split_once(',')
            {
                let mt = meta.trim_end_matches(";base64");
                let mime_type = if mt.is_empty() { given } else { mt };
                return Part { inline_data: Some(InlineData { mime_type, data }), ..Part::default() };
            }
            Part { file_data: Some(FileData { mime_type: given, file_uri: url }), ..Part::default() }
        }
    }
}

/// The system instruction's parts and the turns.
fn contents(messages: &[Message]) -> (Vec<Part<'_>>, Vec<Turn<Part<'_>>>) {
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for m in messages {
        let (role, parts) = match m {
            Message::System { content } => {
                system.push(Part { text: Some(content), ..Part::default() });
                continue;
            }
            Message::User { content } => ("user", content.iter().map(user_part).collect::<Vec<_>>()),
            Message::Assistant { content, thinking, tool_calls } => {
                // Only Gemini's own signatures go back; a turn signed by another provider gets the
                // documented placeholder instead.
                let own = thinking.iter().filter(|t| t.replayable_by(SIGNATURE_PROVIDER));
                let signature = own
                    .filter_map(|t| t.signature.as_deref())
                    .next()
                    .or_else(|| thinking.iter().any(|t| t.signature.is_some()).then_some(FOREIGN_TURN_SIGNATURE));
                let mut parts = Vec::with_capacity(tool_calls.len() + 1);
                if !content.is_empty() {
                    parts.push(Part { text: Some(content), ..Part::default() });
                }
                // Gemini takes only an object (a Struct) as args; malformed arguments go back as `{}`.
                parts.extend(tool_calls.iter().map(|c| Part {
                    function_call: Some(FunctionCall {
                        name: &c.name,
                        args: object_args(&c.arguments),
                        id: gemini_id(&c.id),
                    }),
                    ..Part::default()
                }));
                // The signature goes back on the first function call (or the text) of the turn.
                if let Some(sig) = signature {
                    let target = parts.iter().position(|p| p.function_call.is_some()).unwrap_or(0);
                    if let Some(p) = parts.get_mut(target) {
                        p.thought_signature = Some(sig);
                    }
                }
                ("model", parts)
            }
            Message::Tool { call_id, name, content, is_error } => {
                let response = if *is_error { Response::Error(content) } else { Response::Content(content) };
                let part = Part {
                    function_response: Some(FunctionResponse { name, response, id: gemini_id(call_id) }),
                    ..Part::default()
                };
                ("user", vec![part])
            }
        };
        push_turn(&mut turns, role, parts);
    }
    (system, turns)
}
