//! `loom chat`: an interactive conversation with an agent, one session across turns — a local
//! agent built from the same flags as `loom run`, or an agent of a `loom serve` (`--url`).
//!
//! Each line read from stdin is a message (or a command: `/exit`, `/new`, `/history`, `/help`);
//! the answer streams to stdout, tool calls and their results show on stderr, and a tool call that
//! needs approval is asked about inline (`y`, `n`, or `a` for always in this run), its answer read
//! from the next line. Standard input need not be a terminal: piped lines work the same (the
//! prompt is only printed on a terminal), and the end of input ends the chat.

mod local;
mod remote;
mod view;

use std::io::{self, BufRead, IsTerminal, Write};

use clap::Args;

use crate::cli::AgentArgs;
use crate::run::{Exit, async_runtime, report};
use view::ChatView;

/// The options of `loom chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// How the local agent is built (the same flags as `loom run`; not with --url).
    #[command(flatten)]
    pub agent: AgentArgs,

    /// Chat with an agent of a `loom serve` at this URL (http:// or https://) instead of a local
    /// one: each message is a run (POST /runs) in one server session, its events streamed (SSE),
    /// approvals decided through the server's approval endpoints.
    #[arg(long, value_name = "URL", conflicts_with_all = [
        "model", "base_url", "files", "shell", "web", "mcp", "memory", "skills", "knowledge",
        "audit_log", "instructions", "architecture", "allow", "deny", "ask", "max_tokens", "max_cost_usd",
    ])]
    pub url: Option<String>,

    /// With --url: the environment variable that holds the API key (sent as a bearer token).
    #[arg(long, value_name = "VAR", default_value = "LOOM_API_KEY")]
    pub key_env: String,

    /// With --url: the server's agent to talk to (by its name in the server's file; the only one by
    /// default).
    #[arg(long = "agent", id = "agent_name", value_name = "NAME", requires = "url")]
    pub agent_name: Option<String>,

    /// The user the chat acts for.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,

    /// Start in this session (continuing its conversation when it exists: with --journal locally,
    /// or on the server); otherwise a new one. `/new` starts another.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,

    /// The most model calls one message may take [default: 32] (local agent).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "url")]
    pub max_turns: Option<u32>,
}

/// The help shown after `loom chat --help`'s options.
pub fn long_help() -> &'static str {
    "\
Examples:
  echo \"Hello there\" | loom chat --model echo                   # piped input: one message, then the end of input
  printf 'My name is Ann\\nWhat is my name?\\n/history\\n' | OPENAI_API_KEY=… loom chat --model openai:gpt-4o-mini
  printf 'Remember 7\\n/exit\\n' | loom chat --model echo --journal sqlite:./chat.db --session s1
  printf 'Which number?\\n' | loom chat --model echo --journal sqlite:./chat.db --session s1   # the same conversation
  loom chat --url http://127.0.0.1:8080 --key-env LOOM_API_KEY < /dev/null                  # an agent of `loom serve`

Commands:
  /exit       end the chat (so does the end of input, or Ctrl-D)
  /new        start a new session (the agent forgets the conversation)
  /history    print the session's conversation
  /help       list the commands

Approvals:
  A tool call that needs approval (destructive tools, --ask TOOL; on a server, an agent with
  approval = \"defer\") is shown with its arguments, and the next line answers it: y (yes), n (no) or
  a (always: this tool, for the rest of this message's run).

Output:
  The answer streams to stdout; tool calls (→), results (←), approvals and errors go to stderr.
  Ctrl-C cancels the message being answered (a second one ends the chat); at the prompt it ends the
  chat. The exit code is that of the last message: 0 answered (or no message), 1 failed, 3
  interrupted, 4 cancelled; 2 for bad flags, a server that does not answer, or a refused key."
}

/// The lines of standard input, read on a thread of their own (a read that blocks must not block
/// the runtime, nor keep the process from exiting).
pub struct Lines {
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    terminal: bool,
}

impl Lines {
    fn stdin() -> Lines {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let terminal = io::stdin().is_terminal();
        let spawned = std::thread::Builder::new().name("loom-chat-stdin".into()).spawn(move || {
            let stdin = io::stdin();
            let mut lock = stdin.lock();
            loop {
                let mut line = String::new();
                match lock.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line.trim_end_matches(['\n', '\r']).to_string()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        if let Err(e) = spawned {
            report(&format!("error: cannot read standard input: {e}"));
        }
        Lines { rx, terminal }
    }

    /// The next line; `None` at the end of input.
    pub async fn next(&mut self) -> Option<String> {
        self.rx.recv().await
    }

    /// Prints the message prompt on stderr (on a terminal only) and reads the next message.
    pub async fn message(&mut self) -> Option<String> {
        if self.terminal {
            let mut err = io::stderr().lock();
            let _ = write!(err, "> ");
            let _ = err.flush();
        }
        self.next().await
    }

    /// Prints a question on stderr and reads the answer (echoed when piped, so the transcript
    /// on stderr shows what was answered).
    pub async fn ask(&mut self, prompt: &str) -> Option<String> {
        if self.terminal {
            let mut err = io::stderr().lock();
            let _ = write!(err, "{prompt}");
            let _ = err.flush();
        }
        let line = self.next().await;
        if !self.terminal {
            // Piped: show what was answered, so the transcript reads as it would on a terminal.
            report(&format!("{prompt}{}", line.as_deref().unwrap_or("")));
        }
        line
    }
}

/// An answer to an approval question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Run it.
    Yes,
    /// Do not.
    No,
    /// Run it and later calls of the tool in this run.
    Always,
}

/// Asks about a tool call until the answer is understood; the end of input says no.
pub async fn ask_approval(lines: &mut Lines, tool: &str, reason: &str, arguments: &str) -> Answer {
    report(&format!("? `{tool}` needs approval: {reason}"));
    report(&format!("  arguments: {arguments}"));
    loop {
        let Some(line) = lines.ask("  run it? [y]es, [n]o, [a]lways for this run: ").await else {
            return Answer::No;
        };
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Answer::Yes,
            "n" | "no" => return Answer::No,
            "a" | "always" => return Answer::Always,
            _ => report("  please answer y, n or a"),
        }
    }
}

/// Where the conversation happens.
enum Backend {
    Local(local::LocalChat),
    Remote(remote::RemoteChat),
}

impl Backend {
    async fn turn(&mut self, message: String, lines: &mut Lines, view: &mut ChatView) -> Exit {
        match self {
            Backend::Local(c) => c.turn(message, lines, view).await,
            Backend::Remote(c) => c.turn(message, lines, view).await,
        }
    }

    fn new_session(&mut self) -> String {
        match self {
            Backend::Local(c) => c.new_session(),
            Backend::Remote(c) => c.new_session(),
        }
    }

    async fn history(&self) -> Result<Vec<loom_agent::Message>, String> {
        match self {
            Backend::Local(c) => c.history().await,
            Backend::Remote(c) => c.history().await,
        }
    }

    async fn finish(&self) {
        if let Backend::Local(c) = self {
            c.finish().await;
        }
    }
}

/// Runs `loom chat` until `/exit` or the end of input.
pub fn main(args: ChatArgs) -> Exit {
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    runtime.block_on(async move {
        let mut lines = Lines::stdin();
        let backend = match &args.url {
            Some(url) => remote::RemoteChat::connect(url, &args).await.map(Backend::Remote),
            None => local::LocalChat::new(args).map(Backend::Local),
        };
        let mut backend = match backend {
            Ok(b) => b,
            Err(message) => {
                report(&format!("error: {message}"));
                return Exit::Usage;
            }
        };
        let exit = chat_loop(&mut backend, &mut lines).await;
        backend.finish().await;
        exit
    })
}

async fn chat_loop(backend: &mut Backend, lines: &mut Lines) -> Exit {
    let mut view = ChatView::default();
    let mut exit = Exit::Completed;
    if lines.terminal {
        report("loom chat: type a message; /help lists the commands, /exit ends the chat.");
    }
    loop {
        let line = tokio::select! {
            line = lines.message() => line,
            Ok(()) = tokio::signal::ctrl_c() => None,
        };
        let Some(line) = line else { break };
        let message = line.trim();
        match message {
            "" => continue,
            "/exit" | "/quit" => break,
            "/new" => {
                let id = backend.new_session();
                report(&format!("(new session {id})"));
            }
            "/history" => match backend.history().await {
                Ok(messages) => {
                    if let Err(e) = view::print_history(&messages) {
                        report(&format!("error: cannot write to stdout: {e}"));
                        return Exit::Failed;
                    }
                }
                Err(e) => report(&format!("error: /history: {e}")),
            },
            "/help" => report("commands: /exit, /new (a new session), /history (this session's conversation), /help"),
            other if other.starts_with('/') && !other.contains(char::is_whitespace) => {
                report(&format!("unknown command `{other}`; /help lists the commands"));
            }
            _ => {
                view.start_turn();
                exit = backend.turn(message.to_string(), lines, &mut view).await;
                if exit == Exit::Usage {
                    return exit;
                }
            }
        }
    }
    exit
}
