//! Live per-deployment state, shared across config reloads through the `StateRegistry`:
//! in-flight count, lifetime counters, the current minute's usage (rpm/tpm limits, the
//! failure-rate cooldown rule), latency moving averages, and the cooldown circuit (deadline,
//! half-open probe). Atomics everywhere except the minute window, a short non-async lock.
//! The rules that decide *when* to cool down live in `cooldown`; limits in `limits`.

use super::clock::{from_nanos, later, minute_of, to_nanos};
use crate::shared_state::deployment_usage::FleetUsage;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Weight of a new sample in the latency moving averages.
const EWMA_ALPHA: f64 = 0.3;

/// Live counters for one deployment.
#[derive(Default, Debug)]
pub struct DeploymentState {
    /// Requests currently running on this deployment (attempts, not client requests).
    pub in_flight: AtomicU64,
    /// Attempts started, lifetime.
    pub requests: AtomicU64,
    /// Attempts failed, lifetime.
    pub failures: AtomicU64,
    /// Attempts succeeded, lifetime.
    pub successes: AtomicU64,
    /// Times the deployment entered cooldown, lifetime.
    pub cooldowns: AtomicU64,
    /// End of the current cooldown (clock nanos), 0 when none was ever set.
    cooldown_until: AtomicU64,
    /// Cooled down and not yet proven healthy: the next pick is a half-open probe.
    needs_probe: AtomicBool,
    /// A probe request is running.
    probing: AtomicBool,
    /// Moving averages in microseconds (0 = no sample yet).
    latency_us: AtomicU64,
    ttft_us: AtomicU64,
    window: Mutex<Window>,
    /// Active health check verdict (healthy until a check says otherwise).
    unhealthy: AtomicBool,
    health_successes: AtomicU32,
    health_failures: AtomicU32,
    /// This minute's usage across every instance on Redis (when shared; see
    /// [`crate::shared_state::deployment_usage`]).
    pub fleet: Arc<FleetUsage>,
}

/// Counts for the current minute, plus the count-rule failure window.
#[derive(Default, Debug, Clone, Copy)]
pub(super) struct Window {
    pub minute: u64,
    pub requests: u64,
    pub tokens: u64,
    pub successes: u64,
    pub fails: u64,
    /// Failures counted by the `allowed_fails` rule, and when that count expires.
    pub recent_fails: u32,
    pub recent_fails_expire: u64,
}

impl Window {
    fn roll(&mut self, now: Instant) {
        let m = minute_of(now);
        if m != self.minute {
            *self = Window {
                minute: m,
                recent_fails: self.recent_fails,
                recent_fails_expire: self.recent_fails_expire,
                ..Window::default()
            };
        }
    }
}

/// Whether a deployment can take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Ready,
    /// The cooldown ended; the next request is a probe deciding whether it is back.
    Probe,
    /// Cooling down (or a probe is running) until about this instant.
    Cooling(Instant),
}

impl DeploymentState {
    // ---- read accessors (metrics, readiness) ----

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests_total(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn failures_total(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub fn successes_total(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    pub fn cooldowns_total(&self) -> u64 {
        self.cooldowns.load(Ordering::Relaxed)
    }

    /// Cooling down at `now` (a half-open deployment waiting for its probe is not).
    pub fn is_cooling_down(&self, now: Instant) -> bool {
        self.cooldown_remaining(now).is_some()
    }

    /// Time left in the current cooldown.
    pub fn cooldown_remaining(&self, now: Instant) -> Option<Duration> {
        let until = self.cooldown_until.load(Ordering::Acquire);
        if until == 0 {
            return None;
        }
        let left = from_nanos(until).saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// False while an active health check says the deployment is down.
    pub fn is_healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Acquire)
    }

    /// Records a health check result; flips the verdict after `healthy_after` consecutive
    /// successes or `unhealthy_after` consecutive failures. Returns whether it flipped.
    pub fn record_health(&self, ok: bool, healthy_after: u32, unhealthy_after: u32) -> bool {
        if ok {
            self.health_failures.store(0, Ordering::Relaxed);
            let n = self.health_successes.fetch_add(1, Ordering::Relaxed) + 1;
            n >= healthy_after && self.unhealthy.swap(false, Ordering::AcqRel)
        } else {
            self.health_successes.store(0, Ordering::Relaxed);
            let n = self.health_failures.fetch_add(1, Ordering::Relaxed) + 1;
            n >= unhealthy_after && !self.unhealthy.swap(true, Ordering::AcqRel)
        }
    }

    /// Moving average of whole-request latency.
    pub fn latency_ewma(&self) -> Option<Duration> {
        micros(self.latency_us.load(Ordering::Relaxed))
    }

    /// Moving average of time to first token (streams).
    pub fn ttft_ewma(&self) -> Option<Duration> {
        micros(self.ttft_us.load(Ordering::Relaxed))
    }

    /// (requests, tokens) counted in the minute containing `now`.
    /// With usage shared through Redis, the fleet's when it is the larger.
    pub fn minute_usage(&self, now: Instant) -> (u64, u64) {
        let w = self.window_at(now);
        let (r, t) = self.fleet.usage(now);
        (w.requests.max(r), w.tokens.max(t))
    }

    /// Failed attempts in the minute containing `now` (LiteLLM's "partial outage" signal).
    pub fn failures_this_minute(&self, now: Instant) -> u64 {
        self.window_at(now).fails
    }

    // ---- crate-internal mutation ----

    pub(super) fn window_at(&self, now: Instant) -> Window {
        let mut w = self.lock_window();
        w.roll(now);
        *w
    }

    /// Runs `f` on the current minute's window (rolled to `now`) under its lock.
    pub(super) fn with_window<T>(&self, now: Instant, f: impl FnOnce(&mut Window) -> T) -> T {
        let mut w = self.lock_window();
        w.roll(now);
        f(&mut w)
    }

    fn lock_window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn availability(&self, now: Instant) -> Availability {
        if let Some(left) = self.cooldown_remaining(now) {
            return Availability::Cooling(later(now, left));
        }
        if self.needs_probe.load(Ordering::Acquire) {
            if self.probing.load(Ordering::Acquire) {
                // Someone is probing; look again shortly.
                return Availability::Cooling(later(now, Duration::from_millis(100)));
            }
            return Availability::Probe;
        }
        Availability::Ready
    }

    /// Claims the half-open probe; false when another request got it first.
    pub(super) fn claim_probe(&self) -> bool {
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Gives the probe up without a verdict (the request was cancelled).
    pub(super) fn release_probe(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Adopts a cooldown another instance entered (shared through Redis): cools down for
    /// `for_` unless this instance's own cooldown already runs at least as long.
    pub fn adopt_cooldown(&self, now: Instant, for_: Duration) {
        if self
            .cooldown_remaining(now)
            .is_none_or(|left| left + Duration::from_millis(50) < for_)
        {
            self.cool_down(now, for_);
        }
    }

    /// Cools down until at least `now + for_` (saturating). Never shortens a running cooldown.
    pub(super) fn cool_down(&self, now: Instant, for_: Duration) {
        let target = to_nanos(later(now, for_));
        let prev = self.cooldown_until.fetch_max(target, Ordering::AcqRel);
        let was_cooling = prev != 0 && from_nanos(prev) > now;
        if !was_cooling {
            self.cooldowns.fetch_add(1, Ordering::Relaxed);
        }
        self.needs_probe.store(true, Ordering::Release);
        self.probing.store(false, Ordering::Release);
    }

    /// A success: a running probe closes the circuit and the failure rate starts over.
    pub(super) fn record_success(&self, now: Instant, latency: Duration, ttft: Option<Duration>) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        let reopened = self.needs_probe.swap(false, Ordering::AcqRel);
        self.probing.store(false, Ordering::Release);
        self.with_window(now, |w| {
            w.successes += 1;
            if reopened {
                w.fails = 0;
                w.recent_fails = 0;
            }
        });
        ewma(&self.latency_us, latency);
        if let Some(t) = ttft {
            ewma(&self.ttft_us, t);
        }
    }

    /// Adds tokens used to the current minute (tpm).
    pub(super) fn record_tokens(&self, now: Instant, tokens: u64) {
        self.with_window(now, |w| w.tokens += tokens);
        self.fleet.add_tokens(tokens);
    }

    /// Sets the latency averages directly (tests, warm starts).
    pub fn seed_latency(&self, latency: Duration, ttft: Option<Duration>) {
        self.latency_us
            .store(latency.as_micros().max(1) as u64, Ordering::Relaxed);
        if let Some(t) = ttft {
            self.ttft_us
                .store(t.as_micros().max(1) as u64, Ordering::Relaxed);
        }
    }
}

fn micros(v: u64) -> Option<Duration> {
    (v != 0).then(|| Duration::from_micros(v))
}

/// Folds a sample into a moving average. A lost race drops one sample, which is fine.
fn ewma(cell: &AtomicU64, sample: Duration) {
    let s = sample.as_micros().max(1) as f64;
    let old = cell.load(Ordering::Relaxed);
    let new = if old == 0 {
        s
    } else {
        old as f64 * (1.0 - EWMA_ALPHA) + s * EWMA_ALPHA
    };
    cell.store(new.max(1.0) as u64, Ordering::Relaxed);
}
