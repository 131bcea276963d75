//! Schedules one run: it waits for the session's earlier runs, then drives the run context through
//! `begin` (or `resume`), the architecture and `finish`, under cancellation, the timeout and (for
//! journaled runs) the lease heartbeat, and publishes the result. Every side effect is the
//! runtime's (`crate::runtime`).

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::AgentInner;
use super::input::RunRequest;
use super::session::SessionInner;
use crate::error::{RunError, RunErrorKind};
use crate::event::{EventKind, OutputInvalid, SignalEvent};
use crate::message::Message;
use crate::output::OutputSchema;
use crate::runtime::{Live, Outcome, RunCx, RunLog, RunPlan};
use crate::store::{JournaledRun, SessionRecord};
use crate::telemetry;

/// How a run starts: fresh from a request, or resumed from its journal.
///
/// Both are boxed: the run's task keeps its arguments for its whole life (an `async fn`'s
/// parameters are fields of its future), so a large `Start` inline would be held by every
/// in-flight run, long after `begin` has used it. Boxed, the request is freed once the run began.
pub(crate) enum Start {
    /// A new run; with the signal that started it, if one did.
    Fresh(Box<(RunRequest, Option<SignalEvent>)>),
    /// A journaled run, and the architecture it runs under when its record names another one
    /// than the agent's.
    Resume(Box<JournaledRun>, Option<Arc<dyn crate::architecture::Architecture>>),
}

/// The whole life of a run: wait for the session's earlier runs, execute, seal, persist, publish.
pub(crate) async fn drive(
    agent: Arc<AgentInner>,
    live: Arc<Live>,
    session: Arc<SessionInner>,
    log: Arc<RunLog>,
    start: Start,
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
) {
    let mut previous = previous;
    if let Some(prev) = previous.as_mut() {
        tokio::select! {
            biased;
            _ = log.cancel.cancelled() => {}
            _ = prev => { previous = None; }
        }
    }
    let env = &agent.env;
    let span = telemetry::run_span(&env.name, env.model.as_ref(), &log.scope());
    let mut cx = RunCx::new(env.clone(), live, log.clone(), agent.max_turns);
    // Runs of a session other processes may share wait for them too, through the store.
    let holder = (!session.fresh).then(|| format!("{}#{}", env.stores.lease.owner, log.run_id));
    let locked = match &holder {
        Some(holder) if !log.cancel.is_cancelled() => {
            lock_session(&agent, &session, &log, holder, matches!(start, Start::Fresh(..))).await
        }
        _ => Ok(()),
    };
    let cancelled = || RunError::new(RunErrorKind::Cancelled, "the run was cancelled before it started");
    let locked = locked.and_then(|()| if log.cancel.is_cancelled() { Err(cancelled()) } else { Ok(()) });
    let outcome = match locked {
        Err(error) => {
            // A resumed run that never started is still the journal's.
            if matches!(start, Start::Resume(..)) {
                cx.set_journaled();
            }
            Err(error)
        }
        Ok(()) => {
            let run = execute(&agent, &session, &log, &mut cx, start).instrument(span.clone());
            match &holder {
                Some(holder) => {
                    tokio::select! {
                        biased;
                        e = keep_session_lock(&agent, &session, holder) => Err(e),
                        r = run => r,
                    }
                }
                None => run.await,
            }
        }
    };
    // A run cancelled by a signal ends `cancelled` naming it.
    let outcome = match (outcome, log.cancel_reason()) {
        (Err(mut error), Some((reason, message))) if error.kind == RunErrorKind::Cancelled => {
            error.reason = Some(reason.clone());
            error.message = message.clone();
            Err(error)
        }
        (outcome, _) => outcome,
    };
    // `finish` releases the session's run lock (in the journal's final commit where it can).
    // Boxed: `finish` (the run context, the transcript, the stores' writes) is a large future that
    // is live only at the end; inline, every in-flight run's task would reserve room for it.
    cx.set_session_lock(holder);
    let result = Box::pin(cx.finish(outcome)).await;
    telemetry::record_run(&span, &result);
    log.publish();
    session.lock().live.remove(&*log.run_id);
    // A run cancelled while queued still holds its place: the next run starts only after the
    // earlier ones have ended.
    if let Some(prev) = previous {
        let _ = prev.await;
    }
    drop(done);
}

/// Takes the session's run lock in the store, waiting (polling, with backoff) while a run of
/// another process holds it. For a fresh run (`open`), a session whose current record the store
/// does not have yet is opened in the same step.
async fn lock_session(
    agent: &AgentInner,
    session: &SessionInner,
    log: &RunLog,
    holder: &str,
    open: bool,
) -> Result<(), RunError> {
    let stores = &agent.env.stores;
    let mut delay = std::time::Duration::from_millis(20);
    loop {
        let until = stores.lease.expiry_ms(chrono::Utc::now().timestamp_millis());
        let locked = match session_record(session).filter(|_| open) {
            Some(record) => {
                let locked = stores.sessions.lock_and_open(&record, holder, until).await;
                if matches!(locked, Ok(true)) {
                    session.lock().synced = true;
                }
                locked
            }
            None => stores.sessions.lock_session(session.key(), holder, until).await,
        };
        match locked {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => {
                return Err(RunError::new(RunErrorKind::Store, format!("taking the session's run lock: {e}")));
            }
        }
        tokio::select! {
            _ = log.cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_millis(500));
    }
}

/// Renews the session's run lock while the run goes on; returns only when it is lost.
async fn keep_session_lock(agent: &AgentInner, session: &SessionInner, holder: &str) -> RunError {
    let stores = &agent.env.stores;
    loop {
        tokio::time::sleep(stores.lease.ttl / 3).await;
        let until = stores.lease.expiry_ms(chrono::Utc::now().timestamp_millis());
        match stores.sessions.lock_session(session.key(), holder, until).await {
            Ok(true) => {}
            Ok(false) => {
                return RunError::new(RunErrorKind::Store, "the session's run lock was taken by another process");
            }
            Err(e) => tracing::warn!(error = %e, "renewing the session's run lock failed"),
        }
    }
}

/// Begins or resumes the run, then runs the architecture under the timeout, cancellation and (for
/// journaled runs) the lease.
async fn execute(agent: &AgentInner, session: &SessionInner, log: &RunLog, cx: &mut RunCx, start: Start) -> Outcome {
    let mut architecture = agent.architecture.clone();
    let (schema, timeout) = match start {
        // Boxed: seeding is a large future that is live only before the first model call.
        Start::Fresh(fresh) => Box::pin(begin(agent, session, cx, fresh)).await?,
        Start::Resume(stored, recorded) => {
            if let Some(recorded) = recorded {
                architecture = recorded;
            }
            cx.resume(*stored)?
        }
    };
    // The timer and the heartbeat are boxed, and made only when the run has a timeout or a journal:
    // a run without them does not carry their room.
    let mut timer = timeout.map(|t| Box::pin(tokio::time::sleep(t)));
    let deadline = async {
        match timer.as_mut() {
            Some(timer) => timer.await,
            None => std::future::pending().await,
        }
    };
    let journaled = cx.is_journaled();
    // The lease is renewed at every journal write, and here between writes (a long tool call).
    let heartbeat = async {
        if journaled { Box::pin(renew_lease(agent, log)).await } else { std::future::pending::<RunError>().await }
    };
    let body = body(agent, architecture.as_ref(), log, cx, schema.as_ref());
    tokio::select! {
        biased;
        _ = log.cancel.cancelled() => Err(RunError::new(RunErrorKind::Cancelled, "the run was cancelled")),
        e = heartbeat => Err(e),
        _ = deadline => Err(RunError::interrupted(
            RunErrorKind::Timeout,
            "timeout",
            format!("the run did not finish within its timeout of {} ms", timeout.map(|t| t.as_millis()).unwrap_or(0)),
        )),
        r = body => r,
    }
}

/// The session's record to open in the store, when the store does not have its current metadata.
fn session_record(session: &SessionInner) -> Option<SessionRecord> {
    let st = session.lock();
    (!st.synced).then(|| SessionRecord {
        id: session.id.to_string(),
        user_id: session.user_id.as_deref().map(str::to_string),
        metadata: st.metadata.clone(),
        extensions: st.extensions.clone(),
    })
}

/// Seeds and starts a fresh run (`RunCx::begin`); its output schema and timeout.
async fn begin(
    agent: &AgentInner,
    session: &SessionInner,
    cx: &mut RunCx,
    mut fresh: Box<(RunRequest, Option<SignalEvent>)>,
) -> Result<(Option<OutputSchema>, Option<std::time::Duration>), RunError> {
    let received = fresh.1.take();
    let mut plan = plan(agent, session, &fresh.0);
    plan.received = received;
    let began = cx.begin(&plan).await;
    if cx.session_opened() {
        session.lock().synced = true;
    }
    began?;
    Ok((plan.output_schema, plan.timeout))
}

/// Renews a journaled run's lease between journal writes; returns only when it is lost.
async fn renew_lease(agent: &AgentInner, log: &RunLog) -> RunError {
    let stores = &agent.env.stores;
    let Some(journal) = crate::runtime::child::journal_of(stores, log) else {
        return std::future::pending::<RunError>().await;
    };
    loop {
        tokio::time::sleep(stores.lease.ttl / 3).await;
        let lease = stores.lease.fenced(log.fence.load(std::sync::atomic::Ordering::Acquire));
        match journal.renew(&log.run_id, &lease).await {
            Ok(()) => {}
            Err(e @ (crate::Error::LeaseLost { .. } | crate::Error::RunNotFound(_))) => {
                return RunError::new(RunErrorKind::Store, format!("journal: {e}"));
            }
            Err(e) => tracing::warn!(run_id = %log.run_id, error = %e, "renewing the run's lease failed"),
        }
    }
}

/// What a fresh run is asked to do, from its request and the agent's defaults.
fn plan<'a>(agent: &'a AgentInner, session: &SessionInner, request: &'a RunRequest) -> RunPlan<'a> {
    // The first run of a session whose id this process made has no history to read: nothing can
    // have been written under that id. Later runs (and every run of a named session) read it.
    let first = !std::mem::replace(&mut session.lock().seeded, true);
    RunPlan {
        history: !(session.fresh && first),
        open_session: session_record(session),
        context: &request.context,
        metadata: &request.metadata,
        output_schema: request.output_schema.clone().or_else(|| agent.output_schema.clone()),
        max_turns: request.max_turns.unwrap_or(agent.max_turns),
        timeout: request.timeout.or(agent.timeout),
        architecture: agent.architecture.name(),
        signals: !session.fresh,
        received: None,
    }
}

/// Runs the architecture, then validates structured output (sending validation errors back), then
/// judges the acceptance criteria when the profile's gate is on (sending failed criteria back, up
/// to its rounds). A steering message that arrived during the last model call sends the run back
/// to the model before any of that.
async fn body(
    agent: &AgentInner,
    architecture: &dyn crate::architecture::Architecture,
    log: &RunLog,
    cx: &mut RunCx,
    schema: Option<&OutputSchema>,
) -> Outcome {
    let gate = &agent.runtime.gate;
    let criteria: Vec<String> = if gate.enabled {
        let mut all = agent.runtime.criteria.clone();
        for c in log.input().criteria() {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
        all
    } else {
        Vec::new()
    };
    let mut attempt = 0u32;
    let mut round = 0u32;
    loop {
        let text = match architecture.run(cx).await {
            Ok(text) => text,
            Err(error) => match cx.handed_off() {
                // A `transfer_to_<name>` call: the run completes, handing the conversation over.
                Some(target) => {
                    let to = target.to_string();
                    cx.emit(EventKind::Handoff(crate::event::HandoffEvent {
                        from: agent.env.name.clone(),
                        to: to.clone(),
                    }));
                    return Ok((format!("{}{to}", crate::runtime::HANDOFF_ANSWER), None));
                }
                None => return Err(error),
            },
        };
        if cx.has_steering() {
            continue;
        }
        let parsed = match schema {
            None => None,
            Some(schema) => match schema.parse(&text) {
                Ok(value) => Some(value),
                Err(problem) => {
                    attempt += 1;
                    cx.emit(EventKind::OutputInvalid(OutputInvalid { attempt, error: problem.clone() }));
                    if attempt > agent.env.limits.output_retries {
                        let mut error = RunError::new(
                            RunErrorKind::OutputValidation,
                            format!(
                                "the final answer does not match the output schema `{}` after {attempt} attempt(s): {problem}",
                                schema.name()
                            ),
                        );
                        error.raw_output = Some(text);
                        return Err(error);
                    }
                    cx.messages.push(Message::user(format!(
                        "Your answer does not match the required JSON schema: {problem}\n\
                         Reply with only the corrected JSON value, no prose and no code fences."
                    )));
                    continue;
                }
            },
        };
        if criteria.is_empty() {
            return Ok((text, parsed));
        }
        round += 1;
        // Boxed: the judge's call is a large future most runs never make.
        let verdicts = Box::pin(cx.judge_criteria(round, &criteria, &text)).await?;
        let failed: Vec<_> = verdicts.iter().filter(|v| !v.passed).collect();
        if failed.is_empty() {
            return Ok((text, parsed));
        }
        if round >= gate.max_rounds.max(1) {
            if gate.best_effort {
                return Ok((text, parsed));
            }
            let names: Vec<&str> = failed.iter().map(|v| v.criterion.as_str()).collect();
            let mut error = RunError::interrupted(
                RunErrorKind::Criteria,
                format!("criteria: {}", names.join("; ")),
                format!("the answer still fails {} criteria after {round} round(s) of judging", failed.len()),
            );
            error.raw_output = Some(text);
            return Err(error);
        }
        let mut feedback = String::from(
            "Your answer does not meet these acceptance criteria yet. Keep working until it does, then give the \
             complete final answer again.",
        );
        for v in &failed {
            feedback.push_str(&format!("\n- {}: {}", v.criterion, v.reason));
        }
        cx.messages.push(Message::user(feedback));
    }
}
