//! The reconnection delay: `rabbit_retry_interval` first, doubled after every failure up to
//! `rabbit_interval_max`, as oslo's kombu driver waits between attempts.

use std::time::Duration;

/// Capped exponential delays between connection or re-subscription attempts.
#[derive(Debug, Clone)]
pub(super) struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `first` (`rabbit_retry_interval`); doubles are capped at `max`
    /// (`rabbit_interval_max`).
    pub(super) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            current: first,
        }
    }

    /// The delay to wait now, without counting a failure (the wait after a lost connection).
    pub(super) fn current(&self) -> Duration {
        self.current
    }

    /// The delay to wait after a failure; the next failure waits twice as long, up to the cap.
    pub(super) fn after_failure(&mut self) -> Duration {
        let delay = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        delay
    }

    /// Back to the first delay, once a connection succeeded.
    pub(super) fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut backoff = Backoff::new(secs(1), secs(30));
        let delays: Vec<_> = (0..8).map(|_| backoff.after_failure()).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 8, 16, 30, 30, 30].map(secs).to_vec(),
            "oslo's defaults: 1 s doubled, capped at 30 s"
        );
    }

    #[test]
    fn reset_starts_over_and_current_does_not_count_a_failure() {
        let mut backoff = Backoff::new(Duration::from_millis(250), secs(2));
        backoff.after_failure();
        backoff.after_failure();
        assert_eq!(backoff.current(), secs(1));
        assert_eq!(backoff.current(), secs(1));
        backoff.reset();
        assert_eq!(backoff.current(), Duration::from_millis(250));
        assert_eq!(backoff.after_failure(), Duration::from_millis(250));
    }

    #[test]
    fn a_first_delay_above_the_cap_is_used_once_then_capped() {
        let mut backoff = Backoff::new(secs(60), secs(30));
        assert_eq!(backoff.after_failure(), secs(60));
        assert_eq!(backoff.after_failure(), secs(30));
    }

    #[test]
    fn huge_delays_saturate_instead_of_overflowing() {
        let mut backoff = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(backoff.after_failure(), Duration::MAX);
        assert_eq!(backoff.after_failure(), Duration::MAX);
    }
}
