//! `StandardBudget`: limits per run, per user and in total, soft warnings, usage queries and
//! bounded memory.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use loom_agent::governance::{Budget, BudgetNotice, BudgetVerdict, Scope, StandardBudget};
use loom_agent::message::Usage;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::{Agent, EventKind, RunErrorKind, RunRequest, RunResult, RunState};
use serde_json::json;

fn tokens(input: u64, output: u64) -> Usage {
    Usage { input_tokens: input, output_tokens: output, ..Usage::default() }
}

fn cost(usd: f64) -> Usage {
    Usage { cost_usd: usd, ..Usage::default() }
}

/// A turn calling `lookup` that reports `usage`.
fn tool_turn(usage: Usage) -> ScriptedTurn {
    ScriptedTurn::tool_call("lookup", json!({"x": "a"})).with_usage(usage)
}

/// The budget events of a log as (type, limit, used, max).
fn budget_events(result: &RunResult) -> Vec<(&'static str, String, Option<f64>, Option<f64>)> {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BudgetWarning(b) | EventKind::BudgetExceeded(b) => {
                Some((e.type_name(), b.limit.clone(), b.used, b.max))
            }
            _ => None,
        })
        .collect()
}

fn budget_kinds(result: &RunResult) -> Vec<(&'static str, String)> {
    budget_events(result).into_iter().map(|(t, l, _, _)| (t, l)).collect()
}

fn agent_with(budget: &StandardBudget, model: ScriptedModel) -> (Arc<ScriptedModel>, Agent) {
    let (model, shared) = share(model);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).budget(budget.clone()).build().unwrap();
    (model, agent)
}

/// Runs until the budget stops the run and checks the common shape: interrupted with reason
/// `budget: <limit>`, one warning then the exceeded event for that limit, a well-formed log.
async fn stopped_by(budget: StandardBudget, model: ScriptedModel, limit: &str) -> (Arc<ScriptedModel>, RunResult) {
    let (model, agent) = agent_with(&budget, model);
    let result = failed_result(agent.run(RunRequest::new("go").user("u")).await.unwrap_err());
    assert_eq!(result.state, RunState::Interrupted);
    let error = result.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::Budget);
    assert_eq!(result.interruption_reason(), Some(format!("budget: {limit}").as_str()));
    assert_eq!(
        budget_kinds(&result),
        [("budget.warning", limit.to_string()), ("budget.exceeded", limit.to_string())],
        "{:?}",
        types(&result.events)
    );
    // The stop comes right after budget.exceeded; no tool.call without its result.
    let ty = types(&result.events);
    let exceeded = ty.iter().position(|t| *t == "budget.exceeded").unwrap();
    assert_eq!(&ty[exceeded + 1..], ["run.interrupted"]);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Interrupted);
    (model, result)
}

/// Two tool turns: the first takes the run past the warning threshold, the second past the limit,
/// so the run stops before the second turn's tools.
async fn two_turn_stop(budget: StandardBudget, first: Usage, second: Usage, limit: &str) {
    let model = ScriptedModel::new([tool_turn(first), tool_turn(second), ScriptedTurn::text("never")]);
    let (model, result) = stopped_by(budget, model, limit).await;
    assert_eq!(model.requests().len(), 2);
    assert_eq!(tool_results(&result.events).len(), 1, "the second turn's tools never ran");
    assert_eq!(result.turns, 2);
}

#[tokio::test]
async fn max_tokens_stops_the_run() {
    two_turn_stop(StandardBudget::new().max_tokens(100), tokens(40, 45), tokens(10, 10), "max_tokens").await;
}

#[tokio::test]
async fn max_tokens_counts_cached_input_and_cache_writes() {
    let first = Usage { cached_input_tokens: 50, cache_write_tokens: 35, ..Usage::default() };
    two_turn_stop(StandardBudget::new().max_tokens(100), first, tokens(0, 20), "max_tokens").await;
}

#[tokio::test]
async fn max_input_tokens_stops_the_run() {
    let budget = StandardBudget::new().max_input_tokens(100);
    two_turn_stop(budget, tokens(85, 500), tokens(20, 500), "max_input_tokens").await;
}

#[tokio::test]
async fn max_output_tokens_stops_the_run() {
    let budget = StandardBudget::new().max_output_tokens(100);
    two_turn_stop(budget, tokens(500, 85), tokens(500, 20), "max_output_tokens").await;
}

#[tokio::test]
async fn max_cost_usd_stops_the_run() {
    two_turn_stop(StandardBudget::new().max_cost_usd(1.0), cost(0.85), cost(0.2), "max_cost_usd").await;
}

#[tokio::test(start_paused = true)]
async fn max_wall_clock_stops_the_run() {
    // Each model call takes 3 s: the checks see 0, 3, 3, 6, 6, 9 (warning at 8), 9, 12 (stop).
    let turn = tool_turn(Usage::default()).with_delay(Duration::from_secs(3));
    let budget = StandardBudget::new().max_wall_clock(Duration::from_secs(10));
    let (model, result) = stopped_by(budget, ScriptedModel::new([turn]).looping(), "max_wall_clock").await;
    assert_eq!(model.requests().len(), 4);
    assert_eq!(tool_results(&result.events).len(), 3);
    let events = budget_events(&result);
    assert_eq!(events[0].2, Some(9.0));
    assert_eq!(events[1].2, Some(12.0));
    assert_eq!(events[1].3, Some(10.0));
}

#[tokio::test]
async fn max_turns_stops_the_run() {
    // Warning once 4 of 5 model calls are made; the limit is reached after the fifth, before its
    // tools (their results could never be read).
    let budget = StandardBudget::new().max_turns(5);
    let model = ScriptedModel::new([tool_turn(Usage::default())]).looping();
    let (model, result) = stopped_by(budget, model, "max_turns").await;
    assert_eq!(model.requests().len(), 5);
    assert_eq!(tool_results(&result.events).len(), 4);
    assert_eq!(result.turns, 5);
}

#[tokio::test]
async fn max_tool_calls_stops_the_run() {
    let budget = StandardBudget::new().max_tool_calls(5);
    let model = ScriptedModel::new([tool_turn(Usage::default())]).looping();
    let (model, result) = stopped_by(budget, model, "max_tool_calls").await;
    assert_eq!(tool_results(&result.events).len(), 5, "five calls run, then the limit is reached");
    assert_eq!(model.requests().len(), 5);
    let events = budget_events(&result);
    assert_eq!(events[0].2, Some(4.0));
    assert_eq!(events[1].2, Some(5.0));
}

#[tokio::test]
async fn a_warning_at_eighty_percent_does_not_stop_the_run() {
    let budget = StandardBudget::new().max_tokens(100);
    let model = ScriptedModel::new([tool_turn(tokens(80, 5)), ScriptedTurn::text("done").with_usage(tokens(5, 5))]);
    let (_, agent) = agent_with(&budget, model);
    let result = agent.run("go").await.unwrap();
    assert_eq!(result.output, "done");
    // Checked before the tools (85) and before the second call (85): one warning.
    assert_eq!(budget_events(&result), [("budget.warning", "max_tokens".to_string(), Some(85.0), Some(100.0))]);
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Completed);

    // A custom threshold, and no warning below it.
    let budget = StandardBudget::new().max_tokens(100).soft_warning_at(0.9);
    let model = ScriptedModel::new([tool_turn(tokens(80, 5)), ScriptedTurn::text("done")]);
    let (_, agent) = agent_with(&budget, model);
    assert!(budget_events(&agent.run("go").await.unwrap()).is_empty());
}

#[tokio::test]
async fn per_user_limits_span_runs_and_leave_other_users_alone() {
    let budget = StandardBudget::new().per_user_max_tokens(100);
    let model = ScriptedModel::new([ScriptedTurn::text("ok").with_usage(tokens(30, 30))]).looping();
    let (model, agent) = agent_with(&budget, model);
    let alice = || RunRequest::new("hi").user("alice");

    let first = agent.run(alice()).await.unwrap();
    assert!(budget_events(&first).is_empty());
    // 60 of 100 used before the second run's call: below the warning threshold, so it runs.
    let second = agent.run(alice()).await.unwrap();
    assert!(budget_events(&second).is_empty());
    assert_eq!(budget.usage_for(Some("alice")).total_tokens, 120);

    let third = failed_result(agent.run(alice()).await.unwrap_err());
    assert_eq!(third.state, RunState::Interrupted);
    assert_eq!(third.interruption_reason(), Some("budget: per_user_max_tokens"));
    assert_eq!(
        budget_events(&third),
        [("budget.exceeded", "per_user_max_tokens".to_string(), Some(120.0), Some(100.0))]
    );
    assert_eq!(model.requests().len(), 2, "the third run made no model call");

    let bob = agent.run(RunRequest::new("hi").user("bob")).await.unwrap();
    assert_eq!(bob.state, RunState::Completed);
    assert!(budget_events(&bob).is_empty());

    let alice_usage = budget.usage_for(Some("alice"));
    assert_eq!(alice_usage.input_tokens, 60);
    assert_eq!(alice_usage.output_tokens, 60);
    assert_eq!(alice_usage.total_tokens, 120);
    assert_eq!(alice_usage.model_calls, 2);
    assert_eq!(alice_usage.runs, 3);
    assert_eq!(alice_usage.active_runs, 0);
    let bob_usage = budget.usage_for(Some("bob"));
    assert_eq!((bob_usage.total_tokens, bob_usage.runs), (60, 1));
    assert_eq!(budget.usage_for(Some("nobody")), Default::default());
    assert_eq!(budget.usage_for(None).runs, 0);
    let total = budget.total_usage();
    assert_eq!((total.total_tokens, total.runs, total.model_calls), (180, 4, 3));
}

#[tokio::test]
async fn per_user_cost_input_and_output_limits() {
    for (budget, usage, limit) in [
        (StandardBudget::new().per_user_max_cost_usd(1.0), cost(0.6), "per_user_max_cost_usd"),
        (StandardBudget::new().per_user_max_input_tokens(100), tokens(60, 0), "per_user_max_input_tokens"),
        (StandardBudget::new().per_user_max_output_tokens(100), tokens(0, 60), "per_user_max_output_tokens"),
    ] {
        let model = ScriptedModel::new([ScriptedTurn::text("ok").with_usage(usage)]).looping();
        let (_, agent) = agent_with(&budget, model);
        agent.run(RunRequest::new("hi").user("alice")).await.unwrap();
        agent.run(RunRequest::new("hi").user("alice")).await.unwrap();
        let third = failed_result(agent.run(RunRequest::new("hi").user("alice")).await.unwrap_err());
        assert_eq!(third.interruption_reason(), Some(format!("budget: {limit}").as_str()));
        agent.run(RunRequest::new("hi").user("bob")).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn per_user_wall_clock_counts_time_in_runs() {
    let budget = StandardBudget::new().per_user_max_wall_clock(Duration::from_secs(5));
    let model = ScriptedModel::new([ScriptedTurn::text("ok").with_delay(Duration::from_secs(3))]).looping();
    let (_, agent) = agent_with(&budget, model);
    agent.run(RunRequest::new("hi").user("alice")).await.unwrap();
    // Time between runs does not count.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let second = agent.run(RunRequest::new("hi").user("alice")).await.unwrap();
    assert!(budget_events(&second).is_empty(), "3 s of 5 is below the warning threshold");
    assert_eq!(budget.usage_for(Some("alice")).wall_clock, Duration::from_secs(6));
    let third = failed_result(agent.run(RunRequest::new("hi").user("alice")).await.unwrap_err());
    assert_eq!(third.interruption_reason(), Some("budget: per_user_max_wall_clock"));
    agent.run(RunRequest::new("hi").user("bob")).await.unwrap();
    assert_eq!(budget.usage_for(Some("bob")).wall_clock, Duration::from_secs(3));
    assert_eq!(budget.total_usage().wall_clock, Duration::from_secs(9));
}

#[tokio::test]
async fn runs_without_a_user_share_the_anonymous_account() {
    let budget = StandardBudget::new().per_user_max_tokens(100);
    let model = ScriptedModel::new([ScriptedTurn::text("ok").with_usage(tokens(50, 50))]).looping();
    let (_, agent) = agent_with(&budget, model);
    agent.run("one").await.unwrap();
    let second = failed_result(agent.run("two").await.unwrap_err());
    assert_eq!(second.interruption_reason(), Some("budget: per_user_max_tokens"));
    let anonymous = budget.usage_for(None);
    assert_eq!((anonymous.total_tokens, anonymous.runs), (100, 2));
    agent.run(RunRequest::new("three").user("alice")).await.unwrap();
}

#[tokio::test]
async fn the_total_limit_covers_every_user() {
    let budget = StandardBudget::new().total_max_tokens(100).total_max_cost_usd(10.0);
    let usage = Usage { cost_usd: 0.5, ..tokens(30, 30) };
    let model = ScriptedModel::new([ScriptedTurn::text("ok").with_usage(usage)]).looping();
    let (_, agent) = agent_with(&budget, model);
    agent.run(RunRequest::new("hi").user("alice")).await.unwrap();
    agent.run(RunRequest::new("hi").user("bob")).await.unwrap();
    let carol = failed_result(agent.run(RunRequest::new("hi").user("carol")).await.unwrap_err());
    assert_eq!(carol.interruption_reason(), Some("budget: total_max_tokens"));
    let total = budget.total_usage();
    assert_eq!((total.total_tokens, total.cost_usd, total.runs), (120, 1.0, 3));

    // Another agent sharing the budget (a clone) is stopped as well.
    let model = ScriptedModel::new([ScriptedTurn::text("ok")]);
    let (_, other) = agent_with(&budget, model);
    let stopped = failed_result(other.run("hi").await.unwrap_err());
    assert_eq!(stopped.interruption_reason(), Some("budget: total_max_tokens"));
}

#[tokio::test]
async fn total_cost_limit() {
    let budget = StandardBudget::new().total_max_cost_usd(1.0);
    let model = ScriptedModel::new([ScriptedTurn::text("ok").with_usage(cost(0.6))]).looping();
    let (_, agent) = agent_with(&budget, model);
    agent.run(RunRequest::new("hi").user("alice")).await.unwrap();
    agent.run(RunRequest::new("hi").user("bob")).await.unwrap();
    let third = failed_result(agent.run(RunRequest::new("hi").user("carol")).await.unwrap_err());
    assert_eq!(third.interruption_reason(), Some("budget: total_max_cost_usd"));
}

fn scope(run: &str, user: Option<&str>) -> Scope {
    Scope { run_id: Arc::from(run), session_id: Arc::from("s"), user_id: user.map(Arc::from) }
}

#[test]
fn each_limit_in_the_warning_zone_is_warned_about_once_per_run() {
    let budget = StandardBudget::new().max_tokens(100).max_cost_usd(1.0);
    let run = scope("r1", Some("alice"));
    budget.run_started(&run);
    let usage = Usage { cost_usd: 0.9, ..tokens(85, 0) };
    assert_eq!(budget.check(&run, &usage, 1, 0), BudgetVerdict::Warn(BudgetNotice::new("max_tokens", 85.0, 100.0)));
    assert_eq!(budget.check(&run, &usage, 1, 0), BudgetVerdict::Warn(BudgetNotice::new("max_cost_usd", 0.9, 1.0)));
    assert_eq!(budget.check(&run, &usage, 1, 0), BudgetVerdict::Ok);
    // Exceeded wins over warnings, and is reported every time.
    let over = Usage { cost_usd: 1.0, ..tokens(85, 0) };
    for _ in 0..2 {
        assert_eq!(
            budget.check(&run, &over, 1, 0),
            BudgetVerdict::Exceeded(BudgetNotice::new("max_cost_usd", 1.0, 1.0))
        );
    }
    budget.run_finished(&run);
    // A new run is warned again.
    let next = scope("r2", Some("alice"));
    budget.run_started(&next);
    assert!(matches!(budget.check(&next, &usage, 1, 0), BudgetVerdict::Warn(_)));
    // A run that finished without starting (stopped before its first model call) is ignored.
    budget.run_finished(&scope("never-started", Some("alice")));
    assert_eq!(budget.usage_for(Some("alice")).runs, 2);
    assert_eq!(budget.usage_for(Some("alice")).active_runs, 1);
}

#[test]
fn a_warning_threshold_of_one_turns_warnings_off() {
    let budget = StandardBudget::new().max_tokens(100).soft_warning_at(1.0);
    let run = scope("r", None);
    budget.run_started(&run);
    assert_eq!(budget.check(&run, &tokens(99, 0), 1, 0), BudgetVerdict::Ok);
    assert!(matches!(budget.check(&run, &tokens(100, 0), 1, 0), BudgetVerdict::Exceeded(_)));
}

#[test]
fn a_budget_with_no_limits_never_objects() {
    let budget = StandardBudget::new();
    let run = scope("r", Some("alice"));
    budget.run_started(&run);
    budget.record(&run, &tokens(1_000_000, 1_000_000));
    assert_eq!(budget.check(&run, &tokens(1_000_000, 1_000_000), 1_000, 1_000), BudgetVerdict::Ok);
    assert_eq!(budget.usage_for(Some("alice")).total_tokens, 2_000_000);
}

#[test]
fn the_user_table_is_bounded() {
    let budget = StandardBudget::new().max_users(2);
    for (i, user) in ["alice", "bob", "carol"].iter().enumerate() {
        let run = scope(&format!("r{i}"), Some(user));
        budget.run_started(&run);
        budget.record(&run, &tokens(10, 0));
        budget.run_finished(&run);
    }
    // The least recently active idle account went first.
    assert_eq!(budget.usage_for(Some("alice")), Default::default());
    assert_eq!(budget.usage_for(Some("bob")).total_tokens, 10);
    assert_eq!(budget.usage_for(Some("carol")).total_tokens, 10);
    // The total remembers everyone.
    assert_eq!(budget.total_usage().total_tokens, 30);

    // An account with a run in progress is kept over an idle one.
    let busy = scope("busy", Some("bob"));
    budget.run_started(&busy);
    let dave = scope("d", Some("dave"));
    budget.run_started(&dave);
    assert_eq!(budget.usage_for(Some("bob")).active_runs, 1);
    assert_eq!(budget.usage_for(Some("carol")), Default::default());
}

#[tokio::test(start_paused = true)]
async fn idle_users_are_forgotten_after_the_ttl() {
    let budget = StandardBudget::new().user_idle_ttl(Duration::from_secs(10));
    let run = scope("r1", Some("alice"));
    budget.run_started(&run);
    budget.record(&run, &tokens(10, 0));
    budget.run_finished(&run);
    tokio::time::sleep(Duration::from_secs(5)).await;
    budget.run_started(&scope("r2", Some("bob")));
    assert_eq!(budget.usage_for(Some("alice")).total_tokens, 10, "not idle long enough");
    tokio::time::sleep(Duration::from_secs(11)).await;
    budget.run_started(&scope("r3", Some("carol")));
    assert_eq!(budget.usage_for(Some("alice")), Default::default());
    assert_eq!(budget.usage_for(Some("bob")).active_runs, 1, "a user with a run in progress is kept");
}

#[test]
fn the_budget_is_shared_across_threads() {
    let budget = StandardBudget::new().per_user_max_tokens(u64::MAX);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let budget = budget.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
                    let run = scope(&format!("t{t}-{i}"), Some(if t % 2 == 0 { "even" } else { "odd" }));
                    budget.run_started(&run);
                    budget.record(&run, &tokens(1, 1));
                    let _ = budget.check(&run, &tokens(1, 1), 1, 0);
                    budget.run_finished(&run);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(budget.usage_for(Some("even")).total_tokens, 800);
    assert_eq!(budget.usage_for(Some("odd")).runs, 400);
    assert_eq!(budget.total_usage().active_runs, 0);
}
