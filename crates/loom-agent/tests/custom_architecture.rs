//! A custom architecture written with the public API only: `Architecture`, `RunCx` and
//! `ModelCall` from `loom_agent::architecture`. "Draft, vote, decide": the model drafts an answer
//! with tools, a vote between the draft and a second opinion is taken as structured output kept
//! out of the conversation, a tool is called by the architecture itself, an event and an artifact
//! are added, and the winner is the answer. The run keeps every guarantee: events, the journal
//! (a resume replays it), budget and permissions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use loom_agent::architecture::{Architecture, ModelCall, RunCx};
use loom_agent::event::{CritiqueEvent, EventKind};
use loom_agent::governance::StandardBudget;
use loom_agent::message::{Message, ToolCall};
use loom_agent::model::ScriptedTurn;
use loom_agent::output::OutputSchema;
use loom_agent::store::InMemoryJournal;
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, Artifact, RunError, RunErrorKind, RunState};
use serde_json::json;

/// Draft with tools, get a second opinion, vote, log the winner with a tool.
struct DraftAndVote;

#[async_trait::async_trait]
impl Architecture for DraftAndVote {
    fn name(&self) -> &str {
        "draft_and_vote"
    }

    async fn run(&self, cx: &mut RunCx) -> Result<String, RunError> {
        // 1. A draft: the ReAct loop, written out.
        let draft = loop {
            cx.check_max_turns()?;
            let response = cx.model_turn().await?;
            if response.tool_calls.is_empty() {
                break response.text;
            }
            cx.run_tools(&response.tool_calls).await?;
        };
        // 2. A second opinion, without tools, not added to the conversation.
        cx.check_max_turns()?;
        let second = cx
            .model_call(
                ModelCall::new()
                    .message(Message::user("Give a different answer to the request."))
                    .without_tools()
                    .discard_answer(),
            )
            .await?
            .text;
        // 3. A vote as structured output.
        let schema = OutputSchema::new(
            "Vote",
            json!({"type": "object", "properties": {"winner": {"enum": [1, 2]}}, "required": ["winner"]}),
        )
        .map_err(|e| RunError::new(RunErrorKind::Internal, e.to_string()))?;
        cx.check_max_turns()?;
        let prompt = format!("Which answer is better? 1: {draft}\n2: {second}");
        let vote = cx
            .model_call(
                ModelCall::new()
                    .prompt(vec![Message::user(prompt)])
                    .without_tools()
                    .output_schema(schema.clone())
                    .discard_answer(),
            )
            .await?;
        let winner = schema
            .parse(&vote.text)
            .map_err(|e| RunError::new(RunErrorKind::Model, format!("the vote is not usable: {e}")))?;
        let answer = if winner["winner"] == 2 { second } else { draft };
        // 4. A tool call the architecture makes itself, an event and an artifact.
        let logged = cx
            .call_tools(&[ToolCall {
                id: format!("vote_{}", cx.turn()),
                name: "record".into(),
                arguments: json!({"x": answer}).to_string(),
            }])
            .await?;
        cx.emit(EventKind::Critique(CritiqueEvent {
            round: 1,
            passed: true,
            score: None,
            feedback: format!("winner {} ({})", winner["winner"], logged[0].content),
        }));
        cx.add_artifact(Artifact {
            id: "vote".into(),
            name: "vote".into(),
            media_type: "application/json".into(),
            content: winner.to_string(),
            call_id: None,
        });
        cx.messages.push(Message::assistant(answer.clone()));
        Ok(answer)
    }
}

fn script() -> Vec<ScriptedTurn> {
    vec![
        ScriptedTurn::tool_call("lookup", json!({"x": "facts"})),
        ScriptedTurn::text("draft answer"),
        ScriptedTurn::text("other answer"),
        ScriptedTurn::text(r#"{"winner": 2}"#),
    ]
}

fn counting(name: &str, runs: Arc<AtomicUsize>) -> FunctionTool {
    let label = name.to_string();
    FunctionTool::new(name, "Echo x.", x_schema(), move |_ctx, args| {
        let (label, runs) = (label.clone(), runs.clone());
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(ToolOutput::text(format!("{label}:{}", args["x"].as_str().unwrap_or_default())))
        }
    })
}

#[tokio::test]
async fn a_custom_architecture_drives_the_run_through_the_public_api() {
    let (recorder, model) = scripted(script());
    let runs = Arc::new(AtomicUsize::new(0));
    let agent = Agent::builder()
        .model(model)
        .tool(echo_tool("lookup"))
        .tool(counting("record", runs.clone()))
        .architecture(DraftAndVote)
        .build()
        .unwrap();
    assert!(format!("{agent:?}").contains("draft_and_vote"));
    let run = agent.start("answer me");
    let result = run.result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "other answer");
    let reqs = recorder.requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[0].tools.len(), 2);
    assert_eq!(last_user_text(&reqs[2].messages), "Give a different answer to the request.");
    assert!(reqs[2].tools.is_empty());
    // The vote's own prompt, with the schema as an instruction; none of the conversation.
    assert_eq!(reqs[3].messages.len(), 1);
    let vote_prompt = reqs[3].messages[0].text();
    assert!(vote_prompt.starts_with("Which answer is better? 1: draft answer\n2: other answer"), "{vote_prompt}");
    assert!(vote_prompt.contains("Structured output required"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(tool_call_ids(&result.events), ["call_1_0", "vote_4"]);
    assert_eq!(
        types(&result.events).iter().filter(|t| ["critique", "artifact.created"].contains(t)).collect::<Vec<_>>(),
        [&"critique", &"artifact.created"]
    );
    assert_eq!(result.artifacts[0].content, r#"{"winner":2}"#);
    // The conversation: the request, the draft with its tool call and result, the answer.
    let kept: Vec<String> = run.transcript().messages.iter().map(Message::text).collect();
    assert_eq!(kept.first().unwrap(), "answer me");
    assert_eq!(kept.last().unwrap(), "other answer");
    assert!(!kept.iter().any(|m| m.contains("winner")), "{kept:?}");
}

#[tokio::test]
async fn a_custom_architecture_is_budgeted_and_journaled() {
    // The budget stops it before its third model call.
    let (recorder, model) = scripted(script());
    let agent = Agent::builder()
        .model(model)
        .tool(echo_tool("lookup"))
        .tool(echo_tool("record"))
        .budget(StandardBudget::new().max_turns(2))
        .architecture(DraftAndVote)
        .build()
        .unwrap();
    let result = agent.start("answer me").result().await;
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.error.unwrap().kind, RunErrorKind::Budget);
    assert_eq!(recorder.requests().len(), 2);

    // Journaled: every model call and tool call is an entry, in order.
    let journal = Arc::new(InMemoryJournal::new());
    let (_, model) = scripted(script());
    let agent = Agent::builder()
        .model(model)
        .tool(echo_tool("lookup"))
        .tool(echo_tool("record"))
        .journal(loom_agent::store::JournalSlot { journal: journal.clone(), session_store: None })
        .architecture(DraftAndVote)
        .build()
        .unwrap();
    let result = agent.run("answer me").await.unwrap();
    let stored = loom_agent::store::Journal::load(journal.as_ref(), &result.run_id).await.unwrap().unwrap();
    let kinds: Vec<&str> = stored.entries.iter().map(|e| e.type_name()).collect();
    assert_eq!(
        kinds,
        [
            "model_result",
            "tool_intent",
            "tool_result",
            "model_result",
            "model_result",
            "model_result",
            "tool_intent",
            "tool_result"
        ]
    );
    assert_eq!(stored.events, result.events.to_vec());
}
