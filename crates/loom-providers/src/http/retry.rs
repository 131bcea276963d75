//! Retries: the policy (exponential backoff with jitter) and the wait a response asks for.

use std::time::Duration;

use loom_core::error::ModelError;
use reqwest::header::HeaderMap;

/// Retries with exponential backoff and full jitter.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff.
    pub initial_delay: Duration,
    /// The longest backoff (and the longest `Retry-After` honoured).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 3, initial_delay: Duration::from_millis(500), max_delay: Duration::from_secs(30) }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Self::default() }
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    pub fn delay(&self, attempt: u32, error: &ModelError) -> Duration {
        if let ModelError::RateLimited { retry_after: Some(after), .. } = error {
            return (*after).min(self.max_delay);
        }
        let exp = self.initial_delay.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let cap = exp.min(self.max_delay);
        // Jitter: anywhere in [cap/2, cap], so concurrent clients spread out but never retry at once.
        let half = cap / 2;
        half + Duration::from_nanos(fastrand::u64(..=half.as_nanos() as u64))
    }
}

/// The wait a response asks for: `retry-after-ms` (milliseconds, OpenAI and Azure), else
/// `Retry-After` in seconds or as an HTTP date. Values that make no sense are ignored; huge ones
/// saturate (the retry policy caps them).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    fn seconds(v: f64) -> Option<Duration> {
        (v.is_finite() && v >= 0.0).then(|| Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX))
    }
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(after) = value("retry-after-ms").and_then(|s| s.parse::<f64>().ok()).and_then(|ms| seconds(ms / 1000.0))
    {
        return Some(after);
    }
    let s = value("retry-after")?;
    if let Ok(v) = s.parse::<f64>() {
        return seconds(v);
    }
    let at = chrono::DateTime::parse_from_rfc2822(s).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}
