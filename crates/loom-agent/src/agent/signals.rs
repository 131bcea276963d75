//! Receiving signals: `Agent::receive`, `Session::receive`, `Session::signals`. A signal is stored
//! durably (a duplicate dedupe key stops there), claimed by the receiving process (so that one
//! process decides on it), and the agent's attention policy decides: ignore, observe (the
//! session's next run sees it), run (a run with the signal as input, queued behind the session's
//! runs in flight) or interrupt (those runs are cancelled, naming the signal, and the new run
//! starts after them). A decision that starts no run is stored with the signal, in one write.

use std::sync::Arc;

use super::run::Run;
use super::{Agent, RunRequest, Session, SessionConfig};
use crate::error::Error;
use crate::event::SignalEvent;
use crate::signal::{Attention, Incoming, RuntimeSignal, SessionState, SignalAdapter, SignalRecord, SignalStore};

/// What [`Session::receive`] did with a signal.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Receipt {
    /// The signal's id.
    pub signal_id: String,
    /// The session already had a signal with the same dedupe key: nothing was stored or done.
    pub duplicate: bool,
    /// What the attention policy decided (`None` for a duplicate, or a signal another process
    /// claimed first).
    pub attention: Option<Attention>,
    /// The run the signal started (attention `run` or `interrupt`).
    pub run: Option<Run>,
    /// The runs the signal cancelled (attention `interrupt`).
    pub interrupted: Vec<String>,
}

impl Receipt {
    pub(crate) fn nothing(signal_id: String, duplicate: bool) -> Self {
        Receipt { signal_id, duplicate, attention: None, run: None, interrupted: Vec::new() }
    }
}

impl Agent {
    /// Receives a signal (or a raw event, mapped by `adapter`) in the session `session_id` of no
    /// user: see [`Session::receive`]. For a user's session, open it with
    /// [`SessionConfig::user`] and call [`Session::receive`].
    pub async fn receive(
        &self,
        incoming: impl Into<Incoming>,
        adapter: Option<&SignalAdapter>,
        session_id: &str,
    ) -> Result<Receipt, Error> {
        self.session(SessionConfig::new(session_id)).receive(incoming, adapter).await
    }

    /// Where the agent keeps signals and schedules.
    pub fn signal_store(&self) -> &Arc<dyn SignalStore> {
        &self.inner.env.stores.signals
    }
}

impl Session {
    /// Receives a signal, or a raw JSON event that `adapter` maps to one (the seed's
    /// `session.receive(event_or_signal, adapter)`).
    ///
    /// The signal is stored in the session's signal store (durably, with a URL journal); a second
    /// signal with the same dedupe key is dropped (`Receipt::duplicate`) and nothing is done with
    /// it. The agent's [attention policy](crate::AgentBuilder::attention) decides (it is asked
    /// just before the signal is stored: a decision that starts no run is stored with the
    /// signal, in one write):
    /// - `ignore`: stored, nothing else;
    /// - `observe`: kept for the session's next run, which receives it as context (a system
    ///   message before its input) and emits `signal.handled`;
    /// - `run`: a run starts with the signal as its input (after the session's runs in flight),
    ///   and emits `signal.received` after `run.started`;
    /// - `interrupt`: the session's runs in flight in this process are cancelled (they end
    ///   `cancelled` with reason `signal: ID`), then a run starts as for `run`.
    ///
    /// # Errors
    /// A raw event without an adapter is [`Error::Config`]; a store failure is returned as it is.
    pub async fn receive(
        &self,
        incoming: impl Into<Incoming>,
        adapter: Option<&SignalAdapter>,
    ) -> Result<Receipt, Error> {
        let signal = incoming.into().into_signal(adapter)?;
        let agent = &self.inner.agent;
        let store = agent.signal_store().clone();
        let lease = &agent.inner.env.stores.lease;
        let until = lease.expiry_ms(chrono::Utc::now().timestamp_millis());
        // The policy decides first (it reads only the signal and the session's runs in flight):
        // a decision that starts no run is stored with the signal, in one write.
        let decided = if signal.kind == crate::signal::TOOL_RESULT {
            None
        } else {
            let in_flight = self.runs_in_flight();
            let state = SessionState::new(self.user_id(), self.id()).with_runs_in_flight(in_flight.len());
            let attention = agent.inner.attention.decide(&signal, &state);
            if matches!(attention, Attention::Ignore | Attention::Observe) {
                if !store.append_decided(self.key(), &signal, attention, (&*lease.owner, until)).await? {
                    tracing::debug!(session_id = %self.id(), signal_id = %signal.id, "duplicate signal dropped");
                    return Ok(Receipt::nothing(signal.id, true));
                }
                tracing::debug!(session_id = %self.id(), signal_id = %signal.id, %attention, "signal handled");
                let mut receipt = Receipt::nothing(signal.id, false);
                receipt.attention = Some(attention);
                return Ok(receipt);
            }
            Some((attention, in_flight))
        };
        // Stored already claimed by this process, which acts on it now.
        if !store.append(self.key(), &signal, Some((&*lease.owner, until))).await? {
            tracing::debug!(session_id = %self.id(), signal_id = %signal.id, "duplicate signal dropped");
            return Ok(Receipt::nothing(signal.id, true));
        }
        self.handle(signal, true, decided).await
    }

    /// The session's signals, oldest first, with what was done with each.
    pub async fn signals(&self) -> Result<Vec<SignalRecord>, Error> {
        self.inner.agent.signal_store().signals(self.key()).await
    }

    /// Handles the session's signals that wait for a decision: stored while no process was up
    /// (`loom signal`), or claimed by a process that died before deciding. A session opened by id
    /// on an agent with a durable signal store does this by itself when it is opened; the worker
    /// ([`Agent::worker`]) does it for every session.
    pub async fn process_pending(&self) -> Result<Vec<Receipt>, Error> {
        let store = self.inner.agent.signal_store().clone();
        let now = chrono::Utc::now().timestamp_millis();
        let mut receipts = Vec::new();
        for record in store.pending(self.key(), now).await? {
            receipts.push(self.handle(record.signal, false, None).await?);
        }
        Ok(receipts)
    }

    /// Claims a stored signal (unless `claimed`: stored claimed by this process), asks the policy
    /// (unless it was asked already: `decided`, with the runs in flight it saw), and acts.
    async fn handle(
        &self,
        signal: RuntimeSignal,
        claimed: bool,
        decided: Option<(Attention, Vec<Run>)>,
    ) -> Result<Receipt, Error> {
        let agent = &self.inner.agent;
        let store = agent.signal_store().clone();
        let lease = &agent.inner.env.stores.lease;
        let until = lease.expiry_ms(chrono::Utc::now().timestamp_millis());
        if !claimed && !store.claim(self.key(), &signal.id, &lease.owner, until).await? {
            return Ok(Receipt::nothing(signal.id, false));
        }
        if signal.kind == crate::signal::TOOL_RESULT {
            return self.complete_from(signal).await;
        }
        let (attention, in_flight) = match decided {
            Some(decided) => decided,
            None => {
                let in_flight = self.runs_in_flight();
                let state = SessionState::new(self.user_id(), self.id()).with_runs_in_flight(in_flight.len());
                (agent.inner.attention.decide(&signal, &state), in_flight)
            }
        };
        let mut receipt = Receipt::nothing(signal.id.clone(), false);
        receipt.attention = Some(attention);
        match attention {
            Attention::Ignore | Attention::Observe => {}
            Attention::Run | Attention::Interrupt => {
                if attention == Attention::Interrupt {
                    let reason = format!("signal: {}", signal.id);
                    let message = format!(
                        "the run was cancelled: a {} signal from {} interrupted it ({})",
                        signal.urgency, signal.source, signal.text
                    );
                    for run in &in_flight {
                        run.log.cancel_because(reason.clone(), message.clone());
                        receipt.interrupted.push(run.id().to_string());
                    }
                }
                let request = RunRequest::new(signal.to_prompt())
                    .metadata("signal_id", serde_json::Value::String(signal.id.clone()));
                receipt.run = Some(self.start_with(request, Some(SignalEvent::of(&signal, attention))));
            }
        }
        let run_id = receipt.run.as_ref().map(|r| r.id().to_string());
        store.settle(self.key(), &signal.id, attention, run_id.as_deref()).await?;
        tracing::debug!(session_id = %self.id(), signal_id = %signal.id, %attention, "signal handled");
        Ok(receipt)
    }

    /// A `tool.result` signal: the background result continues its run (of this session only).
    async fn complete_from(&self, signal: RuntimeSignal) -> Result<Receipt, Error> {
        let agent = &self.inner.agent;
        let store = agent.signal_store().clone();
        let field = |k: &str| signal.payload.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let (Some(run_id), Some(call_id)) = (field("run_id"), field("call_id")) else {
            store.settle(self.key(), &signal.id, Attention::Ignore, None).await?;
            return Err(Error::Config("a tool.result signal needs `run_id` and `call_id` in its payload".into()));
        };
        let output = field("output").unwrap_or_default();
        let failed = signal.payload.get("is_error").and_then(|v| v.as_bool()).unwrap_or(false);
        // The run must be this session's (and this user's): a signal cannot reach another's run.
        let ours = match agent.journal() {
            Some(journal) => journal
                .load(&run_id)
                .await?
                .is_some_and(|r| r.record.session_id == self.id() && r.record.user_id.as_deref() == self.user_id()),
            None => false,
        };
        let outcome = if !ours {
            Err(Error::RunNotFound(run_id.clone()))
        } else if failed {
            agent.complete_tool(&run_id, &call_id, Err::<String, _>(crate::error::ToolError::new(output))).await
        } else {
            agent.complete_tool(&run_id, &call_id, output).await
        };
        let mut receipt = Receipt::nothing(signal.id.clone(), false);
        match outcome {
            Ok(run) => {
                store.settle(self.key(), &signal.id, Attention::Run, Some(run.id())).await?;
                receipt.attention = Some(Attention::Run);
                receipt.run = Some(run);
                Ok(receipt)
            }
            Err(e) => {
                store.settle(self.key(), &signal.id, Attention::Ignore, None).await?;
                Err(e)
            }
        }
    }

    /// The session's runs in flight in this process (queued or running).
    fn runs_in_flight(&self) -> Vec<Run> {
        let st = self.inner.lock();
        let mut runs: Vec<Run> = st.live.values().filter(|r| !r.state().is_terminal()).cloned().collect();
        runs.sort_by(|a, b| a.id().cmp(b.id()));
        runs
    }

    /// On an agent whose signals outlive the process, handles in the background the signals that
    /// wait for this session (see [`Session::process_pending`]).
    pub(crate) fn sweep_pending(&self) {
        if !self.inner.agent.inner.signals_durable {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let session = self.clone();
        handle.spawn(async move {
            if let Err(e) = session.process_pending().await {
                tracing::warn!(session_id = %session.id(), error = %e, "handling the session's pending signals failed");
            }
        });
    }
}
