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
use super::ledger::{Claim, Limits, Refusal, Reservation, Scope, ScopeKey};
use super::shared::{self, SharedBudgets, SharedReservation, Verdict};
use super::Budgets;
use crate::config::redis::FailurePolicy;
use crate::config::{Config, UnpricedBudgetPolicy};
use crate::context::Context;
use crate::cost::Price;
use crate::error::{ErrorKind, GatewayError};
use crate::openai::{RequestBody, Usage};
use crate::pipeline::{Admit, Settle};
use crate::tenant::{EndUserEntry, KeyEntry, MembershipEntry, TeamEntry, UserEntry};
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

/// The `Admit` stage (after the rate-limit stage). With Redis, [`BudgetPrepare`] (before the
/// rate-limit stage) queues the reservation script so both go in one round trip; this stage
/// reads its answer.
pub struct BudgetAdmit {
    inner: Arc<Inner>,
}

/// The stage before the rate-limit stage: with Redis, queues the reservation script in the
/// request's batch (see [`super::shared`]); without, nothing.
pub struct BudgetPrepare {
    inner: Arc<Inner>,
}

struct Inner {
    budgets: Arc<Budgets>,
    redis: Option<crate::config::redis::RedisSettings>,
    /// Made on first use (inside the runtime).
    shared: std::sync::OnceLock<Option<SharedBudgets>>,
    redis_timeout: std::time::Duration,
    redis_policy: FailurePolicy,
    reservation_ttl: std::time::Duration,
    groups: HashMap<String, GroupPrices>,
    exceeded_status: u16,
    unpriced_policy: UnpricedBudgetPolicy,
    default_max_tokens: u64,
}

impl BudgetAdmit {
    /// The two stages (see [`BudgetAdmit`]), built with the stages (off the request path).
    pub fn new(config: &Config, budgets: Arc<Budgets>) -> (BudgetPrepare, BudgetAdmit) {
        let inner = Arc::new(Inner::new(config, budgets));
        (
            BudgetPrepare {
                inner: inner.clone(),
            },
            BudgetAdmit { inner },
        )
    }
}

impl Inner {
    /// Each group's prices, resolved as the routing snapshot resolves them. Warns once about
    /// unpriced groups.
    fn new(config: &Config, budgets: Arc<Budgets>) -> Inner {
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
        Inner {
            budgets,
            redis: config.router.redis.clone(),
            shared: std::sync::OnceLock::new(),
            redis_timeout: config.server.redis_timeout,
            redis_policy: config.server.redis_failure_policy,
            reservation_ttl: config.server.budget_reservation_ttl,
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
        // `n` choices: up to n prompts (fanned out) and n outputs.
        let (prompt, completion) = (prompt * body.choices(), completion * body.choices());
        price.cost(&Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Usage::default()
        })
    }

    fn exceeded(&self, r: &Refusal, key: Option<&KeyEntry>, model: &str) -> GatewayError {
        let (spend, max) = (r.spend, r.max_budget);
        // LiteLLM's messages per scope (`auth_checks.py`, `model_max_budget_limiter.py`).
        let (head, fix) = match &r.key {
            ScopeKey::KeyModel(token, _) => (
                format!(
                    "LiteLLM Virtual Key: {token}, key_alias: {}, exceeded budget for model={model}",
                    key.and_then(|k| k.row.key_alias.as_deref())
                        .unwrap_or("None")
                ),
                "raise the key's model_max_budget",
            ),
            ScopeKey::Key(token) => (
                format!(
                    "Budget has been exceeded! Key={} Current cost: {spend}, Max budget: {max}",
                    key.and_then(|k| k.row.key_alias.as_deref())
                        .unwrap_or(token)
                ),
                "raise max_budget with /key/update",
            ),
            ScopeKey::Team(team) => (
                format!(
                    "Budget has been exceeded! Team={team} Current cost: {spend}, Max budget: {max}"
                ),
                "raise the team's max_budget with /team/update",
            ),
            ScopeKey::User(user) => (
                format!("ExceededBudget: User={user} over budget. Spend={spend}, Budget={max}"),
                "raise the user's max_budget with /user/update",
            ),
            ScopeKey::TeamMember(team, user) => (
                format!(
                    "Budget has been exceeded! Team Member={user} in Team={team} Current cost: {spend}, Max budget: {max}"
                ),
                "raise the member's budget with /team/member_update",
            ),
            ScopeKey::EndUser(id) => (
                format!("ExceededBudget: End User={id} over budget. Spend={spend}, Budget={max}"),
                "raise the end user's budget with /customer/update",
            ),
            ScopeKey::Budget(id) => (
                format!("Budget has been exceeded! Budget={id} Current cost: {spend}, Max budget: {max}"),
                "raise the budget with /budget/update",
            ),
        };
        let message = format!(
            "{head}. Spend {spend} + in flight {} + this request (up to {}) exceeds the budget of {max} USD: {fix}, or wait for the budget window to reset.",
            r.reserved, r.requested
        );
        budget_error(self.exceeded_status, message)
    }
}

/// LiteLLM's webhook `event_group` for a scope (`internal_user`, `customer`, ...).
fn event_group(key: &ScopeKey) -> &'static str {
    match key {
        ScopeKey::Key(_) | ScopeKey::KeyModel(..) => "key",
        ScopeKey::Team(_) | ScopeKey::TeamMember(..) => "team",
        ScopeKey::User(_) => "internal_user",
        ScopeKey::EndUser(_) => "customer",
        ScopeKey::Budget(_) => "proxy",
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

/// A team's scope, its window rolled first (see [`Budgets::entity_scope`]).
pub(crate) fn team_scope(b: &Budgets, t: &TeamEntry, now: i64) -> Arc<Scope> {
    b.entity_scope(
        ScopeKey::Team(t.row.team_id.clone()),
        t.row.budget_duration.as_deref(),
        t.row.budget_reset_at,
        Some(("LiteLLM_TeamTable", &t.row.team_id)),
        now,
        || t.spend.set(0.0),
    )
}

pub(crate) fn user_scope(b: &Budgets, u: &UserEntry, now: i64) -> Arc<Scope> {
    b.entity_scope(
        ScopeKey::User(u.row.user_id.clone()),
        u.row.budget_duration.as_deref(),
        u.row.budget_reset_at,
        Some(("LiteLLM_UserTable", &u.row.user_id)),
        now,
        || u.spend.set(0.0),
    )
}

/// An end user's scope: the window is its budget row's; the reset zeroes the end user's spend.
pub(crate) fn end_user_scope(b: &Budgets, e: &EndUserEntry, now: i64) -> Arc<Scope> {
    let budget = e.budget.as_ref().map(|x| &x.row);
    b.entity_scope(
        ScopeKey::EndUser(e.row.user_id.clone()),
        budget.and_then(|x| x.budget_duration.as_deref()),
        budget.and_then(|x| x.budget_reset_at),
        Some(("LiteLLM_EndUserTable", &e.row.user_id)),
        now,
        || e.spend.set(0.0),
    )
}

/// A team member's scope: the window is its budget row's, kept in memory only.
pub(crate) fn member_scope(b: &Budgets, m: &MembershipEntry, now: i64) -> Arc<Scope> {
    let budget = m.budget.as_ref().map(|x| &x.row);
    b.entity_scope(
        ScopeKey::TeamMember(m.row.team_id.clone(), m.row.user_id.clone()),
        budget.and_then(|x| x.budget_duration.as_deref()),
        budget.and_then(|x| x.budget_reset_at),
        None,
        now,
        || m.spend.set(0.0),
    )
}

fn limits(max_budget: Option<f64>, soft_budget: Option<f64>, duration: Option<&str>) -> Limits {
    Limits {
        max_budget,
        soft_budget,
        duration: duration.and_then(Duration::parse),
    }
}

fn has_budget(max: Option<f64>, soft: Option<f64>) -> bool {
    max.is_some() || soft.is_some()
}

/// A reservation queued in the request's Redis batch by [`BudgetPrepare`], waiting for its
/// answer (dropped before: the reservation is released).
struct Pending {
    claims: Vec<Claim>,
    amount: f64,
    ticket: crate::shared_state::batch::Ticket,
    reservation: SharedReservation,
}

impl Inner {
    fn shared(&self) -> Option<&SharedBudgets> {
        self.shared
            .get_or_init(|| {
                SharedBudgets::new(
                    self.redis.as_ref()?,
                    self.redis_timeout,
                    self.redis_policy,
                    self.reservation_ttl,
                )
            })
            .as_ref()
    }

    /// The scopes this request must fit in (windows rolled) and its worst-case cost; `None`
    /// when no budget applies. `Err` for an unpriced model under `deny`.
    fn claims(
        &self,
        ctx: &Context,
        body: &RequestBody<'_>,
    ) -> Result<Option<(Vec<Claim>, f64)>, GatewayError> {
        let key = ctx.principal.key();
        let t = &ctx.tenancy;
        let model = ctx.model.as_deref().unwrap_or_default();
        let per_model = key.and_then(|k| model_budget(&k.row.model_max_budget, model));
        let team = t
            .team
            .as_ref()
            .filter(|x| has_budget(x.row.max_budget, x.row.soft_budget));
        // LiteLLM checks a user's budget on personal keys only (a team key spends the team's).
        let user = t
            .user
            .as_ref()
            .filter(|x| x.row.max_budget.is_some() && key.is_some_and(|k| k.row.team_id.is_none()));
        let member_budget = |m: &MembershipEntry| {
            m.budget
                .as_ref()
                .is_some_and(|b| has_budget(b.row.max_budget, b.row.soft_budget))
        };
        let member = t.membership.as_ref().filter(|m| member_budget(m));
        let end_user = t.end_user.as_ref().filter(|e| {
            e.budget
                .as_ref()
                .is_some_and(|b| has_budget(b.row.max_budget, b.row.soft_budget))
        });
        // A key's soft budget lives in its budget row (LiteLLM's `/key/generate` puts it there).
        let key_soft = key
            .and_then(|k| k.row.budget_id.as_deref())
            .and_then(|id| self.budgets.keys.tenants.budget(id))
            .and_then(|b| b.row.soft_budget);
        let key_budget = key.filter(|k| k.row.max_budget.is_some() || key_soft.is_some());
        if key_budget.is_none()
            && per_model.is_none()
            && team.is_none()
            && user.is_none()
            && member.is_none()
            && end_user.is_none()
        {
            return Ok(None);
        }
        let now = crate::keys::now_ms();
        let b = &*self.budgets;
        let mut claims = Vec::with_capacity(3);
        if let Some(k) = key_budget {
            let scope = b.key_scope(k, now);
            // Read after the roll: a window that just ended counts from 0.
            claims.push(Claim {
                scope,
                limits: limits(k.row.max_budget, key_soft, k.row.budget_duration.as_deref()),
                observed: Some(k.spend()),
            });
        }
        if let (Some(k), Some((limit, period))) = (key, per_model) {
            let scope = b.ledger.scope(
                &ScopeKey::KeyModel(k.row.token.clone(), model.to_string()),
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
        if let Some(x) = team {
            claims.push(Claim {
                scope: team_scope(b, x, now),
                limits: limits(
                    x.row.max_budget,
                    x.row.soft_budget,
                    x.row.budget_duration.as_deref(),
                ),
                observed: Some(x.spend.get()),
            });
        }
        if let Some(x) = user {
            claims.push(Claim {
                scope: user_scope(b, x, now),
                limits: limits(x.row.max_budget, None, x.row.budget_duration.as_deref()),
                observed: Some(x.spend.get()),
            });
        }
        if let (Some(x), Some(budget)) = (member, member.and_then(|m| m.budget.as_ref())) {
            let r = &budget.row;
            claims.push(Claim {
                scope: member_scope(b, x, now),
                limits: limits(r.max_budget, r.soft_budget, r.budget_duration.as_deref()),
                observed: Some(x.spend.get()),
            });
        }
        if let (Some(x), Some(budget)) = (end_user, end_user.and_then(|e| e.budget.as_ref())) {
            let r = &budget.row;
            claims.push(Claim {
                scope: end_user_scope(b, x, now),
                limits: limits(r.max_budget, r.soft_budget, r.budget_duration.as_deref()),
                observed: Some(x.spend.get()),
            });
        }
        let (amount, priced) = self.worst_case(model, body, ctx.route == "embeddings");
        if !priced {
            b.counters.unpriced.fetch_add(1, Ordering::Relaxed);
            if self.unpriced_policy == UnpricedBudgetPolicy::Deny {
                return Err(budget_error(
                    self.exceeded_status,
                    format!("Budget has been exceeded! Model {model} has no price, so its cost cannot be checked against this caller's budget: set input_cost_per_token/output_cost_per_token on its deployments, or switchboard.unpriced_budget_policy: allow."),
                ));
            }
        }
        Ok(Some((claims, amount)))
    }

    /// Reports the soft budgets crossed.
    fn report_soft(&self, soft: Vec<super::ledger::SoftCrossing>) {
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
            crate::alerting::budget_crossed(
                event_group(&s.key),
                &s.key.id(),
                s.spend,
                s.soft_budget,
                true,
            );
        }
    }

    /// Counts and alerts a refusal; the client's error.
    fn refuse(&self, ctx: &Context, r: &Refusal) -> GatewayError {
        self.budgets.counters.refused(r.key.kind());
        // Deduplicated per scope by the alert queue (one message a minute at most).
        crate::alerting::budget_crossed(
            event_group(&r.key),
            &r.key.id(),
            r.spend,
            r.max_budget,
            false,
        );
        let model = ctx.model.as_deref().unwrap_or_default();
        self.exceeded(r, ctx.principal.key().map(|k| &**k), model)
    }

    /// Reserves on this instance's own ledger.
    fn reserve_locally(
        &self,
        ctx: &mut Context,
        claims: &[Claim],
        amount: f64,
    ) -> Result<(), GatewayError> {
        match self.budgets.ledger.reserve(claims, amount) {
            Ok((reservation, soft)) => {
                self.report_soft(soft);
                ctx.reservation = Some(Box::new(reservation));
                Ok(())
            }
            Err(r) => Err(self.refuse(ctx, &r)),
        }
    }

    /// Reads Redis' answer to a reservation queued by [`BudgetPrepare`] (sending it now if no
    /// stage sent the batch), or falls back per `switchboard.redis_failure_policy`.
    async fn confirm(&self, ctx: &mut Context, p: Pending) -> Result<(), GatewayError> {
        let Some(shared) = self.shared() else {
            return self.reserve_locally(ctx, &p.claims, p.amount);
        };
        if ctx.redis_batch.has_pending() {
            ctx.redis_batch.flush(shared.state()).await;
        }
        let verdict = ctx
            .redis_batch
            .take(p.ticket)
            .and_then(Result::ok)
            .and_then(|v| SharedBudgets::verdict(&v, &p.claims, p.amount));
        match verdict {
            Some(Verdict::Reserved(fleet)) => {
                self.report_soft(self.budgets.ledger.observe(&p.claims, &fleet));
                ctx.reservation = Some(Box::new(p.reservation));
                Ok(())
            }
            Some(Verdict::Refused(r)) => {
                p.reservation.forget();
                Err(self.refuse(ctx, &r))
            }
            // Dropping the reservation releases whatever Redis may have taken.
            None if self.redis_policy == FailurePolicy::Closed => {
                shared::REFUSED.fetch_add(1, Ordering::Relaxed);
                Err(GatewayError::new(
                    ErrorKind::Unavailable,
                    "Budgets cannot be checked: the shared budget store (Redis) is not answering \
                     and switchboard.redis_failure_policy is closed. Retry shortly.",
                )
                .with_retry_after(Some(1)))
            }
            None => {
                shared::FALLBACK.fetch_add(1, Ordering::Relaxed);
                self.reserve_locally(ctx, &p.claims, p.amount)
            }
        }
    }
}

#[async_trait]
impl Admit for BudgetPrepare {
    async fn admit(&self, ctx: &mut Context, body: &RequestBody<'_>) -> Result<(), GatewayError> {
        let Some(shared) = self.inner.shared() else {
            return Ok(());
        };
        let Some((claims, amount)) = self.inner.claims(ctx, body)? else {
            return Ok(());
        };
        let (call, reservation) = shared.prepare(&claims, amount);
        let ticket = ctx.redis_batch.push(call);
        ctx.reservation = Some(Box::new(Pending {
            claims,
            amount,
            ticket,
            reservation,
        }));
        Ok(())
    }
}

#[async_trait]
impl Admit for BudgetAdmit {
    async fn admit(&self, ctx: &mut Context, body: &RequestBody<'_>) -> Result<(), GatewayError> {
        if let Some(pending) = ctx.reservation.take() {
            match pending.downcast::<Pending>() {
                Ok(p) => return self.inner.confirm(ctx, *p).await,
                Err(other) => ctx.reservation = Some(other),
            }
        }
        if self.inner.shared.get().is_some_and(Option::is_some) {
            // Prepared (or found no budget) before the rate-limit stage.
            return Ok(());
        }
        let Some((claims, amount)) = self.inner.claims(ctx, body)? else {
            return Ok(());
        };
        self.inner.reserve_locally(ctx, &claims, amount)
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
        if let Some(r) = ctx.reservation.as_ref() {
            if let Some(r) = r.downcast_ref::<Reservation>() {
                r.settle(cost);
            } else if let Some(r) = r.downcast_ref::<SharedReservation>() {
                r.settle(cost);
            }
        }
        if let (Some(key), true) = (ctx.principal.key(), cost > 0.0) {
            self.budgets
                .spend
                .add(key, ctx.model.as_deref().unwrap_or_default(), cost);
        }
    }
}
