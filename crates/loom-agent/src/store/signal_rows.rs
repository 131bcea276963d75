//! The row encoding of signals and schedules, shared by the SQLite and PostgreSQL stores.

use crate::error::Error;
use crate::signal::{Attention, RuntimeSignal, ScheduleRecord, SignalRecord, SignalStatus};
use crate::store::sql::{decode, from_millis};

/// The columns every signal query selects, in this order.
pub(crate) const SIGNAL_COLUMNS: &str = "owner, session_id, signal, status, attention, run_id, handled_at";

/// The status a settled signal keeps: observed ones wait for the next run, the rest are handled.
pub(crate) fn decide_status(attention: Attention) -> SignalStatus {
    if attention == Attention::Observe { SignalStatus::Observed } else { SignalStatus::Handled }
}

/// A signal row's columns, as read.
pub(crate) struct SignalRow {
    pub(crate) owner: String,
    pub(crate) session_id: String,
    pub(crate) signal: String,
    pub(crate) status: String,
    pub(crate) attention: Option<String>,
    pub(crate) run_id: Option<String>,
    pub(crate) handled_at: Option<i64>,
}

impl SignalRow {
    /// The stored signal.
    pub(crate) fn decode(self) -> Result<SignalRecord, Error> {
        let session = self.session_id.clone();
        let signal: RuntimeSignal = decode(&self.signal, || format!("session {session}: a signal"))?;
        Ok(SignalRecord {
            signal,
            user_id: (!self.owner.is_empty()).then_some(self.owner),
            session_id: self.session_id,
            status: SignalStatus::parse(&self.status)?,
            attention: self.attention.as_deref().map(str::parse::<Attention>).transpose()?,
            run_id: self.run_id,
            handled_at: self.handled_at.map(from_millis),
        })
    }
}

/// A schedule row's `record` column.
pub(crate) fn decode_schedule(id: &str, text: &str) -> Result<ScheduleRecord, Error> {
    decode(text, || format!("schedule {id}"))
}
