//! `loom runs show` prints the tree of a run's child runs (a supervisor's workers, here written
//! to the journal by the library with scripted models), and a child's parent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use loom_agent::Agent;
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::team::Supervisor;
use serde_json::{Value, json};

fn runs(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    cmd.env_remove("LOOM_JOURNAL").arg("runs").args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_show_prints_the_tree_of_child_runs() {
    let dir = std::env::temp_dir().join(format!("loom-cli-tree-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("loom.db").display());
    let worker = |name: &str, answer: &str| {
        Agent::builder().name(name).model(ScriptedModel::new([ScriptedTurn::text(answer)])).build().unwrap()
    };
    let coordinator = ScriptedModel::new([
        ScriptedTurn::tool_call("a", json!({"input": "x"})).with_tool_call("b", json!({"input": "y"})),
        ScriptedTurn::text("both done"),
    ]);
    let supervisor = Supervisor::builder(Agent::builder().name("lead").model(coordinator).journal(url.as_str()))
        .worker("a", "A.", worker("a", "from a"))
        .worker("b", "B.", worker("b", "from b"))
        .build()
        .unwrap();
    let outcome = supervisor.run("go").await.unwrap();
    let parent = outcome.result.run_id.clone();
    let (a, b) = (format!("{parent}.call_1_0"), format!("{parent}.call_1_1"));

    let out = runs(&["show", &parent, "--journal", &url]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("arch      react"), "{text}");
    assert!(text.contains("children (2)"), "{text}");
    assert!(text.contains(&format!("  {a}  completed")), "{text}");
    assert!(text.contains(&format!("  {b}  completed")), "{text}");

    let out = runs(&["show", &a, "--journal", &url]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("parent    {parent}")), "{text}");
    assert!(!text.contains("children ("), "{text}");

    let out = runs(&["show", &parent, "--journal", &url, "--json"]).output().unwrap();
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    let children: Vec<&str> =
        value["children"].as_array().unwrap().iter().map(|c| c["run"]["run_id"].as_str().unwrap()).collect();
    assert_eq!(children.len(), 2);
    assert!(children.contains(&a.as_str()) && children.contains(&b.as_str()));

    let out = runs(&["list", "--journal", &url, "--json"]).output().unwrap();
    let listed: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 3, "the parent and its two children are listed like any run");
    assert_eq!(listed.iter().filter(|r| r["parent_run_id"] == json!(parent)).count(), 2);
    std::fs::remove_dir_all(&dir).ok();
}
