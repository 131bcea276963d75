//! Every `loom …` command in README.md (its ```sh and ```bash blocks) and in the examples of
//! `loom run --help` and `loom chat --help` runs, against the built binary, and does what the docs say.
//!
//! Each command runs with `bash -o pipefail -c` in a fresh directory that holds what the commands
//! name (README.md, `crates/` for the fixtures, `demo.json`, `answer.schema.json`), with `loom` on
//! the PATH. What would need a key or the network is substituted: `…` is a test key, every
//! `http://…` URL (and OPENAI_BASE_URL) is a mock OpenAI-compatible server on 127.0.0.1, `RUN_ID` is
//! the id of the last journaled run and `FILE` the cached local model. Commands on the local model
//! run only when it is cached; otherwise they run with an empty cache and no pip, which checks
//! their flags (they must fail to load the model, not be usage errors), and say so.

#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use loom_testkit::wire::openai;
use loom_testkit::{MockServer, Reply};

const KEY: &str = "sk-test-docs-0123456789";

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("loom-cli-docs-{tag}-{}", loom_agent::new_id("d")));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A shell line without its trailing `# comment` (a `#` outside quotes, at the start or after a
/// space), trimmed.
fn strip_comment(line: &str) -> String {
    let (mut single, mut double) = (false, false);
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_whitespace() => return line[..i].trim().to_string(),
            _ => {}
        }
        prev = c;
    }
    line.trim().to_string()
}

/// The lines of README.md's ```sh and ```bash blocks.
fn readme_lines() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut lines = Vec::new();
    let mut in_shell = false;
    let mut in_block = false;
    for line in text.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            if in_block {
                in_block = false;
                in_shell = false;
            } else {
                in_block = true;
                in_shell = matches!(info.trim(), "sh" | "bash" | "shell" | "console");
            }
            continue;
        }
        if in_shell {
            let line = strip_comment(line);
            if !line.is_empty() {
                lines.push(line);
            }
        }
    }
    lines
}

/// The examples of `loom SUBCOMMAND --help`.
fn help_lines(subcommand: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_loom")).args([subcommand, "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    let examples =
        help.split_once("Examples:\n").unwrap_or_else(|| panic!("`loom {subcommand} --help` has examples")).1;
    let lines: Vec<String> =
        examples.lines().take_while(|l| !l.trim().is_empty()).map(strip_comment).filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 5, "{lines:?}");
    lines
}

/// Whether a word is an environment assignment (`NAME=value`).
fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    })
}

/// The `loom` command of a line, as a user types it (`cargo run -p loom-cli --` is `loom`), or
/// `None` when the line runs no `loom`.
fn loom_line(line: &str) -> Option<String> {
    let line = line.replace("cargo run -p loom-cli -- ", "loom ");
    let runs_loom = line.split('|').any(|part| part.split_whitespace().find(|w| !is_assignment(w)) == Some("loom"));
    runs_loom.then_some(line)
}

/// What a command needs and what it should do.
#[derive(Debug, PartialEq)]
enum Kind {
    /// Runs the local model (`loom run` without --model).
    Local,
    /// Fetches the local model with pip (network) unless it is cached.
    Pull,
    /// Copies the cached model (`--from FILE`).
    PullFrom,
    /// Resumes a run (finished here: refused with exit 1, which is what the docs say of finished runs).
    Resume,
    /// Anything else: exit 0.
    Plain,
}

fn kind(line: &str) -> Kind {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after_loom = |sub: &[&str]| words.windows(sub.len() + 1).any(|w| w[0] == "loom" && w[1..] == *sub);
    if after_loom(&["model", "pull"]) {
        return if line.contains("--from") { Kind::PullFrom } else { Kind::Pull };
    }
    if after_loom(&["runs", "resume"]) {
        return Kind::Resume;
    }
    if after_loom(&["run"]) && !line.contains("--model") {
        return Kind::Local;
    }
    Kind::Plain
}

/// The cached local model, if any (where `loom model pull` puts it).
fn cached_model() -> Option<PathBuf> {
    let path = loom_agent::model::local::pull::default_model_path().ok()?;
    let size = std::fs::metadata(&path).ok()?.len();
    (size == loom_agent::model::local::pull::DEFAULT_MODEL_SIZE).then_some(path)
}

struct Harness {
    /// Where the commands run.
    work: TempDir,
    /// Holds `loom` for the PATH.
    bin: TempDir,
    /// An empty model cache, used when the model is not cached (and for `pull --from`).
    empty_cache: TempDir,
    mock: String,
    model: Option<PathBuf>,
    /// `export NAME=VALUE` lines so far.
    exported: BTreeMap<String, String>,
    last_run_id: Option<String>,
    ran: usize,
}

impl Harness {
    fn new(server: &MockServer) -> Harness {
        let work = TempDir::new("work");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        std::os::unix::fs::symlink(repo().join("crates"), work.0.join("crates")).unwrap();
        std::fs::copy(repo().join("README.md"), work.0.join("README.md")).unwrap();
        std::fs::copy(fixtures.join("demo.json"), work.0.join("demo.json")).unwrap();
        std::fs::copy(fixtures.join("answer.schema.json"), work.0.join("answer.schema.json")).unwrap();
        let bin = TempDir::new("bin");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_loom"), bin.0.join("loom")).unwrap();
        Harness {
            work,
            bin,
            empty_cache: TempDir::new("cache"),
            mock: format!("{}/v1", server.url()),
            model: cached_model(),
            exported: BTreeMap::new(),
            last_run_id: None,
            ran: 0,
        }
    }

    /// The line with its placeholders filled in, or why it cannot be run here.
    fn substitute(&self, line: &str) -> Result<String, String> {
        let mut words = Vec::new();
        for word in line.split(' ') {
            let word = match word.find("http://") {
                Some(at) => format!("{}{}", &word[..at], self.mock),
                None => word.to_string(),
            };
            words.push(word);
        }
        let mut line = words.join(" ").replace('…', KEY);
        if line.contains("RUN_ID") {
            let id = self.last_run_id.as_deref().ok_or("RUN_ID before any journaled run")?;
            line = line.replace("RUN_ID", id);
        }
        if line.contains("FILE") {
            let model = self.model.as_ref().ok_or("FILE is the cached local model, which is not cached")?;
            line = line.replace("FILE", &model.display().to_string());
        }
        Ok(line)
    }

    fn command(&self, line: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.args(["-o", "pipefail", "-c", line]).current_dir(&self.work.0);
        for var in [
            "LOOM_MODEL",
            "LOOM_JOURNAL",
            "LOOM_MODEL_DIR",
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "VLLM_BASE_URL",
            "OLLAMA_BASE_URL",
        ] {
            cmd.env_remove(var);
        }
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", self.bin.0.display()))
            .env("NO_COLOR", "1")
            // The hosted OpenAI API is the mock server here.
            .env("OPENAI_BASE_URL", &self.mock)
            .envs(&self.exported);
        if self.model.is_none() {
            // Never download the model in a test.
            cmd.env("LOOM_MODEL_DIR", &self.empty_cache.0).env("LOOM_PYTHON", "/nonexistent/python3");
        }
        cmd
    }

    /// Runs one documented line and checks what it did.
    fn check(&mut self, source: &str, line: &str) {
        if let Some(assignment) = line.strip_prefix("export ") {
            let filled = self.substitute(assignment).unwrap();
            let (name, value) = filled.split_once('=').unwrap_or_else(|| unreachable!("{source}: `{line}`"));
            self.exported.insert(name.to_string(), value.to_string());
            return;
        }
        let Some(loom) = loom_line(line) else {
            println!("{source}: not a loom command, not run here: {line}");
            return;
        };
        if loom.contains("| jq") && Command::new("jq").arg("--version").output().is_err() {
            println!("{source}: skipped (jq is not installed): {line}");
            return;
        }
        let kind = kind(&loom);
        if matches!(kind, Kind::Pull | Kind::PullFrom) && self.model.is_none() {
            println!("{source}: skipped (the local model is not cached; this would fetch it): {line}");
            return;
        }
        let filled = self.substitute(&loom).unwrap_or_else(|why| panic!("{source}: `{line}`: {why}"));
        let mut cmd = self.command(&filled);
        if kind == Kind::PullFrom {
            cmd.env("LOOM_MODEL_DIR", &self.empty_cache.0);
        }
        let out: Output = cmd.output().unwrap();
        self.ran += 1;
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let code = out.status.code();
        let context =
            format!("{source}: `{line}`\nran `{filled}`\nexit {code:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        if let Some(id) = stderr
            .lines()
            .find_map(|l| l.strip_prefix("run ").filter(|rest| rest.contains(" in session ")))
            .and_then(|rest| rest.split_whitespace().next())
        {
            self.last_run_id = Some(id.to_string());
        }
        assert!(!stderr.contains("Usage:"), "a usage error: {context}");
        match kind {
            Kind::Local if self.model.is_none() => {
                println!("{source}: the local model is not cached; checked the flags only: {line}");
                assert_eq!(code, Some(1), "the flags are fine, the model is missing: {context}");
                assert!(stderr.contains("using model local"), "{context}");
                assert!(stderr.contains("the local model is not available"), "{context}");
            }
            Kind::Resume if code == Some(1) => {
                assert!(stderr.contains("has already finished"), "{context}");
            }
            _ => assert_eq!(code, Some(0), "{context}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_command_runs() {
    let server = MockServer::start().await;
    server.always(Reply::sse([
        openai::text("Loom is an agent runtime."),
        openai::finish("stop"),
        openai::usage(20, 0, 5),
        openai::done(),
    ]));
    let readme = readme_lines();
    // The quickstart and the test command stay the first two commands of the README.
    assert_eq!(
        readme.get(..2),
        Some(
            &["cargo run -p loom-examples --example quickstart".to_string(), "cargo test --workspace".to_string()][..]
        ),
    );
    let help = help_lines("run");
    let chat = help_lines("chat");
    let (readme_count, help_count) = (readme.len(), help.len() + chat.len());
    let ran = tokio::task::spawn_blocking(move || {
        let mut sources = Vec::new();
        for (source, lines) in [("README.md", readme), ("loom run --help", help), ("loom chat --help", chat)] {
            let mut harness = Harness::new(&server);
            for line in &lines {
                harness.check(source, line);
            }
            sources.push(harness.ran);
        }
        sources
    })
    .await
    .unwrap();
    println!("ran {ran:?} of {readme_count} README lines and {help_count} help examples");
    assert!(ran.iter().all(|&n| n >= 5), "{ran:?}");
}

#[test]
fn comments_and_cargo_run_are_understood() {
    assert_eq!(strip_comment(r#"loom run "a # b" # note"#), r#"loom run "a # b""#);
    assert_eq!(strip_comment("loom run 'x#y'"), "loom run 'x#y'");
    assert_eq!(loom_line("cargo run -p loom-cli -- run x").as_deref(), Some("loom run x"));
    assert_eq!(loom_line("A=1 B=2 loom run x").as_deref(), Some("A=1 B=2 loom run x"));
    assert_eq!(loom_line("echo hi | loom run -").as_deref(), Some("echo hi | loom run -"));
    assert_eq!(loom_line("cargo test --workspace"), None);
    assert_eq!(kind("loom run --files . x"), Kind::Local);
    assert_eq!(kind("loom run --model echo x"), Kind::Plain);
    assert_eq!(kind("loom model pull --from FILE"), Kind::PullFrom);
    assert_eq!(kind("loom runs resume R --journal sqlite:x"), Kind::Resume);
}
