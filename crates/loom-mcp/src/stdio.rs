//! A server as a child process: a scrubbed environment, its own process group (killed as a whole
//! when the connection is dropped), and its stderr kept in a bounded ring buffer.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Variables a server inherits from this process; everything else is dropped (provider keys,
/// `LOOM_*` secrets, tokens) unless given with `.env(..)`.
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TERM", "TZ", "USER"];

/// The most bytes of stderr kept per server.
const STDERR_KEEP: usize = 16 * 1024;
/// The most bytes of stderr shown in an error.
const STDERR_SHOW: usize = 2 * 1024;

/// The last lines a server wrote to stderr, bounded by bytes.
#[derive(Debug)]
pub(crate) struct StderrTail {
    lines: Mutex<(VecDeque<String>, usize)>,
    eof: tokio::sync::watch::Sender<bool>,
}

impl Default for StderrTail {
    fn default() -> Self {
        StderrTail { lines: Mutex::default(), eof: tokio::sync::watch::Sender::new(false) }
    }
}

impl StderrTail {
    /// The tail of a server without a process (HTTP): always empty, already closed.
    pub(crate) fn none() -> Self {
        let tail = StderrTail::default();
        tail.eof.send_replace(true);
        tail
    }

    /// Waits (at most `limit`) until the process closed its stderr, so an error shows its last
    /// words.
    pub(crate) async fn settle(&self, limit: std::time::Duration) {
        let mut rx = self.eof.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|eof| *eof)).await;
    }

    fn push(&self, line: String) {
        let mut guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let (lines, bytes) = &mut *guard;
        let mut line = line;
        if line.len() > STDERR_KEEP {
            let mut cut = line.len() - STDERR_KEEP;
            while !line.is_char_boundary(cut) {
                cut += 1;
            }
            line.drain(..cut);
        }
        *bytes += line.len() + 1;
        lines.push_back(line);
        while *bytes > STDERR_KEEP {
            match lines.pop_front() {
                Some(old) => *bytes -= old.len() + 1,
                None => break,
            }
        }
    }

    /// The last lines, at most about 2 KiB.
    pub(crate) fn tail(&self) -> String {
        let guard = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut shown = Vec::new();
        let mut bytes = 0;
        for line in guard.0.iter().rev() {
            if bytes + line.len() + 1 > STDERR_SHOW && !shown.is_empty() {
                break;
            }
            bytes += line.len() + 1;
            shown.push(line.as_str());
        }
        shown.reverse();
        let mut out = shown.join("\n");
        if out.len() > STDERR_SHOW {
            let mut cut = out.len() - STDERR_SHOW;
            while !out.is_char_boundary(cut) {
                cut += 1;
            }
            out.drain(..cut);
        }
        out
    }
}

/// The child process; dropping it kills its whole process group.
#[derive(Debug)]
pub(crate) struct ProcessGuard {
    child: Child,
    #[cfg_attr(not(unix), allow(dead_code))]
    pgid: Option<u32>,
}

impl ProcessGuard {
    /// The process id (also its process group id).
    pub(crate) fn id(&self) -> Option<u32> {
        self.pgid
    }

    /// The exit status, when the process has exited.
    pub(crate) fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid.and_then(|p| i32::try_from(p).ok()) {
            // The group, not only the leader: `npx` and shell wrappers start the real server as a
            // grandchild. An already-dead group answers ESRCH, which is fine.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.start_kill();
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct StdioSpec {
    pub(crate) command: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: Option<PathBuf>,
}

/// Starts the server: stdin and stdout piped for the protocol, stderr into `tail`.
pub(crate) fn spawn(
    spec: &StdioSpec,
    tail: &Arc<StderrTail>,
) -> std::io::Result<(ProcessGuard, ChildStdout, ChildStdin)> {
    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args).env_clear();
    for key in INHERITED_ENV {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    for (key, value) in &spec.env {
        cmd.env(key, value);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("the child's stdin or stdout is missing"));
    };
    if let Some(mut stderr) = child.stderr.take() {
        let tail = tail.clone();
        tokio::spawn(async move {
            // Lines are cut at the cap while reading: a server writing without newlines cannot
            // grow this buffer.
            let mut buf = [0u8; 4096];
            let mut line = Vec::new();
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                for &b in &buf[..n] {
                    if b == b'\n' {
                        tail.push(String::from_utf8_lossy(&line).into_owned());
                        line.clear();
                    } else if line.len() < STDERR_KEEP {
                        line.push(b);
                    }
                }
            }
            if !line.is_empty() {
                tail.push(String::from_utf8_lossy(&line).into_owned());
            }
            tail.eof.send_replace(true);
        });
    } else {
        tail.eof.send_replace(true);
    }
    Ok((ProcessGuard { child, pgid }, stdout, stdin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_is_bounded_and_keeps_the_last_lines() {
        let tail = StderrTail::default();
        for i in 0..10_000 {
            tail.push(format!("line {i}"));
        }
        let shown = tail.tail();
        assert!(shown.len() <= STDERR_SHOW, "{}", shown.len());
        assert!(shown.ends_with("line 9999"));
        assert!(!shown.contains("line 1\n"));
        let kept = tail.lines.lock().unwrap().1;
        assert!(kept <= STDERR_KEEP);
        tail.push("é".repeat(20_000));
        assert!(tail.tail().len() <= STDERR_SHOW);
    }
}
