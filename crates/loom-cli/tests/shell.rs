//! `loom run --shell [--sandbox]`: the bash tool is offered, refused without a terminal to approve
//! it, run when the person at the terminal says yes, and `--sandbox` either sandboxes or fails
//! before anything runs.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-cli-shell-{name}-{}-{}", std::process::id(), fastrand()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// A scripted model that runs `command` with bash, then answers "done".
fn script(dir: &Path, command: &str) -> String {
    let turns = serde_json::json!([
        {"tool_calls": [{"name": "bash", "arguments": {"command": command}}]},
        {"text": "done"}
    ]);
    let path = dir.join("script.json");
    std::fs::write(&path, turns.to_string()).unwrap();
    format!("scripted:{}", path.display())
}

/// `loom ARGS` in `dir`, stdin closed (not a terminal).
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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `tool.result` payloads of a `--json` run.
fn tool_results(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "tool.result")
        .map(|e| e["payload"].clone())
        .collect()
}

#[test]
fn without_a_terminal_bash_is_refused() {
    let dir = scratch("refused");
    let model = script(&dir, "echo ran > marker.txt");
    let out = loom(&dir, &["run", "--shell", "--json", "--model", &model, "write the marker"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let results = tool_results(&out);
    assert_eq!(results.len(), 1, "{}", text(&out.stdout));
    assert_eq!(results[0]["name"], "bash");
    assert_eq!(results[0]["is_error"], true);
    assert_eq!(
        results[0]["output"],
        "Error: permission denied: `bash` is destructive and needs approval, and no approval handler is configured"
    );
    assert!(!dir.join("marker.txt").exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// With `script` (util-linux) giving loom a terminal, the answer `y` lets the command run.
#[test]
fn approved_at_the_terminal_bash_runs_in_the_current_directory() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed, so no terminal can be given to loom");
        return;
    }
    let dir = scratch("approved");
    let model = script(&dir, "echo ran > marker.txt; pwd");
    let command = format!("{} run --shell --model {model} 'write the marker'", env!("CARGO_BIN_EXE_loom"));
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(&dir)
        .env_remove("LOOM_MODEL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"y\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    assert!(shown.contains("? `bash` needs approval: `bash` is destructive"), "{shown}");
    assert!(shown.contains(&format!("← bash: {}", dir.canonicalize().unwrap().display())), "{shown}");
    assert_eq!(std::fs::read_to_string(dir.join("marker.txt")).unwrap(), "ran\n");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sandbox_needs_shell() {
    let dir = scratch("needs-shell");
    let out = loom(&dir, &["run", "--sandbox", "--model", "echo", "hi"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--shell"), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sandbox_runs_or_fails_before_anything_runs() {
    let dir = scratch("sandbox");
    let model = script(&dir, "true");
    let out = loom(&dir, &["run", "--shell", "--sandbox", "--json", "--model", &model, "hi"]);
    let usable = Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net", "--unshare-pid", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if usable {
        assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
        assert_eq!(tool_results(&out).len(), 1);
    } else {
        eprintln!("bwrap is not usable here: checking that --sandbox refuses to run");
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("--sandbox: the shell sandbox is not available"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    std::fs::remove_dir_all(&dir).ok();
}
