//! Runs the real `loom` binary and checks what a person or a script sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// A `loom` command run from the crate directory (so fixture paths are short), with no model in
/// the environment and no colour.
fn loom_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("LOOM_MODEL").env("NO_COLOR", "1");
    cmd
}

fn loom(args: &[&str]) -> Output {
    loom_command(args).output().expect("loom starts")
}

fn script(name: &str) -> String {
    format!("scripted:tests/fixtures/{name}")
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

/// Parses `--json` output: the events, then the result.
fn json_lines(out: &Output) -> (Vec<Value>, Value) {
    let mut lines: Vec<Value> = stdout(out)
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|e| format!("not a JSON line ({e}): {line}")).unwrap())
        .collect();
    let result = lines.pop().expect("at least the result line");
    (lines, result)
}

#[test]
fn echo_prints_the_answer() {
    let out = loom(&["run", "--model", "echo", "hello"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Echo: hello\n");
    assert_eq!(stderr(&out), "", "an explicit --model needs no note");
}

#[test]
fn loom_model_names_the_model() {
    let out = loom_command(&["run", "What is Loom?"])
        .env("LOOM_MODEL", script("unknown_tool.json"))
        .output()
        .expect("loom starts");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert!(stderr(&out).starts_with("using model scripted:tests/fixtures/unknown_tool.json (from LOOM_MODEL)\n"));
}

#[test]
fn the_prompt_can_come_from_stdin() {
    let mut child = loom_command(&["run", "--model", "echo", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loom starts");
    child.stdin.take().expect("stdin").write_all(b"hi from stdin\n").expect("write the prompt");
    let out = child.wait_with_output().expect("loom ends");
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Echo: hi from stdin\n");
}

#[test]
fn a_tool_call_and_its_error_are_shown_then_the_answer() {
    let model = script("unknown_tool.json");
    let out = loom(&["run", "--model", &model, "What is Loom?"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "Let me check.\nLoom is an agent runtime for Rust.\n");
    assert_eq!(
        stderr(&out),
        "The user asks about Loom; I should look it up.\n\
         → lookup({\"q\":\"loom\"})\n\
         ← lookup: error (not_found): unknown tool `lookup`; available tools: none\n"
    );
}

#[test]
fn json_prints_every_event_then_the_result() {
    let model = script("unknown_tool.json");
    let out = loom(&["run", "--json", "--model", &model, "--user", "alice", "--session", "s1", "What is Loom?"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let (events, result) = json_lines(&out);
    assert!(!events.is_empty());
    let run_id = result["run_id"].as_str().expect("run_id");
    for (i, event) in events.iter().enumerate() {
        let keys: Vec<&str> = event.as_object().expect("an object").keys().map(String::as_str).collect();
        for key in ["type", "run_id", "session_id", "seq", "at", "payload"] {
            assert!(keys.contains(&key), "event {i} lacks {key}: {event}");
        }
        assert_eq!(keys.len(), 6, "event {i} has extra keys: {event}");
        assert_eq!(event["seq"], i as u64);
        assert_eq!(event["run_id"], run_id);
        assert_eq!(event["session_id"], "s1");
    }
    assert_eq!(events[0]["type"], "run.started");
    assert_eq!(events[0]["payload"]["user_id"], "alice");
    assert!(events.iter().any(|e| e["type"] == "tool.result" && e["payload"]["error_kind"] == "not_found"));
    assert_eq!(events.last().expect("events")["type"], "run.completed");
    assert_eq!(result["state"], "completed");
    assert_eq!(result["output"], "Loom is an agent runtime for Rust.");
    assert_eq!(result["session_id"], "s1");
    assert_eq!(result["user_id"], "alice");
    assert_eq!(result["events"].as_array().expect("events").len(), events.len());
}

#[test]
fn max_turns_interrupts_the_run() {
    let model = script("always_tool.json");
    let out = loom(&["run", "--model", &model, "--max-turns", "2", "loop"]);
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    let last = err.lines().last().expect("an error line");
    assert!(last.starts_with("error: run run_"), "{err}");
    assert!(last.contains(" interrupted: "), "{err}");
    assert!(last.contains("max_turns"), "{err}");
    assert_eq!(err.matches("→ lookup").count(), 2, "{err}");

    let out = loom(&["run", "--json", "--model", &model, "--max-turns", "2", "loop"]);
    assert_eq!(code(&out), 3);
    let (events, result) = json_lines(&out);
    assert_eq!(result["state"], "interrupted");
    assert_eq!(result["error"]["reason"], "max_turns");
    assert_eq!(events.last().expect("events")["type"], "run.interrupted");
}

#[test]
fn an_exhausted_script_fails_the_run() {
    let model = script("exhausted.json");
    let out = loom(&["run", "--model", &model, "x"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert!(err.contains(" failed: model unavailable: the scripted model has no more turns"), "{err}");

    let out = loom(&["run", "--json", "--model", &model, "x"]);
    assert_eq!(code(&out), 1);
    let (_, result) = json_lines(&out);
    assert_eq!(result["state"], "failed");
    assert_eq!(result["error"]["model_error"], "unavailable");
}

#[test]
fn an_unknown_model_lists_the_accepted_ones() {
    let out = loom(&["run", "--model", "gtp-4", "x"]);
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.starts_with("error: unknown model"), "{err}");
    assert!(err.contains("gtp-4"), "{err}");
    assert!(err.contains(r#"accepted: "echo", "scripted:FILE.json""#), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_missing_script_names_its_path() {
    let out = loom(&["run", "--model", "scripted:tests/fixtures/no_such_script.json", "x"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("tests/fixtures/no_such_script.json"), "{err}");
}

#[test]
fn an_invalid_script_is_a_configuration_error() {
    let out = loom(&["run", "--model", &script("not_a_script.json"), "x"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("tests/fixtures/not_a_script.json"), "{}", stderr(&out));
}

#[test]
fn context_inputs_are_accepted() {
    // The context reaches the model as a system message, but neither the echo model nor the run's
    // events or result show it, so this only checks that the flags are accepted and the run works.
    let out = loom(&["run", "--json", "--model", "echo", "--context", "repo=\"loom\"", "--context", "n=3", "hi"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    let (_, result) = json_lines(&out);
    assert_eq!(result["state"], "completed");
    assert_eq!(result["output"], "Echo: hi");
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["run", "--context", "no-equals-sign", "x"][..],
        &["run", "--max-turns", "0", "x"],
        &["run", "--timeout", "soon", "x"],
        &["run", "--model", "echo", "   "],
        &["run"],
    ] {
        let out = loom(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("error"), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{args:?}");
    }
}

#[test]
fn a_timeout_interrupts_the_run() {
    let model = script("slow.json");
    let started = std::time::Instant::now();
    let out = loom(&["run", "--model", &model, "--timeout", "0.2", "x"]);
    assert_eq!(code(&out), 3);
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "the run waited for the model");
    let err = stderr(&out);
    assert!(err.contains(" interrupted: "), "{err}");
    assert!(err.contains("(reason: timeout)"), "{err}");

    let out = loom(&["run", "--json", "--model", &model, "--timeout", "0.2", "x"]);
    assert_eq!(code(&out), 3);
    let (_, result) = json_lines(&out);
    assert_eq!(result["state"], "interrupted");
    assert_eq!(result["error"]["reason"], "timeout");
}

#[test]
fn an_output_schema_prints_the_parsed_value() {
    let model = script("structured.json");
    let out = loom(&["run", "--model", &model, "--output-schema", "tests/fixtures/answer.schema.json", "x"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "{\n  \"answer\": 42\n}\n");

    let out = loom(&["run", "--json", "--model", &model, "--output-schema", "tests/fixtures/answer.schema.json", "x"]);
    let (_, result) = json_lines(&out);
    assert_eq!(result["parsed"], serde_json::json!({"answer": 42}));
}

#[test]
fn an_answer_that_never_fits_the_schema_fails() {
    let model = script("structured_wrong.json");
    let out = loom(&["run", "--model", &model, "--output-schema", "tests/fixtures/answer.schema.json", "x"]);
    assert_eq!(code(&out), 1);
    let err = stderr(&out);
    assert_eq!(err.matches("! the answer does not match the output schema").count(), 3, "{err}");
    assert!(err.contains("does not match the output schema `answer`"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_missing_schema_file_is_a_usage_error() {
    let out = loom(&["run", "--output-schema", "tests/fixtures/nope.schema.json", "x"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("cannot read output schema tests/fixtures/nope.schema.json"), "{}", stderr(&out));
}

#[test]
fn version_and_help() {
    let out = loom(&["--version"]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), format!("loom {}\n", env!("CARGO_PKG_VERSION")));

    let out = loom(&["run", "--help"]);
    assert_eq!(code(&out), 0);
    let help = stdout(&out);
    for needle in ["Examples:", "Exit codes:", "scripted:FILE.json", "LOOM_MODEL", "--output-schema"] {
        assert!(help.contains(needle), "help lacks {needle}:\n{help}");
    }
    // The default is the local model, and `echo` is never it.
    assert!(help.contains(r#"[default: $LOOM_MODEL, else "local""#), "{help}");
    assert!(help.contains(r#"else "local": the embedded"#), "{help}");
    assert!(!help.contains(r#"else "echo""#), "{help}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_cancels_the_run() {
    use std::io::{BufRead, BufReader, Read};

    let model = script("slow.json");
    let mut child = loom_command(&["run", "--json", "--model", &model, "x"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loom starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    lines.read_line(&mut first).expect("the first event");
    assert!(first.contains("run.started"), "{first}");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    let mut rest = String::new();
    lines.read_to_string(&mut rest).expect("the remaining lines");
    let status = child.wait().expect("loom ends");
    assert_eq!(status.code(), Some(4));
    let result: Value = serde_json::from_str(rest.lines().last().expect("a result line")).expect("JSON");
    assert_eq!(result["state"], "cancelled");
}

#[test]
fn a_malformed_base_url_is_a_usage_error() {
    for url in ["localhost:8000", "not a url", "http://", "ftp://gpu-box/v1"] {
        let out = loom(&["run", "--model", "openai:gpt-4o-mini", "--base-url", url, "x"]);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{url}: {err}");
        assert!(err.starts_with(&format!("error: --base-url `{url}`")), "{url}: {err}");
        assert!(err.contains("http://localhost:8000/v1"), "the usage is shown: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(stdout(&out), "");
    }
}

#[test]
fn a_model_load_error_carries_no_backtrace() {
    let dir = std::env::temp_dir().join(format!("loom-cli-bt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("corrupt.gguf");
    std::fs::write(&file, b"XXXX not a GGUF file at all").unwrap();
    let model = format!("local:{}", file.display());
    let out = loom_command(&["run", "--model", &model, "hi"]).env("RUST_BACKTRACE", "1").output().expect("loom starts");
    std::fs::remove_dir_all(&dir).ok();
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("is not a readable GGUF file: unknown magic"), "{err}");
    assert!(!err.contains("candle_core") && !err.contains("backtrace"), "a backtrace leaked: {err}");
    assert_eq!(err.lines().count(), 1, "one error line: {err}");
}

#[test]
fn architecture_flag_runs_plan_execute_and_prints_only_the_answer() {
    let out = loom(&["run", "--model", &script("plan_execute.json"), "--architecture", "plan_execute", "greet"]);
    assert_eq!(code(&out), 0, "stderr: {}", stderr(&out));
    // The plan and the steps' answers are not the answer: only the final one reaches stdout.
    assert_eq!(stdout(&out), "Hello and goodbye.\n");
    let err = stderr(&out);
    assert!(err.contains("plan (revision 1): 1: say hello; 2: say goodbye\n"), "{err}");
    assert!(err.contains("step 1 done\n") && err.contains("step 2 done\n"), "{err}");
    // The same run as JSON: the plan events are there.
    let out =
        loom(&["run", "--model", &script("plan_execute.json"), "--architecture", "plan_execute", "--json", "greet"]);
    let (events, result) = json_lines(&out);
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.iter().filter(|t| **t == "plan.step").count(), 4);
    assert!(types.contains(&"plan.created"));
    assert_eq!(result["output"], "Hello and goodbye.");
}

#[test]
fn an_unknown_architecture_is_a_usage_error_naming_the_known_ones() {
    let out = loom(&["run", "--model", "echo", "--architecture", "chain_of_doom", "hi"]);
    assert_eq!(code(&out), 2);
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.contains("chain_of_doom"), "{err}");
    assert!(err.contains("react, plan_execute, reflexion, self_refine, rewoo, tree_of_thoughts"), "{err}");
}
