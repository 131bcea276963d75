//! Unit tests of the parts the integration tests (`tests/files.rs`) do not reach directly.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::tool::ToolContext;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-files-{name}-{}", crate::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn read(files: &Files, path: &str) -> Result<ToolOutput, ToolError> {
    let tools = files.tools();
    let call = tools[0].call(ToolContext::detached("run_1", "sess_1"), json!({"path": path}));
    // Every read answers quickly: a read that blocks fails the test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(10), call).await.expect("read_file did not answer within 10 s")
}

#[cfg(unix)]
#[tokio::test]
async fn a_fifo_or_a_device_is_refused_without_blocking() {
    let dir = scratch("fifo");
    let status = std::process::Command::new("mkfifo").arg(dir.join("pipe")).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let err = read(&files(&dir), "pipe").await.unwrap_err();
    assert!(err.message().contains("not a regular file"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Devices: /dev/zero never ends, /dev/null is empty; neither is read.
    let dev = files("/dev");
    for device in ["zero", "null"] {
        let err = read(&dev, device).await.unwrap_err();
        assert!(err.message().contains("not a regular file"), "{device}: {}", err.message());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(unix)]
#[test]
fn a_fifo_swapped_in_after_the_check_does_not_block_the_open() {
    let dir = scratch("swap");
    assert!(std::process::Command::new("mkfifo").arg(dir.join("pipe")).status().unwrap().success());
    let handle = cap_std::fs::Dir::open_ambient_dir(&dir, cap_std::ambient_authority()).unwrap();
    // No writer: a plain open for reading would wait for one forever.
    let file = handle.open_with("pipe", &confine::read_options()).unwrap();
    assert!(!file.metadata().unwrap().is_file());
    let err = confine::open_regular(&handle, std::path::Path::new("pipe"), "pipe").unwrap_err();
    assert!(err.message().contains("not a regular file"), "{}", err.message());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_text_never_ends_in_half_a_character() {
    let bytes = "aé".as_bytes();
    assert_eq!(read::text_of(&bytes[..2]), "a");
    assert_eq!(read::text_of(bytes), "aé");
}

#[test]
fn binary_is_nul_bytes_or_invalid_utf8_but_not_a_character_cut_at_the_end() {
    assert_eq!(read::binary_reason(b"text\n"), None);
    assert_eq!(read::binary_reason(b"a\0b"), Some("it contains NUL bytes"));
    assert_eq!(read::binary_reason(b"caf\xe9 au lait"), Some("it is not valid UTF-8"));
    assert_eq!(read::binary_reason(&"aé".as_bytes()[..2]), None);
}

#[test]
fn the_read_tools_are_safe_to_run_again_and_the_write_tools_ask() {
    let read_only = files(".").tools();
    let names: Vec<&str> = read_only.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["read_file", "list_files", "glob", "grep"]);
    for tool in &read_only {
        let flags = tool.flags();
        assert!(flags.read_only && flags.idempotent && flags.concurrency_safe, "{}: {flags:?}", tool.name());
        assert!(!flags.destructive, "{}", tool.name());
    }
    let writable = files(".").writable().tools();
    let names: Vec<&str> = writable.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["read_file", "list_files", "glob", "grep", "write_file", "edit_file"]);
    for tool in &writable[4..] {
        let flags = tool.flags();
        assert!(flags.destructive && !flags.read_only && !flags.concurrency_safe, "{}: {flags:?}", tool.name());
    }
    // `.read_only()` takes the write tools away again; `Files::new(root)` is the same as `files(root)`.
    assert_eq!(files(".").writable().read_only().tools().len(), 4);
    assert!(!Files::new(".").is_writable());
}

#[test]
fn glob_patterns_without_a_slash_match_names_at_any_depth() {
    let names = search::NamePattern::new("*.rs").unwrap();
    assert!(names.matches_for_test("a/b/c.rs") && names.matches_for_test("c.rs"));
    let paths = search::NamePattern::new("src/*.rs").unwrap();
    assert!(paths.matches_for_test("src/lib.rs") && !paths.matches_for_test("src/a/lib.rs"));
    let deep = search::NamePattern::new("src/**/*.rs").unwrap();
    assert!(deep.matches_for_test("src/lib.rs") && deep.matches_for_test("src/a/b/lib.rs"));
    for bad in ["", "/etc/*", "../*", "a/../../b", "a[", "{a"] {
        let err = search::NamePattern::new(bad).unwrap_err();
        assert_eq!(err.kind(), crate::tool::ToolErrorKind::InvalidArguments, "{bad}: {}", err.message());
    }
}

#[test]
fn a_write_or_edit_cancelled_before_its_rename_changes_nothing() {
    let root = scratch("cancelled-write");
    std::fs::write(root.join("a.txt"), "old text").unwrap();
    let dir = cap_std::fs::Dir::open_ambient_dir(&root, cap_std::ambient_authority()).unwrap();
    let cancelled = tokio_util::sync::CancellationToken::new();
    cancelled.cancel();

    let err = write::write_file(&dir, Path::new("a.txt"), "a.txt", "new text", &cancelled).unwrap_err();
    assert!(err.message().contains("cancelled"), "{}", err.message());
    let edit = write::Edit { old: "old", new: "new", all: false, max_bytes: MAX_EDIT_BYTES };
    let err = write::edit_file(&dir, Path::new("a.txt"), "a.txt", &edit, &cancelled).unwrap_err();
    assert!(err.message().contains("cancelled"), "{}", err.message());
    assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "old text");
    let names: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");

    // Not cancelled: the same write goes through.
    let live = tokio_util::sync::CancellationToken::new();
    write::write_file(&dir, Path::new("a.txt"), "a.txt", "new text", &live).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("a.txt")).unwrap(), "new text");
    std::fs::remove_dir_all(&root).ok();
}
