//! The bubblewrap sandbox: the root read-write, the rest of the filesystem read-only, a private
//! `/tmp`, no network, its own pid namespace, and nothing left alive when bwrap dies.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The options that make the sandbox, before the binds of the call.
const BASE: [&str; 9] = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"];

/// The isolation options.
const ISOLATION: [&str; 4] = ["--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"];

/// Finds `name` on the PATH of this process (or the default PATH).
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(super::DEFAULT_PATH));
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The path of a bwrap that works here, probed once per process: it must be installed and able to
/// create the sandbox (containers may forbid the user namespaces it needs).
pub(super) fn bwrap() -> Result<PathBuf, String> {
    static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<PathBuf, String> {
    let Some(bwrap) = find_program("bwrap") else {
        return Err("bubblewrap (`bwrap`) is not installed (on Debian or Ubuntu: apt-get install bubblewrap)".into());
    };
    let out = Command::new(&bwrap)
        .args(BASE)
        .args(ISOLATION)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("`{}` could not be started: {e}", bwrap.display()))?;
    if out.status.success() {
        return Ok(bwrap);
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().chars().take(300).collect::<String>();
    Err(format!(
        "`{}` is installed but cannot create a sandbox here ({why}); user namespaces may be disabled on this machine",
        bwrap.display()
    ))
}

/// The bwrap arguments that run `shell -c command` in `cwd` with `root` writable.
pub(super) fn args(root: &Path, cwd: &Path, shell: &Path, command: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = BASE.iter().map(OsString::from).collect();
    args.extend([OsString::from("--bind"), root.into(), root.into()]);
    args.extend(ISOLATION.iter().map(OsString::from));
    args.extend([OsString::from("--chdir"), cwd.into(), "--".into(), shell.into(), "-c".into(), command.into()]);
    args
}
