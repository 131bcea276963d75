//! The governance flags of `loom run`: the permission policy (`--allow`, `--deny`, `--ask`), the
//! budget (`--max-tokens`, `--max-cost-usd`), and approval of tool calls by the person at the
//! terminal.
//!
//! When standard input is a terminal, a call that needs approval shows the tool, its arguments and
//! why on stderr, and reads the answer from stdin:
//!
//! ```text
//! ? `rm` needs approval: `rm` is destructive
//!   arguments: {"path":"/tmp/a"}
//!   run it? [y]es, [n]o, [a]lways for this run, [e]dit the arguments:
//! ```
//!
//! Otherwise there is no approval handler, and every call that needs approval is denied.

use std::io::{self, BufRead, IsTerminal, Write};

use loom_agent::governance::{
    Approval, ApprovalHandler, ApprovalRequest, FnApproval, PermissionMode, StandardBudget, StandardPermissions,
};
use loom_agent::{Agent, AgentBuilder};

/// The governance flags of `loom run`.
#[derive(Debug, Default)]
pub struct Governance {
    /// `--max-tokens`: the most tokens the run may use.
    pub max_tokens: Option<u64>,
    /// `--max-cost-usd`: the most the run may cost.
    pub max_cost_usd: Option<f64>,
    /// `--allow`: when set, the only tools that may run.
    pub allow: Vec<String>,
    /// `--deny`: tools that never run.
    pub deny: Vec<String>,
    /// `--ask`: tools that need approval.
    pub ask: Vec<String>,
    /// The names of the `--mcp` servers: their tools (`NAME__TOOL`) are only known once the
    /// server runs, so such names are not checked up front.
    pub mcp_servers: Vec<String>,
    /// `--read-only`: only tools flagged read_only run.
    pub read_only: bool,
}

impl Governance {
    /// Adds the permission policy, the budget (when a limit is given) and, when stdin is a
    /// terminal, the interactive approver.
    pub fn apply(&self, mut builder: AgentBuilder) -> AgentBuilder {
        let mut permissions = StandardPermissions::new().deny_tools(self.deny.iter().cloned());
        if !self.allow.is_empty() {
            permissions = permissions.allow_tools(self.allow.iter().cloned());
        }
        for tool in &self.ask {
            permissions = permissions.ask(tool.clone());
        }
        if self.read_only {
            permissions = permissions.mode(PermissionMode::ReadOnly);
        }
        builder = builder.permissions(permissions);
        if self.max_tokens.is_some() || self.max_cost_usd.is_some() {
            let mut budget = StandardBudget::new();
            if let Some(n) = self.max_tokens {
                budget = budget.max_tokens(n);
            }
            if let Some(usd) = self.max_cost_usd {
                budget = budget.max_cost_usd(usd);
            }
            builder = builder.budget(budget);
        }
        if io::stdin().is_terminal() {
            builder = builder.approval_handler(terminal_approval());
        }
        builder
    }

    /// Names in `--allow`, `--deny` and `--ask` that are not tools of the agent (a typo in `--deny`
    /// would otherwise let the tool run).
    pub fn check_names(&self, agent: &Agent) -> Result<(), String> {
        let specs = agent.tools();
        let tools: Vec<&str> = specs.iter().map(|t| t.name.as_str()).collect();
        let lists = [("--allow", &self.allow), ("--deny", &self.deny), ("--ask", &self.ask)];
        for (flag, names) in lists {
            let from_mcp = |n: &str| {
                self.mcp_servers.iter().any(|s| n.strip_prefix(s.as_str()).is_some_and(|t| t.starts_with("__")))
            };
            if let Some(name) = names.iter().find(|n| !tools.contains(&n.as_str()) && !from_mcp(n)) {
                let available = if tools.is_empty() { "none".to_string() } else { tools.join(", ") };
                return Err(format!("{flag} {name}: the agent has no such tool (its tools: {available})"));
            }
        }
        Ok(())
    }
}

/// Asks the person at the terminal: the question on stderr, the answer from stdin.
pub fn terminal_approval() -> impl ApprovalHandler {
    FnApproval::new(|request: ApprovalRequest| async move {
        // A plain thread, not the runtime's blocking pool: a read still waiting when the run is
        // cancelled must not keep the process from exiting.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new().name("loom-approval".into()).spawn(move || {
            let answer = ask(&mut io::stdin().lock(), &mut io::stderr().lock(), &request);
            let _ = tx.send(answer);
        });
        if spawned.is_err() {
            return Approval::Deny("could not ask at the terminal".to_string());
        }
        rx.await.unwrap_or_else(|_| Approval::Deny("no answer at the terminal".to_string()))
    })
}

/// Asks about one call until the answer is understood; the end of input denies.
pub fn ask(input: &mut impl BufRead, output: &mut impl Write, request: &ApprovalRequest) -> Approval {
    let name = &request.tool.name;
    let _ = writeln!(output, "? `{name}` needs approval: {}", request.reason);
    let _ = writeln!(output, "  arguments: {}", request.args);
    loop {
        let _ = write!(output, "  run it? [y]es, [n]o, [a]lways for this run, [e]dit the arguments: ");
        let _ = output.flush();
        let Some(line) = read_line(input) else {
            let _ = writeln!(output);
            return Approval::Deny("no answer at the terminal".to_string());
        };
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Approval::Allow,
            "n" | "no" => return Approval::Deny("denied at the terminal".to_string()),
            "a" | "always" => return Approval::AllowForRun,
            "e" | "edit" => loop {
                let _ = write!(output, "  new arguments (JSON on one line; empty to go back): ");
                let _ = output.flush();
                let Some(line) = read_line(input) else {
                    let _ = writeln!(output);
                    return Approval::Deny("no answer at the terminal".to_string());
                };
                if line.trim().is_empty() {
                    break;
                }
                match serde_json::from_str::<serde_json::Value>(line.trim()) {
                    Ok(args) if args.is_object() => return Approval::Edit(args),
                    Ok(_) => {
                        let _ = writeln!(output, "  the arguments must be a JSON object");
                    }
                    Err(e) => {
                        let _ = writeln!(output, "  not valid JSON: {e}");
                    }
                }
            },
            _ => {}
        }
    }
}

/// One line of input, without its line ending; `None` at the end of input or on a read error.
fn read_line(input: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\n', '\r']).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use loom_agent::ToolCall;
    use loom_agent::governance::Scope;
    use loom_agent::tool::{ToolFlags, ToolSpec};
    use serde_json::json;

    use super::*;

    fn request() -> ApprovalRequest {
        ApprovalRequest {
            scope: Scope { run_id: Arc::from("r"), session_id: Arc::from("s"), user_id: None },
            tool: ToolSpec {
                name: "rm".into(),
                description: String::new(),
                parameters: json!({"type": "object"}),
                flags: ToolFlags { destructive: true, ..ToolFlags::default() },
            },
            call: ToolCall { id: "c1".into(), name: "rm".into(), arguments: r#"{"path":"/tmp/a"}"#.into() },
            args: json!({"path": "/tmp/a"}),
            reason: "`rm` is destructive".into(),
        }
    }

    fn answer(typed: &str) -> (Approval, String) {
        let mut out = Vec::new();
        let approval = ask(&mut typed.as_bytes(), &mut out, &request());
        (approval, String::from_utf8(out).unwrap_or_default())
    }

    #[test]
    fn the_question_shows_the_tool_the_arguments_and_why() {
        let (approval, shown) = answer("y\n");
        assert_eq!(approval, Approval::Allow);
        assert!(shown.starts_with("? `rm` needs approval: `rm` is destructive\n  arguments: {\"path\":\"/tmp/a\"}\n"));
        assert!(shown.contains("[y]es, [n]o, [a]lways for this run, [e]dit the arguments"));
    }

    #[test]
    fn answers() {
        assert_eq!(answer("yes\n").0, Approval::Allow);
        assert_eq!(answer(" N \n").0, Approval::Deny("denied at the terminal".into()));
        assert_eq!(answer("a\n").0, Approval::AllowForRun);
        assert_eq!(answer("e\n{\"path\": \"/tmp/b\"}\n").0, Approval::Edit(json!({"path": "/tmp/b"})));
        // The end of input denies.
        assert_eq!(answer("").0, Approval::Deny("no answer at the terminal".into()));
        assert_eq!(answer("e\n").0, Approval::Deny("no answer at the terminal".into()));
    }

    #[test]
    fn unclear_answers_ask_again() {
        let (approval, shown) = answer("maybe\n\ny\n");
        assert_eq!(approval, Approval::Allow);
        assert_eq!(shown.matches("run it?").count(), 3);

        let (approval, shown) = answer("e\nnot json\n[1]\n\nn\n");
        assert_eq!(approval, Approval::Deny("denied at the terminal".into()));
        assert!(shown.contains("not valid JSON"));
        assert!(shown.contains("the arguments must be a JSON object"));
        assert_eq!(shown.matches("run it?").count(), 2, "an empty line goes back to the question");
    }
}
