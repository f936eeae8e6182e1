//! Cooldown as a circuit breaker, with LiteLLM's rules (`cooldown_handlers.py`):
//! - only failures that say something about the deployment count: 401, 404, 408, 429, 5xx,
//!   connect errors and timeouts (a client's 400 never cools a deployment);
//! - without `allowed_fails`/`allowed_fails_policy` (the v2 rule): cool down when more than 50%
//!   of this minute's attempts failed (not on a minute's only request), and at once on a
//!   non-retryable failure (401, 404); a single-deployment group is never cooled by this rule;
//! - with them (the v1 rule): cool down when failures within `cooldown_time` exceed the allowed
//!   count for the error's class;
//! - the cooldown lasts `cooldown_time` (5 s), longer when the upstream's Retry-After says so,
//!   and re-cooling never shortens a deadline (Retry-After counts up to an hour at most);
//! - when it ends the deployment is half-open: one probe request decides. Success closes the
//!   circuit; failure cools it down again at once.

use super::state::DeploymentState;
use crate::config::{ErrorClass, RouterSettings, DEFAULT_COOLDOWN_TIME};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::MAX_RETRY_AFTER_SECS;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// LiteLLM's `DEFAULT_FAILURE_THRESHOLD_PERCENT`.
const FAILURE_THRESHOLD: f64 = 0.5;
/// LiteLLM's `DEFAULT_ALLOWED_FAILS`, used with a policy that does not name the class.
const DEFAULT_ALLOWED_FAILS: u32 = 3;

#[derive(Debug, Clone)]
pub struct CooldownPolicy {
    pub disabled: bool,
    pub cooldown_time: Duration,
    pub allowed_fails: Option<u32>,
    pub allowed_fails_policy: BTreeMap<ErrorClass, u32>,
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        CooldownPolicy {
            disabled: false,
            cooldown_time: DEFAULT_COOLDOWN_TIME,
            allowed_fails: None,
            allowed_fails_policy: BTreeMap::new(),
        }
    }
}

/// The class LiteLLM would raise for an error (for `retry_policy` and `allowed_fails_policy`).
pub fn error_class(err: &GatewayError) -> ErrorClass {
    match err.kind {
        ErrorKind::Authentication | ErrorKind::PermissionDenied => ErrorClass::Authentication,
        ErrorKind::NotFound => ErrorClass::NotFound,
        ErrorKind::RequestTimeout | ErrorKind::Timeout => ErrorClass::Timeout,
        ErrorKind::RateLimited => ErrorClass::RateLimit,
        ErrorKind::ContentPolicy => ErrorClass::ContentPolicyViolation,
        ErrorKind::Internal => ErrorClass::InternalServer,
        ErrorKind::Unavailable => ErrorClass::ServiceUnavailable,
        ErrorKind::BadGateway => ErrorClass::BadGateway,
        ErrorKind::BadRequest
        | ErrorKind::ContextLengthExceeded
        | ErrorKind::MethodNotAllowed
        | ErrorKind::Conflict
        | ErrorKind::PayloadTooLarge
        | ErrorKind::Unprocessable => ErrorClass::BadRequest,
    }
}

/// LiteLLM's `_is_cooldown_required`: 429, 401, 408, 404 and 5xx (and anything that never
/// reached an answer: connect errors, timeouts). Other 4xx are the request's fault.
fn says_something_about_the_deployment(err: &GatewayError) -> bool {
    err.upstream_untouched
        || matches!(err.status, 401 | 404 | 408 | 429)
        || err.status >= 500
        || matches!(err.kind, ErrorKind::Timeout | ErrorKind::BadGateway)
}

impl CooldownPolicy {
    pub fn from_settings(r: &RouterSettings) -> Self {
        CooldownPolicy {
            disabled: r.disable_cooldowns,
            cooldown_time: r.cooldown_time,
            allowed_fails: r.allowed_fails,
            allowed_fails_policy: r.allowed_fails_policy.clone(),
        }
    }

    fn count_rule(&self) -> bool {
        self.allowed_fails.is_some() || !self.allowed_fails_policy.is_empty()
    }

    /// Records a failed attempt; returns how long the deployment was cooled for, if it was.
    /// `probe`: the attempt was the half-open probe. `group_size`: deployments in its group.
    pub fn on_failure(
        &self,
        state: &DeploymentState,
        now: Instant,
        err: &GatewayError,
        probe: bool,
        group_size: usize,
    ) -> Option<Duration> {
        state
            .failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let counts = says_something_about_the_deployment(err);
        let cooldown_time = self.cooldown_time;
        let recent_expire = super::clock::to_nanos(super::clock::later(now, cooldown_time));
        let now_nanos = super::clock::to_nanos(now);
        let (fails, total, recent) = state.with_window(now, |w| {
            if counts {
                w.fails += 1;
                if w.recent_fails_expire <= now_nanos {
                    w.recent_fails = 0;
                }
                w.recent_fails += 1;
                w.recent_fails_expire = recent_expire;
            }
            (w.fails, w.fails + w.successes, w.recent_fails)
        });
        if self.disabled {
            if probe {
                state.release_probe();
            }
            return None;
        }
        let cool = if !counts {
            false
        } else if probe {
            true
        } else if self.count_rule() {
            let allowed = self
                .allowed_fails_policy
                .get(&error_class(err))
                .copied()
                .or(self.allowed_fails)
                .unwrap_or(DEFAULT_ALLOWED_FAILS);
            recent > allowed
        } else if group_size <= 1 {
            false
        } else {
            (total > 1 && fails as f64 / total as f64 > FAILURE_THRESHOLD) || !err.is_retryable()
        };
        if !cool {
            if probe {
                // A 400 from the probe says nothing either way: let the next request probe.
                state.release_probe();
            }
            return None;
        }
        // Providers clamp Retry-After when they read it; clamp again for errors built elsewhere.
        let upstream_wait =
            Duration::from_secs(err.retry_after.unwrap_or(0).min(MAX_RETRY_AFTER_SECS));
        let for_ = cooldown_time.max(upstream_wait);
        state.cool_down(now, for_);
        Some(for_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::clock::{Clock, TestClock};
    use crate::router::state::Availability;

    fn e(status: u16) -> GatewayError {
        GatewayError::from_upstream(status, "x")
    }

    fn policy(secs: f64) -> CooldownPolicy {
        CooldownPolicy {
            cooldown_time: Duration::from_secs_f64(secs),
            ..Default::default()
        }
    }

    #[test]
    fn failure_rate_rule_cools_after_more_than_half_failed() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        let p = policy(5.0);
        // The minute's only request failing does not cool.
        assert_eq!(p.on_failure(&s, c.now(), &e(500), false, 2), None);
        s.record_success(c.now(), Duration::from_millis(5), None);
        // 1 fail of 2: exactly 50%, not more.
        assert!(!s.is_cooling_down(c.now()));
        assert_eq!(
            p.on_failure(&s, c.now(), &e(503), false, 2),
            Some(Duration::from_secs(5))
        );
        assert!(s.is_cooling_down(c.now()));
        assert_eq!(s.cooldowns_total(), 1);
        c.advance(Duration::from_millis(4900));
        assert!(s.is_cooling_down(c.now()));
        c.advance(Duration::from_millis(200));
        assert!(!s.is_cooling_down(c.now()));
        assert_eq!(s.availability(c.now()), Availability::Probe);
    }

    #[test]
    fn non_retryable_cools_at_once_and_client_errors_never() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        let p = policy(5.0);
        for _ in 0..5 {
            assert_eq!(p.on_failure(&s, c.now(), &e(400), false, 2), None);
        }
        assert_eq!(p.on_failure(&s, c.now(), &e(403), false, 2), None);
        assert!(p.on_failure(&s, c.now(), &e(401), false, 2).is_some());
        let s2 = DeploymentState::default();
        assert!(p.on_failure(&s2, c.now(), &e(404), false, 2).is_some());
        // Single-deployment groups are not cooled by the rate rule.
        let s3 = DeploymentState::default();
        for _ in 0..5 {
            assert_eq!(p.on_failure(&s3, c.now(), &e(401), false, 1), None);
        }
    }

    #[test]
    fn retry_after_extends_and_recooling_never_shortens() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        let p = policy(1.0);
        let rl = e(429).with_retry_after(Some(30));
        p.on_failure(&s, c.now(), &rl, false, 2);
        assert_eq!(
            p.on_failure(&s, c.now(), &rl, false, 2),
            Some(Duration::from_secs(30))
        );
        // A later, shorter cooldown keeps the 30 s deadline.
        c.advance(Duration::from_secs(10));
        p.on_failure(&s, c.now(), &e(500), false, 2);
        assert_eq!(s.cooldown_remaining(c.now()), Some(Duration::from_secs(20)));
        assert_eq!(s.cooldowns_total(), 1);
    }

    #[test]
    fn endless_retry_after_cools_for_at_most_an_hour_then_probes() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        let p = policy(1.0);
        // A failed probe cools at once, so this is the path a hostile 429 takes on a probe.
        p.on_failure(&s, c.now(), &e(401), false, 2);
        c.advance(Duration::from_millis(1001));
        assert!(s.claim_probe());
        let endless = e(429).with_retry_after(Some(u64::MAX));
        assert_eq!(
            p.on_failure(&s, c.now(), &endless, true, 2),
            Some(Duration::from_secs(MAX_RETRY_AFTER_SECS))
        );
        assert_eq!(
            s.cooldown_remaining(c.now()),
            Some(Duration::from_secs(MAX_RETRY_AFTER_SECS))
        );
        // The deployment comes back: after the hour, the next request probes it.
        c.advance(Duration::from_secs(MAX_RETRY_AFTER_SECS) + Duration::from_millis(1));
        assert_eq!(s.availability(c.now()), Availability::Probe);
        assert!(s.claim_probe());
        s.record_success(c.now(), Duration::from_millis(3), None);
        assert_eq!(s.availability(c.now()), Availability::Ready);
        // Same for a non-probe failure and an absurd cooldown_time.
        let s2 = DeploymentState::default();
        let mut huge = policy(1.0);
        huge.cooldown_time = Duration::MAX;
        huge.allowed_fails = Some(0);
        assert!(huge.on_failure(&s2, c.now(), &endless, false, 1).is_some());
        assert!(s2.is_cooling_down(c.now()));
    }

    #[test]
    fn half_open_probe_decides() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        let p = policy(1.0);
        p.on_failure(&s, c.now(), &e(401), false, 2);
        c.advance(Duration::from_millis(1001));
        assert_eq!(s.availability(c.now()), Availability::Probe);
        assert!(s.claim_probe());
        assert!(!s.claim_probe(), "one probe at a time");
        assert!(matches!(s.availability(c.now()), Availability::Cooling(_)));
        // The probe fails: cooled again at once, whatever the failure rate.
        assert!(p.on_failure(&s, c.now(), &e(500), true, 2).is_some());
        assert!(s.is_cooling_down(c.now()));
        c.advance(Duration::from_millis(1001));
        assert!(s.claim_probe());
        s.record_success(c.now(), Duration::from_millis(3), None);
        assert_eq!(s.availability(c.now()), Availability::Ready);
        // The failure rate started over: one new failure does not cool.
        assert_eq!(p.on_failure(&s, c.now(), &e(500), false, 2), None);
    }

    #[test]
    fn cancelled_probe_lets_another_request_probe() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        policy(1.0).on_failure(&s, c.now(), &e(404), false, 2);
        c.advance(Duration::from_secs(2));
        assert!(s.claim_probe());
        s.release_probe();
        assert_eq!(s.availability(c.now()), Availability::Probe);
    }

    #[test]
    fn allowed_fails_count_rule() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        let mut p = policy(2.0);
        p.allowed_fails = Some(2);
        p.allowed_fails_policy.insert(ErrorClass::RateLimit, 0);
        assert_eq!(p.on_failure(&s, c.now(), &e(500), false, 1), None);
        assert_eq!(p.on_failure(&s, c.now(), &e(500), false, 1), None);
        // Failures older than cooldown_time are forgotten.
        c.advance(Duration::from_secs(3));
        assert_eq!(p.on_failure(&s, c.now(), &e(500), false, 1), None);
        assert_eq!(p.on_failure(&s, c.now(), &e(500), false, 1), None);
        assert!(p.on_failure(&s, c.now(), &e(500), false, 1).is_some());
        // A class with 0 allowed fails cools on its first.
        let s2 = DeploymentState::default();
        assert!(p.on_failure(&s2, c.now(), &e(429), false, 1).is_some());
    }

    #[test]
    fn disabled_never_cools() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        let mut p = policy(5.0);
        p.disabled = true;
        for _ in 0..10 {
            assert_eq!(p.on_failure(&s, c.now(), &e(401), false, 3), None);
        }
        assert_eq!(s.failures_total(), 10);
    }
}
