//! Leases: which process drives a journaled run, how a dead owner is recognized, and the rules
//! every journal applies before a takeover, a write under a lease, or a decision.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::Error;
use crate::run::RunState;

/// Who drives a run, and for how long without renewing.
///
/// A lease also carries a fencing number: the journal keeps one per run, sets it from the lease
/// at [`Journal::begin`](super::Journal::begin) and increments it at each
/// [`Journal::acquire`](super::Journal::acquire) (which returns the new number). Every write under
/// a lease must carry the run's current number, so a writer that stalled while another took the
/// run over is refused ([`Error::LeaseLost`]) even when it comes back under the same owner id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The owner: one id per journal handle (per process).
    pub owner: Arc<str>,
    /// How long the lease lasts after each renewal.
    pub ttl: Duration,
    /// The fencing number this holder writes with (0 for a run it began itself).
    pub fence: u64,
}

impl Lease {
    /// A lease for `owner` lasting `ttl` after each renewal, with fencing number 0.
    pub fn new(owner: impl Into<Arc<str>>, ttl: Duration) -> Lease {
        Lease { owner: owner.into(), ttl, fence: 0 }
    }

    /// The same lease writing with fencing number `fence` (the one an acquire returned).
    pub fn fenced(&self, fence: u64) -> Lease {
        Lease { fence, ..self.clone() }
    }

    /// The fencing number as the SQL stores keep it.
    pub fn fence_i64(&self) -> i64 {
        i64::try_from(self.fence).unwrap_or(i64::MAX)
    }

    /// A lease for this process: a fresh owner id carrying this process's identity (host, boot,
    /// pid namespace, pid and start time; see [`owner_is_gone`]), so a process on the same machine
    /// can take over at once when the owner has died, without waiting for the lease to expire.
    pub fn for_this_process(ttl: Duration) -> Lease {
        let owner = match process_identity() {
            Some(identity) => format!("{}@{identity}", crate::new_id("owner")),
            None => crate::new_id("owner"),
        };
        Lease { owner: Arc::from(owner), ttl, fence: 0 }
    }

    /// The lease's length in milliseconds (saturating).
    pub fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// When this lease, taken or renewed at `now_ms`, expires (milliseconds since the epoch).
    pub fn expiry_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_add(self.ttl_ms())
    }

    /// Whether a held lease that expires at `expires_ms` is past half its life at `now_ms`, so a
    /// write should renew it (most writes then leave the run's row alone).
    pub fn due_for_renewal(&self, expires_ms: Option<i64>, now_ms: i64) -> bool {
        expires_ms.unwrap_or(0) < self.expiry_ms(now_ms).saturating_sub(self.ttl_ms() / 2)
    }
}

/// What a journal knows about one run's lease: what the lease rule reads. Every journal builds one
/// from its own storage and asks [`may_take_over`], [`may_write`] or [`may_decide`], so the rule is
/// written once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseView<'a> {
    /// The state last written.
    pub state: RunState,
    /// Whether the run has finished.
    pub finished: bool,
    /// Whether the run is journaled (a store may hold runs it never journaled).
    pub journaled: bool,
    /// The lease holder.
    pub owner: Option<&'a str>,
    /// When the holder's lease expires, in milliseconds since the epoch.
    pub expires_ms: Option<i64>,
    /// The run's current fencing number.
    pub fence: u64,
}

/// This process's identity as a lease owner carries it: `HOST/BOOT/PIDNS/PID/START` (Linux, from
/// `/proc`); `None` where it cannot be read.
fn process_identity() -> Option<String> {
    let pid = std::process::id();
    let start = process_start(pid)?;
    let host = read_trimmed("/proc/sys/kernel/hostname")?;
    let boot = read_trimmed("/proc/sys/kernel/random/boot_id")?;
    let pidns = pid_namespace("self")?;
    Some(format!("{host}/{boot}/{pidns}/{pid}/{start}"))
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty() && !text.contains(['/', '@'])).then(|| text.to_string())
}

/// The pid namespace's inode, such as `4026531836`.
fn pid_namespace(pid: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix("pid:[")?.strip_suffix(']').map(str::to_string)
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the lease owner `holder` ran on this machine, since its last boot, in this pid
/// namespace, and is no longer running (its pid is gone, or now names a process that started at
/// another time). `false` whenever that cannot be told: an owner on another machine, or one
/// without an identity, keeps its lease until it expires.
pub fn owner_is_gone(holder: &str) -> bool {
    let Some((_, identity)) = holder.split_once('@') else { return false };
    let Some(mine) = process_identity() else { return false };
    let theirs: Vec<&str> = identity.split('/').collect();
    let ours: Vec<&str> = mine.split('/').collect();
    let [host, boot, pidns, pid, start] = theirs[..] else { return false };
    if ours.len() != 5 || [host, boot, pidns] != ours[..3] {
        return false;
    }
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else { return false };
    process_start(pid) != Some(start)
}

/// The lease rule for taking a run over ([`Journal::acquire`]): an unknown or unjournaled run is
/// [`Error::RunNotFound`]; a finished one is [`Error::RunFinished`] (never replayed); one whose
/// lease another owner holds until after `now_ms` is [`Error::LeaseHeld`], unless that owner ran
/// on this machine and is gone ([`owner_is_gone`]); anything else may be taken.
pub fn may_take_over(run_id: &str, run: Option<LeaseView<'_>>, lease: &Lease, now_ms: i64) -> Result<(), Error> {
    let Some(run) = run else { return Err(Error::RunNotFound(run_id.to_string())) };
    if run.finished {
        return Err(Error::RunFinished { run_id: run_id.to_string(), state: run.state });
    }
    if !run.journaled {
        return Err(Error::RunNotFound(run_id.to_string()));
    }
    if let (Some(holder), Some(expires)) = (run.owner, run.expires_ms)
        && expires > now_ms
        && holder != &*lease.owner
        && !owner_is_gone(holder)
    {
        let until = DateTime::<Utc>::from_timestamp_millis(expires).map(|t| t.to_rfc3339()).unwrap_or_default();
        return Err(Error::LeaseHeld { run_id: run_id.to_string(), owner: holder.to_string(), until });
    }
    Ok(())
}

/// The lease rule for a write under a lease ([`Journal::append`], [`Journal::end`],
/// [`Journal::renew`]): an unknown run is [`Error::RunNotFound`]; a finished one, one another
/// owner holds, or one whose fencing number is not the writer's (it was taken over since) is
/// [`Error::LeaseLost`].
pub fn may_write(run_id: &str, run: Option<LeaseView<'_>>, lease: &Lease) -> Result<(), Error> {
    let Some(run) = run else { return Err(Error::RunNotFound(run_id.to_string())) };
    if run.finished || run.owner != Some(&*lease.owner) || run.fence != lease.fence {
        return Err(Error::LeaseLost { run_id: run_id.to_string() });
    }
    Ok(())
}

/// The rule for a decision on a suspended run ([`Journal::decide`]), which needs no lease: an
/// unknown run is [`Error::RunNotFound`], a finished one [`Error::RunFinished`].
pub fn may_decide(run_id: &str, run: Option<LeaseView<'_>>) -> Result<(), Error> {
    let Some(run) = run else { return Err(Error::RunNotFound(run_id.to_string())) };
    if run.finished {
        return Err(Error::RunFinished { run_id: run_id.to_string(), state: run.state });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(owner: &str) -> Lease {
        Lease::new(owner, Duration::from_secs(30))
    }

    fn view(owner: Option<&str>, expires_ms: Option<i64>) -> LeaseView<'_> {
        LeaseView { state: RunState::Running, finished: false, journaled: true, owner, expires_ms, fence: 0 }
    }

    #[test]
    fn takeover_follows_the_rule() {
        let me = lease("me");
        assert!(matches!(may_take_over("r", None, &me, 0), Err(Error::RunNotFound(_))));
        let finished = LeaseView { finished: true, state: RunState::Completed, ..view(None, None) };
        assert!(matches!(
            may_take_over("r", Some(finished), &me, 0),
            Err(Error::RunFinished { state: RunState::Completed, .. })
        ));
        let unjournaled = LeaseView { journaled: false, ..view(None, None) };
        assert!(matches!(may_take_over("r", Some(unjournaled), &me, 0), Err(Error::RunNotFound(_))));
        match may_take_over("r", Some(view(Some("other"), Some(1_000))), &me, 999) {
            Err(Error::LeaseHeld { owner, until, .. }) => {
                assert_eq!(owner, "other");
                assert!(until.starts_with("1970-01-01T00:00:01"), "{until}");
            }
            other => panic!("{other:?}"),
        }
        assert!(may_take_over("r", Some(view(Some("other"), Some(1_000))), &me, 1_000).is_ok(), "expired");
        assert!(may_take_over("r", Some(view(Some("me"), Some(1_000))), &me, 0).is_ok(), "ours");
        assert!(may_take_over("r", Some(view(None, None)), &me, 0).is_ok(), "free");
    }

    #[test]
    fn writes_need_the_lease() {
        let me = lease("me");
        assert!(matches!(may_write("r", None, &me), Err(Error::RunNotFound(_))));
        assert!(matches!(may_write("r", Some(view(Some("other"), None)), &me), Err(Error::LeaseLost { .. })));
        assert!(matches!(may_write("r", Some(view(None, None)), &me), Err(Error::LeaseLost { .. })));
        let finished = LeaseView { finished: true, ..view(Some("me"), None) };
        assert!(matches!(may_write("r", Some(finished), &me), Err(Error::LeaseLost { .. })));
        assert!(may_write("r", Some(view(Some("me"), None)), &me).is_ok());
        // Taken over since (the run's fence moved on): the same owner is fenced out.
        let moved = LeaseView { fence: 3, ..view(Some("me"), None) };
        assert!(matches!(may_write("r", Some(moved), &me), Err(Error::LeaseLost { .. })));
        assert!(may_write("r", Some(moved), &me.fenced(3)).is_ok());
        assert!(matches!(may_decide("r", Some(finished)), Err(Error::RunFinished { .. })));
        assert!(may_decide("r", Some(view(None, None))).is_ok());
    }

    #[test]
    fn expiry_saturates_and_renewal_waits_for_half_the_lease() {
        let me = lease("me");
        assert_eq!(me.expiry_ms(1_000), 31_000);
        assert_eq!(Lease::new("x", Duration::MAX).expiry_ms(5), i64::MAX);
        assert!(!me.due_for_renewal(Some(31_000), 1_000));
        assert!(!me.due_for_renewal(Some(31_000), 15_999));
        assert!(me.due_for_renewal(Some(31_000), 16_001));
        assert!(me.due_for_renewal(None, 0));
    }
}

#[cfg(test)]
mod owner_tests {
    use super::*;

    #[test]
    fn a_live_owner_is_not_gone_and_a_dead_one_is() {
        let me = Lease::for_this_process(Duration::from_secs(30));
        if !me.owner.contains('@') {
            eprintln!("skipped: no /proc process identity on this system");
            return;
        }
        assert!(!owner_is_gone(&me.owner), "this process is alive: {}", me.owner);
        // The same identity with another start time: the pid now names another process.
        let (id, identity) = me.owner.split_once('@').unwrap();
        let mut parts: Vec<String> = identity.split('/').map(str::to_string).collect();
        parts[4] = "1".into();
        assert!(owner_is_gone(&format!("{id}@{}", parts.join("/"))));
        // Another machine (another boot id): never judged from here.
        let mut other = identity.split('/').map(str::to_string).collect::<Vec<_>>();
        other[1] = "not-this-boot".into();
        other[4] = "1".into();
        assert!(!owner_is_gone(&format!("{id}@{}", other.join("/"))));
        assert!(!owner_is_gone("owner_without_identity"));
        assert!(!owner_is_gone("x@garbage"));
    }
}
