//! The per-user token bucket: rejecting, waiting (on tokio's paused clock), and its arithmetic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use loom_agent::governance::{RateLimitMode, RateLimiter, Scope, TokenBucketLimiter};
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::{Agent, EventKind, RunErrorKind, RunRequest, RunResult, RunState};
use serde_json::json;

fn waited(result: &RunResult) -> Vec<u64> {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RateLimited(r) => Some(r.waited_ms),
            _ => None,
        })
        .collect()
}

fn agent(limiter: TokenBucketLimiter) -> (Arc<ScriptedModel>, Agent) {
    let (model, shared) = share(ScriptedModel::new([ScriptedTurn::text("ok")]).looping());
    (model, Agent::builder().model(shared).tool(echo_tool("echo")).rate_limiter(limiter).build().unwrap())
}

fn scope(user: Option<&str>) -> Scope {
    Scope { run_id: "r".into(), session_id: "s".into(), user_id: user.map(Arc::from) }
}

#[tokio::test]
async fn reject_mode_interrupts_the_call_past_the_burst_and_spares_other_users() {
    let (model, agent) = agent(TokenBucketLimiter::per_user(2, 0.001).mode(RateLimitMode::Reject));
    for _ in 0..2 {
        let ok = agent.run(RunRequest::new("hi").user("alice")).await.unwrap();
        assert_eq!(ok.state, RunState::Completed);
        assert!(waited(&ok).is_empty());
    }
    let third = failed_result(agent.run(RunRequest::new("hi").user("alice")).await.unwrap_err());
    assert_eq!(third.state, RunState::Interrupted);
    assert_eq!(third.interruption_reason(), Some("rate_limit"));
    let error = third.error.clone().unwrap();
    assert_eq!(error.kind, RunErrorKind::RateLimit);
    assert!(error.message.contains("user `alice`"), "{}", error.message);
    assert_eq!(third.turns, 0);
    check_log(&third.events, &third.run_id, &third.session_id, RunState::Interrupted);
    assert_eq!(model.requests().len(), 2, "the refused call never reached the model");

    // Other users, and runs without a user, have buckets of their own.
    for user in [Some("bob"), Some("carol"), None, Some("bob"), None] {
        let request = match user {
            Some(u) => RunRequest::new("hi").user(u),
            None => RunRequest::new("hi"),
        };
        assert_eq!(agent.run(request).await.unwrap().state, RunState::Completed, "{user:?}");
    }
    let anonymous = failed_result(agent.run("hi").await.unwrap_err());
    assert_eq!(anonymous.interruption_reason(), Some("rate_limit"));
}

#[tokio::test]
async fn every_model_call_of_a_run_takes_a_permit() {
    let (_, shared) = scripted([
        ScriptedTurn::tool_call("echo", json!({"x": "a"})),
        ScriptedTurn::tool_call("echo", json!({"x": "b"})),
        ScriptedTurn::text("never"),
    ]);
    let limiter = TokenBucketLimiter::per_user(2, 0.001).mode(RateLimitMode::Reject);
    let agent = Agent::builder().model(shared).tool(echo_tool("echo")).rate_limiter(limiter).build().unwrap();
    let result = failed_result(agent.run(RunRequest::new("go").user("dave")).await.unwrap_err());
    assert_eq!(result.interruption_reason(), Some("rate_limit"));
    assert_eq!(result.turns, 2);
}

#[tokio::test(start_paused = true)]
async fn wait_mode_waits_for_the_refill_then_completes() {
    let (model, agent) = agent(TokenBucketLimiter::per_user(1, 0.5).mode(RateLimitMode::Wait));
    let first = agent.run(RunRequest::new("one").user("erin")).await.unwrap();
    assert!(waited(&first).is_empty());
    let started = tokio::time::Instant::now();
    let second = agent.run(RunRequest::new("two").user("erin")).await.unwrap();
    assert_eq!(second.state, RunState::Completed);
    assert_eq!(waited(&second), [2000]);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let types = types(&second.events);
    let at = types.iter().position(|t| *t == "rate_limit.waited").unwrap();
    assert_eq!(types[at + 1], "model.request", "the wait comes right before the model call");
    assert_eq!(model.requests().len(), 2);

    // Another user does not wait.
    let other = agent.run(RunRequest::new("three").user("frank")).await.unwrap();
    assert!(waited(&other).is_empty());
}

#[tokio::test(start_paused = true)]
async fn wait_mode_rejects_a_wait_longer_than_max_wait() {
    let limiter = TokenBucketLimiter::per_user(1, 0.1).mode(RateLimitMode::Wait).max_wait(Duration::from_secs(5));
    let (model, agent) = agent(limiter);
    agent.run(RunRequest::new("one").user("gina")).await.unwrap();
    let started = tokio::time::Instant::now();
    let second = failed_result(agent.run(RunRequest::new("two").user("gina")).await.unwrap_err());
    assert_eq!(second.interruption_reason(), Some("rate_limit"));
    assert!(second.error.unwrap().message.contains("more than the longest wait of 5000 ms"));
    assert_eq!(started.elapsed(), Duration::ZERO, "a refused wait does not sleep");
    assert_eq!(model.requests().len(), 1);

    // Five seconds later the wait is within max_wait (nothing was reserved by the refusal).
    tokio::time::advance(Duration::from_secs(5)).await;
    let third = agent.run(RunRequest::new("three").user("gina")).await.unwrap();
    assert_eq!(waited(&third), [5000]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_waiters_are_served_one_interval_apart() {
    let limiter = Arc::new(TokenBucketLimiter::per_user(2, 4.0).max_wait(Duration::from_secs(10)));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move { l.acquire(&scope(Some("h"))).await.unwrap() }));
    }
    let mut waits = Vec::new();
    for t in tasks {
        waits.push(t.await.unwrap());
    }
    waits.sort();
    let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [0, 0, 250, 500, 750, 1000]);
}

#[tokio::test(start_paused = true)]
async fn refills_are_exact_over_time() {
    // 3 per second: 333 333 333.3 ns each. After an hour of steady use at exactly the refill rate,
    // no permit was lost or gained.
    let limiter = TokenBucketLimiter::per_user(3, 3.0).mode(RateLimitMode::Reject);
    let s = scope(Some("i"));
    for _ in 0..3 {
        limiter.acquire(&s).await.unwrap();
    }
    assert!(limiter.acquire(&s).await.is_err());
    let mut granted = 0u32;
    for _ in 0..3600 {
        tokio::time::advance(Duration::from_secs(1)).await;
        while limiter.acquire(&s).await.is_ok() {
            granted += 1;
        }
    }
    assert_eq!(granted, 3 * 3600);
    assert_eq!(limiter.available(Some("i")), 0);
    tokio::time::advance(Duration::from_millis(700)).await;
    assert_eq!(limiter.available(Some("i")), 2);
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(limiter.available(Some("i")), 3, "a bucket never holds more than its capacity");
}

#[tokio::test(start_paused = true)]
async fn memory_stays_bounded() {
    // Full buckets carry no state and are swept away.
    let limiter = TokenBucketLimiter::per_user(1, 10.0).mode(RateLimitMode::Reject);
    for i in 0..5000 {
        limiter.acquire(&scope(Some(&format!("u{i}")))).await.unwrap();
        if i % 100 == 99 {
            tokio::time::advance(Duration::from_millis(200)).await;
        }
    }
    assert!(limiter.tracked_users() <= 2048, "{}", limiter.tracked_users());

    // A hard cap, even when every bucket is in use.
    let capped = TokenBucketLimiter::per_user(1, 0.001).mode(RateLimitMode::Reject).max_users(500);
    for i in 0..5000 {
        capped.acquire(&scope(Some(&format!("u{i}")))).await.unwrap();
    }
    assert!(capped.tracked_users() <= 500, "{}", capped.tracked_users());
}

#[tokio::test]
async fn a_zero_capacity_refuses_everything() {
    let limiter = TokenBucketLimiter::per_user(0, 100.0);
    assert!(limiter.acquire(&scope(None)).await.unwrap_err().contains("anonymous"));
}
