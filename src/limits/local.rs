//! The in-process limiter: GCRA cells and parallel-slot counters in a sharded map under short
//! synchronous locks (never held across an await). Used when no Redis is configured, and as
//! each instance's own view while Redis fails under the `open` policy.
//!
//! GCRA ("generic cell rate algorithm", a token bucket kept as one timestamp): a limit of `L`
//! per window `W` spends `W / L` of "theoretical arrival time" (TAT) per unit (a request, a
//! token); a request costing `n` is admitted when `max(TAT, now) + n·W/L − now ≤ W`. At most
//! `L` are admitted at once, and capacity comes back continuously (one unit every `W / L`)
//! instead of all at a window edge, so there is no fixed window's double burst at its edge.

use super::{Measure, Scope, ScopeResult};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Shards of the cell map; a request touches one lock per scope, briefly.
const SHARDS: usize = 32;
/// A shard past this many cells drops the idle ones (a full bucket and no slot held).
const PRUNE_ABOVE: usize = 4096;

#[derive(Default, Clone, Copy)]
struct Cell {
    /// Theoretical arrival time, ms on this process's clock.
    tat: f64,
    /// Parallel slots held.
    held: u64,
}

pub struct Local {
    epoch: Instant,
    shards: Box<[Mutex<HashMap<u64, Cell>>]>,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            epoch: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// One GCRA step: the result, and the new TAT when admitted.
pub fn gcra(tat: f64, now: f64, limit: u64, cost: u64, window_ms: f64) -> (ScopeResult, f64) {
    let per = window_ms / limit as f64;
    let tat = tat.max(now);
    let new = tat + cost.min(limit) as f64 * per;
    // A thousandth of a millisecond of slack for float rounding.
    if new - now > window_ms + 1e-3 {
        let remaining = ((now + window_ms - tat) / per + 1e-9).floor().max(0.0) as u64;
        (
            ScopeResult {
                admitted: false,
                remaining,
                reset_ms: tat - now,
                wait_ms: new - window_ms - now,
            },
            tat,
        )
    } else {
        let remaining = ((now + window_ms - new) / per + 1e-9).floor().max(0.0) as u64;
        (
            ScopeResult {
                admitted: true,
                remaining,
                reset_ms: new - now,
                wait_ms: 0.0,
            },
            new,
        )
    }
}

impl Local {
    fn now_ms(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64() * 1000.0
    }

    fn shard(&self, id: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Cell>> {
        self.shards[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Checks every scope and takes from all of them, or from none: a refusal rolls back what
    /// the earlier scopes took. Fills `out` with one result per scope.
    pub fn admit(&self, scopes: &[Scope], out: &mut Vec<ScopeResult>) -> bool {
        out.clear();
        let now = self.now_ms();
        let mut refused = false;
        for scope in scopes {
            let mut shard = self.shard(scope.id);
            if shard.len() > PRUNE_ABOVE {
                shard.retain(|_, c| c.held > 0 || c.tat > now);
            }
            let cell = shard.entry(scope.id).or_default();
            let result = match scope.measure {
                Measure::Parallel => {
                    let admitted = cell.held < scope.limit;
                    if admitted && !refused {
                        cell.held += 1;
                    }
                    ScopeResult {
                        admitted,
                        remaining: scope.limit.saturating_sub(cell.held),
                        reset_ms: 0.0,
                        wait_ms: if admitted { 0.0 } else { 1000.0 },
                    }
                }
                _ => {
                    let (r, tat) = gcra(cell.tat, now, scope.limit, scope.cost, scope.window_ms);
                    if r.admitted && !refused {
                        cell.tat = tat;
                    }
                    r
                }
            };
            refused |= !result.admitted;
            out.push(result);
        }
        if refused {
            // Give back what the scopes before the refusal took.
            for (scope, r) in scopes.iter().zip(out.iter()) {
                if !r.admitted {
                    break;
                }
                self.give_back(scope, scope.cost as f64);
            }
        }
        !refused
    }

    /// How far a rate scope's TAT runs ahead of now, in ms: what this instance admitted on its
    /// own that has not come back yet (0 for an unknown or full cell).
    pub fn backlog_ms(&self, scope: &Scope) -> f64 {
        let now = self.now_ms();
        let shard = self.shard(scope.id);
        shard.get(&scope.id).map_or(0.0, |c| (c.tat - now).max(0.0))
    }

    /// Takes `ms` off a rate scope's TAT (the backlog was charged elsewhere: Redis).
    pub fn forget_ms(&self, scope: &Scope, ms: f64) {
        if let Some(cell) = self.shard(scope.id).get_mut(&scope.id) {
            cell.tat -= ms;
        }
    }

    /// Returns `units` of a scope's take: a parallel slot, or reserved tokens (negative
    /// `units` charges more, when the answer used more than was reserved).
    pub fn give_back(&self, scope: &Scope, units: f64) {
        let mut shard = self.shard(scope.id);
        let Some(cell) = shard.get_mut(&scope.id) else {
            return;
        };
        match scope.measure {
            Measure::Parallel => cell.held = cell.held.saturating_sub(1),
            _ => cell.tat -= units.min(scope.limit as f64) * scope.window_ms / scope.limit as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_admits_the_limit_at_once_then_one_per_interval() {
        let (w, l) = (60_000.0, 10);
        let mut tat = 0.0;
        for i in 0..10 {
            let (r, t) = gcra(tat, 1000.0, l, 1, w);
            assert!(r.admitted, "{i}");
            assert_eq!(r.remaining, 9 - i);
            tat = t;
        }
        let (r, _) = gcra(tat, 1000.0, l, 1, w);
        assert!(!r.admitted);
        assert!((r.wait_ms - 6000.0).abs() < 1e-6, "{}", r.wait_ms);
        assert!((r.reset_ms - 60_000.0).abs() < 1e-6);
        // One interval later exactly one more: no burst of a whole window at an edge.
        let (r, t) = gcra(tat, 7000.0, l, 1, w);
        assert!(r.admitted);
        let (r, _) = gcra(t, 7000.0, l, 1, w);
        assert!(!r.admitted);
        // Tokens: a cost above the limit is clamped (admissible on a full bucket).
        let (r, _) = gcra(0.0, 0.0, 100, 500, w);
        assert!(r.admitted);
        assert_eq!(r.remaining, 0);
    }
}
