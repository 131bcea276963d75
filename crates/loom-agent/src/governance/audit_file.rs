//! [`FileAuditLog`]: the signed audit chain in an append-only JSONL file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};

use super::audit::{GENESIS_HASH, Prepared, Signer, Verifier, VerifyReport, now_rfc3339, sha256_hex};
use super::{AuditLog, AuditRecord};
use crate::Error;

/// How far back a tail read starts; doubled until a whole line is found.
const TAIL_CHUNK: u64 = 8 * 1024;

/// An audit log in a JSONL file: one signed, hash-chained [`AuditEntry`](super::AuditEntry) per
/// line (the format is documented there), payloads redacted first ([`redact`](super::redact)).
/// [`FileAuditLog::verify`] checks a file.
///
/// # Appending, across threads and processes
///
/// Every append takes an exclusive lock on the file ([`File::lock`], `flock` on Unix), reads the
/// last entry's `seq` and `hash`, writes the new line with one `write` in append mode and unlocks.
/// So any number of tasks, [`FileAuditLog`] values and processes appending to one file keep one
/// valid chain. Redaction and serialization of the payload happen first, outside the locks.
///
/// Where the write runs: when the log's in-process mutex and the file lock are both free
/// (`try_lock`) and `sync` is off, the append is done right away on the calling task: one `fstat`,
/// one `write` to the page cache, no waiting (about 5 µs in release builds, against 10 to 20 µs for
/// the hop to the blocking pool). Whenever either lock is held by another writer, or with
/// [`FileAuditLog::sync`], the append goes to tokio's blocking pool
/// ([`tokio::task::spawn_blocking`]), so a runtime thread never waits for another writer or for the
/// disk. [`FileAuditLog::write_inline`]`(false)` sends every append to the blocking pool.
///
/// Reading the last entry is cheap: each log remembers the file's length, `seq` and `hash` after
/// its own last append. If the length is unchanged under the lock, nobody else appended and the
/// remembered values are used; otherwise only the tail is read, backwards from the end, until a
/// complete entry is found. A torn last line (a crash mid-write) is ended with a newline and
/// skipped: the chain goes on from the last whole entry, and [`FileAuditLog::verify`] reports the
/// torn line as malformed.
///
/// # Durability
///
/// By default `append` returns once the line was written to the operating system (it survives
/// the process crashing, not the machine). With [`FileAuditLog::sync`] it also waits for
/// `fdatasync`, at the cost of a disk flush per append.
///
/// The file is opened once; rotating or replacing it underneath a running log is not supported,
/// nor is anything but appending to it.
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
    /// The file's length, last `seq` and `hash` after this log's last append.
    tail: Option<Tail>,
}

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
    /// not be empty (use a random key of 32 bytes or more).
    pub fn open(path: impl AsRef<Path>, secret: impl AsRef<[u8]>) -> Result<FileAuditLog, Error> {
        let path = path.as_ref().to_path_buf();
        let signer = Signer::new(secret.as_ref())?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|source| Error::Io { context: format!("opening audit log {}", path.display()), source })?;
        let state = Mutex::new(State { file, tail: None });
        Ok(FileAuditLog { inner: Arc::new(Inner { path, signer, state }), sync: false, inline: true })
    }

    /// Whether each append waits for the line to reach the disk (`fdatasync`); default `false`.
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

    /// Checks the audit file at `path`: every entry's hash and signature, the chain, the order.
    /// Fails only when the file cannot be read; what is wrong with it is in the report.
    pub fn verify(path: impl AsRef<Path>, secret: impl AsRef<[u8]>) -> Result<VerifyReport, Error> {
        let path = path.as_ref();
        let io_error = |source| Error::Io { context: format!("reading audit log {}", path.display()), source };
        let signer = Signer::new(secret.as_ref())?;
        let mut reader = BufReader::new(File::open(path).map_err(io_error)?);
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
            }
            verifier.push_line(line, &buf);
        }
        Ok(verifier.finish())
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
        if written.is_err() {
            state.tail = None;
        }
        let unlocked = state.file.unlock();
        written.map_err(|e| self.io_error("appending to", e))?;
        unlocked.map_err(|e| self.io_error("unlocking", e))
    }

    fn io_error(&self, what: &str, source: io::Error) -> Error {
        Error::Io { context: format!("{what} audit log {}", self.path().display()), source }
    }

    fn write_locked(&self, state: &mut State, prepared: &Prepared) -> io::Result<()> {
        let len = state.file.metadata()?.len();
        let (torn, seq, prev_hash) = match state.tail.take() {
            Some(tail) if tail.len == len => (false, tail.seq, tail.hash),
            _ => {
                let scan = read_tail(&state.file, len)?;
                let (seq, hash) = scan.last.unwrap_or_else(|| (0, GENESIS_HASH.to_string()));
                (scan.torn, seq, hash)
            }
        };
        let seq = seq + 1;
        let at = now_rfc3339();
        let fields = prepared.fields(seq, &at, &prev_hash);
        let hash = sha256_hex(&fields.content());
        let signature = self.inner.signer.sign(&hash);
        let mut line = String::with_capacity(prepared.payload_json.len() + 400);
        if torn {
            line.push('\n');
        }
        fields.write_line(&mut line, &hash, &signature);
        line.push('\n');
        (&state.file).write_all(line.as_bytes())?;
        if self.sync {
            state.file.sync_data()?;
        }
        state.tail = Some(Tail { len: len + line.len() as u64, seq, hash });
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

/// What the end of an audit file holds.
struct TailScan {
    /// Whether the file ends in a line without its newline (a torn write).
    torn: bool,
    /// The `seq` and `hash` of the last whole entry.
    last: Option<(u64, String)>,
}

/// Reads backwards from `len` to the last line that is an entry.
fn read_tail(file: &File, len: u64) -> io::Result<TailScan> {
    if len == 0 {
        return Ok(TailScan { torn: false, last: None });
    }
    let mut last_byte = [0u8; 1];
    read_at(file, len - 1, &mut last_byte)?;
    let torn = last_byte[0] != b'\n';
    let mut end = if torn { len } else { len - 1 };
    while end > 0 {
        let (start, line) = line_ending_at(file, end)?;
        if let Some(found) = seq_and_hash(&line) {
            // A whole entry without its newline still counts: it parses, so it was fully written.
            return Ok(TailScan { torn, last: Some(found) });
        }
        if start == 0 {
            break;
        }
        end = start - 1;
    }
    Ok(TailScan { torn, last: None })
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

/// The `seq` and `hash` of a line, if it is an entry.
fn seq_and_hash(line: &[u8]) -> Option<(u64, String)> {
    #[derive(serde::Deserialize)]
    struct Head {
        seq: u64,
        hash: String,
    }
    let head: Head = serde_json::from_slice(line).ok()?;
    (head.hash.len() == 64 && head.hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((head.seq, head.hash))
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
    fn the_tail_is_found_across_chunks_and_past_torn_lines() {
        let path = temp("tail");
        let hash = "ab".repeat(32);
        let long = "x".repeat(3 * TAIL_CHUNK as usize);
        let text = format!(
            "{{\"seq\":1,\"hash\":\"{hash}\"}}\n{{\"seq\":2,\"pad\":\"{long}\",\"hash\":\"{hash}\"}}\n{{\"seq\":3,\"ha"
        );
        std::fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        let scan = read_tail(&file, text.len() as u64).unwrap();
        assert!(scan.torn);
        assert_eq!(scan.last, Some((2, hash.clone())));
        let cut = text.rfind("{\"seq\":3").unwrap();
        let scan = read_tail(&file, cut as u64).unwrap();
        assert!(!scan.torn);
        assert_eq!(scan.last, Some((2, hash)));
        assert_eq!(read_tail(&file, 0).unwrap().last, None);
        let scan = read_tail(&file, 5).unwrap();
        assert_eq!(scan.last, None, "a lone fragment is no entry");
        let _ = std::fs::remove_file(&path);
    }
}
