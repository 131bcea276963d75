//! Sessions: history across runs, identity and metadata, serialization within a session,
//! concurrency across sessions, lookups, close, and what each end state adds to history.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::FutureExt;
use loom_agent::message::{Message, ToolCall};
use loom_agent::model::{FnModel, ScriptedTurn};
use loom_agent::store::{SessionKey, SessionRecord, SessionStore};
use loom_agent::tool::{FunctionTool, ToolOutput};
use loom_agent::{Agent, Error, RunErrorKind, RunRequest, RunState, SessionConfig};
use serde_json::json;
use tokio::sync::Barrier;

fn hang_tool() -> FunctionTool {
    FunctionTool::new("hang", "Never returns.", json!({"type": "object"}), |_c, _a| async {
        std::future::pending::<()>().await;
        Ok(ToolOutput::text("unreachable"))
    })
}

// ---------------------------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_later_run_sees_every_earlier_message_once_and_the_instructions_once() {
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("lookup", json!({"x": "a"})),
        ScriptedTurn::text("answer one"),
        ScriptedTurn::text("answer two"),
        ScriptedTurn::text("answer three"),
    ]);
    let agent = Agent::builder().instructions("Sys.").model(shared).tool(echo_tool("lookup")).build().unwrap();
    let session = agent.session(SessionConfig::new("conv"));
    let first = session.run("first question").await.unwrap();
    let second = session.run("second question").await.unwrap();
    assert_eq!((first.session_id.as_str(), second.session_id.as_str()), ("conv", "conv"));
    let third = session.run("third question").await.unwrap();
    assert_eq!(third.output, "answer three");

    let run1 = vec![
        Message::user("first question"),
        Message::Assistant {
            content: String::new(),
            thinking: vec![],
            tool_calls: vec![ToolCall {
                id: "call_1_0".into(),
                name: "lookup".into(),
                arguments: r#"{"x":"a"}"#.into(),
            }],
        },
        Message::tool("call_1_0", "lookup", "lookup:a", false),
        Message::assistant("answer one"),
    ];
    let requests = model.requests();
    let mut expected = vec![Message::system("Sys.")];
    expected.extend(run1.clone());
    expected.push(Message::user("second question"));
    assert_eq!(requests[2].messages, expected, "second run's request");

    let mut expected = vec![Message::system("Sys.")];
    expected.extend(run1);
    expected.extend([
        Message::user("second question"),
        Message::assistant("answer two"),
        Message::user("third question"),
    ]);
    assert_eq!(requests[3].messages, expected, "third run's request");
    let systems = requests[3].messages.iter().filter(|m| matches!(m, Message::System { .. })).count();
    assert_eq!(systems, 1, "instructions exactly once");

    // The transcript is the conversation as the model saw it, plus the answer.
    let run = session.get_run(&third.run_id).await.unwrap().unwrap();
    let mut with_answer = expected.clone();
    with_answer.push(Message::assistant("answer three"));
    assert_eq!(run.transcript().messages, with_answer);
}

#[tokio::test]
async fn agent_run_with_a_session_id_continues_that_session() {
    let (model, shared) = scripted([ScriptedTurn::text("one"), ScriptedTurn::text("two")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let a = agent.run(RunRequest::new("p1").session("by-id")).await.unwrap();
    let b = agent.run(RunRequest::new("p2").session("by-id")).await.unwrap();
    assert_eq!((a.session_id.as_str(), b.session_id.as_str()), ("by-id", "by-id"));
    assert_eq!(model.requests()[1].messages, vec![Message::user("p1"), Message::assistant("one"), Message::user("p2")]);
}

#[tokio::test]
async fn an_anonymous_runs_session_id_can_be_continued() {
    let (model, shared) = scripted([ScriptedTurn::text("one"), ScriptedTurn::text("two"), ScriptedTurn::text("x")]);
    let agent = Agent::builder().model(shared).build().unwrap();
    let a = agent.run("p1").await.unwrap();
    assert!(a.session_id.starts_with("sess_"), "{}", a.session_id);
    let b = agent.run(RunRequest::new("p2").session(a.session_id.clone())).await.unwrap();
    assert_eq!(b.session_id, a.session_id);
    assert_eq!(model.requests()[1].messages, vec![Message::user("p1"), Message::assistant("one"), Message::user("p2")]);
    // Another anonymous run starts afresh in its own session.
    let c = agent.run("p3").await.unwrap();
    assert_ne!(c.session_id, a.session_id);
    assert_eq!(model.requests()[2].messages, vec![Message::user("p3")]);
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_runs_dangling_tool_call_stays_out_of_history() {
    let (model, shared) = scripted([ScriptedTurn::tool_call("hang", json!({})), ScriptedTurn::text("fresh")]);
    let agent = Agent::builder().model(shared).tool(hang_tool()).build().unwrap();
    let session = agent.session(SessionConfig::new("dangling"));
    let first =
        failed_result(session.run(RunRequest::new("first").timeout(Duration::from_millis(100))).await.unwrap_err());
    assert_eq!(first.state, RunState::Interrupted);
    assert_eq!(first.interruption_reason(), Some("timeout"));
    session.run("second").await.unwrap();
    // The dangling call is dropped, and with it the unanswered question: the history never holds a
    // tool call without its result, nor a prompt without a reply.
    let second = &model.requests()[1].messages;
    assert_eq!(second, &vec![Message::user("second")]);
}

#[tokio::test]
async fn a_max_turns_interruption_keeps_its_complete_tool_exchange() {
    let (model, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("two")]);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).build().unwrap();
    let session = agent.session(SessionConfig::new("mt"));
    let first = failed_result(session.run(RunRequest::new("first").max_turns(1)).await.unwrap_err());
    assert_eq!(first.interruption_reason(), Some("max_turns"));
    session.run("second").await.unwrap();
    let second = &model.requests()[1].messages;
    assert_eq!(second.len(), 4);
    assert_eq!(second[0], Message::user("first"));
    assert!(matches!(&second[1], Message::Assistant { tool_calls, .. } if tool_calls.len() == 1));
    assert_eq!(second[2], Message::tool("call_1_0", "lookup", "lookup:a", false));
    assert_eq!(second[3], Message::user("second"));
}

#[tokio::test]
async fn failed_and_cancelled_runs_add_nothing_to_history() {
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("lookup", json!({"x": "a"})),
        ScriptedTurn::error("boom"),
        ScriptedTurn::text("slow").with_delay(Duration::from_secs(3600)),
        ScriptedTurn::text("ok"),
    ]);
    let agent = Agent::builder().instructions("Sys.").model(shared).tool(echo_tool("lookup")).build().unwrap();
    let session = agent.session(SessionConfig::new("clean"));
    let failed = failed_result(session.run("will fail").await.unwrap_err());
    assert_eq!(failed.state, RunState::Failed);
    let run = session.start("will be cancelled");
    wait_for(&run, "model.request").await;
    run.cancel();
    assert_eq!(within(5, "cancel", run.result()).await.state, RunState::Cancelled);
    session.run("last").await.unwrap();
    let requests = model.requests();
    assert_eq!(requests[3].messages, vec![Message::system("Sys."), Message::user("last")]);
}

// ---------------------------------------------------------------------------------------------
// Identity and metadata
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_same_id_returns_the_same_session_and_merges_metadata() {
    let store = SharedStore::default();
    let model = GateModel::new();
    model.gate("A");
    let (model, shared) = share(model);
    let agent = Agent::builder().model(shared).session_store(store.clone()).build().unwrap();
    let s1 = agent.session(SessionConfig::new("x").metadata("a", json!(1)).extension("ea", json!(true)));
    let s2 = agent.session(SessionConfig::new("x").metadata("b", json!(2)).metadata("a", json!(10)));
    assert_eq!(s1.id(), "x");
    assert_eq!(s2.id(), "x");
    let merged = json!({"a": 10, "b": 2});
    assert_eq!(serde_json::Value::Object(s1.metadata()), merged);
    assert_eq!(serde_json::Value::Object(s2.metadata()), merged);
    assert_eq!(serde_json::Value::Object(s2.extensions()), json!({"ea": true}));

    // One session: a run started through s2 waits for the one started through s1.
    let a = s1.start("A");
    wait_for(&a, "model.request").await;
    let b = s2.start("B");
    tokio::task::yield_now().await;
    assert_eq!(b.state(), RunState::Queued);
    model.open("A");
    b.wait().await.unwrap();
    assert_eq!(model.log.snapshot(), ["start:A", "end:A", "start:B", "end:B"]);

    // The store has the merged metadata too.
    let record = store.0.open_session(&SessionRecord { id: "x".into(), ..SessionRecord::default() }).await.unwrap();
    assert_eq!(serde_json::Value::Object(record.metadata), merged);
    assert_eq!(serde_json::Value::Object(record.extensions), json!({"ea": true}));
}

#[test]
fn sessions_without_an_id_are_new_each_time() {
    let agent = Agent::builder().model("echo").build().unwrap();
    let a = agent.session(SessionConfig::default());
    let b = agent.session(SessionConfig::default());
    assert_ne!(a.id(), b.id());
    assert!(a.id().starts_with("sess_") && b.id().starts_with("sess_"));
}

// ---------------------------------------------------------------------------------------------
// Ordering: serialized within a session, concurrent across sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_one_session_are_serialized_in_start_order() {
    let order = EventOrder::default();
    let model = FnModel::new("slowish", |req| {
        ScriptedTurn::text(format!("ans:{}", last_user_text(req.messages))).with_delay(Duration::from_millis(15))
    });
    let agent = Agent::builder().model(model).hook(order.clone()).build().unwrap();
    let session = agent.session(SessionConfig::new("serial"));
    let runs: Vec<_> = (0..4).map(|i| session.start(format!("p{i}"))).collect();
    for run in &runs {
        assert_eq!(within(10, "run", run.result()).await.state, RunState::Completed);
    }
    for pair in runs.windows(2) {
        let done = order.0.position(&format!("{} run.completed", pair[0].id()));
        let started = order.0.position(&format!("{} run.started", pair[1].id()));
        assert!(done < started, "a run started before the previous one in its session completed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_does_not_start_until_the_running_one_ends() {
    let model = GateModel::new();
    model.gate("A");
    let (model, shared) = share(model);
    let agent = Agent::builder().model(shared).build().unwrap();
    let session = agent.session(SessionConfig::new("gated"));
    let a = session.start("A");
    let b = session.start("B");
    wait_for(&a, "model.request").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(b.state(), RunState::Queued);
    assert!(b.transcript().events.is_empty(), "a queued run has no events yet");
    assert_eq!(model.log.snapshot(), ["start:A"]);
    model.open("A");
    assert_eq!(within(10, "b", b.wait()).await.unwrap().output, "ans:B");
    assert_eq!(model.log.snapshot(), ["start:A", "end:A", "start:B", "end:B"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_sessions_run_concurrently() {
    // Each run's tool waits at a barrier for the other: sequential sessions would never get past it.
    let barrier = Arc::new(Barrier::new(2));
    let b = barrier.clone();
    let meet = FunctionTool::new("meet", "Waits for the other run.", json!({"type": "object"}), move |_c, _a| {
        let b = b.clone();
        async move {
            b.wait().await;
            Ok(ToolOutput::text("met"))
        }
    });
    let model = FnModel::new("meet", |req| {
        if matches!(req.messages.last(), Some(Message::Tool { .. })) {
            ScriptedTurn::text("both met")
        } else {
            ScriptedTurn::tool_call("meet", json!({}))
        }
    });
    let agent = Agent::builder().model(model).tool(meet).build().unwrap();
    let one = agent.session(SessionConfig::new("one")).start("go");
    let two = agent.session(SessionConfig::new("two")).start("go");
    let (r1, r2) = within(10, "both sessions", futures::future::join(one.wait(), two.wait())).await;
    assert_eq!(r1.unwrap().output, "both met");
    assert_eq!(r2.unwrap().output, "both met");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_session_does_not_hold_up_another() {
    let model = GateModel::new();
    model.gate("A");
    let (model, shared) = share(model);
    let agent = Agent::builder().model(shared).build().unwrap();
    let a = agent.session(SessionConfig::new("s1")).start("A");
    wait_for(&a, "model.request").await;
    let b = agent.session(SessionConfig::new("s2")).start("B");
    assert_eq!(within(10, "b", b.wait()).await.unwrap().output, "ans:B");
    assert_eq!(a.state(), RunState::Running);
    model.open("A");
    assert_eq!(within(10, "a", a.wait()).await.unwrap().output, "ans:A");
}

// ---------------------------------------------------------------------------------------------
// Lookups and close
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn get_run_and_list_runs_see_live_and_finished_runs() {
    let model = GateModel::new();
    model.gate("B");
    let (model, shared) = share(model);
    let agent = Agent::builder().model(shared).build().unwrap();
    let session = agent.session(SessionConfig::new("lookups").user("u"));
    let a = session.run(RunRequest::new("A").user("u")).await.unwrap();

    let b = session.start("B");
    wait_for(&b, "model.request").await;
    let live = session.get_run(b.id()).await.unwrap().expect("live run");
    assert_eq!(live.id(), b.id());
    assert_eq!(live.state(), RunState::Running);
    let listed = session.list_runs().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| (s.run_id.as_str(), s.state)).collect::<Vec<_>>(),
        [(a.run_id.as_str(), RunState::Completed), (b.id(), RunState::Running),]
    );
    assert_eq!(listed[0].user_id.as_deref(), Some("u"));
    assert_eq!(listed[0].input, loom_agent::RunInput::Prompt("A".into()));
    assert!(listed[1].finished_at.is_none());

    model.open("B");
    let b_result = live.result().await;
    assert_eq!(b_result.output, "ans:B");
    let c = session.run("C").await.unwrap();
    session.close().await.unwrap();

    // After close nothing is live: these come from the store, and equal the original results.
    for original in [&a, &b_result, &c] {
        let stored = session.get_run(&original.run_id).await.unwrap().expect("stored run");
        assert_eq!(stored.state(), original.state);
        assert_eq!(&stored.result().await, original);
        assert_eq!(collect(stored.events()).await, original.events.to_vec());
    }
    let listed = session.list_runs().await.unwrap();
    assert_eq!(
        listed.iter().map(|s| (s.run_id.clone(), s.state)).collect::<Vec<_>>(),
        [a.run_id.clone(), b_result.run_id.clone(), c.run_id.clone()].map(|id| (id, RunState::Completed))
    );
    assert!(session.get_run("run_nope").await.unwrap().is_none());
    // Another session does not see these runs.
    let other = agent.session(SessionConfig::new("other"));
    assert!(other.get_run(&a.run_id).await.unwrap().is_none());
    assert!(other.list_runs().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_run_cancelled_while_queued_is_found_later_with_the_same_result() {
    let model = GateModel::new();
    model.gate("A");
    let (model, shared) = share(model);
    let agent = Agent::builder().model(shared).build().unwrap();
    let session = agent.session(SessionConfig::new("cq"));
    let a = session.start("A");
    let b = session.start("B");
    wait_for(&a, "model.request").await;
    b.cancel();
    let b_result = within(5, "cancelled", b.result()).await;
    assert_eq!(b_result.state, RunState::Cancelled);
    model.open("A");
    a.wait().await.unwrap();
    session.close().await.unwrap();
    let stored = session.get_run(b.id()).await.unwrap().unwrap();
    assert_eq!(stored.result().await, b_result);
    // Its listing is stable and says it started (and ended) when it was cancelled.
    let listed = session.list_runs().await.unwrap();
    let line = listed.iter().find(|s| s.run_id == b.id()).unwrap();
    assert_eq!(line.state, RunState::Cancelled);
    assert_eq!(line.started_at, b_result.started_at);
    assert_eq!(line.finished_at, Some(b_result.finished_at));
}

#[tokio::test]
async fn close_lets_started_runs_finish_and_later_runs_fail_clearly() {
    let model = GateModel::new();
    model.gate("A");
    let (model, shared) = share(model);
    let agent = Agent::builder().model(shared).build().unwrap();
    let session = agent.session(SessionConfig::new("closing"));
    let a = session.start("A");
    let queued = session.start("Q");
    wait_for(&a, "model.request").await;

    let mut closing = Box::pin(session.close());
    assert!((&mut closing).now_or_never().is_none(), "close waits for the runs already started");
    assert!(session.is_closed());

    let late = session.start("late");
    let late_result = within(5, "late", late.result()).await;
    assert_eq!(late_result.state, RunState::Failed);
    let error = late_result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Config);
    assert_eq!(error.message, "session `closing` is closed");
    check_log(&late_result.events, late.id(), "closing", RunState::Failed);
    let err = session.run("later still").await.unwrap_err();
    assert!(err.to_string().contains("is closed"), "{err}");

    model.open("A");
    within(10, "close", closing).await.unwrap();
    assert_eq!(a.result().await.state, RunState::Completed);
    assert_eq!(queued.result().await.state, RunState::Completed, "a run queued before close still runs");
    assert_eq!(model.log.snapshot(), ["start:A", "end:A", "start:Q", "end:Q"]);
}

#[tokio::test]
async fn closing_an_idle_session_returns_at_once() {
    let agent = Agent::builder().model("echo").build().unwrap();
    let session = agent.session(SessionConfig::new("idle"));
    session.run("hi").await.unwrap();
    within(5, "close", session.close()).await.unwrap();
    assert!(matches!(session.run("again").await, Err(Error::Run(_))));
}

/// A store whose history or save can be made to fail.
#[derive(Clone, Default)]
struct FlakyStore {
    inner: SharedStore,
    fail_history: bool,
    fail_save: bool,
}

#[async_trait::async_trait]
impl SessionStore for FlakyStore {
    async fn open_session(&self, record: &SessionRecord) -> Result<SessionRecord, Error> {
        self.inner.open_session(record).await
    }
    async fn history(&self, session_id: SessionKey<'_>) -> Result<Vec<Message>, Error> {
        if self.fail_history {
            return Err(Error::Store("history unavailable".into()));
        }
        self.inner.history(session_id).await
    }
    async fn get_session(&self, session_id: SessionKey<'_>) -> Result<Option<SessionRecord>, Error> {
        self.inner.get_session(session_id).await
    }
    async fn append_history(
        &self,
        session_id: SessionKey<'_>,
        run_id: &str,
        messages: &[Message],
    ) -> Result<(), Error> {
        self.inner.append_history(session_id, run_id, messages).await
    }
    async fn save_run(&self, transcript: Arc<loom_agent::Transcript>) -> Result<(), Error> {
        if self.fail_save {
            return Err(Error::Store("disk full".into()));
        }
        self.inner.save_run(transcript).await
    }
    async fn get_run(
        &self,
        session_id: SessionKey<'_>,
        run_id: &str,
    ) -> Result<Option<Arc<loom_agent::Transcript>>, Error> {
        self.inner.get_run(session_id, run_id).await
    }
    async fn list_runs(&self, session_id: SessionKey<'_>) -> Result<Vec<loom_agent::store::RunSummary>, Error> {
        self.inner.list_runs(session_id).await
    }
    async fn close_session(&self, session_id: SessionKey<'_>) -> Result<(), Error> {
        self.inner.close_session(session_id).await
    }
}

#[tokio::test]
async fn a_store_that_cannot_load_history_fails_the_run_with_kind_store() {
    let (model, shared) = scripted([ScriptedTurn::text("never")]);
    let store = FlakyStore { fail_history: true, ..FlakyStore::default() };
    let agent = Agent::builder().model(shared).session_store(store).build().unwrap();
    let session = agent.session(SessionConfig::new("named"));
    let result = failed_result(session.run("hi").await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Store);
    assert!(error.message.contains("history unavailable"), "{}", error.message);
    assert_eq!(types(&result.events), ["run.started", "run.failed"]);
    assert!(model.requests().is_empty());
}

/// The first run of a session whose id this process made reads no history (nothing can be stored
/// under a new id); every later run of it does, as every run of a named session does.
#[tokio::test]
async fn only_a_fresh_sessions_first_run_skips_the_history_read() {
    let (model, shared) = scripted([ScriptedTurn::text("one"), ScriptedTurn::text("two")]);
    let store = FlakyStore { fail_history: true, ..FlakyStore::default() };
    let agent = Agent::builder().model(shared).session_store(store).build().unwrap();
    assert_eq!(agent.run("hi").await.unwrap().output, "one", "a one-off run reads no history");
    let session = agent.session(SessionConfig::default());
    assert_eq!(session.run("first").await.unwrap().output, "two");
    let second = failed_result(session.run("second").await.unwrap_err());
    assert_eq!(second.error.unwrap().kind, RunErrorKind::Store, "the second run reads the history");
    assert_eq!(model.requests().len(), 2);
}

#[tokio::test]
async fn a_store_that_cannot_save_fails_the_run_and_keeps_its_answer() {
    let (_, shared) = scripted([ScriptedTurn::text("one"), ScriptedTurn::text("two")]);
    let store = FlakyStore { fail_save: true, ..FlakyStore::default() };
    let agent = Agent::builder().model(shared).session_store(store.clone()).build().unwrap();
    let session = agent.session(SessionConfig::new("unsaved"));
    // Its work is done, its record is not: the run says so (kind store), with the answer kept.
    let result = failed_result(session.run("hi").await.unwrap_err());
    assert_eq!((result.state, result.output.as_str()), (RunState::Failed, "one"));
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Store);
    assert!(error.message.contains("the run ended completed, but saving it failed"), "{}", error.message);
    // History is a separate write and still happened.
    assert_eq!(
        store.inner.0.history(SessionKey::new("unsaved")).await.unwrap(),
        vec![Message::user("hi"), Message::assistant("one")]
    );
}
