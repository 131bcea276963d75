//! One conformance table for every capability tool (issue 11): `read_file`, `list_files`, `glob`,
//! `grep`, `write_file`, `edit_file`, `web_fetch`, `web_search`, `bash`, `load_skill` and MCP tools
//! (`SERVER__TOOL`, feature `mcp`), each through real agent runs with a scripted model, an
//! in-memory audit log and the default permissions.
//!
//! Every tool is a row of data ([`Subject`]); every property is a column:
//!
//! - **bad arguments** (a required field missing, a field of the wrong type, a value the tool does
//!   not know): the model reads an error tool result (`Error: …`, the same text as the
//!   `tool.result` event, with `is_error`), the run goes on and completes, and the audit log holds
//!   the call's entries in order (`tool_result` only, when the schema check refused the call;
//!   `[permission_decision,] tool_call, tool_result` when the tool itself refused it).
//! - **good call**: a result the model reads, the audit entries in order, the effect done.
//! - **approval**: read-only tools run without a `permission.decision`; tools that need approval
//!   run under an approving handler (a `permission.decision` allow by the approver first) and
//!   without one are denied: a `permission.decision` deny event, a `permission_decision` audit
//!   entry, no `tool_call` entry, and no effect.
//! - **output cap**: a call whose output would be large reaches the model capped, by the tool's
//!   own cap or by the runtime's `tool_output_limit`.
//! - **cancel**: the run is cancelled while the call is in flight; it ends `cancelled` within 2 s
//!   and the call's resources are gone (no process left, the connection closed, the MCP server
//!   told).
//! - **timeout**: the tool's own time limit (or the runtime's `tool_timeout`) gives a `timeout`
//!   error result the model reads, and the run completes.
//!
//! The table (tool × property → pass / N/A with the reason) is printed at the end (see it with
//! `--nocapture`); a failing cell fails the test, after the whole table is printed.
//!
//! MCP rows use the npm reference server `@modelcontextprotocol/server-everything` (and a small
//! scripted server on its SDK); they print "skipped" and become N/A when node or npm is missing,
//! and are N/A when the crate is built without the `mcp` feature.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[cfg(feature = "mcp")]
#[path = "../../loom-mcp/tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use loom_agent::capability;
use loom_agent::event::ToolResultEvent;
use loom_agent::governance::{Approval, AuditEntry, DecidedBy, FnApproval, InMemoryAuditLog, PermissionDecision};
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::{Agent, AgentBuilder, EventKind, Message, RunResult, RunState, ToolErrorKind};
use serde_json::{Value, json};

const SECRET: &[u8] = b"capability-conformance-secret";
/// The runtime's cap on one tool result in every agent of this suite.
const LIMIT: usize = 16 * 1024;

// ---------------------------------------------------------------------------------------------
// The rows: one subject per tool
// ---------------------------------------------------------------------------------------------

/// Adds a capability (and any limits a case needs) to an agent builder.
type Add = Arc<dyn Fn(AgentBuilder) -> AgentBuilder + Send + Sync>;
/// Whether a good call's effect is there.
type Effect = Arc<dyn Fn() -> bool + Send + Sync>;
/// Checks a capped result; returns what capped it, for the table.
type CapCheck = Arc<dyn Fn(&ToolResultEvent) -> Result<String, String> + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A check run after the fact (a process gone, a connection closed, the server told).
type Probe = Arc<dyn Fn() -> BoxFuture<Result<String, String>> + Send + Sync>;

/// One bad-arguments case.
#[derive(Clone)]
#[cfg_attr(not(feature = "mcp"), allow(dead_code))]
enum Bad {
    /// Not applicable, with the reason.
    Na(&'static str),
    /// The schema check refuses it before the tool runs (the model reads "do not match its schema").
    Schema(Value),
    /// The schema lets it through and the tool refuses it; the error contains the text.
    Tool(Value, &'static str),
    /// Like `Schema`, through another tool of the same server (MCP).
    SchemaOf(&'static str, Value),
}

const BAD_LABELS: [&str; 3] = ["bad: missing field", "bad: wrong type", "bad: unknown value"];

/// A property that is not applicable to a tool, or its case.
enum Prop<T> {
    Na(String),
    Case(T),
}

fn na<T>(reason: &str) -> Prop<T> {
    Prop::Na(reason.to_string())
}

struct CapCase {
    add: Add,
    args: Value,
    check: CapCheck,
}

/// How the test knows the call is in flight.
#[cfg_attr(not(feature = "mcp"), allow(dead_code))]
enum InFlight {
    /// A `sleep ARG` process runs.
    Sleeping(String),
    /// The hold server accepted the connection.
    Accepted(Arc<AtomicBool>),
    /// The `tool.call` event, then this long.
    AfterCall(Duration),
}

struct CancelCase {
    add: Add,
    args: Value,
    in_flight: InFlight,
    /// What is gone afterwards.
    gone: Probe,
    /// More scripted turns for a second run on the same agent (the MCP server still answers).
    then: Option<(String, Value, &'static str)>,
}

struct TimeoutCase {
    add: Add,
    args: Value,
    /// Text the error result contains.
    expect: &'static str,
    gone: Option<Probe>,
}

struct Subject {
    tool: String,
    add: Add,
    needs_approval: bool,
    bad: [Bad; 3],
    good: Option<(Value, &'static str)>,
    effect: Option<Effect>,
    cap: Prop<CapCase>,
    cancel: Prop<CancelCase>,
    timeout: Prop<TimeoutCase>,
}

fn add(f: impl Fn(AgentBuilder) -> AgentBuilder + Send + Sync + 'static) -> Add {
    Arc::new(f)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-conformance-{name}-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "needle in a haystack\n").unwrap();
    dir
}

/// A directory with `n` small files, each holding one line that matches `needle`.
fn many_files(n: usize) -> PathBuf {
    let dir = scratch("many");
    let many = dir.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..n {
        std::fs::write(many.join(format!("file{i:05}.txt")), format!("needle number {i}\nhay\n")).unwrap();
    }
    dir
}

fn short_output(max: usize) -> CapCheck {
    Arc::new(move |r: &ToolResultEvent| {
        ensure(!r.is_error, format!("error: {}", r.output))?;
        ensure(r.output.len() <= max, format!("{} bytes", r.output.len()))?;
        Ok(format!("pass: a {}-byte confirmation, the input not echoed", r.output.len()))
    })
}

fn tool_cap(note: &'static str, max: usize) -> CapCheck {
    Arc::new(move |r: &ToolResultEvent| {
        ensure(!r.is_error, format!("error: {}", r.output))?;
        ensure(r.output.contains(note), format!("no `{note}` in {:?}", tail(&r.output)))?;
        ensure(r.output.len() <= max, format!("{} bytes > {max}", r.output.len()))?;
        ensure(!r.truncated, "the runtime had to cut it too")?;
        Ok(format!("pass: the tool's own cap ({} bytes, `{note}`)", r.output.len()))
    })
}

fn runtime_cap() -> CapCheck {
    Arc::new(|r: &ToolResultEvent| {
        ensure(!r.is_error, format!("error: {}", r.output))?;
        ensure(r.truncated, "tool.result is not marked truncated")?;
        ensure(r.output.len() <= LIMIT + 80, format!("{} bytes", r.output.len()))?;
        ensure(r.output.contains(&format!("[output truncated: {LIMIT} of ")), tail(&r.output))?;
        Ok(format!("pass: the runtime's tool_output_limit ({LIMIT} bytes)"))
    })
}

fn tail(s: &str) -> String {
    let mut cut = s.len().saturating_sub(200);
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    s[cut..].to_string()
}

fn ensure(cond: bool, msg: impl Into<String>) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg.into()) }
}

#[cfg(feature = "mcp")]
fn ok_probe(text: &'static str) -> Probe {
    Arc::new(move || Box::pin(async move { Ok(text.to_string()) }))
}

fn files_subjects() -> Vec<Subject> {
    let no_slow = "no slow input exists: FIFOs and devices are refused without blocking (O_NONBLOCK + fstat), \
                   symlinks are not followed, and the work is bounded by the caps";
    let runtime_timeout =
        "no own timeout and no slow input; the runtime's tool_timeout applies (exercised on grep and glob)";
    let mut out = Vec::new();

    // read_file
    let dir = scratch("read");
    let cap_dir = scratch("read-cap");
    std::fs::write(cap_dir.join("big.txt"), "0123456789 abcdefghij 0123456789 abcdefghij\n".repeat(20_000)).unwrap();
    out.push(Subject {
        tool: "read_file".into(),
        add: add(move |b| b.capability(capability::files(&dir))),
        needs_approval: false,
        bad: [
            Bad::Schema(json!({})),
            Bad::Schema(json!({"path": 42})),
            Bad::Tool(json!({"path": "no/such.txt"}), "does not exist under the allowed directory"),
        ],
        good: Some((json!({"path": "notes.txt"}), "needle in a haystack")),
        effect: None,
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::files(&cap_dir).max_read_bytes(8 * 1024))),
            args: json!({"path": "big.txt"}),
            check: tool_cap("to read on, call read_file with offset=", 8 * 1024 + 200),
        }),
        cancel: na(no_slow),
        timeout: na(runtime_timeout),
    });

    // list_files
    let dir = scratch("list");
    let cap_dir = many_files(500);
    out.push(Subject {
        tool: "list_files".into(),
        add: add(move |b| b.capability(capability::files(&dir))),
        needs_approval: false,
        bad: [
            Bad::Na("every argument is optional"),
            Bad::Schema(json!({"path": true})),
            Bad::Tool(json!({"path": "nowhere"}), "does not exist under the allowed directory"),
        ],
        good: Some((json!({}), "notes.txt")),
        effect: None,
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::files(&cap_dir).max_entries(50))),
            args: json!({"path": "many"}),
            check: tool_cap("[450 more entries not shown]", 4096),
        }),
        cancel: na(no_slow),
        timeout: na(runtime_timeout),
    });

    // glob and grep share a large tree for their timeouts.
    let big = many_files(3000);
    let walk_timeout = |tool: &str, args: Value, big: PathBuf| {
        let _ = tool;
        Prop::Case(TimeoutCase {
            add: add(move |b| b.capability(capability::files(&big)).tool_timeout(Duration::from_millis(1))),
            args,
            expect: "did not finish within 1 ms",
            gone: None,
        })
    };

    let dir = scratch("glob");
    let cap_dir = many_files(500);
    out.push(Subject {
        tool: "glob".into(),
        add: add(move |b| b.capability(capability::files(&dir))),
        needs_approval: false,
        bad: [
            Bad::Schema(json!({})),
            Bad::Schema(json!({"pattern": 1})),
            Bad::Tool(json!({"pattern": "a[b"}), "invalid glob pattern"),
        ],
        good: Some((json!({"pattern": "*.txt"}), "notes.txt")),
        effect: None,
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::files(&cap_dir).max_entries(50))),
            args: json!({"pattern": "*.txt"}),
            check: tool_cap("more files not shown", 4096),
        }),
        cancel: na(no_slow),
        timeout: walk_timeout("glob", json!({"pattern": "**/*.txt"}), big.clone()),
    });

    let dir = scratch("grep");
    let cap_dir = many_files(500);
    out.push(Subject {
        tool: "grep".into(),
        add: add(move |b| b.capability(capability::files(&dir))),
        needs_approval: false,
        bad: [
            Bad::Schema(json!({})),
            Bad::Schema(json!({"pattern": "x", "case_insensitive": "yes"})),
            Bad::Tool(json!({"pattern": "("}), "invalid regular expression"),
        ],
        good: Some((json!({"pattern": "needle"}), "notes.txt:1:needle in a haystack")),
        effect: None,
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::files(&cap_dir).max_matches(50))),
            args: json!({"pattern": "needle"}),
            check: Arc::new(|r: &ToolResultEvent| {
                ensure(!r.is_error, r.output.clone())?;
                let lines = r.output.lines().filter(|l| l.contains(":1:needle number")).count();
                ensure(lines == 50, format!("{lines} match lines: {}", tail(&r.output)))?;
                ensure(
                    r.output.contains("[showing 50 of 501 matching lines in 501 files"),
                    format!("the footer gives no total: {}", tail(&r.output)),
                )?;
                ensure(!r.truncated, "the runtime had to cut it too")?;
                Ok(format!("pass: the tool's own cap (50 of 501 matching lines, {} bytes)", r.output.len()))
            }),
        }),
        cancel: na(no_slow),
        timeout: walk_timeout("grep", json!({"pattern": "needle"}), big),
    });

    // write_file
    let dir = scratch("write");
    let d = dir.clone();
    let written: Effect = Arc::new(move || std::fs::read_to_string(d.join("new.txt")).is_ok_and(|s| s == "written"));
    let cap_dir = scratch("write-cap");
    out.push(Subject {
        tool: "write_file".into(),
        add: add(move |b| b.capability(capability::files(&dir).writable())),
        needs_approval: true,
        bad: [
            Bad::Schema(json!({"path": "a.txt"})),
            Bad::Schema(json!({"path": "a.txt", "content": 5})),
            Bad::Tool(json!({"path": "../escape.txt", "content": "x"}), "cannot be written"),
        ],
        good: Some((json!({"path": "new.txt", "content": "written"}), "new.txt")),
        effect: Some(written),
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::files(&cap_dir).writable())),
            args: json!({"path": "big.txt", "content": "x".repeat(200_000)}),
            check: short_output(300),
        }),
        cancel: na(no_slow),
        timeout: na(runtime_timeout),
    });

    // edit_file
    let dir = scratch("edit");
    let d = dir.clone();
    let edited: Effect =
        Arc::new(move || std::fs::read_to_string(d.join("notes.txt")).is_ok_and(|s| s == "thread in a haystack\n"));
    let cap_dir = scratch("edit-cap");
    out.push(Subject {
        tool: "edit_file".into(),
        add: add(move |b| b.capability(capability::files(&dir).writable())),
        needs_approval: true,
        bad: [
            Bad::Schema(json!({"path": "notes.txt", "old_string": "needle"})),
            Bad::Schema(json!({"path": "notes.txt", "old_string": "needle", "new_string": "x", "replace_all": "all"})),
            Bad::Tool(
                json!({"path": "notes.txt", "old_string": "absent", "new_string": "x"}),
                "old_string was not found",
            ),
        ],
        good: Some((json!({"path": "notes.txt", "old_string": "needle", "new_string": "thread"}), "notes.txt")),
        effect: Some(edited),
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::files(&cap_dir).writable())),
            args: json!({"path": "notes.txt", "old_string": "needle", "new_string": "y".repeat(200_000)}),
            check: short_output(300),
        }),
        cancel: na(no_slow),
        timeout: na(runtime_timeout),
    });
    out
}

/// The pids of live processes whose command line is exactly `sleep ARG`.
fn sleeping(arg: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        if args.len() == 2 && args[0].ends_with(b"sleep") && args[1] == arg.as_bytes() {
            pids.push(pid);
        }
    }
    pids
}

/// No `sleep ARG` left (2 s to be reaped).
fn no_sleep(arg: String) -> Probe {
    Arc::new(move || {
        let arg = arg.clone();
        Box::pin(async move {
            let started = Instant::now();
            while !sleeping(&arg).is_empty() {
                if started.elapsed() > Duration::from_secs(2) {
                    return Err(format!("`sleep {arg}` still runs: {:?}", sleeping(&arg)));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok("no process left".to_string())
        })
    })
}

fn shell_subject() -> Subject {
    let dir = scratch("bash");
    let d = dir.clone();
    let made: Effect = Arc::new(move || d.join("made-by-bash").exists());
    let pid = std::process::id();
    let (cancel_tag, timeout_tag) = (format!("77{pid}.25"), format!("78{pid}.25"));
    let (d1, d2, d3) = (dir.clone(), dir.clone(), dir.clone());
    Subject {
        tool: "bash".into(),
        add: add(move |b| b.capability(capability::shell(&dir))),
        needs_approval: true,
        bad: [
            Bad::Schema(json!({})),
            Bad::Schema(json!({"command": ["ls"]})),
            Bad::Tool(json!({"command": "true", "cwd": "no-such-dir"}), "is not a directory under the project root"),
        ],
        good: Some((json!({"command": "touch made-by-bash && echo hello"}), "hello\n[exit code 0]")),
        effect: Some(made),
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::shell(&d1).max_output_bytes(4096))),
            args: json!({"command": "head -c 1000000 /dev/zero | tr '\\0' 'a'"}),
            check: tool_cap("bytes of output cut", 4096 + 400),
        }),
        cancel: Prop::Case(CancelCase {
            add: add(move |b| b.capability(capability::shell(&d2))),
            args: json!({"command": format!("sleep {cancel_tag}")}),
            in_flight: InFlight::Sleeping(cancel_tag.clone()),
            gone: no_sleep(cancel_tag),
            then: None,
        }),
        timeout: Prop::Case(TimeoutCase {
            add: add(move |b| b.capability(capability::shell(&d3))),
            args: json!({"command": format!("sleep {timeout_tag}"), "timeout_secs": 1}),
            expect: "did not finish within its timeout of 1 s",
            gone: Some(no_sleep(timeout_tag)),
        }),
    }
}

fn skills_subject() -> Subject {
    let dir = scratch("skills");
    let write = |p: &Path, text: &str| {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        &dir.join("pdf/SKILL.md"),
        "---\nname: pdf\ndescription: Extract text from PDF files.\n---\nRun extract.py.\n",
    );
    write(
        &dir.join("big/SKILL.md"),
        &format!("---\nname: big\ndescription: A long skill.\n---\n{}", "A line of a long skill body.\n".repeat(8000)),
    );
    let d = dir.clone();
    Subject {
        tool: "load_skill".into(),
        add: add(move |b| b.capability(capability::skills(&dir).unwrap())),
        needs_approval: false,
        bad: [
            Bad::Schema(json!({})),
            Bad::Schema(json!({"name": 3})),
            Bad::Tool(json!({"name": "no-such-skill"}), "pdf"),
        ],
        good: Some((json!({"name": "pdf"}), "Run extract.py.")),
        effect: None,
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::skills(&d).unwrap())),
            args: json!({"name": "big"}),
            check: runtime_cap(),
        }),
        cancel: na("reads a skill kept in memory and lists its folder (at most 200 entries, symlinks not followed)"),
        timeout: na("no own timeout and nothing slow; the runtime's tool_timeout applies"),
    }
}

/// A TCP server that takes one connection, reads the request, sends `head`, then waits until the
/// client closes the connection (`closed`).
#[cfg(feature = "web")]
async fn hold_server(head: &'static str) -> (String, Arc<AtomicBool>, Arc<AtomicBool>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (accepted, closed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (a, c) = (accepted.clone(), closed.clone());
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    c.store(true, Ordering::SeqCst);
                    return;
                }
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = socket.write_all(head.as_bytes()).await;
        a.store(true, Ordering::SeqCst);
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        c.store(true, Ordering::SeqCst);
    });
    (url, accepted, closed)
}

#[cfg(feature = "web")]
fn closed_probe(closed: Arc<AtomicBool>) -> Probe {
    Arc::new(move || {
        let closed = closed.clone();
        Box::pin(async move {
            let started = Instant::now();
            while !closed.load(Ordering::SeqCst) {
                if started.elapsed() > Duration::from_secs(2) {
                    return Err("the connection is still open 2 s after the cancellation".to_string());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok("the connection was closed".to_string())
        })
    })
}

#[cfg(feature = "web")]
async fn web_subjects() -> Vec<Subject> {
    use loom_agent::capability::web::SearXng;
    use loom_testkit::{MockServer, Part, Reply};
    let mut out = Vec::new();

    // web_fetch
    let server = Arc::new(MockServer::start().await);
    server.always(Reply::bytes(200, "text/plain", "hello from the web"));
    let page = format!("{}/page", server.url());
    let huge = Arc::new(MockServer::start().await);
    let mut reply = Reply::bytes(200, "text/plain", Vec::new());
    reply.parts = (0..4096).map(|_| Part::Bytes(vec![b'a'; 64 * 1024])).collect();
    huge.enqueue(reply);
    let slow = Arc::new(MockServer::start().await);
    slow.always(Reply::silent());
    let (held, accepted, closed) =
        hold_server("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            .await;
    let (s1, h1, s2) = (server.clone(), huge.clone(), slow.clone());
    out.push(Subject {
        tool: "web_fetch".into(),
        add: add(move |b| {
            let _keep = &s1;
            b.capability(capability::web().allow_private())
        }),
        needs_approval: false,
        bad: [
            Bad::Schema(json!({})),
            Bad::Schema(json!({"url": 1})),
            Bad::Tool(json!({"url": "ftp://127.0.0.1/file"}), "the URL scheme `ftp` is not allowed"),
        ],
        good: Some((json!({"url": page}), "hello from the web")),
        effect: None,
        cap: Prop::Case(CapCase {
            add: add(move |b| {
                let _keep = &h1;
                b.capability(capability::web().allow_private().max_bytes(8 * 1024))
            }),
            args: json!({"url": huge.url()}),
            check: tool_cap("[cut: only the first 8192 bytes of the body were read]", 8 * 1024 + 100),
        }),
        cancel: Prop::Case(CancelCase {
            add: add(|b| b.capability(capability::web().allow_private())),
            args: json!({"url": held}),
            in_flight: InFlight::Accepted(accepted),
            gone: closed_probe(closed),
            then: None,
        }),
        timeout: Prop::Case(TimeoutCase {
            add: add(move |b| {
                let _keep = &s2;
                b.capability(capability::web().allow_private().timeout(Duration::from_secs(1)))
            }),
            args: json!({"url": slow.url()}),
            expect: "no answer within 1 s",
            gone: None,
        }),
    });

    // web_search (SearXNG mocks)
    let searx = Arc::new(MockServer::start().await);
    searx.always(Reply::json(
        200,
        json!({"results": [{"title": "Loom", "url": "https://example.com/loom", "content": "An agent runtime."}]}),
    ));
    let big = Arc::new(MockServer::start().await);
    let results: Vec<Value> = (0..20)
        .map(|i| json!({"title": format!("r{i}"), "url": format!("https://example.com/{i}"), "content": "word ".repeat(1000)}))
        .collect();
    big.always(Reply::json(200, json!({"results": results})));
    let silent = Arc::new(MockServer::start().await);
    silent.always(Reply::silent());
    let (held, accepted, closed) = hold_server("").await;
    let (u1, u2, u3) = (searx.url(), big.url(), silent.url());
    let keep = (searx, big, silent);
    out.push(Subject {
        tool: "web_search".into(),
        add: add(move |b| {
            let _keep = &keep;
            b.capability(capability::web().search(SearXng::new(&u1).unwrap()))
        }),
        needs_approval: false,
        bad: [
            Bad::Schema(json!({"count": 3})),
            Bad::Schema(json!({"query": ["rust"]})),
            Bad::Schema(json!({"query": "rust", "count": 500})),
        ],
        good: Some((json!({"query": "loom"}), "1. Loom\n   https://example.com/loom\n   An agent runtime.")),
        effect: None,
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(capability::web().search(SearXng::new(&u2).unwrap()))),
            args: json!({"query": "words", "count": 20}),
            check: runtime_cap(),
        }),
        cancel: Prop::Case(CancelCase {
            add: add(move |b| b.capability(capability::web().search(SearXng::new(&held).unwrap()))),
            args: json!({"query": "never answered"}),
            in_flight: InFlight::Accepted(accepted),
            gone: closed_probe(closed),
            then: None,
        }),
        timeout: Prop::Case(TimeoutCase {
            add: add(move |b| {
                b.capability(capability::web().timeout(Duration::from_millis(500)).search(SearXng::new(&u3).unwrap()))
            }),
            args: json!({"query": "slow"}),
            expect: "the searxng search backend did not answer within 0.5 s",
            gone: None,
        }),
    });
    out
}

#[cfg(feature = "mcp")]
async fn mcp_subjects(notes: &mut Vec<String>) -> Vec<Subject> {
    use loom_agent::capability::mcp;
    let Some(entry) = support::reference_server() else {
        notes.push("MCP rows skipped: node or npm is not installed".into());
        return Vec::new();
    };
    let everything = || mcp::stdio("node", [entry.display().to_string(), "stdio".into()]).name("everything");
    let server = everything();
    let long = "everything__trigger-long-running-operation";
    let mut out = Vec::new();
    let s = server.clone();
    out.push(Subject {
        tool: "everything__get-structured-content".into(),
        add: add(move |b| b.capability(s.clone())),
        needs_approval: false,
        bad: [
            Bad::Schema(json!({})),
            Bad::Schema(json!({"location": 5})),
            Bad::Schema(json!({"location": "Atlantis"})),
        ],
        good: Some((json!({"location": "Chicago"}), "temperature")),
        effect: None,
        cap: na("a small fixed answer; the runtime cap is shown on everything__echo"),
        cancel: na("answers at once; see everything__trigger-long-running-operation"),
        timeout: na("answers at once; see everything__trigger-long-running-operation"),
    });
    let (s, s2) = (server.clone(), server.clone());
    out.push(Subject {
        tool: "everything__echo".into(),
        add: add(move |b| b.capability(s.clone())),
        needs_approval: false,
        bad: [
            Bad::Schema(json!({})),
            Bad::Schema(json!({"message": 7})),
            Bad::SchemaOf("everything__get-sum", json!({"a": 1, "b": "two"})),
        ],
        good: Some((json!({"message": "hi"}), "Echo: hi")),
        effect: None,
        cap: Prop::Case(CapCase {
            add: add(move |b| b.capability(s2.clone())),
            args: json!({"message": "m".repeat(100_000)}),
            check: runtime_cap(),
        }),
        cancel: na("answers at once; see everything__trigger-long-running-operation"),
        timeout: na("answers at once; see everything__trigger-long-running-operation"),
    });
    let (s, s2) = (server.clone(), server.clone());
    let timed = everything().call_timeout(Duration::from_secs(1));
    out.push(Subject {
        tool: long.into(),
        add: add(move |b| b.capability(s.clone())),
        needs_approval: false,
        bad: [
            Bad::Na("both fields have defaults"),
            Bad::Schema(json!({"duration": "long"})),
            Bad::Na("any number is a valid duration"),
        ],
        good: Some((json!({"duration": 0.2, "steps": 2}), "Long running operation completed")),
        effect: None,
        cap: na("a small fixed answer; the runtime cap is shown on everything__echo"),
        cancel: Prop::Case(CancelCase {
            add: add(move |b| b.capability(s2.clone())),
            args: json!({"duration": 30, "steps": 30}),
            in_flight: InFlight::AfterCall(Duration::from_millis(500)),
            gone: ok_probe("the server answers the next call at once"),
            then: Some(("everything__echo".into(), json!({"message": "after"}), "Echo: after")),
        }),
        timeout: Prop::Case(TimeoutCase {
            add: add(move |b| b.capability(timed.clone())),
            args: json!({"duration": 10, "steps": 10}),
            expect: "1",
            gone: None,
        }),
    });

    // The scripted server on the same SDK: an unannotated tool, and a slow one that logs its
    // cancellation.
    let dir = scratch("mcp-scripted");
    let script = support::scripted_server(&dir).unwrap();
    let scripted_server = || mcp::stdio("node", [script.display().to_string()]).name("scripted");
    let plain = scripted_server();
    out.push(Subject {
        tool: "scripted__plain".into(),
        add: add(move |b| b.capability(plain.clone())),
        needs_approval: true,
        bad: [Bad::Na("takes no arguments"), Bad::Na("takes no arguments"), Bad::Na("takes no arguments")],
        good: Some((json!({}), "plain")),
        effect: None,
        cap: na("a small fixed answer; the runtime cap is shown on everything__echo"),
        cancel: na("answers at once; see scripted__slow"),
        timeout: na("answers at once; see everything__trigger-long-running-operation"),
    });
    let slow = scripted_server();
    let client = slow.connect().await.unwrap();
    let told: Probe = Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            let started = Instant::now();
            while !client.stderr_tail().await.contains("cancelled request") {
                if started.elapsed() > Duration::from_secs(3) {
                    return Err(format!(
                        "the server never saw notifications/cancelled: {}",
                        client.stderr_tail().await
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok("the server received notifications/cancelled".to_string())
        })
    });
    let s = slow.clone();
    out.push(Subject {
        tool: "scripted__slow".into(),
        add: add(move |b| b.capability(slow.clone())),
        needs_approval: false,
        bad: [Bad::Na("takes no arguments"), Bad::Na("takes no arguments"), Bad::Na("takes no arguments")],
        good: None,
        effect: None,
        cap: na("a small fixed answer"),
        cancel: Prop::Case(CancelCase {
            add: add(move |b| b.capability(s.clone())),
            args: json!({}),
            in_flight: InFlight::AfterCall(Duration::from_millis(300)),
            gone: told,
            then: None,
        }),
        timeout: na("see everything__trigger-long-running-operation"),
    });
    out
}

// ---------------------------------------------------------------------------------------------
// Running calls and checking them
// ---------------------------------------------------------------------------------------------

struct Ran {
    result: RunResult,
    audit: Vec<AuditEntry>,
    /// The messages of each model request.
    requests: Vec<Vec<Message>>,
    /// The call ids, in order.
    ids: Vec<String>,
}

fn builder(model: loom_agent::model::SharedModel, audit: &InMemoryAuditLog, approve: bool) -> AgentBuilder {
    let mut b = Agent::builder().model(model).audit_log(audit.clone()).tool_output_limit(LIMIT);
    if approve {
        b = b.approval_handler(FnApproval::new(|_req| async { Approval::Allow }));
    }
    b
}

/// One run: each call in its own turn, then the answer "done".
async fn run_calls(add: &Add, approve: bool, calls: &[(String, Value)]) -> Ran {
    let mut turns: Vec<ScriptedTurn> =
        calls.iter().map(|(t, a)| ScriptedTurn::tool_call(t.clone(), a.clone())).collect();
    turns.push(ScriptedTurn::text("done"));
    let (model, shared) = scripted(turns);
    let audit = InMemoryAuditLog::new(SECRET).unwrap();
    let agent = add(builder(shared, &audit, approve)).build().unwrap();
    let result = within(60, "a conformance run", agent.start("go").result()).await;
    finish(result, &audit, &model)
}

fn finish(result: RunResult, audit: &InMemoryAuditLog, model: &ScriptedModel) -> Ran {
    let ids = tool_call_ids(&result.events);
    Ran { result, audit: audit.entries(), requests: model.requests().into_iter().map(|r| r.messages).collect(), ids }
}

/// The run completed with "done", its log is whole, and the audit chain starts with `run_started`,
/// ends with `run_finished` and verifies.
fn check_run(ran: &Ran, audit_log_intact: bool) -> Result<(), String> {
    let r = &ran.result;
    ensure(r.state == RunState::Completed, format!("the run ended {:?}: {:?}", r.state, r.error))?;
    ensure(r.output == "done", format!("output {:?}", r.output))?;
    check_log(&r.events, &r.run_id, &r.session_id, RunState::Completed);
    let actions: Vec<&str> = ran.audit.iter().map(|e| e.action.as_str()).collect();
    ensure(actions.first() == Some(&"run_started"), format!("audit {actions:?}"))?;
    ensure(actions.last() == Some(&"run_finished"), format!("audit {actions:?}"))?;
    ensure(audit_log_intact, "the audit chain does not verify")
}

/// The `i`th call: its `tool.result`, the tool message the model read next, and its audit
/// entries in order.
fn check_call(ran: &Ran, i: usize, tool: &str, error: bool, actions: &[&str]) -> Result<ToolResultEvent, String> {
    let results = tool_results(&ran.result.events);
    let r = results.get(i).ok_or(format!("no tool.result #{i}"))?.clone();
    let id = ran.ids.get(i).ok_or(format!("no tool.call #{i}"))?;
    ensure(&r.call_id == id && r.name == tool, format!("tool.result #{i} is {} {}", r.name, r.call_id))?;
    ensure(r.is_error == error, format!("is_error {} (wanted {error}): {}", r.is_error, r.output))?;
    if error {
        ensure(r.output.starts_with("Error: "), format!("error text {:?}", r.output))?;
    }
    // The model's next request carries the result as it was recorded.
    let next = ran.requests.get(i + 1).ok_or(format!("the model was not called after call #{i}"))?;
    let read = next.iter().any(|m| {
        matches!(m, Message::Tool { call_id, content, is_error, .. }
            if call_id == id && *content == r.output && *is_error == error)
    });
    ensure(read, format!("the model did not read the result of call #{i}"))?;
    let entries: Vec<&AuditEntry> = ran.audit.iter().filter(|e| e.payload["call_id"] == json!(id)).collect();
    let got: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    ensure(got == actions, format!("audit entries {got:?}, wanted {actions:?}"))?;
    for e in &entries {
        ensure(e.payload["tool"] == json!(tool), format!("audit entry names {}", e.payload["tool"]))?;
    }
    if let Some(last) = entries.last() {
        ensure(last.payload["ok"] == json!(!error), format!("tool_result ok = {}", last.payload["ok"]))?;
    }
    Ok(r)
}

fn decisions(ran: &Ran) -> Vec<(String, PermissionDecision, DecidedBy)> {
    ran.result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PermissionDecision(d) => Some((d.call_id.clone(), d.decision, d.by)),
            _ => None,
        })
        .collect()
}

type Cell = Result<String, String>;

/// Bad arguments and the good call, in one run (under an approving handler when the tool needs
/// one), then the approval column.
async fn calls_and_approval(s: &Subject) -> Vec<(&'static str, Cell)> {
    let mut cells: Vec<(&'static str, Cell)> = Vec::new();
    let mut calls = Vec::new();
    let mut plan = Vec::new(); // (label, index, expected audit actions, expected text)
    for (label, bad) in BAD_LABELS.iter().zip(&s.bad) {
        let (tool, args, schema, expect) = match bad {
            Bad::Na(reason) => {
                cells.push((label, Ok(format!("N/A: {reason}"))));
                continue;
            }
            Bad::Schema(args) => (s.tool.clone(), args.clone(), true, "do not match its schema"),
            Bad::SchemaOf(tool, args) => (tool.to_string(), args.clone(), true, "do not match its schema"),
            Bad::Tool(args, text) => (s.tool.clone(), args.clone(), false, *text),
        };
        let mut actions = Vec::new();
        if !schema {
            if s.needs_approval {
                actions.push("permission_decision");
            }
            actions.push("tool_call");
        }
        actions.push("tool_result");
        plan.push((*label, calls.len(), tool.clone(), actions, expect));
        calls.push((tool, args));
    }
    let good_index = calls.len();
    if let Some((args, _)) = &s.good {
        calls.push((s.tool.clone(), args.clone()));
    }
    // Denied first (so the effect is not there yet), then the approved run.
    if s.needs_approval {
        let cell = denied(s).await;
        cells.push(("approval", cell));
    }
    if calls.is_empty() {
        cells.push(("good call", Ok("N/A: see the cancel column".into())));
        if !s.needs_approval {
            cells.push(("approval", Ok("N/A: no call made".into())));
        }
        return cells;
    }
    let ran = run_calls(&s.add, s.needs_approval, &calls).await;
    let audit_ok = ran.audit.len() > 1;
    let run_ok = check_run(&ran, audit_ok);
    for (label, i, tool, actions, expect) in plan {
        let cell = run_ok.clone().and_then(|_| {
            let r = check_call(&ran, i, &tool, true, &actions)?;
            ensure(r.output.contains(expect), format!("{:?} lacks {expect:?}", r.output))?;
            let kind = r.error_kind.ok_or("no error kind")?;
            Ok(format!("pass ({kind:?}; run completed)"))
        });
        cells.push((label, cell));
    }
    if let Some((_, expect)) = &s.good {
        let mut actions = Vec::new();
        if s.needs_approval {
            actions.push("permission_decision");
        }
        actions.extend(["tool_call", "tool_result"]);
        let cell = run_ok.clone().and_then(|_| {
            let r = check_call(&ran, good_index, &s.tool, false, &actions)?;
            ensure(r.output.contains(expect), format!("{:?} lacks {expect:?}", r.output))?;
            if let Some(effect) = &s.effect {
                ensure(effect(), "the call's effect is missing")?;
            }
            Ok("pass".to_string())
        });
        cells.push(("good call", cell));
    } else {
        cells.push(("good call", Ok("N/A: see the cancel column".into())));
    }
    let seen = decisions(&ran);
    if s.needs_approval {
        // The approved run: the approver allowed each call that passed the schema check, before it ran.
        let good_id = ran.ids.get(good_index).cloned().unwrap_or_default();
        let cell = (|| {
            ensure(
                seen.iter()
                    .any(|(id, d, by)| *id == good_id && *d == PermissionDecision::Allow && *by == DecidedBy::Approver),
                format!("no allow by the approver for the good call: {seen:?}"),
            )?;
            Ok(())
        })();
        if let Err(e) = cell {
            cells.retain(|(l, _)| *l != "approval");
            cells.push(("approval", Err(e)));
        }
    } else {
        let cell = if seen.is_empty() {
            Ok("pass: read_only, runs without asking (no permission.decision)".to_string())
        } else {
            Err(format!("a read-only tool was decided on: {seen:?}"))
        };
        cells.push(("approval", cell));
    }
    cells
}

/// Without an approval handler the good call is denied: the event, the audit entry, no effect.
async fn denied(s: &Subject) -> Cell {
    let Some((args, _)) = &s.good else { return Err("no good call to deny".into()) };
    let ran = run_calls(&s.add, false, &[(s.tool.clone(), args.clone())]).await;
    check_run(&ran, ran.audit.len() > 1)?;
    let r = check_call(&ran, 0, &s.tool, true, &["permission_decision", "tool_result"])?;
    ensure(r.error_kind == Some(ToolErrorKind::Denied), format!("kind {:?}", r.error_kind))?;
    ensure(r.output.contains("no approval handler is configured"), r.output.clone())?;
    let seen = decisions(&ran);
    ensure(seen == [(ran.ids[0].clone(), PermissionDecision::Deny, DecidedBy::Policy)], format!("decisions {seen:?}"))?;
    let entry = ran.audit.iter().find(|e| e.action == "permission_decision").ok_or("no decision entry")?;
    ensure(entry.payload["decision"] == json!("deny"), format!("{}", entry.payload))?;
    if let Some(effect) = &s.effect {
        ensure(!effect(), "the denied call had its effect")?;
    }
    Ok("pass: approved with a handler; denied without (event + audit, no effect)".into())
}

async fn capped(s: &Subject) -> Cell {
    let case = match &s.cap {
        Prop::Na(reason) => return Ok(format!("N/A: {reason}")),
        Prop::Case(c) => c,
    };
    let ran = run_calls(&case.add, s.needs_approval, &[(s.tool.clone(), case.args.clone())]).await;
    check_run(&ran, true)?;
    let results = tool_results(&ran.result.events);
    let r = results.first().ok_or("no tool.result")?;
    let detail = (case.check)(r)?;
    // What the model read is what the event says.
    check_call(&ran, 0, &s.tool, false, &ran_actions(s))?;
    Ok(detail)
}

fn ran_actions(s: &Subject) -> Vec<&'static str> {
    if s.needs_approval {
        vec!["permission_decision", "tool_call", "tool_result"]
    } else {
        vec!["tool_call", "tool_result"]
    }
}

async fn timed_out(s: &Subject) -> Cell {
    let case = match &s.timeout {
        Prop::Na(reason) => return Ok(format!("N/A: {reason}")),
        Prop::Case(c) => c,
    };
    let started = Instant::now();
    let ran = run_calls(&case.add, s.needs_approval, &[(s.tool.clone(), case.args.clone())]).await;
    check_run(&ran, true)?;
    let r = check_call(&ran, 0, &s.tool, true, &ran_actions(s))?;
    ensure(r.error_kind == Some(ToolErrorKind::Timeout), format!("kind {:?}: {}", r.error_kind, r.output))?;
    ensure(r.output.contains(case.expect), format!("{:?} lacks {:?}", r.output, case.expect))?;
    let entry = ran.audit.iter().rev().find(|e| e.action == "tool_result").ok_or("no tool_result entry")?;
    ensure(entry.payload["error_kind"] == json!("timeout"), format!("{}", entry.payload))?;
    let mut detail = format!("pass: `{}` after {:.1} s", first_line(&r.output), started.elapsed().as_secs_f64());
    if let Some(gone) = &case.gone {
        detail.push_str(&format!("; {}", gone().await?));
    }
    Ok(detail)
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(90).collect()
}

async fn cancelled(s: &Subject) -> Cell {
    let case = match &s.cancel {
        Prop::Na(reason) => return Ok(format!("N/A: {reason}")),
        Prop::Case(c) => c,
    };
    let mut turns = vec![ScriptedTurn::tool_call(s.tool.clone(), case.args.clone()), ScriptedTurn::text("never")];
    if let Some((tool, args, _)) = &case.then {
        turns = vec![
            ScriptedTurn::tool_call(s.tool.clone(), case.args.clone()),
            ScriptedTurn::tool_call(tool.clone(), args.clone()),
            ScriptedTurn::text("done"),
        ];
    }
    let (model, shared) = scripted(turns);
    let audit = InMemoryAuditLog::new(SECRET).unwrap();
    let agent = (case.add)(builder(shared, &audit, s.needs_approval)).build().unwrap();
    let run = agent.start("go");
    match &case.in_flight {
        InFlight::Sleeping(tag) => {
            let started = Instant::now();
            while sleeping(tag).is_empty() {
                ensure(started.elapsed() < Duration::from_secs(20), "the command never started")?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        InFlight::Accepted(flag) => {
            let started = Instant::now();
            while !flag.load(Ordering::SeqCst) {
                ensure(started.elapsed() < Duration::from_secs(20), "the request never arrived")?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        InFlight::AfterCall(wait) => {
            wait_for(&run, "tool.call").await;
            tokio::time::sleep(*wait).await;
        }
    }
    let started = Instant::now();
    run.cancel();
    let result = within(10, "the cancelled run", run.result()).await;
    let took = started.elapsed();
    ensure(result.state == RunState::Cancelled, format!("ended {:?}", result.state))?;
    ensure(took < Duration::from_secs(2), format!("took {took:?}"))?;
    check_log(&result.events, &result.run_id, &result.session_id, RunState::Cancelled);
    // The audit log: the call was started, and the run's end was written last.
    let entries = audit.entries();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    ensure(actions.contains(&"tool_call"), format!("audit {actions:?}"))?;
    ensure(actions.last() == Some(&"run_finished"), format!("audit {actions:?}"))?;
    let gone = (case.gone)().await?;
    if let Some((tool, _, expect)) = &case.then {
        let started = Instant::now();
        let next = within(20, "the run after the cancelled one", agent.start("again").result()).await;
        ensure(next.state == RunState::Completed, format!("the next run ended {:?}: {:?}", next.state, next.error))?;
        let results = tool_results(&next.events);
        let r = results.first().ok_or("no tool.result in the next run")?;
        ensure(r.name == *tool && r.output.contains(expect), format!("next call: {:?}", r.output))?;
        ensure(started.elapsed() < Duration::from_secs(5), format!("the next run took {:?}", started.elapsed()))?;
    }
    let _ = model;
    Ok(format!("pass: cancelled in {:.0} ms; {gone}", took.as_secs_f64() * 1000.0))
}

// ---------------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------------

const COLUMNS: [&str; 8] = [
    "bad: missing field",
    "bad: wrong type",
    "bad: unknown value",
    "good call",
    "approval",
    "output cap",
    "cancel",
    "timeout",
];

/// Runs `f` as its own task so a panic becomes a failing cell instead of ending the suite.
async fn guarded<F>(f: F) -> Vec<(&'static str, Cell)>
where
    F: Future<Output = Vec<(&'static str, Cell)>> + Send + 'static,
{
    match tokio::time::timeout(Duration::from_secs(120), tokio::spawn(f)).await {
        Ok(Ok(cells)) => cells,
        Ok(Err(e)) => {
            let msg =
                e.into_panic().downcast_ref::<String>().cloned().unwrap_or_else(|| "a panic without a message".into());
            vec![("panic", Err(msg))]
        }
        Err(_) => vec![("panic", Err("did not finish within 120 s".into()))],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capability_tool_conforms() {
    let mut notes: Vec<String> = Vec::new();
    let mut subjects = files_subjects();
    #[cfg(feature = "web")]
    subjects.extend(web_subjects().await);
    #[cfg(not(feature = "web"))]
    notes.push("web_fetch and web_search rows skipped: built without the `web` feature".into());
    subjects.push(shell_subject());
    subjects.push(skills_subject());
    #[cfg(feature = "mcp")]
    subjects.extend(mcp_subjects(&mut notes).await);
    #[cfg(not(feature = "mcp"))]
    notes.push("MCP rows skipped: built without the `mcp` feature (run with --features mcp)".into());

    let mut table: Vec<(String, BTreeMap<&'static str, Cell>)> = Vec::new();
    for s in subjects {
        let s = Arc::new(s);
        let mut cells: BTreeMap<&'static str, Cell> = BTreeMap::new();
        let jobs: Vec<BoxFuture<Vec<(&'static str, Cell)>>> = vec![
            Box::pin({
                let s = s.clone();
                async move { calls_and_approval(&s).await }
            }),
            Box::pin({
                let s = s.clone();
                async move { vec![("output cap", capped(&s).await)] }
            }),
            Box::pin({
                let s = s.clone();
                async move { vec![("cancel", cancelled(&s).await)] }
            }),
            Box::pin({
                let s = s.clone();
                async move { vec![("timeout", timed_out(&s).await)] }
            }),
        ];
        for job in jobs {
            for (column, cell) in guarded(job).await {
                let column = if column == "panic" { "good call" } else { column };
                cells.insert(column, cell);
            }
        }
        table.push((s.tool.clone(), cells));
    }

    // The table: short cells, reasons and details as numbered notes.
    let mut out = String::from("\n| tool | ");
    out.push_str(&COLUMNS.join(" | "));
    out.push_str(" |\n|---|");
    out.push_str(&"---|".repeat(COLUMNS.len()));
    out.push('\n');
    let mut details: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for (tool, cells) in &table {
        out.push_str(&format!("| `{tool}` |"));
        for column in COLUMNS {
            let cell = match cells.get(column) {
                None => {
                    failures.push(format!("{tool} × {column}: no result"));
                    " FAIL |".to_string()
                }
                Some(Ok(text)) => {
                    let short = if text.starts_with("N/A") { "N/A" } else { "pass" };
                    let note = text.split_once(": ").map(|(_, d)| d).unwrap_or("");
                    if note.is_empty() {
                        format!(" {short} |")
                    } else {
                        details.push(format!("`{tool}` × {column}: {text}"));
                        format!(" {short} [{}] |", details.len())
                    }
                }
                Some(Err(e)) => {
                    failures.push(format!("{tool} × {column}: {e}"));
                    details.push(format!("`{tool}` × {column}: FAIL: {e}"));
                    format!(" **FAIL** [{}] |", details.len())
                }
            };
            out.push_str(&cell);
        }
        out.push('\n');
    }
    out.push('\n');
    for (i, d) in details.iter().enumerate() {
        out.push_str(&format!("{}. {d}\n", i + 1));
    }
    for n in &notes {
        out.push_str(&format!("\nNote: {n}\n"));
    }
    println!("{out}");
    assert!(failures.is_empty(), "{} failing cells:\n{}", failures.len(), failures.join("\n"));
}
