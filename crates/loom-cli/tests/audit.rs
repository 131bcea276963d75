//! `loom run --audit-log FILE` and `loom audit verify FILE`, through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const SECRET: &str = "cli-test-secret-0123456789";

fn loom(args: &[&str], secret: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR")).env_remove("LOOM_MODEL").env("NO_COLOR", "1");
    match secret {
        Some(secret) => cmd.env("LOOM_AUDIT_SECRET", secret),
        None => cmd.env_remove("LOOM_AUDIT_SECRET"),
    };
    cmd.output().expect("loom starts")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("loom exited")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn temp_path(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loom-cli-audit");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn run_with_log(path: &Path, prompt: &str) -> Output {
    loom(&["run", "--audit-log", path.to_str().unwrap(), "--model", "echo", prompt], Some(SECRET))
}

#[test]
fn a_run_writes_a_log_that_verifies() {
    let path = temp_path("run");
    let out = run_with_log(&path, "hi");
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Echo: hi\n");
    let out = run_with_log(&path, "again");
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));

    let lines: Vec<Value> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<&str> = lines.iter().map(|l| l["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["run_started", "run_finished", "run_started", "run_finished"]);

    let out = loom(&["audit", "verify", path.to_str().unwrap()], Some(SECRET));
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains(": 4 entries, chain intact (last seq 4, head "), "{stdout}");

    // Another key: every signature fails.
    let out = loom(&["audit", "verify", path.to_str().unwrap()], Some("another-key-0123456789"));
    assert_eq!(code(&out), 1);
    assert_eq!(text(&out.stdout).matches("bad_signature").count(), 4, "{}", text(&out.stdout));
}

#[test]
fn a_tampered_log_fails_and_names_the_entry() {
    let path = temp_path("tampered");
    for prompt in ["one", "two"] {
        assert_eq!(code(&run_with_log(&path, prompt)), 0);
    }
    let original = std::fs::read_to_string(&path).unwrap();
    let edited = original.replacen("\"state\":\"completed\"", "\"state\":\"failed\"", 1);
    assert_ne!(edited, original);
    std::fs::write(&path, edited).unwrap();
    let out = loom(&["audit", "verify", path.to_str().unwrap()], Some(SECRET));
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("line 2 (seq 2): edited: "), "{stdout}");
    assert!(stdout.trim_end().ends_with("4 entries, 1 problem: the chain is broken"), "{stdout}");

    // A dropped line.
    let dropped: String =
        original.lines().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(&path, dropped).unwrap();
    let out = loom(&["audit", "verify", path.to_str().unwrap()], Some(SECRET));
    assert_eq!(code(&out), 1);
    assert!(text(&out.stdout).contains("line 2 (seq 3): dropped: seq 2 is missing"), "{}", text(&out.stdout));
}

#[test]
fn without_the_secret_nothing_runs() {
    let path = temp_path("nosecret");
    let out = loom(&["run", "--audit-log", path.to_str().unwrap(), "--model", "echo", "hi"], None);
    assert_eq!(code(&out), 2);
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: --audit-log needs the HMAC key in LOOM_AUDIT_SECRET"), "{stderr}");
    assert!(!path.exists(), "no log is created");

    let out = loom(&["run", "--audit-log", path.to_str().unwrap(), "--model", "echo", "hi"], Some("short"));
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("at least 16 bytes in LOOM_AUDIT_SECRET (it has 5)"), "{}", text(&out.stderr));

    let out = loom(&["audit", "verify", path.to_str().unwrap()], None);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("LOOM_AUDIT_SECRET"), "{}", text(&out.stderr));

    let out = loom(&["audit", "verify", "no/such/file.jsonl"], Some(SECRET));
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).starts_with("error: reading audit log no/such/file.jsonl"), "{}", text(&out.stderr));
}
