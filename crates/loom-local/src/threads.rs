//! How many threads a generation step runs on, chosen from measured step times.
//!
//! A decode step is thirty-odd small matrix-vector products, and candle 0.11 splits each over its
//! barrier pool (`candle_core::utils::barrier_pool`, one worker per core but the caller) and joins at
//! its end, the caller spin-waiting. On a quiet 2-core machine two threads are faster; when another
//! process holds a core, a descheduled thread holds up every join while the other spins, and two
//! threads become several times slower than one. So generation keeps a running average of the step
//! time for one thread and for all threads, runs on the faster, and re-measures the other now and
//! then because the load on the machine changes: every [`PROBE_EVERY`] steps at first, less often
//! while the other keeps losing by far ([`next_interval`]), and every [`PROBE_EVERY`] again when
//! the step times move ([`shifted`]).
//!
//! One thread means: the whole step runs on barrier-pool worker 0, where candle runs every split
//! inline (no joins), while the caller sleeps on a channel instead of spinning. candle's other
//! splits (RMS norm, rotary embedding, softmax) go through rayon; on worker 0 they run in a rayon
//! pool of that thread alone, so they too stay on the one thread.
//! `LOOM_LOCAL_ADAPTIVE=0` turns this off (every step on all threads, as before).

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
/// The choice not in use measured at least this many times slower doubles the probe interval.
const LOSING: f64 = 1.5;
/// The choice in use getting this many times slower or faster than at the last probe means the
/// load changed: the interval goes back to [`PROBE_EVERY`].
const SHIFTED: f64 = 1.5;

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

/// Whether the step time of the choice in use moved from `then` (at the last probe) to `now` by a
/// factor of [`SHIFTED`] or more, either way.
pub(crate) fn shifted(then: f64, now: f64) -> bool {
    now > then * SHIFTED || now * SHIFTED < then
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

/// The per-generation chooser: call [`Adaptive::next`] before a step and [`Adaptive::record`] with
/// its time after it.
#[derive(Debug)]
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
    /// The step time of the choice in use when the last probe ended.
    best_then: Option<f64>,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive::new()
    }
}

impl Adaptive {
    /// Starts on all threads; the first probe, from step [`PROBE_STEPS`] on, measures one thread.
    pub(crate) fn new() -> Adaptive {
        Adaptive {
            avg: [None, None],
            step: 0,
            current: Choice::All,
            probe: None,
            next_probe: PROBE_STEPS,
            interval: PROBE_EVERY,
            best_then: None,
        }
    }

    /// The faster choice measured so far (all threads until both are measured).
    pub(crate) fn best(&self) -> Choice {
        match self.avg {
            [Some(one), Some(all)] if one < all => Choice::One,
            _ => Choice::All,
        }
    }

    /// The choice for the next step: the faster one, except during a probe of the other.
    pub(crate) fn next(&mut self) -> Choice {
        let best = self.best();
        if self.probe.is_none() {
            // A load change seen on the choice in use brings the next probe forward.
            if let (Some(then), Some(now)) = (self.best_then, self.avg[best.index()])
                && shifted(then, now)
            {
                self.interval = PROBE_EVERY;
                self.best_then = Some(now);
                self.next_probe = self.next_probe.min(self.step + PROBE_EVERY / 4);
            }
            if self.step >= self.next_probe {
                self.probe = Some(Probe { choice: best.other(), left: PROBE_STEPS, sum: 0.0 });
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
        self.best_then = Some(best_avg);
        self.next_probe = self.step + self.interval;
    }

    /// Runs one step `f` with the next choice of threads, timing it.
    pub(crate) fn run<T: Send>(&mut self, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
        if !adaptive_enabled() {
            return f();
        }
        let choice = self.next();
        let started = Instant::now();
        let out = match choice {
            Choice::All => f(),
            Choice::One => match candle_core::utils::barrier_pool().n_workers() {
                0 => f(),
                _ => {
                    on_one_worker(f).unwrap_or_else(|| Err(Error::ModelFile("a generation step did not finish".into())))
                }
            },
        };
        self.record(started.elapsed());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(a: &mut Adaptive, steps: usize, one: f64, all: f64) -> Vec<Choice> {
        (0..steps)
            .map(|_| {
                let c = a.next();
                a.record(Duration::from_secs_f64(if c == Choice::One { one } else { all }));
                c
            })
            .collect()
    }

    fn ones(choices: &[Choice]) -> usize {
        choices.iter().filter(|c| **c == Choice::One).count()
    }

    #[test]
    fn the_interval_doubles_while_probes_lose_by_far_and_resets_otherwise() {
        assert_eq!(next_interval(PROBE_EVERY, 0.080, 0.020), 2 * PROBE_EVERY);
        assert_eq!(next_interval(2 * PROBE_EVERY, 0.080, 0.020), 4 * PROBE_EVERY);
        assert_eq!(next_interval(MAX_PROBE_EVERY, 0.080, 0.020), MAX_PROBE_EVERY);
        // Losing by less than LOSING (one thread against two on a quiet machine): every 64 steps.
        assert_eq!(next_interval(4 * PROBE_EVERY, 0.026, 0.020), PROBE_EVERY);
        assert!(shifted(0.020, 0.032));
        assert!(shifted(0.032, 0.020));
        assert!(!shifted(0.020, 0.026));
    }

    #[test]
    fn measures_both_then_keeps_the_faster_with_periodic_probes() {
        let mut a = Adaptive::new();
        // One thread 1.3x slower than two (a quiet machine): probed every PROBE_EVERY steps.
        let choices = drive(&mut a, 4 * PROBE_EVERY, 0.016, 0.012);
        assert_eq!(&choices[..4], &[Choice::All, Choice::All, Choice::One, Choice::One]);
        // Two measuring steps, then PROBE_STEPS every PROBE_EVERY steps after the first probe.
        assert_eq!(ones(&choices), 2 + 3 * PROBE_STEPS);
        assert_eq!(a.best(), Choice::All);
    }

    #[test]
    fn probes_that_lose_by_far_back_off() {
        let mut a = Adaptive::new();
        // All threads four times slower than one (another process holds a core).
        let choices = drive(&mut a, 2 * MAX_PROBE_EVERY, 0.020, 0.080);
        assert_eq!(a.best(), Choice::One);
        let all = choices.len() - ones(&choices);
        // Two measuring steps, then probes of all threads 128, 256 and 512 steps apart: 3 probes
        // in 1,024 steps (every 64 steps would be 15).
        assert_eq!(all, 2 + 3 * PROBE_STEPS);
        assert!(choices[4..4 + 2 * PROBE_EVERY].iter().all(|c| *c == Choice::One));
    }

    #[test]
    fn switches_to_one_thread_when_all_threads_get_slow_and_back() {
        let mut a = Adaptive::new();
        drive(&mut a, PROBE_EVERY, 0.020, 0.012);
        assert_eq!(a.best(), Choice::All);
        // A hog takes a core: all threads become much slower; the shift brings a probe forward.
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
    fn a_shift_of_the_choice_in_use_brings_the_probe_back() {
        let mut a = Adaptive::new();
        drive(&mut a, 4 * PROBE_EVERY, 0.020, 0.080);
        assert_eq!(a.best(), Choice::One);
        // The choice in use gets slower (say a second process arrives): the interval resets and a
        // probe comes within PROBE_EVERY / 4 steps.
        let choices = drive(&mut a, PROBE_EVERY / 4 + 8, 0.040, 0.030);
        assert!(choices.contains(&Choice::All));
        assert_eq!(a.best(), Choice::All);
    }

    #[test]
    fn run_returns_the_closure_value() {
        let mut a = Adaptive::new();
        // Steps 2 and 3 run on one barrier-pool worker, the others on the calling thread.
        let v: Vec<usize> = (0..6).map(|i| a.run(|| Ok::<_, Error>(i * 2)).unwrap()).collect();
        assert_eq!(v, vec![0, 2, 4, 6, 8, 10]);
    }

    #[test]
    fn a_one_thread_step_runs_rayon_work_on_the_one_thread() {
        use rayon::prelude::*;
        if candle_core::utils::barrier_pool().n_workers() == 0 {
            // One core (or CANDLE_NUM_THREADS=1): every step runs on the caller.
            return;
        }
        let mut a = Adaptive::new();
        let threads: Vec<Vec<String>> = (0..4)
            .map(|_| {
                a.run(|| {
                    let names: Vec<String> = (0..64)
                        .into_par_iter()
                        .map(|_| std::thread::current().name().unwrap_or("").to_string())
                        .collect();
                    Ok::<_, Error>(names)
                })
                .unwrap()
            })
            .collect();
        // Steps 2 and 3 ran on worker 0 (`candle-bp-0`), every rayon item with them.
        for step in &threads[2..4] {
            assert!(step.iter().all(|n| n == "candle-bp-0"), "{step:?}");
        }
    }
}
