//! Time for routing decisions. Live state stores instants as nanoseconds since a process-wide
//! epoch (so they fit in atomics), and every routing function takes `now` as an argument instead
//! of reading the clock itself: unit tests drive cooldowns, minute windows and probes with a
//! [`TestClock`] instead of sleeping.
//!
//! Spans added to instants may come from upstreams (Retry-After) or config: [`later`] adds them
//! without ever panicking, and nanosecond conversions saturate instead of truncating.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The instant all stored times count from (first use in the process).
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Longest span [`later`] adds (2^30 s, about 34 years): beyond any cooldown or deadline, yet
/// safe to add to any `Instant` on every platform.
pub const FAR_FUTURE: Duration = Duration::from_secs(1 << 30);

/// `t + d` that cannot panic: `d` is clamped to [`FAR_FUTURE`] (`Instant + Duration` panics on
/// overflow, and `d` may come from an upstream's Retry-After).
pub fn later(t: Instant, d: Duration) -> Instant {
    // The fallback is unreachable on real clocks (34 years past any instant still fits).
    t.checked_add(d.min(FAR_FUTURE)).unwrap_or(t)
}

/// `d` in nanoseconds, saturating at `u64::MAX` (about 584 years) instead of truncating.
pub fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `t` as nanoseconds since [`epoch`]. Never 0 (0 means "unset" in stored state).
pub fn to_nanos(t: Instant) -> u64 {
    saturating_nanos(t.saturating_duration_since(epoch())).max(1)
}

/// The instant `nanos` stands for.
pub fn from_nanos(nanos: u64) -> Instant {
    later(epoch(), Duration::from_nanos(nanos))
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
        let step = saturating_nanos(d);
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(step))
            });
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TestClock {
    fn now(&self) -> Instant {
        later(
            self.base,
            Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed)),
        )
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

    #[test]
    fn far_spans_saturate_instead_of_panicking() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(later(now, Duration::MAX), now + FAR_FUTURE);
        assert_eq!(later(now, Duration::from_secs(u64::MAX)), now + FAR_FUTURE);
        assert_eq!(saturating_nanos(Duration::MAX), u64::MAX);
        // Stored far deadlines read back as far deadlines, not wrapped-around past ones.
        let far = later(now, Duration::MAX);
        assert!(from_nanos(to_nanos(far)) > now + Duration::from_secs(86_400 * 365));
        assert!(from_nanos(u64::MAX) > now);
        let c = TestClock::new();
        c.advance(Duration::MAX);
        c.advance(Duration::MAX);
        assert!(c.now() > now);
    }
}
