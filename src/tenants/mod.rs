//! Teams, users, end users (customers), budgets and team memberships, served from memory like
//! virtual keys ([`crate::keys`]): every row is loaded at start into maps swapped whole
//! ([`ArcSwap`]), so resolving a request's [`Tenancy`] is a few hash lookups and Arc clones,
//! never a query. Freshness follows the key store:
//! - admin writes on this instance go to the database, then into the maps, so the next request
//!   sees them;
//! - changes made elsewhere are found by the key store's background poll every
//!   [`crate::keys::REFRESH_EVERY`] (one query fingerprinting the five tables, see
//!   [`Store::tenants_marker`]) and reloaded when the fingerprint moves.
//!
//! Spend is not reloaded downwards: a reload keeps the larger of the loaded spend and what
//! this instance already counted (its own calls not yet written).

use crate::store::{BudgetRow, EndUserRow, MembershipRow, Store, TeamRow, TenantRows, UserRow};
use crate::tenant::{
    BudgetEntry, EndUserEntry, KeyEntry, MembershipEntry, TeamEntry, Tenancy, UserEntry,
};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Every tenant, by id. Memberships by team, then user (a lookup borrows both ids).
#[derive(Default, Clone)]
pub struct TenantMaps {
    pub teams: HashMap<String, Arc<TeamEntry>>,
    pub users: HashMap<String, Arc<UserEntry>>,
    pub end_users: HashMap<String, Arc<EndUserEntry>>,
    pub budgets: HashMap<String, Arc<BudgetEntry>>,
    pub memberships: HashMap<String, HashMap<String, Arc<MembershipEntry>>>,
}

impl TenantMaps {
    fn budget(&self, id: Option<&str>) -> Option<Arc<BudgetEntry>> {
        id.and_then(|id| self.budgets.get(id)).cloned()
    }

    pub fn membership(&self, team_id: &str, user_id: &str) -> Option<&Arc<MembershipEntry>> {
        self.memberships.get(team_id)?.get(user_id)
    }

    /// Builds the maps from rows, keeping spend already counted in `old`.
    fn build(rows: TenantRows, old: &TenantMaps) -> TenantMaps {
        let mut maps = TenantMaps::default();
        for row in rows.budgets {
            maps.budgets
                .insert(row.budget_id.clone(), Arc::new(BudgetEntry { row }));
        }
        for row in rows.teams {
            let prev = old.teams.get(&row.team_id).map(|p| &**p);
            let entry = TeamEntry::replacing(row, prev);
            maps.teams.insert(entry.row.team_id.clone(), entry);
        }
        for row in rows.users {
            let prev = old.users.get(&row.user_id).map(|p| &**p);
            let entry = UserEntry::replacing(row, prev);
            maps.users.insert(entry.row.user_id.clone(), entry);
        }
        for row in rows.end_users {
            let budget = maps.budget(row.budget_id.as_deref());
            let prev = old.end_users.get(&row.user_id).map(|p| &**p);
            let entry = EndUserEntry::replacing(row, budget, prev);
            maps.end_users.insert(entry.row.user_id.clone(), entry);
        }
        for row in rows.memberships {
            let budget = maps.budget(row.budget_id.as_deref());
            let prev = old.membership(&row.team_id, &row.user_id).map(|p| &**p);
            let entry = MembershipEntry::replacing(row, budget, prev);
            maps.memberships
                .entry(entry.row.team_id.clone())
                .or_default()
                .insert(entry.row.user_id.clone(), entry);
        }
        maps
    }

    /// Re-resolves the budget links of end users and memberships (after a budget changed).
    fn relink_budgets(&mut self) {
        let budgets = &self.budgets;
        let link = |id: Option<&str>| id.and_then(|id| budgets.get(id)).cloned();
        for entry in self.end_users.values_mut() {
            let budget = link(entry.row.budget_id.as_deref());
            *entry = EndUserEntry::replacing(entry.row.clone(), budget, Some(&**entry));
        }
        for by_user in self.memberships.values_mut() {
            for entry in by_user.values_mut() {
                let budget = link(entry.row.budget_id.as_deref());
                *entry = MembershipEntry::replacing(entry.row.clone(), budget, Some(&**entry));
            }
        }
    }
}

/// The tenant store: the maps, the database behind them.
pub struct Tenants {
    map: ArcSwap<TenantMaps>,
    store: Arc<Store>,
    runtime: tokio::runtime::Handle,
    /// The tables' fingerprint at the last load.
    marker: Mutex<Vec<i64>>,
    /// Serialises admin writes with reloads, so a reload never resurrects a change.
    write_lock: tokio::sync::Mutex<()>,
}

impl Tenants {
    /// Loads every tenant row (on the store's runtime; call from it).
    pub async fn open(
        store: Arc<Store>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Tenants, String> {
        let tenants = Tenants {
            map: ArcSwap::from_pointee(TenantMaps::default()),
            store,
            runtime,
            marker: Mutex::new(Vec::new()),
            write_lock: tokio::sync::Mutex::new(()),
        };
        tenants.reload().await?;
        Ok(tenants)
    }

    /// The maps as they are now (a lock-free load).
    pub fn maps(&self) -> arc_swap::Guard<Arc<TenantMaps>> {
        self.map.load()
    }

    pub fn team(&self, id: &str) -> Option<Arc<TeamEntry>> {
        self.map.load().teams.get(id).cloned()
    }

    pub fn user(&self, id: &str) -> Option<Arc<UserEntry>> {
        self.map.load().users.get(id).cloned()
    }

    pub fn end_user(&self, id: &str) -> Option<Arc<EndUserEntry>> {
        self.map.load().end_users.get(id).cloned()
    }

    pub fn budget(&self, id: &str) -> Option<Arc<BudgetEntry>> {
        self.map.load().budgets.get(id).cloned()
    }

    /// The tenancy of a request made with `key` (if a virtual key) for `end_user`: hash
    /// lookups and Arc clones only.
    pub fn resolve(&self, key: Option<&KeyEntry>, end_user: Option<&str>) -> Tenancy {
        let maps = self.map.load();
        let team_id = key.and_then(|k| k.row.team_id.as_deref());
        let user_id = key.and_then(|k| k.row.user_id.as_deref());
        Tenancy {
            team: team_id.and_then(|t| maps.teams.get(t)).cloned(),
            user: user_id.and_then(|u| maps.users.get(u)).cloned(),
            membership: match (team_id, user_id) {
                (Some(t), Some(u)) => maps.membership(t, u).cloned(),
                _ => None,
            },
            end_user: end_user.and_then(|e| maps.end_users.get(e)).cloned(),
        }
    }

    /// Runs `fut` on the store's runtime and waits for it.
    pub async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        self.runtime
            .spawn(fut)
            .await
            .map_err(|e| format!("store task failed: {e}"))
    }

    /// Reloads when the tables changed since the last load (the background poll).
    pub async fn refresh(&self) -> Result<(), String> {
        let marker = self.store.tenants_marker().await?;
        if *self.marker.lock().unwrap_or_else(|p| p.into_inner()) == marker {
            return Ok(());
        }
        self.reload().await
    }

    async fn reload(&self) -> Result<(), String> {
        let _guard = self.write_lock.lock().await;
        let marker = self.store.tenants_marker().await?;
        let rows = self.store.load_tenants().await?;
        let maps = TenantMaps::build(rows, &self.map.load());
        self.map.store(Arc::new(maps));
        *self.marker.lock().unwrap_or_else(|p| p.into_inner()) = marker;
        Ok(())
    }

    /// Applies `change` to a copy of the maps and swaps it in.
    fn update(&self, change: impl Fn(&mut TenantMaps)) {
        self.map.rcu(|m| {
            let mut m = TenantMaps::clone(m);
            change(&mut m);
            m
        });
    }

    /// Writes a team and puts it in the map (create, update, block).
    pub async fn put_team(self: &Arc<Self>, mut row: TeamRow) -> Result<Arc<TeamEntry>, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            this.store.upsert_team(&mut row).await?;
            let prev = this.team(&row.team_id);
            let entry = TeamEntry::replacing(row, prev.as_deref());
            this.update(|m| {
                m.teams.insert(entry.row.team_id.clone(), entry.clone());
            });
            Ok(entry)
        })
        .await?
    }

    /// Deletes a team with its memberships (the caller removes its keys from the key map).
    pub async fn remove_team(self: &Arc<Self>, team_id: String) -> Result<bool, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            let n = this.store.delete_team(&team_id).await?;
            this.update(|m| {
                m.teams.remove(&team_id);
                m.memberships.remove(&team_id);
            });
            Ok(n > 0)
        })
        .await?
    }

    pub async fn put_user(self: &Arc<Self>, row: UserRow) -> Result<Arc<UserEntry>, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            this.store.upsert_user(&row).await?;
            let prev = this.user(&row.user_id);
            let entry = UserEntry::replacing(row, prev.as_deref());
            this.update(|m| {
                m.users.insert(entry.row.user_id.clone(), entry.clone());
            });
            Ok(entry)
        })
        .await?
    }

    /// Deletes a user with their memberships (the caller removes their keys from the key map).
    pub async fn remove_user(self: &Arc<Self>, user_id: String) -> Result<bool, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            let n = this.store.delete_user(&user_id).await?;
            this.update(|m| {
                m.users.remove(&user_id);
                for by_user in m.memberships.values_mut() {
                    by_user.remove(&user_id);
                }
            });
            Ok(n > 0)
        })
        .await?
    }

    pub async fn put_end_user(
        self: &Arc<Self>,
        row: EndUserRow,
    ) -> Result<Arc<EndUserEntry>, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            this.store.upsert_end_user(&row).await?;
            let budget = row.budget_id.as_deref().and_then(|b| this.budget(b));
            let prev = this.end_user(&row.user_id);
            let entry = EndUserEntry::replacing(row, budget, prev.as_deref());
            this.update(|m| {
                m.end_users.insert(entry.row.user_id.clone(), entry.clone());
            });
            Ok(entry)
        })
        .await?
    }

    pub async fn remove_end_user(self: &Arc<Self>, user_id: String) -> Result<bool, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            let n = this.store.delete_end_user(&user_id).await?;
            this.update(|m| {
                m.end_users.remove(&user_id);
            });
            Ok(n > 0)
        })
        .await?
    }

    pub async fn put_budget(self: &Arc<Self>, row: BudgetRow) -> Result<Arc<BudgetEntry>, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            this.store.upsert_budget(&row).await?;
            let entry = Arc::new(BudgetEntry { row });
            this.update(|m| {
                m.budgets.insert(entry.row.budget_id.clone(), entry.clone());
                m.relink_budgets();
            });
            Ok(entry)
        })
        .await?
    }

    pub async fn remove_budget(self: &Arc<Self>, budget_id: String) -> Result<bool, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            let n = this.store.delete_budget(&budget_id).await?;
            this.update(|m| {
                m.budgets.remove(&budget_id);
                m.relink_budgets();
            });
            Ok(n > 0)
        })
        .await?
    }

    pub async fn put_membership(
        self: &Arc<Self>,
        row: MembershipRow,
    ) -> Result<Arc<MembershipEntry>, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            this.store.upsert_membership(&row).await?;
            let maps = this.maps();
            let budget = row
                .budget_id
                .as_deref()
                .and_then(|b| maps.budgets.get(b))
                .cloned();
            let prev = maps.membership(&row.team_id, &row.user_id).cloned();
            drop(maps);
            let entry = MembershipEntry::replacing(row, budget, prev.as_deref());
            this.update(|m| {
                m.memberships
                    .entry(entry.row.team_id.clone())
                    .or_default()
                    .insert(entry.row.user_id.clone(), entry.clone());
            });
            Ok(entry)
        })
        .await?
    }

    pub async fn remove_membership(
        self: &Arc<Self>,
        team_id: String,
        user_id: String,
    ) -> Result<bool, String> {
        let this = self.clone();
        self.run(async move {
            let _guard = this.write_lock.lock().await;
            let n = this.store.delete_membership(&user_id, &team_id).await?;
            this.update(|m| {
                if let Some(by_user) = m.memberships.get_mut(&team_id) {
                    by_user.remove(&user_id);
                }
            });
            Ok(n > 0)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyRow;

    /// Resolving a tenancy is lookups and Arc clones: timed here over 10k teams and 10k end
    /// users (`cargo test --release --lib tenants::tests -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn resolve_cost() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = std::env::temp_dir().join(format!("sb-tenancy-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let url = crate::store::resolve_url(None, Some(&dir));
        let tenants = rt.block_on(async {
            let store = Arc::new(Store::open(&url).await.unwrap());
            let mut sql = String::from("BEGIN;");
            for i in 0..10_000 {
                sql.push_str(&format!(
                    "INSERT INTO \"LiteLLM_TeamTable\" (team_id) VALUES ('t{i}'); \
                     INSERT INTO \"LiteLLM_UserTable\" (user_id) VALUES ('u{i}'); \
                     INSERT INTO \"LiteLLM_TeamMembership\" (user_id, team_id) VALUES ('u{i}', 't{i}'); \
                     INSERT INTO \"LiteLLM_EndUserTable\" (user_id) VALUES ('c{i}');"
                ));
            }
            sql.push_str("COMMIT;");
            store.execute(&sql).await.unwrap();
            Tenants::open(store, tokio::runtime::Handle::current())
                .await
                .unwrap()
        });
        let key = KeyEntry::new(KeyRow {
            team_id: Some("t4242".into()),
            user_id: Some("u4242".into()),
            ..Default::default()
        });
        let n = 1_000_000;
        let start = std::time::Instant::now();
        for i in 0..n {
            let t = tenants.resolve(Some(&key), Some(if i % 2 == 0 { "c77" } else { "nobody" }));
            assert!(t.membership.is_some());
            std::hint::black_box(t);
        }
        let per = start.elapsed() / n;
        eprintln!("tenancy resolve: {per:?} per request (team, user, membership, end user)");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
