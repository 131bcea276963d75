//! Schedules: signals emitted on time into a session.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Urgency;

/// When a schedule fires: a cron expression (five fields, or six with seconds, evaluated in UTC),
/// a fixed interval, or once.
///
/// ```
/// use loom_core::signal::Schedule;
/// use std::time::Duration;
///
/// let weekdays = Schedule::cron("0 9 * * MON-FRI");
/// let hourly = Schedule::every(Duration::from_secs(3600));
/// assert_ne!(weekdays, hourly);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// A cron expression, in UTC.
    Cron {
        /// The expression, such as `0 9 * * MON-FRI`.
        expr: String,
    },
    /// Every `every_ms` milliseconds from when the schedule was added.
    Every {
        /// The interval in milliseconds (at least 1).
        every_ms: u64,
    },
    /// Once, at `at`.
    Once {
        /// When.
        at: DateTime<Utc>,
    },
}

impl Schedule {
    /// A cron schedule (UTC).
    pub fn cron(expr: impl Into<String>) -> Self {
        Schedule::Cron { expr: expr.into() }
    }

    /// A fixed interval (at least one millisecond).
    pub fn every(interval: Duration) -> Self {
        Schedule::Every { every_ms: (interval.as_millis().min(u64::MAX as u128) as u64).max(1) }
    }

    /// Once, at `at`.
    pub fn once(at: DateTime<Utc>) -> Self {
        Schedule::Once { at }
    }
}

/// What happens to occurrences that passed while no worker was running (more than the grace
/// period late).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedPolicy {
    /// Drop them; fire at the next occurrence.
    #[default]
    Skip,
    /// Fire once for all of them, then go on with the next occurrence.
    RunOnce,
}

/// A schedule as stored: when it fires, into which session, with which input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The schedule's id (`sch_…`).
    pub id: String,
    /// The target session's owner, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The target session.
    pub session_id: String,
    /// When it fires.
    pub schedule: Schedule,
    /// The text of the signal each occurrence emits.
    pub input: String,
    /// The urgency of those signals.
    #[serde(default)]
    pub urgency: Urgency,
    /// What happens to missed occurrences.
    #[serde(default)]
    pub missed: MissedPolicy,
    /// The next occurrence; `None` once a one-shot schedule has fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_at: Option<DateTime<Utc>>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

impl ScheduleRecord {
    /// A schedule of `input` signals into the session `session_id` (of no user), normal urgency,
    /// missed occurrences skipped. Its next occurrence is computed when it is added.
    pub fn new(schedule: Schedule, session_id: impl Into<String>, input: impl Into<String>) -> Self {
        ScheduleRecord {
            id: crate::new_id("sch"),
            user_id: None,
            session_id: session_id.into(),
            schedule,
            input: input.into(),
            urgency: Urgency::Normal,
            missed: MissedPolicy::Skip,
            next_at: None,
            created_at: Utc::now(),
        }
    }

    /// The target session is this user's.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// The urgency of the signals it emits.
    pub fn urgency(mut self, urgency: Urgency) -> Self {
        self.urgency = urgency;
        self
    }

    /// What happens to missed occurrences.
    pub fn missed(mut self, policy: MissedPolicy) -> Self {
        self.missed = policy;
        self
    }
}
