//! How many threads a generation step runs on, chosen from measured step times.
//!
//! A decode step is thirty-odd small matrix-vector products, and candle 0.11 splits each over its
//! barrier pool (`candle_core::utils::barrier_pool`, one worker per core but the caller) and joins at
//! its end, the caller spin-waiting. On a quiet 2-core machine two threads are faster; when another
//! process holds a core, a descheduled thread holds up every join while the other spins, and two
//! threads become several times slower than one. So generation keeps a running average of the step
//! time for one thread and for all threads, runs on the faster, and re-measures the other now and
//! then ([`PROBE_EVERY`] steps) because the load on the machine changes.
//!
//! One thread means: the whole step runs on barrier-pool worker 0, where candle runs every split
//! inline (no joins), while the caller sleeps on a channel instead of spinning.
//! `LOOM_LOCAL_ADAPTIVE=0` turns this off (every step on all threads, as before).

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use loom_core::error::Error;

/// Steps between two probes of the thread count not in use.
pub(crate) const PROBE_EVERY: usize = 64;
/// Steps per probe (the first one after a switch also warms the other path up).
const PROBE_STEPS: usize = 2;
/// Weight of a new step time in the running average.
const ALPHA: f64 = 0.3;

fn adaptive_enabled() -> bool {
    !std::env::var("LOOM_LOCAL_ADAPTIVE").is_ok_and(|v| v == "0")
}

/// Tells the caller the step is over when dropped, so a panicking step cannot leave it asleep.
struct Done<'a>(&'a SyncSender<()>);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// Runs `f` on candle's barrier-pool worker 0 (all of candle's splits inline, one thread) while
/// the calling thread sleeps. `None` when the pool has no workers (then run `f` directly).
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
                let value = job();
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

/// The per-generation chooser: call [`Adaptive::next`] before a step and [`Adaptive::record`] with
/// its time after it.
#[derive(Debug)]
pub(crate) struct Adaptive {
    avg: [Option<f64>; 2],
    step: usize,
    current: Choice,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive::new()
    }
}

impl Adaptive {
    /// Starts on all threads; the first probe of one thread comes after [`PROBE_STEPS`] steps.
    pub(crate) fn new() -> Adaptive {
        Adaptive { avg: [None, None], step: 0, current: Choice::All }
    }

    fn index(c: Choice) -> usize {
        match c {
            Choice::One => 0,
            Choice::All => 1,
        }
    }

    fn other(c: Choice) -> Choice {
        match c {
            Choice::One => Choice::All,
            Choice::All => Choice::One,
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
        // Steps 0..PROBE_STEPS measure all threads; then PROBE_STEPS..2*PROBE_STEPS measure one
        // thread; after that, the first PROBE_STEPS of every PROBE_EVERY steps probe the other.
        let choice = if self.step < PROBE_STEPS {
            Choice::All
        } else if self.step < 2 * PROBE_STEPS {
            Choice::One
        } else if self.step % PROBE_EVERY < PROBE_STEPS {
            Adaptive::other(best)
        } else {
            best
        };
        self.current = choice;
        self.step += 1;
        choice
    }

    /// Records the time of the step [`Adaptive::next`] last chose.
    pub(crate) fn record(&mut self, took: Duration) {
        let t = took.as_secs_f64();
        let slot = &mut self.avg[Adaptive::index(self.current)];
        *slot = Some(match *slot {
            Some(avg) => avg + ALPHA * (t - avg),
            None => t,
        });
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

    #[test]
    fn measures_both_then_keeps_the_faster_with_periodic_probes() {
        let mut a = Adaptive::new();
        let choices = drive(&mut a, 4 * PROBE_EVERY, 0.020, 0.012);
        assert_eq!(&choices[..4], &[Choice::All, Choice::All, Choice::One, Choice::One]);
        let ones = choices.iter().filter(|c| **c == Choice::One).count();
        // Two measuring steps plus PROBE_STEPS per later period (period 0's probe is the measuring).
        assert_eq!(ones, 2 + 3 * PROBE_STEPS);
        assert_eq!(a.best(), Choice::All);
    }

    #[test]
    fn switches_to_one_thread_when_all_threads_get_slow_and_back() {
        let mut a = Adaptive::new();
        drive(&mut a, PROBE_EVERY, 0.020, 0.012);
        assert_eq!(a.best(), Choice::All);
        // A hog takes a core: all threads become much slower than one.
        let choices = drive(&mut a, 2 * PROBE_EVERY, 0.022, 0.080);
        assert_eq!(a.best(), Choice::One);
        let tail = &choices[choices.len() - PROBE_EVERY / 2..];
        assert!(tail.iter().filter(|c| **c == Choice::One).count() >= PROBE_EVERY / 2 - PROBE_STEPS);
        // The hog goes away: the probes of all threads see it, and generation moves back.
        drive(&mut a, 4 * PROBE_EVERY, 0.020, 0.012);
        assert_eq!(a.best(), Choice::All);
    }

    #[test]
    fn run_returns_the_closure_value() {
        let mut a = Adaptive::new();
        // Steps 2 and 3 run on one barrier-pool worker, the others on the calling thread.
        let v: Vec<usize> = (0..6).map(|i| a.run(|| Ok::<_, Error>(i * 2)).unwrap()).collect();
        assert_eq!(v, vec![0, 2, 4, 6, 8, 10]);
    }
}
