//! `loom run --audit-log FILE`, `loom audit verify FILE [--head SEQ:HASH]`, `loom audit head FILE`
//! and `-v`, through the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const SECRET: &str = "cli-test-secret-0123456789";

fn loom(args: &[&str], secret: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loom"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LOOM_MODEL")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
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
    let _ = std::fs::remove_file(format!("{}.head", path.display()));
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
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("bad_signature").count(), 5, "4 entries and the head file: {stdout}");
    assert!(stdout.contains(": head: bad_signature: the head file's signature does not verify"), "{stdout}");
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

fn verify(path: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["audit", "verify", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    loom(&args, Some(SECRET))
}

fn head_file(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.head", path.display()))
}

/// A log of three runs: six entries.
fn six_entries(name: &str) -> PathBuf {
    let path = temp_path(name);
    for prompt in ["one", "two", "three"] {
        let out = run_with_log(&path, prompt);
        assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    }
    path
}

#[test]
fn a_torn_last_line_is_set_aside_by_the_next_run_and_verify_notes_it() {
    let path = six_entries("torn");
    let whole = std::fs::read_to_string(&path).unwrap();
    // A run that died half-way through writing its seventh entry.
    let fragment = r#"{"seq":7,"at":"2026-01-01T00:00:00.000000Z","run_id":"run_"#;
    std::fs::write(&path, format!("{whole}{fragment}")).unwrap();
    let out = verify(&path, &[]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stdout).contains("line 7: malformed: a torn last line"), "{}", text(&out.stdout));

    // The next run sets it aside, says so on stderr, and chains on from seq 6.
    let out = run_with_log(&path, "four");
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("WARN") && stderr.contains("torn line"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    let lines: Vec<Value> =
        std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6, 7, 8]);

    let out = verify(&path, &[]);
    assert_eq!(code(&out), 0, "stdout: {}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(": 8 entries, chain intact (last seq 8, head "), "{stdout}");
    let note = stdout.lines().find(|l| l.contains("note: a torn last line")).unwrap_or_else(|| panic!("{stdout}"));
    let aside = note.split(" was set aside in ").nth(1).unwrap().split(';').next().unwrap();
    assert!(aside.contains(".jsonl.torn-"), "{note}");
    assert_eq!(std::fs::read_to_string(aside).unwrap(), fragment);
    std::fs::remove_file(aside).unwrap();
}

#[test]
fn a_cut_off_tail_is_caught_by_the_head_file_and_by_a_head_kept_elsewhere() {
    let path = six_entries("cut");
    let full = std::fs::read_to_string(&path).unwrap();
    let last_hash = full.lines().last().map(|l| serde_json::from_str::<Value>(l).unwrap()["hash"].clone()).unwrap();

    // `loom audit head` prints SEQ:HASH and nothing else.
    let out = loom(&["audit", "head", path.to_str().unwrap()], Some(SECRET));
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    let head = text(&out.stdout);
    assert_eq!(head, format!("6:{}\n", last_hash.as_str().unwrap()));
    let head = head.trim_end();
    assert_eq!(code(&verify(&path, &["--head", head])), 0);

    // The last two entries dropped.
    let four: String = full.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, &four).unwrap();
    let out = verify(&path, &[]);
    assert_eq!(code(&out), 1, "stdout: {}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("head: truncated: log shorter than its head: it ends at seq 4"), "{stdout}");
    assert!(stdout.trim_end().ends_with("4 entries, 1 problem: the chain is broken"), "{stdout}");
    // `loom audit head` prints no head for it, and a run refuses to write on.
    let out = loom(&["audit", "head", path.to_str().unwrap()], Some(SECRET));
    assert_eq!(code(&out), 1);
    let stdout = text(&out.stdout);
    assert!(stdout.trim_end().ends_with("the chain is broken: no head printed"), "{stdout}");
    assert!(stdout.contains("log shorter than its head"), "{stdout}");
    let out = run_with_log(&path, "more");
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("the log is shorter than its head"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), four);

    // The file emptied.
    std::fs::write(&path, "").unwrap();
    let out = verify(&path, &[]);
    assert_eq!(code(&out), 1);
    assert!(text(&out.stdout).contains("log shorter than its head: it has no entries"), "{}", text(&out.stdout));

    // The head file deleted as well: only the head kept elsewhere can tell.
    std::fs::remove_file(head_file(&path)).unwrap();
    std::fs::write(&path, &four).unwrap();
    let out = verify(&path, &[]);
    assert_eq!(code(&out), 0);
    assert!(text(&out.stdout).contains("note: no head file"), "{}", text(&out.stdout));
    let out = verify(&path, &["--head", head]);
    assert_eq!(code(&out), 1);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("log shorter than its head: it ends at seq 4, the expected head is at seq 6"), "{stdout}");
    std::fs::write(&path, "").unwrap();
    assert_eq!(code(&verify(&path, &["--head", head])), 1);

    // A --head that is not SEQ:HASH is a usage error.
    let out = verify(&path, &["--head", "not-a-head"]);
    assert_eq!(code(&out), 2);
    assert!(text(&out.stderr).contains("is not SEQ:HASH"), "{}", text(&out.stderr));
    let out = loom(&["audit", "verify", "--help"], None);
    assert!(text(&out.stdout).contains("--head <SEQ:HASH>"), "{}", text(&out.stdout));
}

#[test]
fn audit_head_of_an_empty_log_is_genesis() {
    let path = temp_path("empty-head");
    std::fs::write(&path, "").unwrap();
    let out = loom(&["audit", "head", path.to_str().unwrap()], Some(SECRET));
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("0:{}\n", "0".repeat(64)));
    assert_eq!(code(&loom(&["audit", "head", path.to_str().unwrap()], None)), 2, "no key");
}

#[test]
fn audit_log_refuses_a_file_that_is_not_an_audit_log() {
    let path = temp_path("passwd");
    let passwd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
    std::fs::write(&path, passwd).unwrap();
    let out = run_with_log(&path, "hi");
    assert_eq!(code(&out), 2);
    assert_eq!(text(&out.stdout), "", "nothing ran");
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: --audit-log: refusing to append to "), "{stderr}");
    assert!(stderr.contains("not an audit log: its first line is not an audit entry"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), passwd, "the file is unchanged");
    assert!(!head_file(&path).exists());
}

#[test]
fn audit_log_refuses_a_log_written_with_another_key() {
    let path = temp_path("other-key");
    assert_eq!(code(&run_with_log(&path, "hi")), 0);
    let before = std::fs::read(&path).unwrap();
    let out =
        loom(&["run", "--audit-log", path.to_str().unwrap(), "--model", "echo", "hi"], Some("another-key-0123456789"));
    assert_eq!(code(&out), 2);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("its last entry (seq 2) is not signed with this key"), "{stderr}");
    assert!(!stderr.contains("another-key-0123456789") && !stderr.contains(SECRET), "no key in messages: {stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the file is unchanged");
}

#[test]
fn verbose_flags_log_to_stderr() {
    let path = temp_path("verbose");
    let run = |flags: &[&str]| {
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["run", "--audit-log", path.to_str().unwrap(), "--model", "echo", "hi"]);
        loom(&args, Some(SECRET))
    };
    let quiet = run(&[]);
    assert_eq!(code(&quiet), 0);
    assert!(!text(&quiet.stderr).contains("INFO"), "{}", text(&quiet.stderr));

    for flags in [&["-v"][..], &["--verbose"], &["-vv"]] {
        let out = run(flags);
        assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "Echo: hi\n", "logs stay off stdout");
        let stderr = text(&out.stderr);
        let line = stderr.lines().find(|l| l.contains("audit log opened")).unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.contains("INFO"), "{line}");
        assert!(!stderr.contains(SECRET), "the key is never logged: {stderr}");
    }
    // The flag is global: after the subcommand too.
    let out = loom(&["audit", "verify", path.to_str().unwrap(), "-v"], Some(SECRET));
    assert_eq!(code(&out), 0, "stderr: {}", text(&out.stderr));
}
