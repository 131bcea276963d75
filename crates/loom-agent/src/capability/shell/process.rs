//! Running one command: its own process group, stdin closed, stdout and stderr interleaved into one
//! pipe, a timeout and a cancellation token that kill the whole group, and a guard that kills the
//! group when the call is dropped.

use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

use super::output::Capture;

/// How long the output is still read after the command exited, when a process that left the
/// command's process group keeps the output open.
const DRAIN: Duration = Duration::from_millis(500);

/// What to run.
#[derive(Debug)]
pub(super) struct Spec {
    /// The program (bash, sh, or bwrap).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// The working directory.
    pub cwd: PathBuf,
    /// The whole environment.
    pub env: Vec<(OsString, OsString)>,
}

/// How a command ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// It exited (or was killed by a signal it did not get from us).
    Exited {
        /// Its status.
        status: ExitStatus,
        /// Its output, capped.
        output: String,
        /// A process outside the command's group held the output open after the command exited.
        left_open: bool,
    },
    /// The timeout passed; the group was killed.
    TimedOut {
        /// The output until then, capped.
        output: String,
    },
    /// The call was cancelled; the group was killed.
    Cancelled,
}

/// A process group that is killed when this guard is dropped (a dropped call), unless disarmed.
struct Group {
    pgid: Option<Pid>,
}

impl Group {
    /// Sends SIGKILL to every process of the group. A group that is already gone is no error.
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// Kills the group one last time and forgets it: the group's id may be reused once its
    /// processes are gone, so it is not signalled again later.
    fn kill_and_forget(&mut self) {
        self.kill();
        self.pgid = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `spec` to its end, its timeout or its cancellation, keeping at most `cap` bytes of its
/// output (head and tail).
pub(super) async fn run(spec: Spec, timeout: Duration, cancel: &CancellationToken, cap: usize) -> io::Result<Ended> {
    let (sender, mut receiver) = pipe::pipe()?;
    let stdout: OwnedFd = sender.into_blocking_fd()?;
    let stderr = stdout.try_clone()?;
    let mut command = tokio::process::Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(true);
    let spawned = command.spawn();
    // The command holds our copies of the pipe's write end: without dropping it, the output would
    // never reach its end.
    drop(command);
    let mut child = spawned?;
    // Its own group: the group's id is the child's pid.
    let mut group = Group { pgid: child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw) };
    let mut capture = Capture::new(cap);
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut drain: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut status = None;
    let mut eof = false;
    let mut left_open = false;
    while !(eof && status.is_some()) {
        tokio::select! {
            read = receiver.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => capture.push(&buf[..n]),
            },
            exited = child.wait(), if status.is_none() => {
                status = Some(exited?);
                // What the command left running in its group (`cmd &`) ends with it.
                group.kill_and_forget();
                drain = Some(Box::pin(tokio::time::sleep(DRAIN)));
            }
            () = &mut deadline, if status.is_none() => {
                group.kill_and_forget();
                let _ = child.wait().await;
                drain_for(&mut receiver, &mut capture, &mut buf, DRAIN).await;
                return Ok(Ended::TimedOut { output: capture.finish() });
            }
            () = cancel.cancelled(), if status.is_none() => {
                group.kill_and_forget();
                let _ = child.wait().await;
                return Ok(Ended::Cancelled);
            }
            () = async { match drain.as_mut() { Some(d) => d.await, None => std::future::pending().await } }, if drain.is_some() => {
                left_open = true;
                break;
            }
        }
    }
    let Some(status) = status else {
        return Err(io::Error::other("the command's output ended before its status was known"));
    };
    Ok(Ended::Exited { status, output: capture.finish(), left_open })
}

/// Reads what is left in the pipe for at most `limit`.
async fn drain_for(receiver: &mut pipe::Receiver, capture: &mut Capture, buf: &mut [u8], limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        while let Ok(n) = receiver.read(buf).await {
            if n == 0 {
                break;
            }
            capture.push(&buf[..n]);
        }
    })
    .await;
}

/// How a finished command's status reads for the model.
pub(super) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("[exit code {code}]"),
        (None, Some(signal)) => format!("[killed by signal {signal}]"),
        (None, None) => "[exit status unknown]".to_string(),
    }
}
