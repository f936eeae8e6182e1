//! The budget stages. Admission reserves the request's worst-case cost on every budget scope
//! it falls in (the key's `max_budget`, the key's `model_max_budget` for the model), all or
//! nothing, and refuses with LiteLLM's `budget_exceeded` when one would go over; settle swaps
//! the reservation for the actual cost. A request whose reservation is never settled (an error
//! before any answer, a panic, a cancelled future) releases it when its context is dropped.
//!
//! Worst-case cost: the prompt estimate (the bytes of `messages`/`tools`/`input` at 4 bytes a
//! token) and the output bound (`max_completion_tokens`, else `max_tokens`, else the model's
//! `max_output_tokens` from the price table, else `switchboard.budget_default_max_tokens`),
//! priced at the dearest deployment of the model group (above-threshold tiers included: the
//! deployment's own pricing is applied to that usage). A fallback to a dearer group can cost
//! more than was reserved; settle bills the actual cost.
//!
//! Unpriced models (`switchboard.unpriced_budget_policy`): `allow` (default) admits while the
//! budget is not already spent, reserving nothing; `deny` refuses. Either is counted.

use super::duration::Duration;
use super::ledger::{Claim, Limits, Refusal, Reservation, ScopeKey};
use super::Budgets;
use crate::config::{Config, UnpricedBudgetPolicy};
use crate::context::Context;
use crate::cost::Price;
use crate::error::{ErrorKind, GatewayError};
use crate::openai::{RequestBody, Usage};
use crate::pipeline::{Admit, Settle};
use crate::tenant::KeyEntry;
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A model group's deployments' prices, for the worst case.
#[derive(Default)]
struct GroupPrices {
    prices: Vec<Arc<Price>>,
    /// A deployment has no price: the group's cost cannot be bounded.
    unpriced: bool,
}

/// The `Admit` stage.
pub struct BudgetAdmit {
    budgets: Arc<Budgets>,
    groups: HashMap<String, GroupPrices>,
    exceeded_status: u16,
    unpriced_policy: UnpricedBudgetPolicy,
    default_max_tokens: u64,
}

impl BudgetAdmit {
    /// Built with the stages (off the request path): each group's prices, resolved as the
    /// routing snapshot resolves them. Warns once about unpriced groups.
    pub fn new(config: &Config, budgets: Arc<Budgets>) -> BudgetAdmit {
        let mut groups: HashMap<String, GroupPrices> = HashMap::new();
        for dep in &config.deployments {
            let g = groups.entry(dep.model_name.clone()).or_default();
            match Price::for_deployment(dep) {
                Some(p) => g.prices.push(p),
                None => g.unpriced = true,
            }
        }
        for (alias, target) in &config.router.model_group_alias {
            if let Some(g) = groups.get(target) {
                let copy = GroupPrices {
                    prices: g.prices.clone(),
                    unpriced: g.unpriced,
                };
                groups.entry(alias.clone()).or_insert(copy);
            }
        }
        let mut unpriced: Vec<&str> = groups
            .iter()
            .filter(|(_, g)| g.unpriced)
            .map(|(n, _)| n.as_str())
            .collect();
        if !unpriced.is_empty() {
            unpriced.sort_unstable();
            log::warn!(
                "budgets: model group(s) {unpriced:?} have a deployment with no price (set input_cost_per_token/output_cost_per_token); budgeted callers are {} on them (switchboard.unpriced_budget_policy)",
                match config.server.unpriced_budget_policy {
                    UnpricedBudgetPolicy::Allow => "admitted while their budget is not spent, reserving nothing",
                    UnpricedBudgetPolicy::Deny => "refused",
                }
            );
        }
        BudgetAdmit {
            budgets,
            groups,
            exceeded_status: config.server.budget_exceeded_status,
            unpriced_policy: config.server.unpriced_budget_policy,
            default_max_tokens: config.server.budget_default_max_tokens,
        }
    }

    /// The most this request can cost, and whether every deployment that may answer is priced.
    fn worst_case(&self, model: &str, body: &RequestBody<'_>, embeddings: bool) -> (f64, bool) {
        let Some(group) = self.groups.get(model) else {
            // Not a configured group (a wildcard route): the table's row for the name, if any.
            return match crate::cost::table().get(model) {
                Some(row) => {
                    let price = Price {
                        rates: row.clone(),
                        inclusive_thresholds: false,
                    };
                    (self.cost_bound(&price, body, embeddings), true)
                }
                None => (0.0, false),
            };
        };
        let worst = group
            .prices
            .iter()
            .map(|p| self.cost_bound(p, body, embeddings))
            .fold(0.0, f64::max);
        (worst, !group.unpriced)
    }

    fn cost_bound(&self, price: &Price, body: &RequestBody<'_>, embeddings: bool) -> f64 {
        let prompt = body.estimated_prompt_tokens().max(
            body.get("input")
                .map_or(0, |v| v.get().len().div_ceil(4) as u64),
        );
        let completion = if embeddings {
            0
        } else {
            let asked = |k| body.typed::<u64>(k).ok().flatten();
            asked("max_completion_tokens")
                .or_else(|| asked("max_tokens"))
                .or(price.rates.max_output_tokens)
                .unwrap_or(self.default_max_tokens)
        };
        price.cost(&Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Usage::default()
        })
    }

    fn exceeded(&self, r: &Refusal, key: &KeyEntry, model: &str) -> GatewayError {
        let key_label = key
            .row
            .key_alias
            .as_deref()
            .unwrap_or(key.row.token.as_str());
        let head = match &r.key {
            ScopeKey::KeyModel(..) => format!(
                "LiteLLM Virtual Key: {}, key_alias: {}, exceeded budget for model={model}",
                key.row.token,
                key.row.key_alias.as_deref().unwrap_or("None")
            ),
            _ => format!(
                "Budget has been exceeded! Key={key_label} Current cost: {}, Max budget: {}",
                r.spend, r.max_budget
            ),
        };
        let message = format!(
            "{head}. Spend {} + in flight {} + this request (up to {}) exceeds the budget of {} USD: raise max_budget (/key/update) or wait for the budget window to reset.",
            r.spend, r.reserved, r.requested, r.max_budget
        );
        budget_error(self.exceeded_status, message)
    }
}

fn budget_error(status: u16, message: String) -> GatewayError {
    GatewayError::new(ErrorKind::from_status(status), message)
        .with_status(status)
        .with_type("budget_exceeded")
}

/// A key's `model_max_budget` entry for `model`: `{"budget_limit": USD, "time_period": "1d"}`.
fn model_budget(budgets: &Map<String, Value>, model: &str) -> Option<(f64, Option<Duration>)> {
    let entry = budgets.get(model)?;
    let limit = entry.get("budget_limit").and_then(Value::as_f64)?;
    let period = entry
        .get("time_period")
        .and_then(Value::as_str)
        .and_then(Duration::parse);
    Some((limit, period))
}

#[async_trait]
impl Admit for BudgetAdmit {
    async fn admit(&self, ctx: &mut Context, body: &RequestBody<'_>) -> Result<(), GatewayError> {
        let Some(key) = ctx.principal.key() else {
            return Ok(());
        };
        let model = ctx.model.as_deref().unwrap_or_default();
        let per_model = model_budget(&key.row.model_max_budget, model);
        if key.row.max_budget.is_none() && per_model.is_none() {
            return Ok(());
        }
        let now = crate::keys::now_ms();
        let ledger = &self.budgets.ledger;
        let mut claims = Vec::with_capacity(2);
        if let Some(max) = key.row.max_budget {
            claims.push(Claim {
                scope: self.budgets.key_scope(key, now),
                limits: Limits {
                    max_budget: Some(max),
                    soft_budget: None,
                    duration: key.row.budget_duration.as_deref().and_then(Duration::parse),
                },
                // Read after the roll: a window that just ended counts from 0.
                observed: Some(key.spend()),
            });
        }
        if let Some((limit, period)) = per_model {
            let scope = ledger.scope(
                &ScopeKey::KeyModel(key.row.token.clone(), model.to_string()),
                true,
            );
            scope.roll_if_due(period, None, now);
            claims.push(Claim {
                scope,
                limits: Limits {
                    max_budget: Some(limit),
                    soft_budget: None,
                    duration: period,
                },
                observed: None,
            });
        }
        let (amount, priced) = self.worst_case(model, body, ctx.route == "embeddings");
        if !priced {
            self.budgets
                .counters
                .unpriced
                .fetch_add(1, Ordering::Relaxed);
            if self.unpriced_policy == UnpricedBudgetPolicy::Deny {
                return Err(budget_error(
                    self.exceeded_status,
                    format!("Budget has been exceeded! Model {model} has no price, so its cost cannot be checked against this key's budget: set input_cost_per_token/output_cost_per_token on its deployments, or switchboard.unpriced_budget_policy: allow."),
                ));
            }
        }
        match ledger.reserve(&claims, amount) {
            Ok((reservation, soft)) => {
                for s in soft {
                    self.budgets
                        .counters
                        .soft_crossed
                        .fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "budgets: {:?} crossed its soft budget: spend {} ≥ soft_budget {}",
                        s.key,
                        s.spend,
                        s.soft_budget
                    );
                }
                ctx.reservation = Some(Box::new(reservation));
                Ok(())
            }
            Err(r) => {
                self.budgets.counters.refused(r.key.kind());
                Err(self.exceeded(&r, key, model))
            }
        }
    }
}

/// The `Settle` stage: reconciles the reservation (after the key's spend was raised by the
/// spend stage, which runs first, so spend + reserved never dips below the truth) and counts
/// the call in the spend series.
pub struct BudgetSettle {
    pub budgets: Arc<Budgets>,
}

impl Settle for BudgetSettle {
    fn settle(&self, ctx: &Context) {
        let cost = ctx.cost.unwrap_or(0.0);
        if let Some(r) = ctx
            .reservation
            .as_ref()
            .and_then(|r| r.downcast_ref::<Reservation>())
        {
            r.settle(cost);
        }
        if let (Some(key), true) = (ctx.principal.key(), cost > 0.0) {
            self.budgets
                .spend
                .add(key, ctx.model.as_deref().unwrap_or_default(), cost);
        }
    }
}
