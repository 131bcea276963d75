//! Checking a signed audit chain and naming what is wrong with it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use std::path::PathBuf;

use serde_json::Value;

use super::{AuditEntry, AuditHead, GENESIS_HASH, Signer};

/// What verification found wrong with one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemKind {
    /// The entry's content does not match its hash: it was changed after it was written.
    Edited,
    /// Entries are missing before this one (a `seq` gap; its `prev_hash` names an absent entry).
    Dropped,
    /// The entry is not where its `seq` says it belongs.
    Reordered,
    /// The entry is not part of the chain: a forged entry (not signed with the secret, or not
    /// linked to its neighbours), a duplicate `seq`, or a fork in the chain.
    Inserted,
    /// The entry fits the chain but its signature does not verify (on every entry: the wrong secret).
    BadSignature,
    /// The line is not an audit entry: broken JSON (such as a truncated last line), a missing field.
    Malformed,
    /// The log is shorter than its head: it ends before the `seq` its head names, so entries were
    /// cut from its end (or the file was emptied). Reported against the head, at line 0.
    Truncated,
    /// The log's entry at its head's `seq` has another hash than the head names (the log was
    /// rewritten), or the head file is not a head. Reported against the head, at line 0.
    HeadMismatch,
}

impl ProblemKind {
    /// The kind in snake case: `edited`, `dropped`, `reordered`, `inserted`, `bad_signature`,
    /// `malformed`, `truncated`, `head_mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Edited => "edited",
            ProblemKind::Dropped => "dropped",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Inserted => "inserted",
            ProblemKind::BadSignature => "bad_signature",
            ProblemKind::Malformed => "malformed",
            ProblemKind::Truncated => "truncated",
            ProblemKind::HeadMismatch => "head_mismatch",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem, at one line, or with the log's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The line in the file (from 1); for an in-memory log, the entry's position (from 1); 0 for a
    /// problem with the log's head (its head file, or an expected head), shown as `head: …`.
    pub line: usize,
    /// The entry's `seq`, when the line has one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: ProblemKind,
    /// Why, in words.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            _ if self.line == 0 => write!(f, "head: {}: {}", self.kind, self.detail),
            Some(seq) => write!(f, "line {} (seq {seq}): {}: {}", self.line, self.kind, self.detail),
            None => write!(f, "line {}: {}: {}", self.line, self.kind, self.detail),
        }
    }
}

/// What verifying an audit chain found.
///
/// Verification works in three passes:
///
/// 1. Each line on its own: it must parse as an entry (else [`ProblemKind::Malformed`]); its
///    content must hash to its `hash` (else the entry was **edited**), and its `signature` must be
///    the HMAC of its `hash` under the secret.
/// 2. The chain, in `seq` order. When several entries claim one `seq`, the one that is signed,
///    links to the previous entry and comes first in the file is the chain's; the others were
///    **inserted** (a forged entry or a replayed copy). A `seq` gap is a **dropped** range, reported
///    at the entry after it. An entry whose signature fails is [`ProblemKind::BadSignature`] when it
///    otherwise fits the chain (both its `prev_hash` and the next entry's link hold: the usual sign
///    of a wrong secret), **edited** when its content was changed (or changed and re-hashed, so
///    that the next entry no longer links to it), and **inserted** when it does not link to the
///    chain at all. A signed entry whose `prev_hash` does not match its predecessor (with no gap
///    and no edit to explain it) forks the chain: **inserted**.
/// 3. The order: among the chain's entries, those off the longest run of file positions with
///    increasing `seq` were **reordered**; for two swapped lines that is the first of the two.
/// 4. The head, when there is one to check against (the signed head file a
///    [`FileAuditLog`](crate::governance::FileAuditLog) keeps beside the log, or an
///    [`AuditHead`] kept elsewhere): a log that ends before the head's `seq` was **truncated**
///    ([`ProblemKind::Truncated`], "log shorter than its head"); one whose entry at that `seq` has
///    another hash was rewritten ([`ProblemKind::HeadMismatch`]). These problems are at line 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Well-formed entries read.
    pub entries: usize,
    /// What is wrong, by line. Empty when the chain is intact.
    pub problems: Vec<Problem>,
    /// The highest `seq` in the chain.
    pub last_seq: Option<u64>,
    /// The hash of the entry with the highest `seq`: the head to keep elsewhere, so that a cut-off
    /// tail can be noticed later ([`VerifyReport::head`]).
    pub last_hash: Option<String>,
    /// The signed head read from the head file beside the log, when there was a valid one; the log
    /// was checked against it. `None` for a log without a head file (or an in-memory log).
    pub head_file: Option<AuditHead>,
    /// Torn last lines (interrupted writes) that [`FileAuditLog`](crate::governance::FileAuditLog)
    /// set aside from this log: the files beside it that hold their bytes. They were never part
    /// of the chain, and are not problems.
    pub set_aside: Vec<PathBuf>,
}

impl VerifyReport {
    /// Whether no problem was found.
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems of one kind.
    pub fn of_kind(&self, kind: ProblemKind) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(move |p| p.kind == kind)
    }

    /// The chain's head: its last `seq` and hash ([`AuditHead::genesis`] for a log without
    /// entries). Keep it somewhere else and pass it to
    /// [`FileAuditLog::verify_with_head`](crate::governance::FileAuditLog::verify_with_head) later
    /// to notice a cut-off tail, even one cut together with the head file.
    pub fn head(&self) -> AuditHead {
        match (self.last_seq, &self.last_hash) {
            (Some(seq), Some(hash)) => AuditHead { seq, hash: hash.clone() },
            _ => AuditHead::genesis(),
        }
    }
}

/// A head to check a chain against, and where it came from (named in the problem's detail).
pub(crate) struct HeadCheck<'h> {
    pub head: &'h AuditHead,
    pub source: &'h str,
}

/// What the chain pass needs of one well-formed entry.
struct Checked {
    line: usize,
    seq: u64,
    prev_hash: String,
    hash: String,
    content_ok: bool,
    sig_ok: bool,
}

/// Collects entries (pass 1) and checks the chain and order when finished (passes 2 and 3).
pub(crate) struct Verifier<'a> {
    signer: &'a Signer,
    items: Vec<Checked>,
    problems: Vec<Problem>,
}

impl<'a> Verifier<'a> {
    pub fn new(signer: &'a Signer) -> Self {
        Verifier { signer, items: Vec::new(), problems: Vec::new() }
    }

    /// One line of a JSONL file (without its newline).
    pub fn push_line(&mut self, line: usize, bytes: &[u8]) {
        let malformed = |seq, detail: String| Problem { line, seq, kind: ProblemKind::Malformed, detail };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            self.problems.push(malformed(None, "empty line".into()));
            return;
        }
        let value: Value = match serde_json::from_slice(bytes) {
            Ok(value) => value,
            Err(e) => {
                self.problems.push(malformed(None, format!("not JSON ({e}); a truncated write?")));
                return;
            }
        };
        let seq = value.get("seq").and_then(Value::as_u64);
        match AuditEntry::from_json(value) {
            Ok(entry) => self.push_entry(line, &entry),
            Err(e) => self.problems.push(malformed(seq, e)),
        }
    }

    /// A problem with the log's head file (reported at line 0).
    pub fn push_head_problem(&mut self, kind: ProblemKind, detail: String) {
        self.problems.push(Problem { line: 0, seq: None, kind, detail });
    }

    /// A record that could not be read as an entry, or a line known to be torn.
    pub fn push_malformed(&mut self, line: usize, seq: Option<u64>, detail: String) {
        self.problems.push(Problem { line, seq, kind: ProblemKind::Malformed, detail });
    }

    /// One parsed entry.
    pub fn push_entry(&mut self, line: usize, entry: &AuditEntry) {
        let content_ok = entry.compute_hash() == entry.hash;
        let sig_ok = self.signer.verifies(&entry.hash, &entry.signature);
        self.items.push(Checked {
            line,
            seq: entry.seq,
            prev_hash: entry.prev_hash.clone(),
            hash: entry.hash.clone(),
            content_ok,
            sig_ok,
        });
    }

    pub fn finish(self) -> VerifyReport {
        self.finish_with_heads(&[])
    }

    /// Passes 2 and 3, then the check of the chain against each head (pass 4).
    pub fn finish_with_heads(self, heads: &[HeadCheck<'_>]) -> VerifyReport {
        let Verifier { items, mut problems, .. } = self;
        let mut report = |i: usize, kind: ProblemKind, detail: String| {
            problems.push(Problem { line: items[i].line, seq: Some(items[i].seq), kind, detail });
        };

        // Pass 2a: one entry per seq joins the chain; the others were inserted.
        let mut by_seq: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            by_seq.entry(item.seq).or_default().push(i);
        }
        let mut chain: Vec<usize> = Vec::with_capacity(by_seq.len());
        let mut inserted = vec![false; items.len()];
        for (&seq, candidates) in &by_seq {
            let target = match chain.last() {
                Some(&p) if items[p].seq + 1 == seq => Some(items[p].hash.as_str()),
                None if seq == 1 => Some(GENESIS_HASH),
                _ => None,
            };
            let rank = |&i: &usize| {
                let it = &items[i];
                (it.sig_ok, target == Some(it.prev_hash.as_str()), it.content_ok, std::cmp::Reverse(i))
            };
            let Some(&chosen) = candidates.iter().max_by_key(|i| rank(i)) else { continue };
            for &other in candidates.iter().filter(|&&i| i != chosen) {
                inserted[other] = true;
                let copy = items[other].hash == items[chosen].hash;
                let mut detail = if copy {
                    format!("a copy of the entry at line {}", items[chosen].line)
                } else {
                    format!("a second entry with seq {seq}; the chain's is at line {}", items[chosen].line)
                };
                if !items[other].sig_ok {
                    detail.push_str(", and its signature does not verify");
                }
                report(other, ProblemKind::Inserted, detail);
            }
            chain.push(chosen);
        }

        // Pass 2b: walk the chain in seq order.
        let mut flagged = vec![false; items.len()];
        for (k, &i) in chain.iter().enumerate() {
            let it = &items[i];
            let prev = k.checked_sub(1).map(|j| chain[j]);
            let expected_seq = prev.map_or(1, |p| items[p].seq + 1);
            let expected_prev = prev.map_or(GENESIS_HASH, |p| items[p].hash.as_str());
            let gap = it.seq > expected_seq;
            if gap {
                let missing = if it.seq - 1 == expected_seq {
                    format!("seq {expected_seq} is missing")
                } else {
                    format!("seq {expected_seq} to {} are missing", it.seq - 1)
                };
                let after = match prev {
                    Some(p) => format!("after seq {} (line {})", items[p].seq, items[p].line),
                    None => "at the start of the log".to_string(),
                };
                report(i, ProblemKind::Dropped, format!("{missing} {after}"));
            }
            let prev_links = gap || it.prev_hash == expected_prev;
            let next_links = match chain.get(k + 1) {
                Some(&n) => items[n].seq != it.seq + 1 || items[n].prev_hash == it.hash,
                None => true,
            };
            let problem = if !it.sig_ok {
                if !it.content_ok {
                    Some((
                        ProblemKind::Edited,
                        "its content does not match its hash, and its signature does not verify",
                    ))
                } else if prev_links && next_links {
                    Some((ProblemKind::BadSignature, "its signature does not verify with this secret"))
                } else if prev_links {
                    Some((
                        ProblemKind::Edited,
                        "it was re-hashed after a change: the next entry's prev_hash no longer matches, \
                         and its signature does not verify",
                    ))
                } else {
                    Some((ProblemKind::Inserted, "not signed with this secret, and its prev_hash fits no entry"))
                }
            } else if !it.content_ok {
                Some((ProblemKind::Edited, "its content does not match its hash: it was changed after it was signed"))
            } else if !prev_links && !prev.is_some_and(|p| flagged[p]) {
                Some((ProblemKind::Inserted, "its prev_hash does not match the previous entry's hash: the chain forks"))
            } else {
                None
            };
            if let Some((kind, detail)) = problem {
                flagged[i] = true;
                report(i, kind, detail.to_string());
            }
        }

        // Pass 3: entries off the longest increasing (by seq) run of file positions were moved.
        let mut order: Vec<usize> = chain.iter().copied().filter(|&i| !inserted[i]).collect();
        order.sort_unstable();
        let in_run = longest_increasing(&order, |i| items[i].seq);
        let line_of: HashMap<u64, usize> = order.iter().map(|&i| (items[i].seq, items[i].line)).collect();
        for (p, &i) in order.iter().enumerate() {
            if in_run[p] {
                continue;
            }
            let seq = items[i].seq;
            let detail = match seq.checked_sub(1).and_then(|s| line_of.get(&s).map(|l| (s, l))) {
                Some((before, line)) => format!("out of order: it belongs after seq {before}, which is at line {line}"),
                None => "out of order".to_string(),
            };
            report(i, ProblemKind::Reordered, detail);
        }

        // Pass 4: the chain against its heads.
        let last_seq = chain.last().map_or(0, |&i| items[i].seq);
        for HeadCheck { head, source } in heads {
            let head_problem = |kind, detail| Problem { line: 0, seq: Some(head.seq), kind, detail };
            if head.seq == 0 {
                if head.hash != GENESIS_HASH {
                    let detail = format!("{source} is at seq 0 but does not name the genesis hash");
                    problems.push(head_problem(ProblemKind::HeadMismatch, detail));
                }
            } else if head.seq > last_seq {
                let ends = if chain.is_empty() {
                    "it has no entries".to_string()
                } else {
                    format!("it ends at seq {last_seq}")
                };
                let detail = format!(
                    "log shorter than its head: {ends}, {source} is at seq {}: entries were cut from its end",
                    head.seq
                );
                problems.push(head_problem(ProblemKind::Truncated, detail));
            } else if let Some(&i) = chain.iter().find(|&&i| items[i].seq == head.seq)
                && items[i].hash != head.hash
            {
                let detail = format!(
                    "the entry at seq {} (line {}) has hash {}, {source} names {}: the log was rewritten",
                    head.seq, items[i].line, items[i].hash, head.hash
                );
                problems.push(head_problem(ProblemKind::HeadMismatch, detail));
            }
            // A head whose seq is missing from the chain: that gap is reported as dropped.
        }

        let head = chain.last().map(|&i| &items[i]);
        problems.sort_by_key(|p| (p.line == 0, p.line, p.kind));
        VerifyReport {
            entries: items.len(),
            problems,
            last_seq: head.map(|h| h.seq),
            last_hash: head.map(|h| h.hash.clone()),
            head_file: None,
            set_aside: Vec::new(),
        }
    }
}

/// Marks the positions of one longest strictly increasing subsequence of `key` over `order`
/// (patience sorting, O(n log n)).
fn longest_increasing(order: &[usize], key: impl Fn(usize) -> u64) -> Vec<bool> {
    let mut tails: Vec<usize> = Vec::new();
    let mut back: Vec<Option<usize>> = vec![None; order.len()];
    for (p, &i) in order.iter().enumerate() {
        let k = key(i);
        let at = tails.partition_point(|&t| key(order[t]) < k);
        back[p] = at.checked_sub(1).map(|a| tails[a]);
        if at == tails.len() {
            tails.push(p);
        } else {
            tails[at] = p;
        }
    }
    let mut marked = vec![false; order.len()];
    let mut cursor = tails.last().copied();
    while let Some(p) = cursor {
        marked[p] = true;
        cursor = back[p];
    }
    marked
}
