//! When a failed push is tried again: exponential backoff with jitter, capped, honouring
//! `Retry-After`, measured on the engine's monotonic clock; and what a failure pauses.

use super::*;

/// The delay before attempt `attempt + 1`: `backoff_base * 2^(attempt - 1)`, capped at
/// `backoff_cap`, scaled by `0.5 + 0.5 * jitter` (`jitter` in `[0, 1)`, so the delay lies
/// in `[d/2, d]`), and never shorter than the server's `Retry-After` (which may exceed
/// the cap).
fn retry_delay(
    config: &EngineConfig,
    attempt: i64,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = 2f64.powi(attempt.clamp(1, 30) as i32 - 1);
    let d = (config.backoff_base.as_secs_f64() * exp).min(config.backoff_cap.as_secs_f64());
    let d = Duration::from_secs_f64(d * (0.5 + 0.5 * jitter));
    retry_after
        .map_or(d, |r| d.max(r))
        .min(config.backoff_cap.max(retry_after.unwrap_or_default()))
}

impl<T: Transport> SyncEngine<T> {
    /// The delay before attempt `attempt + 1` ([`retry_delay`] with the next jitter).
    pub(crate) fn backoff(&self, attempt: i64, retry_after: Option<Duration>) -> Duration {
        let jitter = self.jitter.lock().unwrap_or_else(|e| e.into_inner()).f64();
        retry_delay(&self.config, attempt, retry_after, jitter)
    }

    pub(crate) fn pause_for(&self, e: &TransportError) -> PauseReason {
        match e {
            TransportError::Unreachable(m) => PauseReason::Offline(m.clone()),
            TransportError::Http {
                status: 401 | 403, ..
            } => PauseReason::AuthFailed(e.to_string()),
            TransportError::Http { status: 426, .. } => PauseReason::ModelNotServed(e.to_string()),
            other => PauseReason::Backoff(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_stay_capped_and_honour_retry_after() {
        let mut c = EngineConfig::new("a", "t");
        c.backoff_base = Duration::from_millis(10);
        c.backoff_cap = Duration::from_millis(50);
        let full = |n| retry_delay(&c, n, None, 0.999_999);
        let half = |n| retry_delay(&c, n, None, 0.0);
        assert_eq!(half(1), Duration::from_millis(5), "jitter halves at most");
        assert!(full(1) < Duration::from_millis(10) && full(1) > Duration::from_millis(9));
        assert!(full(3) > full(2) && full(2) > full(1), "grows");
        assert!(full(30) <= Duration::from_millis(50), "capped");
        assert_eq!(
            retry_delay(&c, 1, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30),
            "Retry-After wins, even above the cap"
        );
    }
}
