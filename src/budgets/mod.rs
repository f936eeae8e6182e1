//! Budgets without overshoot: `max_budget`, `soft_budget` and `budget_duration` windows on
//! virtual keys and per model per key (`model_max_budget`), enforced by reserving each
//! request's worst-case cost at admission and reconciling to its actual cost at settle.
//!
//! - [`ledger`]: the scopes a budget is set on, their window spend and in-flight reservations
//!   (where spend truth lives: see its doc).
//! - [`duration`]: LiteLLM's `budget_duration` and its standardized reset times.
//! - [`stage`]: the `Admit` stage (reserve on every scope at once, or refuse with LiteLLM's
//!   `budget_exceeded`) and the `Settle` stage (release, count the actual cost).
//! - [`shared`]: with Redis, the scopes' spend and reservations live there, so N instances
//!   enforce one budget.
//! - [`metrics`]: LiteLLM's Prometheus spend and remaining-budget series, label sets capped.
//!
//! One [`Budgets`] per key store, made on first use and kept for the life of the process:
//! reservations in flight survive a config reload (the stages are rebuilt, the ledger is not).
//!
//! Window resets: a scope whose window ended is reset when a request next touches it and, for
//! every key, team, user, end user and team member with a `budget_duration`, by the reset job
//! every [`RESET_EVERY`], whether or not it is used (LiteLLM's job runs every ~10 minutes; this
//! one runs on schedule). A reset sets the entity's spend to 0 in memory and, through the spend
//! writer (after the spend rows queued before it, on the store's runtime), `spend = 0` and the
//! next `budget_reset_at` in the database (an end user's spend only: its budget row's reset
//! time is LiteLLM's to keep; a team member's window is kept in memory only).

pub mod duration;
pub mod ledger;
pub mod metrics;
pub mod shared;
pub mod stage;

use crate::keys::Keys;
use ledger::{Ledger, ScopeKey};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration as StdDuration;

/// How often the reset job looks for ended windows.
pub const RESET_EVERY: StdDuration = StdDuration::from_millis(250);

/// Distinct keys (and, separately, teams; key×model pairs) exported to Prometheus, at most.
/// Past it, new ones are counted, not exported (see [`metrics`]).
pub const EXPORT_CAP: usize = 1000;

/// The budget state of one key store.
pub struct Budgets {
    pub ledger: Ledger,
    pub keys: Arc<Keys>,
    pub counters: Counters,
    pub spend: metrics::SpendSeries,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Counters {
    /// Requests refused over budget, by scope kind (key, key_model, …).
    pub refused: Mutex<Vec<(&'static str, u64)>>,
    /// Soft budgets crossed (once per scope per window).
    pub soft_crossed: AtomicU64,
    /// Budgeted requests to an unpriced model (admitted under `allow`, refused under `deny`).
    pub unpriced: AtomicU64,
    /// Windows reset.
    pub resets: AtomicU64,
    /// Resets the spend writer's queue had no room for (the database keeps the old spend until
    /// the next reset of that entity; memory is reset anyway).
    pub resets_dropped: AtomicU64,
}

impl Counters {
    pub fn refused(&self, kind: &'static str) {
        let mut v = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        match v.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => v.push((kind, 1)),
        }
    }
}

static REGISTRY: Mutex<Vec<Arc<Budgets>>> = Mutex::new(Vec::new());

impl Budgets {
    /// The budgets of `keys`: made (and the reset job started) on the first call, the same
    /// ones after. Called when stages are built, never per request.
    pub fn for_keys(keys: &Arc<Keys>) -> Arc<Budgets> {
        let mut registry = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = registry.iter().find(|b| Arc::ptr_eq(&b.keys, keys)) {
            return b.clone();
        }
        let budgets = Arc::new(Budgets {
            ledger: Ledger::new(EXPORT_CAP),
            keys: keys.clone(),
            counters: Counters::default(),
            spend: metrics::SpendSeries::new(EXPORT_CAP),
        });
        registry.push(budgets.clone());
        let weak = Arc::downgrade(&budgets);
        let spawned = std::thread::Builder::new()
            .name("switchboard-budgets".into())
            .spawn(move || reset_job(weak));
        if let Err(e) = spawned {
            log::error!("budgets: cannot start the reset job ({e}); windows reset on use only");
        }
        budgets
    }

    /// The budgets of `keys` if any were made (metrics).
    pub fn existing(keys: &Arc<Keys>) -> Option<Arc<Budgets>> {
        REGISTRY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|b| Arc::ptr_eq(&b.keys, keys))
            .cloned()
    }

    /// A key's scope, its window rolled first when it ended (the key's spend zeroed here and
    /// the database reset queued).
    pub fn key_scope(&self, key: &crate::tenant::KeyEntry, now_ms: i64) -> Arc<ledger::Scope> {
        self.entity_scope(
            ScopeKey::Key(key.row.token.clone()),
            key.row.budget_duration.as_deref(),
            key.row.budget_reset_at,
            Some(("LiteLLM_VerificationToken", &key.row.token)),
            now_ms,
            || key.set_spend(0.0),
        )
    }

    /// The scope of an entity that counts its own spend (a key, team, user, team member, end
    /// user), its window rolled first when it ended: `zero` sets the entity's spend to 0 here,
    /// and `persist` (table, id) queues the database reset (`None`: memory only).
    pub fn entity_scope(
        &self,
        key: ScopeKey,
        duration: Option<&str>,
        stored_reset_at: Option<i64>,
        persist: Option<(&'static str, &str)>,
        now_ms: i64,
        zero: impl FnOnce(),
    ) -> Arc<ledger::Scope> {
        let scope = self.ledger.scope(&key, false);
        let duration = duration.and_then(duration::Duration::parse);
        if duration.is_none() {
            scope.roll_if_due(None, None, now_ms);
            return scope;
        }
        let first = scope.reset_at_ms().is_none();
        match scope.roll_if_due(duration, stored_reset_at, now_ms) {
            Some(next) => {
                zero();
                self.counters.resets.fetch_add(1, Ordering::Relaxed);
                if let Some((table, id)) = persist {
                    if !self.keys.spend.reset_budget(table, id.to_string(), next) {
                        self.counters.resets_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            None => {
                // A schedule started here (no stored `budget_reset_at`): store it, as LiteLLM
                // sets it when the entity is made.
                if let (true, None, Some((table, id)), Some(at)) =
                    (first, stored_reset_at, persist, scope.reset_at_ms())
                {
                    if table != "LiteLLM_EndUserTable" {
                        self.persist_reset_at(table, id, at);
                    }
                }
            }
        }
        scope
    }

    /// Stores an entity's first `budget_reset_at` (its spend untouched), in the background.
    fn persist_reset_at(&self, table: &'static str, id: &str, at: i64) {
        let store = self.keys.store.clone();
        let id = id.to_string();
        self.keys.spawn(async move {
            if let Err(e) = store.set_budget_reset_at(table, &id, at).await {
                log::warn!("budgets: storing budget_reset_at of {table} {id} failed: {e}");
            }
        });
    }
}

/// Every [`RESET_EVERY`]: rolls every budgeted key whose window ended (used or not).
fn reset_job(budgets: Weak<Budgets>) {
    loop {
        std::thread::sleep(RESET_EVERY);
        let Some(b) = budgets.upgrade() else { return };
        let now = crate::keys::now_ms();
        for key in b.keys.all() {
            if key.row.budget_duration.is_some() {
                b.key_scope(&key, now);
            }
        }
        let tenants = b.keys.tenants.maps();
        for t in tenants.teams.values() {
            if t.row.budget_duration.is_some() {
                stage::team_scope(&b, t, now);
            }
        }
        for u in tenants.users.values() {
            if u.row.budget_duration.is_some() {
                stage::user_scope(&b, u, now);
            }
        }
        for e in tenants.end_users.values() {
            if e.budget
                .as_ref()
                .is_some_and(|x| x.row.budget_duration.is_some())
            {
                stage::end_user_scope(&b, e, now);
            }
        }
        for by_user in tenants.memberships.values() {
            for m in by_user.values() {
                if m.budget
                    .as_ref()
                    .is_some_and(|x| x.row.budget_duration.is_some())
                {
                    stage::member_scope(&b, m, now);
                }
            }
        }
        drop(tenants);
        // Per-model windows hold no entity spend: they reset on their own.
        for scope in b.ledger.all() {
            if let ScopeKey::KeyModel(..) = scope.key {
                let d = scope.view().limits.duration;
                if scope.roll_if_due(d, None, now).is_some() {
                    b.counters.resets.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
