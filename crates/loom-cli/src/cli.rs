//! The command line, as clap sees it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loom_agent::architecture::ARCHITECTURE_NAMES;
use loom_agent::governance::AuditHead;
use loom_agent::model::ACCEPTED_MODEL_STRINGS;
use serde_json::Value;

/// The environment variable that names the model when `--model` is not given.
pub const MODEL_ENV: &str = "LOOM_MODEL";

/// The model used when neither `--model` nor `LOOM_MODEL` is set: the embedded local model, whether
/// or not a provider key is set (a hosted model is always chosen by name).
pub const DEFAULT_MODEL: &str = "local";

/// `loom`: run Loom agents from the command line.
#[derive(Debug, Parser)]
#[command(name = "loom", version, about = "Loom: run agents and stream what they do.", propagate_version = true)]
pub struct Cli {
    /// Log more to stderr: -v info, -vv debug [default: warnings only; RUST_LOG, when set, decides
    /// instead, e.g. RUST_LOG=loom_agent=debug].
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing would buy nothing
pub enum Command {
    /// Run an agent on a prompt: the answer streams to stdout, tool calls to stderr.
    #[command(after_help = "Run `loom run --help` for examples and exit codes.", after_long_help = run_long_help())]
    Run(RunArgs),
    /// Work with signed audit logs (written by `loom run --audit-log FILE`).
    Audit(AuditArgs),
    /// List, show and resume journaled runs (written by `loom run --journal URL`).
    Runs(RunsArgs),
    /// Fetch and list local models (the embedded SmolLM2-135M-Instruct).
    Model(crate::model_cmd::ModelArgs),
    /// List the tools an agent built with the same flags as `loom run` would offer its model (name,
    /// flags, arguments), without running a model.
    #[command(after_help = "Examples:\n  loom tools --files .\n  loom tools --files . --json")]
    Tools(ToolsArgs),
    /// Inspect and erase what memory holds about a user (written by `loom run --memory URL --user ID`).
    Memory(crate::memory_cmd::MemoryArgs),
    /// Index directories into a memory store's knowledge tables and search them (used by
    /// `loom run --knowledge DIR --memory URL`).
    #[command(after_help = "Examples:\n  loom knowledge index ./docs --memory sqlite:./bot.db\n  \
                            loom knowledge search \"reset the router\" --memory sqlite:./bot.db --name docs")]
    Knowledge(crate::knowledge_cmd::KnowledgeArgs),
    /// Send a signal to a session: stored in the journal's database until a worker (or the next
    /// process that opens the session) handles it. A duplicate --dedupe-key is dropped (exit 0).
    #[command(
        after_help = "Example:\n  loom signal --journal sqlite:./loom.db --session ops --urgency high 'The deploy failed'"
    )]
    Signal(crate::signal_cmd::SignalArgs),
    /// Add, list and remove schedules: signals sent to a session on time (by the worker).
    Schedule(crate::signal_cmd::ScheduleArgs),
    /// Handle the signals and due schedules of a journal's database with an agent (the flags of
    /// `loom run`), until interrupted or, with --until-idle, until nothing is queued (exit 0; 1 when
    /// a run did not complete).
    #[command(after_help = "Example:\n  loom worker --journal sqlite:./loom.db --model gpt-4o-mini --until-idle")]
    Worker(crate::signal_cmd::WorkerArgs),
    /// Serve the agents of a TOML configuration over HTTP: runs, sessions, SSE events, approvals,
    /// OpenAI-compatible endpoints; every API request needs a key from `loom keys create`.
    #[command(
        after_help = "Example:\n  loom keys create --tenant acme --config agent.toml\n  loom serve agent.toml --bind 127.0.0.1:8080"
    )]
    Serve(crate::serve_cmd::ServeArgs),
    /// Make, list and revoke the API keys of `loom serve` (kept hashed in the journal's database).
    Keys(crate::serve_cmd::KeysArgs),
    /// Chat with an agent in the terminal: one session across messages, the answer streamed, tool
    /// calls shown, approvals answered inline — a local agent (the flags of `loom run`) or one of a
    /// `loom serve` (--url).
    #[command(
        after_help = "Run `loom chat --help` for examples and the commands.",
        after_long_help = crate::chat::long_help()
    )]
    Chat(crate::chat::ChatArgs),
}

/// The options of `loom tools`.
#[derive(Debug, Args)]
pub struct ToolsArgs {
    /// How the agent is built (the same flags as `loom run`; no model is called).
    #[command(flatten)]
    pub agent: AgentArgs,

    /// Print the tools as one JSON array (name, description, parameters, flags).
    #[arg(long)]
    pub json: bool,
}

/// The options of `loom audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// What to do with the log.
    #[command(subcommand)]
    pub command: AuditCommand,
}

/// The subcommands of `loom audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check an audit log: its hash chain, signatures and signed head (the key comes from
    /// $LOOM_AUDIT_SECRET).
    ///
    /// The head file beside the log (FILE.head, rewritten with each append) names the log's last
    /// entry, so a log whose last entries were dropped, or that was emptied, is reported as "log
    /// shorter than its head". Against a head file deleted along with them, keep the output of
    /// `loom audit head FILE` somewhere else and pass it with --head. Torn last lines that were
    /// set aside (FILE.torn-*) are noted, and are no problem.
    ///
    /// Exit codes: 0 the chain is intact; 1 entries were edited, dropped, reordered, inserted,
    /// signed with another key or malformed, or the log is shorter than its head (each problem is
    /// named on stdout); 2 usage error (no key, unreadable file, a --head that is not SEQ:HASH).
    #[command(after_help = "Example:\n  loom audit head audit.jsonl > audit.head     (store it elsewhere)\n  \
                            loom audit verify audit.jsonl --head \"$(cat audit.head)\"")]
    Verify {
        /// The audit log (JSONL).
        file: PathBuf,
        /// Also check the log against this head, as `loom audit head` printed it earlier: the log
        /// must reach entry SEQ, and that entry must have this hash.
        #[arg(long, value_name = "SEQ:HASH", value_parser = parse_head)]
        head: Option<AuditHead>,
    },
    /// Print the head of an intact audit log, SEQ:HASH, to keep elsewhere and check with `verify
    /// --head` (the key comes from $LOOM_AUDIT_SECRET).
    ///
    /// The head is the last entry's seq and hash (0:000… for a log without entries). Keep it
    /// somewhere the log's writer cannot reach; `loom audit verify FILE --head SEQ:HASH` then notices
    /// entries cut from the end of the log even if its head file was deleted or replaced too.
    ///
    /// Exit codes: 0 printed; 1 the log does not verify (its problems are named on stdout, as by
    /// `loom audit verify`); 2 usage error (no key, unreadable file).
    Head {
        /// The audit log (JSONL).
        file: PathBuf,
    },
}

/// Parses `--head SEQ:HASH`.
fn parse_head(text: &str) -> Result<AuditHead, String> {
    text.parse().map_err(|_| format!("`{text}` is not SEQ:HASH (as `loom audit head` prints it)"))
}

/// The environment variable that names the run journal when `--journal` is not given.
pub const JOURNAL_ENV: &str = "LOOM_JOURNAL";

/// The options that build the agent: shared by `loom run` and `loom runs resume`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The model: a hosted one by name, such as "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash" or
    /// "PROVIDER:MODEL" ("openai:gpt-4o-mini", "ollama:qwen3"); "local" (the embedded
    /// SmolLM2-135M-Instruct, in-process) or "local:PATH.gguf"; "echo" or "scripted:FILE.json" (for
    /// tests) [default: $LOOM_MODEL, else "local", even when a provider key is set].
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,

    /// The provider's base URL, http:// or https:// (for OpenAI-compatible servers, proxies and
    /// gateways); otherwise the provider's variable (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, …) or its
    /// default. A malformed URL is a usage error (exit 2).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// Let the agent work with the files under DIR, confined to it: read_file, list_files, glob and
    /// grep (read-only unless --writable).
    #[arg(long, value_name = "DIR")]
    pub files: Option<PathBuf>,

    /// With --files: also write_file and edit_file. They are destructive, so each call needs
    /// approval (a prompt when stdin is a terminal, else the call is denied).
    #[arg(long, requires = "files")]
    pub writable: bool,

    /// Read-only mode: only tools flagged read_only run; every other call is denied without asking.
    #[arg(long)]
    pub read_only: bool,

    /// Let the agent run shell commands (the bash tool) in the current directory: stdin closed, a
    /// scrubbed environment (no provider keys, no LOOM_* variables), a timeout that kills every
    /// process the command started. Each call needs approval: a prompt when stdin is a terminal,
    /// else the call is denied.
    #[arg(long)]
    pub shell: bool,

    /// Run --shell's commands in a bubblewrap sandbox: only the current directory writable, a
    /// private /tmp, no network. Fails (exit 2) when bwrap is missing or cannot run here, rather
    /// than run commands unsandboxed.
    #[arg(long, requires = "shell")]
    pub sandbox: bool,

    /// Offer the skills in DIR: each subfolder with a SKILL.md (front matter: name, description,
    /// optional allowed-tools). The model sees their names and descriptions and loads one with the
    /// load_skill tool; a malformed SKILL.md is a usage error (exit 2).
    #[arg(long, value_name = "DIR")]
    pub skills: Option<PathBuf>,

    /// Let the agent fetch web pages with web_fetch (http and https; loopback, private, link-local
    /// and cloud metadata addresses are refused, after DNS resolution and on every redirect).
    #[arg(long)]
    pub web: bool,

    /// With --web: fetch only this host, repeatable ("docs.rs", or "*.rust-lang.org" for its
    /// subdomains). An allowed host still may not resolve to a private address.
    #[arg(long = "allow-host", value_name = "HOST", requires = "web")]
    pub allow_host: Vec<String>,

    /// With --web: never fetch this host, repeatable (same patterns as --allow-host).
    #[arg(long = "deny-host", value_name = "HOST", requires = "web")]
    pub deny_host: Vec<String>,

    /// With --web: let web_fetch reach loopback, private and link-local addresses (local servers,
    /// intranets).
    #[arg(long, requires = "web")]
    pub allow_private: bool,

    /// With --web: add web_search, answered by the SearXNG instance at URL (with its JSON format
    /// enabled: `search.formats: [html, json]` in its settings.yml).
    #[arg(long, value_name = "URL", requires = "web")]
    pub search_url: Option<String>,

    /// Give the agent an MCP server's tools, repeatable: a command run over stdio ('CMD ARGS',
    /// split like a shell would: its environment holds only PATH, HOME, LANG, TERM, TZ and USER) or
    /// a Streamable HTTP URL. `NAME=…` names it; its tools are called NAME__TOOL [default name:
    /// the package a launcher runs, the command's file name, or the URL's host]. The server is
    /// started at the first model turn; one that does not answer within 30 s fails the run.
    #[arg(long = "mcp", value_name = "[NAME=]CMD ARGS|URL")]
    pub mcp: Vec<String>,

    /// Authorize with OAuth the --mcp URL servers that ask for it: the client registers itself
    /// (dynamic registration), prints the authorization URL on stderr for you to open in a
    /// browser, and waits up to 5 minutes for the redirect on a loopback port (127.0.0.1). Tokens
    /// are kept in memory for this command only.
    #[arg(long, requires = "mcp")]
    pub mcp_oauth: bool,

    /// The agent's instructions (its system prompt).
    #[arg(long, value_name = "TEXT")]
    pub instructions: Option<String>,

    /// Stop the run once it has used N tokens (checked before each model call and tool batch).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_tokens: Option<u64>,

    /// Stop the run once it has cost X US dollars (counted when the model's prices are known).
    #[arg(long, value_name = "X", value_parser = parse_cost)]
    pub max_cost_usd: Option<f64>,

    /// Allow only this tool, repeatable: every tool not named is denied.
    #[arg(long = "allow", value_name = "TOOL")]
    pub allow: Vec<String>,

    /// Deny this tool, repeatable: the model is told it may not use it.
    #[arg(long = "deny", value_name = "TOOL")]
    pub deny: Vec<String>,

    /// Ask before running this tool, repeatable (tools flagged destructive always ask): a prompt
    /// when stdin is a terminal, else the call is denied.
    #[arg(long = "ask", value_name = "TOOL")]
    pub ask: Vec<String>,

    /// Append a signed, hash-chained audit log of the run to FILE (JSONL), with its signed head in
    /// FILE.head; the HMAC key comes from $LOOM_AUDIT_SECRET (at least 16 bytes). A FILE that is not
    /// an audit log, or was written with another key, is refused. Check it with `loom audit verify
    /// FILE`.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,

    /// Journal the run (and keep sessions) in a durable store, so it can be listed, shown and
    /// resumed with `loom runs`: "sqlite:PATH" (e.g. "sqlite:./loom.db", optionally
    /// "?synchronous=full"), "postgres://USER@HOST:PORT/DB" or "memory".
    #[arg(long, value_name = "URL", env = JOURNAL_ENV, hide_env_values = true)]
    pub journal: Option<String>,

    /// How the agent works through the request [default: react]: react (model turns and tool calls
    /// until an answer), plan_execute (a plan, its steps carried out with tools, re-planned on
    /// failure), reflexion (attempts evaluated, lessons carried into the next), self_refine (an
    /// answer critiqued and revised), rewoo (every tool call planned up front, then one answer),
    /// tree_of_thoughts (a search over scored lines of reasoning). A resumed run continues with the
    /// architecture it started with (its record names it). An unknown name is a usage error
    /// (exit 2).
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(ARCHITECTURE_NAMES))]
    pub architecture: Option<String>,
    /// Remember users across runs in a memory store: "sqlite:PATH" (e.g. "sqlite:./bot.db"),
    /// "postgres://USER@HOST:PORT/DB" or "memory". Needs --user: each run recalls that user's
    /// facts, episodes and working blocks, and its exchange is recorded and facts extracted from
    /// it before `loom` exits. Inspect it with `loom memory`. Recall searches vectors too with the
    /// local embedder once `loom model pull --embedder` has fetched it (or with --embedder).
    #[arg(long, value_name = "URL")]
    pub memory: Option<String>,
    /// Ground the answer in the documents of a directory (text, markdown, HTML, PDF), repeatable:
    /// they are indexed (incrementally) into the --memory store's knowledge tables, or in this
    /// process without one; the passages that best match the prompt are put before the model,
    /// numbered for citation (listed on stderr), and the model gets a `search_knowledge` tool.
    #[arg(long = "knowledge", value_name = "DIR")]
    pub knowledge: Vec<PathBuf>,
    /// The embedder memory uses: "local" (the default once pulled), "openai:MODEL",
    /// "ollama:MODEL", or "http://HOST/v1:MODEL" for any OpenAI-compatible /embeddings endpoint.
    #[arg(long, value_name = "SPEC", requires = "memory")]
    pub embedder: Option<String>,
}

/// The options of `loom run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The prompt; `-` reads it from standard input.
    pub prompt: String,

    /// How the agent is built.
    #[command(flatten)]
    pub agent: AgentArgs,

    /// The most model calls the run may make [default: 32].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_turns: Option<u32>,

    /// Stop the run after this many seconds (fractions allowed: 0.5).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,

    /// Print every event as one JSON line, then the run's result as the last line.
    #[arg(long)]
    pub json: bool,

    /// The user the run acts for.
    #[arg(long, value_name = "ID")]
    pub user: Option<String>,

    /// Run in this session: a later run with the same session continues the conversation. Without
    /// --journal, sessions live in this process only; with it, they persist in the journal's store.
    #[arg(long, value_name = "ID")]
    pub session: Option<String>,

    /// A context input for the model, repeatable; a VALUE that is not JSON is taken as a string.
    #[arg(long = "context", value_name = "KEY=VALUE", value_parser = parse_context)]
    pub context: Vec<(String, Value)>,

    /// A JSON schema file the answer must match; the parsed value is printed.
    #[arg(long, value_name = "FILE")]
    pub output_schema: Option<PathBuf>,

    /// An acceptance criterion, repeatable: after the final answer the model judges it against
    /// each one (a verdict per criterion on stderr); failed ones go back to it, up to 3 rounds,
    /// and a run that still fails one ends interrupted (exit code 3) with reason "criteria: …".
    #[arg(long = "criteria", value_name = "TEXT")]
    pub criteria: Vec<String>,
}

/// The options of `loom runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// What to do with the journaled runs.
    #[command(subcommand)]
    pub command: RunsCommand,
}

/// The journal a `loom runs` command reads.
#[derive(Debug, Args)]
pub struct JournalArg {
    /// The run journal: "sqlite:PATH" (e.g. "sqlite:./loom.db"; the file must exist, reading never
    /// creates one), "postgres://USER@HOST:PORT/DB" or "memory".
    #[arg(long, value_name = "URL", env = JOURNAL_ENV, hide_env_values = true)]
    pub journal: String,
}

/// The subcommands of `loom runs`.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing would buy nothing
pub enum RunsCommand {
    /// List journaled runs, newest first.
    ///
    /// Exit codes: 0 listed; 2 the journal cannot be opened or read.
    List {
        /// The journal to read.
        #[command(flatten)]
        journal: JournalArg,
        /// Only this session's runs.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Only this user's runs.
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        /// Only runs that have not finished (crashed, running, or waiting for approval).
        #[arg(long)]
        unfinished: bool,
        /// At most N runs [default: no limit].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Print one JSON object per run and line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one journaled run: its record, journal entries, events and transcript.
    ///
    /// Exit codes: 0 shown; 1 no such run; 2 the journal cannot be opened or read.
    Show {
        /// The run's id (see `loom runs list`).
        run_id: String,
        /// The journal to read.
        #[command(flatten)]
        journal: JournalArg,
        /// Print one JSON object {record, state, finished, entries, events, transcript}.
        #[arg(long)]
        json: bool,
    },
    /// Resume a journaled run that did not finish (its process died, or it was interrupted while
    /// running), with the same tool flags as `loom run`.
    ///
    /// The run continues on the model it started on (its journal records the model string and
    /// base URL, never the key): `--model` overrides it, and the switch is announced on stderr and
    /// recorded as a `model.changed` event. A run whose process died on this machine is taken over
    /// at once; one held by a process elsewhere waits for its lease to expire with `--wait`.
    /// Completed model calls and tool calls are replayed from the journal, not repeated. The
    /// remaining events stream as with `loom run`, and the exit code says how the run ended (see
    /// `loom run --help`); a run that is not found, has finished, is held by another process or
    /// has a corrupt journal exits 1 with a message.
    Resume {
        /// The run's id (see `loom runs list --unfinished`).
        run_id: String,
        /// How the agent is built (the journal is required).
        #[command(flatten)]
        agent: AgentArgs,
        /// Print every remaining event as one JSON line, then the run's result as the last line.
        #[arg(long)]
        json: bool,
        /// When another process holds the run's lease, wait until it expires (a countdown on
        /// stderr) instead of failing.
        #[arg(long)]
        wait: bool,
    },
    /// Retention: delete the runs that finished longer ago than --older-than, with their events,
    /// journal entries and transcripts (the audit log is kept; unfinished runs are kept whatever
    /// their age). `[server] retention = "30d"` applies the same policy hourly in `loom serve`
    /// and `loom worker --config`.
    ///
    /// Exit codes: 0 pruned (possibly nothing); 2 the journal cannot be opened or pruned.
    Prune {
        /// The journal to prune.
        #[command(flatten)]
        journal: JournalArg,
        /// The age: 30d, 12h, 90m, 1w …
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Print the counts as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn run_long_help() -> String {
    format!(
        "\
Examples:
  loom run \"Say hello\"                            # the local model: no key, no network once it is cached
  OPENAI_API_KEY=… loom run --model openai:gpt-4o-mini --files . \"What does this repository do?\"
  VLLM_BASE_URL=http://localhost:8000/v1 loom run --model vllm:my-model \"Hi\"   # any OpenAI-compatible server
  loom run --model ollama:qwen3 --base-url http://gpu-box:11434/v1 \"Hi\"
  loom run --model scripted:demo.json --max-turns 4 \"Plan the release\"     # demo.json: a scripted model (tests)
  loom run --context repo=loom --context 'limits={{\"files\": 3}}' \"Summarise the repo\"
  loom run --output-schema answer.schema.json \"Give me a number\"
  loom run --json \"hello\" | jq -c 'select(.type == \"model.response\")'
  echo \"a long prompt\" | loom run -
  loom run --files . --deny list_files --max-tokens 20000 \"Read the README\"
  loom run --web --allow-host docs.rs --search-url http://127.0.0.1:8888 \"What is new in tokio?\"
  loom run --files . --writable \"Fix the typo in README.md\"     # asks before each write
  loom run --journal sqlite:./loom.db --session s1 \"Remember the number 7\"
  loom run --journal sqlite:./loom.db --session s1 \"Which number?\"   # continues the conversation
  loom runs list --journal sqlite:./loom.db
  loom runs resume RUN_ID --journal sqlite:./loom.db             # RUN_ID: from the list, or stderr

Journal:
  --journal URL (or $LOOM_JOURNAL) records every run, its events and its session's conversation in a
  durable store: sqlite:PATH, postgres://…, or memory. The run id goes to stderr
  (\"run RUN_ID in session ID\"); `loom runs list|show|resume` work with the journaled runs.

Models:
  {ACCEPTED_MODEL_STRINGS}. Without --model, ${MODEL_ENV} is used, else \"{DEFAULT_MODEL}\": the embedded
  SmolLM2-135M-Instruct, run in-process (fetched into the cache on first use, see `loom model pull`),
  even when a provider key is set; a hosted model is picked with --model.
  Keys come from the provider's variable: OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, DEEPSEEK_API_KEY, …

Output:
  The model's text streams to stdout. Thinking, tool calls (→) and tool results (←) go to stderr,
  so `loom run \"…\" > answer.txt` keeps only what the model says. With --json, stdout carries one JSON event
  per line ({{type, run_id, session_id, seq, at, payload}}), then the run's result as the last line.
  Ctrl-C or SIGTERM cancels the run (a second one stops waiting for it). When stdout is closed early
  (`| head -n1`), the run goes on to its end unwatched, and its journal says how it ended.

Permissions and budget:
  --deny and --allow are checked first. Tools flagged destructive, and those named by --ask, need
  approval: when stdin is a terminal you are asked ([y]es, [n]o, [a]lways for this run, [e]dit the
  arguments); otherwise the call is denied. The model is told why a call was denied, and the run goes on.
  --read-only lets only tools flagged read_only run (write_file and edit_file from --files --writable
  are denied without asking).
  --max-tokens and --max-cost-usd stop the run (exit 3, reason \"budget: max_tokens\", …) once reached.

Exit codes:
  0  the run completed
  1  the run failed (a model error, an answer that never matched the schema, …)
  2  usage or configuration error (bad flags, unknown model, unreadable file)
  3  the run was interrupted (max turns, timeout, budget, guardrail) or suspended for approval
  4  the run was cancelled (Ctrl-C, SIGTERM)"
    )
}

/// Parses `--timeout`: a positive number of seconds.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("the timeout must be a positive number of seconds".to_string());
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` seconds is too long a timeout"))
}

/// Parses `--max-cost-usd`: a positive number of US dollars.
fn parse_cost(text: &str) -> Result<f64, String> {
    let usd: f64 = text.trim().parse().map_err(|_| format!("`{text}` is not a number of US dollars"))?;
    if !usd.is_finite() || usd <= 0.0 {
        return Err("the cost limit must be a positive number of US dollars".to_string());
    }
    Ok(usd)
}

/// Parses `--context KEY=VALUE`: the value as JSON, or as a string when it is not JSON.
fn parse_context(text: &str) -> Result<(String, Value), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got `{text}`"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("the key before `=` is empty in `{text}`"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_values_are_json_or_strings() {
        assert_eq!(parse_context("n=3"), Ok(("n".to_string(), serde_json::json!(3))));
        assert_eq!(parse_context("repo=\"loom\""), Ok(("repo".to_string(), serde_json::json!("loom"))));
        assert_eq!(parse_context("repo=loom"), Ok(("repo".to_string(), serde_json::json!("loom"))));
        assert_eq!(parse_context("eq=a=b"), Ok(("eq".to_string(), serde_json::json!("a=b"))));
        assert!(parse_context("novalue").is_err());
        assert!(parse_context("=1").is_err());
    }

    #[test]
    fn cost_limits_are_positive_dollars() {
        assert_eq!(parse_cost("0.5"), Ok(0.5));
        assert_eq!(parse_cost("2"), Ok(2.0));
        assert!(parse_cost("0").is_err());
        assert!(parse_cost("-1").is_err());
        assert!(parse_cost("inf").is_err());
        assert!(parse_cost("NaN").is_err());
        assert!(parse_cost("lots").is_err());
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_timeout("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_timeout("3"), Ok(Duration::from_secs(3)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("NaN").is_err());
        assert!(parse_timeout("inf").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn the_documented_max_turns_default_holds() {
        assert_eq!(loom_agent::Runtime::default().max_turns, 32, "update the --max-turns help");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
