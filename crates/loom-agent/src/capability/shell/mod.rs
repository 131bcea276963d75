//! The shell capability: one tool, `bash`, that runs a command in a directory under a root.
//!
//! A command runs as `bash -c COMMAND` (`sh -c` where bash is missing) in its own process group,
//! with stdin closed and a scrubbed environment. The timeout, the run's cancellation and a dropped
//! call all kill the whole process group with SIGKILL, and so does the command's end: whatever it
//! left running in the background (`server &`) does not outlive the call. Stdout and stderr are
//! one interleaved stream (as `2>&1` would give), capped with its head and tail kept.
//!
//! Without [`Shell::sandbox`] the command runs with the rights of this process: the working
//! directory is confined to the root, but the command itself can reach anything the process can.
//! With it, the command runs in bubblewrap: the root read-write, the rest of the filesystem
//! read-only, a private `/tmp`, no network.

mod output;
mod process;
mod sandbox;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Capability;
use crate::tool::{Tool, ToolContext, ToolError, ToolErrorKind, ToolFlags, ToolOutput};
use process::{Ended, Spec};

/// The PATH a command gets when this process has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The variables a command always gets from this process's environment (when they are set).
pub const BASE_ENV: [&str; 7] = ["PATH", "HOME", "LANG", "LC_ALL", "TERM", "TZ", "USER"];

/// Why a shell capability could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// [`Shell::sandbox`] was asked for and bubblewrap cannot sandbox commands on this machine.
    #[error("the shell sandbox is not available: {0}; commands are never run unsandboxed instead")]
    SandboxUnavailable(String),
}

impl From<ShellError> for crate::Error {
    fn from(error: ShellError) -> Self {
        crate::Error::Config(error.to_string())
    }
}

/// Whether a variable may never reach a command: provider keys (`*_API_KEY`) and Loom's own
/// settings and secrets (`LOOM_*`), whatever the allow-list says.
pub fn is_withheld(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("LOOM_") || upper.ends_with("_API_KEY") || upper == "API_KEY"
}

/// Runs shell commands under a root directory: the `bash` tool.
///
/// `bash` is flagged `destructive` and `requires_permission`: under the default permissions every
/// call asks the approval handler, and without one it is refused (the model reads why).
///
/// ```
/// use std::time::Duration;
/// use loom_agent::capability;
///
/// let shell = capability::shell(".")
///     .timeout(Duration::from_secs(30))
///     .allow_env("CARGO_HOME")
///     .env("CI", "1");
/// # let _ = shell;
/// // With bubblewrap installed: `capability::shell(".").sandbox()?` runs every command in it.
/// ```
#[derive(Clone)]
pub struct Shell {
    root: PathBuf,
    timeout: Duration,
    max_timeout: Duration,
    max_output: usize,
    allow_env: Vec<String>,
    env: Vec<(String, String)>,
    bwrap: Option<PathBuf>,
}

impl Shell {
    /// Commands run in `root` (or a directory under it), with the defaults: a 120 s timeout that a
    /// call may raise to 600 s, 30 KiB of output, no sandbox.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Shell {
            root: root.into(),
            timeout: Duration::from_secs(120),
            max_timeout: Duration::from_secs(600),
            max_output: 30 * 1024,
            allow_env: Vec::new(),
            env: Vec::new(),
            bwrap: None,
        }
    }

    /// How long a command may run when the call does not say (default 120 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.max(Duration::from_millis(1));
        self.max_timeout = self.max_timeout.max(self.timeout);
        self
    }

    /// The most a call's `timeout_secs` may ask for (default 600 s); larger requests are capped.
    pub fn max_timeout(mut self, max: Duration) -> Self {
        self.max_timeout = max.max(Duration::from_millis(1));
        self.timeout = self.timeout.min(self.max_timeout);
        self
    }

    /// The most bytes of output the model receives (default 30 KiB): the first and the last half,
    /// with a marker saying how much was cut between them.
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output = bytes.max(2);
        self
    }

    /// Passes this variable of the process's environment to commands too (besides PATH, HOME,
    /// LANG, LC_ALL, TERM, TZ and USER). Provider keys (`*_API_KEY`) and `LOOM_*` variables are
    /// never passed: naming one is ignored, with a warning.
    pub fn allow_env(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if is_withheld(&name) {
            tracing::warn!(variable = %name, "the shell never passes provider keys or LOOM_* variables; ignored");
        } else if !self.allow_env.contains(&name) {
            self.allow_env.push(name);
        }
        self
    }

    /// Sets a variable for every command. Provider keys (`*_API_KEY`) and `LOOM_*` names are
    /// refused, with a warning.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        if is_withheld(&name) {
            tracing::warn!(variable = %name, "the shell never passes provider keys or LOOM_* variables; ignored");
        } else {
            self.env.retain(|(n, _)| *n != name);
            self.env.push((name, value.into()));
        }
        self
    }

    /// Runs every command in a bubblewrap sandbox: the root read-write, the rest of the
    /// filesystem read-only, a private `/tmp`, no network, its own pid namespace.
    ///
    /// Fails when `bwrap` is not installed or cannot create a sandbox here (containers often
    /// forbid the user namespaces it needs): commands are never run unsandboxed instead. The
    /// first call in a process runs `bwrap` once to find out (a few milliseconds, blocking).
    pub fn sandbox(mut self) -> Result<Self, ShellError> {
        self.bwrap = Some(sandbox::bwrap().map_err(ShellError::SandboxUnavailable)?);
        Ok(self)
    }

    /// Whether commands run in the sandbox.
    pub fn is_sandboxed(&self) -> bool {
        self.bwrap.is_some()
    }

    /// The environment a command gets.
    fn environment(&self) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        for name in BASE_ENV.iter().copied().chain(self.allow_env.iter().map(String::as_str)) {
            if is_withheld(name) {
                continue;
            }
            if let Some(value) = std::env::var_os(name) {
                env.push((name.into(), value));
            }
        }
        if !env.iter().any(|(n, _)| n == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        for (name, value) in &self.env {
            env.retain(|(n, _)| n != name.as_str());
            env.push((name.into(), value.into()));
        }
        env
    }
}

impl fmt::Debug for Shell {
    // Variable names only: a value set with `env` may be a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shell")
            .field("root", &self.root)
            .field("timeout", &self.timeout)
            .field("max_timeout", &self.max_timeout)
            .field("max_output_bytes", &self.max_output)
            .field("allow_env", &self.allow_env)
            .field("env", &self.env.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("sandboxed", &self.bwrap.is_some())
            .finish()
    }
}

impl Capability for Shell {
    fn name(&self) -> &str {
        "shell"
    }

    fn tools(&self) -> Vec<Arc<dyn Tool>> {
        vec![Arc::new(Bash { shell: Arc::new(self.clone()) })]
    }

    fn instructions(&self) -> Option<String> {
        let mut text = format!(
            "You can run shell commands with the bash tool, in the project root or a directory under it (cwd). \
             Stdin is closed, so nothing can prompt for input; stdout and stderr come back together, the middle \
             cut when longer than {} bytes. A command may run {} s (timeout_secs asks for up to {} s); background \
             processes are killed when the command ends. A non-zero exit code is reported, not an error. Each call \
             needs approval.",
            self.max_output,
            self.timeout.as_secs(),
            self.max_timeout.as_secs(),
        );
        if self.bwrap.is_some() {
            text.push_str(
                " Commands run in a sandbox: only the project root is writable (and a private /tmp), and there is \
                 no network.",
            );
        }
        Some(text)
    }
}

/// The `bash` tool.
struct Bash {
    shell: Arc<Shell>,
}

#[async_trait::async_trait]
impl Tool for Bash {
    fn name(&self) -> &str {
        "bash"
    }

    fn description(&self) -> &str {
        "Run a shell command with bash in the project root (or cwd under it). Returns stdout and stderr \
         interleaved, then the exit code. Stdin is closed."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The command, run as bash -c COMMAND"},
                "timeout_secs": {"type": "integer", "minimum": 1,
                                 "description": format!("Seconds before the command is killed (default {}, at most {})",
                                                        self.shell.timeout.as_secs(), self.shell.max_timeout.as_secs())},
                "cwd": {"type": "string", "description": "Working directory relative to the project root (default: the root)"}
            },
            "required": ["command"],
            "additionalProperties": false
        })
    }

    fn flags(&self) -> ToolFlags {
        ToolFlags::new().destructive().requires_permission()
    }

    /// The shell's own timeout decides; the runtime's is only a backstop past the longest allowed.
    fn timeout(&self) -> Option<Duration> {
        Some(self.shell.max_timeout + Duration::from_secs(10))
    }

    async fn call(&self, ctx: ToolContext, args: Value) -> Result<ToolOutput, ToolError> {
        let shell = &self.shell;
        let command = args.get("command").and_then(Value::as_str).unwrap_or_default();
        if command.trim().is_empty() {
            return Err(ToolError::invalid_arguments("`command` is empty; give the command to run"));
        }
        let timeout = match args.get("timeout_secs").and_then(Value::as_u64) {
            Some(secs) if secs > 0 => Duration::from_secs(secs).min(shell.max_timeout),
            _ => shell.timeout,
        };
        let (root, cwd) = working_dir(&shell.root, args.get("cwd").and_then(Value::as_str))?;
        let Some(program) = sandbox::find_program("bash").or_else(|| sandbox::find_program("sh")) else {
            return Err(ToolError::new("no shell found: neither bash nor sh is on the PATH"));
        };
        let spec = match &shell.bwrap {
            Some(bwrap) => Spec {
                program: bwrap.clone(),
                args: sandbox::args(&root, &cwd, &program, command),
                cwd: cwd.clone(),
                env: shell.environment(),
            },
            None => Spec { program, args: vec!["-c".into(), command.into()], cwd, env: shell.environment() },
        };
        let ended = process::run(spec, timeout, ctx.cancellation(), shell.max_output)
            .await
            .map_err(|e| ToolError::new(format!("the command could not be run: {e}")))?;
        match ended {
            Ended::Exited { status, output, left_open } => {
                let mut text = if output.is_empty() { "[no output]".to_string() } else { output };
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                if left_open {
                    text.push_str(
                        "[a process that left the command's process group kept the output open; stopped reading]\n",
                    );
                }
                text.push_str(&process::describe_status(status));
                Ok(ToolOutput::text(text))
            }
            Ended::TimedOut { output } => Err(ToolError::with_kind(
                ToolErrorKind::Timeout,
                format!(
                    "the command did not finish within its timeout of {} s and was killed with every process it \
                     started{}",
                    timeout.as_secs_f64(),
                    if output.is_empty() { String::new() } else { format!("; its output until then:\n{output}") }
                ),
            )),
            Ended::Cancelled => Err(ToolError::with_kind(
                ToolErrorKind::Cancelled,
                "the command was cancelled and killed with every process it started",
            )),
        }
    }
}

/// The root (canonical) and the working directory under it. A `cwd` that is outside the root,
/// missing, or not a directory gets one answer, which says nothing about what lies outside.
fn working_dir(root: &Path, cwd: Option<&str>) -> Result<(PathBuf, PathBuf), ToolError> {
    let root =
        root.canonicalize().map_err(|e| ToolError::new(format!("the shell's root directory is not usable: {e}")))?;
    let Some(relative) = cwd.map(str::trim).filter(|c| !c.is_empty() && *c != ".") else {
        return Ok((root.clone(), root));
    };
    let path = Path::new(relative);
    if path.is_absolute() {
        return Err(ToolError::invalid_arguments(format!(
            "cwd `{relative}` is absolute; give a directory relative to the project root"
        )));
    }
    let not_a_dir = || ToolError::new(format!("cwd `{relative}` is not a directory under the project root"));
    let resolved = root.join(path).canonicalize().map_err(|_| not_a_dir())?;
    if !resolved.starts_with(&root) || !resolved.is_dir() {
        return Err(not_a_dir());
    }
    Ok((root, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_keys_and_loom_variables_are_withheld() {
        for name in ["OPENAI_API_KEY", "anthropic_api_key", "LOOM_AUDIT_SECRET", "LOOM_MODEL", "API_KEY"] {
            assert!(is_withheld(name), "{name}");
        }
        for name in ["PATH", "HOME", "CARGO_HOME", "GITHUB_TOKEN", "BLOOM_X"] {
            assert!(!is_withheld(name), "{name}");
        }
        let shell = Shell::new(".").allow_env("OPENAI_API_KEY").env("LOOM_SECRET", "s").env("CI", "1");
        assert!(shell.allow_env.is_empty());
        assert_eq!(shell.env, vec![("CI".to_string(), "1".to_string())]);
    }

    #[test]
    fn debug_shows_names_not_values() {
        let shell = Shell::new(".").env("DEPLOY_TOKEN", "hunter2");
        let debug = format!("{shell:?}");
        assert!(debug.contains("DEPLOY_TOKEN"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn timeouts_stay_ordered() {
        let shell = Shell::new(".").max_timeout(Duration::from_secs(5));
        assert_eq!(shell.timeout, Duration::from_secs(5));
        let shell = Shell::new(".").timeout(Duration::from_secs(900));
        assert_eq!(shell.max_timeout, Duration::from_secs(900));
    }
}
