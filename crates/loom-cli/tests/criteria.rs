//! `loom run --criteria`: the answer is judged against each criterion, failed ones go back to the
//! model, and a run that never meets them ends interrupted.

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
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn criteria_are_judged_and_failed_ones_sent_back() {
    let out = loom(&[
        "run",
        "--model",
        "scripted:tests/fixtures/criteria_pass_second.json",
        "--criteria",
        "names a day",
        "--criteria",
        "is short",
        "When do we ship?",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    // Each answer streams as it comes (the draft the judge sent back, then the final one).
    assert_eq!(stdout, "Draft: ship it.\nShip it on Monday.\n");
    assert!(stderr.contains("✗ criterion (round 1): names a day — no date given"), "{stderr}");
    assert!(stderr.contains("✓ criterion (round 2): names a day — names Monday"), "{stderr}");
}

#[test]
fn unmet_criteria_end_the_run_interrupted_with_exit_code_3_and_the_verdicts_in_json() {
    let out = loom(&[
        "run",
        "--json",
        "--model",
        "scripted:tests/fixtures/criteria_never.json",
        "--criteria",
        "names a day",
        "When do we ship?",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["state"], "interrupted");
    assert_eq!(result["error"]["reason"], "criteria: names a day");
    assert_eq!(result["criteria"][0]["passed"], false);
    assert_eq!(result["criteria"][0]["reason"], "no date at all");
    let checked = stdout.lines().filter(|l| l.starts_with("{\"type\":\"criteria.checked\"")).count();
    assert_eq!(checked, 3);
}
