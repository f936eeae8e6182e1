//! Deployment limits: `max_parallel_requests` (requests in flight), `rpm` and `tpm` (requests
//! and tokens in the current minute). Admission checks and counts in one step, so concurrent
//! requests cannot both take the last slot; a refused deployment is skipped, and when every
//! deployment is refused the client gets 429 with a Retry-After.
//!
//! With Redis, `rpm`/`tpm` also count the fleet's usage this minute
//! ([`crate::shared_state::deployment_usage`]: synced in the background, never awaited here).

use super::clock::until_next_minute;
use super::state::DeploymentState;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub max_parallel: Option<u64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

/// Why a deployment refused a request, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Parallel,
    Rpm(Duration),
    Tpm(Duration),
}

impl Refusal {
    pub fn retry_in(self) -> Duration {
        match self {
            // A slot frees when any running request ends: soon, but unknown.
            Refusal::Parallel => Duration::from_secs(1),
            Refusal::Rpm(d) | Refusal::Tpm(d) => d,
        }
    }
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.max_parallel.is_none() && self.rpm.is_none() && self.tpm.is_none()
    }
}

impl DeploymentState {
    /// Takes a slot: counts the request in flight and in this minute, or refuses without
    /// counting anything.
    pub fn try_admit(&self, now: Instant, limits: &Limits) -> Result<(), Refusal> {
        let running = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if limits.max_parallel.is_some_and(|max| running > max) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Parallel);
        }
        let verdict = self.with_window(now, |w| {
            if limits.rpm.is_some_and(|rpm| w.requests >= rpm) {
                return Err(Refusal::Rpm(until_next_minute(now)));
            }
            if limits.tpm.is_some_and(|tpm| w.tokens >= tpm) {
                return Err(Refusal::Tpm(until_next_minute(now)));
            }
            if crate::shared_state::deployment_usage::active()
                && (limits.rpm.is_some() || limits.tpm.is_some())
            {
                // Fleet-wide (another instance's count lags by the sync interval at most):
                // checked and counted under this instance's window lock.
                let (requests, tokens) = self.fleet.usage(now);
                let retry = self
                    .fleet
                    .minute_left(now)
                    .unwrap_or_else(|| until_next_minute(now));
                if limits.rpm.is_some_and(|rpm| requests >= rpm) {
                    return Err(Refusal::Rpm(retry));
                }
                if limits.tpm.is_some_and(|tpm| tokens >= tpm) {
                    return Err(Refusal::Tpm(retry));
                }
                self.fleet.add_request();
            }
            w.requests += 1;
            Ok(())
        });
        match verdict {
            Ok(()) => {
                self.requests.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(r) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(r)
            }
        }
    }

    /// Gives back a slot taken by [`DeploymentState::try_admit`].
    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::clock::{Clock, TestClock};

    #[test]
    fn parallel_rpm_and_tpm_limits() {
        let c = TestClock::new();
        let s = DeploymentState::default();
        let l = Limits {
            max_parallel: Some(2),
            rpm: Some(3),
            tpm: Some(100),
        };
        assert!(s.try_admit(c.now(), &l).is_ok());
        assert!(s.try_admit(c.now(), &l).is_ok());
        assert_eq!(s.try_admit(c.now(), &l), Err(Refusal::Parallel));
        assert_eq!(s.in_flight(), 2);
        s.leave();
        assert!(s.try_admit(c.now(), &l).is_ok());
        s.leave();
        s.leave();
        // Three requests this minute: the fourth waits for the next minute.
        match s.try_admit(c.now(), &l) {
            Err(Refusal::Rpm(d)) => assert!(d <= Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.in_flight(), 0);
        c.advance(until_next_minute(c.now()));
        assert!(s.try_admit(c.now(), &l).is_ok());
        s.leave();
        s.record_tokens(c.now(), 100);
        assert!(matches!(s.try_admit(c.now(), &l), Err(Refusal::Tpm(_))));
        assert_eq!(s.minute_usage(c.now()), (1, 100));
    }
}
