//! `loom run --skills DIR`: the model loads a skill with load_skill; a malformed SKILL.md is a
//! usage error naming the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("loom-cli-skills-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(dir.join("skills/greet")).unwrap();
    std::fs::write(
        dir.join("skills/greet/SKILL.md"),
        "---\nname: greet\ndescription: Greet people warmly.\n---\nSay hello by name.\n",
    )
    .unwrap();
    let turns = serde_json::json!([
        {"tool_calls": [{"name": "load_skill", "arguments": {"name": "greet"}}]},
        {"text": "Hello!"}
    ]);
    std::fs::write(dir.join("script.json"), turns.to_string()).unwrap();
    dir
}

fn loom(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loom"))
        .args(args)
        .current_dir(dir)
        .env_remove("LOOM_MODEL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("loom starts")
}

#[test]
fn the_model_loads_a_skill() {
    let dir = scratch("load");
    let out = loom(&dir, &["run", "--skills", "skills", "--json", "--model", "scripted:script.json", "greet me"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let result = events.iter().find(|e| e["type"] == "tool.result").expect("a tool result");
    assert_eq!(result["payload"]["name"], "load_skill");
    assert_eq!(result["payload"]["is_error"], false);
    let output = result["payload"]["output"].as_str().unwrap();
    assert!(output.starts_with("# Skill: greet\nFolder: skills/greet\n\nSay hello by name."), "{output}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_malformed_skill_is_a_usage_error() {
    let dir = scratch("bad");
    std::fs::create_dir_all(dir.join("skills/broken")).unwrap();
    std::fs::write(dir.join("skills/broken/SKILL.md"), "---\ndescription: no name\n---\n").unwrap();
    let out = loom(&dir, &["run", "--skills", "skills", "--model", "scripted:script.json", "greet me"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--skills skills: `skills/broken/SKILL.md`: the front matter has no `name`"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
