//! `GET /audit`: the tenant's entries of the agents' signed audit logs, newest first, with each
//! log's verification status (the whole chain is checked: hashes, signatures, order, and the signed
//! head file of a file log). A tenant sees only its own users' entries and the problems found on
//! them; problems elsewhere in the chain are counted, not shown.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query};
use loom_agent::Error;
use loom_agent::governance::{AuditEntry, FileAuditLog, InMemoryAuditLog, VerifyReport};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::state::Tenant;

/// Where an audit log is read from.
#[derive(Clone)]
enum Source {
    File { path: PathBuf, secret: Arc<[u8]> },
    Memory(InMemoryAuditLog),
}

/// An audit log the dashboard reads and verifies: a signed JSONL file (as `audit_log = { path,
/// secret_env }` configures it) or an in-memory log.
#[derive(Clone)]
pub struct AuditSource {
    name: String,
    source: Source,
}

impl std::fmt::Debug for AuditSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("AuditSource").field("name", &self.name).finish_non_exhaustive()
    }
}

impl AuditSource {
    /// The signed audit file at `path`, checked with `secret` (the key it is signed with).
    pub fn file(path: impl Into<PathBuf>, secret: impl AsRef<[u8]>) -> AuditSource {
        let path = path.into();
        // The file's name only: the server's directories are none of a tenant's business.
        let name = path.file_name().map_or_else(|| "audit log".to_string(), |n| n.to_string_lossy().into_owned());
        AuditSource { name, source: Source::File { path, secret: Arc::from(secret.as_ref()) } }
    }

    /// An in-memory log (shared with the agent that writes it).
    pub fn memory(name: impl Into<String>, log: InMemoryAuditLog) -> AuditSource {
        AuditSource { name: name.into(), source: Source::Memory(log) }
    }

    /// The log's name as the dashboard shows it (a file's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every entry that parses, in order, and the verification report of the whole log.
    async fn read(&self) -> Result<(Vec<AuditEntry>, VerifyReport), Error> {
        match &self.source {
            Source::Memory(log) => Ok((log.entries(), log.verify())),
            Source::File { path, secret } => {
                let (path, secret) = (path.clone(), secret.clone());
                tokio::task::spawn_blocking(move || {
                    let report = FileAuditLog::verify(&path, &secret)?;
                    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                        context: format!("reading audit log {}", path.display()),
                        source,
                    })?;
                    // Lines that do not parse are in the report as malformed.
                    let entries = text
                        .lines()
                        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                        .filter_map(|v| AuditEntry::from_json(v).ok())
                        .collect();
                    Ok((entries, report))
                })
                .await
                .map_err(|e| Error::Config(format!("reading the audit log: {e}")))?
            }
        }
    }
}

/// The audit logs a server shows (empty when none is configured).
#[derive(Clone, Debug, Default)]
pub struct AuditSources(pub(crate) Vec<AuditSource>);

/// Query of `GET /audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this run's entries.
    pub run_id: Option<String>,
    /// Only entries of this action (`run_started`, `tool_call`, …).
    pub action: Option<String>,
    /// At most this many entries per log, newest first (default 200, at most 1000).
    pub limit: Option<usize>,
}

fn entry_json(tenant: &Tenant, e: &AuditEntry) -> Value {
    json!({
        "seq": e.seq,
        "at": e.at,
        "run_id": e.run_id,
        "session_id": e.session_id,
        "user_id": tenant.owns(e.user_id.as_deref()).flatten(),
        "action": e.action,
        "payload": e.payload,
        "hash": e.hash,
        "prev_hash": e.prev_hash,
    })
}

/// The verification status as one tenant may see it.
fn verification(report: &VerifyReport, own: &HashSet<u64>) -> Value {
    let mut problems = Vec::new();
    let mut elsewhere = 0usize;
    for p in &report.problems {
        match p.seq {
            Some(seq) if own.contains(&seq) => problems.push(json!({
                "seq": seq,
                "kind": p.kind.as_str(),
                "detail": p.detail,
            })),
            // The head (truncation, a rewritten tail) concerns the whole log: its kind, no detail.
            _ if p.line == 0 => {
                problems.push(json!({"seq": null, "kind": p.kind.as_str(), "detail": "the log's signed head"}))
            }
            _ => elsewhere += 1,
        }
    }
    json!({
        "intact": report.is_intact(),
        "problems": problems,
        "problems_elsewhere": elsewhere,
        "head_checked": report.head_file.is_some(),
    })
}

pub(crate) async fn list(
    Extension(tenant): Extension<Tenant>,
    Extension(sources): Extension<Arc<AuditSources>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let mut logs = Vec::new();
    for source in &sources.0 {
        let (entries, report) = source.read().await.map_err(ApiError::from)?;
        let own: Vec<&AuditEntry> = entries.iter().filter(|e| tenant.owns(e.user_id.as_deref()).is_some()).collect();
        let seqs: HashSet<u64> = own.iter().map(|e| e.seq).collect();
        let shown: Vec<Value> = own
            .iter()
            .rev()
            .filter(|e| q.run_id.as_deref().is_none_or(|r| e.run_id == r))
            .filter(|e| q.action.as_deref().is_none_or(|a| e.action == a))
            .take(limit)
            .map(|e| entry_json(&tenant, e))
            .collect();
        logs.push(json!({
            "name": source.name(),
            "verification": verification(&report, &seqs),
            "entries": shown,
        }));
    }
    Ok(Json(json!({ "configured": !sources.0.is_empty(), "logs": logs })))
}
