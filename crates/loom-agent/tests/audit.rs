//! The signed audit chain: a real run writes it, verification names each kind of tampering, many
//! tasks and processes keep one chain, secrets never reach the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::*;
use loom_agent::governance::{
    AuditAction, AuditEntry, AuditHead, AuditLog, AuditRecord, AuditRefusal, FileAuditLog, GENESIS_HASH,
    InMemoryAuditLog, ProblemKind, REDACTED, Scope, VerifyReport,
};
use loom_agent::model::ScriptedTurn;
use loom_agent::{Agent, RunRequest};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789abcdef";

/// A fresh path under the test target's scratch directory.
fn temp_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loom-audit-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}-{}.jsonl", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&path);
    path
}

fn scope(run: &str) -> Scope {
    Scope { run_id: run.into(), session_id: "ses_1".into(), user_id: Some("ulla".into()) }
}

fn record(run: &str, n: u64) -> AuditRecord {
    AuditRecord { scope: scope(run), action: AuditAction::ToolCall, payload: json!({"n": n, "tool": "lookup"}) }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn entries(path: &Path) -> Vec<AuditEntry> {
    lines(path).iter().map(|l| AuditEntry::from_json(serde_json::from_str(l).unwrap()).unwrap()).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn verify(path: &Path) -> VerifyReport {
    FileAuditLog::verify(path, SECRET).unwrap()
}

/// Checks a report has exactly one problem, of this kind, at this line and seq.
fn only_problem(report: &VerifyReport, kind: ProblemKind, line: usize, seq: u64) {
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    let p = &report.problems[0];
    assert_eq!((p.kind, p.line, p.seq), (kind, line, Some(seq)), "{p}");
}

/// An intact chain of `n` entries, seqs 1..=n in file order.
fn check_chain(path: &Path, n: usize) {
    let report = verify(path);
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.entries, n);
    let entries = entries(path);
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=n as u64).collect::<Vec<_>>());
    assert_eq!(report.last_seq, Some(n as u64));
    assert_eq!(report.last_hash.as_deref(), Some(entries[n - 1].hash.as_str()));
}

/// A log of six entries written through `FileAuditLog`.
async fn six_entries(name: &str) -> PathBuf {
    let path = temp_path(name);
    let log = FileAuditLog::open(&path, SECRET).unwrap();
    for n in 1..=6 {
        log.append(record("run_1", n)).await.unwrap();
    }
    check_chain(&path, 6);
    path
}

// ---------------------------------------------------------------------------------------------
// A real run
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_run_writes_a_signed_chain_of_its_actions() {
    let path = temp_path("run");
    let (_, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder()
        .model(shared)
        .tool(echo_tool("lookup"))
        .audit_log(FileAuditLog::open(&path, SECRET).unwrap())
        .build()
        .unwrap();
    let result = agent.run(RunRequest::new("go").user("dora")).await.unwrap();

    let entries = entries(&path);
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["run_started", "tool_call", "tool_result", "run_finished"]);
    let mut prev = GENESIS_HASH.to_string();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.prev_hash, prev);
        assert_eq!(e.compute_hash(), e.hash);
        assert!(e.signature_verifies(SECRET.as_bytes()));
        assert_eq!(e.run_id, result.run_id);
        assert_eq!(e.session_id, result.session_id);
        assert_eq!(e.user_id.as_deref(), Some("dora"));
        assert!(chrono::DateTime::parse_from_rfc3339(&e.at).is_ok(), "{}", e.at);
        prev = e.hash.clone();
    }
    assert_eq!(entries[1].payload["args"], json!({"x": "a"}));
    assert_eq!(entries[2].payload["ok"], true);
    assert_eq!(entries[3].payload["state"], "completed");
    check_chain(&path, 4);

    // The field order of a line is the documented one.
    let first = &lines(&path)[0];
    let keys: Vec<&str> =
        ["seq", "at", "run_id", "session_id", "user_id", "action", "payload", "prev_hash", "hash", "signature"].into();
    let positions: Vec<usize> = keys.iter().map(|k| first.find(&format!("\"{k}\":")).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{first}");

    // A second run appends to the same chain.
    let (_, shared) = scripted([ScriptedTurn::text("again")]);
    let agent = Agent::builder().model(shared).audit_log(FileAuditLog::open(&path, SECRET).unwrap()).build().unwrap();
    agent.run(RunRequest::new("more")).await.unwrap();
    check_chain(&path, 6);
}

#[tokio::test]
async fn the_in_memory_log_keeps_the_same_chain() {
    let audit = InMemoryAuditLog::new(SECRET).unwrap();
    let (_, shared) = scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
    let agent = Agent::builder().model(shared).tool(echo_tool("lookup")).audit_log(audit.clone()).build().unwrap();
    agent.run(RunRequest::new("go")).await.unwrap();
    let entries = audit.entries();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["run_started", "tool_call", "tool_result", "run_finished"]);
    assert!(audit.verify().is_intact());
    assert_eq!(entries[0].user_id, None);

    // Its JSONL is a valid audit file.
    let path = temp_path("memory");
    std::fs::write(&path, audit.to_jsonl()).unwrap();
    check_chain(&path, 4);
}

// ---------------------------------------------------------------------------------------------
// Tampering
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_edited_payload_is_reported_as_edited_at_its_line() {
    let path = six_entries("edit").await;
    let mut lines = lines(&path);
    assert!(lines[2].contains("\"n\":3"));
    lines[2] = lines[2].replace("\"n\":3", "\"n\":30");
    write_lines(&path, &lines);
    only_problem(&verify(&path), ProblemKind::Edited, 3, 3);
}

#[tokio::test]
async fn a_dropped_line_is_reported_as_dropped_at_the_entry_after_the_gap() {
    let path = six_entries("drop").await;
    let mut lines = lines(&path);
    lines.remove(2);
    write_lines(&path, &lines);
    let report = verify(&path);
    only_problem(&report, ProblemKind::Dropped, 3, 4);
    assert!(report.problems[0].detail.contains("seq 3 is missing"), "{}", report.problems[0]);

    // Dropping the first entry shows too.
    let path = six_entries("drop-first").await;
    let mut lines = lines_of(&path);
    lines.remove(0);
    write_lines(&path, &lines);
    only_problem(&verify(&path), ProblemKind::Dropped, 1, 2);
}

fn lines_of(path: &Path) -> Vec<String> {
    lines(path)
}

#[tokio::test]
async fn swapped_lines_are_reported_as_reordered() {
    let path = six_entries("swap").await;
    let mut lines = lines(&path);
    lines.swap(2, 3);
    write_lines(&path, &lines);
    let report = verify(&path);
    only_problem(&report, ProblemKind::Reordered, 3, 4);
    assert!(report.problems[0].detail.contains("belongs after seq 3, which is at line 4"), "{}", report.problems[0]);

    // Moving one entry far ahead names just that entry.
    let path = six_entries("move").await;
    let mut lines = lines_of(&path);
    let moved = lines.remove(4);
    lines.insert(1, moved);
    write_lines(&path, &lines);
    only_problem(&verify(&path), ProblemKind::Reordered, 2, 5);
}

#[tokio::test]
async fn a_forged_line_is_reported_as_inserted() {
    let path = six_entries("forge").await;
    let mut lines = lines(&path);
    // The forger knows the format and computes a correct hash, but not the secret.
    let mut forged = entries(&path)[2].clone();
    forged.seq = 4;
    forged.prev_hash = forged.hash.clone();
    forged.payload = json!({"n": 99, "tool": "transfer_funds"});
    forged.hash = forged.compute_hash();
    forged.signature = "ab".repeat(32);
    lines.insert(3, forged.to_line());
    write_lines(&path, &lines);
    let report = verify(&path);
    only_problem(&report, ProblemKind::Inserted, 4, 4);
    assert!(report.problems[0].detail.contains("the chain's is at line 5"), "{}", report.problems[0]);

    // A replayed copy of a genuine, signed line is inserted too.
    let path = six_entries("replay").await;
    let mut lines = lines_of(&path);
    let copy = lines[1].clone();
    lines.insert(4, copy);
    write_lines(&path, &lines);
    let report = verify(&path);
    only_problem(&report, ProblemKind::Inserted, 5, 2);
    assert!(report.problems[0].detail.contains("a copy of the entry at line 2"), "{}", report.problems[0]);

    // A forged entry appended after the last one, not linked to it.
    let path = six_entries("append-forged").await;
    let mut lines = lines_of(&path);
    let mut forged = entries(&path)[5].clone();
    forged.seq = 7;
    forged.hash = forged.compute_hash();
    forged.signature = "cd".repeat(32);
    lines.push(forged.to_line());
    write_lines(&path, &lines);
    only_problem(&verify(&path), ProblemKind::Inserted, 7, 7);
}

#[tokio::test]
async fn a_re_hashed_edit_is_still_an_edit() {
    let path = six_entries("rehash").await;
    let mut lines = lines(&path);
    let mut edited = entries(&path)[2].clone();
    edited.payload = json!({"n": 3, "tool": "something_else"});
    edited.hash = edited.compute_hash();
    lines[2] = edited.to_line();
    write_lines(&path, &lines);
    only_problem(&verify(&path), ProblemKind::Edited, 3, 3);
}

#[tokio::test]
async fn the_wrong_secret_fails_every_signature() {
    let path = six_entries("secret").await;
    let report = FileAuditLog::verify(&path, "not-the-secret-at-all").unwrap();
    assert_eq!(report.entries, 6);
    assert_eq!(report.problems.len(), 7, "{:#?}", report.problems);
    for (i, p) in report.problems[..6].iter().enumerate() {
        assert_eq!((p.kind, p.line, p.seq), (ProblemKind::BadSignature, i + 1, Some(i as u64 + 1)), "{p}");
    }
    // And the head file's signature, reported last.
    assert_eq!((report.problems[6].kind, report.problems[6].line), (ProblemKind::BadSignature, 0));
}

/// The files a log's torn lines were set aside in.
fn set_aside_files(path: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.torn-", path.file_name().unwrap().to_str().unwrap());
    let mut found: Vec<PathBuf> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&prefix))
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn a_torn_last_line_is_set_aside_and_the_chain_goes_on() {
    // An append torn half-way (a full disk, a crash): the head still names seq 6.
    let path = six_entries("torn").await;
    let whole = std::fs::read_to_string(&path).unwrap();
    let seventh = lines(&path)[5].replacen("{\"seq\":6,", "{\"seq\":7,", 1);
    let fragment = &seventh[..60];
    std::fs::write(&path, format!("{whole}{fragment}")).unwrap();
    let report = verify(&path);
    assert_eq!(report.entries, 6);
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    assert_eq!((report.problems[0].kind, report.problems[0].line), (ProblemKind::Malformed, 7));
    assert!(report.problems[0].detail.contains("torn last line"), "{}", report.problems[0]);

    // Opening sets the fragment aside and cuts the log back to its last whole entry.
    let log = FileAuditLog::open(&path, SECRET).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
    let aside = set_aside_files(&path);
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), fragment);

    // The chain goes on from seq 6, and verifies, naming the set-aside fragment.
    log.append(record("run_2", 7)).await.unwrap();
    log.append(record("run_2", 8)).await.unwrap();
    check_chain(&path, 8);
    let report = verify(&path);
    assert_eq!(report.set_aside, aside);
    assert_eq!(report.head_file, Some(report.head()));
    assert_eq!(report.head().seq, 8);
}

#[tokio::test]
async fn a_torn_entry_whose_head_reached_the_disk_is_set_aside_and_the_head_moved_back() {
    // A machine crash without `sync`: the head of seq 6 was saved, the entry only in part.
    let path = six_entries("torn-head").await;
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.truncate(text.trim_end().len() - 40);
    std::fs::write(&path, &text).unwrap();
    let report = verify(&path);
    let kinds: Vec<ProblemKind> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [ProblemKind::Malformed, ProblemKind::Truncated], "{:#?}", report.problems);

    let log = FileAuditLog::open(&path, SECRET).unwrap();
    assert_eq!(lines(&path).len(), 5);
    let report = verify(&path);
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.head_file.map(|h| h.seq), Some(5), "the head moved back");
    log.append(record("run_2", 6)).await.unwrap();
    check_chain(&path, 6);
    assert_eq!(set_aside_files(&path).len(), 1);

    // A log whose very first append was torn starts again from seq 1.
    let path = temp_path("torn-first");
    std::fs::write(&path, "{\"seq\":1,\"at\":\"2025-").unwrap();
    let log = FileAuditLog::open(&path, SECRET).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    log.append(record("run_1", 1)).await.unwrap();
    check_chain(&path, 1);
    assert_eq!(verify(&path).set_aside.len(), 1);

    // Garbage lines and an empty file do not panic.
    std::fs::write(&path, "not json\n\n{\"seq\": 1}\n").unwrap();
    std::fs::remove_file(FileAuditLog::head_path(&path)).unwrap();
    let report = verify(&path);
    let kinds: Vec<(ProblemKind, usize)> = report.problems.iter().map(|p| (p.kind, p.line)).collect();
    assert_eq!(kinds, [(ProblemKind::Malformed, 1), (ProblemKind::Malformed, 2), (ProblemKind::Malformed, 3)]);
    std::fs::write(&path, "").unwrap();
    assert!(verify(&path).is_intact());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_failed_append_is_an_error() {
    // A log on a full disk: /dev/full fails every write with ENOSPC.
    let path = temp_path("full");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    for log in [FileAuditLog::open(&path, SECRET).unwrap(), FileAuditLog::open(&path, SECRET).unwrap().sync(true)] {
        let err = log.append(record("run_1", 1)).await.unwrap_err();
        match &err {
            loom_agent::Error::Io { source, .. } => assert_eq!(source.kind(), std::io::ErrorKind::StorageFull),
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with("appending to audit log "), "{err}");
    }
    assert_eq!(std::fs::read(FileAuditLog::head_path(&path)).unwrap(), b"", "no head for an entry not written");
}

// ---------------------------------------------------------------------------------------------
// The head: a cut-off tail
// ---------------------------------------------------------------------------------------------

/// The one problem of a report, at the head (line 0).
fn head_problem(report: &VerifyReport, kind: ProblemKind) -> String {
    assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
    let p = &report.problems[0];
    assert_eq!((p.kind, p.line), (kind, 0), "{p}");
    p.to_string()
}

#[tokio::test]
async fn dropping_the_last_entries_or_emptying_the_log_is_caught_by_its_head() {
    let path = six_entries("cut").await;
    let head = verify(&path).head();
    assert_eq!(head.seq, 6);
    assert_eq!(head.to_string(), format!("6:{}", entries(&path)[5].hash));
    let full = lines(&path);

    // The last two entries dropped.
    write_lines(&path, &full[..4]);
    let shown = head_problem(&verify(&path), ProblemKind::Truncated);
    assert!(shown.contains("log shorter than its head: it ends at seq 4, its head file is at seq 6"), "{shown}");
    assert!(shown.starts_with("head: truncated: "), "{shown}");
    // Appending would hide it: opening refuses, and writes nothing.
    let before = std::fs::read(&path).unwrap();
    match FileAuditLog::open(&path, SECRET).unwrap_err() {
        loom_agent::Error::AuditLogRefused {
            reason: AuditRefusal::ShorterThanHead { log_seq: 4, head_seq: 6 },
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // The file emptied.
    std::fs::write(&path, "").unwrap();
    let shown = head_problem(&verify(&path), ProblemKind::Truncated);
    assert!(shown.contains("log shorter than its head: it has no entries"), "{shown}");
    assert!(FileAuditLog::open(&path, SECRET).is_err());

    // The head file deleted too: the head kept elsewhere still catches it.
    std::fs::remove_file(FileAuditLog::head_path(&path)).unwrap();
    write_lines(&path, &full[..4]);
    assert!(verify(&path).is_intact(), "without a head, a cut-off tail cannot show");
    let report = FileAuditLog::verify_with_head(&path, SECRET, Some(&head)).unwrap();
    let shown = head_problem(&report, ProblemKind::Truncated);
    assert!(shown.contains("it ends at seq 4, the expected head is at seq 6"), "{shown}");

    // Cut and written on: the entry at the head's seq is another one.
    let log = FileAuditLog::open(&path, SECRET).unwrap();
    log.append(record("run_x", 5)).await.unwrap();
    log.append(record("run_x", 6)).await.unwrap();
    check_chain(&path, 6);
    let report = FileAuditLog::verify_with_head(&path, SECRET, Some(&head)).unwrap();
    let shown = head_problem(&report, ProblemKind::HeadMismatch);
    assert!(shown.contains("the log was rewritten"), "{shown}");

    // The intact log against its own head, and an older one, and the genesis head.
    let now = verify(&path).head();
    for earlier in [now.clone(), AuditHead { seq: 4, hash: entries(&path)[3].hash.clone() }, AuditHead::genesis()] {
        assert!(FileAuditLog::verify_with_head(&path, SECRET, Some(&earlier)).unwrap().is_intact(), "{earlier}");
    }
}

#[tokio::test]
async fn the_head_file_is_signed() {
    let path = six_entries("head-signed").await;
    let head_path = FileAuditLog::head_path(&path);
    assert_eq!(
        head_path.file_name().unwrap().to_str().unwrap(),
        format!("{}.head", path.file_name().unwrap().to_str().unwrap())
    );
    let text = std::fs::read_to_string(&head_path).unwrap();
    assert_eq!(text.len(), 2 * 192, "two fixed-width slots");
    let last = &entries(&path)[5];
    let slots: Vec<Value> = text.lines().map(|l| serde_json::from_str(l.trim()).unwrap()).collect();
    assert_eq!(slots[0]["seq"], 6, "even seqs go to the first slot");
    assert_eq!(slots[0]["hash"], last.hash.as_str());
    assert_eq!(slots[1]["seq"], 5);

    // Another key's head, or garbage, is a problem of its own (and opening refuses).
    let report = FileAuditLog::verify(&path, "not-the-secret-at-all").unwrap();
    assert!(
        report.problems.iter().any(|p| p.line == 0 && p.kind == ProblemKind::BadSignature),
        "{:#?}",
        report.problems
    );
    std::fs::write(&head_path, "{\"seq\":1}\n").unwrap();
    head_problem(&verify(&path), ProblemKind::HeadMismatch);
    assert!(matches!(
        FileAuditLog::open(&path, SECRET).unwrap_err(),
        loom_agent::Error::AuditLogRefused { reason: AuditRefusal::BadHead { .. }, .. }
    ));

    // A log from before head files gets one when it is opened.
    std::fs::remove_file(&head_path).unwrap();
    assert_eq!(verify(&path).head_file, None);
    FileAuditLog::open(&path, SECRET).unwrap();
    assert_eq!(verify(&path).head_file.map(|h| h.seq), Some(6));
}

// ---------------------------------------------------------------------------------------------
// Refused files
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_file_that_is_not_an_audit_log_is_refused_and_left_alone() {
    let passwd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
    let entry = lines(&six_entries("refuse-src").await)[0].clone();
    let cases = [
        passwd.to_string(),
        "no newline at all".to_string(),
        format!("{passwd}{entry}\n"),
        format!("{entry}\n{passwd}"),
        format!("{entry}\n{{\"seq\": 2}}\n"),
    ];
    for text in cases {
        let path = temp_path("refuse");
        std::fs::write(&path, &text).unwrap();
        match FileAuditLog::open(&path, SECRET) {
            Err(loom_agent::Error::AuditLogRefused {
                path: refused,
                reason: AuditRefusal::NotAnAuditLog { detail },
            }) => {
                assert_eq!(refused, path);
                assert!(detail.contains("is not an audit entry"), "{detail}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "the file is unchanged");
        assert!(!FileAuditLog::head_path(&path).exists(), "no head file is made beside it");
    }
}

#[tokio::test]
async fn a_log_written_with_another_key_is_refused() {
    let path = six_entries("other-key").await;
    let before = std::fs::read(&path).unwrap();
    let err = FileAuditLog::open(&path, "another-key-0123456789").unwrap_err();
    assert!(
        matches!(&err, loom_agent::Error::AuditLogRefused { reason: AuditRefusal::WrongKey { seq: 6 }, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not signed with this key"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    check_chain(&path, 6);
}

// ---------------------------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_in_payloads_are_redacted_before_writing() {
    let path = temp_path("secrets");
    let log = FileAuditLog::open(&path, SECRET).unwrap();
    let payload = json!({
        "tool": "http", "api_key": "x",
        "args": {"url": "https://api.example.com", "note": "use sk-live-abc123def456ghi789jkl please",
                 "headers": {"Authorization": "Bearer abcdefghijklmnop"}, "token": "t"},
        "input_tokens": 12,
    });
    log.append(AuditRecord { scope: scope("run_s"), action: AuditAction::ToolCall, payload }).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in ["sk-live", "abc123def456", "abcdefghijklmnop", "\"x\"", "\"t\""] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let entry = &entries(&path)[0];
    assert_eq!(
        entry.payload,
        json!({
            "tool": "http", "api_key": REDACTED,
            "args": {"url": "https://api.example.com", "note": "use [redacted] please",
                     "headers": {"Authorization": REDACTED}, "token": REDACTED},
            "input_tokens": 12,
        })
    );
    check_chain(&path, 1);
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_through_one_log_keep_one_chain() {
    let path = temp_path("tasks-one");
    let log = FileAuditLog::open(&path, SECRET).unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    log.append(record(&format!("run_{t}"), n)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    check_chain(&path, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_through_separate_logs_on_one_file_keep_one_chain() {
    let path = temp_path("tasks-many");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            // Half of them always write on the blocking pool.
            let log = FileAuditLog::open(&path, SECRET).unwrap().write_inline(t % 2 == 0);
            tokio::spawn(async move {
                for n in 0..50 {
                    log.append(record(&format!("run_{t}"), n)).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    check_chain(&path, 400);
    let per_run = |t: usize| entries(&path).iter().filter(|e| e.run_id == format!("run_{t}")).count();
    assert!((0..8).all(|t| per_run(t) == 50));
}

const CHILD_FILE: &str = "LOOM_AUDIT_TEST_CHILD_FILE";
const CHILD_COUNT: &str = "LOOM_AUDIT_TEST_CHILD_COUNT";

/// Not a test on its own: in a child process started by
/// `many_processes_appending_to_one_file_keep_one_chain`, appends entries to the file it names.
#[test]
fn child_appender() {
    let Ok(path) = std::env::var(CHILD_FILE) else { return };
    let count: u64 = std::env::var(CHILD_COUNT).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let log = FileAuditLog::open(&path, SECRET).unwrap();
        let run = format!("proc_{}", std::process::id());
        for n in 0..count {
            log.append(record(&run, n)).await.unwrap();
        }
    });
}

#[test]
fn many_processes_appending_to_one_file_keep_one_chain() {
    const PROCESSES: usize = 4;
    const EACH: usize = 50;
    let path = temp_path("processes");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["child_appender", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_FILE, &path)
                .env(CHILD_COUNT, EACH.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    check_chain(&path, PROCESSES * EACH);
    let mut writers: Vec<String> = entries(&path).into_iter().map(|e| e.run_id).collect();
    writers.sort();
    writers.dedup();
    assert_eq!(writers.len(), PROCESSES, "every process wrote");
}

// ---------------------------------------------------------------------------------------------
// Cost (printed, not asserted)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_cost_is_printed() {
    const N: u32 = 2000;
    for (sync, inline) in [(false, true), (false, false), (true, false)] {
        let path = temp_path("cost");
        let log = FileAuditLog::open(&path, SECRET).unwrap().sync(sync).write_inline(inline);
        let n = if sync { N / 10 } else { N };
        log.append(record("warm", 0)).await.unwrap();
        let start = Instant::now();
        for i in 0..n {
            log.append(record("run_cost", u64::from(i))).await.unwrap();
        }
        let per = start.elapsed() / n;
        println!("FileAuditLog append (sync={sync}, inline={inline}): {per:?} per entry over {n} appends");
    }
    let memory = InMemoryAuditLog::new(SECRET).unwrap();
    let start = Instant::now();
    for i in 0..N {
        memory.append(record("run_cost", u64::from(i))).await.unwrap();
    }
    println!("InMemoryAuditLog append: {:?} per entry", start.elapsed() / N);

    // A 2-turn run with one tool, with and without the file audit log.
    // The log is opened once per process, as an application would; runs share it.
    let runs = 500u32;
    let path = temp_path("cost-run");
    let shared_log = FileAuditLog::open(&path, SECRET).unwrap();
    for audit in ["none", "file", "memory"].repeat(3) {
        let mut total = std::time::Duration::ZERO;
        for _ in 0..runs {
            let (_, shared) =
                scripted([ScriptedTurn::tool_call("lookup", json!({"x": "a"})), ScriptedTurn::text("done")]);
            let mut builder = Agent::builder().model(shared).tool(echo_tool("lookup"));
            match audit {
                "file" => builder = builder.audit_log(shared_log.clone()),
                "memory" => builder = builder.audit_log(memory.clone()),
                _ => {}
            }
            let agent = builder.build().unwrap();
            let start = Instant::now();
            agent.run(RunRequest::new("go")).await.unwrap();
            total += start.elapsed();
        }
        println!("2-turn run with one tool, audit log {audit}: {:?} per run", total / runs);
    }
}
