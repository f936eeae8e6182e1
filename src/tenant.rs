//! Who a request is for, as it carries it: the virtual key in
//! [`crate::context::Principal`] and the key's team, user, team membership and the request's
//! end user in [`Tenancy`] (`ctx.tenancy`). Each entry is its database row plus the spend this
//! instance knows for it. A leaf beside `context`: the key store in [`crate::keys`] and the
//! tenant store in [`crate::tenants`] build these; stages only read them.
//!
//! For budget and rate-limit stages, the limits of a request are:
//! - key: [`KeyEntry::row`] (`max_budget`, `budget_duration`, `tpm_limit`, `rpm_limit`,
//!   `max_parallel_requests`) and [`KeyEntry::spend`];
//! - team: [`TeamEntry::row`] (`max_budget`, `budget_duration`, `budget_reset_at`,
//!   `tpm_limit`, `rpm_limit`, `max_parallel_requests`, `model_max_budget`) and
//!   [`TeamEntry::spend`];
//! - user: [`UserEntry::row`] (same fields) and [`UserEntry::spend`];
//! - team member: [`MembershipEntry::budget`] (a [`BudgetEntry`]: `max_budget`, `soft_budget`,
//!   `budget_duration`, `tpm_limit`, `rpm_limit`, `max_parallel_requests`,
//!   `model_max_budget`) and [`MembershipEntry::spend`];
//! - end user: [`EndUserEntry::budget`] (a [`BudgetEntry`]) and [`EndUserEntry::spend`].
//!
//! Spend counters are raised at settle by the spend writer ([`crate::keys::spend`]) and
//! written to the database behind, in batches.

use crate::store::{BudgetRow, EndUserRow, KeyRow, MembershipRow, TeamRow, UserRow};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A spend total (USD) that requests raise without a lock.
#[derive(Debug, Default)]
pub struct Spend(AtomicU64);

impl Spend {
    pub fn new(usd: f64) -> Spend {
        Spend(AtomicU64::new(usd.to_bits()))
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub fn set(&self, usd: f64) {
        self.0.store(usd.to_bits(), Ordering::Relaxed);
    }

    pub fn add(&self, usd: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + usd).to_bits())
            });
    }

    /// Keeps the larger of the loaded and the counted spend (a reload never loses calls
    /// settled here but not yet written).
    pub fn at_least(&self, usd: f64) {
        if usd > self.get() {
            self.set(usd);
        }
    }
}

/// A key as served: its row, and its spend as this instance knows it (the row's plus calls
/// settled here since, added at once; the database gets them in the next spend batch).
///
/// The spend counter is shared with the entry this one replaces (a reload, an admin update):
/// a request still holding the old entry settles into the same counter, so a reload never
/// loses a call in flight (a budget reads this counter).
#[derive(Debug)]
pub struct KeyEntry {
    pub row: KeyRow,
    spend: Arc<Spend>,
}

impl KeyEntry {
    pub fn new(row: KeyRow) -> Arc<KeyEntry> {
        Arc::new(KeyEntry {
            spend: Arc::new(Spend::new(row.spend)),
            row,
        })
    }

    /// `row` replacing `prev`: the same spend counter, raised to the row's spend if that is
    /// higher (spend written by another instance), never lowered (calls settled here but not
    /// yet written).
    pub fn replacing(row: KeyRow, prev: &KeyEntry) -> Arc<KeyEntry> {
        prev.spend.at_least(row.spend);
        Arc::new(KeyEntry {
            spend: prev.spend.clone(),
            row,
        })
    }

    pub fn spend(&self) -> f64 {
        self.spend.get()
    }

    pub fn set_spend(&self, spend: f64) {
        self.spend.set(spend);
    }

    pub fn add_spend(&self, cost: f64) {
        self.spend.add(cost);
    }

    /// The row with the spend this instance knows.
    pub fn current_row(&self) -> KeyRow {
        let mut row = self.row.clone();
        row.spend = self.spend();
        row
    }
}

/// A team (`LiteLLM_TeamTable`).
#[derive(Debug)]
pub struct TeamEntry {
    pub row: TeamRow,
    /// Shared with the entry this one replaced (a reload, an admin write), so calls still
    /// in flight on the old entry count on the new one.
    pub spend: Arc<Spend>,
}

impl TeamEntry {
    /// `row` replacing `prev`: the same spend counter, raised to the row's spend if that is
    /// higher (spend written elsewhere), never lowered (calls settled here, not yet written).
    pub fn replacing(row: TeamRow, prev: Option<&TeamEntry>) -> Arc<TeamEntry> {
        match prev {
            Some(prev) => {
                prev.spend.at_least(row.spend);
                Arc::new(TeamEntry {
                    spend: prev.spend.clone(),
                    row,
                })
            }
            None => TeamEntry::new(row),
        }
    }

    pub fn new(row: TeamRow) -> Arc<TeamEntry> {
        Arc::new(TeamEntry {
            spend: Arc::new(Spend::new(row.spend)),
            row,
        })
    }

    pub fn current_row(&self) -> TeamRow {
        TeamRow {
            spend: self.spend.get(),
            ..self.row.clone()
        }
    }
}

/// An internal user (`LiteLLM_UserTable`): owns keys, belongs to teams.
#[derive(Debug)]
pub struct UserEntry {
    pub row: UserRow,
    /// Shared with the entry this one replaced (a reload, an admin write), so calls still
    /// in flight on the old entry count on the new one.
    pub spend: Arc<Spend>,
}

impl UserEntry {
    /// `row` replacing `prev`, sharing its spend counter (see [`TeamEntry::replacing`]).
    pub fn replacing(row: UserRow, prev: Option<&UserEntry>) -> Arc<UserEntry> {
        match prev {
            Some(prev) => {
                prev.spend.at_least(row.spend);
                Arc::new(UserEntry {
                    spend: prev.spend.clone(),
                    row,
                })
            }
            None => UserEntry::new(row),
        }
    }

    pub fn new(row: UserRow) -> Arc<UserEntry> {
        Arc::new(UserEntry {
            spend: Arc::new(Spend::new(row.spend)),
            row,
        })
    }

    pub fn current_row(&self) -> UserRow {
        UserRow {
            spend: self.spend.get(),
            ..self.row.clone()
        }
    }
}

/// A budget (`LiteLLM_BudgetTable`), shared by end users and team memberships.
#[derive(Debug)]
pub struct BudgetEntry {
    pub row: BudgetRow,
}

/// An end user, or customer (`LiteLLM_EndUserTable`), with its budget resolved.
#[derive(Debug)]
pub struct EndUserEntry {
    pub row: EndUserRow,
    /// The row's `budget_id`, resolved (`None`: no budget, or the budget row is missing).
    pub budget: Option<Arc<BudgetEntry>>,
    /// Shared with the entry this one replaced (a reload, an admin write), so calls still
    /// in flight on the old entry count on the new one.
    pub spend: Arc<Spend>,
}

impl EndUserEntry {
    /// `row` replacing `prev`, sharing its spend counter (see [`TeamEntry::replacing`]).
    pub fn replacing(
        row: EndUserRow,
        budget: Option<Arc<BudgetEntry>>,
        prev: Option<&EndUserEntry>,
    ) -> Arc<EndUserEntry> {
        match prev {
            Some(prev) => {
                prev.spend.at_least(row.spend);
                Arc::new(EndUserEntry {
                    spend: prev.spend.clone(),
                    budget,
                    row,
                })
            }
            None => EndUserEntry::new(row, budget),
        }
    }

    pub fn new(row: EndUserRow, budget: Option<Arc<BudgetEntry>>) -> Arc<EndUserEntry> {
        Arc::new(EndUserEntry {
            spend: Arc::new(Spend::new(row.spend)),
            budget,
            row,
        })
    }

    pub fn current_row(&self) -> EndUserRow {
        EndUserRow {
            spend: self.spend.get(),
            ..self.row.clone()
        }
    }
}

/// A user's membership of a team (`LiteLLM_TeamMembership`), with its budget resolved.
#[derive(Debug)]
pub struct MembershipEntry {
    pub row: MembershipRow,
    pub budget: Option<Arc<BudgetEntry>>,
    /// Shared with the entry this one replaced (a reload, an admin write), so calls still
    /// in flight on the old entry count on the new one.
    pub spend: Arc<Spend>,
}

impl MembershipEntry {
    /// `row` replacing `prev`, sharing its spend counter (see [`TeamEntry::replacing`]).
    pub fn replacing(
        row: MembershipRow,
        budget: Option<Arc<BudgetEntry>>,
        prev: Option<&MembershipEntry>,
    ) -> Arc<MembershipEntry> {
        match prev {
            Some(prev) => {
                prev.spend.at_least(row.spend);
                Arc::new(MembershipEntry {
                    spend: prev.spend.clone(),
                    budget,
                    row,
                })
            }
            None => MembershipEntry::new(row, budget),
        }
    }

    pub fn new(row: MembershipRow, budget: Option<Arc<BudgetEntry>>) -> Arc<MembershipEntry> {
        Arc::new(MembershipEntry {
            spend: Arc::new(Spend::new(row.spend)),
            budget,
            row,
        })
    }

    pub fn current_row(&self) -> MembershipRow {
        MembershipRow {
            spend: self.spend.get(),
            ..self.row.clone()
        }
    }
}

/// The tenants a request belongs to, resolved from memory after authentication (no query):
/// the virtual key's team and user, the user's membership of that team, and the request's end
/// user (`x-litellm-end-user-id`, else the body's `user`). `None` where the key has none, or
/// the row does not exist (an end user is created on its first spend, by the spend writer).
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    pub team: Option<Arc<TeamEntry>>,
    pub user: Option<Arc<UserEntry>>,
    pub membership: Option<Arc<MembershipEntry>>,
    pub end_user: Option<Arc<EndUserEntry>>,
}

impl Tenancy {
    /// Adds a settled call's cost to every resolved entry's in-memory spend.
    pub fn add_spend(&self, cost: f64) {
        if let Some(t) = &self.team {
            t.spend.add(cost);
        }
        if let Some(u) = &self.user {
            u.spend.add(cost);
        }
        if let Some(m) = &self.membership {
            m.spend.add(cost);
        }
        if let Some(e) = &self.end_user {
            e.spend.add(cost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call in flight on an entry a reload (or an admin write) replaced still counts: the
    /// new entry shares the old one's counter, raised to a higher loaded spend, never lowered.
    #[test]
    fn a_replaced_entry_keeps_counting_the_calls_of_the_old_one() {
        let old = TeamEntry::new(TeamRow {
            team_id: "t".into(),
            spend: 1.0,
            ..Default::default()
        });
        let new = TeamEntry::replacing(
            TeamRow {
                team_id: "t".into(),
                spend: 0.5,
                ..Default::default()
            },
            Some(&old),
        );
        old.spend.add(0.25);
        assert_eq!(new.spend.get(), 1.25);
        let newer = TeamEntry::replacing(
            TeamRow {
                team_id: "t".into(),
                spend: 3.0,
                ..Default::default()
            },
            Some(&new),
        );
        assert_eq!(old.spend.get(), 3.0);
        assert_eq!(newer.current_row().spend, 3.0);
    }
}
