//! Replay and duplicate filter: a request runs at most once within a time window.
//!
//! oslo remembers the last 16 `_unique_id`s, which stops redeliveries after a reconnection
//! but lets any replay through once 16 other messages have passed. Here every admitted
//! request is remembered for [`WINDOW`] (up to [`CAPACITY`] entries) under each of its keys:
//! its `_unique_id`, and with Trove's encryption its context's ciphertext (the `_unique_id`
//! travels in clear, so a replayer can change it; the encrypted context it cannot).
//!
//! Memory is bounded: an entry is a 64-bit keyed hash and an instant, whatever the size of
//! the key it stands for, and there are at most [`CAPACITY`] entries (about 1 MiB with the
//! map's overhead). Only authenticated requests are recorded (the server checks the context
//! first), so a sender without the instance key cannot flush the filter.
//!
//! Residual limits: a replay older than the window, or arriving after more than
//! [`CAPACITY`] authenticated requests within the window, runs again; two distinct keys share
//! a hash with probability about `CAPACITY / 2^64`.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

/// How long an admitted request is remembered: longer than any Trove call timeout
/// (`agent_call_high_timeout` and `usage_timeout` are at most 30 minutes), so a request still
/// deliverable from its queue cannot be replayed unnoticed.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// How many keys are remembered at most: a guest receives a few requests a minute, so the
/// window, not this cap, decides in normal use (16384 per hour is 4.5 requests a second).
pub const CAPACITY: usize = 16384;

/// A bounded, time-windowed set of recently admitted requests.
#[derive(Debug)]
pub struct ReplayFilter {
    window: Duration,
    capacity: usize,
    hasher: RandomState,
    seen: HashMap<u64, Instant>,
    order: VecDeque<(u64, Instant)>,
}

impl Default for ReplayFilter {
    fn default() -> Self {
        Self::new(WINDOW, CAPACITY)
    }
}

impl ReplayFilter {
    /// A filter remembering at most `capacity` keys for `window` each.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            hasher: RandomState::new(),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records a request by its keys at `now`; false (and nothing recorded) if any key was
    /// seen within the window.
    pub fn admit(&mut self, keys: &[&[u8]], now: Instant) -> bool {
        self.expire(now);
        let hashes: Vec<u64> = keys.iter().map(|k| self.hasher.hash_one(k)).collect();
        if hashes.iter().any(|h| self.seen.contains_key(h)) {
            return false;
        }
        for hash in hashes {
            self.seen.insert(hash, now);
            self.order.push_back((hash, now));
            if self.order.len() > self.capacity {
                self.forget_oldest();
            }
        }
        true
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(_, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((hash, at)) = self.order.pop_front()
            && self.seen.get(&hash) == Some(&at)
        {
            self.seen.remove(&hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_is_refused_after_many_other_requests_within_the_window() {
        let mut filter = ReplayFilter::default();
        let now = Instant::now();
        assert!(filter.admit(&[b"a"], now));
        for i in 0..1000u32 {
            assert!(filter.admit(&[&i.to_be_bytes()], now));
        }
        assert!(
            !filter.admit(&[b"a"], now),
            "oslo's filter forgot it after 16"
        );
        assert!(!filter.admit(&[b"fresh", &7u32.to_be_bytes()], now));
        assert!(
            filter.admit(&[b"fresh"], now),
            "a refused request records nothing"
        );
    }

    #[test]
    fn any_shared_key_is_a_replay() {
        let mut filter = ReplayFilter::default();
        let now = Instant::now();
        assert!(filter.admit(&[b"id-1", b"context-1"], now));
        assert!(!filter.admit(&[b"id-2", b"context-1"], now));
        assert!(!filter.admit(&[b"id-1", b"context-2"], now));
    }

    #[test]
    fn entries_expire_after_the_window_and_the_size_stays_bounded() {
        let mut filter = ReplayFilter::new(Duration::from_secs(10), 100);
        let start = Instant::now();
        assert!(filter.admit(&[b"old"], start));
        assert!(!filter.admit(&[b"old"], start + Duration::from_secs(9)));
        assert!(filter.admit(&[b"old"], start + Duration::from_secs(10)));
        for i in 0..10_000u32 {
            filter.admit(&[&i.to_be_bytes()], start + Duration::from_secs(11));
            assert!(filter.len() <= 100);
        }
        assert_eq!(filter.seen.len(), filter.order.len());
        assert!(filter.admit(&[b"x"], start + Duration::from_secs(30)));
        assert_eq!(filter.len(), 1);
    }
}
