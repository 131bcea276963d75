//! What the model receives: instructions, run context, tasks, runtime criteria, tools, generation
//! settings, and tool results fed back in call order.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use loom_agent::capability::Capability;
use loom_agent::governance::Scope;
use loom_agent::message::{Message, ToolCall};
use loom_agent::model::{ModelCapabilities, ScriptedModel, ScriptedTurn};
use loom_agent::store::{Memory, Recalled};
use loom_agent::tool::{Tool, ToolFlags, ToolSpec};
use loom_agent::{
    Agent, Generation, KnowledgeItem, RunContext, RunInput, RunRequest, Runtime, RuntimeTask, SessionConfig, Transcript,
};
use serde_json::json;

#[tokio::test]
async fn instructions_are_sent_once_as_the_first_message_and_the_prompt_last() {
    let (model, shared) = scripted([ScriptedTurn::text("hi")]);
    let agent = Agent::builder().instructions("  You are terse.  ").model(shared).build().unwrap();
    assert_eq!(agent.instructions(), "You are terse.");
    agent.run(RunRequest::new("hello").user("u1")).await.unwrap();
    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.messages, vec![Message::system("You are terse."), Message::user("hello")]);
    assert_eq!(r.turn, 1);
    assert_eq!(r.user_id.as_deref(), Some("u1"));
    assert!(r.run_id.starts_with("run_"));
    assert_eq!(r.output_schema, None);
}

#[tokio::test]
async fn no_instructions_means_no_system_message() {
    let (model, shared) = scripted([ScriptedTurn::text("hi")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    agent.run("hello").await.unwrap();
    assert_eq!(model.requests()[0].messages, vec![Message::user("hello")]);
}

#[tokio::test]
async fn run_context_is_rendered_as_documented_after_the_instructions() {
    let (model, shared) = scripted([ScriptedTurn::text("ok")]);
    let agent = Agent::builder().instructions("Sys.").model(shared).build().unwrap();
    let context = RunContext::new()
        .input("repo", json!("loom-agent"))
        .input("files", json!(["a.rs", "b.rs"]))
        .knowledge(KnowledgeItem {
            source: "wiki".into(),
            title: Some("Sessions".into()),
            content: "Runs in a session are serialized.".into(),
            uri: Some("https://wiki/s".into()),
            score: Some(0.9),
        })
        .knowledge(KnowledgeItem { source: "notes".into(), content: "No title here.".into(), ..Default::default() })
        .extension("trace_id", json!("t-123"));
    agent.run(RunRequest::new("Explain.").context(context.clone())).await.unwrap();
    let messages = &model.requests()[0].messages;
    let expected = "Context for this run.\n\n\
                    Inputs (JSON):\n{\n  \"files\": [\n    \"a.rs\",\n    \"b.rs\"\n  ],\n  \"repo\": \"loom-agent\"\n}\n\n\
                    Knowledge (cite it by the numbers in brackets, such as [1]):\n\
                    [1] Sessions (wiki, https://wiki/s)\nRuns in a session are serialized.\n\
                    [2] untitled (notes)\nNo title here.";
    assert_eq!(messages, &vec![Message::system("Sys."), Message::system(expected), Message::user("Explain.")]);
    assert_eq!(context.to_message(), Some(Message::system(expected)));
    for m in messages {
        assert!(!m.text().contains("t-123"), "extensions are never sent to the model");
    }
}

#[tokio::test]
async fn context_with_only_extensions_sends_no_context_message() {
    let (model, shared) = scripted([ScriptedTurn::text("ok")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let context = RunContext::new().extension("tenant", json!("acme"));
    assert!(context.is_empty_for_model());
    let result = agent.run(RunRequest::new("q").context(context.clone())).await.unwrap();
    assert_eq!(model.requests()[0].messages, vec![Message::user("q")]);
    // The context is still kept with the run.
    let session = agent.session(SessionConfig::new(result.session_id.clone()));
    let run = session.get_run(&result.run_id).await.unwrap().unwrap();
    assert_eq!(run.transcript().context, context);
}

#[tokio::test]
async fn runtime_task_renders_goal_input_and_criteria_but_never_metadata() {
    let (model, shared) = scripted([ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let task = RuntimeTask::new("Refactor the tool-call path")
        .input(json!({"providers": ["openai", "anthropic"]}))
        .criterion("round-trip works")
        .criterion("no new warnings")
        .metadata("ticket", json!("SECRET-4711"));
    let result = agent.run(task.clone()).await.unwrap();
    let messages = &model.requests()[0].messages;
    let expected = "Refactor the tool-call path\n\n\
                    Input:\n{\n  \"providers\": [\n    \"openai\",\n    \"anthropic\"\n  ]\n}\n\n\
                    Acceptance criteria:\n- round-trip works\n- no new warnings";
    assert_eq!(messages, &vec![Message::user(expected)]);
    assert_eq!(RunInput::Task(task.clone()).to_message(), Message::user(expected));
    let all = serde_json::to_string(&model.requests()).unwrap();
    assert!(!all.contains("SECRET-4711") && !all.contains("ticket"), "task metadata reached the model");
    // ...but it is kept with the run.
    let loom_agent::event::EventKind::RunStarted(started) = &result.events[0].kind else { panic!() };
    assert_eq!(started.input, RunInput::Task(task));
}

#[tokio::test]
async fn a_bare_task_is_just_its_goal() {
    let (model, shared) = scripted([ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    agent.run(RuntimeTask::new("Only the goal")).await.unwrap();
    assert_eq!(model.requests()[0].messages, vec![Message::user("Only the goal")]);
}

#[tokio::test]
async fn runtime_profile_criteria_reach_the_system_message() {
    // long_running judges the answer too: the second scripted turn is the judge's verdict.
    let verdict = r#"{"verdicts": [{"criterion": 1, "passed": true, "reason": "ok"}, {"criterion": 2, "passed": true, "reason": "ok"}]}"#;
    let (model, shared) = scripted([ScriptedTurn::text("done"), ScriptedTurn::text(verdict)]);
    let agent = Agent::builder()
        .instructions("You are a coder.")
        .model(shared)
        .runtime(Runtime::long_running(["tests pass", "docs updated"]))
        .build()
        .unwrap();
    assert_eq!(agent.max_turns(), 128);
    assert_eq!(agent.runtime().name, "long_running");
    agent.run("work").await.unwrap();
    let expected = "You are a coder.\n\nAcceptance criteria for every answer:\n- tests pass\n- docs updated";
    assert_eq!(agent.instructions(), expected);
    assert_eq!(model.requests()[0].messages, vec![Message::system(expected), Message::user("work")]);

    let supervised =
        Agent::builder().model("echo").runtime(Runtime::supervised().with_criteria(["be safe"])).build().unwrap();
    assert_eq!(supervised.max_turns(), 80);
    assert_eq!(supervised.instructions(), "Acceptance criteria for every answer:\n- be safe");
    let explicit =
        Agent::builder().model("echo").runtime(Runtime::sdk().with_max_turns(5)).max_turns(7).build().unwrap();
    assert_eq!(explicit.max_turns(), 7);
    assert_eq!(Agent::builder().model("echo").build().unwrap().max_turns(), 32);
}

struct Notes;

impl Capability for Notes {
    fn name(&self) -> &str {
        "notes"
    }
    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        vec![Arc::new(echo_tool("note"))]
    }
    fn instructions(&self) -> Option<String> {
        Some("  Use `note` to take notes.  ".into())
    }
}

#[tokio::test]
async fn capabilities_add_tools_and_instructions_before_the_criteria() {
    let verdict = r#"{"verdicts": [{"criterion": 1, "passed": true, "reason": "ok"}]}"#;
    let (model, shared) = scripted([ScriptedTurn::text("done"), ScriptedTurn::text(verdict)]);
    let agent = Agent::builder()
        .instructions("Base.")
        .model(shared)
        .capability(Notes)
        .runtime(Runtime::long_running(["c"]))
        .build()
        .unwrap();
    agent.run("x").await.unwrap();
    let r = &model.requests()[0];
    assert_eq!(
        r.messages[0],
        Message::system("Base.\n\nUse `note` to take notes.\n\nAcceptance criteria for every answer:\n- c")
    );
    assert_eq!(r.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["note"]);
}

#[tokio::test]
async fn tools_are_offered_with_name_description_schema_and_flags() {
    let (model, shared) = scripted([ScriptedTurn::text("done")]);
    let danger = loom_agent::tool::FunctionTool::new(
        "wipe",
        "Wipe everything.",
        json!({"type": "object", "properties": {}}),
        |_c, _a| async { Ok(loom_agent::ToolOutput::text("")) },
    )
    .destructive();
    let agent = Agent::builder()
        .model(shared)
        .tool(echo_tool("lookup").read_only().concurrency_safe())
        .tool(danger)
        .build()
        .unwrap();
    agent.run("x").await.unwrap();
    let tools = &model.requests()[0].tools;
    assert_eq!(
        tools,
        &vec![
            ToolSpec {
                name: "lookup".into(),
                description: "Echo x (lookup).".into(),
                parameters: x_schema(),
                flags: ToolFlags::new().read_only().concurrency_safe(),
            },
            ToolSpec {
                name: "wipe".into(),
                description: "Wipe everything.".into(),
                parameters: json!({"type": "object", "properties": {}}),
                flags: ToolFlags::new().destructive(),
            },
        ]
    );
    assert_eq!(&agent.tools()[..], &tools[..]);
}

#[tokio::test]
async fn models_without_tool_support_are_offered_no_tools() {
    let caps = ModelCapabilities { tools: false, ..ModelCapabilities::default() };
    let (model, shared) = share(ScriptedModel::new([ScriptedTurn::text("done")]).with_capabilities(caps));
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).build().unwrap();
    let result = agent.run("x").await.unwrap();
    assert!(model.requests()[0].tools.is_empty());
    let loom_agent::event::EventKind::ModelRequest(req) = &result.events[1].kind else { panic!() };
    assert_eq!(req.tools, 0);
}

#[tokio::test]
async fn generation_settings_are_passed_on_every_call() {
    let (model, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "1"})), ScriptedTurn::text("done")]);
    let generation = Generation::new()
        .temperature(0.25)
        .max_output_tokens(321)
        .top_p(0.5)
        .stop("END")
        .seed(7)
        .extension("reasoning_effort", json!("low"));
    let agent =
        Agent::builder().model(shared).tool(echo_tool("lookup")).generation(generation.clone()).build().unwrap();
    agent.run("x").await.unwrap();
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.generation, generation);
    }
    assert_eq!(requests.iter().map(|r| r.turn).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(requests[0].run_id, requests[1].run_id);
}

#[tokio::test]
async fn tool_results_are_fed_back_in_call_order_with_is_error() {
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("lookup", json!({"x": "a"}))
            .with_tool_call("nope", json!({}))
            .with_tool_call("lookup", json!({"x": 5}))
            .with_tool_call("lookup", json!({"x": "d"})),
        ScriptedTurn::text("done"),
    ]);
    let agent = Agent::builder().instructions("Sys.").model(shared).tool(echo_tool("lookup")).build().unwrap();
    agent.run("q").await.unwrap();
    let requests = model.requests();
    let second = &requests[1].messages;
    let calls = vec![
        ToolCall { id: "call_1_0".into(), name: "lookup".into(), arguments: r#"{"x":"a"}"#.into() },
        ToolCall { id: "call_1_1".into(), name: "nope".into(), arguments: "{}".into() },
        ToolCall { id: "call_1_2".into(), name: "lookup".into(), arguments: r#"{"x":5}"#.into() },
        ToolCall { id: "call_1_3".into(), name: "lookup".into(), arguments: r#"{"x":"d"}"#.into() },
    ];
    assert_eq!(second.len(), 7);
    assert_eq!(&second[..2], &requests[0].messages[..]);
    assert_eq!(second[2], Message::Assistant { content: String::new(), thinking: vec![], tool_calls: calls });
    let fed: Vec<(String, String, bool)> = tool_messages(second);
    assert_eq!(fed[0], ("call_1_0".into(), "lookup:a".into(), false));
    assert_eq!(fed[1].0, "call_1_1");
    assert!(fed[1].2 && fed[1].1.starts_with("Error: unknown tool `nope`; available tools: lookup"), "{:?}", fed[1]);
    assert_eq!(fed[2].0, "call_1_2");
    assert!(fed[2].2 && fed[2].1.contains("do not match its schema"), "{:?}", fed[2]);
    assert_eq!(fed[3], ("call_1_3".into(), "lookup:d".into(), false));
    let Message::Tool { name, .. } = &second[4] else { panic!() };
    assert_eq!(name, "nope");
}

struct Facts;

#[async_trait::async_trait]
impl Memory for Facts {
    async fn recall(&self, scope: &Scope, input: &RunInput) -> Result<Recalled, loom_agent::Error> {
        Ok(vec![Message::system(format!("Known fact for {} about {}", scope.session_id, input.summary()))].into())
    }
    async fn remember(&self, _scope: &Scope, _transcript: &Transcript) -> Result<(), loom_agent::Error> {
        Ok(())
    }
}

#[tokio::test]
async fn seed_order_is_instructions_context_memory_history_input() {
    let (model, shared) = scripted([ScriptedTurn::text("one"), ScriptedTurn::text("two")]);
    let agent = Agent::builder().instructions("Sys.").model(shared).memory(Facts).build().unwrap();
    let session = agent.session(SessionConfig::new("seeded"));
    session.run("first").await.unwrap();
    let context = RunContext::new().input("k", json!(1));
    session.run(RunRequest::new("second").context(context.clone())).await.unwrap();
    let second = &model.requests()[1].messages;
    assert_eq!(
        second,
        &vec![
            Message::system("Sys."),
            context.to_message().unwrap(),
            Message::system("Known fact for seeded about second"),
            Message::user("first"),
            Message::assistant("one"),
            Message::user("second"),
        ]
    );
}

#[derive(Clone, Default)]
struct BrokenRecall(Arc<std::sync::Mutex<Vec<String>>>);

#[async_trait::async_trait]
impl Memory for BrokenRecall {
    async fn recall(&self, _scope: &Scope, _input: &RunInput) -> Result<Recalled, loom_agent::Error> {
        Err(loom_agent::Error::Store("memory offline".into()))
    }
    async fn remember(&self, _scope: &Scope, transcript: &Transcript) -> Result<(), loom_agent::Error> {
        self.0.lock().unwrap().push(format!("{} {}", transcript.state, transcript.output));
        Ok(())
    }
}

#[tokio::test]
async fn a_memory_recall_failure_does_not_stop_the_run_and_finished_runs_are_remembered() {
    let memory = BrokenRecall::default();
    let (model, shared) = scripted([ScriptedTurn::text("fine")]);
    let agent = Agent::builder().model(shared).memory(memory.clone()).build().unwrap();
    agent.run("hi").await.unwrap();
    assert_eq!(model.requests()[0].messages, vec![Message::user("hi")]);
    assert_eq!(*memory.0.lock().unwrap(), ["completed fine"]);
}
