//! What governance costs: a 2-turn run with one tool with every governance feature on (budget with
//! per-run and per-user limits, standard permissions, a hook, PII and injection guardrails on every
//! stage, a per-user rate limiter, the file audit log, telemetry) against all of them off.
//!
//! ```text
//! cargo bench -p loom-agent --bench governance -- --warm-up-time 1 --measurement-time 4
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use loom_agent::governance::{
    FileAuditLog, Hooks, InjectionGuard, PiiGuard, Scope, StandardBudget, StandardPermissions, TokenBucketLimiter,
    ToolHookAction,
};
use loom_agent::message::ToolCall;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use loom_agent::telemetry::Telemetry;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

/// Echo the text back.
#[tool(read_only, concurrency_safe)]
async fn echo_tool(text: String) -> Result<String, ToolError> {
    Ok(text)
}

struct PassHook;

#[async_trait::async_trait]
impl Hooks for PassHook {
    async fn before_tool(&self, _scope: &Scope, _call: &ToolCall, _args: &Value) -> ToolHookAction {
        ToolHookAction::Continue
    }
}

fn model() -> ScriptedModel {
    ScriptedModel::new([ScriptedTurn::tool_call("echo_tool", json!({"text": "hi"})), ScriptedTurn::text("done")])
        .looping()
        .without_recording()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let off = Agent::builder().instructions("Be brief.").model(model()).tool(echo_tool).build().unwrap();
    let dir = std::env::temp_dir().join(format!("loom-bench-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let audit = FileAuditLog::open(dir.join("audit.jsonl"), "a benchmark secret, long enough").unwrap();
    let on = Agent::builder()
        .instructions("Be brief.")
        .model(model())
        .tool(echo_tool)
        .budget(StandardBudget::new().max_tokens(1_000_000_000).per_user_max_tokens(1_000_000_000_000))
        .permissions(StandardPermissions::new())
        .hook(PassHook)
        .guardrail(PiiGuard::new())
        .guardrail(InjectionGuard::new())
        .rate_limiter(TokenBucketLimiter::per_user(1_000_000_000, 1_000_000_000.0))
        .audit_log(audit)
        .telemetry(Telemetry::new())
        .build()
        .unwrap();
    let mut group = c.benchmark_group("governance_two_turn_run_one_tool");
    group.bench_function("all_off", |b| b.iter(|| run(&rt, &off)));
    group.bench_function("all_on", |b| b.iter(|| run(&rt, &on)));
    group.finish();
    std::fs::remove_dir_all(&dir).ok();
}

fn run(rt: &Runtime, agent: &Agent) {
    let r = rt.block_on(agent.run(RunRequest::new("hello").user("alice"))).unwrap();
    assert_eq!(r.turns, 2);
}

criterion_group!(benches, bench);
criterion_main!(benches);
