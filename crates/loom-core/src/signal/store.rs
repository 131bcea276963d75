//! The signal store protocol: signals and schedules, kept per session like sessions are.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Attention, RuntimeSignal, ScheduleRecord};
use crate::error::Error;
use crate::store::SessionKey;

/// Where a stored signal is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalStatus {
    /// Stored; no process has decided on it yet.
    Pending,
    /// A process is deciding on it (its claim expires, so a dead process does not keep it).
    Claimed,
    /// Kept for the session's next run (attention `observe`).
    Observed,
    /// Done: ignored, or handed to a run.
    Handled,
}

impl SignalStatus {
    /// The name as stored: `pending`, `claimed`, `observed`, `handled`.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalStatus::Pending => "pending",
            SignalStatus::Claimed => "claimed",
            SignalStatus::Observed => "observed",
            SignalStatus::Handled => "handled",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "pending" => Ok(SignalStatus::Pending),
            "claimed" => Ok(SignalStatus::Claimed),
            "observed" => Ok(SignalStatus::Observed),
            "handled" => Ok(SignalStatus::Handled),
            other => Err(Error::Corrupt(format!("unknown signal status `{other}`").into())),
        }
    }
}

/// A signal as stored in its session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalRecord {
    /// The signal.
    pub signal: RuntimeSignal,
    /// The session's owner, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The session.
    pub session_id: String,
    /// Where it is in its life.
    pub status: SignalStatus,
    /// What the attention policy decided, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Attention>,
    /// The run that received it (as input, or as context when observed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// When it was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_at: Option<DateTime<Utc>>,
}

/// Where signals and schedules are kept.
///
/// Signals are scoped by [`SessionKey`] (user and session id) exactly like sessions: a store never
/// returns one user's signals for another user's key, and a dedupe key is unique within one
/// session of one user. Schedules are one table for all sessions (each names its session).
#[async_trait::async_trait]
pub trait SignalStore: Send + Sync + 'static {
    /// Stores `signal` in `session`, pending, or already claimed by `claim` (holder, until in
    /// milliseconds since the epoch) for a receiver that decides on it at once: `Ok(false)`
    /// (nothing stored) when the session already has a signal with the same dedupe key (or id).
    async fn append(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        claim: Option<(&str, i64)>,
    ) -> Result<bool, Error>;

    /// Stores `signal` in `session` with the decision already taken, when that decision starts
    /// no run (`ignore` or `observe`): one write instead of [`append`](Self::append) then
    /// [`settle`](Self::settle). `Ok(false)` (nothing stored) for a duplicate, as `append`.
    /// `claim` is the receiver's (holder, until), used by the default, which appends claimed and
    /// then settles; the SQL stores write the decided row in one statement.
    async fn append_decided(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        attention: Attention,
        claim: (&str, i64),
    ) -> Result<bool, Error> {
        if !self.append(session, signal, Some(claim)).await? {
            return Ok(false);
        }
        self.settle(session, &signal.id, attention, None).await?;
        Ok(true)
    }

    /// The session's signals, oldest first.
    async fn signals(&self, session: SessionKey<'_>) -> Result<Vec<SignalRecord>, Error>;

    /// The session's signals waiting for a decision (pending, or claimed by a holder whose claim
    /// expired before `now_ms`), oldest first.
    async fn pending(&self, session: SessionKey<'_>, now_ms: i64) -> Result<Vec<SignalRecord>, Error>;

    /// The sessions (user, id) with signals waiting for a decision at `now_ms`.
    async fn pending_sessions(&self, now_ms: i64) -> Result<Vec<(Option<String>, String)>, Error>;

    /// Claims a waiting signal for `holder` until `until_ms`: `Ok(false)` when it is not waiting
    /// (another holder has it, or it was decided). Only the claimant decides on a signal.
    async fn claim(&self, session: SessionKey<'_>, signal_id: &str, holder: &str, until_ms: i64)
    -> Result<bool, Error>;

    /// Records the decision on a claimed signal: `observe` keeps it observed (for the next run),
    /// anything else marks it handled, by `run_id` when a run received it.
    async fn settle(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        attention: Attention,
        run_id: Option<&str>,
    ) -> Result<(), Error>;

    /// Hands the session's observed signals to the run `run_id`: they become handled by it, and
    /// are returned (oldest first). Each observed signal is taken by exactly one run.
    async fn take_observed(&self, session: SessionKey<'_>, run_id: &str) -> Result<Vec<SignalRecord>, Error>;

    /// Adds a schedule, or replaces the one with the same id.
    async fn put_schedule(&self, schedule: &ScheduleRecord) -> Result<(), Error>;

    /// Every schedule, oldest first.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, Error>;

    /// Removes a schedule: `Ok(false)` when there was none with that id.
    async fn remove_schedule(&self, id: &str) -> Result<bool, Error>;

    /// Takes the lease on one occurrence of a schedule (at `at_ms`) for `holder`: `Ok(true)` for
    /// exactly one caller per occurrence, across processes sharing the store.
    async fn claim_occurrence(&self, schedule_id: &str, at_ms: i64, holder: &str) -> Result<bool, Error>;

    /// Moves a schedule's next occurrence (`None`: it is done).
    async fn advance_schedule(&self, id: &str, next_at: Option<DateTime<Utc>>) -> Result<(), Error>;
}

/// A shared signal store is a signal store.
#[async_trait::async_trait]
impl<T: SignalStore + ?Sized> SignalStore for Arc<T> {
    async fn append(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        claim: Option<(&str, i64)>,
    ) -> Result<bool, Error> {
        (**self).append(session, signal, claim).await
    }
    async fn append_decided(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        attention: Attention,
        claim: (&str, i64),
    ) -> Result<bool, Error> {
        (**self).append_decided(session, signal, attention, claim).await
    }
    async fn signals(&self, session: SessionKey<'_>) -> Result<Vec<SignalRecord>, Error> {
        (**self).signals(session).await
    }
    async fn pending(&self, session: SessionKey<'_>, now_ms: i64) -> Result<Vec<SignalRecord>, Error> {
        (**self).pending(session, now_ms).await
    }
    async fn pending_sessions(&self, now_ms: i64) -> Result<Vec<(Option<String>, String)>, Error> {
        (**self).pending_sessions(now_ms).await
    }
    async fn claim(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        holder: &str,
        until_ms: i64,
    ) -> Result<bool, Error> {
        (**self).claim(session, signal_id, holder, until_ms).await
    }
    async fn settle(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        attention: Attention,
        run_id: Option<&str>,
    ) -> Result<(), Error> {
        (**self).settle(session, signal_id, attention, run_id).await
    }
    async fn take_observed(&self, session: SessionKey<'_>, run_id: &str) -> Result<Vec<SignalRecord>, Error> {
        (**self).take_observed(session, run_id).await
    }
    async fn put_schedule(&self, schedule: &ScheduleRecord) -> Result<(), Error> {
        (**self).put_schedule(schedule).await
    }
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, Error> {
        (**self).schedules().await
    }
    async fn remove_schedule(&self, id: &str) -> Result<bool, Error> {
        (**self).remove_schedule(id).await
    }
    async fn claim_occurrence(&self, schedule_id: &str, at_ms: i64, holder: &str) -> Result<bool, Error> {
        (**self).claim_occurrence(schedule_id, at_ms, holder).await
    }
    async fn advance_schedule(&self, id: &str, next_at: Option<DateTime<Utc>>) -> Result<(), Error> {
        (**self).advance_schedule(id, next_at).await
    }
}
