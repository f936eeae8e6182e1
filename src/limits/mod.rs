//! Rate limits (issue 13): `rpm_limit`, `tpm_limit`, `max_parallel_requests` per key, per team,
//! per user, per team member and per end user (the membership's and end user's budget rows,
//! from `ctx.tenancy`), and `model_rpm_limit` / `model_tpm_limit` per model per key (kept in
//! the key's metadata, as LiteLLM keeps them). An `Admit` stage checks every scope of a request at once
//! and a `Settle` stage reconciles the token estimate to the usage.
//!
//! - Algorithm: GCRA over a one-minute window (see [`local`]): at most the limit at once,
//!   capacity returning continuously; no fixed window's double burst at an edge.
//! - Tokens: admission reserves the prompt estimate (request bytes / 4) plus `max_tokens` (or
//!   `max_completion_tokens`, else [`DEFAULT_OUTPUT_RESERVE`]); settle gives back (or charges)
//!   the difference to the answer's `total_tokens` (0 when nothing answered).
//! - Parallel: a slot per request, released when the request's context drops (answered,
//!   failed, client gone, timed out) through the [`Lease`] held in `ctx.admission`.
//! - Without Redis all of this is in-process ([`local`]); with `router_settings.redis_*` (or
//!   `cache_params`' server, or `REDIS_*`) it is one Lua script per admission ([`shared`]).
//!   Redis failing: `switchboard.redis_failure_policy: open` (default) decides on this
//!   instance's own counters, `closed` refuses with 503; either way bounded by the timeout.
//!   What an outage admitted locally is charged into Redis before admissions go back to it
//!   ([`outage`]): no fresh burst when Redis returns.
//! - Answers: every response carries `x-ratelimit-*` ([`headers`]); a refusal is a 429 with
//!   LiteLLM's message and a `Retry-After` computed from when capacity returns.

pub mod defaults;
pub mod headers;
pub mod local;
pub mod outage;
pub mod shared;

use crate::config::redis::{FailurePolicy, RedisSettings};
use crate::context::{Context, RateLimitStatus, RateWindow, ScopeWindow};
use crate::error::{ErrorKind, GatewayError};
use crate::openai::RequestBody;
use crate::pipeline::{Admit, Settle};
use crate::shared_state::SharedState;
use async_trait::async_trait;
use local::Local;
use smallvec::SmallVec;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Output tokens reserved when the request sets no `max_tokens`.
pub const DEFAULT_OUTPUT_RESERVE: u64 = 256;
/// rpm and tpm windows.
pub const WINDOW_MS: f64 = 60_000.0;

/// Whose limit a scope is (LiteLLM's descriptor names, used in messages and Redis keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Descriptor {
    ApiKey,
    ModelPerKey,
    Team,
    User,
    TeamMember,
    EndUser,
}

impl Descriptor {
    pub fn as_str(self) -> &'static str {
        match self {
            Descriptor::ApiKey => "api_key",
            Descriptor::ModelPerKey => "model_per_key",
            Descriptor::Team => "team",
            Descriptor::User => "user",
            Descriptor::TeamMember => "team_member",
            Descriptor::EndUser => "end_user",
        }
    }
}

/// What a scope counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    Requests,
    Tokens,
    Parallel,
}

impl Measure {
    /// LiteLLM's "Limit type".
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Requests => "requests",
            Measure::Tokens => "tokens",
            Measure::Parallel => "max_parallel_requests",
        }
    }
}

/// One limit a request is checked against.
#[derive(Debug, Clone)]
pub struct Scope {
    pub descriptor: Descriptor,
    pub measure: Measure,
    /// The descriptor's value: the key's hash, or `hash:model`.
    pub value: String,
    /// A hash of descriptor, measure and value (the local map's key).
    pub id: u64,
    pub limit: u64,
    /// Units this request takes (1 request, the token estimate, 1 slot).
    pub cost: u64,
    pub window_ms: f64,
}

/// A scope's standing after a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScopeResult {
    pub admitted: bool,
    pub remaining: u64,
    /// Until the scope's capacity is whole again, ms.
    pub reset_ms: f64,
    /// When refused: until this request would be admitted, ms.
    pub wait_ms: f64,
}

/// Counters for `/metrics` (process-wide; limits outlive reloads).
static RATE_LIMITED: AtomicU64 = AtomicU64::new(0);
static REDIS_FALLBACK: AtomicU64 = AtomicU64::new(0);
static REDIS_REFUSED: AtomicU64 = AtomicU64::new(0);
static OUTAGE_CHARGED: AtomicU64 = AtomicU64::new(0);

/// The in-process cells, shared by every config generation (a reload keeps the counts).
fn local() -> &'static Arc<Local> {
    static L: OnceLock<Arc<Local>> = OnceLock::new();
    L.get_or_init(|| Arc::new(Local::default()))
}

fn scope_id(descriptor: Descriptor, measure: Measure, value: &str) -> u64 {
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    descriptor.hash(&mut h);
    measure.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// The rate-limit stage: admission and settle. Built per config generation; its state is
/// process-wide (local) or in Redis.
pub struct Limits {
    core: Arc<Core>,
    /// `max_end_user_budget_id` and where to find that budget row (the tenant maps).
    end_user_default: Option<(String, Arc<crate::keys::Keys>)>,
}

struct Core {
    redis: Option<RedisSettings>,
    /// Made on first use (inside the runtime).
    shared: OnceLock<Option<SharedState>>,
    timeout: Duration,
    policy: FailurePolicy,
    /// What fail-open admissions owe Redis (see [`outage`]).
    outage: outage::Outage,
}

impl Limits {
    /// With the key store (`keys`) the budget row named by `max_end_user_budget_id` limits
    /// end users without a budget of their own.
    pub fn from_config(
        config: &crate::config::Config,
        keys: Option<&Arc<crate::keys::Keys>>,
    ) -> Limits {
        let end_user_default = config
            .litellm
            .limit_defaults
            .end_user_budget_id
            .clone()
            .zip(keys.cloned());
        Limits {
            end_user_default,
            core: Arc::new(Core {
                redis: config.router.redis.clone(),
                shared: OnceLock::new(),
                timeout: config.server.redis_timeout,
                policy: config.server.redis_failure_policy,
                outage: outage::Outage::default(),
            }),
        }
    }
}

impl Core {
    fn shared(&self) -> Option<&SharedState> {
        self.shared
            .get_or_init(|| {
                let settings = self.redis.as_ref()?;
                match SharedState::new(settings, self.timeout, self.policy) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        log::error!("rate limits: Redis unusable, limits stay local: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }
}

impl Core {
    /// Decides on this instance's own cells (fail-open) and remembers what was admitted for
    /// Redis, starting the task that charges it there when none runs.
    fn admit_locally(self: &Arc<Self>, scopes: &[Scope], results: &mut Vec<ScopeResult>) -> bool {
        REDIS_FALLBACK.fetch_add(1, Ordering::Relaxed);
        let admitted = local().admit(scopes, results);
        if admitted && self.outage.record(scopes) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(charge_outage(self.clone()));
                }
                Err(_) => self.outage.abandon(),
            }
        }
        admitted
    }
}

/// Charges what the outage admitted locally into Redis (see [`outage`]): one script call per
/// attempt, retried every [`outage::RETRY`] until Redis answers; off the request path.
async fn charge_outage(core: Arc<Core>) {
    let Some(state) = core.shared().cloned() else {
        core.outage.abandon();
        return;
    };
    loop {
        let (scopes, round) = core.outage.snapshot();
        let items: Vec<(Scope, f64)> = scopes
            .into_iter()
            .map(|s| {
                let backlog = local().backlog_ms(&s);
                (s, backlog)
            })
            .filter(|(_, backlog)| *backlog > 0.0)
            .collect();
        // Sent even when nothing is left to charge: the call is the probe that Redis is back.
        let (keys, args) = shared::charge_args(&items);
        let call = crate::shared_state::batch::Call {
            script: shared::charge_script(),
            keys,
            args,
        };
        match state.eval_many(&[&call]).await {
            Ok(replies) => {
                if let Some(redis::Value::ServerError(e)) = replies.first() {
                    // Not an outage: a script Redis refuses. Charging cannot succeed; stop
                    // owing rather than deciding locally for ever.
                    log::error!("rate limits: charging the outage into Redis failed: {e:?}");
                } else {
                    for (s, backlog) in &items {
                        local().forget_ms(s, *backlog);
                    }
                }
                let done = core.outage.charged(round);
                // Counted once admissions are back on Redis (when `done`): a scrape that sees
                // it never races the switch.
                OUTAGE_CHARGED.fetch_add(items.len() as u64, Ordering::Relaxed);
                if done {
                    log::warn!(
                        "rate limits: Redis answers again; {} scope(s) admitted locally meanwhile \
                         charged there, admissions are back on Redis",
                        items.len()
                    );
                    return;
                }
            }
            Err(_) => tokio::time::sleep(outage::RETRY).await,
        }
    }
}

/// rpm, tpm and parallel limits of one entity (`None`: no limit).
#[derive(Clone, Copy, Default)]
struct Triple {
    rpm: Option<u64>,
    tpm: Option<u64>,
    parallel: Option<u64>,
}

impl Triple {
    fn of(rpm: Option<i64>, tpm: Option<i64>, parallel: Option<i64>) -> Triple {
        let ok = |v: Option<i64>| v.filter(|v| *v >= 0).map(|v| v as u64);
        Triple {
            rpm: ok(rpm),
            tpm: ok(tpm),
            parallel: ok(parallel),
        }
    }

    fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.parallel.is_some()
    }
}

/// The scopes of a request: its key, model per key, and the key's team, user, team
/// membership and the request's end user as `ctx.tenancy` resolved them (empty without a key
/// or limits).
/// `end_user_default`: the budget row whose limits hold for an end user without its own.
fn scopes(
    ctx: &Context,
    body: &RequestBody<'_>,
    end_user_default: Option<&crate::tenant::BudgetEntry>,
) -> SmallVec<[Scope; 4]> {
    let mut out = SmallVec::new();
    let Some(key) = ctx.principal.key() else {
        return out;
    };
    let row = &key.row;
    let t = &ctx.tenancy;
    let mut tenants: SmallVec<[(Descriptor, String, Triple); 4]> = SmallVec::new();
    if let Some(team) = &t.team {
        let r = &team.row;
        let l = Triple::of(r.rpm_limit, r.tpm_limit, r.max_parallel_requests);
        if l.any() {
            tenants.push((Descriptor::Team, r.team_id.clone(), l));
        }
    }
    if let Some(user) = &t.user {
        let r = &user.row;
        let l = Triple::of(r.rpm_limit, r.tpm_limit, r.max_parallel_requests);
        if l.any() {
            tenants.push((Descriptor::User, r.user_id.clone(), l));
        }
    }
    if let Some(m) = &t.membership {
        if let Some(b) = &m.budget {
            let r = &b.row;
            let l = Triple::of(r.rpm_limit, r.tpm_limit, r.max_parallel_requests);
            if l.any() {
                let v = format!("{}:{}", m.row.team_id, m.row.user_id);
                tenants.push((Descriptor::TeamMember, v, l));
            }
        }
    }
    if let Some(id) = ctx.end_user.as_deref() {
        let own = t.end_user.as_ref().and_then(|e| e.budget.as_deref());
        if let Some(b) = own.or(end_user_default) {
            let r = &b.row;
            let l = Triple::of(r.rpm_limit, r.tpm_limit, r.max_parallel_requests);
            if l.any() {
                tenants.push((Descriptor::EndUser, id.to_string(), l));
            }
        }
    }
    let model_limits = |name: &str| -> Option<u64> {
        let model = ctx.model.as_deref()?;
        row.metadata
            .get(name)?
            .get(model)?
            .as_f64()
            .filter(|v| *v >= 0.0)
            .map(|v| v as u64)
    };
    let positive = |v: Option<i64>| v.filter(|v| *v >= 0).map(|v| v as u64);
    let rpm = positive(row.rpm_limit);
    let tpm = positive(row.tpm_limit);
    let parallel = positive(row.max_parallel_requests);
    let model_rpm = model_limits("model_rpm_limit");
    let model_tpm = model_limits("model_tpm_limit");
    if rpm.is_none()
        && tpm.is_none()
        && parallel.is_none()
        && model_rpm.is_none()
        && model_tpm.is_none()
        && tenants.is_empty()
    {
        return out;
    }
    let tokens =
        if tpm.is_some() || model_tpm.is_some() || tenants.iter().any(|t| t.2.tpm.is_some()) {
            token_estimate(body)
        } else {
            0
        };
    let mut push = |descriptor, measure, value: &str, limit: Option<u64>, cost| {
        if let Some(limit) = limit {
            out.push(Scope {
                descriptor,
                measure,
                value: value.to_string(),
                id: scope_id(descriptor, measure, value),
                limit,
                cost,
                window_ms: WINDOW_MS,
            });
        }
    };
    let k = row.token.as_str();
    push(Descriptor::ApiKey, Measure::Parallel, k, parallel, 1);
    push(Descriptor::ApiKey, Measure::Requests, k, rpm, 1);
    push(Descriptor::ApiKey, Measure::Tokens, k, tpm, tokens);
    if model_rpm.is_some() || model_tpm.is_some() {
        let v = format!("{k}:{}", ctx.model.as_deref().unwrap_or(""));
        push(Descriptor::ModelPerKey, Measure::Requests, &v, model_rpm, 1);
        push(
            Descriptor::ModelPerKey,
            Measure::Tokens,
            &v,
            model_tpm,
            tokens,
        );
    }
    for (d, v, l) in &tenants {
        push(*d, Measure::Parallel, v, l.parallel, 1);
        push(*d, Measure::Requests, v, l.rpm, 1);
        push(*d, Measure::Tokens, v, l.tpm, tokens);
    }
    out
}

/// Prompt bytes / 4 plus the output the request allows (or [`DEFAULT_OUTPUT_RESERVE`]), times
/// the choices asked for (`n`).
pub fn token_estimate(body: &RequestBody<'_>) -> u64 {
    let output = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.typed::<u64>(k).ok().flatten())
        .unwrap_or(DEFAULT_OUTPUT_RESERVE);
    // `n` choices: up to n prompts (fanned out) and n outputs.
    body.estimated_prompt_tokens()
        .saturating_add(output)
        .saturating_mul(body.choices())
        .max(1)
}

/// What an admitted request holds until it settles; dropping it gives the parallel slots back.
pub struct Lease {
    core: Arc<Core>,
    /// Parallel and token scopes (the ones settle or drop touch).
    scopes: SmallVec<[Scope; 4]>,
    /// Decided by Redis (else by this instance's cells).
    shared: bool,
    /// This request's slot member in Redis.
    member: u64,
}

impl Lease {
    fn release(&self, items: Vec<(Scope, f64)>) {
        if items.is_empty() {
            return;
        }
        if !self.shared {
            for (scope, units) in &items {
                local().give_back(scope, *units);
            }
            return;
        }
        let (Some(state), Ok(rt)) = (self.core.shared(), tokio::runtime::Handle::try_current())
        else {
            return; // the slot's TTL frees it
        };
        let state = state.clone();
        let member = self.member;
        // Written behind: off the request path, bounded by the client's timeout.
        rt.spawn(async move {
            let (keys, args) = shared::settle_args(&items, member);
            let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let _: Result<i64, _> = state.eval(shared::settle_script(), &keys, &args).await;
        });
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let slots: Vec<(Scope, f64)> = self
            .scopes
            .iter()
            .filter(|s| s.measure == Measure::Parallel)
            .map(|s| (s.clone(), 1.0))
            .collect();
        self.release(slots);
    }
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // ring's system random; a failure only weakens slot-member uniqueness.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}

#[async_trait]
impl Admit for Limits {
    async fn admit(&self, ctx: &mut Context, body: &RequestBody<'_>) -> Result<(), GatewayError> {
        // The default end-user budget, only for an end user without one of its own.
        let default_budget = match &self.end_user_default {
            Some((id, keys))
                if ctx.end_user.is_some()
                    && ctx
                        .tenancy
                        .end_user
                        .as_ref()
                        .is_none_or(|e| e.budget.is_none()) =>
            {
                keys.tenants.budget(id)
            }
            _ => None,
        };
        let scopes = scopes(ctx, body, default_budget.as_deref());
        if scopes.is_empty() {
            return Ok(());
        }
        let mut results = Vec::with_capacity(scopes.len());
        let member = random_u64();
        let mut decided_shared = false;
        let owing = self.core.policy == FailurePolicy::Open && self.core.outage.owing();
        let admitted = match self.core.shared() {
            None => local().admit(&scopes, &mut results),
            // Redis failed a moment ago and the outage is not charged there yet.
            Some(_) if owing => self.core.admit_locally(&scopes, &mut results),
            Some(state) => {
                let (keys, args) = shared::admit_args(&scopes, member);
                // With the scripts other stages queued (budgets): one round trip.
                let call = crate::shared_state::batch::Call {
                    script: shared::admit_script(),
                    keys,
                    args,
                };
                let reply = ctx.redis_batch.eval_with(state, call).await;
                match reply
                    .ok()
                    .and_then(|v| redis::from_redis_value::<Vec<i64>>(v).ok())
                    .and_then(|r| shared::parse_admit(&r, scopes.len(), &mut results))
                {
                    Some(admitted) => {
                        decided_shared = true;
                        admitted
                    }
                    None if self.core.policy == FailurePolicy::Closed => {
                        REDIS_REFUSED.fetch_add(1, Ordering::Relaxed);
                        return Err(GatewayError::new(
                            ErrorKind::Unavailable,
                            "Rate limits cannot be checked: the shared rate-limit store (Redis) \
                             is not answering and switchboard.redis_failure_policy is closed. \
                             Retry shortly.",
                        )
                        .with_retry_after(Some(1)));
                    }
                    None => self.core.admit_locally(&scopes, &mut results),
                }
            }
        };
        ctx.rate_limit = status(&scopes, &results);
        if !admitted {
            RATE_LIMITED.fetch_add(1, Ordering::Relaxed);
            return Err(refusal(&scopes, &results));
        }
        let held: SmallVec<[Scope; 4]> = scopes
            .into_iter()
            .filter(|s| s.measure != Measure::Requests)
            .collect();
        if !held.is_empty() {
            ctx.admission = Some(Box::new(Lease {
                core: self.core.clone(),
                scopes: held,
                shared: decided_shared,
                member,
            }));
        }
        Ok(())
    }
}

/// Every scope's standing, and the tightest request and token windows.
fn status(scopes: &[Scope], results: &[ScopeResult]) -> RateLimitStatus {
    let mut out = RateLimitStatus::default();
    for (s, r) in scopes.iter().zip(results) {
        out.scopes.push(ScopeWindow {
            names: headers::scope_names(s.descriptor, s.measure),
            limit: s.limit,
            remaining: r.remaining,
        });
        let slot = match s.measure {
            Measure::Requests => &mut out.requests,
            Measure::Tokens => &mut out.tokens,
            Measure::Parallel => continue,
        };
        let w = RateWindow {
            limit: s.limit,
            remaining: r.remaining,
            reset: Duration::from_micros((r.reset_ms.max(0.0) * 1000.0) as u64),
        };
        if slot.is_none_or(|cur| w.remaining < cur.remaining) {
            *slot = Some(w);
        }
    }
    out
}

/// LiteLLM's 429 for the first refusing scope, with a Retry-After from its real wait.
fn refusal(scopes: &[Scope], results: &[ScopeResult]) -> GatewayError {
    let Some((s, r)) = scopes.iter().zip(results).find(|(_, r)| !r.admitted) else {
        return GatewayError::new(ErrorKind::RateLimited, "Rate limit exceeded.");
    };
    let wait = Duration::from_micros((r.wait_ms.max(0.0) * 1000.0) as u64);
    let resets_at = crate::context::unix_now() * 1000 + r.wait_ms.max(0.0) as u64;
    let message = format!(
        "Rate limit exceeded for {}: {}. Limit type: {}. Current limit: {}, Remaining: {}. Limit resets at: {}",
        s.descriptor.as_str(),
        s.value,
        s.measure.as_str(),
        s.limit,
        r.remaining,
        headers::utc_text(resets_at)
    );
    GatewayError::new(ErrorKind::RateLimited, message)
        .with_code("429")
        .with_retry_after(Some(headers::retry_after_secs(wait)))
}

/// Reconciles the token reservation to the usage.
pub struct LimitsSettle;

impl Settle for LimitsSettle {
    fn settle(&self, ctx: &Context) {
        let Some(lease) = ctx
            .admission
            .as_ref()
            .and_then(|a| a.downcast_ref::<Lease>())
        else {
            return;
        };
        let used = ctx.usage.as_ref().map(|u| u.total_tokens).unwrap_or(0) as f64;
        let items: Vec<(Scope, f64)> = lease
            .scopes
            .iter()
            .filter(|s| s.measure == Measure::Tokens)
            .map(|s| (s.clone(), s.cost as f64 - used))
            .filter(|(_, units)| *units != 0.0)
            .collect();
        lease.release(items);
    }
}

/// `switchboard_rate_limited_total`, `switchboard_rate_limit_redis_fallback_total`,
/// `switchboard_rate_limit_redis_refused_total`, `switchboard_rate_limit_outage_charged_total`,
/// `switchboard_rate_limit_outage_untracked_total`.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP switchboard_rate_limited_total Requests refused with 429 by a key's rate limits.\n\
         # TYPE switchboard_rate_limited_total counter\n\
         switchboard_rate_limited_total {}\n\
         # HELP switchboard_rate_limit_redis_fallback_total Admissions decided on this instance's own counters because Redis failed (fail-open).\n\
         # TYPE switchboard_rate_limit_redis_fallback_total counter\n\
         switchboard_rate_limit_redis_fallback_total {}\n\
         # HELP switchboard_rate_limit_redis_refused_total Requests refused with 503 because Redis failed (fail-closed).\n\
         # TYPE switchboard_rate_limit_redis_refused_total counter\n\
         switchboard_rate_limit_redis_refused_total {}\n\
         # HELP switchboard_rate_limit_outage_charged_total Rate cells admitted on this instance's own counters during a Redis outage and charged into Redis once it answered.\n\
         # TYPE switchboard_rate_limit_outage_charged_total counter\n\
         switchboard_rate_limit_outage_charged_total {}\n\
         # HELP switchboard_rate_limit_outage_untracked_total Rate cells admitted locally during a Redis outage but not charged after it (more than the bounded set holds).\n\
         # TYPE switchboard_rate_limit_outage_untracked_total counter\n\
         switchboard_rate_limit_outage_untracked_total {}\n",
        RATE_LIMITED.load(Ordering::Relaxed),
        REDIS_FALLBACK.load(Ordering::Relaxed),
        REDIS_REFUSED.load(Ordering::Relaxed),
        OUTAGE_CHARGED.load(Ordering::Relaxed),
        outage::untracked(),
    );
}
