//! The audit log: an append-only record of what runs did, and a signed hash chain to keep it in
//! (the format is documented on [`AuditEntry`], the redaction rules on [`redact`], the checks on
//! [`VerifyReport`]).

mod head;
mod redact;
mod verify;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use head::AuditHead;
pub(crate) use head::{HeadFile, head_path, read_head, read_head_at, reset_head, write_head};
pub use redact::{REDACTED, redact, redact_text};
pub(crate) use verify::{HeadCheck, Verifier};
pub use verify::{Problem, ProblemKind, VerifyReport};

use loom_core::run::Scope;

/// The `prev_hash` of the first entry of a chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub use loom_core::governance::{AuditAction, AuditLog, AuditRecord};

/// One entry of a signed audit chain, as [`FileAuditLog`](super::FileAuditLog) writes it: one JSON
/// object per line, fields in this order: `{seq, at, run_id, session_id, user_id, action, payload,
/// prev_hash, hash, signature}`. [`InMemoryAuditLog`] keeps the same chain.
///
/// - `seq` counts from 1 and grows by one per entry; `at` is the UTC time of the append (RFC 3339,
///   microseconds).
/// - `hash` is the lowercase hex SHA-256 of the *canonical serialization* of every other field but
///   `signature`, i.e. of the object `{action, at, payload, prev_hash, run_id, seq, session_id,
///   user_id}`: JSON with object keys sorted by their UTF-8 bytes at every depth, no whitespace,
///   strings escaped as serde_json escapes them, numbers as serde_json prints them
///   ([`canonical_json`]).
/// - `prev_hash` is the previous entry's `hash`; the first entry's is [`GENESIS_HASH`] (64 zeros).
/// - `signature` is the lowercase hex HMAC-SHA256, keyed with the log's secret, of the 64 ASCII bytes
///   of `hash`.
/// - `payload` was redacted before it was hashed (see [`redact`]).
///
/// So editing an entry breaks its hash; re-hashing it breaks the next entry's `prev_hash` and its
/// signature; dropping or moving entries breaks `seq` and the chain; and nobody without the secret
/// can forge an entry. [`VerifyReport`] names what it finds. What a chain cannot show by itself is a
/// cut-off tail: [`FileAuditLog`](super::FileAuditLog) keeps a signed [`AuditHead`] beside the log
/// for that, and [`VerifyReport::head`] gives the head to keep somewhere else as well.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    /// The position in the chain, from 1.
    pub seq: u64,
    /// When it was appended (RFC 3339, UTC).
    pub at: String,
    /// The run.
    pub run_id: String,
    /// The session.
    pub session_id: String,
    /// The user, if any.
    pub user_id: Option<String>,
    /// What happened (`run_started`, `tool_call`, …).
    pub action: String,
    /// The details, redacted.
    pub payload: Value,
    /// The previous entry's hash ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// SHA-256 (hex) of the canonical serialization of all the other fields but `signature`.
    pub hash: String,
    /// HMAC-SHA256 (hex) of `hash`, keyed with the log's secret.
    pub signature: String,
}

impl AuditEntry {
    /// The entry as one JSON line (without the newline).
    pub fn to_line(&self) -> String {
        let payload = canonical_json(&self.payload);
        let mut line = String::with_capacity(payload.len() + 320);
        self.fields(&payload).write_line(&mut line, &self.hash, &self.signature);
        line
    }

    /// Reads an entry from a parsed JSON line; says which field is missing or of the wrong type.
    pub fn from_json(value: Value) -> Result<AuditEntry, String> {
        let Value::Object(mut map) = value else { return Err("not a JSON object".into()) };
        let mut text = |name: &str| match map.remove(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(format!("`{name}` is not a string")),
            None => Err(format!("`{name}` is missing")),
        };
        let at = text("at")?;
        let run_id = text("run_id")?;
        let session_id = text("session_id")?;
        let action = text("action")?;
        let prev_hash = text("prev_hash")?;
        let hash = text("hash")?;
        let signature = text("signature")?;
        let seq = match map.remove("seq") {
            Some(Value::Number(n)) => n.as_u64().filter(|&s| s >= 1).ok_or("`seq` is not a positive integer")?,
            Some(_) => return Err("`seq` is not a number".into()),
            None => return Err("`seq` is missing".into()),
        };
        let user_id = match map.remove("user_id") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) => None,
            Some(_) => return Err("`user_id` is not a string or null".into()),
            None => return Err("`user_id` is missing".into()),
        };
        let payload = map.remove("payload").ok_or("`payload` is missing")?;
        if let Some(extra) = map.keys().next() {
            return Err(format!("unexpected field `{extra}`"));
        }
        Ok(AuditEntry { seq, at, run_id, session_id, user_id, action, payload, prev_hash, hash, signature })
    }

    /// The hash this entry's fields call for (compare with [`AuditEntry::hash`]).
    pub fn compute_hash(&self) -> String {
        sha256_hex(&self.fields(&canonical_json(&self.payload)).content())
    }

    /// Whether `signature` is the HMAC of `hash` under `secret`.
    pub fn signature_verifies(&self, secret: &[u8]) -> bool {
        Signer::new(secret).is_ok_and(|signer| signer.verifies(&self.hash, &self.signature))
    }

    fn fields<'a>(&'a self, payload_json: &'a str) -> Fields<'a> {
        Fields {
            seq: self.seq,
            at: &self.at,
            run_id: &self.run_id,
            session_id: &self.session_id,
            user_id: self.user_id.as_deref(),
            action: &self.action,
            payload_json,
            prev_hash: &self.prev_hash,
        }
    }
}

/// The hashed fields of an entry, borrowed; the payload already in canonical JSON.
pub(crate) struct Fields<'a> {
    pub seq: u64,
    pub at: &'a str,
    pub run_id: &'a str,
    pub session_id: &'a str,
    pub user_id: Option<&'a str>,
    pub action: &'a str,
    pub payload_json: &'a str,
    pub prev_hash: &'a str,
}

impl Fields<'_> {
    /// The canonical serialization that is hashed: keys in sorted order, no whitespace. (A unit test
    /// checks it against [`canonical_json`] of the same object.)
    pub fn content(&self) -> String {
        let mut out = String::with_capacity(self.payload_json.len() + 200);
        out.push_str("{\"action\":");
        write_json_str(&mut out, self.action);
        out.push_str(",\"at\":");
        write_json_str(&mut out, self.at);
        out.push_str(",\"payload\":");
        out.push_str(self.payload_json);
        out.push_str(",\"prev_hash\":");
        write_json_str(&mut out, self.prev_hash);
        out.push_str(",\"run_id\":");
        write_json_str(&mut out, self.run_id);
        let _ = write!(out, ",\"seq\":{}", self.seq);
        out.push_str(",\"session_id\":");
        write_json_str(&mut out, self.session_id);
        out.push_str(",\"user_id\":");
        match self.user_id {
            Some(user) => write_json_str(&mut out, user),
            None => out.push_str("null"),
        }
        out.push('}');
        out
    }

    /// The JSONL line (without the newline), fields in the documented order.
    pub fn write_line(&self, out: &mut String, hash: &str, signature: &str) {
        let _ = write!(out, "{{\"seq\":{},\"at\":", self.seq);
        write_json_str(out, self.at);
        out.push_str(",\"run_id\":");
        write_json_str(out, self.run_id);
        out.push_str(",\"session_id\":");
        write_json_str(out, self.session_id);
        out.push_str(",\"user_id\":");
        match self.user_id {
            Some(user) => write_json_str(out, user),
            None => out.push_str("null"),
        }
        out.push_str(",\"action\":");
        write_json_str(out, self.action);
        out.push_str(",\"payload\":");
        out.push_str(self.payload_json);
        out.push_str(",\"prev_hash\":");
        write_json_str(out, self.prev_hash);
        out.push_str(",\"hash\":");
        write_json_str(out, hash);
        out.push_str(",\"signature\":");
        write_json_str(out, signature);
        out.push('}');
    }
}

/// A record made ready to chain: payload redacted and serialized canonically. Done before any lock
/// is taken.
pub(crate) struct Prepared {
    pub scope: Scope,
    pub action: AuditAction,
    pub payload: Value,
    pub payload_json: String,
}

impl Prepared {
    pub fn new(record: AuditRecord) -> Prepared {
        let mut payload = record.payload;
        redact(&mut payload);
        let payload_json = canonical_json(&payload);
        Prepared { scope: record.scope, action: record.action, payload, payload_json }
    }

    pub fn fields<'a>(&'a self, seq: u64, at: &'a str, prev_hash: &'a str) -> Fields<'a> {
        Fields {
            seq,
            at,
            run_id: &self.scope.run_id,
            session_id: &self.scope.session_id,
            user_id: self.scope.user_id.as_deref(),
            action: self.action.as_str(),
            payload_json: &self.payload_json,
            prev_hash,
        }
    }
}

/// The time of an append, as written.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// HMAC-SHA256 with the key set up once.
#[derive(Clone)]
pub(crate) struct Signer {
    mac: hmac::Hmac<Sha256>,
}

impl Signer {
    /// Refuses an empty secret.
    pub fn new(secret: &[u8]) -> Result<Signer, crate::Error> {
        if secret.is_empty() {
            return Err(crate::Error::Config("the audit log secret is empty".into()));
        }
        let mac = hmac::Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|e| crate::Error::Config(format!("bad audit log secret: {e}")))?;
        Ok(Signer { mac })
    }

    /// The hex signature of a hash.
    pub fn sign(&self, hash: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(hash.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` signs `hash` (compared in constant time).
    pub fn verifies(&self, hash: &str, signature: &str) -> bool {
        let Ok(bytes) = hex::decode(signature) else { return false };
        let mut mac = self.mac.clone();
        mac.update(hash.as_bytes());
        mac.verify_slice(&bytes).is_ok()
    }
}

/// JSON with object keys sorted by their UTF-8 bytes at every depth and no whitespace. It does not
/// depend on how `serde_json::Map` orders keys (insertion order under `preserve_order`).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_json_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(out, key);
                out.push(':');
                write_canonical(out, item);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal, escaped exactly as serde_json escapes it.
fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// An in-memory audit log: the same signed chain as [`FileAuditLog`](super::FileAuditLog), kept in
/// a vector. Clones share the log. Handy for tests and for short-lived processes that ship entries
/// elsewhere.
#[derive(Clone)]
pub struct InMemoryAuditLog {
    inner: Arc<InMemoryInner>,
}

struct InMemoryInner {
    signer: Signer,
    entries: Mutex<Vec<AuditEntry>>,
}

impl std::fmt::Debug for InMemoryAuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryAuditLog").field("entries", &self.len()).finish_non_exhaustive()
    }
}

impl InMemoryAuditLog {
    /// A log signing with `secret` (which must not be empty).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<InMemoryAuditLog, crate::Error> {
        let signer = Signer::new(secret.as_ref())?;
        Ok(InMemoryAuditLog { inner: Arc::new(InMemoryInner { signer, entries: Mutex::new(Vec::new()) }) })
    }

    /// The entries so far, in order.
    pub fn entries(&self) -> Vec<AuditEntry> {
        self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries as JSONL, one line each, as [`FileAuditLog`](super::FileAuditLog) writes them.
    pub fn to_jsonl(&self) -> String {
        let entries = self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.iter().map(|e| e.to_line() + "\n").collect()
    }

    /// Checks the chain and the signatures.
    pub fn verify(&self) -> VerifyReport {
        let entries = self.entries();
        let mut verifier = Verifier::new(&self.inner.signer);
        for (i, entry) in entries.iter().enumerate() {
            verifier.push_entry(i + 1, entry);
        }
        verifier.finish()
    }

    fn push(&self, prepared: Prepared) {
        let mut entries = self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (seq, prev_hash) = match entries.last() {
            Some(last) => (last.seq + 1, last.hash.clone()),
            None => (1, GENESIS_HASH.to_string()),
        };
        let at = now_rfc3339();
        let fields = prepared.fields(seq, &at, &prev_hash);
        let hash = sha256_hex(&fields.content());
        let signature = self.inner.signer.sign(&hash);
        let Prepared { scope, action, payload, .. } = prepared;
        entries.push(AuditEntry {
            seq,
            at,
            run_id: scope.run_id.to_string(),
            session_id: scope.session_id.to_string(),
            user_id: scope.user_id.as_deref().map(str::to_string),
            action: action.to_string(),
            payload,
            prev_hash,
            hash,
            signature,
        });
    }
}

#[async_trait::async_trait]
impl AuditLog for InMemoryAuditLog {
    async fn append(&self, record: AuditRecord) -> Result<(), crate::Error> {
        self.push(Prepared::new(record));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn scope(user: Option<&str>) -> Scope {
        Scope { run_id: "run_1".into(), session_id: "ses_1".into(), user_id: user.map(Into::into) }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_without_whitespace() {
        let v = json!({"b": 1, "a": {"z": [true, null, {"y": 1.5, "x": "q\"\n\u{1}"}], "c": -2}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":-2,"z":[true,null,{"x":"q\"\n\u0001","y":1.5}]},"b":1}"#);
        // Strings escape as serde_json escapes them, so a parsed line re-serializes to the same bytes.
        for s in ["plain", "ünï\u{7f}code", "tab\tcr\r\u{8}\u{c}\u{1f}", "\\\"/"] {
            let mut out = String::new();
            write_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn the_hashed_content_is_the_canonical_form_of_every_field_but_hash_and_signature() {
        let prepared = Prepared::new(AuditRecord {
            scope: scope(Some("u\"1")),
            action: AuditAction::ToolCall,
            payload: json!({"tool": "t", "args": {"b": 2, "a": [1, 2.25]}}),
        });
        let content = prepared.fields(7, "2025-01-01T00:00:00.000001Z", GENESIS_HASH).content();
        let expected = json!({
            "seq": 7, "at": "2025-01-01T00:00:00.000001Z", "run_id": "run_1", "session_id": "ses_1",
            "user_id": "u\"1", "action": "tool_call", "payload": {"tool": "t", "args": {"b": 2, "a": [1, 2.25]}},
            "prev_hash": GENESIS_HASH,
        });
        assert_eq!(content, canonical_json(&expected));
    }

    #[test]
    fn lines_parse_back_to_the_same_entry_and_hash() {
        let log = InMemoryAuditLog::new("0123456789abcdef").unwrap();
        log.push(Prepared::new(AuditRecord {
            scope: scope(None),
            action: "a".into(),
            payload: json!({"n": 0.1, "k": [1]}),
        }));
        log.push(Prepared::new(AuditRecord { scope: scope(Some("u")), action: "b".into(), payload: json!("x") }));
        let entries = log.entries();
        assert_eq!(entries[0].prev_hash, GENESIS_HASH);
        assert_eq!(entries[1].prev_hash, entries[0].hash);
        for entry in &entries {
            let parsed = AuditEntry::from_json(serde_json::from_str(&entry.to_line()).unwrap()).unwrap();
            assert_eq!(&parsed, entry);
            assert_eq!(parsed.compute_hash(), entry.hash);
            assert!(parsed.signature_verifies(b"0123456789abcdef"));
            assert!(!parsed.signature_verifies(b"another secret.."));
        }
        assert!(log.verify().is_intact());
    }

    #[test]
    fn an_empty_secret_is_refused() {
        assert!(InMemoryAuditLog::new("").is_err());
    }
}
