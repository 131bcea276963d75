//! `loom audit verify FILE`, and the audit log that `loom run --audit-log FILE` writes.
//!
//! Both take the HMAC key from `$LOOM_AUDIT_SECRET`, which must hold at least 16 bytes.

use std::env::VarError;
use std::io::{self, Write};
use std::path::Path;

use loom_agent::governance::FileAuditLog;

use crate::cli::{AuditArgs, AuditCommand};
use crate::run::{Exit, report};

/// The environment variable that holds the audit log's HMAC key.
pub const SECRET_ENV: &str = "LOOM_AUDIT_SECRET";

/// The shortest key accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// The key from the environment, or why there is none fit to use.
fn secret(why: &str) -> Result<String, String> {
    match std::env::var(SECRET_ENV) {
        Ok(secret) if secret.len() >= MIN_SECRET_BYTES => Ok(secret),
        Ok(secret) if secret.is_empty() => Err(format!("{why} needs the HMAC key in {SECRET_ENV}, which is empty")),
        Ok(secret) => Err(format!(
            "{why} needs an HMAC key of at least {MIN_SECRET_BYTES} bytes in {SECRET_ENV} (it has {})",
            secret.len()
        )),
        Err(VarError::NotPresent) => Err(format!(
            "{why} needs the HMAC key in {SECRET_ENV} (at least {MIN_SECRET_BYTES} bytes; for example \
             `export {SECRET_ENV}=$(openssl rand -hex 32)`)"
        )),
        Err(VarError::NotUnicode(_)) => Err(format!("{SECRET_ENV} is not valid UTF-8")),
    }
}

/// Opens the audit log for `loom run --audit-log FILE`.
pub fn open_log(path: &Path) -> Result<FileAuditLog, String> {
    let secret = secret("--audit-log")?;
    FileAuditLog::open(path, secret).map_err(|e| format!("--audit-log {}: {e}", path.display()))
}

/// Runs `loom audit …` to the end.
pub fn main(args: AuditArgs) -> Exit {
    match args.command {
        AuditCommand::Verify { file } => verify(&file),
    }
}

/// Prints each problem on its own line and a summary; exits 0 only for an intact chain.
fn verify(path: &Path) -> Exit {
    let secret = match secret("`loom audit verify`") {
        Ok(secret) => secret,
        Err(message) => {
            report(&format!("error: {message}"));
            return Exit::Usage;
        }
    };
    let found = match FileAuditLog::verify(path, secret) {
        Ok(r) => r,
        Err(e) => {
            report(&format!("error: {e}"));
            return Exit::Usage;
        }
    };
    let shown = path.display();
    let mut out = io::stdout().lock();
    let written = if found.is_intact() {
        let head = match (found.last_seq, &found.last_hash) {
            (Some(seq), Some(hash)) => format!(" (last seq {seq}, head {hash})"),
            _ => String::new(),
        };
        writeln!(out, "{shown}: {} entries, chain intact{head}", found.entries)
    } else {
        let mut written = Ok(());
        for problem in &found.problems {
            written = written.and_then(|()| writeln!(out, "{shown}: {problem}"));
        }
        let n = found.problems.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        written.and_then(|()| writeln!(out, "{shown}: {} entries, {n} {noun}: the chain is broken", found.entries))
    };
    if let Err(e) = written.and_then(|()| out.flush())
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        report(&format!("error: cannot write to stdout: {e}"));
    }
    if found.is_intact() { Exit::Completed } else { Exit::Failed }
}
