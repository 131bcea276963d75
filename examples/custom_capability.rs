//! A custom capability through the `Capability` trait: a name, tools and instructions, taken by an
//! agent as one unit with `.capability(…)`.
//!
//! `Notes` gives the model a small notebook: `save_note` and `read_notes`, two tools sharing one
//! list. The capability value is cheap to clone and every clone shares the list, so the program
//! keeps one to look at the notes after the run. Its instructions are appended to the agent's when
//! the agent is built, and the example prints the system message the model received.
//!
//! The trait has two more methods with defaults: `hooks()` (hooks around the capability's tools,
//! as the skills capability uses) and `tool_source()` (tools that change while the agent lives,
//! as an MCP server's do).

use std::sync::{Arc, Mutex};

use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::tool::{FunctionTool, parse_arguments};
use serde::Deserialize;
use serde_json::json;

/// A notebook the model can write to and read from.
#[derive(Clone, Default)]
struct Notes {
    notes: Arc<Mutex<Vec<Note>>>,
}

/// One note.
#[derive(Clone, Debug, Deserialize)]
struct Note {
    title: String,
    text: String,
}

/// The arguments of `read_notes`.
#[derive(Deserialize)]
struct ReadNotes {
    #[serde(default)]
    containing: Option<String>,
}

impl Notes {
    /// Every note so far.
    fn all(&self) -> Vec<Note> {
        self.notes.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl capability::Capability for Notes {
    fn name(&self) -> &str {
        "notes"
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        let (for_save, for_read) = (self.notes.clone(), self.notes.clone());
        let save = FunctionTool::new(
            "save_note",
            "Save a note with a title.",
            json!({
                "type": "object",
                "properties": {"title": {"type": "string"}, "text": {"type": "string"}},
                "required": ["title", "text"],
                "additionalProperties": false
            }),
            move |_ctx, args| {
                let notes = for_save.clone();
                async move {
                    let note: Note = parse_arguments("save_note", args)?;
                    let mut notes = notes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let answer = format!("saved note {} `{}`", notes.len() + 1, note.title);
                    notes.push(note);
                    Ok(ToolOutput::text(answer))
                }
            },
        );
        let read = FunctionTool::new(
            "read_notes",
            "Read the saved notes, optionally only those whose title or text contains a word.",
            json!({
                "type": "object",
                "properties": {"containing": {"type": "string"}},
                "additionalProperties": false
            }),
            move |_ctx, args| {
                let notes = for_read.clone();
                async move {
                    let ReadNotes { containing } = parse_arguments("read_notes", args)?;
                    let notes = notes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    let lines: Vec<String> = notes
                        .iter()
                        .filter(|n| containing.as_deref().is_none_or(|w| n.title.contains(w) || n.text.contains(w)))
                        .map(|n| format!("- {}: {}", n.title, n.text))
                        .collect();
                    Ok(ToolOutput::text(if lines.is_empty() { "no notes".to_string() } else { lines.join("\n") }))
                }
            },
        )
        .read_only()
        .concurrency_safe();
        vec![Arc::new(save), Arc::new(read)]
    }

    fn instructions(&self) -> Option<String> {
        Some(
            "You have a notebook: save_note keeps a note for later, read_notes reads them back. \
             Save what the user asks you to remember."
                .into(),
        )
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let notes = Notes::default();
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::tool_call("save_note", json!({"title": "standup", "text": "moved to 10:30"}))
            .with_tool_call("save_note", json!({"title": "release", "text": "tag v0.3 on Friday"})),
        ScriptedTurn::tool_call("read_notes", json!({"containing": "release"})),
        ScriptedTurn::text("Noted both; the release note says: tag v0.3 on Friday."),
    ]));
    let agent = Agent::builder()
        .model(model.clone() as Arc<dyn LanguageModel>)
        .instructions("You are a personal assistant.")
        .capability(notes.clone())
        .build()?;
    let specs = agent.tools();
    let tools: Vec<&str> = specs.iter().map(|t| t.name.as_str()).collect();
    println!("tools: {tools:?}");

    let result =
        agent.run("Remember: standup moved to 10:30, and we tag v0.3 on Friday. What was the release plan?").await?;
    for event in result.events.iter() {
        if let EventKind::ToolResult(r) = &event.kind {
            println!("tool.result {:<10} {:?}", r.name, r.output);
        }
    }
    println!("answer ({}): {}", result.state, result.output);

    // The capability's instructions, appended to the agent's.
    if let Some(system) = model.requests().first().and_then(|r| r.messages.first().map(|m| m.text())) {
        println!("\nsystem message:\n{system}");
    }
    // The program's clone shares the notebook with the tools.
    println!("\nnotes kept: {:?}", notes.all());
    Ok(())
}
