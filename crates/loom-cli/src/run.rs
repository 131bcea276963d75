//! `loom run`: builds the agent and the request from the flags, streams the run to the chosen view,
//! and turns how the run ended into an exit code.

use std::env::VarError;
use std::io::{self, Read, Write};
use std::path::Path;

use futures::StreamExt;
use loom_agent::Model;
use loom_agent::capability::web::SearXng;
use loom_agent::capability::{self, Web, mcp};
use loom_agent::output::OutputSchema;
use loom_agent::store::open_journal;
use loom_agent::{Agent, AgentBuilder, Error, Event, Run, RunContext, RunRequest, RunResult, RunState};

use crate::approval::Governance;
use crate::cli::{AgentArgs, DEFAULT_MODEL, MODEL_ENV, RunArgs};
use crate::render::{HumanView, error_line};

/// How `loom` exits; the numbers are documented in `loom run --help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The run completed.
    Completed = 0,
    /// The run failed, or its output could not be written.
    Failed = 1,
    /// Bad flags or configuration: nothing ran.
    Usage = 2,
    /// The run was stopped by a limit or policy.
    Interrupted = 3,
    /// The run was cancelled.
    Cancelled = 4,
}

impl Exit {
    /// The exit code of a run that ended in `state`.
    pub fn of(state: RunState) -> Exit {
        match state {
            RunState::Completed => Exit::Completed,
            // A suspended run waits for a decision: it stopped without an answer.
            RunState::Interrupted | RunState::Suspended => Exit::Interrupted,
            RunState::Cancelled => Exit::Cancelled,
            RunState::Failed | RunState::Queued | RunState::Running => Exit::Failed,
        }
    }
}

/// Writes a line to stderr; a stderr that cannot be written is not worth failing for.
pub fn report(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// Runs `loom run` to the end.
pub fn main(args: RunArgs) -> Exit {
    let json = args.json;
    let journaled = args.agent.journal.is_some();
    // Other architectures make calls whose text is not the answer (plans, critiques): only
    // ReAct's answer streams; theirs is printed when the run ends.
    let streams = args.agent.architecture.as_deref().is_none_or(|a| a == "react");
    let (agent, request) = match prepare(args) {
        Ok(prepared) => prepared,
        Err(message) => {
            report(&format!("error: {message}"));
            return Exit::Usage;
        }
    };
    let runtime = match async_runtime() {
        Ok(runtime) => runtime,
        Err(exit) => return exit,
    };
    let view = if json { View::Json } else { View::Human(HumanView::new(request.output_schema.is_none() && streams)) };
    runtime.block_on(async {
        let request = match ground(&agent, request, json).await {
            Ok(request) => request,
            Err(message) => {
                report(&format!("error: {message}"));
                return Exit::Failed;
            }
        };
        let run = agent.start(request);
        if journaled {
            report(&format!("run {} in session {}", run.id(), run.session_id()));
        }
        let exit = stream_run(run, 0, view).await;
        // Fact extraction runs in the background: wait for it, so nothing is dropped on exit.
        if let Err(e) = agent.memory().flush().await {
            report(&format!(
                "warning: memory: {} (the episode stays pending; it is extracted on a later run)",
                describe(&e)
            ));
        }
        exit
    })
}

/// With `--knowledge`: indexes the directories (incrementally; a summary per directory on stderr)
/// and puts the passages that best match the prompt into the request's context, listed on stderr
/// by their citation markers (in `--json` mode the `knowledge.injected` event says the same).
async fn ground(agent: &Agent, mut request: RunRequest, json: bool) -> Result<RunRequest, String> {
    let Some(knowledge) = agent.knowledge() else { return Ok(request) };
    for r in knowledge.index().await.map_err(|e| format!("--knowledge: {}", describe(&e)))? {
        for s in &r.skipped {
            report(&format!("knowledge: skipped {}: {}", s.path, s.reason));
        }
        if !json {
            report(&format!("knowledge: {}", crate::knowledge_cmd::summary(&r)));
        }
    }
    let prompt = request.input.as_ref().map(|i| i.summary().to_string()).unwrap_or_default();
    let query =
        loom_agent::knowledge::KnowledgeQuery::new(prompt).top_k(3).tenant(request.user_id.clone().unwrap_or_default());
    let bundle = agent.resolve_knowledge(query).await.map_err(|e| format!("--knowledge: {}", describe(&e)))?;
    if !json {
        for (i, p) in bundle.passages.iter().enumerate() {
            report(&format!("knowledge: [{}] {} ({})", i + 1, p.citation(), p.source));
        }
    }
    request.context = std::mem::take(&mut request.context).knowledge(bundle);
    Ok(request)
}

/// The async runtime the commands run on.
pub fn async_runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        report(&format!("error: cannot start the async runtime: {e}"));
        Exit::Failed
    })
}

/// Where `--model` came from.
enum ModelSource {
    Flag,
    Env,
    /// Neither `--model` nor `LOOM_MODEL`: the embedded model, even when a provider key is set.
    Default,
}

/// Builds the agent from the flags shared by `loom run` and `loom runs resume`, or says what is
/// wrong with them.
pub fn build_agent(args: AgentArgs) -> Result<Agent, String> {
    build_agent_with(args, None, |b| b)
}

/// [`build_agent`] with a runtime profile (`loom run --criteria`), and a last say on the builder
/// after the flags (`loom chat` answers approvals itself).
pub fn build_agent_with(
    args: AgentArgs,
    runtime: Option<loom_agent::Runtime>,
    customize: impl FnOnce(AgentBuilder) -> AgentBuilder,
) -> Result<Agent, String> {
    if let Some(url) = &args.base_url {
        check_base_url(url)?;
    }
    let (spec, source) = choose_model(args.model)?;
    match source {
        ModelSource::Flag => {}
        ModelSource::Env => report(&format!("using model {spec} (from {MODEL_ENV})")),
        ModelSource::Default => report(&default_model_note(&spec)),
    }
    let model = Model::parse_with(&spec, args.base_url.as_deref()).map_err(|e| describe(&e))?;
    let mut builder = Agent::builder().name("loom").model(model);
    if let Some(runtime) = runtime {
        builder = builder.runtime(runtime);
    }
    if let Some(dir) = args.files {
        if !dir.is_dir() {
            return Err(format!("--files {}: not a directory", dir.display()));
        }
        let files = capability::files(dir);
        builder = builder.capability(if args.writable { files.writable() } else { files });
    }
    if args.shell {
        let root = std::env::current_dir().map_err(|e| format!("--shell: the current directory is not usable: {e}"))?;
        let mut shell = capability::shell(root);
        if args.sandbox {
            shell = shell.sandbox().map_err(|e| format!("--sandbox: {e}"))?;
        }
        builder = builder.capability(shell);
    }
    if let Some(dir) = args.skills {
        let skills = capability::skills(&dir).map_err(|e| format!("--skills {}: {e}", dir.display()))?;
        builder = builder.capability(skills);
    }
    if args.web {
        builder = builder.capability(web_capability(
            &args.allow_host,
            &args.deny_host,
            args.allow_private,
            args.search_url.as_deref(),
        )?);
    }
    let mut mcp_servers = Vec::with_capacity(args.mcp.len());
    for spec in &args.mcp {
        let mut server = mcp::parse(spec).map_err(|e| format!("--mcp {spec}: {e}"))?;
        if args.mcp_oauth && server.is_http() {
            let browser =
                mcp::oauth::LoopbackUserAgent::bind(0, MCP_OAUTH_TIMEOUT).map_err(|e| format!("--mcp-oauth: {e}"))?;
            let name = server.server_name().to_string();
            let browser = browser.on_url(move |url| {
                eprintln!("MCP server `{name}` asks for authorization: open this URL in a browser:\n  {url}");
            });
            server = server.oauth(browser.configure(mcp::oauth::OAuthConfig::new("loom")));
        }
        mcp_servers.push(server.server_name().to_string());
        builder = builder.capability(server);
    }
    if let Some(instructions) = args.instructions {
        builder = builder.instructions(instructions);
    }
    if let Some(path) = args.audit_log {
        builder = builder.audit_log(crate::audit::open_log(&path)?);
    }
    if let Some(name) = &args.architecture {
        builder = builder.architecture_name(name);
    }
    if let Some(url) = args.journal {
        let slot = open_journal(&url).map_err(|e| format!("--journal {}: {}", redact(&url), describe(&e)))?;
        builder = builder.journal(slot);
    }
    if let Some(url) = args.memory {
        let store = loom_agent::memory::open_memory_store(&url)
            .map_err(|e| format!("--memory {}: {}", redact(&url), describe(&e)))?;
        builder = builder.memory_store(store);
    }
    for dir in &args.knowledge {
        if !dir.is_dir() {
            return Err(format!("--knowledge {}: not a directory", dir.display()));
        }
        builder = builder.knowledge(loom_agent::knowledge::KnowledgeSource::directory(dir));
    }
    if let Some(spec) = &args.embedder {
        let embedder = loom_agent::parse_embedder(spec).map_err(|e| format!("--embedder: {}", describe(&e)))?;
        builder = builder.embedder_arc(embedder);
    }
    let governance = Governance {
        max_tokens: args.max_tokens,
        max_cost_usd: args.max_cost_usd,
        allow: args.allow,
        deny: args.deny,
        ask: args.ask,
        mcp_servers,
        read_only: args.read_only,
    };
    builder = customize(governance.apply(builder));
    let agent = builder.build().map_err(|e| describe(&e))?;
    governance.check_names(&agent)?;
    Ok(agent)
}

/// How long `--mcp-oauth` waits for the browser's redirect.
const MCP_OAUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The web capability of `--web` and its options.
fn web_capability(
    allow: &[String],
    deny: &[String],
    allow_private: bool,
    search_url: Option<&str>,
) -> Result<Web, String> {
    let mut web = capability::web();
    for host in allow {
        web = web.allow_host(host);
    }
    for host in deny {
        web = web.deny_host(host);
    }
    if allow_private {
        web = web.allow_private();
    }
    if let Some(url) = search_url {
        let searx = SearXng::new(url).map_err(|e| format!("--search-url {}: {e}", redact(url)))?;
        web = web.search(searx);
    }
    Ok(web)
}

/// Checks `--base-url`: an absolute `http://` or `https://` URL with a host.
fn check_base_url(text: &str) -> Result<(), String> {
    let hint = "expected an http:// or https:// URL such as http://localhost:8000/v1";
    let url =
        url::Url::parse(text.trim()).map_err(|e| format!("--base-url `{text}` is not a valid URL ({e}); {hint}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("--base-url `{text}` has the scheme `{}`; {hint}", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("--base-url `{text}` has no host; {hint}"));
    }
    Ok(())
}

/// A journal URL fit to print: the password of `postgres://USER:PASSWORD@HOST/DB` is hidden.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Builds the agent and the request, or says what is wrong with the flags.
fn prepare(args: RunArgs) -> Result<(Agent, RunRequest), String> {
    if args.agent.memory.is_some() && args.user.is_none() {
        report("note: --memory without --user: memory is per user, so this run neither recalls nor records");
    }
    let runtime = (!args.criteria.is_empty()).then(|| {
        loom_agent::Runtime::builder("cli").criteria(args.criteria.iter().cloned()).criteria_rounds(3).build()
    });
    let agent = build_agent_with(args.agent, runtime, |b| b)?;
    let mut context = RunContext::new();
    for (key, value) in args.context {
        context = context.input(key, value);
    }
    let mut request = RunRequest::new(read_prompt(args.prompt)?).context(context);
    if let Some(user) = args.user {
        request = request.user(user);
    }
    if let Some(session) = args.session {
        request = request.session(session);
    }
    if let Some(max_turns) = args.max_turns {
        request = request.max_turns(max_turns);
    }
    if let Some(timeout) = args.timeout {
        request = request.timeout(timeout);
    }
    if let Some(path) = args.output_schema {
        request = request.output_schema(load_schema(&path)?);
    }
    Ok((agent, request))
}

/// The model string: `--model`, else `$LOOM_MODEL`, else the default (the local model; never
/// `echo`, whatever keys are set).
fn choose_model(flag: Option<String>) -> Result<(String, ModelSource), String> {
    if let Some(spec) = flag {
        return Ok((spec, ModelSource::Flag));
    }
    match std::env::var(MODEL_ENV) {
        Ok(spec) if !spec.trim().is_empty() => Ok((spec, ModelSource::Env)),
        Err(VarError::NotUnicode(_)) => Err(format!("{MODEL_ENV} is not valid UTF-8")),
        _ => Ok((DEFAULT_MODEL.to_string(), ModelSource::Default)),
    }
}

/// The one stderr line that says the default model is used, and how to pick a hosted one (with an
/// example for the provider whose key is set, if any).
fn default_model_note(spec: &str) -> String {
    let example = match loom_agent::model::local::provider_key_env() {
        Some("ANTHROPIC_API_KEY") => "claude-sonnet-4-5",
        Some("GEMINI_API_KEY" | "GOOGLE_API_KEY") => "gemini-2.5-flash",
        _ => "openai:gpt-4o-mini",
    };
    format!(
        "using model {spec}: SmolLM2-135M-Instruct, in-process (no --model or {MODEL_ENV}); \
         --model picks a hosted one, e.g. --model {example}"
    )
}

/// The prompt as given, or standard input for `-`.
fn read_prompt(prompt: String) -> Result<String, String> {
    let prompt = if prompt == "-" {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map_err(|e| format!("cannot read the prompt from stdin: {e}"))?;
        text.trim_end().to_string()
    } else {
        prompt
    };
    if prompt.trim().is_empty() {
        return Err("the prompt is empty".to_string());
    }
    Ok(prompt)
}

/// Reads a JSON schema file. The schema is named by its `title`, else by the file name.
fn load_schema(path: &Path) -> Result<OutputSchema, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read output schema {shown}: {e}"))?;
    let schema: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("output schema {shown} is not valid JSON: {e}"))?;
    let stem = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('.').next()).unwrap_or_default();
    let name = match schema.get("title").and_then(serde_json::Value::as_str) {
        Some(title) => title.to_string(),
        None if !stem.is_empty() => stem.to_string(),
        None => "output".to_string(),
    };
    OutputSchema::new(name, schema).map_err(|e| describe(&e))
}

/// An error as a sentence, without the "configuration error:" prefix the flags already imply.
pub fn describe(err: &Error) -> String {
    match err {
        Error::Config(message) => message.clone(),
        other => other.to_string(),
    }
}

/// Streams the run into the view until it ends, leaving out its first `skip` events (those a
/// resumed run had already emitted). The first Ctrl-C or SIGTERM cancels the run (recorded as
/// cancelled, in the journal too); a second one stops waiting for it.
///
/// When stdout cannot be written (a reader that closed the pipe early, as `| head -n1` does), the
/// view stops writing and the run goes on to its end, so its journal records how it really ended;
/// a closed pipe then exits as the run ended, any other write error exits 1.
pub async fn stream_run(run: Run, skip: usize, mut view: View) -> Exit {
    let mut stream = run.events().skip(skip);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut terminate = Terminate::install();
    let mut cancelled = false;
    let mut ctrl_c_works = true;
    let mut write_error: Option<io::Error> = None;
    loop {
        let signal = tokio::select! {
            // Polling Ctrl-C first installs its handler before the first event is shown.
            biased;
            signal = &mut ctrl_c, if ctrl_c_works => match signal {
                Ok(()) => {
                    ctrl_c.set(tokio::signal::ctrl_c());
                    true
                }
                Err(e) => {
                    report(&format!("warning: Ctrl-C will not cancel the run: {e}"));
                    ctrl_c_works = false;
                    false
                }
            },
            () = terminate.recv() => true,
            event = stream.next() => {
                let Some(event) = event else { break };
                if write_error.is_none()
                    && let Err(e) = view.event(&event)
                {
                    // Nobody sees the run any more; it goes on to its end, unwatched.
                    write_error = Some(e);
                }
                false
            }
        };
        if signal {
            if cancelled {
                return Exit::Cancelled;
            }
            cancelled = true;
            run.cancel();
        }
    }
    let result = run.result().await;
    let written = match write_error {
        Some(e) => Err(e),
        None => view.finish(&result),
    };
    match written {
        Ok(()) => Exit::of(result.state),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            if result.state != RunState::Completed {
                report(&error_line(&result));
            }
            Exit::of(result.state)
        }
        Err(e) => {
            report(&format!("error: cannot write to stdout: {e}"));
            Exit::Failed
        }
    }
}

/// SIGTERM, which cancels a run as Ctrl-C does (a service manager's stop, `kill PID`).
struct Terminate {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Terminate {
    /// Installs the handler; without one (not Unix, or it cannot be installed) SIGTERM does what
    /// it does by default.
    fn install() -> Terminate {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = match signal(SignalKind::terminate()) {
                Ok(signal) => Some(signal),
                Err(e) => {
                    report(&format!("warning: SIGTERM will not cancel the run: {e}"));
                    None
                }
            };
            Terminate { signal }
        }
        #[cfg(not(unix))]
        Terminate {}
    }

    /// Resolves at each SIGTERM; never, without a handler.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut()
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// The two ways to show a run.
pub enum View {
    /// One JSON line per event, then the result.
    Json,
    /// For a person.
    Human(HumanView),
}

impl View {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        match self {
            View::Json => json_line(serde_json::to_string(event)),
            View::Human(view) => view.event(event),
        }
    }

    fn finish(&mut self, result: &RunResult) -> io::Result<()> {
        match self {
            View::Json => {
                json_line(serde_json::to_string(result))?;
                if result.state != RunState::Completed {
                    report(&error_line(result));
                }
                Ok(())
            }
            View::Human(view) => view.finish(result),
        }
    }
}

fn json_line(line: serde_json::Result<String>) -> io::Result<()> {
    let line = line.map_err(io::Error::other)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::{check_base_url, redact};

    #[test]
    fn base_urls_are_http_urls_with_a_host() {
        assert!(check_base_url("http://localhost:8000/v1").is_ok());
        assert!(check_base_url("https://api.example.com").is_ok());
        for bad in ["localhost:8000", "not a url", "http://", "ftp://host/v1", "http//host", ""] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn journal_passwords_are_not_printed() {
        assert_eq!(redact("postgres://loom:s3cret@db:5432/loom"), "postgres://loom:***@db:5432/loom");
        assert_eq!(redact("postgres://loom@db/loom"), "postgres://loom@db/loom");
        assert_eq!(redact("sqlite:./loom.db"), "sqlite:./loom.db");
    }
}
