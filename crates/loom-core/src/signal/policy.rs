//! The attention policy: what a session does with a signal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{RuntimeSignal, Urgency};
use crate::error::Error;

/// What a session does with a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attention {
    /// Keep it stored, nothing more.
    Ignore,
    /// Keep it for the session's next run, which sees it as context.
    Observe,
    /// Start a run with the signal as its input, after the session's runs in flight.
    Run,
    /// Cancel the session's runs in flight (they end `cancelled`, naming the signal) and start a
    /// run with the signal as its input.
    Interrupt,
}

impl Attention {
    /// The name: `ignore`, `observe`, `run` or `interrupt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Attention::Ignore => "ignore",
            Attention::Observe => "observe",
            Attention::Run => "run",
            Attention::Interrupt => "interrupt",
        }
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Attention {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ignore" => Ok(Attention::Ignore),
            "observe" => Ok(Attention::Observe),
            "run" => Ok(Attention::Run),
            "interrupt" => Ok(Attention::Interrupt),
            other => Err(Error::Config(format!("unknown attention `{other}`"))),
        }
    }
}

/// What a policy knows about the session a signal is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionState {
    /// The session's owner, if any.
    pub user_id: Option<String>,
    /// The session's id.
    pub session_id: String,
    /// Runs of the session in flight in this process (queued or running).
    pub runs_in_flight: usize,
}

impl SessionState {
    /// The state of an idle session.
    pub fn new(user_id: Option<&str>, session_id: &str) -> Self {
        SessionState { user_id: user_id.map(str::to_string), session_id: session_id.to_string(), runs_in_flight: 0 }
    }

    /// The same state with `n` runs in flight.
    pub fn with_runs_in_flight(mut self, n: usize) -> Self {
        self.runs_in_flight = n;
        self
    }

    /// Whether a run of the session is in flight.
    pub fn is_busy(&self) -> bool {
        self.runs_in_flight > 0
    }
}

/// Decides, per signal, what its session does with it. Any
/// `Fn(&RuntimeSignal, &SessionState) -> Attention` is a policy.
///
/// ```
/// use loom_core::signal::{Attention, AttentionPolicy, RuntimeSignal, SessionState, Urgency};
///
/// // Signals from the pager always interrupt; the rest are only observed.
/// let policy = |s: &RuntimeSignal, _: &SessionState| {
///     if s.source == "pager" { Attention::Interrupt } else { Attention::Observe }
/// };
/// let state = SessionState::new(None, "ops");
/// let page = RuntimeSignal::create("disk full", "pager", "alert", Urgency::Low);
/// assert_eq!(policy.decide(&page, &state), Attention::Interrupt);
/// ```
pub trait AttentionPolicy: Send + Sync + 'static {
    /// What to do with `signal`.
    fn decide(&self, signal: &RuntimeSignal, session: &SessionState) -> Attention;
}

impl<F> AttentionPolicy for F
where
    F: Fn(&RuntimeSignal, &SessionState) -> Attention + Send + Sync + 'static,
{
    fn decide(&self, signal: &RuntimeSignal, session: &SessionState) -> Attention {
        self(signal, session)
    }
}

/// The default policy, by urgency: low → observe, normal and high → run, critical → interrupt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrgencyPolicy;

impl AttentionPolicy for UrgencyPolicy {
    fn decide(&self, signal: &RuntimeSignal, _session: &SessionState) -> Attention {
        match signal.urgency {
            Urgency::Low => Attention::Observe,
            Urgency::Normal | Urgency::High => Attention::Run,
            Urgency::Critical => Attention::Interrupt,
        }
    }
}
