//! Rate limits per user, checked before every model call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use loom_core::run::Scope;

pub use loom_core::governance::RateLimiter;

/// What [`TokenBucketLimiter`] does when a user's bucket is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RateLimitMode {
    /// Wait for the next permit, up to the limiter's `max_wait`; a longer wait is refused.
    #[default]
    Wait,
    /// Refuse at once.
    Reject,
}

/// A token bucket per user: each user (and one shared bucket for runs without a user) starts with
/// `capacity` permits and gets one back every `1 / refill_per_second` seconds, up to `capacity`.
///
/// The buckets are kept as the time each one will be full again (GCRA) on tokio's clock, in integer
/// units of a nanosecond divided by the rate in micro-permits per second, so one refill interval is
/// a whole number of units: refills are exact (for rates given to a millionth of a permit per
/// second) and never drift, and a bucket that is full again carries no
/// state: it is dropped, and memory holds only users who called recently (at most `capacity /
/// refill_per_second` seconds ago). Past `max_users` buckets (100 000 by default) the ones closest
/// to full are dropped first, which can only ever give those users their permits back early.
///
/// In [`RateLimitMode::Wait`] (the default) a caller reserves the next free permit under the lock,
/// then sleeps outside it, so concurrent waiters of one user are served in order, one interval
/// apart; a wait longer than `max_wait` (60 s by default) is refused instead and reserves nothing.
/// A run cancelled while waiting has spent its permit.
///
/// ```
/// use std::time::Duration;
/// use loom_agent::governance::{RateLimitMode, TokenBucketLimiter};
///
/// // Bursts of 5 model calls per user, then one every 2 seconds; wait at most 10 s for one.
/// let limiter = TokenBucketLimiter::per_user(5, 0.5).mode(RateLimitMode::Wait).max_wait(Duration::from_secs(10));
/// ```
#[derive(Debug)]
pub struct TokenBucketLimiter {
    capacity: u32,
    /// Ticks per nanosecond: the refill rate in micro-permits per second.
    rate: u128,
    /// Ticks to earn one permit back.
    interval: u128,
    mode: RateLimitMode,
    max_wait: Duration,
    max_users: usize,
    epoch: tokio::time::Instant,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    /// User → the theoretical arrival time of their next permit (ticks since `epoch`); the bucket is
    /// full when that is not later than now.
    next: HashMap<Option<Arc<str>>, u128>,
    /// Sweep full buckets away when the map grows past this.
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

/// Ticks per permit: a rate of `r` micro-permits per second makes `r` ticks a nanosecond, so one
/// permit every `1e15 / r` ns is `1e15` ticks.
const INTERVAL: u128 = 1_000_000_000_000_000;

/// One interval when nothing ever refills (at one tick a nanosecond): far longer than any wait.
const NEVER: u128 = 1 << 100;

impl TokenBucketLimiter {
    /// `capacity` permits per user at most, refilled at `refill_per_second` (fractions allowed:
    /// `0.1` is one every 10 s; zero or less never refills). A capacity of zero refuses every call.
    pub fn per_user(capacity: u32, refill_per_second: f64) -> Self {
        let micro = if refill_per_second.is_finite() { (refill_per_second * 1e6).round() } else { 0.0 };
        let (rate, interval) = if micro >= 1.0 { ((micro.min(1e18)) as u128, INTERVAL) } else { (1, NEVER) };
        TokenBucketLimiter {
            capacity,
            rate,
            interval,
            mode: RateLimitMode::Wait,
            max_wait: Duration::from_secs(60),
            max_users: 100_000,
            epoch: tokio::time::Instant::now(),
            state: Mutex::new(Buckets { next: HashMap::new(), sweep_at: MIN_SWEEP }),
        }
    }

    /// Wait for a permit (the default) or refuse at once.
    pub fn mode(mut self, mode: RateLimitMode) -> Self {
        self.mode = mode;
        self
    }

    /// In [`RateLimitMode::Wait`], the longest a call waits; a longer wait is refused.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The most buckets kept (at least 1).
    pub fn max_users(mut self, max_users: usize) -> Self {
        self.max_users = max_users.max(1);
        self
    }

    /// How many users' buckets are held now (full buckets may linger until the next sweep).
    pub fn tracked_users(&self) -> usize {
        self.lock().next.len()
    }

    /// The permits `user` has now.
    pub fn available(&self, user: Option<&str>) -> u32 {
        let now = self.now();
        let key: Option<Arc<str>> = user.map(Arc::from);
        let next = self.lock().next.get(&key).copied().unwrap_or(0).max(now);
        let owed = (next - now).div_ceil(self.interval);
        (u128::from(self.capacity).saturating_sub(owed)) as u32
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Nanoseconds since `epoch`.
    fn now_ns(&self) -> u128 {
        tokio::time::Instant::now().saturating_duration_since(self.epoch).as_nanos()
    }

    fn now(&self) -> u128 {
        self.now_ns().saturating_mul(self.rate)
    }

    /// Ticks to nanoseconds, rounded up (a permit is never used early).
    fn to_ns(&self, ticks: u128) -> u128 {
        ticks.div_ceil(self.rate)
    }

    /// Takes a permit now or reserves the next one: `Ok(wait)` (the permit is taken, usable after
    /// `wait`) or `Err(wait)` (nothing taken; the next permit is `wait` away).
    fn reserve(&self, user: &Option<Arc<str>>, now: u128, max_wait: u128) -> Result<u128, u128> {
        // Permits may be taken up to `capacity - 1` intervals ahead of the arrival time.
        let tolerance = u128::from(self.capacity.saturating_sub(1)) * self.interval;
        let mut st = self.lock();
        let next = st.next.get(user).copied().unwrap_or(0).max(now);
        let wait = next.saturating_sub(tolerance).saturating_sub(now);
        if wait > max_wait {
            return Err(wait);
        }
        let new_next = next.saturating_add(self.interval);
        match st.next.get_mut(user) {
            Some(slot) => *slot = new_next,
            None => {
                if st.next.len() >= st.sweep_at || st.next.len() >= self.max_users {
                    self.sweep(&mut st, now);
                }
                st.next.insert(user.clone(), new_next);
            }
        }
        Ok(wait)
    }

    /// Drops full buckets (lossless); past `max_users`, also the closest to full.
    fn sweep(&self, st: &mut Buckets, now: u128) {
        st.next.retain(|_, next| *next > now);
        if st.next.len() >= self.max_users {
            // Drop about a sixteenth at once so a flood of new users costs O(1) per call on average.
            let mut times: Vec<u128> = st.next.values().copied().collect();
            let k = (times.len() / 16).min(times.len() - 1);
            let (_, cut, _) = times.select_nth_unstable(k);
            let cut = *cut;
            st.next.retain(|_, next| *next > cut);
        }
        st.sweep_at = (st.next.len() * 2).clamp(MIN_SWEEP, self.max_users.max(MIN_SWEEP));
    }
}

fn ns(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

fn who(scope: &Scope) -> String {
    match &scope.user_id {
        Some(u) => format!("user `{u}`"),
        None => "the anonymous user".to_string(),
    }
}

#[async_trait::async_trait]
impl RateLimiter for TokenBucketLimiter {
    async fn acquire(&self, scope: &Scope) -> Result<Duration, String> {
        if self.capacity == 0 {
            return Err(format!("{}: the rate limit allows no model calls", who(scope)));
        }
        let now_ns = self.now_ns();
        let max_wait = match self.mode {
            RateLimitMode::Reject => 0,
            RateLimitMode::Wait => self.max_wait.as_nanos().saturating_mul(self.rate),
        };
        match self.reserve(&scope.user_id, now_ns.saturating_mul(self.rate), max_wait) {
            Ok(0) => Ok(Duration::ZERO),
            Ok(wait) => {
                let wait = self.to_ns(wait);
                tokio::time::sleep_until(self.epoch + ns(now_ns + wait)).await;
                Ok(ns(wait))
            }
            Err(wait) => Err(match self.mode {
                RateLimitMode::Reject => format!(
                    "{}: no permits left (at most {} at once); the next in {} ms",
                    who(scope),
                    self.capacity,
                    ns(self.to_ns(wait)).as_millis()
                ),
                RateLimitMode::Wait => format!(
                    "{}: the next permit is {} ms away, more than the longest wait of {} ms",
                    who(scope),
                    ns(self.to_ns(wait)).as_millis(),
                    self.max_wait.as_millis()
                ),
            }),
        }
    }
}
