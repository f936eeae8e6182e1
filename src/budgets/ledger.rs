//! The budget ledger: one [`Scope`] per thing a budget is set on (a key, a key's model, a team,
//! a user, a team member, an end user, a `LiteLLM_BudgetTable` row), each with its window's
//! spend, the cost reserved by requests in flight and the window's reset time, behind a short
//! sync lock of its own (never held across an await, never two at once).
//!
//! Where spend truth lives: the database row's `spend` plus what this instance settled since.
//! For an entity that keeps that sum in memory itself (a key's [`crate::tenant::KeyEntry`]
//! counter, raised at settle by the spend writer's stage), the scope *reads* it at admission
//! ([`Claim::observed`]) and holds only reservations and the window; for one that does not (a
//! key's per-model budget), the scope counts the window's spend itself.
//!
//! Admission ([`Ledger::reserve`]) is all-or-nothing over the request's scopes: each is checked
//! and reserved in turn under its lock; a refusal takes back the ones already reserved. A
//! concurrent request may briefly see a reservation that is about to be taken back and be
//! refused too: the error is on the safe side, never an overshoot.

use super::duration::Duration;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a budget is set on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScopeKey {
    /// A virtual key, by its hash (`token`).
    Key(String),
    /// A key's budget for one model (`model_max_budget`): key hash, model.
    KeyModel(String, String),
    Team(String),
    User(String),
    /// A user's budget within a team (`LiteLLM_TeamMembership`): team, user.
    TeamMember(String, String),
    EndUser(String),
    /// A `LiteLLM_BudgetTable` row shared by several entities, by `budget_id`.
    Budget(String),
}

impl ScopeKey {
    pub fn kind(&self) -> &'static str {
        match self {
            ScopeKey::Key(_) => "key",
            ScopeKey::KeyModel(..) => "key_model",
            ScopeKey::Team(_) => "team",
            ScopeKey::User(_) => "user",
            ScopeKey::TeamMember(..) => "team_member",
            ScopeKey::EndUser(_) => "end_user",
            ScopeKey::Budget(_) => "budget",
        }
    }

    /// The scope's id as alerts name it (`team/user` for a member, `key/model` for a model).
    pub fn id(&self) -> String {
        match self {
            ScopeKey::Key(id)
            | ScopeKey::Team(id)
            | ScopeKey::User(id)
            | ScopeKey::EndUser(id)
            | ScopeKey::Budget(id) => id.clone(),
            ScopeKey::KeyModel(a, b) | ScopeKey::TeamMember(a, b) => format!("{a}/{b}"),
        }
    }
}

/// A scope's limits as its entity has them now (read at each admission, so an admin change
/// applies to the next request).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub max_budget: Option<f64>,
    pub soft_budget: Option<f64>,
    pub duration: Option<Duration>,
}

/// One scope's state.
#[derive(Debug, Default)]
struct Window {
    /// Spend this window, when the scope counts it (see the module doc); else the last observed.
    spend: f64,
    /// Cost reserved by admitted requests still in flight.
    reserved: f64,
    /// Requests holding a reservation (when none, `reserved` is exactly 0: no float residue).
    holders: u32,
    /// When the window ends (Unix ms), with a duration.
    reset_at_ms: Option<i64>,
    duration: Option<Duration>,
    /// The soft budget was reported crossed this window.
    soft_reported: bool,
    /// The limits last seen (metrics).
    limits: Limits,
}

/// A budget scope.
#[derive(Debug)]
pub struct Scope {
    pub key: ScopeKey,
    /// Exported to Prometheus (within the label cap, decided once when the scope is made).
    pub exported: bool,
    /// Whether the scope counts its own spend (no entity counter to read).
    counts_spend: bool,
    window: Mutex<Window>,
}

/// A snapshot of a scope (metrics, errors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScopeView {
    pub spend: f64,
    pub reserved: f64,
    pub limits: Limits,
    pub reset_at_ms: Option<i64>,
}

impl Scope {
    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self) -> ScopeView {
        let w = self.lock();
        ScopeView {
            spend: w.spend,
            reserved: w.reserved,
            limits: w.limits,
            reset_at_ms: w.reset_at_ms,
        }
    }

    /// Starts a new window when the current one is over (or sets the first reset time; from
    /// the entity's stored `budget_reset_at` when it has one). `Some(next_reset)` when a
    /// window ended now: the caller zeroes the entity's spend and persists the reset. A
    /// changed duration restarts the schedule from now (as LiteLLM recomputes
    /// `budget_reset_at` on update).
    pub fn roll_if_due(
        &self,
        duration: Option<Duration>,
        stored_reset_at_ms: Option<i64>,
        now_ms: i64,
    ) -> Option<i64> {
        let mut w = self.lock();
        let Some(d) = duration else {
            w.duration = None;
            w.reset_at_ms = None;
            return None;
        };
        if w.duration != Some(d) {
            let first = w.duration.is_none() && w.reset_at_ms.is_none();
            w.duration = Some(d);
            w.reset_at_ms = Some(match stored_reset_at_ms {
                Some(at) if first => at,
                _ => d.next_reset(now_ms),
            });
        }
        match w.reset_at_ms {
            Some(at) if at <= now_ms => {
                let next = d.next_reset(now_ms);
                w.reset_at_ms = Some(next);
                w.spend = 0.0;
                w.soft_reported = false;
                Some(next)
            }
            _ => None,
        }
    }

    /// The reset time this scope works to (persisted when the schedule starts).
    pub fn reset_at_ms(&self) -> Option<i64> {
        self.lock().reset_at_ms
    }
}

/// One scope a request must fit in.
pub struct Claim {
    pub scope: Arc<Scope>,
    pub limits: Limits,
    /// The entity's spend as it counts it now; `None` when the scope counts its own.
    pub observed: Option<f64>,
}

/// Why a request was refused: the scope, and its spend, reservations and limit then.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub key: ScopeKey,
    pub spend: f64,
    pub reserved: f64,
    pub max_budget: f64,
    pub requested: f64,
}

/// A soft budget crossed (reported once per window).
#[derive(Debug, Clone)]
pub struct SoftCrossing {
    pub key: ScopeKey,
    pub spend: f64,
    pub soft_budget: f64,
}

/// What an admission holds: `amount` reserved on every scope. Settling it ([`Reservation::settle`])
/// swaps the reservation for the actual cost; dropping it unsettled (an error path, a panic,
/// a cancelled request) releases it, billing nothing.
#[derive(Debug)]
pub struct Reservation {
    scopes: Vec<Arc<Scope>>,
    amount: f64,
    done: AtomicBool,
}

impl Reservation {
    pub fn amount(&self) -> f64 {
        self.amount
    }

    pub fn scopes(&self) -> &[Arc<Scope>] {
        &self.scopes
    }

    /// Releases the reservation and counts `actual` on the scopes that count their own spend
    /// (an entity counter is raised by its own settle stage, which runs before this one). Once.
    pub fn settle(&self, actual: f64) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        for s in &self.scopes {
            let mut w = s.lock();
            release(&mut w, self.amount);
            if s.counts_spend && actual.is_finite() && actual > 0.0 {
                w.spend += actual;
            }
        }
    }
}

fn release(w: &mut Window, amount: f64) {
    w.holders = w.holders.saturating_sub(1);
    w.reserved = if w.holders == 0 {
        0.0
    } else {
        (w.reserved - amount).max(0.0)
    };
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            for s in &self.scopes {
                release(&mut s.lock(), self.amount);
            }
        }
    }
}

/// Every scope, by key; and how many are exported per kind (the Prometheus label cap).
pub struct Ledger {
    scopes: Mutex<Scopes>,
    export_cap: usize,
}

#[derive(Default)]
struct Scopes {
    map: HashMap<ScopeKey, Arc<Scope>>,
    /// Exported scopes per kind.
    exported: HashMap<&'static str, usize>,
}

impl Ledger {
    /// `export_cap`: scopes of one kind exported to Prometheus, at most.
    pub fn new(export_cap: usize) -> Ledger {
        Ledger {
            scopes: Mutex::new(Scopes::default()),
            export_cap,
        }
    }

    /// The scope for `key`, made on first use (`counts_spend`: see [`Claim::observed`]). The map
    /// lock is held for one lookup.
    pub fn scope(&self, key: &ScopeKey, counts_spend: bool) -> Arc<Scope> {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = scopes.map.get(key) {
            return s.clone();
        }
        let count = scopes.exported.entry(key.kind()).or_default();
        let exported = *count < self.export_cap;
        if exported {
            *count += 1;
        }
        let scope = Arc::new(Scope {
            key: key.clone(),
            exported,
            counts_spend,
            window: Mutex::new(Window::default()),
        });
        scopes.map.insert(key.clone(), scope.clone());
        scope
    }

    /// Every scope (metrics, the reset job).
    pub fn all(&self) -> Vec<Arc<Scope>> {
        self.scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .values()
            .cloned()
            .collect()
    }

    /// Records the fleet's view of each claim's scope (`(spend, reserved)` from Redis, see
    /// [`super::shared`]): the scope shows that spend, and soft budgets crossed are returned,
    /// once per window as [`Ledger::reserve`] does.
    pub fn observe(&self, claims: &[Claim], fleet: &[(f64, f64)]) -> Vec<SoftCrossing> {
        let mut soft = Vec::new();
        for (c, &(spend, _)) in claims.iter().zip(fleet) {
            let mut w = c.scope.lock();
            w.limits = c.limits;
            w.spend = spend;
            if let Some(soft_budget) = c.limits.soft_budget {
                if !w.soft_reported && spend >= soft_budget {
                    w.soft_reported = true;
                    soft.push(SoftCrossing {
                        key: c.scope.key.clone(),
                        spend,
                        soft_budget,
                    });
                }
            }
        }
        soft
    }

    /// Reserves `amount` on every claim's scope, or on none. Refused when a scope with a
    /// `max_budget` would go over it: `spend + reserved + amount > max_budget`, or already
    /// `spend + reserved >= max_budget` (LiteLLM's `spend >= max_budget`, so a zero budget
    /// admits nothing). Soft budgets already crossed are returned, once per window.
    pub fn reserve(
        &self,
        claims: &[Claim],
        amount: f64,
    ) -> Result<(Reservation, Vec<SoftCrossing>), Refusal> {
        let amount = if amount.is_finite() {
            amount.max(0.0)
        } else {
            0.0
        };
        let mut held: Vec<Arc<Scope>> = Vec::with_capacity(claims.len());
        let mut soft = Vec::new();
        for c in claims {
            let mut w = c.scope.lock();
            if let Some(observed) = c.observed {
                w.spend = observed;
            }
            w.limits = c.limits;
            let committed = w.spend + w.reserved;
            if let Some(max) = c.limits.max_budget {
                if committed >= max || committed + amount > max {
                    let refusal = Refusal {
                        key: c.scope.key.clone(),
                        spend: w.spend,
                        reserved: w.reserved,
                        max_budget: max,
                        requested: amount,
                    };
                    drop(w);
                    for s in &held {
                        release(&mut s.lock(), amount);
                    }
                    return Err(refusal);
                }
            }
            if let Some(soft_budget) = c.limits.soft_budget {
                if !w.soft_reported && w.spend >= soft_budget {
                    w.soft_reported = true;
                    soft.push(SoftCrossing {
                        key: c.scope.key.clone(),
                        spend: w.spend,
                        soft_budget,
                    });
                }
            }
            w.reserved += amount;
            w.holders += 1;
            drop(w);
            held.push(c.scope.clone());
        }
        Ok((
            Reservation {
                scopes: held,
                amount,
                done: AtomicBool::new(false),
            },
            soft,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: f64) -> Limits {
        Limits {
            max_budget: Some(max),
            ..Limits::default()
        }
    }

    #[test]
    fn reserves_all_or_nothing_and_releases_on_drop() {
        let ledger = Ledger::new(10);
        let key = ledger.scope(&ScopeKey::Key("k".into()), false);
        let model = ledger.scope(&ScopeKey::KeyModel("k".into(), "m".into()), true);
        let claims = |spend: f64| {
            vec![
                Claim {
                    scope: key.clone(),
                    limits: limits(1.0),
                    observed: Some(spend),
                },
                Claim {
                    scope: model.clone(),
                    limits: limits(0.5),
                    observed: None,
                },
            ]
        };
        let (a, _) = ledger.reserve(&claims(0.0), 0.2).unwrap();
        let (b, _) = ledger.reserve(&claims(0.0), 0.2).unwrap();
        // The model scope (0.4 of 0.5 held) refuses a third; the key scope keeps nothing of it.
        let r = ledger.reserve(&claims(0.0), 0.2).unwrap_err();
        assert_eq!(r.key, ScopeKey::KeyModel("k".into(), "m".into()));
        assert!((r.reserved - 0.4).abs() < 1e-12);
        assert!((key.view().reserved - 0.4).abs() < 1e-12);
        // Settled for less: the model scope counts what it cost, the reservation goes.
        a.settle(0.05);
        assert!((model.view().spend - 0.05).abs() < 1e-12);
        assert!((model.view().reserved - 0.2).abs() < 1e-12);
        // Dropped unsettled: released, nothing billed.
        drop(b);
        assert_eq!(model.view().reserved, 0.0);
        assert_eq!(key.view().reserved, 0.0);
        assert!((model.view().spend - 0.05).abs() < 1e-12);
        // Settling twice or dropping after settling changes nothing more.
        a.settle(1.0);
        drop(a);
        assert!((model.view().spend - 0.05).abs() < 1e-12);
        // The key's observed spend decides: at the limit, nothing more is admitted, even free.
        let r = ledger.reserve(&claims(1.0), 0.0).unwrap_err();
        assert_eq!(r.key, ScopeKey::Key("k".into()));
    }

    #[test]
    fn zero_budget_admits_nothing_and_soft_budget_reports_once_per_window() {
        let ledger = Ledger::new(10);
        let s = ledger.scope(&ScopeKey::Team("t".into()), true);
        let zero = [Claim {
            scope: s.clone(),
            limits: limits(0.0),
            observed: None,
        }];
        assert!(ledger.reserve(&zero, 0.0).is_err());
        let soft = Limits {
            soft_budget: Some(0.1),
            duration: Duration::parse("1d"),
            ..Limits::default()
        };
        let claim = [Claim {
            scope: s.clone(),
            limits: soft,
            observed: None,
        }];
        s.roll_if_due(soft.duration, None, 0);
        let (r, crossed) = ledger.reserve(&claim, 0.0).unwrap();
        assert!(crossed.is_empty());
        r.settle(0.2);
        let (_, crossed) = ledger.reserve(&claim, 0.0).unwrap();
        assert_eq!(crossed.len(), 1);
        let (_, crossed) = ledger.reserve(&claim, 0.0).unwrap();
        assert!(crossed.is_empty(), "once per window");
        // A new window: spend back to 0, the soft budget armed again.
        let day = 86_400_000;
        assert_eq!(s.roll_if_due(soft.duration, None, day - 1), None);
        assert_eq!(s.roll_if_due(soft.duration, None, day), Some(2 * day));
        assert_eq!(s.view().spend, 0.0);
    }

    #[test]
    fn the_first_window_ends_at_the_stored_reset_time() {
        let ledger = Ledger::new(10);
        let s = ledger.scope(&ScopeKey::Key("k".into()), false);
        let d = Duration::parse("30d");
        // Stored `budget_reset_at` already past: the window ends at once.
        assert!(s.roll_if_due(d, Some(5), 10).is_some());
        let s2 = ledger.scope(&ScopeKey::Key("k2".into()), false);
        assert_eq!(s2.roll_if_due(d, Some(50), 10), None);
        assert_eq!(s2.reset_at_ms(), Some(50));
        // A changed duration restarts the schedule from now.
        let h = Duration::parse("1h");
        assert_eq!(s2.roll_if_due(h, Some(50), 10), None);
        assert_eq!(s2.reset_at_ms(), Some(3_600_000));
    }

    #[test]
    fn exported_scopes_are_capped_per_kind() {
        let ledger = Ledger::new(2);
        let keys: Vec<_> = (0..3)
            .map(|i| ledger.scope(&ScopeKey::Key(i.to_string()), false))
            .collect();
        assert_eq!(
            keys.iter().map(|s| s.exported).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert!(ledger.scope(&ScopeKey::Team("t".into()), true).exported);
    }
}
