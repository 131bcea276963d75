//! The head of an audit chain, and the signed head file a file audit log keeps beside itself.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::{GENESIS_HASH, ProblemKind, Signer};

/// The head of an audit chain: the `seq` of its last entry and that entry's `hash`. A log without
/// entries has the [genesis](AuditHead::genesis) head, seq 0.
///
/// A chain cannot show by itself that entries were cut from its end; a head kept elsewhere can.
/// [`FileAuditLog`](crate::governance::FileAuditLog) keeps a signed one beside the log
/// (`FILE.head`), and [`VerifyReport::head`](super::VerifyReport::head) gives the head of a
/// verified log, to store somewhere the log's writer cannot reach.
///
/// Written and parsed as `SEQ:HASH` (`42:3f…`, the hash in lowercase hex), as `loom audit head`
/// prints it and `loom audit verify --head` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuditHead {
    /// The last entry's `seq` (0 for no entry).
    pub seq: u64,
    /// The last entry's `hash` ([`GENESIS_HASH`] for no entry).
    pub hash: String,
}

impl AuditHead {
    /// The head of a log without entries: seq 0, [`GENESIS_HASH`].
    pub fn genesis() -> AuditHead {
        AuditHead { seq: 0, hash: GENESIS_HASH.to_string() }
    }
}

impl fmt::Display for AuditHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl FromStr for AuditHead {
    type Err = crate::Error;

    /// Parses `SEQ:HASH`; the hash is 64 hex digits, in either case.
    fn from_str(text: &str) -> Result<AuditHead, crate::Error> {
        let bad = |why: &str| crate::Error::Config(format!("`{text}` is not an audit head (SEQ:HASH): {why}"));
        let (seq, hash) = text.trim().split_once(':').ok_or_else(|| bad("no `:`"))?;
        let seq: u64 = seq.trim().parse().map_err(|_| bad("SEQ is not a number"))?;
        let hash = hash.trim();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("HASH is not 64 hex digits"));
        }
        Ok(AuditHead { seq, hash: hash.to_ascii_lowercase() })
    }
}

/// The width of one slot of a head file, newline included.
pub(crate) const HEAD_SLOT: usize = 192;

/// At most this much of a head file is read.
const HEAD_READ_LIMIT: u64 = 4096;

/// The head file of the audit log at `log`: the log's path with `.head` appended.
pub(crate) fn head_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(".head");
    PathBuf::from(name)
}

/// What a head file holds.
pub(crate) enum HeadFile {
    /// There is no head file.
    Missing,
    /// The file holds no head (just created, or only blank slots).
    Empty,
    /// The newest head signed with the key.
    Valid(AuditHead),
    /// Something that is no head signed with the key.
    Invalid {
        /// [`ProblemKind::BadSignature`] for a head signed with another key, else
        /// [`ProblemKind::HeadMismatch`].
        kind: ProblemKind,
        detail: String,
    },
}

impl Signer {
    /// The hex signature of a head: HMAC-SHA256 of `loom-audit-head:SEQ:HASH`. (Not the bare hash,
    /// which entries sign: an entry's signature is no head.)
    pub fn sign_head(&self, seq: u64, hash: &str) -> String {
        self.sign(&head_message(seq, hash))
    }

    fn verifies_head(&self, seq: u64, hash: &str, signature: &str) -> bool {
        self.verifies(&head_message(seq, hash), signature)
    }
}

fn head_message(seq: u64, hash: &str) -> String {
    format!("loom-audit-head:{seq}:{hash}")
}

/// The slot of a head: `{"seq":N,"hash":"…","signature":"…"}` padded with spaces to
/// [`HEAD_SLOT`] bytes, the last one a newline.
pub(crate) fn head_slot(signer: &Signer, seq: u64, hash: &str) -> Vec<u8> {
    let signature = signer.sign_head(seq, hash);
    let mut line = format!("{{\"seq\":{seq},\"hash\":\"{hash}\",\"signature\":\"{signature}\"}}").into_bytes();
    line.resize(HEAD_SLOT - 1, b' ');
    line.push(b'\n');
    line
}

/// Writes the head for `seq` into its slot (seq 1 into the second, 2 into the first, …), so that
/// the slot of the previous head stays whole whatever happens to this write.
pub(crate) fn write_head(file: &File, signer: &Signer, seq: u64, hash: &str) -> io::Result<()> {
    let slot = head_slot(signer, seq, hash);
    let at = (seq % 2) * HEAD_SLOT as u64;
    // One positioned write (`pwrite`), not a seek and a write: two system calls per append.
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, &slot, at)
    }
    #[cfg(not(unix))]
    {
        let mut file = file;
        file.seek(SeekFrom::Start(at))?;
        file.write_all(&slot)
    }
}

/// Rewrites the whole head file to hold the head for `seq` only (no head for seq 0): for moving the
/// head back, which a single slot write cannot do (the other slot may hold a newer head).
pub(crate) fn reset_head(file: &File, signer: &Signer, seq: u64, hash: &str) -> io::Result<()> {
    let mut blank = vec![b' '; HEAD_SLOT - 1];
    blank.push(b'\n');
    let mut slots = [blank.clone(), blank];
    if seq > 0 {
        slots[(seq % 2) as usize] = head_slot(signer, seq, hash);
    }
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&slots.concat())
}

/// Reads the head file at `path`.
pub(crate) fn read_head_at(path: &Path, signer: &Signer) -> io::Result<HeadFile> {
    match File::open(path) {
        Ok(file) => read_head(&file, signer),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(HeadFile::Missing),
        Err(e) => Err(e),
    }
}

/// Reads an open head file from its start.
pub(crate) fn read_head(file: &File, signer: &Signer) -> io::Result<HeadFile> {
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    let mut bytes = Vec::with_capacity(2 * HEAD_SLOT);
    file.take(HEAD_READ_LIMIT).read_to_end(&mut bytes)?;
    Ok(parse_head(&bytes, signer))
}

/// The newest head signed with the key among the slots.
pub(crate) fn parse_head(bytes: &[u8], signer: &Signer) -> HeadFile {
    #[derive(serde::Deserialize)]
    struct Slot {
        seq: u64,
        hash: String,
        signature: String,
    }
    let mut best: Option<AuditHead> = None;
    let mut unsigned = false;
    let mut garbage = false;
    for piece in bytes.split(|&b| b == b'\n') {
        // Around a slot: its padding, and the zeros of a slot never written (a hole).
        let blank = |b: &u8| b.is_ascii_whitespace() || *b == 0;
        let start = piece.iter().position(|b| !blank(b)).unwrap_or(piece.len());
        let end = piece.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
        let piece = &piece[start..end.max(start)];
        if piece.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Slot>(piece) {
            Ok(slot) if signer.verifies_head(slot.seq, &slot.hash, &slot.signature) => {
                if best.as_ref().is_none_or(|b| slot.seq > b.seq) {
                    best = Some(AuditHead { seq: slot.seq, hash: slot.hash });
                }
            }
            Ok(_) => unsigned = true,
            Err(_) => garbage = true,
        }
    }
    match best {
        Some(head) => HeadFile::Valid(head),
        None if unsigned => HeadFile::Invalid {
            kind: ProblemKind::BadSignature,
            detail: "the head file's signature does not verify with this secret".into(),
        },
        None if garbage => {
            HeadFile::Invalid { kind: ProblemKind::HeadMismatch, detail: "the head file holds no head".into() }
        }
        None => HeadFile::Empty,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn heads_parse_and_print_as_seq_colon_hash() {
        let hash = "Ab".repeat(32);
        let head: AuditHead = format!(" 7:{hash} ").parse().unwrap();
        assert_eq!(head, AuditHead { seq: 7, hash: hash.to_ascii_lowercase() });
        assert_eq!(head.to_string(), format!("7:{}", hash.to_ascii_lowercase()));
        assert_eq!(AuditHead::genesis().to_string(), format!("0:{GENESIS_HASH}"));
        for bad in ["", "7", &hash, "x:ab", &format!("7:{}", &hash[1..]), &format!("-1:{hash}")] {
            assert!(bad.parse::<AuditHead>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_newest_signed_slot_wins_and_a_torn_slot_is_skipped() {
        let signer = Signer::new(b"head-test-secret").unwrap();
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        let mut file = head_slot(&signer, 2, &a);
        file.extend(head_slot(&signer, 3, &b));
        assert_eq!(file.len(), 2 * HEAD_SLOT);
        assert!(matches!(parse_head(&file, &signer), HeadFile::Valid(h) if h.seq == 3 && h.hash == b));
        // The slot of seq 3 torn half-way: the previous head stands.
        file.truncate(HEAD_SLOT + 40);
        assert!(matches!(parse_head(&file, &signer), HeadFile::Valid(h) if h.seq == 2 && h.hash == a));
        // Another key's head.
        let other = Signer::new(b"another-secret!!").unwrap();
        assert!(matches!(parse_head(&file, &other), HeadFile::Invalid { kind: ProblemKind::BadSignature, .. }));
        // A hole before the first slot written, and nothing at all.
        let mut holed = vec![0u8; HEAD_SLOT];
        holed.extend(head_slot(&signer, 1, &a));
        assert!(matches!(parse_head(&holed, &signer), HeadFile::Valid(h) if h.seq == 1));
        assert!(matches!(parse_head(b"", &signer), HeadFile::Empty));
        assert!(matches!(parse_head(b"root:x:0:0\n", &signer), HeadFile::Invalid { .. }));
        // An entry's signature (HMAC of the bare hash) is no head signature.
        let forged = format!("{{\"seq\":5,\"hash\":\"{a}\",\"signature\":\"{}\"}}", signer.sign(&a));
        assert!(matches!(parse_head(forged.as_bytes(), &signer), HeadFile::Invalid { .. }));
    }
}
