//! Fact extraction: one model call, with a JSON schema, that turns a finished exchange into facts
//! (`{key, statement, importance, supersedes}`), given the facts already known so it can name the
//! ones a new fact replaces.

use std::sync::OnceLock;

use futures::StreamExt;
use serde::Deserialize;

use super::types::{Episode, Fact, NewFact, clip};
use crate::error::Error;
use crate::message::Message;
use crate::model::{Generation, LanguageModel, ModelRequest, ResponseAssembler};
use crate::output::OutputSchema;

/// The most known facts shown to the extractor.
const KNOWN_FACTS: usize = 50;

/// The JSON schema of an extraction's answer.
pub fn extraction_schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "facts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "key": {"type": ["string", "null"], "description": "what the fact is about, snake_case (home_city, employer, favourite_language)"},
                        "statement": {"type": "string", "description": "one short sentence, in the third person"},
                        "importance": {"type": "number", "minimum": 0, "maximum": 1},
                        "supersedes": {"type": ["string", "null"], "description": "the id of a known fact this one replaces"}
                    },
                    "required": ["importance", "key", "statement", "supersedes"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["facts"],
        "additionalProperties": false
    })
}

fn schema() -> Result<&'static OutputSchema, Error> {
    static SCHEMA: OnceLock<Result<OutputSchema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| OutputSchema::new("memory_facts", extraction_schema()).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Config(e.clone()))
}

/// The instructions of the extraction call.
pub const EXTRACTION_INSTRUCTIONS: &str = "You maintain long-term memory about a user. From the exchange \
below, extract facts worth remembering in later conversations: stable facts about the user (who they are, \
where they live, what they prefer, what they work on) and decisions or commitments. Skip small talk, \
questions without an answer, and anything already known unless it changed. Give each fact a short \
snake_case key naming its subject, so a later fact about the same subject replaces it; when a fact \
contradicts a known fact, set `supersedes` to that fact's id. Importance: 1 for identity and strong \
preferences, 0.5 for useful context, 0.2 for trivia. Answer {\"facts\": []} when there is nothing to keep.";

/// The messages of the extraction call for `episode`, with the facts already known.
pub fn extraction_messages(episode: &Episode, known: &[Fact], native: bool) -> Result<Vec<Message>, Error> {
    let mut system = EXTRACTION_INSTRUCTIONS.to_string();
    if !native {
        system.push_str("\n\n");
        system.push_str(&schema()?.directive());
    }
    let mut user = String::from("Known facts:\n");
    if known.is_empty() {
        user.push_str("(none)\n");
    }
    for f in known.iter().rev().take(KNOWN_FACTS) {
        let key = f.key.as_deref().unwrap_or("-");
        user.push_str(&format!("- id={} key={key}: {}\n", f.id, f.statement));
    }
    user.push_str(&format!(
        "\nExchange:\nUser: {}\nAssistant: {}\n",
        clip(&episode.prompt, 4000),
        clip(&episode.answer, 4000)
    ));
    if !episode.tools.is_empty() {
        user.push_str(&format!("Tools used: {}\n", episode.tools));
    }
    Ok(vec![Message::system(system), Message::user(user)])
}

#[derive(Deserialize)]
struct Answer {
    facts: Vec<NewFact>,
}

/// Runs the extraction call on `model` and returns the facts it found (each with the episode's
/// run as its source). A failed call or an answer that does not match the schema is an error.
pub async fn extract_facts(
    model: &dyn LanguageModel,
    episode: &Episode,
    known: &[Fact],
    user_id: &str,
) -> Result<Vec<NewFact>, Error> {
    let native = model.capabilities().native_structured_output;
    let messages = extraction_messages(episode, known, native)?;
    let schema = schema()?;
    let generation = Generation::new().temperature(0.0);
    let run_id = format!("{}:memory", episode.run_id);
    let request = ModelRequest {
        messages: &messages,
        tools: &[],
        generation: &generation,
        output_schema: native.then(|| schema.schema()),
        run_id: &run_id,
        user_id: Some(user_id),
        turn: 1,
    };
    let mut stream = model.stream(&request).await.map_err(Error::Model)?;
    let mut assembler = ResponseAssembler::new();
    while let Some(chunk) = stream.next().await {
        assembler.push(chunk.map_err(Error::Model)?);
    }
    let response = assembler.finish(1).map_err(Error::Model)?;
    let value = schema
        .parse(&response.text)
        .map_err(|e| Error::Config(format!("memory extraction: the model's answer does not match the schema: {e}")))?;
    let answer: Answer = serde_json::from_value(value)
        .map_err(|e| Error::Config(format!("memory extraction: unreadable answer: {e}")))?;
    Ok(answer
        .facts
        .into_iter()
        .filter(|f| !f.statement.trim().is_empty())
        .map(|mut f| {
            f.source_run = Some(episode.run_id.clone());
            f
        })
        .collect())
}
