//! `loom run` governance flags: `--deny`, `--allow`, `--ask`, `--max-tokens`, `--max-cost-usd`, and
//! approval when stdin is not a terminal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A `loom` command run from the crate directory, with no model in the environment, no colour and
/// stdin closed (not a terminal).
fn loom(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loom"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LOOM_MODEL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("loom starts")
}

/// `loom run --model scripted:tests/fixtures/reads_notes.json --files tests/fixtures/files …`.
fn reads_notes(extra: &[&str]) -> Output {
    let mut args =
        vec!["run", "--model", "scripted:tests/fixtures/reads_notes.json", "--files", "tests/fixtures/files"];
    args.extend_from_slice(extra);
    args.push("Read my notes");
    loom(&args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("loom exited, not killed by a signal")
}

/// The `--json` events of a run, without the result line.
fn events(out: &Output) -> Vec<Value> {
    let mut lines: Vec<Value> = stdout(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines.pop();
    lines
}

#[test]
fn without_flags_the_file_tools_run() {
    let out = reads_notes(&[]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Done reading.\n");
    assert_eq!(stderr(&out), "→ read_file({\"path\":\"notes.txt\"})\n← read_file: remember the milk\n");
}

#[test]
fn deny_keeps_a_tool_from_running_and_the_run_goes_on() {
    let out = reads_notes(&["--deny", "read_file"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Done reading.\n");
    assert_eq!(
        stderr(&out),
        "→ read_file({\"path\":\"notes.txt\"})\n\
         ← read_file: error (denied): permission denied: `read_file` is on the deny list\n"
    );
}

#[test]
fn deny_shows_in_the_json_events() {
    let out = reads_notes(&["--json", "--deny", "read_file", "--deny", "list_files"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let events = events(&out);
    let decision = events.iter().find(|e| e["type"] == "permission.decision").expect("a permission.decision event");
    assert_eq!(decision["payload"]["tool"], "read_file");
    assert_eq!(decision["payload"]["decision"], "deny");
    assert_eq!(decision["payload"]["by"], "policy");
    assert_eq!(decision["payload"]["reason"], "`read_file` is on the deny list");
    let result = events.iter().find(|e| e["type"] == "tool.result").expect("a tool.result");
    assert_eq!(result["payload"]["error_kind"], "denied");
}

#[test]
fn allow_denies_every_tool_not_named() {
    let out = reads_notes(&["--allow", "list_files"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("← read_file: error (denied): permission denied: `read_file` is not on the allow list\n"),
        "{}",
        stderr(&out)
    );

    let out = reads_notes(&["--allow", "read_file"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("← read_file: remember the milk\n"), "{}", stderr(&out));
}

#[test]
fn ask_without_a_terminal_denies() {
    let out = reads_notes(&["--ask", "read_file"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Done reading.\n");
    let err = stderr(&out);
    assert!(
        err.contains(
            "← read_file: error (denied): permission denied: `read_file` is on the ask list and needs approval, \
             and no approval handler is configured\n"
        ),
        "{err}"
    );
    assert!(!err.contains("run it?"), "no prompt when stdin is not a terminal: {err}");
}

#[test]
fn tool_names_are_checked() {
    let out = reads_notes(&["--deny", "read_fle"]);
    assert_eq!(code(&out), 2);
    assert_eq!(
        stderr(&out),
        "error: --deny read_fle: the agent has no such tool (its tools: read_file, list_files, glob, grep)\n"
    );
    let out = loom(&["run", "--model", "echo", "--allow", "read_file", "hi"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("--allow read_file: the agent has no such tool (its tools: none)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn max_tokens_interrupts_the_run() {
    let out = loom(&["run", "--model", "scripted:tests/fixtures/expensive.json", "--max-tokens", "10", "go"]);
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    let err = stderr(&out);
    let last = err.lines().last().expect("an error line");
    assert!(last.contains(" interrupted: "), "{err}");
    assert!(last.contains("(reason: budget: max_tokens)"), "{err}");
    assert!(!err.contains("← lookup"), "the tool batch was stopped before it ran: {err}");
}

#[test]
fn max_tokens_in_json_mode() {
    let out = loom(&["run", "--json", "--model", "scripted:tests/fixtures/expensive.json", "--max-tokens", "10", "go"]);
    assert_eq!(code(&out), 3);
    let events = events(&out);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types[types.len() - 2..], ["budget.exceeded", "run.interrupted"]);
    let exceeded = &events[events.len() - 2]["payload"];
    assert_eq!(exceeded["limit"], "max_tokens");
    assert_eq!(exceeded["used"], 50.0);
    assert_eq!(exceeded["max"], 10.0);
}

#[test]
fn max_cost_usd_interrupts_the_run() {
    let out = loom(&["run", "--model", "scripted:tests/fixtures/expensive.json", "--max-cost-usd", "0.25", "go"]);
    assert_eq!(code(&out), 3, "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("(reason: budget: max_cost_usd)"), "{}", stderr(&out));

    // A limit that is not reached changes nothing.
    let out = loom(&["run", "--model", "scripted:tests/fixtures/expensive.json", "--max-cost-usd", "5", "go"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "never\n");
}

#[test]
fn bad_limits_are_usage_errors() {
    for args in [["--max-tokens", "0"], ["--max-tokens", "many"], ["--max-cost-usd", "-1"], ["--max-cost-usd", "x"]] {
        let out = loom(&["run", "--model", "echo", args[0], args[1], "hi"]);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
}

/// A scratch copy of `tests/fixtures/files` (a run may write into it), removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("loom-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "remember the milk").unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn notes(&self) -> String {
        std::fs::read_to_string(self.0.join("notes.txt")).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// `loom run --model scripted:tests/fixtures/writes_notes.json --files DIR …`: the model reads
/// notes.txt, then overwrites it.
fn writes_notes(dir: &Scratch, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--model", "scripted:tests/fixtures/writes_notes.json", "--files", dir.path()];
    args.extend_from_slice(extra);
    args.push("Rewrite my notes");
    loom(&args)
}

#[test]
fn files_are_read_only_unless_writable() {
    let dir = Scratch::new("files-read-only");
    let out = writes_notes(&dir, &[]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("← read_file: remember the milk\n"), "{err}");
    assert!(err.contains("← write_file: error (not_found)"), "{err}");
    assert_eq!(dir.notes(), "remember the milk");
}

#[test]
fn writable_files_ask_before_writing_and_without_a_terminal_the_write_is_denied() {
    let dir = Scratch::new("files-writable");
    let out = writes_notes(&dir, &["--writable"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Done writing.\n");
    let err = stderr(&out);
    assert!(err.contains("← read_file: remember the milk\n"), "{err}");
    assert!(
        err.contains(
            "← write_file: error (denied): permission denied: `write_file` is destructive and needs approval, and no \
             approval handler is configured\n"
        ),
        "{err}"
    );
    assert_eq!(dir.notes(), "remember the milk");
}

#[test]
fn read_only_denies_every_tool_not_flagged_read_only() {
    let dir = Scratch::new("files-read-only-mode");
    let out = writes_notes(&dir, &["--writable", "--read-only", "--json"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let events = events(&out);
    let decisions: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] == "permission.decision")
        .map(|e| (e["payload"]["tool"].as_str().unwrap(), e["payload"]["decision"].as_str().unwrap()))
        .collect();
    assert_eq!(decisions, [("write_file", "deny")], "read_file runs without a decision to record");
    let denied = events.iter().find(|e| e["type"] == "permission.decision").unwrap();
    assert_eq!(denied["payload"]["by"], "policy");
    assert_eq!(
        denied["payload"]["reason"],
        "`write_file` is not a read-only tool, and the agent runs in read-only mode (only tools flagged read_only may \
         run)"
    );
    let results: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool.result").collect();
    assert_eq!(results[0]["payload"]["output"], "remember the milk");
    assert_eq!(results[1]["payload"]["error_kind"], "denied");
    assert_eq!(dir.notes(), "remember the milk");
}

#[test]
fn writable_needs_files() {
    let out = loom(&["run", "--model", "echo", "--writable", "hi"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--files <DIR>"), "{}", stderr(&out));
}
