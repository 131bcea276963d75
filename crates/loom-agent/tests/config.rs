//! Agents from TOML configuration: every setting, several agents, and every error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use loom_agent::config::{AgentConfig, ToolRegistry};
use loom_agent::{Agent, Error, ToolError};

/// Adds two numbers.
#[loom_agent::tool]
async fn add(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(a + b)
}

fn err(text: &str) -> String {
    match AgentConfig::from_toml_str(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(Error::Config(m)) => m,
        Err(other) => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_single_agent_file_builds_and_runs() {
    let config = AgentConfig::from_toml_str(
        r#"
        name = "helper"
        model = "echo"
        instructions = "Be brief."
        tools = ["add"]
        max_turns = 7
        timeout = "30s"
        tool_timeout = "5s"
        output_retries = 1
        tool_output_limit = 1000
        architecture = "react"
        journal = "memory"
        lease_ttl = "10s"
        approval = "allow"
        capture_content = false
        [generation]
        temperature = 0.2
        max_output_tokens = 100
        [runtime]
        profile = "sdk"
        criteria = ["be polite"]
        [budget]
        max_tokens = 10000
        max_wall_clock = "1m"
        [permissions]
        mode = "default"
        deny = ["rm"]
        [[guardrails]]
        kind = "pii"
        [[guardrails]]
        kind = "regex"
        name = "no-secret"
        pattern = "secret"
        replace = "[x]"
        [rate_limiter]
        capacity = 10
        refill_per_second = 1.0
        "#,
    )
    .unwrap();
    assert_eq!(config.timeout, Some(std::time::Duration::from_secs(30)));
    let registry = ToolRegistry::new().with(add);
    let agent = config.build_with(&registry).unwrap();
    assert_eq!(agent.name(), "helper");
    assert_eq!(agent.max_turns(), 7);
    assert_eq!(agent.tools().len(), 1);
    assert!(agent.instructions().contains("be polite"));
    let out = agent.run("hi").await.unwrap();
    assert_eq!(out.output, "Echo: hi");
}

#[test]
fn agent_from_config_file() {
    let dir = std::env::temp_dir().join(format!("loom-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(&path, "model = \"echo\"\nmax_turns = 3\n").unwrap();
    let agent = Agent::from_config_file(&path).unwrap();
    assert_eq!(agent.max_turns(), 3);
    std::fs::write(&path, "model = \"echo\"\nmax_turn = 3\n").unwrap();
    let e = Agent::from_config_file(&path).unwrap_err().to_string();
    assert!(e.contains("agent.toml") && e.contains("did you mean `max_turns`"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn several_agents_by_name() {
    let config = AgentConfig::from_toml_str(
        r#"
        [server]
        bind = "127.0.0.1:0"
        [agents.a]
        model = "echo"
        [agents.b]
        model = "echo"
        max_turns = 2
        "#,
    )
    .unwrap();
    let agents = config.build_all(&ToolRegistry::new()).unwrap();
    assert_eq!(agents.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(agents["b"].max_turns(), 2);
    assert_eq!(agents["a"].name(), "a");
    let e = config.build().unwrap_err().to_string();
    assert!(e.contains("build_all"), "{e}");
}

#[test]
fn a_single_agent_is_named_default() {
    let config = AgentConfig::from_toml_str("model = \"echo\"").unwrap();
    let agents = config.build_all(&ToolRegistry::new()).unwrap();
    assert!(agents.contains_key("default"));
}

#[test]
fn unknown_keys_suggest_the_nearest() {
    let m = err("modle = \"echo\"");
    assert!(m.contains("unknown field `modle`") && m.contains("did you mean `model`?"), "{m}");
    let m = err("model = \"echo\"\n[budget]\nmax_token = 5");
    assert!(m.contains("did you mean `max_tokens`?"), "{m}");
    let m = err("[agents.a]\nmodel = \"echo\"\ninstruction = \"x\"");
    assert!(m.contains("did you mean `instructions`?"), "{m}");
    let m = err("model = \"echo\"\n[generation]\ntemprature = 0.1");
    assert!(m.contains("generation.temprature") && m.contains("did you mean `temperature`?"), "{m}");
    let m = err("model = \"echo\"\n[server]\nbnd = \"x\"");
    assert!(m.contains("did you mean `bind`?"), "{m}");
    let m = err("zzzzqqq = 1");
    assert!(m.contains("unknown field `zzzzqqq`") && !m.contains("did you mean"), "{m}");
}

#[test]
fn inline_secrets_are_refused() {
    let m = err("model = \"openai:gpt-4o-mini\"\napi_key = \"sk-123\"");
    assert!(m.contains("`api_key`") && m.contains("api_key_env"), "{m}");
    assert!(!m.contains("sk-123"), "the secret is not repeated: {m}");
    let m = err("[agents.a]\nmodel = \"echo\"\n[agents.a.audit_log]\npath = \"a\"\nsecret = \"s\"");
    assert!(m.contains("agents.a.audit_log.secret"), "{m}");
    let m = err("model = \"echo\"\njournal = \"postgres://u:hunter2@localhost/db\"");
    assert!(m.contains("password") && !m.contains("hunter2"), "{m}");
    let m = err("model = \"echo\"\napi_key_env = \"sk-abc-123\"");
    assert!(m.contains("api_key_env") && m.contains("not a variable name"), "{m}");
}

#[test]
fn the_key_comes_from_the_named_variable() {
    let config = AgentConfig::from_toml_str(
        "model = \"openai:gpt-4o-mini\"\napi_key_env = \"LOOM_TEST_SURELY_UNSET_KEY\"\nbase_url = \"http://127.0.0.1:9\"",
    )
    .unwrap();
    let e = config.build().unwrap_err().to_string();
    assert!(e.contains("LOOM_TEST_SURELY_UNSET_KEY") && e.contains("not set"), "{e}");
}

#[test]
fn shape_errors() {
    let m = err("model = \"echo\"\n[agents.a]\nmodel = \"echo\"");
    assert!(m.contains("[agents.NAME]"), "{m}");
    let m = err("[agents.a]\nmodel = \"echo\"\n[agents.a.agents.b]\nmodel = \"echo\"");
    assert!(m.contains("belong at the top"), "{m}");
    let m = err("model = \"echo\"\njournal = \"memory\"\njournal_env = \"DB\"");
    assert!(m.contains("not both"), "{m}");
    let m = err("model = \"echo\"\ntimeout = \"soon\"");
    assert!(m.contains("timeout"), "{m}");
    let m = err("model = \"echo\"\n[[capabilities]]\nkind = \"teleport\"");
    assert!(m.contains("teleport"), "{m}");
    let m = err("model = = 1");
    assert!(m.contains("invalid TOML"), "{m}");
}

#[test]
fn build_errors_name_the_setting() {
    let build = |t: &str| AgentConfig::from_toml_str(t).unwrap().build().unwrap_err().to_string();
    let e = build("model = \"echo\"\ntools = [\"nope\"]");
    assert!(e.contains("unknown tool `nope`"), "{e}");
    let e = build("model = \"echo\"\n[runtime]\nprofile = \"fast\"");
    assert!(e.contains("unknown runtime profile `fast`"), "{e}");
    let e = build("model = \"echo\"\n[permissions]\nmode = \"yolo\"");
    assert!(e.contains("permissions.mode"), "{e}");
    let e = build("model = \"nonsense-model\"");
    assert!(e.contains("unknown model"), "{e}");
    let e = build("model = \"echo\"\narchitecture = \"magic\"");
    assert!(e.contains("magic"), "{e}");
    let e = build("model = \"echo\"\n[rate_limiter]\ncapacity = 0\nrefill_per_second = 1.0");
    assert!(e.contains("capacity"), "{e}");
}

/// `architecture = "plan_execute"` in a file drives the run with that architecture: a plan event,
/// its artifact, and each step's `plan.step` events in dependency order.
#[tokio::test]
async fn an_architecture_named_in_the_config_drives_the_run() {
    use loom_agent::event::PlanStepStatus;
    use loom_agent::model::{ScriptedModel, ScriptedTurn};
    let config = AgentConfig::from_toml_str("model = \"echo\"\narchitecture = \"plan_execute\"").unwrap();
    let plan = serde_json::json!({"steps": [
        {"id": "2", "description": "answer", "depends_on": ["1"]},
        {"id": "1", "description": "look it up", "depends_on": []},
    ]})
    .to_string();
    let model = ScriptedModel::new([
        ScriptedTurn::text(plan),
        ScriptedTurn::text("looked up"),
        ScriptedTurn::text("answered"),
        ScriptedTurn::text("the final answer"),
    ]);
    let agent = config.builder().unwrap().model(model).build().unwrap();
    let result = agent.run("Answer.").await.unwrap();
    assert_eq!(result.output, "the final answer");
    let created: Vec<_> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            loom_agent::EventKind::PlanCreated(p) => Some(p.steps.iter().map(|s| s.id.clone()).collect::<Vec<_>>()),
            _ => None,
        })
        .collect();
    assert_eq!(created, vec![vec!["2".to_string(), "1".to_string()]]);
    let steps: Vec<(String, PlanStepStatus)> = result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            loom_agent::EventKind::PlanStep(s) => Some((s.id.clone(), s.status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        steps,
        vec![
            ("1".to_string(), PlanStepStatus::Started),
            ("1".to_string(), PlanStepStatus::Completed),
            ("2".to_string(), PlanStepStatus::Started),
            ("2".to_string(), PlanStepStatus::Completed),
        ]
    );
    assert!(result.artifacts.iter().any(|a| a.id == "plan-1"));
}
