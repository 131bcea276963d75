//! Constrained decoding with llguidance: a `toktrie::TokenizerEnv` over the GGUF vocabulary, the
//! JSON schema a turn must follow ("one of the offered tools with its arguments, or a final
//! answer"), and the per-token mask.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{InferenceCapabilities, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};

use crate::tokenizer::GgufTokenizer;
use loom_core::error::Error;
use loom_core::tool::ToolSpec;

/// The longest string the constraint lets the model write for a tool argument without its own
/// `maxLength`.
pub(crate) const ARG_MAX_LENGTH: u64 = 200;
/// The bound on integers and numbers without their own `minimum` / `maximum`.
pub(crate) const NUMBER_BOUND: i64 = 1_000_000_000_000;
/// The longest final answer in tool mode.
pub(crate) const ANSWER_MAX_LENGTH: u64 = 1000;

/// The GGUF vocabulary as llguidance sees it.
struct GgufEnv {
    tokenizer: Arc<GgufTokenizer>,
    trie: TokTrie,
}

impl TokenizerEnv for GgufEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        let text = String::from_utf8_lossy(s);
        self.tokenizer.encode(&text).unwrap_or_default()
    }
}

/// Builds the llguidance factory for a vocabulary (100–200 ms; done once per loaded model).
pub(crate) fn factory(tokenizer: Arc<GgufTokenizer>) -> Result<ParserFactory, Error> {
    let n = tokenizer.vocab_size();
    let words: Vec<Vec<u8>> = (0..n as u32)
        .map(|i| {
            let bytes = tokenizer.token_bytes(i);
            if tokenizer.is_special(i) {
                // llguidance marks special tokens with a leading 0xff byte.
                let mut v = Vec::with_capacity(bytes.len() + 1);
                v.push(TokTrie::SPECIAL_TOKEN_MARKER);
                v.extend_from_slice(bytes);
                v
            } else {
                bytes.to_vec()
            }
        })
        .collect();
    let mut info = TokRxInfo::new(n as u32, tokenizer.eos());
    info.tok_bos = tokenizer.bos();
    info.tok_end_of_turn = Some(tokenizer.eos());
    let trie = TokTrie::from(&info, &words);
    let env: TokEnv = Arc::new(GgufEnv { tokenizer, trie });
    let caps = InferenceCapabilities { ff_tokens: false, backtrack: false, conditional_ff_tokens: false, fork: false };
    let mut factory = ParserFactory::new(&env, caps, &llguidance::earley::SlicedBiasComputer::general_slices())
        .map_err(|e| Error::ModelFile(format!("constrained decoding setup failed: {e}")))?;
    factory.quiet();
    Ok(factory)
}

/// What a turn's output must be.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Shape {
    /// Free text.
    Text,
    /// JSON matching a schema (structured output, no tools).
    Json(Value),
    /// `{"tool": NAME, "arguments": {...}}` for one of the tools, or `{"answer": ...}` (a string, or
    /// the output schema when there is one).
    Choice(Value),
}

/// The schema for a turn. `tools` are the tools the model may still call; `offered` says whether
/// the request offered any (then the answer is `{"answer": ...}` even when none is left).
pub(crate) fn shape(tools: &[ToolSpec], offered: bool, output_schema: Option<&Value>) -> Shape {
    if !offered {
        return match output_schema {
            Some(s) => Shape::Json(with_options(capped(s.clone()))),
            None => Shape::Text,
        };
    }
    let mut choices: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": { "tool": { "const": t.name }, "arguments": capped(t.parameters.clone()) },
                "required": ["tool", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let answer = match output_schema {
        Some(s) => capped(s.clone()),
        None => json!({ "type": "string", "minLength": 1, "maxLength": ANSWER_MAX_LENGTH }),
    };
    choices.push(json!({
        "type": "object",
        "properties": { "answer": answer },
        "required": ["answer"],
        "additionalProperties": false,
    }));
    Shape::Choice(with_options(json!({ "anyOf": choices })))
}

/// Compact JSON (no free whitespace), so a small model cannot wander off into pretty-printing.
fn with_options(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.insert(
            "x-guidance".into(),
            json!({ "whitespace_flexible": false, "item_separator": ", ", "key_separator": ": ", "lenient": true }),
        );
    }
    schema
}

/// Adds `maxLength` to strings and `additionalProperties: false` to objects that lack them, so
/// every constrained output is bounded.
fn capped(mut schema: Value) -> Value {
    cap(&mut schema);
    schema
}

fn cap(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let is_string = map
                .get("type")
                .is_some_and(|t| t == "string" || t.as_array().is_some_and(|a| a.contains(&json!("string"))));
            if is_string && !map.contains_key("maxLength") && !map.contains_key("enum") && !map.contains_key("const") {
                map.insert("maxLength".into(), json!(ARG_MAX_LENGTH));
            }
            if map.get("type").is_some_and(|t| t == "object")
                && map.contains_key("properties")
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), json!(false));
            }
            // Numbers are bounded too: without a bound a small model can write digits until
            // max_tokens.
            if map.get("type").is_some_and(|t| t == "integer" || t == "number") {
                if !map.contains_key("maximum") && !map.contains_key("exclusiveMaximum") {
                    map.insert("maximum".into(), json!(NUMBER_BOUND));
                }
                if !map.contains_key("minimum") && !map.contains_key("exclusiveMinimum") {
                    map.insert("minimum".into(), json!(-NUMBER_BOUND));
                }
            }
            if map.get("type").is_some_and(|t| t == "array") && !map.contains_key("maxItems") {
                map.insert("maxItems".into(), json!(16));
            }
            // Keywords llguidance does not need and may not know.
            map.remove("$schema");
            map.remove("title");
            for (_, child) in map.iter_mut() {
                cap(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(cap),
        _ => {}
    }
}

/// A matcher for one generation.
pub(crate) struct Constraint {
    matcher: Matcher,
}

impl Constraint {
    pub(crate) fn new(factory: &ParserFactory, schema: &Value) -> Result<Constraint, Error> {
        let grammar = TopLevelGrammar::from_json_schema(schema.clone());
        let parser = factory.create_parser(grammar);
        let matcher = Matcher::new(parser);
        if let Some(e) = matcher.get_error() {
            return Err(Error::Config(format!("the schema cannot be enforced by the local model: {e}")));
        }
        Ok(Constraint { matcher })
    }

    /// The tokens allowed next (only EOS once the JSON is complete).
    pub(crate) fn mask(&mut self) -> Result<SimpleVob, Error> {
        self.matcher.compute_mask_or_eos().map_err(|e| Error::ModelFile(format!("constrained decoding failed: {e}")))
    }

    pub(crate) fn consume(&mut self, token: u32) -> Result<(), Error> {
        self.matcher.consume_token(token).map_err(|e| Error::ModelFile(format!("constrained decoding failed: {e}")))
    }

    /// Whether the output is complete.
    pub(crate) fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }
}
