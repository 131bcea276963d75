//! Signals: events from outside a run (a chat message, a webhook, a schedule firing, a finished
//! background job) addressed to a session.
//!
//! A [`RuntimeSignal`] is stored durably in the session's [`SignalStore`] (deduplicated by its
//! `dedupe_key`), then an [`AttentionPolicy`] decides what the session does with it: ignore it,
//! observe it (the session's next run sees it as context), run (start a run with it as input,
//! queued behind a running one) or interrupt (cancel the running run and start one with it).
//! A [`SignalAdapter`] maps a raw JSON event (a Slack message, a webhook body) to a signal.
//!
//! ```
//! use loom_core::signal::{Attention, AttentionPolicy, RuntimeSignal, SessionState, Urgency, UrgencyPolicy};
//!
//! let signal = RuntimeSignal::create("The build is red", "ci", "build.failed", Urgency::Critical)
//!     .dedupe_key("build-812");
//! let state = SessionState::new(None, "ops");
//! assert_eq!(UrgencyPolicy.decide(&signal, &state), Attention::Interrupt);
//! ```

mod policy;
mod schedule;
mod store;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

pub use policy::{Attention, AttentionPolicy, SessionState, UrgencyPolicy};
pub use schedule::{MissedPolicy, Schedule, ScheduleRecord};
pub use store::{SignalRecord, SignalStatus, SignalStore};

/// The type of the signals that carry a background tool's result
/// ([`RuntimeSignal::tool_result`]).
pub const TOOL_RESULT: &str = "tool.result";

/// How urgent a signal is. The default policy ([`UrgencyPolicy`]) maps low to observe, normal and
/// high to run, and critical to interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// Worth knowing; no run needed.
    Low,
    /// Needs a run, in turn.
    #[default]
    Normal,
    /// Needs a run, in turn (a custom policy may treat it sooner).
    High,
    /// Stops what the session is doing.
    Critical,
}

impl Urgency {
    /// The name: `low`, `normal`, `high` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
            Urgency::Critical => "critical",
        }
    }
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Urgency {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Urgency::Low),
            "normal" => Ok(Urgency::Normal),
            "high" => Ok(Urgency::High),
            "critical" => Ok(Urgency::Critical),
            other => Err(Error::Config(format!("unknown urgency `{other}`; accepted: low, normal, high, critical"))),
        }
    }
}

/// A signal addressed to a session.
///
/// ```
/// use loom_core::signal::{RuntimeSignal, Urgency};
/// use serde_json::json;
///
/// let signal = RuntimeSignal::create("Deploy finished", "ci", "deploy", Urgency::Low)
///     .payload(json!({"version": "1.4.2"}))
///     .dedupe_key("deploy-1.4.2");
/// assert_eq!(signal.kind, "deploy");
/// assert!(signal.id.starts_with("sig_"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuntimeSignal {
    /// The signal's id (`sig_…`).
    pub id: String,
    /// What happened, as the model reads it.
    pub text: String,
    /// Where it came from (`slack`, `ci`, `schedule`, …).
    pub source: String,
    /// What kind of event it is (`message`, `build.failed`, …); `type` in JSON.
    #[serde(rename = "type")]
    pub kind: String,
    /// How urgent it is.
    pub urgency: Urgency,
    /// The raw event or any data that goes with it.
    #[serde(default)]
    pub payload: Value,
    /// A key that makes a second signal with the same key (in the same session) a duplicate,
    /// dropped on arrival.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_key: Option<String>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

impl RuntimeSignal {
    /// A signal with its text, source, type and urgency (the seed's `RuntimeSignal.create`).
    pub fn create(
        text: impl Into<String>,
        source: impl Into<String>,
        kind: impl Into<String>,
        urgency: Urgency,
    ) -> Self {
        RuntimeSignal {
            id: crate::new_id("sig"),
            text: text.into(),
            source: source.into(),
            kind: kind.into(),
            urgency,
            payload: Value::Null,
            dedupe_key: None,
            received_at: Utc::now(),
        }
    }

    /// A normal-urgency `message` signal from `api`.
    pub fn new(text: impl Into<String>) -> Self {
        Self::create(text, "api", "message", Urgency::Normal)
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }

    /// Sets the dedupe key.
    pub fn dedupe_key(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    /// Sets the urgency.
    pub fn urgency(mut self, urgency: Urgency) -> Self {
        self.urgency = urgency;
        self
    }

    /// Sets the source.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Sets the type.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Sets the arrival time.
    pub fn received_at(mut self, at: DateTime<Utc>) -> Self {
        self.received_at = at;
        self
    }

    /// A signal carrying a background tool's result: the session that receives it records the
    /// result of call `call_id` of run `run_id` and continues the run (as
    /// `Agent::complete_tool` does) instead of asking the attention policy. `is_error`: the job
    /// failed, and `output` says why.
    pub fn tool_result(
        run_id: impl Into<String>,
        call_id: impl Into<String>,
        output: impl Into<String>,
        is_error: bool,
    ) -> Self {
        let (run_id, call_id, output) = (run_id.into(), call_id.into(), output.into());
        let text = format!("result of call {call_id} of run {run_id}");
        Self::create(text, "tool", TOOL_RESULT, Urgency::Normal)
            .payload(serde_json::json!({"run_id": run_id, "call_id": call_id, "output": output, "is_error": is_error}))
            .dedupe_key(format!("tool.result:{run_id}:{call_id}"))
    }

    /// The signal as a line the model reads: `[signal from SOURCE, TYPE, URGENCY] TEXT`.
    pub fn to_prompt(&self) -> String {
        format!("[signal from {}, {}, {}] {}", self.source, self.kind, self.urgency, self.text)
    }
}

type Summary = Arc<dyn Fn(&Value) -> String + Send + Sync>;
type UrgencyFn = Arc<dyn Fn(&Value) -> Urgency + Send + Sync>;
type DedupeFn = Arc<dyn Fn(&Value) -> Option<String> + Send + Sync>;

/// Maps a raw JSON event to a [`RuntimeSignal`]: its source, its type, and a summary function
/// that writes the signal's text from the event (the seed's `SignalAdapter(source, type,
/// summary)`). Optional functions pick the urgency and the dedupe key from the event.
///
/// ```
/// use loom_core::signal::{SignalAdapter, Urgency};
/// use serde_json::json;
///
/// let slack = SignalAdapter::new("slack", "message", |e| {
///     format!("{} wrote: {}", e["user"].as_str().unwrap_or("someone"), e["text"].as_str().unwrap_or(""))
/// })
/// .dedupe_key(|e| e["ts"].as_str().map(str::to_string))
/// .urgency(|e| if e["text"].as_str().unwrap_or("").contains("urgent") { Urgency::Critical } else { Urgency::Normal });
/// let signal = slack.adapt(json!({"user": "ana", "text": "urgent: prod is down", "ts": "1712.01"}));
/// assert_eq!(signal.text, "ana wrote: urgent: prod is down");
/// assert_eq!(signal.urgency, Urgency::Critical);
/// assert_eq!(signal.dedupe_key.as_deref(), Some("1712.01"));
/// ```
#[derive(Clone)]
pub struct SignalAdapter {
    /// The signals' source.
    pub source: String,
    /// The signals' type.
    pub kind: String,
    summary: Summary,
    urgency: Option<UrgencyFn>,
    dedupe: Option<DedupeFn>,
}

impl SignalAdapter {
    /// An adapter for events from `source` of type `kind`, whose text `summary` writes.
    pub fn new(
        source: impl Into<String>,
        kind: impl Into<String>,
        summary: impl Fn(&Value) -> String + Send + Sync + 'static,
    ) -> Self {
        SignalAdapter {
            source: source.into(),
            kind: kind.into(),
            summary: Arc::new(summary),
            urgency: None,
            dedupe: None,
        }
    }

    /// Picks each signal's urgency from its event (normal otherwise).
    pub fn urgency(mut self, urgency: impl Fn(&Value) -> Urgency + Send + Sync + 'static) -> Self {
        self.urgency = Some(Arc::new(urgency));
        self
    }

    /// Picks each signal's dedupe key from its event (none otherwise).
    pub fn dedupe_key(mut self, key: impl Fn(&Value) -> Option<String> + Send + Sync + 'static) -> Self {
        self.dedupe = Some(Arc::new(key));
        self
    }

    /// The signal for `event` (the event becomes its payload).
    pub fn adapt(&self, event: Value) -> RuntimeSignal {
        let text = (self.summary)(&event);
        let urgency = self.urgency.as_ref().map_or(Urgency::Normal, |f| f(&event));
        let mut signal = RuntimeSignal::create(text, self.source.clone(), self.kind.clone(), urgency);
        signal.dedupe_key = self.dedupe.as_ref().and_then(|f| f(&event));
        signal.payload = event;
        signal
    }
}

impl fmt::Debug for SignalAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignalAdapter").field("source", &self.source).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// What `receive` is given: a signal, or a raw event for an adapter to map.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// A signal, stored as it is.
    Signal(RuntimeSignal),
    /// A raw event; needs a [`SignalAdapter`].
    Event(Value),
}

impl Incoming {
    /// The signal: the one given, or the adapter's for the event.
    ///
    /// # Errors
    /// An event without an adapter is [`Error::Config`].
    pub fn into_signal(self, adapter: Option<&SignalAdapter>) -> Result<RuntimeSignal, Error> {
        match (self, adapter) {
            (Incoming::Signal(signal), _) => Ok(signal),
            (Incoming::Event(event), Some(adapter)) => Ok(adapter.adapt(event)),
            (Incoming::Event(_), None) => Err(Error::Config(
                "a raw event needs a SignalAdapter to become a signal; pass one, or pass a RuntimeSignal".into(),
            )),
        }
    }
}

impl From<RuntimeSignal> for Incoming {
    fn from(signal: RuntimeSignal) -> Self {
        Incoming::Signal(signal)
    }
}

impl From<Value> for Incoming {
    fn from(event: Value) -> Self {
        Incoming::Event(event)
    }
}

impl From<&str> for Incoming {
    fn from(text: &str) -> Self {
        Incoming::Signal(RuntimeSignal::new(text))
    }
}

impl From<String> for Incoming {
    fn from(text: String) -> Self {
        Incoming::Signal(RuntimeSignal::new(text))
    }
}
