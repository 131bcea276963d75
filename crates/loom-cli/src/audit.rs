//! `loom audit verify FILE [--head SEQ:HASH]`, `loom audit head FILE`, and the audit log that
//! `loom run --audit-log FILE` writes.
//!
//! Both take the HMAC key from `$LOOM_AUDIT_SECRET`, which must hold at least 16 bytes.

use std::env::VarError;
use std::io::{self, Write};
use std::path::Path;

use loom_agent::governance::{AuditHead, FileAuditLog, VerifyReport};

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

/// Opens the audit log for `loom run --audit-log FILE`; a file that is not an audit log, or was
/// written with another key, is refused (a usage error).
pub fn open_log(path: &Path) -> Result<FileAuditLog, String> {
    let secret = secret("--audit-log")?;
    FileAuditLog::open(path, secret).map_err(|e| format!("--audit-log: {e}"))
}

/// Runs `loom audit …` to the end.
pub fn main(args: AuditArgs) -> Exit {
    match args.command {
        AuditCommand::Verify { file, head } => verify(&file, head.as_ref()),
        AuditCommand::Head { file } => head(&file),
    }
}

/// Verifies the log (against its head file, and `expected`), or says why it cannot.
fn check(path: &Path, why: &str, expected: Option<&AuditHead>) -> Result<VerifyReport, Exit> {
    let secret = secret(why).map_err(|message| {
        report(&format!("error: {message}"));
        Exit::Usage
    })?;
    FileAuditLog::verify_with_head(path, secret, expected).map_err(|e| {
        report(&format!("error: {e}"));
        Exit::Usage
    })
}

/// `loom audit verify`: prints each problem on its own line and a summary, then notes (set-aside
/// torn lines, a missing head file); exits 0 only for an intact chain.
fn verify(path: &Path, expected: Option<&AuditHead>) -> Exit {
    let found = match check(path, "`loom audit verify`", expected) {
        Ok(found) => found,
        Err(exit) => return exit,
    };
    let shown = path.display();
    let mut lines = Vec::new();
    if found.is_intact() {
        let head = match (found.last_seq, &found.last_hash) {
            (Some(seq), Some(hash)) => format!(" (last seq {seq}, head {hash})"),
            _ => String::new(),
        };
        let against = match (&found.head_file, expected) {
            (Some(_), Some(_)) => ", matches its head file and the expected head",
            (Some(_), None) => "",
            (None, Some(_)) => ", matches the expected head",
            (None, None) => "",
        };
        lines.push(format!("{shown}: {} entries, chain intact{head}{against}", found.entries));
    } else {
        lines.extend(found.problems.iter().map(|problem| format!("{shown}: {problem}")));
        let n = found.problems.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        lines.push(format!("{shown}: {} entries, {n} {noun}: the chain is broken", found.entries));
    }
    lines.extend(notes(path, &found));
    print_lines(&lines);
    if found.is_intact() { Exit::Completed } else { Exit::Failed }
}

/// `loom audit head`: prints SEQ:HASH of an intact log.
fn head(path: &Path) -> Exit {
    let found = match check(path, "`loom audit head`", None) {
        Ok(found) => found,
        Err(exit) => return exit,
    };
    if found.is_intact() {
        print_lines(&[found.head().to_string()]);
        return Exit::Completed;
    }
    let shown = path.display();
    let mut lines: Vec<String> = found.problems.iter().map(|problem| format!("{shown}: {problem}")).collect();
    lines.push(format!("{shown}: the chain is broken: no head printed"));
    print_lines(&lines);
    Exit::Failed
}

/// What is worth knowing about a log besides its problems.
fn notes(path: &Path, found: &VerifyReport) -> Vec<String> {
    let shown = path.display();
    let mut notes: Vec<String> = found
        .set_aside
        .iter()
        .map(|aside| {
            format!(
                "{shown}: note: a torn last line (an interrupted write) was set aside in {}; it is not part of \
                 the chain",
                aside.display()
            )
        })
        .collect();
    let head_file = FileAuditLog::head_path(path);
    if found.entries > 0 && !head_file.exists() {
        notes.push(format!(
            "{shown}: note: no head file ({}): entries cut from the end cannot show; keep `loom audit head` \
             output elsewhere and check with --head",
            head_file.display()
        ));
    }
    notes
}

/// Prints lines on stdout; a closed pipe is not worth a message.
fn print_lines(lines: &[String]) {
    let mut out = io::stdout().lock();
    let written = lines.iter().try_for_each(|line| writeln!(out, "{line}")).and_then(|()| out.flush());
    if let Err(e) = written
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        report(&format!("error: cannot write to stdout: {e}"));
    }
}
