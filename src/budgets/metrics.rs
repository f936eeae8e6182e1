//! LiteLLM's Prometheus budget series (names from `litellm/integrations/prometheus.py`), with
//! bounded label sets, appended to `/metrics`:
//! - `litellm_spend_metric_total{hashed_api_key, api_key_alias, model, team, user}`: USD spent
//!   through this instance since it started (a counter, as LiteLLM's);
//! - `litellm_remaining_api_key_budget_metric`, `litellm_api_key_max_budget_metric`,
//!   `litellm_api_key_budget_remaining_hours_metric{hashed_api_key, api_key_alias}`: per key with a
//!   `max_budget` (remaining = max − window spend; hours until the window resets);
//! - `litellm_remaining_team_budget_metric`, `litellm_team_max_budget_metric`,
//!   `litellm_team_budget_remaining_hours_metric{team, team_alias}`: per team with a `max_budget`;
//! - `switchboard_budget_*`: reservations in flight, refusals by scope, soft-budget crossings,
//!   unpriced requests, window resets.
//!
//! Label cap: at most [`super::EXPORT_CAP`] keys and as many teams (first seen first) and
//! key×model spend series; the rest are counted (`switchboard_budget_keys_unexported`,
//! `switchboard_budget_teams_unexported`,
//! `switchboard_budget_spend_unexported_total`), never exported. Aliases are client-visible admin input: escaped, and cut at 128 bytes.

use super::ledger::ScopeKey;
use super::Budgets;
use crate::tenant::KeyEntry;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Spend per key and model, capped.
pub struct SpendSeries {
    cap: usize,
    series: Mutex<SpendMap>,
    /// Spend of series past the cap (not exported), in calls.
    pub dropped: AtomicU64,
}

#[derive(Default)]
struct SpendMap {
    count: usize,
    by_key: HashMap<String, KeySpend>,
}

struct KeySpend {
    alias: String,
    team: String,
    user: String,
    by_model: HashMap<String, f64>,
}

impl SpendSeries {
    pub fn new(cap: usize) -> SpendSeries {
        SpendSeries {
            cap,
            series: Mutex::new(SpendMap::default()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Adds a call's cost to its key×model series (one short lock; allocates only for a new
    /// series).
    pub fn add(&self, key: &KeyEntry, model: &str, cost: f64) {
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let full = s.count >= self.cap;
        let SpendMap { count, by_key } = &mut *s;
        if let Some(k) = by_key.get_mut(&key.row.token) {
            if let Some(v) = k.by_model.get_mut(model) {
                *v += cost;
                return;
            }
            if !full {
                k.by_model.insert(model.to_string(), cost);
                *count += 1;
                return;
            }
        } else if !full {
            let mut by_model = HashMap::new();
            by_model.insert(model.to_string(), cost);
            by_key.insert(
                key.row.token.clone(),
                KeySpend {
                    alias: key.row.key_alias.clone().unwrap_or_default(),
                    team: key.row.team_id.clone().unwrap_or_default(),
                    user: key.row.user_id.clone().unwrap_or_default(),
                    by_model,
                },
            );
            *count += 1;
            return;
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A label value: escaped for the text format, at most 128 bytes.
fn label(v: &str) -> String {
    let mut end = v.len().min(128);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end]
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends the budget series of `keys`' budgets, if any were made.
pub fn render(keys: &std::sync::Arc<crate::keys::Keys>, out: &mut String) {
    if let Some(b) = Budgets::existing(keys) {
        b.render(out);
        super::shared::render_metrics(out);
    }
}

impl Budgets {
    pub fn render(&self, out: &mut String) {
        let now = crate::keys::now_ms();
        // Spend per key and model.
        let _ = writeln!(out, "# HELP litellm_spend_metric_total Total spend on LLM requests (USD) through this instance, per key and model.\n# TYPE litellm_spend_metric_total counter");
        {
            let s = self.spend.series.lock().unwrap_or_else(|p| p.into_inner());
            for (token, k) in &s.by_key {
                for (model, v) in &k.by_model {
                    let _ = writeln!(
                        out,
                        "litellm_spend_metric_total{{hashed_api_key=\"{}\",api_key_alias=\"{}\",model=\"{}\",team=\"{}\",user=\"{}\"}} {v}",
                        label(token),
                        label(&k.alias),
                        label(model),
                        label(&k.team),
                        label(&k.user)
                    );
                }
            }
        }
        // Keys with a budget: remaining, max, hours to reset.
        let mut remaining = String::new();
        let mut max = String::new();
        let mut hours = String::new();
        let mut dropped_keys = 0u64;
        for key in self.keys.all() {
            let Some(max_budget) = key.row.max_budget else {
                continue;
            };
            let scope = self
                .ledger
                .scope(&ScopeKey::Key(key.row.token.clone()), false);
            if !scope.exported {
                dropped_keys += 1;
                continue;
            }
            let labels = format!(
                "hashed_api_key=\"{}\",api_key_alias=\"{}\"",
                label(&key.row.token),
                label(key.row.key_alias.as_deref().unwrap_or_default())
            );
            let _ = writeln!(
                remaining,
                "litellm_remaining_api_key_budget_metric{{{labels}}} {}",
                max_budget - key.spend()
            );
            let _ = writeln!(
                max,
                "litellm_api_key_max_budget_metric{{{labels}}} {max_budget}"
            );
            if let Some(at) = scope.reset_at_ms() {
                let _ = writeln!(
                    hours,
                    "litellm_api_key_budget_remaining_hours_metric{{{labels}}} {}",
                    (at - now).max(0) as f64 / 3_600_000.0
                );
            }
        }
        let _ = write!(
            out,
            "# HELP litellm_remaining_api_key_budget_metric Remaining budget for an API key (USD): max_budget minus this window's spend.\n# TYPE litellm_remaining_api_key_budget_metric gauge\n{remaining}\
             # HELP litellm_api_key_max_budget_metric Maximum budget set for an API key (USD).\n# TYPE litellm_api_key_max_budget_metric gauge\n{max}\
             # HELP litellm_api_key_budget_remaining_hours_metric Hours until an API key's budget window resets.\n# TYPE litellm_api_key_budget_remaining_hours_metric gauge\n{hours}"
        );
        // Teams with a budget.
        let mut remaining = String::new();
        let mut max = String::new();
        let mut hours = String::new();
        let mut dropped_teams = 0u64;
        let tenants = self.keys.tenants.maps();
        for team in tenants.teams.values() {
            let Some(max_budget) = team.row.max_budget else {
                continue;
            };
            let scope = self
                .ledger
                .scope(&ScopeKey::Team(team.row.team_id.clone()), false);
            if !scope.exported {
                dropped_teams += 1;
                continue;
            }
            let labels = format!(
                "team=\"{}\",team_alias=\"{}\"",
                label(&team.row.team_id),
                label(team.row.team_alias.as_deref().unwrap_or_default())
            );
            let _ = writeln!(
                remaining,
                "litellm_remaining_team_budget_metric{{{labels}}} {}",
                max_budget - team.spend.get()
            );
            let _ = writeln!(
                max,
                "litellm_team_max_budget_metric{{{labels}}} {max_budget}"
            );
            if let Some(at) = scope.reset_at_ms() {
                let _ = writeln!(
                    hours,
                    "litellm_team_budget_remaining_hours_metric{{{labels}}} {}",
                    (at - now).max(0) as f64 / 3_600_000.0
                );
            }
        }
        drop(tenants);
        let _ = write!(
            out,
            "# HELP litellm_remaining_team_budget_metric Remaining budget for a team (USD): max_budget minus this window's spend.\n# TYPE litellm_remaining_team_budget_metric gauge\n{remaining}\
             # HELP litellm_team_max_budget_metric Maximum budget set for a team (USD).\n# TYPE litellm_team_max_budget_metric gauge\n{max}\
             # HELP litellm_team_budget_remaining_hours_metric Hours until a team's budget window resets.\n# TYPE litellm_team_budget_remaining_hours_metric gauge\n{hours}\
             # HELP switchboard_budget_teams_unexported Teams with a budget past the label cap, not exported.\n# TYPE switchboard_budget_teams_unexported gauge\nswitchboard_budget_teams_unexported {dropped_teams}\n"
        );
        // Switchboard's own.
        let mut reserved: HashMap<&'static str, f64> = HashMap::new();
        for s in self.ledger.all() {
            *reserved.entry(s.key.kind()).or_default() += s.view().reserved;
        }
        let _ = writeln!(out, "# HELP switchboard_budget_reserved_usd Worst-case cost reserved by budgeted requests in flight, per scope kind.\n# TYPE switchboard_budget_reserved_usd gauge");
        let mut kinds: Vec<_> = reserved.into_iter().collect();
        kinds.sort_by_key(|(k, _)| *k);
        for (kind, v) in kinds {
            let _ = writeln!(
                out,
                "switchboard_budget_reserved_usd{{scope=\"{kind}\"}} {v}"
            );
        }
        let _ = writeln!(out, "# HELP switchboard_budget_exceeded_total Requests refused over budget, per scope kind.\n# TYPE switchboard_budget_exceeded_total counter");
        for (kind, n) in self
            .counters
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "switchboard_budget_exceeded_total{{scope=\"{kind}\"}} {n}"
            );
        }
        let c = &self.counters;
        let _ = write!(
            out,
            "# HELP switchboard_budget_soft_crossed_total Soft budgets crossed (once per scope per window).\n# TYPE switchboard_budget_soft_crossed_total counter\nswitchboard_budget_soft_crossed_total {}\n\
             # HELP switchboard_budget_unpriced_requests_total Budgeted requests to a model with no price (see switchboard.unpriced_budget_policy).\n# TYPE switchboard_budget_unpriced_requests_total counter\nswitchboard_budget_unpriced_requests_total {}\n\
             # HELP switchboard_budget_resets_total Budget windows reset.\n# TYPE switchboard_budget_resets_total counter\nswitchboard_budget_resets_total {}\n\
             # HELP switchboard_budget_resets_dropped_total Budget resets not persisted (the spend writer's queue was full).\n# TYPE switchboard_budget_resets_dropped_total counter\nswitchboard_budget_resets_dropped_total {}\n\
             # HELP switchboard_budget_keys_unexported Keys with a budget past the label cap, not exported.\n# TYPE switchboard_budget_keys_unexported gauge\nswitchboard_budget_keys_unexported {dropped_keys}\n\
             # HELP switchboard_budget_spend_unexported_total Calls whose key×model spend series was past the label cap, not exported.\n# TYPE switchboard_budget_spend_unexported_total counter\nswitchboard_budget_spend_unexported_total {}\n",
            c.soft_crossed.load(Ordering::Relaxed),
            c.unpriced.load(Ordering::Relaxed),
            c.resets.load(Ordering::Relaxed),
            c.resets_dropped.load(Ordering::Relaxed),
            self.spend.dropped.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_cut() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(label(&"é".repeat(100)).len(), 128);
    }
}
