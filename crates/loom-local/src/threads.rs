//! How many threads a generation step runs on, chosen from measured step times.
//!
//! A decode step is thirty-odd small matrix-vector products, and candle 0.11 splits each over its
//! barrier pool (`candle_core::utils::barrier_pool`, one worker per core but the caller) and joins at
//! its end, the caller spin-waiting. On a quiet 2-core machine two threads are faster; when another
//! process holds a core, a descheduled thread holds up every join while the other spins, and two
//! threads become several times slower than one. So generation keeps a running average of the step
//! time for one thread and for all threads, runs on the faster, and re-measures the other now and
//! then because the load on the machine changes: every [`PROBE_EVERY`] steps at first, less often
//! while the other keeps losing by far ([`next_interval`]), soon when all threads get slower
//! ([`slowed`]). A generation starts on one thread, and all threads are probed only when a core
//! was idle meanwhile (`/proc/stat`, [`room_for_all`]): with every core busy, a single step on all
//! threads costs several steps on one (4-8x measured under one `yes` on 2 cores). Idle means idle:
//! where lower-priority background work fills the idle time, generation stays on one thread
//! (`LOOM_LOCAL_IDLE_GATE=0` probes all threads regardless).
//!
//! One thread means: steps run on barrier-pool worker 0, where candle runs every split inline (no
//! joins), in stretches of up to [`STRETCH_STEPS`] per hand-off, while the caller sleeps on a
//! channel instead of spinning. candle's other
//! splits (RMS norm, rotary embedding, softmax) go through rayon; on worker 0 they run in a rayon
//! pool of that thread alone, so they too stay on the one thread.
//! `LOOM_LOCAL_ADAPTIVE=0` turns this off (every step on all threads, as before).

use std::ops::ControlFlow;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use loom_core::error::Error;

/// Steps between two probes of the thread count not in use, at first and whenever the step times
/// move; [`next_interval`] backs it off up to [`MAX_PROBE_EVERY`] while probes keep losing.
pub(crate) const PROBE_EVERY: usize = 64;
/// The longest interval between two probes.
pub(crate) const MAX_PROBE_EVERY: usize = 512;
/// Steps per probe (the first one after a switch also warms the other path up).
const PROBE_STEPS: usize = 2;
/// Weight of a new step time in the running average.
const ALPHA: f64 = 0.3;
/// One-thread steps per hand-off to worker 0 at most: a stretch holds candle's pool, so other users
/// of it (an embedding, say) wait for the stretch, not the whole generation.
const STRETCH_STEPS: usize = 8;
/// Steps on one thread a generation starts with, before the first probe of all threads.
const FIRST_STEPS: usize = 4;
/// Fewer CPU ticks than this since the mark (all CPUs together) say nothing about idleness.
const MIN_TICKS: u64 = 4;
/// The choice not in use measured at least this many times slower doubles the probe interval.
const LOSING: f64 = 1.5;
/// All threads, in use, getting this many times slower than at the last probe means the load
/// changed: a probe of one thread comes soon, and the interval goes back to [`PROBE_EVERY`].
const SHIFTED: f64 = 1.5;

/// Cumulative CPU time of the machine in ticks: idle (with I/O wait) and in total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    /// Idle and I/O-wait ticks, all CPUs together.
    pub(crate) idle: u64,
    /// All ticks, all CPUs together.
    pub(crate) total: u64,
}

/// The machine's CPU ticks from the first line of `/proc/stat` (`None` where there is none).
fn proc_stat_ticks() -> Option<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

/// Parses `cpu  user nice system idle iowait irq softirq steal ...`.
pub(crate) fn parse_cpu_line(line: &str) -> Option<CpuTicks> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.map_while(|f| f.parse().ok()).take(8).collect();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some(CpuTicks { idle, total: values.iter().sum() })
}

/// Whether the CPU time between `mark` and `now` left room for `threads` threads: at least half
/// of the `threads - 1` cores beyond the one a one-thread step used were idle (a quarter of the
/// machine's time on 2 cores). True when too little time passed to tell.
pub(crate) fn room_for_all(mark: CpuTicks, now: CpuTicks, threads: usize) -> bool {
    let total = now.total.saturating_sub(mark.total);
    let idle = now.idle.saturating_sub(mark.idle);
    if total < MIN_TICKS || threads < 2 {
        return true;
    }
    let threads = threads as u64;
    idle.saturating_mul(2 * threads) >= total.saturating_mul(threads - 1)
}

fn adaptive_enabled() -> bool {
    !std::env::var("LOOM_LOCAL_ADAPTIVE").is_ok_and(|v| v == "0")
}

/// The steps from the end of a probe to the start of the next one, given the step times the probe
/// left for the slower choice (`loser`) and the faster (`winner`) and the last `interval`: doubled
/// (up to [`MAX_PROBE_EVERY`]) while the choice not in use loses by [`LOSING`] or more, else back
/// to [`PROBE_EVERY`].
pub(crate) fn next_interval(interval: usize, loser: f64, winner: f64) -> usize {
    if loser >= winner * LOSING { interval.saturating_mul(2).clamp(PROBE_EVERY, MAX_PROBE_EVERY) } else { PROBE_EVERY }
}

/// Whether the step time of all threads, in use, went from `then` (at the last probe) to `now`,
/// slower by a factor of [`SHIFTED`] or more.
pub(crate) fn slowed(then: f64, now: f64) -> bool {
    now > then * SHIFTED
}

/// Tells the caller the step is over when dropped, so a panicking step cannot leave it asleep.
struct Done<'a>(&'a SyncSender<()>);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

thread_local! {
    /// A rayon pool of the current thread alone, built on first use (on barrier-pool worker 0):
    /// inside it candle's rayon splits run inline instead of being handed to rayon's global pool,
    /// whose second thread would share a core with the other process. `None` when the thread is
    /// already in a rayon pool.
    static ALONE: Option<rayon::ThreadPool> =
        rayon::ThreadPoolBuilder::new().num_threads(1).use_current_thread().build().ok();
}

/// Runs `f` inside the current thread's one-thread rayon pool (`f` directly without one).
fn alone<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    ALONE.with(|pool| match pool {
        Some(pool) => pool.install(f),
        None => f(),
    })
}

/// Runs `f` on candle's barrier-pool worker 0 (candle's barrier-pool and rayon splits inline, one
/// thread) while the calling thread sleeps. `None` when the pool has no workers (then run `f`
/// directly).
fn on_one_worker<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    let pool = candle_core::utils::barrier_pool();
    let n = pool.n_workers();
    if n == 0 {
        return None;
    }
    let job = Mutex::new(Some(f));
    let out: Mutex<Option<T>> = Mutex::new(None);
    let (tx, rx): (SyncSender<()>, Receiver<()>) = sync_channel(1);
    let rx = Mutex::new(rx);
    pool.execute(|tid| {
        if tid == 0 {
            let _done = Done(&tx);
            let job = job.lock().ok().and_then(|mut j| j.take());
            if let Some(job) = job {
                let value = alone(job);
                if let Ok(mut slot) = out.lock() {
                    *slot = Some(value);
                }
            }
        } else if tid == n {
            // The caller's share: wait asleep for worker 0 instead of spinning at the barrier.
            if let Ok(rx) = rx.lock() {
                let _ = rx.recv();
            }
        }
    });
    out.into_inner().ok().flatten()
}

/// Which pool a step uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    /// One thread.
    One,
    /// One thread per core.
    All,
}

impl Choice {
    fn index(self) -> usize {
        match self {
            Choice::One => 0,
            Choice::All => 1,
        }
    }

    fn other(self) -> Choice {
        match self {
            Choice::One => Choice::All,
            Choice::All => Choice::One,
        }
    }
}

/// A probe under way: [`PROBE_STEPS`] steps on the choice not in use.
#[derive(Clone, Copy, Debug)]
struct Probe {
    choice: Choice,
    left: usize,
    sum: f64,
}

/// Reads the machine's CPU ticks ([`proc_stat_ticks`]; a fake one in tests).
type TickSource = Box<dyn FnMut() -> Option<CpuTicks> + Send>;

/// The per-generation chooser: call [`Adaptive::next`] before a step and [`Adaptive::record`] with
/// its time after it.
pub(crate) struct Adaptive {
    /// Step times by [`Choice::index`]: a running average for the choice in use, the last probe's
    /// mean for the other.
    avg: [Option<f64>; 2],
    /// Steps chosen so far.
    step: usize,
    /// The choice of the step being timed.
    current: Choice,
    /// The probe under way, if any.
    probe: Option<Probe>,
    /// The step at which the next probe starts.
    next_probe: usize,
    /// The steps from the end of the last probe to the start of the next.
    interval: usize,
    /// The step time of all threads, in use, when the last probe ended.
    all_then: Option<f64>,
    /// Threads of the "all" choice.
    threads: usize,
    /// The machine's CPU ticks when the current stretch on one thread began.
    mark: Option<CpuTicks>,
    ticks: TickSource,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive::new()
    }
}

impl Adaptive {
    /// Starts on one thread; all threads are probed after [`FIRST_STEPS`] steps if the machine had
    /// an idle core meanwhile (regardless with `LOOM_LOCAL_IDLE_GATE=0`).
    pub(crate) fn new() -> Adaptive {
        let threads = candle_core::utils::barrier_pool().n_workers() + 1;
        if std::env::var("LOOM_LOCAL_IDLE_GATE").is_ok_and(|v| v == "0") {
            Adaptive::with_ticks(threads, Box::new(|| None))
        } else {
            Adaptive::with_ticks(threads, Box::new(proc_stat_ticks))
        }
    }

    fn with_ticks(threads: usize, mut ticks: TickSource) -> Adaptive {
        let mark = ticks();
        Adaptive {
            avg: [None, None],
            step: 0,
            current: Choice::One,
            probe: None,
            next_probe: FIRST_STEPS,
            interval: PROBE_EVERY,
            all_then: None,
            threads,
            mark,
            ticks,
        }
    }

    /// The faster choice measured so far (one thread until all threads are measured).
    pub(crate) fn best(&self) -> Choice {
        match self.avg {
            [Some(one), Some(all)] if all <= one => Choice::All,
            [None, Some(_)] => Choice::All,
            _ => Choice::One,
        }
    }

    /// The choice for the next step: the faster one, except during a probe of the other.
    pub(crate) fn next(&mut self) -> Choice {
        let best = self.best();
        if self.probe.is_none() {
            // All threads getting slower (another process took a core) brings a probe forward.
            if best == Choice::All
                && let (Some(then), Some(now)) = (self.all_then, self.avg[Choice::All.index()])
                && slowed(then, now)
            {
                self.interval = PROBE_EVERY;
                self.all_then = Some(now);
                self.next_probe = self.next_probe.min(self.step + PROBE_EVERY / 4);
            }
            if self.step >= self.next_probe {
                let choice = best.other();
                // All threads are worth a probe only if a core was idle while one thread ran: with
                // every core busy, one all-thread step costs several one-thread steps.
                let now = if choice == Choice::All { (self.ticks)() } else { None };
                match (self.mark, now) {
                    (Some(mark), Some(now)) if !room_for_all(mark, now, self.threads) => {
                        self.mark = Some(now);
                        self.next_probe = self.step + PROBE_EVERY;
                    }
                    _ => self.probe = Some(Probe { choice, left: PROBE_STEPS, sum: 0.0 }),
                }
            }
        }
        let choice = self.probe.map_or(best, |p| p.choice);
        self.current = choice;
        self.step += 1;
        choice
    }

    /// Records the time of the step [`Adaptive::next`] last chose.
    pub(crate) fn record(&mut self, took: Duration) {
        let t = took.as_secs_f64();
        let Some(mut probe) = self.probe else {
            let slot = &mut self.avg[self.current.index()];
            *slot = Some(slot.map_or(t, |avg| avg + ALPHA * (t - avg)));
            return;
        };
        probe.sum += t;
        probe.left = probe.left.saturating_sub(1);
        if probe.left > 0 {
            self.probe = Some(probe);
            return;
        }
        // The probe is over: its mean is the probed choice's time now (an average over steps
        // long past would be stale), and the loser's margin sets the interval to the next probe.
        self.probe = None;
        let probed = probe.sum / PROBE_STEPS as f64;
        self.avg[probe.choice.index()] = Some(probed);
        let best = self.best();
        let best_avg = self.avg[best.index()].unwrap_or(probed);
        let loser = self.avg[best.other().index()].unwrap_or(probed);
        self.interval = next_interval(self.interval, loser, best_avg);
        self.all_then = (best == Choice::All).then_some(best_avg);
        self.next_probe = self.step + self.interval;
        if best == Choice::One {
            self.mark = (self.ticks)();
        }
    }

    /// Runs `step` until it breaks, each call on the thread count [`Adaptive::next`] picks, timed.
    /// A stretch of one-thread steps runs on worker 0 in one hand-off (the caller asleep until the
    /// chooser picks all threads, `step` breaks, or [`STRETCH_STEPS`] ran), so most steps on one
    /// thread cost no wake-up of the caller: under one CPU-bound process that hand-off cost about
    /// a sixth of a step. `lost` turns a stretch that did not finish into the caller's error type.
    pub(crate) fn run_steps<R: Send, E: Send>(
        &mut self,
        mut step: impl FnMut() -> Result<ControlFlow<R>, E> + Send,
        lost: impl Fn(Error) -> E,
    ) -> Result<R, E> {
        if !adaptive_enabled() || candle_core::utils::barrier_pool().n_workers() == 0 {
            loop {
                if let ControlFlow::Break(r) = step()? {
                    return Ok(r);
                }
            }
        }
        let mut pending = None;
        loop {
            let choice = match pending.take() {
                Some(c) => c,
                None => self.next(),
            };
            if choice == Choice::All {
                let started = Instant::now();
                let flow = step();
                self.record(started.elapsed());
                if let ControlFlow::Break(r) = flow? {
                    return Ok(r);
                }
                continue;
            }
            let this = &mut *self;
            let step = &mut step;
            let stretch = on_one_worker(move || {
                for _ in 1..STRETCH_STEPS {
                    let started = Instant::now();
                    let flow = step();
                    this.record(started.elapsed());
                    match flow {
                        Err(e) => return (Err(e), None),
                        Ok(ControlFlow::Break(r)) => return (Ok(Some(r)), None),
                        Ok(ControlFlow::Continue(())) => {}
                    }
                    let next = this.next();
                    if next == Choice::All {
                        return (Ok(None), Some(next));
                    }
                }
                // The stretch is long enough: hand the pool back, then go on.
                let started = Instant::now();
                let flow = step();
                this.record(started.elapsed());
                match flow {
                    Err(e) => (Err(e), None),
                    Ok(ControlFlow::Break(r)) => (Ok(Some(r)), None),
                    Ok(ControlFlow::Continue(())) => (Ok(None), None),
                }
            });
            let Some((result, next)) = stretch else {
                return Err(lost(Error::ModelFile("a generation step did not finish".into())));
            };
            if let Some(r) = result? {
                return Ok(r);
            }
            pending = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chooser that never sees `/proc/stat` (every probe runs).
    fn blind() -> Adaptive {
        Adaptive::with_ticks(2, Box::new(|| None))
    }

    /// A chooser whose machine ticks 10 per step, `idle` of them idle.
    fn ticking(idle: u64) -> Adaptive {
        let mut now = CpuTicks { idle: 0, total: 0 };
        Adaptive::with_ticks(
            2,
            Box::new(move || {
                now = CpuTicks { idle: now.idle + idle, total: now.total + 10 };
                Some(now)
            }),
        )
    }

    fn drive(a: &mut Adaptive, steps: usize, one: f64, all: f64) -> Vec<Choice> {
        (0..steps)
            .map(|_| {
                let c = a.next();
                a.record(Duration::from_secs_f64(if c == Choice::One { one } else { all }));
                c
            })
            .collect()
    }

    fn count(choices: &[Choice], which: Choice) -> usize {
        choices.iter().filter(|c| **c == which).count()
    }

    #[test]
    fn the_interval_doubles_while_probes_lose_by_far_and_resets_otherwise() {
        assert_eq!(next_interval(PROBE_EVERY, 0.080, 0.020), 2 * PROBE_EVERY);
        assert_eq!(next_interval(2 * PROBE_EVERY, 0.080, 0.020), 4 * PROBE_EVERY);
        assert_eq!(next_interval(MAX_PROBE_EVERY, 0.080, 0.020), MAX_PROBE_EVERY);
        // Losing by less than LOSING (one thread against two on a quiet machine): every 64 steps.
        assert_eq!(next_interval(4 * PROBE_EVERY, 0.026, 0.020), PROBE_EVERY);
        assert!(slowed(0.020, 0.032));
        assert!(!slowed(0.032, 0.020));
        assert!(!slowed(0.020, 0.026));
    }

    #[test]
    fn room_for_all_threads_needs_an_idle_core() {
        let at = |idle, total| CpuTicks { idle, total };
        // 2 cores, one thread running: about half the machine idle on a quiet machine.
        assert!(room_for_all(at(100, 1000), at(150, 1100), 2));
        // Another process on the second core: no idle time.
        assert!(!room_for_all(at(100, 1000), at(101, 1100), 2));
        assert!(!room_for_all(at(100, 1000), at(120, 1100), 2));
        // Too short a window to tell, or one core: probe.
        assert!(room_for_all(at(100, 1000), at(100, 1002), 2));
        assert!(room_for_all(at(100, 1000), at(100, 1100), 1));
        // 8 cores: 7 beyond the busy one, at least 3.5 of them idle.
        assert!(room_for_all(at(0, 0), at(45, 100), 8));
        assert!(!room_for_all(at(0, 0), at(40, 100), 8));
        assert_eq!(
            parse_cpu_line("cpu  4705 356 584 3699 23 23 0 0 0 0"),
            Some(CpuTicks { idle: 3722, total: 4705 + 356 + 584 + 3699 + 23 + 23 })
        );
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4"), None);
    }

    #[test]
    fn measures_both_then_keeps_the_faster_with_periodic_probes() {
        let mut a = blind();
        // One thread 1.3x slower than two (a quiet machine): probed every PROBE_EVERY steps.
        let choices = drive(&mut a, 4 * PROBE_EVERY, 0.016, 0.012);
        assert_eq!(&choices[..6], &[Choice::One, Choice::One, Choice::One, Choice::One, Choice::All, Choice::All]);
        // The first steps, then PROBE_STEPS every PROBE_EVERY steps after the first probe.
        assert_eq!(count(&choices, Choice::One), FIRST_STEPS + 3 * PROBE_STEPS);
        assert_eq!(a.best(), Choice::All);
    }

    #[test]
    fn probes_that_lose_by_far_back_off() {
        let mut a = blind();
        // All threads four times slower than one (another process holds a core).
        let choices = drive(&mut a, 2 * MAX_PROBE_EVERY, 0.020, 0.080);
        assert_eq!(a.best(), Choice::One);
        // Probes of all threads at step 4, then 128, 256 and 512 steps apart: 4 probes in 1,024
        // steps (every 64 steps would be 16).
        assert_eq!(count(&choices, Choice::All), 4 * PROBE_STEPS);
        assert!(choices[6..6 + 2 * PROBE_EVERY].iter().all(|c| *c == Choice::One));
    }

    #[test]
    fn a_busy_machine_never_pays_for_a_probe_of_all_threads() {
        // No idle ticks while one thread runs: all threads are never tried.
        let mut busy = ticking(0);
        let choices = drive(&mut busy, 4 * PROBE_EVERY, 0.020, 0.080);
        assert_eq!(count(&choices, Choice::All), 0);
        // Half the machine idle: they are.
        let mut quiet = ticking(5);
        let choices = drive(&mut quiet, 4 * PROBE_EVERY, 0.016, 0.012);
        assert_eq!(&choices[4..6], &[Choice::All, Choice::All]);
        assert_eq!(quiet.best(), Choice::All);
    }

    #[test]
    fn switches_to_one_thread_when_all_threads_get_slow_and_back() {
        let mut a = blind();
        drive(&mut a, PROBE_EVERY, 0.020, 0.012);
        assert_eq!(a.best(), Choice::All);
        // A hog takes a core: all threads become much slower; the slowdown brings a probe forward.
        let choices = drive(&mut a, PROBE_EVERY, 0.022, 0.080);
        assert_eq!(a.best(), Choice::One);
        let tail = &choices[choices.len() - PROBE_EVERY / 2..];
        assert!(tail.iter().all(|c| *c == Choice::One));
        // Probes back off while the hog stays, then it goes away: within the longest interval a
        // probe of all threads sees it, and generation moves back.
        drive(&mut a, 4 * PROBE_EVERY, 0.022, 0.080);
        drive(&mut a, MAX_PROBE_EVERY + 2 * PROBE_STEPS, 0.020, 0.012);
        assert_eq!(a.best(), Choice::All);
    }

    #[test]
    fn all_threads_slowing_down_brings_the_probe_back() {
        let mut a = blind();
        // One thread 1.7x slower: its probes back off (128, then 256 steps).
        drive(&mut a, 4 * PROBE_EVERY, 0.020, 0.012);
        assert_eq!(a.best(), Choice::All);
        // All threads get slower: a probe of one thread within PROBE_EVERY / 4 steps.
        let choices = drive(&mut a, PROBE_EVERY / 4 + 8, 0.020, 0.080);
        assert!(choices.contains(&Choice::One));
        assert_eq!(a.best(), Choice::One);
    }

    #[test]
    fn a_one_thread_step_runs_rayon_work_on_the_one_thread() {
        use rayon::prelude::*;
        if candle_core::utils::barrier_pool().n_workers() == 0 {
            // One core (or CANDLE_NUM_THREADS=1): every step runs on the caller.
            return;
        }
        let mut a = blind();
        let mut threads: Vec<Vec<String>> = Vec::new();
        a.run_steps(
            || {
                if threads.len() == FIRST_STEPS {
                    return Ok(ControlFlow::Break(()));
                }
                let names: Vec<String> =
                    (0..64).into_par_iter().map(|_| std::thread::current().name().unwrap_or("").to_string()).collect();
                threads.push(names);
                Ok::<_, Error>(ControlFlow::Continue(()))
            },
            |e| e,
        )
        .unwrap();
        assert_eq!(threads.len(), FIRST_STEPS);
        // The first steps ran on worker 0 (`candle-bp-0`), every rayon item with them.
        for step in &threads {
            assert!(step.iter().all(|n| n == "candle-bp-0"), "{step:?}");
        }
    }

    #[test]
    fn run_steps_runs_every_step_once_in_order_and_returns_the_break_value() {
        let mut a = Adaptive::new();
        let mut seen = Vec::new();
        let out = a.run_steps(
            || {
                seen.push(seen.len());
                if seen.len() == 300 {
                    Ok::<_, Error>(ControlFlow::Break("done"))
                } else {
                    Ok(ControlFlow::Continue(()))
                }
            },
            |e| e,
        );
        assert_eq!(out.unwrap(), "done");
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
        // A step's error ends the loop with it.
        let mut n = 0;
        let out = a.run_steps(
            || {
                n += 1;
                if n == 7 { Err(Error::ModelFile("boom".into())) } else { Ok(ControlFlow::<()>::Continue(())) }
            },
            |e| e,
        );
        assert!(out.is_err());
        assert_eq!(n, 7);
    }
}
