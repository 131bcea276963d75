//! The criteria gate, run profiles, steering and image input, through the public API with a
//! scripted model (and the provider mocks for images).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use loom_agent::event::EventKind;
use loom_agent::governance::StandardBudget;
use loom_agent::message::{ContentPart, Message, Usage};
use loom_agent::model::{Model, ScriptedTurn};
use loom_agent::store::{InMemoryJournal, Journal, JournalEntry};
use loom_agent::{Agent, CriteriaGate, RunErrorKind, RunRequest, RunState, Runtime, RuntimeTask};
use loom_testkit::{MockServer, Reply};
use serde_json::json;

fn verdict(passed: &[(bool, &str)]) -> ScriptedTurn {
    let verdicts: Vec<_> = passed
        .iter()
        .enumerate()
        .map(|(i, (p, reason))| json!({"criterion": i + 1, "passed": p, "reason": reason}))
        .collect();
    ScriptedTurn::text(json!({ "verdicts": verdicts }).to_string())
}

fn criteria_events(result: &loom_agent::RunResult) -> Vec<(u32, bool)> {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CriteriaChecked(c) => Some((c.round, c.passed)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_gate_that_fails_twice_then_passes_completes_with_every_verdict() {
    let (model, shared) = scripted([
        ScriptedTurn::text("draft 1"),
        verdict(&[(false, "no tests mentioned"), (true, "ok")]),
        ScriptedTurn::text("draft 2"),
        verdict(&[(false, "tests still missing"), (true, "ok")]),
        ScriptedTurn::text("final: tests pass, docs updated"),
        verdict(&[(true, "tests pass"), (true, "docs updated")]),
    ]);
    let agent =
        Agent::builder().model(shared).runtime(Runtime::long_running(["tests pass", "docs updated"])).build().unwrap();
    let result = agent.run("Fix the bug").await.unwrap();
    assert_eq!(result.output, "final: tests pass, docs updated");
    assert_eq!(criteria_events(&result), vec![(1, false), (2, false), (3, true)]);
    assert_eq!(result.criteria.len(), 2);
    assert!(result.criteria.iter().all(|v| v.passed));
    assert_eq!(result.criteria[0].reason, "tests pass");
    assert_eq!(result.turns, 3, "judge calls are not turns");

    let requests = model.requests();
    assert_eq!(requests.len(), 6);
    // The judge's request: its instructions (with the verdict schema, the scripted model has no
    // native structured output), then the task, the answer and the numbered criteria. No tools.
    let judge = &requests[1];
    assert_eq!(judge.messages.len(), 2);
    let Message::System { content: system } = &judge.messages[0] else { panic!("{:?}", judge.messages[0]) };
    assert!(system.starts_with("You are a strict reviewer."), "{system}");
    assert!(system.contains("\"verdicts\""), "the schema directive: {system}");
    assert_eq!(
        judge.messages[1].text(),
        "Task:\nFix the bug\n\nAnswer:\ndraft 1\n\nAcceptance criteria:\n1. tests pass\n2. docs updated"
    );
    assert!(judge.tools.is_empty());
    // The failed criterion goes back to the model as feedback, after its answer.
    let second = &requests[2];
    let feedback = second.messages.last().unwrap().text();
    assert!(feedback.contains("- tests pass: no tests mentioned"), "{feedback}");
    assert!(!feedback.contains("docs updated"), "only failed criteria: {feedback}");
    assert_eq!(second.messages[second.messages.len() - 2], Message::assistant("draft 1"));
    assert!(requests[4].messages.last().unwrap().text().contains("tests still missing"));
}

#[tokio::test]
async fn the_round_limit_interrupts_with_the_failed_criteria_or_completes_as_best_effort() {
    let turns = || {
        [
            ScriptedTurn::text("a1"),
            verdict(&[(false, "no"), (true, "yes")]),
            ScriptedTurn::text("a2"),
            verdict(&[(false, "still no"), (true, "yes")]),
        ]
    };
    let runtime = Runtime::builder("strict").criteria(["cites sources", "is short"]).criteria_rounds(2).build();
    let (model, shared) = scripted(turns());
    let agent = Agent::builder().model(shared).runtime(runtime.clone()).build().unwrap();
    let result = agent.start("q").result().await;
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.interruption_reason(), Some("criteria: cites sources"));
    assert_eq!(result.error.as_ref().unwrap().kind, RunErrorKind::Criteria);
    assert_eq!(result.output, "a2", "the last answer is kept");
    assert_eq!(criteria_events(&result), vec![(1, false), (2, false)]);
    assert!(!result.criteria[0].passed && result.criteria[1].passed);
    assert_eq!(model.remaining(), 0);
    assert!(matches!(result.events.last().unwrap().kind, EventKind::RunInterrupted(_)));

    let (_, shared) = scripted(turns());
    let best_effort =
        Runtime::builder("lenient").criteria(["cites sources", "is short"]).criteria_rounds(2).best_effort();
    let agent = Agent::builder().model(shared).runtime(best_effort.build()).build().unwrap();
    let result = agent.run("q").await.unwrap();
    assert_eq!(result.output, "a2");
    assert_eq!(result.criteria[0].reason, "still no");
    assert!(!result.criteria[0].passed);
}

#[tokio::test]
async fn a_budget_reached_during_the_gate_stops_the_run_before_the_judge_is_called() {
    let usage = Usage { input_tokens: 60, output_tokens: 60, ..Usage::default() };
    let (model, shared) = scripted([ScriptedTurn::text("answer").with_usage(usage), verdict(&[(true, "ok")])]);
    let agent = Agent::builder()
        .model(shared)
        .runtime(Runtime::long_running(["is correct"]))
        .budget(StandardBudget::new().max_tokens(100))
        .build()
        .unwrap();
    let result = agent.start("q").result().await;
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.interruption_reason(), Some("budget: max_tokens"));
    assert_eq!(model.requests().len(), 1, "the judge was not called");
    assert!(criteria_events(&result).is_empty());
    assert!(result.criteria.is_empty());
}

#[tokio::test]
async fn a_tasks_own_criteria_are_judged_by_the_profiles_gate_and_a_judge_model_can_be_separate() {
    let (model, shared) = scripted([ScriptedTurn::text("done")]);
    let (judge, judge_shared) = scripted([verdict(&[(true, "a"), (true, "b")])]);
    let agent = Agent::builder()
        .model(shared)
        .judge(judge_shared)
        .runtime(Runtime::long_running(["profile criterion"]))
        .build()
        .unwrap();
    let task = RuntimeTask::new("Ship it").criterion("task criterion");
    let result = agent.run(task).await.unwrap();
    assert_eq!(model.requests().len(), 1);
    let asked = judge.requests()[0].messages[1].text();
    assert!(asked.ends_with("Acceptance criteria:\n1. profile criterion\n2. task criterion"), "{asked}");
    assert_eq!(
        result.criteria.iter().map(|v| v.criterion.as_str()).collect::<Vec<_>>(),
        ["profile criterion", "task criterion"]
    );

    // Under the sdk profile the gate is off: criteria stay in the prompt, nothing is judged.
    let (model, shared) = scripted([ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let result = agent.run(RuntimeTask::new("Ship it").criterion("c")).await.unwrap();
    assert!(result.criteria.is_empty());
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test]
async fn a_judge_answer_that_is_not_a_verdict_fails_the_run_honestly() {
    let (_, shared) = scripted([ScriptedTurn::text("answer"), ScriptedTurn::text("looks fine to me")]);
    let agent = Agent::builder().model(shared).runtime(Runtime::long_running(["c"])).build().unwrap();
    let result = agent.start("q").result().await;
    assert_eq!(result.state, RunState::Failed);
    assert_eq!(result.error.as_ref().unwrap().kind, RunErrorKind::Model);
    assert!(result.error.as_ref().unwrap().message.contains("not a valid verdict"));
}

#[tokio::test]
async fn a_journaled_run_records_each_round_and_a_resume_does_not_judge_it_again() {
    let journal = Arc::new(InMemoryJournal::new());
    // Round 1 fails; the process "dies" (its runtime is shut down, nothing more is written) while
    // the second answer is being produced, leaving the run to resume with round 1 journaled.
    let first = journal.clone();
    let run_id = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let run_id = rt.block_on(async move {
            let (_, shared) = scripted([
                ScriptedTurn::text("a1"),
                verdict(&[(false, "no")]),
                ScriptedTurn::text("a2").with_delay(Duration::from_secs(30)),
            ]);
            let agent = Agent::builder()
                .model(shared)
                .journal(first.clone())
                .lease_ttl(Duration::from_millis(100))
                .runtime(Runtime::long_running(["c"]))
                .build()
                .unwrap();
            let run = agent.start("q");
            let run_id = run.id().to_string();
            within(10, "round 1 is journaled", async {
                loop {
                    let loaded = first.load(&run_id).await.unwrap();
                    if loaded
                        .is_some_and(|r| r.entries.iter().any(|e| matches!(e, JournalEntry::CriteriaChecked { .. })))
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            run_id
        });
        rt.shutdown_background();
        run_id
    })
    .join()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;

    let (model, shared) = scripted([ScriptedTurn::text("a2"), verdict(&[(true, "yes")])]);
    let agent =
        Agent::builder().model(shared).journal(journal.clone()).runtime(Runtime::long_running(["c"])).build().unwrap();
    let resumed = agent.resume(&run_id).await.unwrap();
    let result = resumed.result().await;
    assert_eq!(result.state, RunState::Completed, "{:?}", result.error);
    assert_eq!(result.output, "a2");
    // Only the new round was judged: the resumed model saw the second answer's call and one judge call.
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].messages.last().unwrap().text().contains("- c: no"), "the round-1 feedback was replayed");
    let rounds = criteria_events(&result);
    assert_eq!(rounds.last(), Some(&(2, true)));
}

#[tokio::test]
async fn steering_adds_a_user_message_the_model_sees_next_turn_without_cancelling() {
    let journal = Arc::new(InMemoryJournal::new());
    let (model, shared) = scripted([
        ScriptedTurn::text("first answer").with_delay(Duration::from_millis(300)),
        ScriptedTurn::text("second answer"),
    ]);
    let agent = Agent::builder().model(shared).journal(journal.clone()).build().unwrap();
    let run = agent.start("write a poem");
    wait_for(&run, "model.request").await;
    run.steer("make it about the sea").unwrap();
    let result = run.result().await;
    assert_eq!(result.state, RunState::Completed);
    assert_eq!(result.output, "second answer", "the final answer came after the steer");
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let last_two = &requests[1].messages[requests[1].messages.len() - 2..];
    assert_eq!(last_two, &[Message::assistant("first answer"), Message::user("make it about the sea")]);
    let steered: Vec<_> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RunSteered(s) => Some((s.turn, s.text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(steered, vec![(2, "make it about the sea".to_string())]);
    let entries = journal.load(run.id()).await.unwrap().unwrap().entries;
    assert!(
        entries.iter().any(|e| matches!(e, JournalEntry::Steered { turn: 2, text } if text == "make it about the sea"))
    );
    assert!(run.steer("too late").is_err(), "a finished run takes no steering");
}

#[tokio::test]
async fn supervised_asks_for_every_tool_that_is_not_read_only() {
    let (_, shared) = scripted([
        ScriptedTurn::tool_call("write", json!({})).with_tool_call("read", json!({})),
        ScriptedTurn::text("done"),
    ]);
    let write =
        loom_agent::tool::FunctionTool::new("write", "writes", json!({"type": "object"}), |_ctx, _args| async {
            Ok(loom_agent::tool::ToolOutput::text("wrote"))
        });
    let read = loom_agent::tool::FunctionTool::new("read", "reads", json!({"type": "object"}), |_ctx, _args| async {
        Ok(loom_agent::tool::ToolOutput::text("read"))
    })
    .flags(loom_agent::tool::ToolFlags::new().read_only());
    let agent = Agent::builder().model(shared).tool(write).tool(read).runtime(Runtime::supervised()).build().unwrap();
    assert_eq!(agent.max_turns(), 80);
    let result = agent.run("go").await.unwrap();
    let results: Vec<_> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolResult(r) => Some((r.name.clone(), r.is_error)),
            _ => None,
        })
        .collect();
    assert!(results.contains(&("write".to_string(), true)), "no approver: denied {results:?}");
    assert!(results.contains(&("read".to_string(), false)), "read-only runs {results:?}");
}

#[tokio::test]
async fn images_reach_each_provider_through_run_request() {
    let png = [0x89u8, b'P', b'N', b'G'];
    let request = || {
        RunRequest::new("What is this?")
            .image(ContentPart::image_bytes(&png, "image/png"))
            .image(ContentPart::image_url("https://example.com/cat.jpg", Some("image/jpeg".into())))
    };

    let server = MockServer::start().await;
    server.enqueue(Reply::sse(loom_testkit::wire::openai::text_stream("a cat")));
    let agent = Agent::builder().model(Model::openai("gpt-4o").base_url(server.url()).api_key("k")).build().unwrap();
    let result = agent.run(request()).await.unwrap();
    assert_eq!(result.output, "a cat");
    let body = server.requests()[0].json();
    let content = body["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert_eq!(
        content,
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw=="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
        ])
    );

    let server = MockServer::start().await;
    server.enqueue(Reply::sse(loom_testkit::wire::anthropic::text_stream("a cat", 10, 2)));
    let model = Model::anthropic("claude-sonnet-4-5").base_url(server.url()).api_key("k");
    let agent = Agent::builder().model(model).build().unwrap();
    agent.run(request()).await.unwrap();
    let body = server.requests()[0].json();
    let content = body["messages"][0]["content"].clone();
    assert_eq!(content[0], json!({"type": "text", "text": "What is this?"}));
    assert_eq!(
        content[1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}})
    );
    assert_eq!(content[2]["source"], json!({"type": "url", "url": "https://example.com/cat.jpg"}));
    assert_eq!(content[2]["type"], "image");

    let server = MockServer::start().await;
    server.enqueue(Reply::sse(loom_testkit::wire::gemini::text_stream("a cat", 10, 2)));
    let model = Model::gemini("gemini-2.5-flash").base_url(server.url()).api_key("k");
    let agent = Agent::builder().model(model).build().unwrap();
    agent.run(request()).await.unwrap();
    let body = server.requests()[0].json();
    let parts = body["contents"][0]["parts"].clone();
    assert_eq!(parts[0], json!({"text": "What is this?"}));
    assert_eq!(parts[1], json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}}));
    assert_eq!(parts[2]["fileData"]["fileUri"], "https://example.com/cat.jpg");

    // The input keeps its parts through the run's record.
    let (_, shared) = scripted([ScriptedTurn::text("ok")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let result = agent.run(request()).await.unwrap();
    let started = result.events.iter().find_map(|e| match &e.kind {
        EventKind::RunStarted(s) => Some(s.input.clone()),
        _ => None,
    });
    assert!(matches!(started, Some(loom_agent::RunInput::Parts(p)) if p.len() == 3));
}

#[test]
fn profiles_document_their_effects_in_their_values() {
    let sdk = Runtime::sdk();
    assert!(!sdk.gate.enabled && !sdk.context.enabled && sdk.max_turns == 32);
    let long = Runtime::long_running(["x"]);
    assert_eq!(long.gate, CriteriaGate::rounds(3));
    assert!(long.context.enabled && (long.context.threshold - 0.8).abs() < 1e-6);
    let supervised = Runtime::supervised();
    assert_eq!(supervised.approval, loom_agent::ApprovalRule::EveryNonReadOnly);
    let custom = Runtime::builder("c").timeout(Duration::from_secs(5)).build();
    let agent = Agent::builder().model("echo").runtime(custom).build().unwrap();
    assert!(format!("{agent:?}").contains("timeout: Some(5s)"));
}
