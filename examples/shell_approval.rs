//! The shell capability with an approval handler: `capability::shell(dir)` gives the model a `bash`
//! tool that is `destructive` and `requires_permission`, so under the default permissions every
//! call goes to the approval handler (and without one, every call is refused).
//!
//! Here the handler is a small struct implementing [`ApprovalHandler`]: it allows commands that
//! start with a harmless program (`echo`, `ls`, `cat`, `pwd`) and denies anything that mentions
//! `rm`. A scripted model tries both, and the example prints the decisions and the results from the
//! run's events. The shell's root is a fresh temporary directory, removed at the end.
//!
//! ```rust,ignore
//! let agent = Agent::builder()
//!     .model(model)
//!     .capability(capability::shell(&root)) // add `.sandbox()?` to run commands in bubblewrap
//!     .approval_handler(EchoOnly)
//!     .build()?;
//! ```

use loom_agent::governance::{Approval, ApprovalHandler, ApprovalRequest};
use loom_agent::model::{ScriptedModel, ScriptedTurn};
use loom_agent::prelude::*;
use serde_json::json;

/// Allows commands whose first word is on a short list; denies any command with an `rm` in it.
struct EchoOnly;

/// Programs this handler lets run.
const ALLOWED: &[&str] = &["echo", "ls", "cat", "pwd"];

#[async_trait::async_trait]
impl ApprovalHandler for EchoOnly {
    async fn approve(&self, request: ApprovalRequest) -> Approval {
        let command = request.args["command"].as_str().unwrap_or_default();
        // Words of the command, split at spaces and shell punctuation (`;`, `&&`, `|`, `$(…)`).
        let words: Vec<&str> =
            command.split(|c: char| c.is_whitespace() || ";&|()`$<>".contains(c)).filter(|w| !w.is_empty()).collect();
        println!("[approver] {} wants to run {command:?} ({})", request.tool.name, request.reason);
        if words.contains(&"rm") {
            Approval::Deny("commands that delete files (rm) are not allowed".into())
        } else if words.first().is_some_and(|w| ALLOWED.contains(w)) {
            Approval::Allow
        } else {
            Approval::Deny(format!("only {} are allowed", ALLOWED.join(", ")))
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The shell's root: a temporary directory with one file the model will try to delete.
    let root = std::env::temp_dir().join(format!("loom-example-shell-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    std::fs::write(root.join("notes.txt"), "keep me\n")?;

    let model = ScriptedModel::new([
        ScriptedTurn::tool_call("bash", json!({"command": "echo hello from the shell; ls"})),
        ScriptedTurn::tool_call("bash", json!({"command": "rm -f notes.txt"})),
        ScriptedTurn::text("I listed the directory; deleting notes.txt was not allowed."),
    ]);
    let agent = Agent::builder()
        .model(model)
        .instructions("You are a careful assistant with a shell.")
        .capability(capability::shell(&root))
        .approval_handler(EchoOnly)
        .build()?;

    let result = agent.run("Say hello, list the files, then clean up notes.txt.").await;
    let still_there = root.join("notes.txt").exists();
    std::fs::remove_dir_all(&root)?;
    let result = result?;

    println!();
    for event in result.events.iter() {
        match &event.kind {
            EventKind::ToolCall(e) => println!("tool.call            {} {}", e.call.name, e.call.arguments),
            EventKind::PermissionDecision(d) => println!(
                "permission.decision  {} by {}{}",
                d.decision,
                d.by,
                d.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            ),
            EventKind::ToolResult(r) => println!(
                "tool.result          {}{}:\n{}",
                r.name,
                if r.is_error { " (error)" } else { "" },
                r.output.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
            ),
            _ => {}
        }
    }
    println!("\nanswer ({}): {}", result.state, result.output);
    println!("notes.txt still there: {still_there}");
    Ok(())
}
