//! Per-tenant daily budgets: one tenant spends its budget and is refused (429) while another
//! still runs; overrides by tenant name; `GET /budget`.

use std::time::Duration;

use loom_agent::config::{ServerConfig, TenantBudgetConfig, TenantLimits};
use serde_json::{Value, json};

use crate::{COST_PER_CALL, Srv, TOKENS_PER_CALL, start_with};

/// Waits until the tenant's usage shows `tokens` (runs are counted when they end).
async fn usage_reaches(s: &Srv, key: &str, tokens: u64) -> Value {
    for _ in 0..200 {
        let (_, b) = s.get(key, "/budget").await;
        if b["usage"]["tokens"].as_u64() == Some(tokens) {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("usage never reached {tokens} tokens");
}

#[tokio::test]
async fn a_tenant_that_spent_its_budget_is_refused_while_another_runs() {
    let budget = TenantBudgetConfig {
        max_tokens: Some(2 * TOKENS_PER_CALL),
        tenants: [("globex".to_string(), TenantLimits { max_tokens: Some(1000), ..Default::default() })].into(),
        ..Default::default()
    };
    let s = start_with(ServerConfig { tenant_budget: Some(budget), ..Default::default() }).await;
    let (a, b) = (&s.key_a, &s.key_b);
    for i in 0..2 {
        let (status, run) = s.post(a, "/runs", json!({"input": format!("a{i}"), "wait": true})).await;
        assert_eq!((status, run["state"].as_str()), (200, Some("completed")), "{run}");
        usage_reaches(&s, a, (i + 1) * TOKENS_PER_CALL).await;
    }
    let (_, shown) = s.get(a, "/budget").await;
    assert_eq!(shown["limits"]["max_tokens"], 2 * TOKENS_PER_CALL);
    assert_eq!(shown["usage"]["runs"], 2);
    assert!((shown["usage"]["cost_usd"].as_f64().unwrap() - 2.0 * COST_PER_CALL).abs() < 1e-9, "{shown}");
    assert_eq!(shown["exceeded"], "max_tokens");

    // Every way of starting or continuing a run is refused for A...
    let refused: &[(&str, Value)] = &[
        ("/runs", json!({"input": "more"})),
        ("/sessions/s1/signals", json!({"text": "more"})),
        ("/v1/chat/completions", json!({"model": "default", "messages": [{"role": "user", "content": "more"}]})),
        ("/v1/responses", json!({"model": "default", "input": "more"})),
        ("/runs/run_x/resume", json!({})),
    ];
    for (path, body) in refused {
        let (status, e) = s.post(a, path, body.clone()).await;
        assert_eq!(status, 429, "{path}: {e}");
        assert_eq!(e["error"]["code"], "tenant_budget_exceeded", "{path}");
        assert!(e["error"]["message"].as_str().unwrap().contains("max_tokens"));
    }
    let (_, runs) = s.get(a, "/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "nothing started");
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(&format!("loom_tenant_tokens_today{{tenant=\"acme\"}} {}", 2 * TOKENS_PER_CALL)), "{text}");
    assert!(text.contains("loom_tenant_runs_today{tenant=\"acme\"} 2"), "{text}");
    assert!(
        text.contains(&format!("loom_tenant_budget_refusals_today{{tenant=\"acme\"}} {}", refused.len())),
        "{text}"
    );
    // ...while reading still works,
    assert_eq!(s.get(a, "/runs").await.0, 200);
    // and the other tenant (with its own, larger limit) still runs.
    for i in 0..3 {
        let (status, run) = s.post(b, "/runs", json!({"input": format!("b{i}"), "wait": true})).await;
        assert_eq!((status, run["output"].as_str()), (200, Some(format!("Echo: b{i}").as_str())), "{run}");
    }
    let shown = usage_reaches(&s, b, 3 * TOKENS_PER_CALL).await;
    assert_eq!(shown["limits"]["max_tokens"], 1000);
    assert_eq!(shown["exceeded"], json!(null));
    assert_eq!(shown["tenant"], "globex");
}

#[tokio::test]
async fn usage_counts_as_the_run_goes_and_refuses_while_it_is_in_flight() {
    let budget = TenantBudgetConfig { max_tokens: Some(TOKENS_PER_CALL), ..Default::default() };
    let s = start_with(ServerConfig { tenant_budget: Some(budget), ..Default::default() }).await;
    let a = &s.key_a;
    // A run that calls a tool taking 1.5 s: its first model call is counted before it ends.
    let (status, run) = s.post(a, "/runs", json!({"input": "nap now"})).await;
    assert_eq!(status, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap();
    let shown = usage_reaches(&s, a, TOKENS_PER_CALL).await;
    assert_eq!(shown["exceeded"], "max_tokens");
    let (_, now) = s.get(a, &format!("/runs/{run_id}")).await;
    assert_eq!(now["state"], "running", "still in flight: {now}");
    let (status, e) = s.post(a, "/runs", json!({"input": "another"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (429, Some("tenant_budget_exceeded")), "{e}");
    // The run in flight is not stopped; its second call is counted when it ends, once.
    let done = s.wait_for(a, run_id, "completed").await;
    assert_eq!(done["output"], "rested");
    let shown = usage_reaches(&s, a, 2 * TOKENS_PER_CALL).await;
    assert_eq!(shown["usage"]["runs"], 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, again) = s.get(a, "/budget").await;
    assert_eq!(again["usage"]["tokens"], 2 * TOKENS_PER_CALL, "not counted twice");
}

#[tokio::test]
async fn run_and_cost_limits_and_no_budget() {
    let budget = TenantBudgetConfig {
        max_runs: Some(1),
        tenants: [(
            "globex".to_string(),
            TenantLimits { max_cost_usd: Some(COST_PER_CALL), max_runs: Some(10), ..Default::default() },
        )]
        .into(),
        ..Default::default()
    };
    let s = start_with(ServerConfig { tenant_budget: Some(budget), ..Default::default() }).await;
    let (a, b) = (&s.key_a, &s.key_b);
    // A run counts when it starts: the second is refused even before the first ends.
    let (status, first) = s.post(a, "/runs", json!({"input": "slow one"})).await;
    assert_eq!(status, 201, "{first}");
    let (status, e) = s.post(a, "/runs", json!({"input": "two"})).await;
    assert_eq!((status, e["error"]["code"].as_str()), (429, Some("tenant_budget_exceeded")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("max_runs"));
    // Globex: one run costs its whole daily dollar budget.
    let (status, _) = s.post(b, "/runs", json!({"input": "one", "wait": true})).await;
    assert_eq!(status, 200);
    for _ in 0..200 {
        if s.get(b, "/budget").await.1["exceeded"] == "max_cost_usd" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, e) = s.post(b, "/runs", json!({"input": "two"})).await;
    assert_eq!(status, 429, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("max_cost_usd"));

    // Without a budget nothing is limited, and /budget says so.
    let s = crate::start().await;
    for i in 0..3 {
        assert_eq!(s.post(&s.key_a, "/runs", json!({"input": format!("x{i}"), "wait": true})).await.0, 200);
    }
    let (status, shown) = s.get(&s.key_a, "/budget").await;
    assert_eq!(status, 200);
    assert_eq!(shown["limits"], json!({"max_cost_usd": null, "max_tokens": null, "max_runs": null}));
    assert_eq!(shown["exceeded"], json!(null));
}

#[test]
fn the_budget_is_read_from_the_server_table() {
    let config = loom_agent::config::AgentConfig::from_toml_str(
        r#"
        model = "echo"
        [server.tenant_budget]
        max_tokens = 1000
        [server.tenant_budget.tenants.acme]
        max_cost_usd = 2.5
        "#,
    )
    .unwrap();
    let budget = config.server.unwrap().tenant_budget.unwrap();
    assert_eq!(
        budget.limits_for("acme"),
        TenantLimits { max_cost_usd: Some(2.5), max_tokens: Some(1000), max_runs: None }
    );
    let err =
        loom_agent::config::AgentConfig::from_toml_str("model = \"echo\"\n[server.tenant_budget]\nmax_dollars = 1\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("max_dollars"), "{err}");
    let bad = TenantBudgetConfig { max_cost_usd: Some(-1.0), ..Default::default() };
    assert!(bad.validate().is_err());
}
