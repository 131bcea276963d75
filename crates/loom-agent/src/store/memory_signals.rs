//! The in-memory signal store: signals and schedules in process memory. Nothing survives a
//! restart; the SQL stores keep them durably.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::signal::{Attention, RuntimeSignal, ScheduleRecord, SignalRecord, SignalStatus, SignalStore};
use crate::store::SessionKey;

/// A session's owned key: (user, id).
type Key = (Option<String>, String);

/// Signals and schedules in process memory (the default signal store of an agent without a URL
/// journal).
#[derive(Debug, Default)]
pub struct InMemorySignalStore {
    inner: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    sessions: HashMap<Key, Session>,
    schedules: BTreeMap<String, (u64, ScheduleRecord)>,
    added: u64,
    fired: HashSet<(String, i64)>,
}

#[derive(Debug, Default)]
struct Session {
    signals: Vec<Stored>,
    dedupe: HashSet<String>,
    /// Signal id → position in `signals`.
    ids: HashMap<String, usize>,
}

#[derive(Debug)]
struct Stored {
    record: SignalRecord,
    claim_until: i64,
}

impl Stored {
    fn waiting(&self, now_ms: i64) -> bool {
        match self.record.status {
            SignalStatus::Pending => true,
            SignalStatus::Claimed => self.claim_until < now_ms,
            _ => false,
        }
    }
}

impl InMemorySignalStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn key(session: SessionKey<'_>) -> Key {
    session.to_owned_parts()
}

#[async_trait::async_trait]
impl SignalStore for InMemorySignalStore {
    async fn append(
        &self,
        session: SessionKey<'_>,
        signal: &RuntimeSignal,
        claim: Option<(&str, i64)>,
    ) -> Result<bool, Error> {
        let mut st = self.state();
        let entry = st.sessions.entry(key(session)).or_default();
        if entry.ids.contains_key(&signal.id) {
            return Ok(false);
        }
        if let Some(k) = &signal.dedupe_key
            && !entry.dedupe.insert(k.clone())
        {
            return Ok(false);
        }
        entry.ids.insert(signal.id.clone(), entry.signals.len());
        entry.signals.push(Stored {
            record: SignalRecord {
                signal: signal.clone(),
                user_id: session.user_id.map(str::to_string),
                session_id: session.session_id.to_string(),
                status: if claim.is_some() { SignalStatus::Claimed } else { SignalStatus::Pending },
                attention: None,
                run_id: None,
                handled_at: None,
            },
            claim_until: claim.map_or(0, |(_, until)| until),
        });
        Ok(true)
    }

    async fn signals(&self, session: SessionKey<'_>) -> Result<Vec<SignalRecord>, Error> {
        let st = self.state();
        Ok(st
            .sessions
            .get(&key(session))
            .map(|s| s.signals.iter().map(|s| s.record.clone()).collect())
            .unwrap_or_default())
    }

    async fn pending(&self, session: SessionKey<'_>, now_ms: i64) -> Result<Vec<SignalRecord>, Error> {
        let st = self.state();
        Ok(st
            .sessions
            .get(&key(session))
            .map(|s| s.signals.iter().filter(|s| s.waiting(now_ms)).map(|s| s.record.clone()).collect())
            .unwrap_or_default())
    }

    async fn pending_sessions(&self, now_ms: i64) -> Result<Vec<(Option<String>, String)>, Error> {
        let st = self.state();
        let mut keys: Vec<Key> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.signals.iter().any(|s| s.waiting(now_ms)))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        Ok(keys)
    }

    async fn claim(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        holder: &str,
        until_ms: i64,
    ) -> Result<bool, Error> {
        let _ = holder;
        let now = Utc::now().timestamp_millis();
        let mut st = self.state();
        let Some(s) = st.sessions.get_mut(&key(session)) else { return Ok(false) };
        let found = s.ids.get(signal_id).copied();
        match found.and_then(|i| s.signals.get_mut(i)) {
            Some(stored) if stored.waiting(now) => {
                stored.record.status = SignalStatus::Claimed;
                stored.claim_until = until_ms;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn settle(
        &self,
        session: SessionKey<'_>,
        signal_id: &str,
        attention: Attention,
        run_id: Option<&str>,
    ) -> Result<(), Error> {
        let mut st = self.state();
        let stored = st.sessions.get_mut(&key(session)).and_then(|s| {
            let i = s.ids.get(signal_id).copied()?;
            s.signals.get_mut(i)
        });
        let Some(stored) = stored else { return Err(Error::Config(format!("no signal `{signal_id}` in the session"))) };
        let r = &mut stored.record;
        r.attention = Some(attention);
        if attention == Attention::Observe {
            r.status = SignalStatus::Observed;
        } else {
            r.status = SignalStatus::Handled;
            r.run_id = run_id.map(str::to_string);
            r.handled_at = Some(Utc::now());
        }
        Ok(())
    }

    async fn take_observed(&self, session: SessionKey<'_>, run_id: &str) -> Result<Vec<SignalRecord>, Error> {
        let mut st = self.state();
        let Some(s) = st.sessions.get_mut(&key(session)) else { return Ok(Vec::new()) };
        let now = Utc::now();
        let mut taken = Vec::new();
        for stored in s.signals.iter_mut().filter(|s| s.record.status == SignalStatus::Observed) {
            stored.record.status = SignalStatus::Handled;
            stored.record.run_id = Some(run_id.to_string());
            stored.record.handled_at = Some(now);
            taken.push(stored.record.clone());
        }
        Ok(taken)
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord) -> Result<(), Error> {
        let mut st = self.state();
        st.added += 1;
        let order = st.schedules.get(&schedule.id).map_or(st.added, |(o, _)| *o);
        st.schedules.insert(schedule.id.clone(), (order, schedule.clone()));
        Ok(())
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, Error> {
        let st = self.state();
        let mut all: Vec<&(u64, ScheduleRecord)> = st.schedules.values().collect();
        all.sort_by_key(|(o, _)| *o);
        Ok(all.into_iter().map(|(_, r)| r.clone()).collect())
    }

    async fn remove_schedule(&self, id: &str) -> Result<bool, Error> {
        Ok(self.state().schedules.remove(id).is_some())
    }

    async fn claim_occurrence(&self, schedule_id: &str, at_ms: i64, holder: &str) -> Result<bool, Error> {
        let _ = holder;
        Ok(self.state().fired.insert((schedule_id.to_string(), at_ms)))
    }

    async fn advance_schedule(&self, id: &str, next_at: Option<DateTime<Utc>>) -> Result<(), Error> {
        if let Some((_, r)) = self.state().schedules.get_mut(id) {
            r.next_at = next_at;
        }
        Ok(())
    }
}
