//! Governance slots: permissions and approval, hooks (guardrails, tool rewrites), budget, audit log
//! and journal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use loom_agent::event::ToolResultEvent;
use loom_agent::governance::{
    Approval, ApprovalHandler, ApprovalRequest, AuditLog, AuditRecord, Budget, BudgetVerdict, Decision, HookAction,
    Hooks, Permissions, Scope, ToolHookAction,
};
use loom_agent::message::{Message, ToolCall, Usage};
use loom_agent::model::{ModelResponse, ScriptedTurn};
use loom_agent::store::{Journal, JournalEntry, JournalRunSummary, JournaledRun, Lease, RunFilter, RunRecord};
use loom_agent::tool::{FunctionTool, ToolErrorKind, ToolOutput, ToolSpec};
use loom_agent::{Agent, Event, RunErrorKind, RunInput, RunRequest, RunResult, RunState};
use serde_json::{Value, json};

/// A tool that records the arguments it ran with.
fn recording(name: &str, log: &Log) -> FunctionTool {
    let log = log.clone();
    let schema = json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]});
    FunctionTool::new(name, "Deletes a path.", schema, move |_c, args| {
        log.push(args.to_string());
        async { Ok(ToolOutput::text("deleted")) }
    })
}

async fn run_one_call(agent_tools: impl FnOnce(loom_agent::AgentBuilder) -> loom_agent::AgentBuilder) -> RunResult {
    let (_, shared) = scripted([ScriptedTurn::tool_call("rm", json!({"path": "/tmp/a"})), ScriptedTurn::text("done")]);
    let agent = agent_tools(Agent::builder().model(shared)).build().unwrap();
    let result = agent.run(RunRequest::new("go").user("carol")).await.unwrap();
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Completed);
    result
}

fn only_result(result: &RunResult) -> ToolResultEvent {
    let results = tool_results(&result.events);
    assert_eq!(results.len(), 1);
    results[0].clone()
}

// ---------------------------------------------------------------------------------------------
// Permissions and approval
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn destructive_tools_are_denied_without_an_approval_handler() {
    let log = Log::default();
    let result = run_one_call(|b| b.tool(recording("rm", &log).destructive())).await;
    let r = only_result(&result);
    assert_eq!(r.error_kind, Some(ToolErrorKind::Denied));
    assert_eq!(
        r.output,
        "Error: permission denied: `rm` is destructive and needs approval, and no approval handler is configured"
    );
    assert!(log.snapshot().is_empty(), "the tool must not run");
}

#[tokio::test]
async fn requires_permission_tools_are_denied_without_an_approval_handler() {
    let log = Log::default();
    let result = run_one_call(|b| b.tool(recording("rm", &log).requires_permission())).await;
    let r = only_result(&result);
    assert_eq!(r.error_kind, Some(ToolErrorKind::Denied));
    assert!(r.output.contains("`rm` requires permission"), "{}", r.output);
    assert!(log.snapshot().is_empty());
}

struct Approver {
    answer: Approval,
    seen: Arc<Mutex<Vec<ApprovalRequest>>>,
}

#[async_trait::async_trait]
impl ApprovalHandler for Approver {
    async fn approve(&self, request: ApprovalRequest) -> Approval {
        self.seen.lock().unwrap().push(request);
        self.answer.clone()
    }
}

fn approver(answer: Approval) -> (Approver, Arc<Mutex<Vec<ApprovalRequest>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    (Approver { answer, seen: seen.clone() }, seen)
}

#[tokio::test]
async fn an_approval_handler_that_allows_runs_the_tool_and_sees_the_request() {
    let log = Log::default();
    let (handler, seen) = approver(Approval::Allow);
    let result = run_one_call(|b| b.tool(recording("rm", &log).destructive()).approval_handler(handler)).await;
    assert_eq!(only_result(&result).output, "deleted");
    assert_eq!(log.snapshot(), [r#"{"path":"/tmp/a"}"#]);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(&*req.scope.run_id, result.run_id);
    assert_eq!(req.scope.user_id.as_deref(), Some("carol"));
    assert_eq!(req.tool.name, "rm");
    assert!(req.tool.flags.destructive);
    assert_eq!(req.call.id, "call_1_0");
    assert_eq!(req.args, json!({"path": "/tmp/a"}));
    assert_eq!(req.reason, "`rm` is destructive");
}

#[tokio::test]
async fn an_approval_handler_that_denies_keeps_the_tool_from_running() {
    let log = Log::default();
    let (handler, _) = approver(Approval::Deny("not on a Friday".into()));
    let result = run_one_call(|b| b.tool(recording("rm", &log).destructive()).approval_handler(handler)).await;
    let r = only_result(&result);
    assert_eq!(r.error_kind, Some(ToolErrorKind::Denied));
    assert_eq!(r.output, "Error: denied by approver: not on a Friday");
    assert!(log.snapshot().is_empty());
}

#[tokio::test]
async fn an_approval_handler_that_edits_runs_the_tool_with_the_edited_arguments() {
    let log = Log::default();
    let (handler, _) = approver(Approval::Edit(json!({"path": "/tmp/safe"})));
    let result = run_one_call(|b| b.tool(recording("rm", &log).destructive()).approval_handler(handler)).await;
    assert_eq!(only_result(&result).output, "deleted");
    assert_eq!(log.snapshot(), [r#"{"path":"/tmp/safe"}"#]);

    // Edited arguments are checked against the schema again.
    let log = Log::default();
    let (handler, _) = approver(Approval::Edit(json!({"path": 42})));
    let result = run_one_call(|b| b.tool(recording("rm", &log).destructive()).approval_handler(handler)).await;
    let r = only_result(&result);
    assert_eq!(r.error_kind, Some(ToolErrorKind::InvalidArguments));
    assert!(r.output.contains("the approver's edited arguments do not match the schema of `rm`"), "{}", r.output);
    assert!(log.snapshot().is_empty());
}

#[tokio::test]
async fn plain_tools_need_no_approval() {
    let log = Log::default();
    let (handler, seen) = approver(Approval::Deny("never asked".into()));
    let result = run_one_call(|b| b.tool(recording("rm", &log)).approval_handler(handler)).await;
    assert_eq!(only_result(&result).output, "deleted");
    assert!(seen.lock().unwrap().is_empty());
}

struct Policy;

#[async_trait::async_trait]
impl Permissions for Policy {
    async fn check(&self, scope: &Scope, tool: &ToolSpec, args: &Value) -> Decision {
        if scope.user_id.as_deref() != Some("carol") {
            return Decision::Deny("unknown user".into());
        }
        if args["path"].as_str().is_some_and(|p| p.starts_with("/tmp")) {
            Decision::Allow
        } else {
            Decision::Deny(format!("`{}` may only touch /tmp", tool.name))
        }
    }
}

#[tokio::test]
async fn a_custom_permission_policy_replaces_the_default() {
    let log = Log::default();
    // Allowed by policy: no approval needed even though destructive.
    let result = run_one_call(|b| b.tool(recording("rm", &log).destructive()).permissions(Policy)).await;
    assert_eq!(only_result(&result).output, "deleted");

    let (_, shared) = scripted([ScriptedTurn::tool_call("rm", json!({"path": "/etc"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).tool(recording("rm", &log)).permissions(Policy).build().unwrap();
    let result = agent.run(RunRequest::new("go").user("carol")).await.unwrap();
    let r = only_result(&result);
    assert_eq!(r.error_kind, Some(ToolErrorKind::Denied));
    assert_eq!(r.output, "Error: permission denied: `rm` may only touch /tmp");
    assert_eq!(log.snapshot().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Hooks
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct ToolGuard {
    seen: Log,
}

#[async_trait::async_trait]
impl Hooks for ToolGuard {
    async fn before_tool(&self, _scope: &Scope, call: &ToolCall, args: &Value) -> ToolHookAction {
        self.seen.push(format!("guard saw {args}"));
        match args["path"].as_str() {
            Some("/") => ToolHookAction::Deny("refusing to delete /".into()),
            Some(p) if p.starts_with("~") => ToolHookAction::Rewrite(json!({"path": p.replacen('~', "/home/u", 1)})),
            Some("bad") => ToolHookAction::Rewrite(json!({"nope": true})),
            _ if call.name == "never" => ToolHookAction::Deny("never".into()),
            _ => ToolHookAction::Continue,
        }
    }
}

struct Second(Log);

#[async_trait::async_trait]
impl Hooks for Second {
    async fn before_tool(&self, _scope: &Scope, _call: &ToolCall, args: &Value) -> ToolHookAction {
        self.0.push(format!("second saw {args}"));
        ToolHookAction::Continue
    }
    async fn after_tool(&self, _scope: &Scope, call: &ToolCall, result: &ToolResultEvent) {
        self.0.push(format!("after {} {}", call.id, result.output));
    }
}

#[tokio::test]
async fn before_tool_hooks_deny_and_rewrite_in_order() {
    let ran = Log::default();
    let hooks = Log::default();
    let (_, shared) = scripted([
        ScriptedTurn::tool_call("rm", json!({"path": "/"}))
            .with_tool_call("rm", json!({"path": "~/junk"}))
            .with_tool_call("rm", json!({"path": "bad"})),
        ScriptedTurn::text("done"),
    ]);
    let agent = Agent::builder()
        .model(shared)
        .tool(recording("rm", &ran))
        .hook(ToolGuard { seen: hooks.clone() })
        .hook(Second(hooks.clone()))
        .build()
        .unwrap();
    let result = agent.run("go").await.unwrap();
    let results = tool_results(&result.events);
    assert_eq!(results[0].error_kind, Some(ToolErrorKind::Denied));
    assert_eq!(results[0].output, "Error: denied by hook: refusing to delete /");
    assert_eq!(results[1].output, "deleted");
    assert_eq!(results[2].error_kind, Some(ToolErrorKind::InvalidArguments));
    assert!(results[2].output.contains("a hook rewrote the arguments of `rm`"), "{}", results[2].output);
    assert_eq!(ran.snapshot(), [r#"{"path":"/home/u/junk"}"#], "only the rewritten call ran, with the new arguments");
    let seen = hooks.snapshot();
    // Each call is checked just before it runs (these calls are not concurrency-safe, so one at a
    // time): the first deny wins (the second hook never sees that call); a rewrite is what the next
    // hook sees; the call's after-hook runs before the next call is checked.
    assert_eq!(
        seen,
        [
            r#"guard saw {"path":"/"}"#.to_string(),
            "after call_1_0 Error: denied by hook: refusing to delete /".into(),
            r#"guard saw {"path":"~/junk"}"#.into(),
            r#"second saw {"path":"/home/u/junk"}"#.into(),
            "after call_1_1 deleted".into(),
            r#"guard saw {"path":"bad"}"#.into(),
            r#"after call_1_2 Error: a hook rewrote the arguments of `rm` into ones that do not match its schema: "path" is a required property"#.into(),
        ]
    );
}

#[tokio::test]
async fn permissions_apply_before_hooks_and_a_hook_cannot_approve() {
    let ran = Log::default();
    let hooks = Log::default();
    let (_, shared) = scripted([ScriptedTurn::tool_call("rm", json!({"path": "/tmp/x"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder()
        .model(shared)
        .tool(recording("rm", &ran).destructive())
        .hook(Second(hooks.clone()))
        .build()
        .unwrap();
    let result = agent.run("go").await.unwrap();
    assert_eq!(only_result(&result).error_kind, Some(ToolErrorKind::Denied));
    assert!(!hooks.snapshot().iter().any(|s| s.starts_with("second saw")), "{:?}", hooks.snapshot());
    assert!(ran.snapshot().is_empty());
}

struct StopBeforeRun;

#[async_trait::async_trait]
impl Hooks for StopBeforeRun {
    async fn before_run(&self, _scope: &Scope, input: &RunInput) -> HookAction {
        if input.summary().contains("forbidden") { HookAction::Stop("pii".into()) } else { HookAction::Continue }
    }
}

#[tokio::test]
async fn a_before_run_stop_interrupts_with_a_guardrail_reason_before_any_model_call() {
    let (model, shared) = scripted([ScriptedTurn::text("never")]);
    let agent = Agent::builder().model(shared).hook(StopBeforeRun).build().unwrap();
    let result = failed_result(agent.run("something forbidden").await.unwrap_err());
    assert_eq!(result.state, RunState::Interrupted);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Guardrail);
    assert_eq!(error.reason.as_deref(), Some("guardrail: pii"));
    assert!(model.requests().is_empty());
    assert_eq!(types(&result.events), ["run.started", "run.interrupted"]);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Interrupted);
}

struct StopAtTurn(u32);

#[async_trait::async_trait]
impl Hooks for StopAtTurn {
    async fn before_model(&self, _scope: &Scope, turn: u32, messages: &[Message]) -> HookAction {
        if turn == self.0 {
            HookAction::Stop(format!("turn {turn} with {} messages", messages.len()))
        } else {
            HookAction::Continue
        }
    }
}

#[tokio::test]
async fn a_before_model_stop_interrupts_before_that_call() {
    let (model, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("never")]);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).hook(StopAtTurn(2)).build().unwrap();
    let result = failed_result(agent.run("go").await.unwrap_err());
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.interruption_reason(), Some("guardrail: turn 2 with 3 messages"));
    assert_eq!(result.error.unwrap().kind, RunErrorKind::Guardrail);
    assert_eq!(model.requests().len(), 1);
    assert_eq!(result.turns, 1);
    assert_eq!(*types(&result.events).last().unwrap(), "run.interrupted");
}

struct NoSecrets;

#[async_trait::async_trait]
impl Hooks for NoSecrets {
    async fn before_model(&self, _scope: &Scope, _turn: u32, messages: &[Message]) -> HookAction {
        if messages.iter().any(|m| m.text().contains("secret")) {
            HookAction::Stop("secret in the conversation".into())
        } else {
            HookAction::Continue
        }
    }
}

#[tokio::test]
async fn a_guardrail_stopped_run_adds_nothing_to_the_session_history() {
    // Were the blocked prompt kept, the next run would send it to the model (bypassing the
    // guardrail) or be stopped by it again, forever.
    let (model, shared) = scripted([ScriptedTurn::text("hi there"), ScriptedTurn::text("again")]);
    let agent = Agent::builder().model(shared).hook(NoSecrets).hook(StopBeforeRun).build().unwrap();
    let session = agent.session(loom_agent::SessionConfig::new("guarded"));
    let stopped = failed_result(session.run("tell me the secret").await.unwrap_err());
    assert_eq!(stopped.interruption_reason(), Some("guardrail: secret in the conversation"));
    let stopped = failed_result(session.run("something forbidden").await.unwrap_err());
    assert_eq!(stopped.interruption_reason(), Some("guardrail: pii"));
    let next = session.run("hello").await.unwrap();
    assert_eq!(next.output, "hi there");
    assert_eq!(model.requests()[0].messages, vec![Message::user("hello")]);
    // An interruption before any model answer adds nothing either: no question without a reply.
    let limited = failed_result(session.run(RunRequest::new("more").max_turns(0)).await.unwrap_err());
    assert_eq!(limited.interruption_reason(), Some("max_turns"));
    session.run("last").await.unwrap();
    assert_eq!(
        model.requests()[1].messages,
        vec![Message::user("hello"), Message::assistant("hi there"), Message::user("last")]
    );
}

#[derive(Clone, Default)]
struct Observer {
    events: Arc<Mutex<Vec<Event>>>,
    results: Arc<Mutex<Vec<RunResult>>>,
    models: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl Hooks for Observer {
    async fn after_model(&self, _scope: &Scope, _turn: u32, _response: &ModelResponse) {
        self.models.fetch_add(1, Ordering::SeqCst);
    }
    async fn after_run(&self, _scope: &Scope, result: &RunResult) {
        self.results.lock().unwrap().push(result.clone());
    }
    fn on_event(&self, event: &Event) {
        self.events.lock().unwrap().push(event.clone());
    }
}

#[tokio::test]
async fn on_event_sees_every_event_and_after_run_the_result() {
    let observer = Observer::default();
    let (_, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).hook(observer.clone()).build().unwrap();
    let result = agent.run("go").await.unwrap();
    assert_eq!(*observer.events.lock().unwrap(), result.events.to_vec());
    assert_eq!(*observer.results.lock().unwrap(), vec![result]);
    assert_eq!(observer.models.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// Budget
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct TokenBudget {
    limit: u64,
    recorded: Arc<Mutex<Vec<Usage>>>,
}

impl Budget for TokenBudget {
    fn check(&self, _scope: &Scope, run_usage: &Usage, _turns: u32, _tool_calls: u32) -> BudgetVerdict {
        if run_usage.total_tokens() >= self.limit {
            BudgetVerdict::Exceeded("max_tokens".into())
        } else {
            BudgetVerdict::Ok
        }
    }
    fn record(&self, _scope: &Scope, usage: &Usage) {
        self.recorded.lock().unwrap().push(*usage);
    }
}

#[tokio::test]
async fn an_exceeded_budget_interrupts_with_a_budget_reason() {
    let budget = TokenBudget { limit: 100, ..Default::default() };
    let usage = Usage { input_tokens: 60, output_tokens: 50, ..Usage::default() };
    let (model, shared) = scripted([ScriptedTurn::text("one").with_usage(usage), ScriptedTurn::text("two")]);
    let agent = Agent::builder().model(shared).budget(budget.clone()).build().unwrap();
    // The first run is within budget before its only call.
    agent.run("first").await.unwrap();
    assert_eq!(*budget.recorded.lock().unwrap(), vec![usage]);

    // Per run: a run whose own spend crosses the limit stops before the next call.
    let (_, shared) =
        scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})).with_usage(usage), ScriptedTurn::text("never")]);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).budget(budget.clone()).build().unwrap();
    let result = failed_result(agent.run("second").await.unwrap_err());
    assert_eq!(result.state, RunState::Interrupted);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Budget);
    assert_eq!(error.reason.as_deref(), Some("budget: max_tokens"));
    assert_eq!(result.interruption_reason(), Some("budget: max_tokens"));
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Interrupted);
    assert_eq!(model.requests().len(), 1);
}

struct ToolCallBudget(u32);

impl Budget for ToolCallBudget {
    fn check(&self, _scope: &Scope, _usage: &Usage, turns: u32, tool_calls: u32) -> BudgetVerdict {
        if turns >= 1 && tool_calls >= self.0 {
            BudgetVerdict::Exceeded("max_tool_calls".into())
        } else {
            BudgetVerdict::Ok
        }
    }
}

#[tokio::test]
async fn a_budget_stop_before_tools_leaves_no_tool_call_without_a_result() {
    let ran = Log::default();
    let (_, shared) = scripted([
        ScriptedTurn::tool_call("rm", json!({"path": "a"})).with_tool_call("rm", json!({"path": "b"})),
        ScriptedTurn::text("never"),
    ]);
    let agent = Agent::builder().model(shared).tool(recording("rm", &ran)).budget(ToolCallBudget(0)).build().unwrap();
    let result = failed_result(agent.run("go").await.unwrap_err());
    assert_eq!(result.state, RunState::Interrupted);
    assert_eq!(result.interruption_reason(), Some("budget: max_tool_calls"));
    assert!(ran.snapshot().is_empty(), "no tool runs once the budget is spent");
    // The log never claims a dispatch that did not happen: every tool.call has its tool.result.
    let calls = tool_call_ids(&result.events);
    let results: Vec<String> = tool_results(&result.events).into_iter().map(|r| r.call_id).collect();
    assert_eq!(calls, results, "{:?}", types(&result.events));
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Interrupted);
}

// ---------------------------------------------------------------------------------------------
// Audit log and journal
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Audit(Arc<Mutex<Vec<AuditRecord>>>);

#[async_trait::async_trait]
impl AuditLog for Audit {
    async fn append(&self, record: AuditRecord) -> Result<(), loom_agent::Error> {
        self.0.lock().unwrap().push(record);
        Ok(())
    }
}

#[tokio::test]
async fn the_audit_log_records_run_and_tool_actions_in_order() {
    let audit = Audit::default();
    let (_, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).audit_log(audit.clone()).build().unwrap();
    let result = agent.run(RunRequest::new("go").user("dora")).await.unwrap();
    let records = audit.0.lock().unwrap().clone();
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["run_started", "tool_call", "tool_result", "run_finished"]);
    for r in &records {
        assert_eq!(&*r.scope.run_id, result.run_id);
        assert_eq!(r.scope.user_id.as_deref(), Some("dora"));
    }
    assert_eq!(records[1].payload["args"], json!({"x": "a"}));
    assert_eq!(records[2].payload["ok"], true);
    assert_eq!(records[3].payload["state"], "completed");
}

#[derive(Clone, Default)]
struct Recorder {
    entries: Arc<Mutex<Vec<String>>>,
    fail_on_model: bool,
}

impl Recorder {
    fn record(&self, entry: &JournalEntry) -> Result<(), loom_agent::Error> {
        let line = match entry {
            JournalEntry::ModelResult { turn, .. } => format!("model {turn}"),
            JournalEntry::ToolIntent { call, .. } => format!("intent {}", call.id),
            JournalEntry::ToolResult { call_id, is_error, .. } => format!("result {call_id} {is_error}"),
            _ => "other".into(),
        };
        self.entries.lock().unwrap().push(line);
        if self.fail_on_model && matches!(entry, JournalEntry::ModelResult { .. }) {
            return Err(loom_agent::Error::Store("disk gone".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Journal for Recorder {
    async fn begin(&self, _: &RunRecord, _: &Lease, _: &[Event]) -> Result<(), loom_agent::Error> {
        Ok(())
    }
    async fn append(&self, _: &str, _: &Lease, entry: &JournalEntry, _: &[Event]) -> Result<(), loom_agent::Error> {
        self.record(entry)
    }
    async fn end(&self, _: &str, _: &Lease, _: RunState, _: &[Event]) -> Result<(), loom_agent::Error> {
        Ok(())
    }
    async fn acquire(&self, _: &str, _: &Lease) -> Result<u64, loom_agent::Error> {
        Ok(1)
    }
    async fn renew(&self, _: &str, _: &Lease) -> Result<(), loom_agent::Error> {
        Ok(())
    }
    async fn decide(&self, _: &str, _: &JournalEntry) -> Result<(), loom_agent::Error> {
        Ok(())
    }
    async fn load(&self, _: &str) -> Result<Option<JournaledRun>, loom_agent::Error> {
        Ok(None)
    }
    async fn list(&self, _: &RunFilter) -> Result<Vec<JournalRunSummary>, loom_agent::Error> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn the_journal_records_every_effect_and_a_journal_failure_fails_the_run() {
    let journal = Recorder::default();
    let (_, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).journal(journal.clone()).build().unwrap();
    agent.run("go").await.unwrap();
    assert_eq!(*journal.entries.lock().unwrap(), ["model 1", "intent call_1_0", "result call_1_0 false", "model 2"]);

    let journal = Recorder { fail_on_model: true, ..Recorder::default() };
    let (_, shared) = scripted([ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).journal(journal).build().unwrap();
    let result = failed_result(agent.run("go").await.unwrap_err());
    assert_eq!(result.state, RunState::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, RunErrorKind::Store);
    assert!(error.message.contains("disk gone"), "{}", error.message);
}
