//! The rate-limit protocol.

use std::time::Duration;

use crate::run::Scope;

/// Limits how fast users may call models. `acquire` either lets the call go (after waiting, if the
/// limiter waits) or refuses it; a refusal interrupts the run with reason `rate_limit`.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one permit for the run's user: `Ok(waited)` or `Err(why)`.
    async fn acquire(&self, scope: &Scope) -> Result<Duration, String>;
}
