//! `StandardPermissions`, `PerUserPermissions` and `FnApproval`: every path of a permission
//! decision, as the model and the event log see it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use loom_agent::governance::{
    Approval, ApprovalHandler, ApprovalRequest, Decision, FnApproval, Hooks, PerUserPermissions, PermissionMode,
    Permissions, Scope, StandardPermissions, ToolHookAction,
};
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::tool::{FunctionTool, ToolErrorKind, ToolFlags, ToolOutput, ToolSpec};
use loom_agent::{Agent, AgentBuilder, EventKind, RunRequest, RunResult, RunState, ToolCall};
use serde_json::{Value, json};

/// A tool that records the arguments it ran with and answers `"<name> ok"`.
fn tool(name: &str, ran: &Log) -> FunctionTool {
    let (ran, label) = (ran.clone(), name.to_string());
    let schema = json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]});
    FunctionTool::new(name, "Does something to a path.", schema, move |_c, args| {
        ran.push(format!("{label} {}", args["path"].as_str().unwrap_or_default()));
        let out = format!("{label} ok");
        async move { Ok(ToolOutput::text(out)) }
    })
}

/// Tools: `read` (plain), `rm` (destructive), `write_file` (destructive, an edit tool), `secret`
/// (requires permission).
fn with_tools(builder: AgentBuilder, ran: &Log) -> AgentBuilder {
    builder
        .tool(tool("read", ran))
        .tool(tool("rm", ran).destructive())
        .tool(tool("write_file", ran).destructive())
        .tool(tool("secret", ran).requires_permission())
}

fn call(name: &str) -> ScriptedTurn {
    ScriptedTurn::tool_call(name, json!({"path": "/tmp/a"}))
}

struct Outcome {
    result: RunResult,
    model: Arc<ScriptedModel>,
    ran: Log,
}

impl Outcome {
    /// The `permission.decision` events as (tool, decision, by, reason).
    fn decisions(&self) -> Vec<(String, String, String, Option<String>)> {
        self.result
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::PermissionDecision(d) => {
                    Some((d.tool.clone(), d.decision.to_string(), d.by.to_string(), d.reason.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The tool results' outputs, in order.
    fn outputs(&self) -> Vec<String> {
        tool_results(&self.result.events).into_iter().map(|r| r.output).collect()
    }

    /// What the model was sent as tool results in its last request.
    fn model_saw(&self) -> Vec<String> {
        let requests = self.model.requests();
        tool_messages(&requests.last().unwrap().messages).into_iter().map(|(_, content, _)| content).collect()
    }
}

fn d(tool: &str, decision: &str, by: &str, reason: Option<&str>) -> (String, String, String, Option<String>) {
    (tool.into(), decision.into(), by.into(), reason.map(Into::into))
}

/// Runs one agent whose model makes `turns` (then answers "done"), as user `user`.
async fn run_with(
    turns: Vec<ScriptedTurn>,
    user: Option<&str>,
    configure: impl FnOnce(AgentBuilder) -> AgentBuilder,
) -> Outcome {
    let ran = Log::default();
    let mut script = turns;
    script.push(ScriptedTurn::text("done"));
    let (model, shared) = scripted(script);
    let agent = configure(with_tools(Agent::builder().model(shared), &ran)).build().unwrap();
    let mut request = RunRequest::new("go");
    if let Some(user) = user {
        request = request.user(user);
    }
    let result = agent.run(request).await.unwrap();
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Completed);
    Outcome { result, model, ran }
}

async fn run_calls(names: &[&str], configure: impl FnOnce(AgentBuilder) -> AgentBuilder) -> Outcome {
    run_with(names.iter().map(|n| call(n)).collect(), Some("carol"), configure).await
}

// ---------------------------------------------------------------------------------------------
// The policy's order, directly
// ---------------------------------------------------------------------------------------------

fn spec(name: &str, destructive: bool, requires_permission: bool) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: String::new(),
        parameters: json!({"type": "object"}),
        flags: ToolFlags { destructive, requires_permission, ..ToolFlags::default() },
    }
}

#[test]
fn the_decision_order() {
    let plain = spec("read", false, false);
    let rm = spec("rm", true, false);
    let write = spec("write_file", true, false);
    let secret = spec("secret", false, true);
    let allow = Decision::Allow;
    let ask = |why: &str| Decision::Ask(why.to_string());
    let deny = |why: &str| Decision::Deny(why.to_string());

    let default = StandardPermissions::new();
    assert_eq!(default.decide(&plain), allow);
    assert_eq!(default.decide(&rm), ask("`rm` is destructive"));
    assert_eq!(default.decide(&write), ask("`write_file` is destructive"));
    assert_eq!(default.decide(&secret), ask("`secret` requires permission"));

    // The deny list beats everything, Bypass included.
    let bypass = StandardPermissions::new().mode(PermissionMode::Bypass).deny("rm");
    assert_eq!(bypass.decide(&rm), deny("`rm` is on the deny list"));
    assert_eq!(bypass.decide(&write), allow);
    assert_eq!(bypass.decide(&secret), allow);

    // The allow list denies what is not on it, in every mode; being on it does not skip approval.
    let listed = StandardPermissions::new().allow("read").allow("rm");
    assert_eq!(listed.decide(&plain), allow);
    assert_eq!(listed.decide(&rm), ask("`rm` is destructive"));
    assert_eq!(listed.decide(&secret), deny("`secret` is not on the allow list"));
    let listed_bypass = listed.clone().mode(PermissionMode::Bypass);
    assert_eq!(listed_bypass.decide(&rm), allow);
    assert_eq!(listed_bypass.decide(&write), deny("`write_file` is not on the allow list"));
    assert_eq!(
        StandardPermissions::new().allow_tools(Vec::<String>::new()).decide(&plain),
        deny("`read` is not on the allow list")
    );

    // AcceptEdits lets the edit tools through, nothing else.
    let edits = StandardPermissions::new().mode(PermissionMode::AcceptEdits);
    assert_eq!(edits.decide(&write), allow);
    assert_eq!(edits.decide(&rm), ask("`rm` is destructive"));
    assert_eq!(edits.decide(&secret), ask("`secret` requires permission"));
    let custom = edits.clone().edit_tools(["rm"]);
    assert_eq!(custom.decide(&rm), allow);
    assert_eq!(custom.decide(&write), ask("`write_file` is destructive"));
    for name in StandardPermissions::DEFAULT_EDIT_TOOLS {
        assert_eq!(edits.decide(&spec(name, true, true)), allow, "{name}");
    }

    // The ask list adds approval to unflagged tools.
    assert_eq!(StandardPermissions::new().ask("read").decide(&plain), ask("`read` is on the ask list"));
    assert_eq!(StandardPermissions::new().ask("read").mode(PermissionMode::Bypass).decide(&plain), allow);
}

// ---------------------------------------------------------------------------------------------
// Through a run
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_deny_list_denies_and_the_model_is_told() {
    let out = run_calls(&["read"], |b| b.permissions(StandardPermissions::new().deny("read"))).await;
    let expected = "Error: permission denied: `read` is on the deny list";
    assert_eq!(out.outputs(), [expected]);
    assert_eq!(tool_results(&out.result.events)[0].error_kind, Some(ToolErrorKind::Denied));
    assert_eq!(out.decisions(), [d("read", "deny", "policy", Some("`read` is on the deny list"))]);
    assert_eq!(out.model_saw(), [expected]);
    assert!(out.ran.snapshot().is_empty());
}

#[tokio::test]
async fn the_allow_list_excludes_every_other_tool() {
    let out = run_with(vec![call("read").with_tool_call("secret", json!({"path": "x"}))], Some("carol"), |b| {
        b.permissions(StandardPermissions::new().allow("read"))
    })
    .await;
    assert_eq!(out.outputs(), ["read ok", "Error: permission denied: `secret` is not on the allow list"]);
    assert_eq!(out.decisions(), [d("secret", "deny", "policy", Some("`secret` is not on the allow list"))]);
    assert_eq!(out.ran.snapshot(), ["read /tmp/a"]);
    assert_eq!(out.model_saw()[1], "Error: permission denied: `secret` is not on the allow list");
}

#[tokio::test]
async fn bypass_allows_flagged_tools_without_asking() {
    let out =
        run_calls(&["rm", "secret"], |b| b.permissions(StandardPermissions::new().mode(PermissionMode::Bypass))).await;
    assert_eq!(out.outputs(), ["rm ok", "secret ok"]);
    // Allowing a flagged tool without approval is still recorded.
    assert_eq!(out.decisions(), [d("rm", "allow", "policy", None), d("secret", "allow", "policy", None)]);
}

#[tokio::test]
async fn accept_edits_allows_edit_tools_and_still_asks_for_other_destructive_tools() {
    let out = run_calls(&["write_file", "rm"], |b| {
        b.permissions(StandardPermissions::new().mode(PermissionMode::AcceptEdits))
    })
    .await;
    let denied =
        "Error: permission denied: `rm` is destructive and needs approval, and no approval handler is configured";
    assert_eq!(out.outputs(), ["write_file ok", denied]);
    assert_eq!(
        out.decisions(),
        [
            d("write_file", "allow", "policy", None),
            d(
                "rm",
                "deny",
                "policy",
                Some("`rm` is destructive and needs approval, and no approval handler is configured")
            ),
        ]
    );
    assert_eq!(out.ran.snapshot(), ["write_file /tmp/a"]);
    assert_eq!(out.model_saw(), ["write_file ok", denied]);
}

#[tokio::test]
async fn ask_without_a_handler_denies_with_a_clear_message() {
    let out = run_calls(&["secret"], |b| b.permissions(StandardPermissions::new())).await;
    let message = "`secret` requires permission and needs approval, and no approval handler is configured";
    assert_eq!(out.outputs(), [format!("Error: permission denied: {message}")]);
    assert_eq!(out.decisions(), [d("secret", "deny", "policy", Some(message))]);
    assert!(out.ran.snapshot().is_empty());
}

/// An approval handler answering `answer`, counting how often it was asked.
fn counting(answer: Approval) -> (impl ApprovalHandler, Arc<AtomicU32>) {
    let asked = Arc::new(AtomicU32::new(0));
    let count = asked.clone();
    let handler = FnApproval::new(move |_request| {
        count.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(answer.clone())
    });
    (handler, asked)
}

#[tokio::test]
async fn a_handler_that_allows() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler = FnApproval::new(move |request: ApprovalRequest| {
        log.lock().unwrap().push((request.tool.name.clone(), request.args.clone(), request.reason.clone()));
        async { Approval::Allow }
    });
    let out = run_calls(&["rm"], |b| b.permissions(StandardPermissions::new()).approval_handler(handler)).await;
    assert_eq!(out.outputs(), ["rm ok"]);
    assert_eq!(out.decisions(), [d("rm", "allow", "approver", None)]);
    assert_eq!(
        *seen.lock().unwrap(),
        [("rm".to_string(), json!({"path": "/tmp/a"}), "`rm` is destructive".to_string())]
    );
}

#[tokio::test]
async fn a_handler_that_denies() {
    let (handler, asked) = counting(Approval::Deny("not today".into()));
    let out = run_calls(&["rm", "rm"], |b| b.permissions(StandardPermissions::new()).approval_handler(handler)).await;
    let denied = "Error: denied by approver: not today";
    assert_eq!(out.outputs(), [denied, denied]);
    assert_eq!(asked.load(Ordering::SeqCst), 2, "a plain deny is asked again next time");
    assert_eq!(
        out.decisions(),
        [d("rm", "deny", "approver", Some("not today")), d("rm", "deny", "approver", Some("not today"))]
    );
    assert_eq!(out.model_saw(), [denied, denied]);
    assert!(out.ran.snapshot().is_empty());
}

#[tokio::test]
async fn a_handler_that_edits_the_arguments() {
    let (handler, _) = counting(Approval::Edit(json!({"path": "/tmp/safe"})));
    let out = run_calls(&["rm"], |b| b.permissions(StandardPermissions::new()).approval_handler(handler)).await;
    assert_eq!(out.ran.snapshot(), ["rm /tmp/safe"]);
    assert_eq!(out.decisions(), [d("rm", "edit", "approver", None)]);
}

#[tokio::test]
async fn allow_for_run_is_remembered_for_the_rest_of_the_run() {
    let (handler, asked) = counting(Approval::AllowForRun);
    let out =
        run_calls(&["rm", "rm", "secret"], |b| b.permissions(StandardPermissions::new()).approval_handler(handler))
            .await;
    assert_eq!(out.outputs(), ["rm ok", "rm ok", "secret ok"]);
    assert_eq!(asked.load(Ordering::SeqCst), 2, "asked for the first rm and for secret, not the second rm");
    assert_eq!(
        out.decisions(),
        [
            d("rm", "allow", "approver", Some("for this run")),
            d("rm", "allow", "remembered", None),
            d("secret", "allow", "approver", Some("for this run")),
        ]
    );
}

#[tokio::test]
async fn remembered_approvals_do_not_outlive_their_run() {
    let (handler, asked) = counting(Approval::AllowForRun);
    let ran = Log::default();
    let model = ScriptedModel::new([call("rm"), ScriptedTurn::text("done")]).looping();
    let (_, shared) = share(model);
    let agent = with_tools(Agent::builder().model(shared), &ran).approval_handler(handler).build().unwrap();
    agent.run("one").await.unwrap();
    agent.run("two").await.unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 2);
    assert_eq!(ran.snapshot(), ["rm /tmp/a", "rm /tmp/a"]);
}

#[tokio::test]
async fn deny_for_run_is_remembered_for_the_rest_of_the_run() {
    let (handler, asked) = counting(Approval::DenyForRun("stop deleting".into()));
    let out = run_calls(&["rm", "rm"], |b| b.permissions(StandardPermissions::new()).approval_handler(handler)).await;
    let denied = "Error: denied by approver: stop deleting";
    assert_eq!(out.outputs(), [denied, denied]);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(
        out.decisions(),
        [d("rm", "deny", "approver", Some("stop deleting")), d("rm", "deny", "remembered", Some("stop deleting"))]
    );
    assert_eq!(out.model_saw(), [denied, denied]);
    assert!(out.ran.snapshot().is_empty());
}

#[tokio::test]
async fn per_user_permissions_route_by_user() {
    let policy = || {
        PerUserPermissions::new(StandardPermissions::new().deny("rm"))
            .user("admin", StandardPermissions::new().mode(PermissionMode::Bypass))
            .user("reader", StandardPermissions::new().allow("read"))
    };
    let admin = run_with(vec![call("rm")], Some("admin"), |b| b.permissions(policy())).await;
    assert_eq!(admin.outputs(), ["rm ok"]);
    assert_eq!(admin.decisions(), [d("rm", "allow", "policy", None)]);

    let carol = run_with(vec![call("rm")], Some("carol"), |b| b.permissions(policy())).await;
    assert_eq!(carol.outputs(), ["Error: permission denied: `rm` is on the deny list"]);

    let anonymous = run_with(vec![call("rm")], None, |b| b.permissions(policy())).await;
    assert_eq!(anonymous.outputs(), ["Error: permission denied: `rm` is on the deny list"]);

    let reader = run_with(vec![call("read").with_tool_call("write_file", json!({"path": "x"}))], Some("reader"), |b| {
        b.permissions(policy())
    })
    .await;
    assert_eq!(reader.outputs(), ["read ok", "Error: permission denied: `write_file` is not on the allow list"]);

    // A policy of your own type works as a user's policy too.
    struct Never;
    #[async_trait::async_trait]
    impl Permissions for Never {
        async fn check(&self, scope: &Scope, _tool: &ToolSpec, _args: &Value) -> Decision {
            Decision::Deny(format!("never for {}", scope.user_id.as_deref().unwrap_or("-")))
        }
    }
    let out = run_with(vec![call("read")], Some("eve"), |b| {
        b.permissions(PerUserPermissions::new(StandardPermissions::new()).user("eve", Never))
    })
    .await;
    assert_eq!(out.outputs(), ["Error: permission denied: never for eve"]);
}

// ---------------------------------------------------------------------------------------------
// Hooks that fail
// ---------------------------------------------------------------------------------------------

struct SlowHook;

#[async_trait::async_trait]
impl Hooks for SlowHook {
    async fn before_tool(&self, _scope: &Scope, _call: &ToolCall, _args: &Value) -> ToolHookAction {
        tokio::time::sleep(Duration::from_secs(5)).await;
        ToolHookAction::Continue
    }
}

struct PanickyHook;

#[async_trait::async_trait]
impl Hooks for PanickyHook {
    async fn before_tool(&self, _scope: &Scope, _call: &ToolCall, _args: &Value) -> ToolHookAction {
        panic!("hook bug");
    }
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_times_out_denies() {
    let out = run_calls(&["read"], |b| b.hook(SlowHook).hook_timeout(Duration::from_millis(20))).await;
    let denied = "Error: denied by hook: a hook did not answer within 20 ms";
    assert_eq!(out.outputs(), [denied]);
    assert_eq!(out.decisions(), [d("read", "deny", "hook", Some("a hook did not answer within 20 ms"))]);
    assert_eq!(out.model_saw(), [denied]);
    assert!(out.ran.snapshot().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_hook_that_times_out_is_skipped_when_failures_do_not_deny() {
    let out =
        run_calls(&["read"], |b| b.hook(SlowHook).hook_timeout(Duration::from_millis(20)).hook_failure_denies(false))
            .await;
    assert_eq!(out.outputs(), ["read ok"]);
    assert!(out.decisions().is_empty());
    assert_eq!(out.model_saw(), ["read ok"]);
}

#[tokio::test]
async fn a_hook_that_panics_denies() {
    let out = run_calls(&["read"], |b| b.hook(PanickyHook)).await;
    assert_eq!(out.outputs(), ["Error: denied by hook: a hook panicked"]);
    assert_eq!(out.decisions(), [d("read", "deny", "hook", Some("a hook panicked"))]);
    assert_eq!(out.model_saw(), ["Error: denied by hook: a hook panicked"]);

    let out = run_calls(&["read"], |b| b.hook(PanickyHook).hook_failure_denies(false)).await;
    assert_eq!(out.outputs(), ["read ok"]);
    assert!(out.decisions().is_empty());
}

#[tokio::test]
async fn hooks_run_after_an_approval_and_can_still_deny() {
    struct DenyRm;
    #[async_trait::async_trait]
    impl Hooks for DenyRm {
        async fn before_tool(&self, _scope: &Scope, call: &ToolCall, _args: &Value) -> ToolHookAction {
            if call.name == "rm" { ToolHookAction::Deny("hook says no".into()) } else { ToolHookAction::Continue }
        }
    }
    let (handler, asked) = counting(Approval::Allow);
    let out = run_calls(&["rm"], |b| b.approval_handler(handler).hook(DenyRm)).await;
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(out.outputs(), ["Error: denied by hook: hook says no"]);
    assert_eq!(out.decisions(), [d("rm", "allow", "approver", None), d("rm", "deny", "hook", Some("hook says no"))]);
}

/// Asks for paths under /tmp, denies every other path.
struct TmpOnly;

#[async_trait::async_trait]
impl Permissions for TmpOnly {
    async fn check(&self, _scope: &Scope, tool: &ToolSpec, args: &Value) -> Decision {
        if args["path"].as_str().is_some_and(|p| p.starts_with("/tmp")) {
            Decision::Ask(format!("`{}` touches /tmp", tool.name))
        } else {
            Decision::Deny("only /tmp".into())
        }
    }
}

#[tokio::test]
async fn a_remembered_allow_does_not_override_a_policy_deny() {
    let (handler, asked) = counting(Approval::AllowForRun);
    let turns = vec![call("rm"), ScriptedTurn::tool_call("rm", json!({"path": "/etc"})), call("rm")];
    let out = run_with(turns, Some("carol"), |b| b.permissions(TmpOnly).approval_handler(handler)).await;
    assert_eq!(out.outputs(), ["rm ok", "Error: permission denied: only /tmp", "rm ok"]);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert_eq!(
        out.decisions(),
        [
            d("rm", "allow", "approver", Some("for this run")),
            d("rm", "deny", "policy", Some("only /tmp")),
            d("rm", "allow", "remembered", None),
        ]
    );
    assert_eq!(out.ran.snapshot(), ["rm /tmp/a", "rm /tmp/a"]);
}
