//! Time for routing decisions. Live state stores instants as nanoseconds since a process-wide
//! epoch (so they fit in atomics), and every routing function takes `now` as an argument instead
//! of reading the clock itself: unit tests drive cooldowns, minute windows and probes with a
//! [`TestClock`] instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The instant all stored times count from (first use in the process).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// `t` as nanoseconds since [`epoch`]. Never 0 (0 means "unset" in stored state).
pub fn to_nanos(t: Instant) -> u64 {
    (t.saturating_duration_since(epoch()).as_nanos() as u64).max(1)
}

/// The instant `nanos` stands for.
pub fn from_nanos(nanos: u64) -> Instant {
    epoch() + Duration::from_nanos(nanos)
}

/// Index of the minute `t` falls in (rpm/tpm windows, the cooldown failure-rate window).
pub fn minute_of(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_secs() / 60
}

/// Time left until the minute containing `t` ends.
pub fn until_next_minute(t: Instant) -> Duration {
    let since = t.saturating_duration_since(epoch());
    Duration::from_secs(60) - Duration::from_nanos((since.as_nanos() % 60_000_000_000) as u64)
}

/// A time source.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to.
pub struct TestClock {
    base: Instant,
    offset_nanos: AtomicU64,
}

impl TestClock {
    pub fn new() -> Self {
        TestClock {
            base: Instant::now().max(epoch()),
            offset_nanos: AtomicU64::new(0),
        }
    }

    pub fn advance(&self, d: Duration) {
        self.offset_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanos_round_trip_and_minutes() {
        let c = TestClock::new();
        let t = c.now();
        assert!(from_nanos(to_nanos(t)).duration_since(t) < Duration::from_nanos(2));
        let m = minute_of(c.now());
        c.advance(until_next_minute(c.now()));
        assert_eq!(minute_of(c.now()), m + 1);
        assert_eq!(until_next_minute(c.now()), Duration::from_secs(60));
    }
}
