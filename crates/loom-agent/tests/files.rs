//! The file capability against real files in temporary directories: confinement (symbolic links
//! to files and directories that lead out, `..`, absolute paths, a directory swapped for a link
//! while reads go on), line windows, the byte cap on a huge file with bounded memory, binary files,
//! `glob` and `grep` honouring `.gitignore`, atomic `write_file` and `edit_file`, and the write
//! tools under the default permissions and `PermissionMode::ReadOnly` in real runs.
//!
//! This binary counts allocations (the largest single one) with its own global allocator for the
//! huge-file test; that test takes [`SERIAL`] exclusively, every other test takes it shared, so no
//! other test allocates while it measures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use common::*;
use loom_agent::capability::{self, Capability, Files};
use loom_agent::governance::{Approval, Decision, FnApproval, PermissionMode, StandardPermissions};
use loom_agent::model::ScriptedTurn;
use loom_agent::prelude::*;
use loom_agent::tool::{ToolErrorKind, ToolFlags, ToolSpec};
use loom_agent::{AgentBuilder, RunResult};
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// The system allocator, remembering the largest allocation it made.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// Held exclusively by the test that measures allocations, shared by every other test.
static SERIAL: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

#[tokio::test]
async fn a_one_gib_file_is_read_with_memory_bounded_by_the_cap() {
    let _alone = SERIAL.write().await;
    let dir = std::env::temp_dir().join(format!("loom-files-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let size: u64 = 1 << 30;
    // 100 KiB of numbered lines, then (sparse) zeros to 1 GiB: text in the first 8 KiB, so it is read.
    let text: String = (1..).map(|n| format!("line {n:06}\n")).take(100 * 1024 / 12).collect();
    std::fs::write(dir.join("big.bin"), &text).unwrap();
    std::fs::OpenOptions::new().write(true).open(dir.join("big.bin")).unwrap().set_len(size).unwrap();
    let cap = 64 * 1024;
    let tools = Files::new(&dir).max_read_bytes(cap).tools();
    let read = &tools[0];
    assert_eq!(read.name(), "read_file");

    LARGEST.store(0, Ordering::SeqCst);
    let call = read.call(ToolContext::detached("run_1", "sess_1"), json!({"path": "big.bin", "limit": 1_000_000}));
    let out = tokio::time::timeout(Duration::from_secs(30), call).await.expect("the read answers").unwrap();
    let largest = LARGEST.load(Ordering::SeqCst);

    let (header, shown) = out.content.split_once('\n').expect("a header line, then the lines");
    // Whole lines of 12 bytes fit under the cap; the lines after them are counted for 64 MiB.
    let lines = cap / 12;
    assert_eq!(shown.len(), lines * 12, "only whole lines are shown");
    assert!(shown.starts_with("line 000001\n") && shown.ends_with(&format!("line {lines:06}\n")));
    assert_eq!(
        header,
        format!(
            "[lines 1-{lines} of at least {} in `big.bin`; the output cap of {cap} bytes was reached; to read on, \
             call read_file with offset={}]",
            // The numbered lines, then the (unterminated) line of zeros, of which 64 MiB were counted.
            text.lines().count() + 1,
            lines + 1
        )
    );
    assert!(largest < 4 * cap, "the largest allocation during the read was {largest} bytes (cap {cap})");

    // A file of exactly the cap is whole: not truncated, no header.
    std::fs::write(dir.join("exact.txt"), "x".repeat(cap)).unwrap();
    let out = read.call(ToolContext::detached("run_1", "sess_1"), json!({"path": "exact.txt"})).await.unwrap();
    assert_eq!(out.content, "x".repeat(cap));
    // One line longer than the cap is cut, and says so.
    std::fs::write(dir.join("long.txt"), "y".repeat(cap + 10)).unwrap();
    let out = read.call(ToolContext::detached("run_1", "sess_1"), json!({"path": "long.txt"})).await.unwrap();
    let (header, shown) = out.content.split_once('\n').unwrap();
    assert_eq!(shown, "y".repeat(cap));
    assert_eq!(
        header,
        format!("[lines 1-1 of 1 in `long.txt`; line 1 is longer than the output cap and is cut after {cap} bytes]")
    );
    std::fs::remove_dir_all(&dir).ok();
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A scratch directory with `root/` (the capability's root) and `outside/` beside it; removed when
/// dropped.
struct Tree {
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Tree {
    fn new(name: &str) -> Tree {
        let base = std::env::temp_dir().join(format!("loom-files-{name}-{}", loom_agent::new_id("t")));
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        Tree { base, root, outside }
    }

    /// Writes `content` to `path` under the root, making its directories.
    fn put(&self, path: &str, content: impl AsRef<[u8]>) {
        let path = self.root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root.join(path)).unwrap()
    }

    /// Every name under `dir`, recursively (to find temporary files left behind).
    fn all_names(dir: &Path) -> Vec<String> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            names.push(entry.file_name().to_string_lossy().into_owned());
            if entry.file_type().unwrap().is_dir() {
                names.extend(Tree::all_names(&entry.path()));
            }
        }
        names
    }

    fn temp_files_left(&self) -> Vec<String> {
        Tree::all_names(&self.base).into_iter().filter(|n| n.contains("loom-tmp")).collect()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.base).ok();
    }
}

#[cfg(unix)]
fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Calls the tool `name` of `files` directly, failing the test if it does not answer within 10 s.
async fn call(files: &Files, name: &str, args: Value) -> Result<String, ToolError> {
    let tools = files.tools();
    let tool = tools.iter().find(|t| t.name() == name).unwrap_or_else(|| panic!("no tool {name}"));
    let answer = tool.call(ToolContext::detached("run_1", "sess_1"), args);
    let answer = tokio::time::timeout(Duration::from_secs(10), answer).await.expect("the tool answers within 10 s");
    answer.map(|out| out.content)
}

async fn ok(files: &Files, name: &str, args: Value) -> String {
    call(files, name, args.clone()).await.unwrap_or_else(|e| panic!("{name}({args}) failed: {}", e.message()))
}

async fn err(files: &Files, name: &str, args: Value) -> ToolError {
    match call(files, name, args.clone()).await {
        Ok(out) => panic!("{name}({args}) succeeded: {out}"),
        Err(e) => e,
    }
}

fn not_found(path: &str) -> String {
    format!("`{path}` does not exist under the allowed directory")
}

// ---------------------------------------------------------------------------------------------
// Confinement
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
#[tokio::test]
async fn links_and_dot_dots_that_lead_out_get_the_answer_of_a_missing_path() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("escape");
    std::fs::write(t.outside.join("secret.txt"), "OUTSIDE SECRET").unwrap();
    std::fs::create_dir_all(t.outside.join("dir")).unwrap();
    std::fs::write(t.outside.join("dir/inner.txt"), "OUTSIDE SECRET").unwrap();
    t.put("a.txt", "inside");
    t.put("sub/b.txt", "inside too");
    symlink(t.outside.join("secret.txt"), t.root.join("file_link")); // absolute target, outside
    symlink("../outside/secret.txt", t.root.join("rel_link")); // relative target, outside
    symlink(&t.outside, t.root.join("dir_link")); // a directory outside
    symlink("../../outside", t.root.join("sub/deep_link"));
    symlink("a.txt", t.root.join("ok_link")); // inside: fine
    let files = capability::files(&t.root);

    for path in [
        "file_link",
        "rel_link",
        "dir_link/secret.txt",
        "dir_link/dir/inner.txt",
        "sub/deep_link/secret.txt",
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        "missing.txt",
        "../outside/missing.txt",
    ] {
        let e = err(&files, "read_file", json!({"path": path})).await;
        assert_eq!(e.message(), not_found(path), "read_file {path}");
    }
    for path in ["dir_link", "sub/deep_link", "..", "../outside"] {
        let e = err(&files, "list_files", json!({"path": path})).await;
        assert_eq!(e.message(), not_found(path), "list_files {path}");
        let e = err(&files, "grep", json!({"pattern": "SECRET", "path": path})).await;
        assert_eq!(e.message(), not_found(path), "grep {path}");
        let e = err(&files, "glob", json!({"pattern": "*", "path": path})).await;
        assert_eq!(e.message(), not_found(path), "glob {path}");
    }
    // Inside, `..` and links are fine.
    assert_eq!(ok(&files, "read_file", json!({"path": "ok_link"})).await, "inside");
    assert_eq!(ok(&files, "read_file", json!({"path": "sub/../a.txt"})).await, "inside");
    // The walks show nothing from outside.
    assert_eq!(ok(&files, "grep", json!({"pattern": "SECRET"})).await, "No matches.");
    assert_eq!(ok(&files, "glob", json!({"pattern": "**/*"})).await, "a.txt\nok_link\nsub/b.txt");
    assert!(!ok(&files, "list_files", json!({})).await.contains("SECRET"));
}

#[tokio::test]
async fn absolute_paths_are_refused_even_inside_the_root() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("absolute");
    t.put("a.txt", "inside");
    let files = capability::files(&t.root).writable();
    let inside = t.root.join("a.txt").to_string_lossy().into_owned();
    for path in ["/etc/passwd", inside.as_str()] {
        for (tool, args) in [
            ("read_file", json!({"path": path})),
            ("list_files", json!({"path": path})),
            ("glob", json!({"pattern": "*", "path": path})),
            ("grep", json!({"pattern": "x", "path": path})),
            ("write_file", json!({"path": path, "content": "x"})),
            ("edit_file", json!({"path": path, "old_string": "inside", "new_string": "x"})),
        ] {
            let e = err(&files, tool, args).await;
            assert_eq!(e.kind(), ToolErrorKind::InvalidArguments, "{tool} {path}");
            assert!(e.message().contains("is an absolute path; give a path relative to"), "{tool}: {}", e.message());
        }
    }
    assert_eq!(t.read("a.txt"), "inside");
    let e = err(&files, "glob", json!({"pattern": "/etc/*"})).await;
    assert_eq!(e.kind(), ToolErrorKind::InvalidArguments);
}

/// A directory is swapped, over and over, between a real one and a link to a directory outside
/// while reads go on: no read ever returns what is outside (the open itself is confined, so there
/// is no window between a check and the use).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_link_during_reads_never_leads_out() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("race");
    std::fs::write(t.outside.join("secret.txt"), "OUTSIDE SECRET").unwrap();
    t.put("real/secret.txt", "inside");
    symlink(&t.outside, t.root.join("link"));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (root, stop) = (t.root.clone(), stop.clone());
        std::thread::spawn(move || {
            let (real, link, flip) = (root.join("real"), root.join("link"), root.join("flip"));
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(&real, &flip).unwrap();
                std::fs::rename(&flip, &real).unwrap();
                std::fs::rename(&link, &flip).unwrap();
                std::fs::rename(&flip, &link).unwrap();
            }
        })
    };
    let files = capability::files(&t.root);
    let (mut inside, mut refused) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) || inside == 0 || refused == 0 {
        assert!(started.elapsed() < Duration::from_secs(30), "the swap was never seen both ways");
        match call(&files, "read_file", json!({"path": "flip/secret.txt"})).await {
            Ok(text) => {
                assert_eq!(text, "inside", "a read went through the link");
                inside += 1;
            }
            Err(e) => {
                assert_eq!(e.message(), not_found("flip/secret.txt"));
                refused += 1;
            }
        }
        let found = ok(&files, "grep", json!({"pattern": "SECRET"})).await;
        assert_eq!(found, "No matches.", "grep went through the link");
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// read_file: windows, binary files
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn read_file_shows_a_window_of_lines_with_a_header() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("lines");
    let ten: String = (1..=10).map(|n| format!("line {n}\n")).collect();
    t.put("f.txt", &ten);
    t.put("g.txt", "a\nb");
    t.put("empty.txt", "");
    let files = capability::files(&t.root);
    let read = |args: Value| {
        let files = files.clone();
        async move { call(&files, "read_file", args).await }
    };
    assert_eq!(read(json!({"path": "f.txt"})).await.unwrap(), ten, "a small file comes back whole");
    assert_eq!(
        read(json!({"path": "f.txt", "offset": 3, "limit": 2})).await.unwrap(),
        "[lines 3-4 of 10 in `f.txt`; to read on, call read_file with offset=5]\nline 3\nline 4\n"
    );
    assert_eq!(
        read(json!({"path": "f.txt", "offset": 9})).await.unwrap(),
        "[lines 9-10 of 10 in `f.txt`]\nline 9\nline 10\n"
    );
    assert_eq!(
        read(json!({"path": "f.txt", "limit": 100})).await.unwrap(),
        format!("[lines 1-10 of 10 in `f.txt`]\n{ten}")
    );
    assert_eq!(read(json!({"path": "g.txt", "offset": 2})).await.unwrap(), "[lines 2-2 of 2 in `g.txt`]\nb");
    assert_eq!(read(json!({"path": "empty.txt"})).await.unwrap(), "[`empty.txt` is empty]");
    let e = read(json!({"path": "f.txt", "offset": 11})).await.unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::InvalidArguments);
    assert_eq!(e.message(), "offset 11 is past the end of `f.txt`, which has 10 lines");
    let e = read(json!({"path": "f.txt", "offsett": 2})).await.unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::InvalidArguments, "{}", e.message());
    let e = read(json!({"path": "."})).await.unwrap_err();
    assert!(e.message().contains("is a directory"), "{}", e.message());

    // The byte cap keeps whole lines and says how to read on.
    let capped = capability::files(&t.root).max_read_bytes(20);
    assert_eq!(
        call(&capped, "read_file", json!({"path": "f.txt"})).await.unwrap(),
        "[lines 1-2 of 10 in `f.txt`; the output cap of 20 bytes was reached; to read on, call read_file with \
         offset=3]\nline 1\nline 2\n"
    );
}

#[tokio::test]
async fn binary_files_are_refused_clearly() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("binary");
    t.put("img.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    t.put("latin1.txt", b"caf\xe9 au lait\n");
    let mut late_nul = "a".repeat(9000).into_bytes();
    late_nul.push(0);
    t.put("late.txt", &late_nul);
    let straddle = format!("{}é tail", "a".repeat(8191)); // `é` straddles the 8 KiB sample's end
    t.put("straddle.txt", &straddle);
    let files = capability::files(&t.root);
    let e = err(&files, "read_file", json!({"path": "img.png"})).await;
    assert_eq!(
        e.message(),
        "`img.png` looks like a binary file (it contains NUL bytes in its first 8 KiB, 16 bytes in all); read_file \
         only reads text"
    );
    let e = err(&files, "read_file", json!({"path": "latin1.txt"})).await;
    assert!(e.message().contains("looks like a binary file (it is not valid UTF-8"), "{}", e.message());
    // Only the first 8 KiB decide.
    assert_eq!(ok(&files, "read_file", json!({"path": "late.txt"})).await.len(), 9001);
    assert_eq!(ok(&files, "read_file", json!({"path": "straddle.txt"})).await, straddle);
}

// ---------------------------------------------------------------------------------------------
// glob and grep
// ---------------------------------------------------------------------------------------------

/// A small project: ignored, hidden and binary files beside the ones the walks show.
fn project(name: &str) -> Tree {
    let t = Tree::new(name);
    t.put(".gitignore", "target/\n*.log\n/src/generated.rs\n");
    t.put("src/lib.rs", "fn main() {}\n// TODO: one\n");
    t.put("src/b/c.rs", "fn helper() {}\n// todo: two\n");
    t.put("src/generated.rs", "fn generated() {} // TODO\n");
    t.put("src/.hidden.rs", "fn hidden() {} // TODO\n");
    t.put(".secret/x.rs", "fn secret() {} // TODO\n");
    t.put("target/d.rs", "fn built() {} // TODO\n");
    t.put("notes.log", "TODO log\n");
    t.put("README.md", "TODO: readme\n");
    t.put("sub/.ignore", "skip.rs\n");
    t.put("sub/skip.rs", "fn skip() {} // TODO\n");
    t.put("sub/keep.rs", "fn keep() {}\n");
    t.put("blob.bin", b"TODO\0binary\n");
    t
}

#[tokio::test]
async fn glob_honours_gitignore_and_skips_hidden_files() {
    let _shared = SERIAL.read().await;
    let t = project("glob");
    let files = capability::files(&t.root);
    let glob = |pattern: &str, path: Option<&str>| {
        let mut args = json!({"pattern": pattern});
        if let Some(path) = path {
            args["path"] = json!(path);
        }
        let files = files.clone();
        async move { ok(&files, "glob", args).await }
    };
    assert_eq!(glob("**/*.rs", None).await, "src/b/c.rs\nsrc/lib.rs\nsub/keep.rs");
    assert_eq!(glob("*.rs", None).await, "src/b/c.rs\nsrc/lib.rs\nsub/keep.rs");
    assert_eq!(glob("src/*.rs", None).await, "src/lib.rs");
    assert_eq!(glob("{README,LICENSE}.md", None).await, "README.md");
    // Starting below the root, the root's .gitignore still applies (`/src/generated.rs`).
    assert_eq!(glob("*.rs", Some("src")).await, "src/b/c.rs\nsrc/lib.rs");
    assert_eq!(glob("b/*.rs", Some("src")).await, "src/b/c.rs");
    assert_eq!(glob("*.nothing", None).await, "No files match.");
    let capped = capability::files(&t.root).max_entries(2);
    assert_eq!(
        ok(&capped, "glob", json!({"pattern": "*.rs"})).await,
        "src/b/c.rs\nsrc/lib.rs\n[1 more files not shown; narrow the pattern or the path]"
    );
    let e = err(&files, "glob", json!({"pattern": "src/[a"})).await;
    assert_eq!(e.kind(), ToolErrorKind::InvalidArguments);
    assert!(e.message().starts_with("invalid glob pattern `src/[a`"), "{}", e.message());
}

#[tokio::test]
async fn grep_honours_gitignore_skips_hidden_and_binary_files_and_sorts() {
    let _shared = SERIAL.read().await;
    let t = project("grep");
    let files = capability::files(&t.root);
    let grep = |args: Value| {
        let files = files.clone();
        async move { ok(&files, "grep", args).await }
    };
    assert_eq!(grep(json!({"pattern": "TODO"})).await, "README.md:1:TODO: readme\nsrc/lib.rs:2:// TODO: one");
    assert_eq!(
        grep(json!({"pattern": "todo", "case_insensitive": true})).await,
        "README.md:1:TODO: readme\nsrc/b/c.rs:2:// todo: two\nsrc/lib.rs:2:// TODO: one"
    );
    assert_eq!(
        grep(json!({"pattern": r"fn \w+\(", "path": "src", "glob": "*.rs"})).await,
        "src/b/c.rs:1:fn helper() {}\nsrc/lib.rs:1:fn main() {}"
    );
    assert_eq!(grep(json!({"pattern": "fn", "glob": "sub/*.rs"})).await, "sub/keep.rs:1:fn keep() {}");
    // One file named: searched even when it is ignored (it was asked for).
    assert_eq!(grep(json!({"pattern": "fn", "path": "src/lib.rs"})).await, "src/lib.rs:1:fn main() {}");
    assert_eq!(grep(json!({"pattern": "TODO", "path": "target/d.rs"})).await, "target/d.rs:1:fn built() {} // TODO");
    assert_eq!(grep(json!({"pattern": "nothing matches this"})).await, "No matches.");
    let e = err(&files, "grep", json!({"pattern": "fn ("})).await;
    assert_eq!(e.kind(), ToolErrorKind::InvalidArguments);
    assert!(e.message().starts_with("invalid regular expression"), "{}", e.message());
}

#[tokio::test]
async fn grep_caps_matches_and_line_length() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("grep-caps");
    t.put("a.txt", "match\n");
    t.put("many.txt", (1..=10).map(|n| format!("match {n}\n")).collect::<String>());
    t.put("long.txt", format!("{}needle{}\n", "x".repeat(1000), "y".repeat(10)));
    let files = capability::files(&t.root).max_matches(3);
    assert_eq!(
        ok(&files, "grep", json!({"pattern": "match"})).await,
        "a.txt:1:match\nmany.txt:1:match 1\nmany.txt:2:match 2\n\
         [showing 3 of 11 matching lines in 2 files; narrow the pattern, the path or the glob to see the rest]"
    );
    let long = ok(&files, "grep", json!({"pattern": "needle"})).await;
    assert_eq!(long, format!("long.txt:1:{}… [716 more characters]", "x".repeat(300)));
}

// ---------------------------------------------------------------------------------------------
// write_file and edit_file
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn write_file_creates_and_replaces_atomically_keeping_permissions() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("write");
    let files = capability::files(&t.root).writable();
    assert_eq!(
        ok(&files, "write_file", json!({"path": "new/dir/file.txt", "content": "hello\n"})).await,
        "Created `new/dir/file.txt` with 6 bytes (1 line)."
    );
    assert_eq!(t.read("new/dir/file.txt"), "hello\n");
    t.put("script.sh", "old");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(t.root.join("script.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    }
    assert_eq!(
        ok(&files, "write_file", json!({"path": "script.sh", "content": "echo hi\necho there\n"})).await,
        "Replaced `script.sh` (3 bytes) with 19 bytes (2 lines)."
    );
    assert_eq!(t.read("script.sh"), "echo hi\necho there\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.root.join("script.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750, "the replaced file keeps its permissions");
    }
    let e = err(&files, "write_file", json!({"path": "new", "content": "x"})).await;
    assert_eq!(e.message(), "`new` is a directory");
    let e = err(&files, "write_file", json!({"path": ".", "content": "x"})).await;
    assert_eq!(e.kind(), ToolErrorKind::InvalidArguments);
    assert_eq!(t.temp_files_left(), Vec::<String>::new());
}

/// A reader polling the file while it is rewritten over and over sees the old content or the new,
/// never a mix or a short file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_never_sees_a_half_written_file() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("atomic");
    let size = 1 << 20;
    let (a, b) = ("a".repeat(size), "b".repeat(size));
    t.put("big.txt", &a);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, stop) = (t.root.join("big.txt"), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(bytes.len(), size, "a short read: the file was seen half written");
                assert!(bytes.iter().all(|&c| c == bytes[0]), "a mix of two versions");
                reads += 1;
            }
            reads
        })
    };
    let files = capability::files(&t.root).writable();
    for i in 0..30 {
        let content = if i % 2 == 0 { &b } else { &a };
        ok(&files, "write_file", json!({"path": "big.txt", "content": content})).await;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(t.temp_files_left(), Vec::<String>::new());
}

#[tokio::test]
async fn edit_file_replaces_exactly_one_occurrence_or_fails_changing_nothing() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("edit");
    t.put("cfg.txt", "x = 1\ny = 1\nname = \"loom\"\n");
    t.put("blob.bin", b"x\0y");
    let files = capability::files(&t.root).writable();
    let edit = |old: &str, new: &str, all: bool| json!({"path": "cfg.txt", "old_string": old, "new_string": new, "replace_all": all});

    assert_eq!(
        ok(&files, "edit_file", edit("name = \"loom\"", "name = \"weave\"", false)).await,
        "Edited `cfg.txt`: replaced 1 occurrence (27 bytes now)."
    );
    assert_eq!(t.read("cfg.txt"), "x = 1\ny = 1\nname = \"weave\"\n");

    let before = t.read("cfg.txt");
    let e = err(&files, "edit_file", edit("= 1", "= 2", false)).await;
    assert_eq!(
        e.message(),
        "old_string occurs 2 times in `cfg.txt`; include more of the surrounding text so it occurs once, or set \
         replace_all to true to replace every occurrence"
    );
    assert_eq!(t.read("cfg.txt"), before, "a failed edit changes nothing");
    let e = err(&files, "edit_file", edit("z = 3", "z = 4", false)).await;
    assert!(e.message().starts_with("old_string was not found in `cfg.txt`"), "{}", e.message());
    assert_eq!(t.read("cfg.txt"), before);
    let e = err(&files, "edit_file", edit("", "z", false)).await;
    assert_eq!(e.kind(), ToolErrorKind::InvalidArguments);
    let e = err(&files, "edit_file", edit("x", "x", false)).await;
    assert_eq!(e.kind(), ToolErrorKind::InvalidArguments);
    assert_eq!(t.read("cfg.txt"), before);

    assert_eq!(
        ok(&files, "edit_file", edit("= 1", "= 2", true)).await,
        "Edited `cfg.txt`: replaced 2 occurrences (27 bytes now)."
    );
    assert_eq!(t.read("cfg.txt"), "x = 2\ny = 2\nname = \"weave\"\n");

    let e = err(&files, "edit_file", json!({"path": "nope.txt", "old_string": "a", "new_string": "b"})).await;
    assert_eq!(e.message(), "`nope.txt` does not exist under the allowed directory; use write_file to create it");
    let e = err(&files, "edit_file", json!({"path": "blob.bin", "old_string": "x", "new_string": "z"})).await;
    assert!(e.message().contains("is not a text file"), "{}", e.message());
    assert_eq!(t.temp_files_left(), Vec::<String>::new());
}

#[cfg(unix)]
#[tokio::test]
async fn writes_through_links_or_dot_dots_that_lead_out_are_refused() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("write-escape");
    std::fs::write(t.outside.join("target.txt"), "original").unwrap();
    symlink(&t.outside, t.root.join("out_dir"));
    symlink(t.outside.join("target.txt"), t.root.join("out_file"));
    t.put("a.txt", "inside");
    symlink("a.txt", t.root.join("in_link"));
    let files = capability::files(&t.root).writable();
    for path in ["out_dir/new.txt", "out_dir/deeper/new.txt", "out_file", "../outside/new.txt", "../new.txt"] {
        let e = err(&files, "write_file", json!({"path": path, "content": "pwned"})).await;
        assert!(
            e.message()
                .starts_with(&format!("`{path}` cannot be written: it is not a path under the allowed directory")),
            "{path}: {}",
            e.message()
        );
    }
    let e =
        err(&files, "edit_file", json!({"path": "out_file", "old_string": "original", "new_string": "pwned"})).await;
    assert!(e.message().contains("not a path under the allowed directory"), "{}", e.message());
    let mut outside = Tree::all_names(&t.outside);
    outside.sort();
    assert_eq!(outside, ["target.txt"], "nothing was created outside");
    assert_eq!(std::fs::read_to_string(t.outside.join("target.txt")).unwrap(), "original");
    assert!(!t.base.join("new.txt").exists());
    assert!(std::fs::symlink_metadata(t.root.join("out_file")).unwrap().file_type().is_symlink());

    // A link inside the root is written through; the link stays a link.
    ok(&files, "edit_file", json!({"path": "in_link", "old_string": "inside", "new_string": "edited"})).await;
    assert_eq!(t.read("a.txt"), "edited");
    assert!(std::fs::symlink_metadata(t.root.join("in_link")).unwrap().file_type().is_symlink());
    assert_eq!(t.temp_files_left(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// In real runs: approval for the write tools, read-only mode
// ---------------------------------------------------------------------------------------------

/// Runs an agent with `files` whose scripted model makes `calls` in one turn, then answers "done".
async fn run(files: Files, calls: &[(&str, Value)], configure: impl FnOnce(AgentBuilder) -> AgentBuilder) -> RunResult {
    let mut turn = ScriptedTurn::text("");
    for (name, args) in calls {
        turn = turn.with_tool_call(*name, args.clone());
    }
    let (_model, shared) = scripted([turn, ScriptedTurn::text("done")]);
    let agent = configure(Agent::builder().model(shared).capability(files)).build().unwrap();
    let result = agent.run("go").await.unwrap();
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Completed);
    result
}

#[tokio::test]
async fn the_write_tools_ask_for_approval_under_the_default_permissions() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("approval");
    let write = ("write_file", json!({"path": "made.txt", "content": "hi"}));

    // No approval handler: asking means no.
    let result = run(capability::files(&t.root).writable(), std::slice::from_ref(&write), |b| b).await;
    let results = tool_results(&result.events);
    assert_eq!(results.len(), 1);
    assert!(results[0].is_error);
    assert_eq!(results[0].error_kind, Some(ToolErrorKind::Denied));
    assert!(results[0].output.contains("`write_file` is destructive"), "{}", results[0].output);
    assert!(!t.root.join("made.txt").exists());

    // A person who says yes: the file is written, after they were asked why.
    let asked = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let asked = asked.clone();
        FnApproval::new(move |request| {
            asked.lock().unwrap().push((request.tool.name.clone(), request.reason.clone()));
            async { Approval::Allow }
        })
    };
    let read = ("read_file", json!({"path": "made.txt"}));
    let result = run(capability::files(&t.root).writable(), &[write], |b| b.approval_handler(handler)).await;
    assert!(!tool_results(&result.events)[0].is_error);
    assert_eq!(t.read("made.txt"), "hi");
    assert_eq!(*asked.lock().unwrap(), [("write_file".to_string(), "`write_file` is destructive".to_string())]);

    // Reads never ask.
    let result = run(capability::files(&t.root).writable(), &[read], |b| b).await;
    assert_eq!(tool_results(&result.events)[0].output, "hi");
}

#[tokio::test]
async fn read_only_mode_denies_the_write_tools_without_asking() {
    let _shared = SERIAL.read().await;
    let t = Tree::new("read-only-mode");
    t.put("a.txt", "inside");
    let asked = Arc::new(AtomicUsize::new(0));
    let handler = {
        let asked = asked.clone();
        FnApproval::new(move |_request| {
            asked.fetch_add(1, Ordering::SeqCst);
            async { Approval::Allow }
        })
    };
    let calls = [
        ("read_file", json!({"path": "a.txt"})),
        ("write_file", json!({"path": "made.txt", "content": "hi"})),
        ("edit_file", json!({"path": "a.txt", "old_string": "inside", "new_string": "changed"})),
    ];
    let result = run(capability::files(&t.root).writable(), &calls, |b| {
        b.permissions(StandardPermissions::new().mode(PermissionMode::ReadOnly)).approval_handler(handler)
    })
    .await;
    let results = tool_results(&result.events);
    assert_eq!(results[0].output, "inside");
    for denied in &results[1..] {
        assert_eq!(denied.error_kind, Some(ToolErrorKind::Denied), "{}", denied.output);
        assert!(
            denied
                .output
                .contains(&format!("`{}` is not a read-only tool, and the agent runs in read-only mode", denied.name)),
            "{}",
            denied.output
        );
    }
    assert_eq!(asked.load(Ordering::SeqCst), 0, "read-only mode denies without asking");
    assert!(!t.root.join("made.txt").exists());
    assert_eq!(t.read("a.txt"), "inside");
}

#[test]
fn read_only_mode_lets_only_read_only_tools_through() {
    let spec = |name: &str, flags: ToolFlags| ToolSpec {
        name: name.into(),
        description: String::new(),
        parameters: json!({"type": "object"}),
        flags,
    };
    let policy = StandardPermissions::new().mode(PermissionMode::ReadOnly);
    assert_eq!(policy.decide(&spec("read_file", ToolFlags::new().read_only())), Decision::Allow);
    // Read-only but needing permission: still asks.
    assert!(matches!(
        policy.decide(&spec("peek", ToolFlags::new().read_only().requires_permission())),
        Decision::Ask(_)
    ));
    for flags in [ToolFlags::new(), ToolFlags::new().destructive(), ToolFlags::new().concurrency_safe()] {
        assert!(matches!(policy.decide(&spec("other", flags)), Decision::Deny(_)), "{flags:?}");
    }
    // The deny list still comes first.
    let denied = StandardPermissions::new().mode(PermissionMode::ReadOnly).deny("read_file");
    assert_eq!(
        denied.decide(&spec("read_file", ToolFlags::new().read_only())),
        Decision::Deny("`read_file` is on the deny list".into())
    );
}
