//! Memory in runs: recall before each run (a system message and a `memory.recalled` event),
//! episodes after it, background fact extraction through a structured-output model call, the memory
//! tools and the application API. Tenant isolation under random interleavings is
//! tests/memory_isolation.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod memory_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scripted;
use loom_agent::memory::{Forget, NewFact, extract};
use loom_agent::message::Message;
use loom_agent::model::{ModelCapabilities, ScriptedModel, ScriptedTurn};
use loom_agent::{Agent, Error, EventKind, RunRequest, RunState};
use memory_support::*;
use serde_json::json;

fn facts_json(facts: serde_json::Value) -> ScriptedTurn {
    ScriptedTurn::text(json!({ "facts": facts }).to_string())
}

#[tokio::test]
async fn recall_seeds_one_system_message_and_an_event_after_run_started() {
    let (model, shared) = scripted([ScriptedTurn::text("Berlin it is.")]);
    let agent =
        Agent::builder().instructions("Sys.").model(shared).memory("memory").auto_extract(false).build().unwrap();
    let memory = agent.memory();
    let old = memory.remember_fact("ann", NewFact::new("Lives in Paris.").key("home_city")).await.unwrap();
    let new = memory.remember_fact("ann", NewFact::new("Moved to Berlin in 2024.").key("home_city")).await.unwrap();
    memory.remember_fact("ann", NewFact::new("Plays the cello.")).await.unwrap();
    memory.set_block("ann", "profile", "Name: Ann. Prefers short answers.").await.unwrap();
    memory.remember_fact("bob", NewFact::new("Bob lives in Berlin too.")).await.unwrap();

    let result = agent.run(RunRequest::new("Where do I live now, Berlin?").user("ann")).await.unwrap();
    assert_eq!(result.state, RunState::Completed);
    let sent = &model.requests()[0].messages;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0], Message::system("Sys."));
    let recalled = sent[1].text();
    assert!(matches!(sent[1], Message::System { .. }));
    assert!(recalled.contains("## Working memory\n### profile\nName: Ann. Prefers short answers."), "{recalled}");
    assert!(recalled.contains("- Moved to Berlin in 2024."), "{recalled}");
    assert!(!recalled.contains("Paris"), "a superseded fact is not recalled: {recalled}");
    assert!(!recalled.contains("Bob"), "another user's fact: {recalled}");
    assert_eq!(sent[2], Message::user("Where do I live now, Berlin?"));

    let kinds: Vec<&str> = result.events.iter().map(|e| e.type_name()).collect();
    assert_eq!(&kinds[..2], ["run.started", "memory.recalled"]);
    let EventKind::MemoryRecalled(event) = &result.events[1].kind else { panic!() };
    assert_eq!(event.items[0].id, "block:profile");
    assert_eq!(event.items[1].id, new.id, "the matching fact ranks first");
    assert!(event.items.iter().all(|i| i.id != old.id));
    assert!(event.items[1].score > 0.0);
    // The transcript holds it too (the seeded messages are the model's view).
    let transcript = agent.session(loom_agent::SessionConfig::new(&result.session_id).user("ann"));
    let run = transcript.get_run(&result.run_id).await.unwrap().unwrap().transcript();
    assert!(run.messages[1].text().contains("Moved to Berlin"));
    assert!(run.events.iter().any(|e| e.type_name() == "memory.recalled"));
}

#[tokio::test]
async fn runs_without_a_user_neither_recall_nor_record() {
    let (model, shared) = scripted([ScriptedTurn::text("ok")]);
    let agent = Agent::builder().model(shared).memory("memory").build().unwrap();
    let result = agent.run("hello").await.unwrap();
    assert_eq!(model.requests().len(), 1, "no extraction call");
    assert_eq!(model.requests()[0].messages, vec![Message::user("hello")]);
    assert!(result.events.iter().all(|e| e.type_name() != "memory.recalled"));
}

#[tokio::test]
async fn episodes_are_recorded_and_facts_extracted_with_a_schema_in_the_background() {
    let store = loom_agent::memory::open_memory_store("memory").unwrap();
    let ann = loom_agent::memory::Owner::user("ann").unwrap();
    let paris = store.add_fact(&ann, NewFact::new("Lives in Paris.").key("home_city"), None).await.unwrap();
    // The answer names the known fact it replaces.
    let script = json!([{"key": "home_city", "statement": "Lives in Berlin.", "importance": 0.9, "supersedes": paris.id},
                        {"key": null, "statement": "Works as a nurse.", "importance": 0.5, "supersedes": null}]);
    let extractor = Arc::new(
        ScriptedModel::new([facts_json(script).with_delay(Duration::from_millis(300))])
            .with_capabilities(ModelCapabilities { native_structured_output: true, ..ModelCapabilities::default() }),
    );
    let (model, shared) = scripted([ScriptedTurn::text("Noted: Berlin.")]);
    let agent = Agent::builder()
        .model(shared)
        .memory_store(store.clone())
        .memory_extractor(extractor.clone() as loom_agent::model::SharedModel)
        .no_embedder() // the timing below is about extraction, not loading the default embedder
        .build()
        .unwrap();
    let started = Instant::now();
    let result = agent.run(RunRequest::new("I moved to Berlin; I work as a nurse.").user("ann")).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(250), "the run waited for extraction: {:?}", started.elapsed());
    assert_eq!(result.output, "Noted: Berlin.");
    let episodes = agent.memory().episodes("ann", 10).await.unwrap();
    assert_eq!(episodes.len(), 1);
    assert_eq!(episodes[0].prompt, "I moved to Berlin; I work as a nurse.");
    assert_eq!(episodes[0].answer, "Noted: Berlin.");
    assert_eq!(episodes[0].run_id, result.run_id);

    agent.memory().flush().await.unwrap();
    let requests = extractor.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.output_schema.as_ref(), Some(&extract::extraction_schema()), "the schema is sent natively");
    assert!(request.tools.is_empty());
    assert_eq!(request.user_id.as_deref(), Some("ann"));
    assert_eq!(request.messages[0], Message::system(extract::EXTRACTION_INSTRUCTIONS));
    let user = request.messages[1].text();
    assert!(user.contains(&format!("- id={} key=home_city: Lives in Paris.", paris.id)), "{user}");
    assert!(
        user.contains("Exchange:\nUser: I moved to Berlin; I work as a nurse.\nAssistant: Noted: Berlin."),
        "{user}"
    );

    let facts = agent.memory().facts("ann").await.unwrap();
    assert_eq!(
        facts.iter().map(|f| f.statement.as_str()).collect::<Vec<_>>(),
        ["Lives in Berlin.", "Works as a nurse."]
    );
    assert_eq!(facts[0].source_run.as_deref(), Some(result.run_id.as_str()));
    let history = agent.memory().fact_history("ann").await.unwrap();
    assert_eq!(history[0].superseded_by.as_deref(), Some(facts[0].id.as_str()));
    assert!(agent.memory().episodes("ann", 1).await.unwrap()[0].extracted);
    assert_eq!(model.requests().len(), 1, "the agent's model made only the run's call");
}

#[tokio::test]
async fn without_native_structured_output_the_schema_goes_in_the_instructions_and_the_agents_model_extracts() {
    let (model, shared) = scripted([
        ScriptedTurn::text("Hi Ann."),
        facts_json(json!([{"key": "name", "statement": "Is called Ann.", "importance": 1.0, "supersedes": null}])),
    ]);
    let agent = Agent::builder().model(shared).memory("memory").build().unwrap();
    agent.run(RunRequest::new("I'm Ann.").user("ann")).await.unwrap();
    agent.memory().flush().await.unwrap();
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "the run, then the extraction on the agent's model");
    assert_eq!(requests[1].output_schema, None);
    let system = requests[1].messages[0].text();
    assert!(system.starts_with(extract::EXTRACTION_INSTRUCTIONS));
    assert!(system.contains("Structured output required") && system.contains("\"supersedes\""), "{system}");
    assert_eq!(agent.memory().facts("ann").await.unwrap()[0].statement, "Is called Ann.");
}

#[tokio::test]
async fn auto_extract_can_be_switched_off() {
    let (model, shared) = scripted([ScriptedTurn::text("ok")]);
    let agent = Agent::builder().model(shared).memory("memory").auto_extract(false).build().unwrap();
    agent.run(RunRequest::new("I'm Ann.").user("ann")).await.unwrap();
    agent.memory().flush().await.unwrap();
    assert_eq!(model.requests().len(), 1);
    let episodes = agent.memory().episodes("ann", 5).await.unwrap();
    assert_eq!(episodes.len(), 1);
    assert!(episodes[0].extracted, "nothing pending");
}

#[tokio::test]
async fn a_failed_extraction_stays_pending_and_runs_once_later() {
    let path = temp_db();
    let url = format!("sqlite:{}", path.display());
    let (_, shared) = scripted([ScriptedTurn::text("ok"), ScriptedTurn::error("extractor down")]);
    let agent = Agent::builder().model(shared).memory(url.as_str()).build().unwrap();
    agent.run(RunRequest::new("I live in Oslo.").user("ann")).await.unwrap();
    let flushed = agent.memory().flush().await;
    assert!(flushed.is_err(), "the failure is reported: {flushed:?}");
    drop(agent);

    // Another process (a new agent on the same file) picks the episode up, once.
    let extractor = Arc::new(ScriptedModel::new([facts_json(
        json!([{"key": "home_city", "statement": "Lives in Oslo.", "importance": 0.9, "supersedes": null}]),
    )]));
    let agent = Agent::builder()
        .model("echo")
        .memory(url.as_str())
        .memory_extractor(extractor.clone() as loom_agent::model::SharedModel)
        .build()
        .unwrap();
    assert_eq!(agent.memory().extract_pending("ann").await.unwrap(), 1);
    agent.memory().flush().await.unwrap();
    assert_eq!(agent.memory().extract_pending("ann").await.unwrap(), 0);
    agent.memory().flush().await.unwrap();
    assert_eq!(extractor.requests().len(), 1);
    assert_eq!(agent.memory().facts("ann").await.unwrap()[0].statement, "Lives in Oslo.");
    remove_db(&path);
}

#[tokio::test]
async fn memory_tools_edit_blocks_search_and_forget_for_the_runs_user_only() {
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("memory_block_update", json!({"name": "profile", "text": "Likes jazz."})),
        ScriptedTurn::tool_call("memory_search", json!({"query": "violin lessons"})),
        ScriptedTurn::text("done"),
    ]);
    let agent = Agent::builder().model(shared).memory("memory").auto_extract(false).build().unwrap();
    let tools = agent.tools();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["memory_search", "memory_block_update", "memory_forget"]);
    let memory = agent.memory();
    let violin = memory.remember_fact("ann", NewFact::new("Takes violin lessons on Mondays.")).await.unwrap();
    memory.remember_fact("bob", NewFact::new("Bob also takes violin lessons.")).await.unwrap();
    agent.run(RunRequest::new("Remember I like jazz").user("ann")).await.unwrap();
    assert_eq!(memory.blocks("ann").await.unwrap()[0].text, "Likes jazz.");
    assert!(memory.blocks("bob").await.unwrap().is_empty());
    let fed = model.requests()[2].messages.last().unwrap().text();
    assert!(fed.contains(&violin.id), "{fed}");
    assert!(!fed.contains("Bob"), "{fed}");

    // Forgetting another user's item by id does nothing.
    let bob_fact = memory.facts("bob").await.unwrap()[0].id.clone();
    let (_, shared) =
        scripted([ScriptedTurn::tool_call("memory_forget", json!({"id": bob_fact})), ScriptedTurn::text("ok")]);
    let agent2 = Agent::builder()
        .model(shared)
        .memory_store(memory.store().unwrap().clone())
        .auto_extract(false)
        .build()
        .unwrap();
    agent2.run(RunRequest::new("forget it").user("ann")).await.unwrap();
    assert_eq!(memory.facts("bob").await.unwrap().len(), 1);

    let agent = Agent::builder().model("echo").memory("memory").memory_tools(false).build().unwrap();
    assert!(agent.tools().is_empty());
}

#[tokio::test]
async fn a_block_over_the_limit_is_refused() {
    let agent = Agent::builder().model("echo").memory("memory").build().unwrap();
    let err = agent.memory().set_block("ann", "profile", &"x".repeat(2001)).await.unwrap_err();
    assert!(matches!(err, Error::Config(ref m) if m.contains("2000")), "{err}");
}

#[tokio::test]
async fn the_application_api_recalls_forgets_and_exports() {
    let agent = Agent::builder().model("echo").memory("memory").embedder(HashEmbedder).build().unwrap();
    let m = agent.memory();
    m.remember_fact("ann", NewFact::new("Allergic to peanuts.").importance(1.0)).await.unwrap();
    m.remember_fact("ann", NewFact::new("Owns a red bicycle.")).await.unwrap();
    // The vector search finds "bicycles" by its stem bucket although the text index gets it too.
    let recollection = m.recall("ann", "which bicycle do I own").await.unwrap();
    assert_eq!(recollection.items[0].1.text, "Owns a red bicycle.");
    let export = m.export("ann").await.unwrap();
    assert_eq!(export["facts"].as_array().unwrap().len(), 2);
    assert_eq!(m.forget("ann", Forget::All).await.unwrap(), 2);
    assert_eq!(m.export("ann").await.unwrap()["facts"], json!([]));
    assert!(m.recall("ann", "bicycle").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_bad_memory_url_fails_build_and_an_agent_without_memory_says_so() {
    let err = Agent::builder().model("echo").memory("mongodb://x").build().unwrap_err();
    assert!(matches!(err, Error::Config(ref m) if m.contains("sqlite:PATH")), "{err}");
    let agent = Agent::builder().model("echo").build().unwrap();
    assert!(matches!(agent.memory().facts("ann").await, Err(Error::Config(_))));
    agent.memory().flush().await.unwrap();
}

#[tokio::test]
async fn hybrid_recall_finds_what_full_text_misses() {
    // The fact shares no whole word with the query ("travelers" / "Travelling"), so full text
    // misses it; the test embedder's 5-letter stems put them together.
    async fn top(embedder: bool) -> Vec<String> {
        let builder = Agent::builder().model("echo").memory("memory");
        let agent = if embedder { builder.embedder(HashEmbedder) } else { builder.no_embedder() }.build().unwrap();
        let m = agent.memory();
        m.remember_fact("ann", NewFact::new("Travelling to Kyoto in spring.")).await.unwrap();
        for i in 0..30 {
            m.remember_fact("ann", NewFact::new(format!("Filler fact number {i} about nothing."))).await.unwrap();
        }
        m.search("ann", "travelers", 3).await.unwrap().into_iter().map(|(_, i)| i.text).collect()
    }
    assert!(!top(false).await.contains(&"Travelling to Kyoto in spring.".to_string()), "full text alone finds it");
    assert_eq!(top(true).await[0], "Travelling to Kyoto in spring.");
}
