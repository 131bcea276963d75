//! The shell capability against a real bash: output and exit codes, cwd confinement, timeouts,
//! cancellation and dropped calls killing the whole process group, the output cap, the scrubbed
//! environment, stdin closed, approval in real agent runs, and the bubblewrap sandbox (skipped,
//! with a message, where bwrap cannot run).
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use loom_agent::capability::{self, Shell};
use loom_agent::governance::{Approval, FnApproval, Scope};
use loom_agent::model::ScriptedTurn;
use loom_agent::tool::{CancellationToken, Tool, ToolContext, ToolError, ToolErrorKind, ToolOutput};
use loom_agent::{Agent, RunState};
use serde_json::{Value, json};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loom-shell-{name}-{}", loom_agent::new_id("t")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn bash(shell: &Shell) -> Arc<dyn Tool> {
    let tools = capability::Capability::tools(shell);
    assert_eq!(tools.len(), 1);
    tools[0].clone()
}

async fn call(shell: &Shell, args: Value) -> Result<ToolOutput, ToolError> {
    within(30, "the bash call", bash(shell).call(ToolContext::detached("run_1", "sess_1"), args)).await
}

async fn run(shell: &Shell, command: &str) -> String {
    call(shell, json!({"command": command})).await.unwrap().content
}

/// The pids of live processes whose command line is exactly `sleep ARG` (zombies have no command
/// line, so they do not count).
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

/// Waits until `n` processes run `sleep ARG` (fails after 10 s).
async fn until_sleeping(arg: &str, n: usize) {
    let started = Instant::now();
    while sleeping(arg).len() < n {
        assert!(started.elapsed() < Duration::from_secs(10), "the command's processes never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that no process runs `sleep ARG` any more (they get 2 s to be reaped).
async fn all_gone(arg: &str) {
    let started = Instant::now();
    while !sleeping(arg).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(2), "still running: {:?}", sleeping(arg));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn output_is_interleaved_and_the_exit_code_is_reported() {
    let dir = scratch("output");
    let shell = capability::shell(&dir);
    assert_eq!(run(&shell, "echo out; echo err >&2; echo out2").await, "out\nerr\nout2\n[exit code 0]");
    // A failing command is a normal result the model reads, not a tool error.
    assert_eq!(run(&shell, "echo failing >&2; exit 3").await, "failing\n[exit code 3]");
    assert_eq!(run(&shell, "true").await, "[no output]\n[exit code 0]");
    assert_eq!(run(&shell, "printf 'no newline'").await, "no newline\n[exit code 0]");
    assert_eq!(run(&shell, "kill -9 $$").await, "[no output]\n[killed by signal 9]");
    // Bash, not sh.
    assert_eq!(run(&shell, "echo ${BASH_VERSION:+bash}").await, "bash\n[exit code 0]");
    let err = call(&shell, json!({"command": "  "})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::InvalidArguments);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_working_directory_is_confined_to_the_root() {
    let parent = scratch("cwd");
    let root = parent.join("root");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(parent.join("outside")).unwrap();
    std::os::unix::fs::symlink(parent.join("outside"), root.join("escape")).unwrap();
    std::fs::write(root.join("file.txt"), "x").unwrap();
    let shell = capability::shell(&root);
    let canonical = root.canonicalize().unwrap();
    assert_eq!(run(&shell, "pwd").await, format!("{}\n[exit code 0]", canonical.display()));
    let out = call(&shell, json!({"command": "pwd", "cwd": "sub/deeper"})).await.unwrap().content;
    assert_eq!(out, format!("{}\n[exit code 0]", canonical.join("sub/deeper").display()));
    let out = call(&shell, json!({"command": "pwd", "cwd": "sub/../sub"})).await.unwrap().content;
    assert_eq!(out, format!("{}\n[exit code 0]", canonical.join("sub").display()));
    // Outside, through a symlink, missing, or a file: one answer that tells nothing about outside.
    for cwd in ["..", "../outside", "escape", "missing", "file.txt", "sub/../../outside"] {
        let err = call(&shell, json!({"command": "pwd", "cwd": cwd})).await.unwrap_err();
        assert_eq!(err.message(), format!("cwd `{cwd}` is not a directory under the project root"), "{cwd}");
    }
    let err = call(&shell, json!({"command": "pwd", "cwd": "/etc"})).await.unwrap_err();
    assert!(err.message().contains("is absolute"), "{}", err.message());
    std::fs::remove_dir_all(&parent).ok();
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let dir = scratch("timeout");
    let shell = capability::shell(&dir);
    let started = Instant::now();
    let task = tokio::spawn({
        let shell = shell.clone();
        async move { call(&shell, json!({"command": "echo started; sleep 1001 & sleep 1001", "timeout_secs": 1})).await }
    });
    until_sleeping("1001", 2).await;
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
    assert!(err.message().contains("timeout of 1 s"), "{}", err.message());
    assert!(err.message().ends_with("its output until then:\nstarted\n"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    all_gone("1001").await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_timeout_asked_for_is_capped_by_the_configured_maximum() {
    let dir = scratch("cap-timeout");
    let shell = capability::shell(&dir).max_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let err = call(&shell, json!({"command": "sleep 1005", "timeout_secs": 3600})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
    assert!(err.message().contains("timeout of 1 s"), "{}", err.message());
    assert!(started.elapsed() < Duration::from_secs(5));
    all_gone("1005").await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn cancellation_kills_the_whole_process_group() {
    let dir = scratch("cancel");
    let shell = capability::shell(&dir);
    let token = CancellationToken::new();
    let scope = Scope { run_id: Arc::from("run_1"), session_id: Arc::from("sess_1"), user_id: None };
    let ctx = ToolContext::for_call(&scope, "call_1", token.clone(), None);
    let tool = bash(&shell);
    let task = tokio::spawn(async move { tool.call(ctx, json!({"command": "sleep 1002 & sleep 1002"})).await });
    until_sleeping("1002", 2).await;
    token.cancel();
    let err = within(5, "the cancelled call", task).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::Cancelled);
    all_gone("1002").await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_dropped_call_kills_the_whole_process_group() {
    let dir = scratch("drop");
    let shell = capability::shell(&dir);
    let tool = bash(&shell);
    let mut call =
        Box::pin(tool.call(ToolContext::detached("run_1", "sess_1"), json!({"command": "sleep 1003 & sleep 1003"})));
    tokio::select! {
        _ = &mut call => panic!("the command ended by itself"),
        () = until_sleeping("1003", 2) => {}
    }
    // Dropped while both sleeps run (as the runtime drops a call on its own timeout).
    drop(call);
    all_gone("1003").await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn background_processes_do_not_outlive_the_command() {
    let dir = scratch("background");
    let shell = capability::shell(&dir);
    let started = Instant::now();
    assert_eq!(run(&shell, "sleep 1004 & echo left").await, "left\n[exit code 0]");
    assert!(started.elapsed() < Duration::from_secs(5));
    all_gone("1004").await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_output_cap_keeps_head_and_tail() {
    let dir = scratch("cap");
    let shell = capability::shell(&dir).max_output_bytes(1000);
    let out = run(&shell, "seq 1 100000").await;
    assert!(out.starts_with("1\n2\n3\n"), "{out}");
    assert!(out.ends_with("99999\n100000\n[exit code 0]"), "{out}");
    // seq 1 100000 prints 588,895 bytes.
    assert!(
        out.contains("[… 587895 bytes of output cut: the first 500 and the last 500 bytes of 588895 are shown …]"),
        "{out}"
    );
    assert!(out.len() < 1200, "{}", out.len());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn stdin_is_closed() {
    let dir = scratch("stdin");
    let shell = capability::shell(&dir);
    let started = Instant::now();
    assert_eq!(run(&shell, "cat").await, "[no output]\n[exit code 0]");
    assert_eq!(run(&shell, "read line; echo \"read: $?\"").await, "read: 1\n[exit code 0]");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `the_environment_is_scrubbed_in_a_child` in a child process whose environment holds a
/// provider key and Loom secrets (setting them in this process would need `unsafe`).
#[test]
fn the_environment_is_scrubbed() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "the_environment_is_scrubbed_in_a_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("OPENAI_API_KEY", "sk-test-provider-key")
        .env("LOOM_SECRET", "loom-secret-value")
        .env("LOOM_AUDIT_SECRET", "audit-secret-value")
        .env("SHELL_TEST_ALLOWED", "allowed-value")
        .env("SHELL_TEST_NOT_ALLOWED", "not-allowed-value")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 passed"), "{stdout}");
}

#[tokio::test]
#[ignore = "run by the_environment_is_scrubbed, in a child process with secrets in its environment"]
async fn the_environment_is_scrubbed_in_a_child() {
    assert_eq!(std::env::var("OPENAI_API_KEY").as_deref(), Ok("sk-test-provider-key"));
    let dir = scratch("env");
    let shell = capability::shell(&dir)
        .allow_env("SHELL_TEST_ALLOWED")
        .allow_env("OPENAI_API_KEY")
        .allow_env("LOOM_SECRET")
        .env("EXPLICIT", "set-by-builder")
        .env("LOOM_EXPLICIT", "refused");
    let out = run(&shell, "env").await;
    for secret in ["sk-test-provider-key", "OPENAI_API_KEY", "LOOM_", "secret-value", "not-allowed-value", "refused"] {
        assert!(!out.contains(secret), "`{secret}` reached the command:\n{out}");
    }
    assert!(out.contains("SHELL_TEST_ALLOWED=allowed-value\n"), "{out}");
    assert!(out.contains("EXPLICIT=set-by-builder\n"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("PATH=")), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bash_needs_approval_and_outlasts_the_agents_tool_timeout() {
    let shell = capability::shell(".").max_timeout(Duration::from_secs(300));
    let tool = bash(&shell);
    let flags = tool.flags();
    assert!(flags.destructive && flags.requires_permission, "{flags:?}");
    assert!(!flags.read_only && !flags.idempotent && !flags.concurrency_safe, "{flags:?}");
    assert!(tool.timeout().unwrap() > Duration::from_secs(300));
    assert!(format!("{shell:?}").contains("sandboxed: false"));
}

/// An agent whose scripted model runs `echo ran > marker.txt` with bash, then answers.
fn marker_agent(root: &Path, approve: Option<bool>) -> (Agent, Arc<loom_agent::model::ScriptedModel>) {
    let (model, shared) = scripted([
        ScriptedTurn::tool_call("bash", json!({"command": "echo ran > marker.txt; echo written"})),
        ScriptedTurn::text("done"),
    ]);
    let mut builder = Agent::builder().model(shared).capability(capability::shell(root));
    if let Some(allow) = approve {
        builder = builder.approval_handler(FnApproval::new(move |_req| async move {
            if allow { Approval::Allow } else { Approval::Deny("not today".into()) }
        }));
    }
    (builder.build().unwrap(), model)
}

#[tokio::test]
async fn without_an_approval_handler_bash_is_refused() {
    let dir = scratch("refused");
    let (agent, model) = marker_agent(&dir, None);
    assert!(agent.instructions().contains("bash tool"), "{}", agent.instructions());
    let result = within(30, "the run", agent.start("write the marker").result()).await;
    assert_eq!(result.state, RunState::Completed);
    let results = tool_results(&result.events);
    assert_eq!(results.len(), 1);
    assert!(results[0].is_error);
    assert_eq!(results[0].error_kind, Some(ToolErrorKind::Denied));
    assert_eq!(
        results[0].output,
        "Error: permission denied: `bash` is destructive and needs approval, and no approval handler is configured"
    );
    assert!(!dir.join("marker.txt").exists(), "the command ran");
    let seen = tool_messages(&model.requests().last().unwrap().messages);
    assert!(seen[0].1.contains("no approval handler"), "{seen:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_approving_handler_lets_bash_run_and_a_denying_one_does_not() {
    let dir = scratch("approved");
    let (agent, _model) = marker_agent(&dir, Some(true));
    let result = within(30, "the run", agent.start("write the marker").result()).await;
    assert_eq!(result.state, RunState::Completed);
    let results = tool_results(&result.events);
    assert_eq!(results[0].output, "written\n[exit code 0]");
    assert!(!results[0].is_error);
    assert_eq!(std::fs::read_to_string(dir.join("marker.txt")).unwrap(), "ran\n");

    std::fs::remove_file(dir.join("marker.txt")).unwrap();
    let (agent, _model) = marker_agent(&dir, Some(false));
    let result = within(30, "the run", agent.start("write the marker").result()).await;
    assert_eq!(tool_results(&result.events)[0].output, "Error: denied by approver: not today");
    assert!(!dir.join("marker.txt").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn cancelling_a_run_kills_its_command() {
    let dir = scratch("run-cancel");
    let (_model, shared) = scripted([
        ScriptedTurn::tool_call("bash", json!({"command": "sleep 1006 & sleep 1006"})),
        ScriptedTurn::text("never"),
    ]);
    let agent = Agent::builder()
        .model(shared)
        .capability(capability::shell(&dir))
        .approval_handler(FnApproval::new(|_req| async { Approval::Allow }))
        .build()
        .unwrap();
    let run = agent.start("sleep");
    until_sleeping("1006", 2).await;
    run.cancel();
    let result = within(10, "the cancelled run", run.result()).await;
    assert_eq!(result.state, RunState::Cancelled);
    all_gone("1006").await;
    std::fs::remove_dir_all(&dir).ok();
}

/// The sandboxed shell, or `None` (with a message) where bwrap cannot run here.
fn sandboxed(root: &Path) -> Option<Shell> {
    match capability::shell(root).sandbox() {
        Ok(shell) => Some(shell),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("bwrap") || message.contains("bubblewrap"), "{message}");
            assert!(message.contains("never run unsandboxed"), "{message}");
            eprintln!("skipped: the bubblewrap sandbox is not usable here: {message}");
            None
        }
    }
}

#[tokio::test]
async fn the_sandbox_lets_the_root_be_written_and_nothing_else() {
    // Outside /tmp, which the sandbox replaces with a private one.
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("loom-shell-sandbox-{}", loom_agent::new_id("t")));
    let root = parent.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    let Some(shell) = sandboxed(&root) else { return };
    assert!(shell.is_sandboxed());
    let out =
        call(&shell, json!({"command": "echo inside > ../inside.txt && pwd", "cwd": "sub"})).await.unwrap().content;
    assert!(out.ends_with("/root/sub\n[exit code 0]"), "{out}");
    assert_eq!(std::fs::read_to_string(root.join("inside.txt")).unwrap(), "inside\n");
    let out = run(&shell, "echo outside > ../outside.txt").await;
    assert!(out.contains("Read-only file system") && out.ends_with("[exit code 1]"), "{out}");
    assert!(!parent.join("outside.txt").exists());
    // A private /tmp: writable inside, gone afterwards.
    let marker = format!("loom-sandbox-{}", loom_agent::new_id("t"));
    assert_eq!(run(&shell, &format!("echo x > /tmp/{marker} && cat /tmp/{marker}")).await, "x\n[exit code 0]");
    assert!(!Path::new("/tmp").join(&marker).exists());
    std::fs::remove_dir_all(&parent).ok();
}

#[tokio::test]
async fn the_sandbox_has_no_network() {
    let dir = scratch("sandbox-net");
    let Some(shell) = sandboxed(&dir) else { return };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("echo hi > /dev/tcp/127.0.0.1/{port} && echo connected");
    // Outside the sandbox the port answers; inside it does not exist.
    assert_eq!(run(&capability::shell(&dir), &connect).await, "connected\n[exit code 0]");
    let out = run(&shell, &connect).await;
    assert!(!out.contains("connected"), "{out}");
    assert!(out.ends_with("[exit code 1]"), "{out}");
    // The network namespace's only interface.
    let interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '";
    assert_eq!(run(&shell, interfaces).await, "lo\n[exit code 0]");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_sandboxed_command_is_killed_on_timeout() {
    let dir = scratch("sandbox-timeout");
    let Some(shell) = sandboxed(&dir) else { return };
    let task = tokio::spawn({
        let shell = shell.clone();
        async move { call(&shell, json!({"command": "sleep 1007 & sleep 1007", "timeout_secs": 1})).await }
    });
    until_sleeping("1007", 2).await;
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
    all_gone("1007").await;
    std::fs::remove_dir_all(&dir).ok();
}
