//! [`FileAuditLog`]: the signed audit chain in an append-only JSONL file, with a signed head beside
//! it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use super::audit::{
    AuditEntry, AuditHead, GENESIS_HASH, HeadCheck, HeadFile, Prepared, Signer, Verifier, VerifyReport, head_path,
    now_rfc3339, read_head, read_head_at, reset_head, sha256_hex, write_head,
};
use super::{AuditLog, AuditRecord, AuditRefusal};
use crate::Error;

/// How far back a tail read starts; doubled until a whole line is found.
const TAIL_CHUNK: u64 = 8 * 1024;

/// The start of every line the log writes (the `seq` field comes first).
const LINE_START: &[u8] = b"{\"seq\":";

/// An audit log in a JSONL file: one signed, hash-chained [`AuditEntry`](super::AuditEntry) per
/// line (the format is documented there), payloads redacted first ([`redact`](super::redact)),
/// and a signed head beside it. [`FileAuditLog::verify`] checks a file.
///
/// # Opening
///
/// [`FileAuditLog::open`] refuses ([`Error::AuditLogRefused`]) a file it must not append to: a
/// non-empty file whose first or last line is not an audit entry (some other file), a log whose
/// last entry is not signed with the key given, and a log shorter than its signed head (entries
/// were cut from its end: appending would hide that). Nothing is written to a refused file.
///
/// A torn last line (the process or the machine died mid-append, the disk filled up) is set
/// aside: its bytes move to a file beside the log, `FILE.torn-TIMESTAMP`, the log is cut back to
/// its last whole entry, and a warning is logged (`tracing`). The chain goes on from that entry;
/// [`FileAuditLog::verify`] lists the set-aside files in [`VerifyReport::set_aside`].
///
/// # The head file
///
/// Beside the log, `FILE.head` holds the log's [`AuditHead`] (last `seq` and hash), signed with
/// the same key: HMAC-SHA256 of `loom-audit-head:SEQ:HASH`. Each append rewrites it under the same
/// file lock, right after the entry. [`FileAuditLog::verify`] checks the log against it, so a log
/// whose last entries were dropped, or that was emptied, fails as truncated.
///
/// The file has two fixed-width slots (192 bytes each, one line each: `{"seq":N,"hash":"…",
/// "signature":"…"}` padded with spaces); the head of an odd `seq` goes to the second, of an even
/// one to the first, each with one positioned write, and the newest slot whose signature verifies
/// is the head. So a write torn by a crash leaves the previous head whole, and no rename is
/// needed (a temp-file-and-rename per append costs about 190 µs on ext4; a positioned write, well
/// under 1 µs). The head can lag the log by one entry after a crash between the two writes, never
/// lead it, with one exception: without [`FileAuditLog::sync`], a machine crash can leave the head
/// of an entry on disk but not the whole entry. Opening then finds a torn line where the head's
/// entry should be, sets it aside and moves the head back to the last whole entry.
///
/// A head file can be deleted together with the entries it would reveal. Against that, keep the
/// head somewhere the log's writer cannot reach as well ([`VerifyReport::head`], `loom audit
/// head`) and check with [`FileAuditLog::verify_with_head`].
///
/// # Appending, across threads and processes
///
/// Every append takes an exclusive lock on the file ([`File::lock`], `flock` on Unix), reads the
/// last entry's `seq` and `hash`, writes the new line with one `write` in append mode, then the
/// head, and unlocks. So any number of tasks, [`FileAuditLog`] values and processes appending to
/// one file keep one valid chain. Redaction and serialization of the payload happen first, outside
/// the locks.
///
/// Where the write runs: when the log's in-process mutex and the file lock are both free
/// (`try_lock`) and `sync` is off, the append is done right away on the calling task: one `fstat`,
/// one `write` to the page cache, one positioned write of the head, no waiting (about 5 µs in
/// release builds, against 10 to 20 µs for the hop to the blocking pool). Whenever either lock is
/// held by another writer, or with [`FileAuditLog::sync`], the append goes to tokio's blocking pool
/// ([`tokio::task::spawn_blocking`]), so a runtime thread never waits for another writer or for
/// the disk. [`FileAuditLog::write_inline`]`(false)` sends every append to the blocking pool.
///
/// Reading the last entry is cheap: each log remembers the file's length, `seq` and `hash` after
/// its own last append. If the length is unchanged under the lock, nobody else appended and the
/// remembered values are used; otherwise the tail is read backwards from the end to the last
/// whole entry (setting aside a torn line, as on opening), and checked against the head file.
///
/// # Failures
///
/// `append` returns an error whenever the entry may not be in the log: the write failed (a full
/// disk: the partial line is cut off again), `fdatasync` failed, or the head could not be
/// written (the entry is in the log, its head lags; the next append catches up).
///
/// # Durability
///
/// By default `append` returns once the line and the head were written to the operating system
/// (they survive the process crashing, not the machine). With [`FileAuditLog::sync`] it also waits
/// for `fdatasync` of both, at the cost of two disk flushes per append.
///
/// The file is opened once; rotating or replacing it (or its head file) underneath a running log is
/// not supported, nor is anything but appending to it.
#[derive(Clone)]
pub struct FileAuditLog {
    inner: Arc<Inner>,
    sync: bool,
    inline: bool,
}

struct Inner {
    path: PathBuf,
    signer: Signer,
    state: Mutex<State>,
}

struct State {
    file: File,
    /// The head file, open for reading and writing.
    head: File,
    /// The file's length, last `seq` and `hash` after this log's last append.
    tail: Option<Tail>,
}

#[derive(Clone, Debug, PartialEq)]
struct Tail {
    len: u64,
    seq: u64,
    hash: String,
}

impl std::fmt::Debug for FileAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileAuditLog")
            .field("path", &self.inner.path)
            .field("sync", &self.sync)
            .field("inline", &self.inline)
            .finish()
    }
}

impl FileAuditLog {
    /// Opens (creating it if needed) the audit file at `path`, signing with `secret`, which must
    /// not be empty (use a random key of 32 bytes or more). Creates the head file beside it
    /// ([`FileAuditLog::head_path`]) if there is none.
    ///
    /// Fails with [`Error::AuditLogRefused`] for a file that is not an audit log, a log written
    /// with another key, or a log shorter than its head; sets a torn last line aside (see the
    /// type's documentation).
    pub fn open(path: impl AsRef<Path>, secret: impl AsRef<[u8]>) -> Result<FileAuditLog, Error> {
        let path = path.as_ref().to_path_buf();
        let signer = Signer::new(secret.as_ref())?;
        let io_error =
            |what: &str, source| Error::Io { context: format!("{what} audit log {}", path.display()), source };
        let file =
            OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(|e| io_error("opening", e))?;
        file.lock().map_err(|e| io_error("locking", e))?;
        let opened = open_locked(&path, &file, &signer);
        let unlocked = file.unlock().map_err(|e| io_error("unlocking", e));
        let (head, tail) = opened?;
        unlocked?;
        tracing::info!(path = %path.display(), last_seq = tail.seq, "audit log opened");
        let state = Mutex::new(State { file, head, tail: Some(tail) });
        Ok(FileAuditLog { inner: Arc::new(Inner { path, signer, state }), sync: false, inline: true })
    }

    /// Whether each append waits for the line and the head to reach the disk (`fdatasync`);
    /// default `false`.
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Whether an append whose locks are both free may write on the calling task (the default)
    /// rather than always on tokio's blocking pool. Turn it off when the file is on a file system
    /// where a `write` can take long (a network mount).
    pub fn write_inline(mut self, inline: bool) -> Self {
        self.inline = inline;
        self
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The head file of the audit log at `log`: `log` with `.head` appended (`audit.jsonl.head`).
    pub fn head_path(log: impl AsRef<Path>) -> PathBuf {
        head_path(log.as_ref())
    }

    /// Checks the audit file at `path`: every entry's hash and signature, the chain, the order,
    /// and the chain against the signed head file beside it when there is one (a log shorter than
    /// its head was truncated). Fails only when the file cannot be read; what is wrong with it is
    /// in the report.
    pub fn verify(path: impl AsRef<Path>, secret: impl AsRef<[u8]>) -> Result<VerifyReport, Error> {
        FileAuditLog::verify_with_head(path, secret, None)
    }

    /// [`FileAuditLog::verify`], and also checks the log against `expected`, a head kept elsewhere
    /// ([`VerifyReport::head`] of an earlier check): the log must reach the head's `seq`, with the
    /// head's hash there. This catches entries cut from the end even when the head file was
    /// deleted or replaced too.
    pub fn verify_with_head(
        path: impl AsRef<Path>,
        secret: impl AsRef<[u8]>,
        expected: Option<&AuditHead>,
    ) -> Result<VerifyReport, Error> {
        let path = path.as_ref();
        let io_error = |source| Error::Io { context: format!("reading audit log {}", path.display()), source };
        let signer = Signer::new(secret.as_ref())?;
        let file = File::open(path).map_err(io_error)?;
        // A consistent view: the length and the head file under a shared lock (writers hold it
        // exclusively across the line and the head); appends only add bytes after that length.
        let locked = file.lock_shared().is_ok();
        let len = file.metadata().map(|m| m.len()).map_err(io_error);
        let head_file = read_head_at(&head_path(path), &signer);
        if locked {
            let _ = file.unlock();
        }
        let len = len?;
        let head_file = head_file.map_err(|source| Error::Io {
            context: format!("reading the head file of audit log {}", path.display()),
            source,
        })?;

        let mut reader = BufReader::new((&file).take(len));
        let mut verifier = Verifier::new(&signer);
        let mut buf = Vec::new();
        let mut line = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io_error)? == 0 {
                break;
            }
            line += 1;
            if buf.last() == Some(&b'\n') {
                buf.pop();
                verifier.push_line(line, &buf);
            } else if entry_of(&buf).is_ok() {
                verifier.push_line(line, &buf);
            } else {
                let detail = "a torn last line (an interrupted write, no newline): opening the log to append \
                              sets it aside";
                verifier.push_malformed(line, None, detail.to_string());
            }
        }

        let mut checks = Vec::new();
        let valid_head = match head_file {
            HeadFile::Valid(head) => Some(head),
            HeadFile::Invalid { kind, detail } => {
                verifier.push_head_problem(kind, detail);
                None
            }
            HeadFile::Missing | HeadFile::Empty => None,
        };
        if let Some(head) = &valid_head {
            checks.push(HeadCheck { head, source: "its head file" });
        }
        if let Some(head) = expected {
            checks.push(HeadCheck { head, source: "the expected head" });
        }
        let mut report = verifier.finish_with_heads(&checks);
        report.head_file = valid_head;
        report.set_aside = set_aside_files(path);
        Ok(report)
    }

    /// Writes one entry, under the in-process mutex (one handle, one writer at a time) and the
    /// file lock (one process at a time), waiting for both.
    fn write_entry(&self, prepared: &Prepared) -> Result<(), Error> {
        let mut state = self.inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.file.lock().map_err(|e| self.io_error("locking", e))?;
        self.write_and_unlock(&mut state, prepared)
    }

    /// The fast path: when neither lock is held by anyone else, writes now, on the calling thread;
    /// `None` when it would have to wait.
    fn try_write_now(&self, prepared: &Prepared) -> Option<Result<(), Error>> {
        let mut state = match self.inner.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        match state.file.try_lock() {
            Ok(()) => Some(self.write_and_unlock(&mut state, prepared)),
            Err(fs::TryLockError::WouldBlock) => None,
            Err(fs::TryLockError::Error(e)) => Some(Err(self.io_error("locking", e))),
        }
    }

    /// With the file locked: writes, then unlocks whatever happened.
    fn write_and_unlock(&self, state: &mut State, prepared: &Prepared) -> Result<(), Error> {
        let written = self.write_locked(state, prepared);
        let unlocked = state.file.unlock();
        written?;
        unlocked.map_err(|e| self.io_error("unlocking", e))
    }

    fn io_error(&self, what: &str, source: io::Error) -> Error {
        Error::Io { context: format!("{what} audit log {}", self.path().display()), source }
    }

    fn write_locked(&self, state: &mut State, prepared: &Prepared) -> Result<(), Error> {
        let path = &self.inner.path;
        let signer = &self.inner.signer;
        let len = state.file.metadata().map_err(|e| self.io_error("reading", e))?.len();
        let tail = match state.tail.take() {
            Some(tail) if tail.len == len => tail,
            _ => {
                // Another writer appended (or something else changed the file): read the tail
                // again, and check it against the head before chaining onto it.
                let head = read_head(&state.head, signer).map_err(|e| self.io_error("reading the head of", e))?;
                inspect_locked(path, &state.file, signer, len, &head, false)?
            }
        };
        let seq = tail.seq + 1;
        let at = now_rfc3339();
        let fields = prepared.fields(seq, &at, &tail.hash);
        let hash = sha256_hex(&fields.content());
        let signature = signer.sign(&hash);
        let mut line = String::with_capacity(prepared.payload_json.len() + 400);
        fields.write_line(&mut line, &hash, &signature);
        line.push('\n');
        if let Err(e) = (&state.file).write_all(line.as_bytes()) {
            // A partial line (a full disk) is cut off again; if even that fails, the next open or
            // append sets it aside.
            let _ = state.file.set_len(tail.len);
            return Err(self.io_error("appending to", e));
        }
        if self.sync {
            state.file.sync_data().map_err(|e| self.io_error("syncing", e))?;
        }
        state.tail = Some(Tail { len: tail.len + line.len() as u64, seq, hash: hash.clone() });
        write_head(&state.head, signer, seq, &hash).map_err(|e| self.io_error("writing the head of", e))?;
        if self.sync {
            state.head.sync_data().map_err(|e| self.io_error("syncing the head of", e))?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl AuditLog for FileAuditLog {
    async fn append(&self, record: AuditRecord) -> Result<(), Error> {
        let prepared = Prepared::new(record);
        if self.inline
            && !self.sync
            && let Some(done) = self.try_write_now(&prepared)
        {
            return done;
        }
        let log = self.clone();
        tokio::task::spawn_blocking(move || log.write_entry(&prepared))
            .await
            .map_err(|e| Error::store(format!("audit log writer: {e}"), e))?
    }
}

/// Opening, with the log locked: checks the log and its head, sets a torn line aside, opens (or
/// creates) the head file and brings it up to date.
fn open_locked(path: &Path, file: &File, signer: &Signer) -> Result<(File, Tail), Error> {
    let io_error = |what: &str, source| Error::Io { context: format!("{what} audit log {}", path.display()), source };
    let len = file.metadata().map_err(|e| io_error("reading", e))?.len();
    let head_path = head_path(path);
    let head = read_head_at(&head_path, signer).map_err(|e| io_error("reading the head of", e))?;
    let tail = inspect_locked(path, file, signer, len, &head, true)?;
    let head_file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&head_path)
        .map_err(|e| io_error("opening the head of", e))?;
    let written = match &head {
        // The head of the torn line that was set aside: back to the last whole entry.
        HeadFile::Valid(h) if h.seq > tail.seq => reset_head(&head_file, signer, tail.seq, &tail.hash),
        HeadFile::Valid(h) if h.seq == tail.seq => Ok(()),
        // A log from before head files, or a crash between an entry and its head.
        _ if tail.seq > 0 => write_head(&head_file, signer, tail.seq, &tail.hash),
        _ => Ok(()),
    };
    written.map_err(|e| io_error("writing the head of", e))?;
    Ok((head_file, tail))
}

/// What to do about the bytes after the log's last newline.
enum Fragment {
    None,
    /// A whole entry that lacks its newline: end it.
    Complete,
    /// A torn line: set it aside.
    Torn(Vec<u8>),
}

/// Reads and checks the log's tail under the file lock: the last whole entry must be signed with
/// the key, and the log must reach its head. With `whole`, the first line must be an entry too
/// (on opening: a foreign file is refused before anything is written to it). Then sets a torn last
/// line aside. Returns the tail to chain onto.
fn inspect_locked(
    path: &Path,
    file: &File,
    signer: &Signer,
    len: u64,
    head: &HeadFile,
    whole: bool,
) -> Result<Tail, Error> {
    let io_error = |source| Error::Io { context: format!("reading audit log {}", path.display()), source };
    let refuse = |reason| Error::AuditLogRefused { path: path.to_path_buf(), reason };
    let not_an_audit_log = |detail: String| refuse(AuditRefusal::NotAnAuditLog { detail });

    let (complete, fragment) = if len == 0 { (0, Vec::new()) } else { line_ending_at(file, len).map_err(io_error)? };
    let mut last: Option<AuditEntry> = None;
    if complete > 0 {
        if whole {
            let first = first_line(file, complete).map_err(io_error)?;
            entry_of(&first).map_err(|e| not_an_audit_log(format!("its first line is not an audit entry ({e})")))?;
        }
        let (_, line) = line_ending_at(file, complete - 1).map_err(io_error)?;
        let entry =
            entry_of(&line).map_err(|e| not_an_audit_log(format!("its last line is not an audit entry ({e})")))?;
        last = Some(entry);
    }
    let fragment = if fragment.is_empty() {
        Fragment::None
    } else if let Ok(entry) = entry_of(&fragment) {
        last = Some(entry);
        Fragment::Complete
    } else if complete == 0 && !looks_torn(&fragment) {
        return Err(not_an_audit_log("its only line is not an audit entry".to_string()));
    } else {
        Fragment::Torn(fragment)
    };
    if let Some(entry) = &last
        && !signer.verifies(&entry.hash, &entry.signature)
    {
        return Err(refuse(AuditRefusal::WrongKey { seq: entry.seq }));
    }
    let (seq, hash) = last.map_or_else(|| (0, GENESIS_HASH.to_string()), |e| (e.seq, e.hash));
    let torn = matches!(&fragment, Fragment::Torn(bytes) if torn_entry(bytes, seq + 1));
    match head {
        // Without `sync`, a machine crash can save the head of an entry but not the whole entry:
        // the torn line is that entry. (It is set aside below, and the head moved back.)
        HeadFile::Valid(h) if h.seq == seq + 1 && torn => {}
        HeadFile::Valid(h) if h.seq > seq => {
            return Err(refuse(AuditRefusal::ShorterThanHead { log_seq: seq, head_seq: h.seq }));
        }
        HeadFile::Valid(h) if h.seq == seq && h.hash != hash => {
            return Err(refuse(AuditRefusal::HeadMismatch { seq }));
        }
        HeadFile::Invalid { detail, .. } => return Err(refuse(AuditRefusal::BadHead { detail: detail.clone() })),
        _ => {}
    }

    let write_error =
        |what: &str, source| Error::Io { context: format!("{what} audit log {}", path.display()), source };
    let len = match fragment {
        Fragment::None => len,
        Fragment::Complete => {
            let mut file = file;
            file.write_all(b"\n").map_err(|e| write_error("ending the last line of", e))?;
            len + 1
        }
        Fragment::Torn(bytes) => {
            let aside = set_aside(path, &bytes).map_err(|e| write_error("setting aside the torn last line of", e))?;
            file.set_len(complete).map_err(|e| write_error("cutting the torn last line from", e))?;
            tracing::warn!(
                path = %path.display(),
                set_aside = %aside.display(),
                bytes = bytes.len(),
                last_seq = seq,
                "the audit log ended in a torn line (an interrupted write); set it aside and cut the log back \
                 to its last whole entry"
            );
            complete
        }
    };
    Ok(Tail { len, seq, hash })
}

/// Whether the bytes after the last newline can be a line this log began to write (or the zeros a
/// crash can leave at the end of a file), rather than some other file's text.
fn looks_torn(fragment: &[u8]) -> bool {
    fragment.starts_with(LINE_START) || LINE_START.starts_with(fragment) || fragment.iter().all(|&b| b == 0)
}

/// Whether a torn line can be the start of the entry with this `seq` (or zeros).
fn torn_entry(fragment: &[u8], seq: u64) -> bool {
    let start = format!("{{\"seq\":{seq},");
    fragment.starts_with(start.as_bytes()) || start.as_bytes().starts_with(fragment) || fragment.iter().all(|&b| b == 0)
}

/// Parses a line as an entry.
fn entry_of(line: &[u8]) -> Result<AuditEntry, String> {
    let value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    AuditEntry::from_json(value)
}

/// Writes a torn line's bytes to a new file beside the log, `FILE.torn-TIMESTAMP`; returns its path.
fn set_aside(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ").to_string();
    let mut n = 0u32;
    loop {
        let mut name = path.as_os_str().to_os_string();
        name.push(format!(".torn-{stamp}"));
        if n > 0 {
            name.push(format!("-{n}"));
        }
        let aside = PathBuf::from(name);
        match OpenOptions::new().write(true).create_new(true).open(&aside) {
            Ok(mut file) => {
                file.write_all(bytes)?;
                file.sync_all()?;
                return Ok(aside);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The files torn lines of the log at `path` were set aside in, sorted (oldest first).
fn set_aside_files(path: &Path) -> Vec<PathBuf> {
    let (Some(name), dir) = (path.file_name(), path.parent()) else { return Vec::new() };
    let dir = match dir {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = name.to_os_string();
    prefix.push(".torn-");
    let prefix = prefix.as_encoded_bytes().to_vec();
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().as_encoded_bytes().starts_with(&prefix))
        .map(|e| path.with_file_name(e.file_name()))
        .collect();
    found.sort();
    found
}

/// The first line of the file (without its newline), which ends before `limit`.
fn first_line(file: &File, limit: u64) -> io::Result<Vec<u8>> {
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    BufReader::new(file.take(limit)).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

/// The line that ends at `end` (exclusive, before its newline): its start and bytes.
fn line_ending_at(file: &File, end: u64) -> io::Result<(u64, Vec<u8>)> {
    let mut data: Vec<u8> = Vec::new();
    let mut pos = end;
    let mut step = TAIL_CHUNK;
    while pos > 0 {
        let from = pos.saturating_sub(step);
        let mut chunk = vec![0u8; (pos - from) as usize];
        read_at(file, from, &mut chunk)?;
        if let Some(nl) = chunk.iter().rposition(|&b| b == b'\n') {
            chunk.drain(..=nl);
            chunk.extend_from_slice(&data);
            return Ok((from + nl as u64 + 1, chunk));
        }
        chunk.extend_from_slice(&data);
        data = chunk;
        pos = from;
        step = step.saturating_mul(2);
    }
    Ok((0, data))
}

fn read_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("loom-audit-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn lines_are_found_backwards_across_chunks() {
        let path = temp("tail");
        let long = "x".repeat(3 * TAIL_CHUNK as usize);
        let text = format!("first\n{long}\n{{\"seq\":3,\"ha");
        std::fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        let (start, fragment) = line_ending_at(&file, text.len() as u64).unwrap();
        assert_eq!(fragment, b"{\"seq\":3,\"ha");
        assert!(looks_torn(&fragment));
        let (start, line) = line_ending_at(&file, start - 1).unwrap();
        assert_eq!((start, line.len()), (6, long.len()));
        assert_eq!(line_ending_at(&file, start - 1).unwrap(), (0, b"first".to_vec()));
        assert_eq!(first_line(&file, text.len() as u64).unwrap(), b"first");
        assert!(looks_torn(b"{\"se") && looks_torn(&[0, 0]) && !looks_torn(b"root:x:0:0"));
        let _ = std::fs::remove_file(&path);
    }
}
