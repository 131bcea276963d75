//! Schedules: `Agent::schedule` stores a schedule; the worker ([`super::Worker`]) fires its
//! occurrences as signals. Cron expressions are parsed and evaluated by the `croner` crate, in UTC.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::Agent;
use crate::error::Error;
use crate::signal::{Schedule, ScheduleRecord};

/// The first occurrence of `schedule` strictly after `after` (`None`: there is none, a one-shot
/// schedule that has passed). `created` anchors fixed intervals. Times are taken to the
/// millisecond, as the stores keep them.
pub(crate) fn next_after(
    schedule: &Schedule,
    created: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    let (created, after) = (millis(created), millis(after));
    match schedule {
        Schedule::Cron { expr } => {
            let cron = parse_cron(expr)?;
            cron.find_next_occurrence(&after, false)
                .map(Some)
                .map_err(|e| Error::Config(format!("the cron expression `{expr}` has no next occurrence: {e}")))
        }
        Schedule::Every { every_ms } => {
            let every = (*every_ms).max(1) as i64;
            let since = (after - created).num_milliseconds();
            let k = if since < 0 { 1 } else { since / every + 1 };
            Ok(created.checked_add_signed(chrono::Duration::milliseconds(k.saturating_mul(every))))
        }
        Schedule::Once { at } => Ok((millis(*at) > after).then_some(millis(*at))),
    }
}

/// `t` to the millisecond.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A schedule's first occurrence when it is added at `now`: a one-shot's time even if it has
/// passed (it is then missed, and the missed-occurrence policy decides).
pub(crate) fn first(
    schedule: &Schedule,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    match schedule {
        Schedule::Once { at } => Ok(Some(millis(*at))),
        other => next_after(other, created, now),
    }
}

fn parse_cron(expr: &str) -> Result<croner::Cron, Error> {
    croner::Cron::from_str(expr).map_err(|e| {
        Error::Config(format!(
            "invalid cron expression `{expr}`: {e} (five fields: minute hour day-of-month month day-of-week, in UTC)"
        ))
    })
}

impl Agent {
    /// Schedules signals into the session `session_id` (of no user): at each occurrence of
    /// `schedule` the worker ([`Agent::worker`]) sends the session a normal-urgency signal whose
    /// text is `input` (source `schedule`, type `schedule.fired`), which the attention policy
    /// turns into a run by default. The schedule is stored in the agent's signal store (durably
    /// with a URL journal), so it survives restarts. [`Agent::add_schedule`] takes a
    /// [`ScheduleRecord`] for a user's session, another urgency, or running missed occurrences
    /// once.
    ///
    /// # Errors
    /// An invalid cron expression, or an interval of zero, is [`Error::Config`].
    pub async fn schedule(
        &self,
        schedule: Schedule,
        session_id: &str,
        input: impl Into<String>,
    ) -> Result<ScheduleRecord, Error> {
        self.add_schedule(ScheduleRecord::new(schedule, session_id, input)).await
    }

    /// Stores a schedule (see [`Agent::schedule`]), computing its next occurrence when it has none.
    pub async fn add_schedule(&self, mut record: ScheduleRecord) -> Result<ScheduleRecord, Error> {
        if let Schedule::Every { every_ms: 0 } = record.schedule {
            return Err(Error::Config("a schedule's interval must be at least 1 ms".into()));
        }
        if record.user_id.as_deref() == Some("") {
            return Err(Error::Config("the user id is empty; omit it for no user".into()));
        }
        if record.next_at.is_none() {
            record.next_at = first(&record.schedule, record.created_at, Utc::now())?;
        }
        self.signal_store().put_schedule(&record).await?;
        Ok(record)
    }

    /// Every stored schedule, oldest first.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>, Error> {
        self.signal_store().schedules().await
    }

    /// Removes a schedule: `Ok(false)` when there is none with that id.
    pub async fn remove_schedule(&self, id: &str) -> Result<bool, Error> {
        self.signal_store().remove_schedule(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cron_weekdays_at_nine() {
        // 2026-12-05 is a Saturday: the next weekday 09:00 is Monday the 7th.
        let sat = Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).single().unwrap_or_default();
        let next = next_after(&Schedule::cron("0 9 * * MON-FRI"), sat, sat).ok().flatten();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 12, 7, 9, 0, 0).single());
        assert!(next_after(&Schedule::cron("not cron"), sat, sat).is_err());
    }

    #[test]
    fn intervals_count_from_creation() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default();
        let every = Schedule::every(std::time::Duration::from_secs(60));
        let at = |s| t0 + chrono::Duration::seconds(s);
        assert_eq!(next_after(&every, t0, at(0)).ok().flatten(), Some(at(60)));
        assert_eq!(next_after(&every, t0, at(60)).ok().flatten(), Some(at(120)));
        assert_eq!(next_after(&every, t0, at(61)).ok().flatten(), Some(at(120)));
        let once = Schedule::once(at(30));
        assert_eq!(next_after(&once, t0, at(30)).ok().flatten(), None);
        assert_eq!(first(&once, t0, at(90)).ok().flatten(), Some(at(30)));
    }
}
