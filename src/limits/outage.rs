//! Recovery without a burst. While Redis fails under the `open` policy an instance admits on
//! its own cells ([`super::local`]), which Redis never sees; a Redis that comes back (restarted
//! and empty, or merely reachable again) would then hand the fleet a whole fresh burst on top
//! of what the outage already admitted.
//!
//! So from the first failure on, the rate scopes admitted locally are remembered here (a
//! bounded set, [`MAX_SCOPES`]), and every admission stays local ("owing") until a background
//! task has charged them into Redis: one script call carrying, per scope, the backlog of its
//! local GCRA cell (how far its TAT runs ahead of now, i.e. the outage's admissions minus the
//! capacity that has returned since), added to the Redis cell's TAT (taken from Redis' `now` if
//! the cell is empty), capped at a full window. Only then do admissions go back to Redis. The
//! task probes every [`RETRY`] while Redis is down (the request path never probes), and the
//! local cells give back what was charged, so a later outage starts from what is new.
//!
//! An empty Redis after a restart is otherwise fine for GCRA: a cell without a TAT is a full
//! bucket, which is right for a scope idle for a window; what must not be lost is what the
//! outage admitted, and that is what is charged. Admissions on Redis that were lost with a
//! crashed server's memory are not recoverable (Redis without persistence).

use super::Scope;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Scopes remembered per outage; beyond this, new scopes are admitted locally but not charged
/// (counted in [`Outage::untracked`]).
pub const MAX_SCOPES: usize = 10_000;
/// How often the background task retries while Redis still fails.
pub const RETRY: Duration = Duration::from_millis(100);

#[derive(Default)]
struct State {
    /// Scope id → the scope and the round it was last admitted in.
    scopes: HashMap<u64, (Scope, u64)>,
    /// Bumped by every charge attempt: what was recorded after a snapshot is charged next time.
    round: u64,
    /// A charging task runs.
    charging: bool,
}

/// The scopes admitted locally since Redis failed (see the module doc).
#[derive(Default)]
pub struct Outage {
    state: Mutex<State>,
    /// Admissions must stay local: something is owed to Redis.
    owing: AtomicBool,
}

/// Scopes admitted locally but not remembered (the set was full), since start.
static UNTRACKED: AtomicU64 = AtomicU64::new(0);

/// Scopes admitted locally during an outage but not charged to Redis after it (the bounded
/// set was full), since start.
pub fn untracked() -> u64 {
    UNTRACKED.load(Ordering::Relaxed)
}

impl Outage {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether admissions must be decided locally (an outage's admissions are not charged yet).
    pub fn owing(&self) -> bool {
        self.owing.load(Ordering::Acquire)
    }

    /// Remembers the rate scopes of a local admission. `true` when the caller must start the
    /// charging task (none runs).
    pub fn record(&self, scopes: &[Scope]) -> bool {
        let mut st = self.lock();
        let round = st.round;
        for s in scopes
            .iter()
            .filter(|s| s.measure != super::Measure::Parallel)
        {
            if st.scopes.len() >= MAX_SCOPES && !st.scopes.contains_key(&s.id) {
                UNTRACKED.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            st.scopes.insert(s.id, (s.clone(), round));
        }
        self.owing.store(true, Ordering::Release);
        !std::mem::replace(&mut st.charging, true)
    }

    /// The scopes to charge now, and the round that snapshot closes.
    pub fn snapshot(&self) -> (Vec<Scope>, u64) {
        let mut st = self.lock();
        let round = st.round;
        st.round += 1;
        (st.scopes.values().map(|(s, _)| s.clone()).collect(), round)
    }

    /// A snapshot was charged: forgets its scopes (those admitted again since stay). `true`
    /// when nothing is owed any more: admissions go back to Redis and the task ends.
    pub fn charged(&self, round: u64) -> bool {
        let mut st = self.lock();
        st.scopes.retain(|_, (_, r)| *r > round);
        if st.scopes.is_empty() {
            st.charging = false;
            self.owing.store(false, Ordering::Release);
            return true;
        }
        false
    }

    /// The charging task could not start: the next local admission tries again.
    pub fn abandon(&self) {
        self.lock().charging = false;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Descriptor, Measure};
    use super::*;

    fn scope(id: u64, measure: Measure) -> Scope {
        Scope {
            descriptor: Descriptor::ApiKey,
            measure,
            value: id.to_string(),
            id,
            limit: 10,
            cost: 1,
            window_ms: 60_000.0,
        }
    }

    #[test]
    fn owes_until_every_round_is_charged_and_stays_bounded() {
        let o = Outage::default();
        assert!(!o.owing());
        assert!(o.record(&[scope(1, Measure::Requests), scope(2, Measure::Parallel)]));
        assert!(o.owing());
        assert!(
            !o.record(&[scope(1, Measure::Requests)]),
            "one task at a time"
        );
        let (scopes, round) = o.snapshot();
        assert_eq!(scopes.len(), 1, "parallel slots are never charged");
        // Admitted again while the charge was in flight: owed still.
        assert!(!o.record(&[scope(3, Measure::Tokens)]));
        assert!(!o.charged(round));
        assert!(o.owing());
        let (scopes, round) = o.snapshot();
        assert_eq!(scopes.len(), 1);
        assert_eq!(scopes[0].id, 3);
        assert!(o.charged(round));
        assert!(!o.owing());
        assert!(
            o.record(&[scope(1, Measure::Requests)]),
            "a new outage, a new task"
        );

        let o = Outage::default();
        let before = untracked();
        let many: Vec<Scope> = (0..MAX_SCOPES as u64 + 5)
            .map(|i| scope(i, Measure::Requests))
            .collect();
        o.record(&many);
        assert_eq!(o.snapshot().0.len(), MAX_SCOPES);
        assert!(untracked() - before >= 5);
    }
}
