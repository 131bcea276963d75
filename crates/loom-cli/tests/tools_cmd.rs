//! `loom tools`: what an agent built from the flags would offer its model, without a model call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;

fn loom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loom"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LOOM_MODEL")
        .env("NO_COLOR", "1")
        .output()
        .expect("loom starts")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

#[test]
fn without_capabilities_there_are_no_tools() {
    let out = loom(&["tools"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("no tools"), "{}", text(&out.stdout));
    assert_eq!(text(&out.stderr), "", "no model is loaded, so no default-model note");
    let out = loom(&["tools", "--json"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), Value::Array(Vec::new()));
}

#[test]
fn files_tools_are_listed_with_flags_and_schemas() {
    let out = loom(&["tools", "--files", "tests", "--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let tools: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let read = tools.iter().find(|t| t["name"] == "read_file").expect("read_file is listed");
    assert_eq!(read["flags"]["read_only"], true);
    assert_eq!(read["parameters"]["type"], "object");
    assert!(read["parameters"]["properties"]["path"].is_object(), "{read}");
    assert!(tools.iter().all(|t| t["flags"]["destructive"] == false), "read-only files by default: {tools:?}");

    let out = loom(&["tools", "--files", "tests"]);
    let listing = text(&out.stdout);
    assert!(listing.lines().any(|l| l.starts_with("read_file  [") && l.contains("read-only")), "{listing}");
    assert!(listing.contains("    arguments: path"), "{listing}");
}

#[test]
fn bad_flags_are_a_usage_error() {
    let out = loom(&["tools", "--files", "no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--files no/such/dir: not a directory"), "{}", text(&out.stderr));
}
