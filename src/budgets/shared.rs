//! Budgets over Redis, so N instances enforce one budget: each scope's window spend and its
//! in-flight reservations live in Redis (`{switchboard:budgets}:<kind>:<id>`, a hash with
//! `spend`, `reserved` and the window's end `w`; beside it a sorted set `…:r` of reservations,
//! `id:amount` scored by their expiry).
//!
//! - Admission: one Lua script reserves the worst case on every scope of the request, all or
//!   nothing, on Redis' clock (`TIME`). It first drops reservations past their expiry
//!   (`switchboard.budget_reservation_ttl_s`, default 600 s: an instance killed mid-request
//!   gives its budget back then). A scope absent from Redis is seeded with the entity's spend
//!   as this instance knows it (the database's `spend` plus what it settled since). The window:
//!   each call passes the end of the scope's window as the ledger computes it (from the row's
//!   `budget_reset_at` and `budget_duration`, so every instance computes the same); an end
//!   later than the stored one starts a new window at spend 0.
//! - The script is sent with the rate-limit script in one round trip (`shared_state::batch`).
//! - Settle (sync, off the request path): a bounded queue to a background task that swaps the
//!   reservation for the actual cost, pipelining what queued up. Full queue: dropped and
//!   counted (the reservation then expires). A reservation dropped unsettled (an error, a
//!   hang-up) is released the same way.
//! - Redis failing: `switchboard.redis_failure_policy` — open: this instance's own ledger
//!   decides (counted); closed: 503. Either within `redis_timeout_ms`.

use super::ledger::{Claim, Refusal, ScopeKey};
use crate::config::redis::{FailurePolicy, RedisSettings};
use crate::shared_state::batch::Call;
use crate::shared_state::SharedState;
use redis::{Script, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;

/// Settles waiting to be written; more are dropped (and their reservations expire).
const QUEUE: usize = 8192;
/// Settles sent in one pipeline, at most.
const SETTLE_BATCH: usize = 128;
/// An idle scope's state is dropped after this (it is seeded again from the entity's spend).
const IDLE_MS: u64 = 86_400_000;

/// Admissions decided by the local ledger because Redis failed (fail-open).
pub static FALLBACK: AtomicU64 = AtomicU64::new(0);
/// Requests refused with 503 because Redis failed (fail-closed).
pub static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Settles the queue had no room for.
pub static SETTLES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// `switchboard_budget_redis_{fallback,refused}_total`, `switchboard_budget_redis_settles_dropped_total`.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP switchboard_budget_redis_fallback_total Budget admissions decided by this instance's own ledger because Redis failed (fail-open).\n\
         # TYPE switchboard_budget_redis_fallback_total counter\n\
         switchboard_budget_redis_fallback_total {}\n\
         # HELP switchboard_budget_redis_refused_total Requests refused with 503 because the budget store (Redis) failed (fail-closed).\n\
         # TYPE switchboard_budget_redis_refused_total counter\n\
         switchboard_budget_redis_refused_total {}\n\
         # HELP switchboard_budget_redis_settles_dropped_total Budget settles not written to Redis (queue full or Redis failing); their reservations expire.\n\
         # TYPE switchboard_budget_redis_settles_dropped_total counter\n\
         switchboard_budget_redis_settles_dropped_total {}\n",
        FALLBACK.load(Ordering::Relaxed),
        REFUSED.load(Ordering::Relaxed),
        SETTLES_DROPPED.load(Ordering::Relaxed)
    );
}

/// ARGV: member (`id:amount`), amount, ttl ms, then per scope: max budget (`''`: none), seed
/// spend, window end ms (0: none). KEYS: per scope, the hash and the reservation set.
/// Returns `{refused (1-based scope, 0 = reserved), then per scope: spend, reserved}` as strings.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member = ARGV[1]
local amount = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local idle = tonumber(ARGV[4])
local n = #KEYS / 2
local out = {'0'}
local refused = 0
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local b = 4 + (i - 1) * 3
  local max = tonumber(ARGV[b + 1])
  local wend = tonumber(ARGV[b + 3])
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  end
  local cur = redis.call('HMGET', h, 'spend', 'reserved', 'w')
  local spend = tonumber(cur[1])
  local reserved = tonumber(cur[2] or '0')
  local w = tonumber(cur[3] or '0')
  if spend == nil then
    spend = tonumber(ARGV[b + 2])
    w = wend
    redis.call('HSET', h, 'spend', string.format('%.17g', spend), 'w', w)
  elseif wend > w then
    if w > 0 then
      spend = 0
      redis.call('HSET', h, 'spend', '0')
    end
    redis.call('HSET', h, 'w', wend)
  end
  for _, m in ipairs(gone) do
    reserved = reserved - tonumber(string.match(m, ':([^:]+)$'))
  end
  if redis.call('ZCARD', z) == 0 or reserved < 0 then reserved = 0 end
  if #gone > 0 then redis.call('HSET', h, 'reserved', string.format('%.17g', reserved)) end
  if max and refused == 0 then
    local committed = spend + reserved
    if committed >= max or committed + amount > max then refused = i end
  end
  out[#out + 1] = string.format('%.17g', spend)
  out[#out + 1] = string.format('%.17g', reserved)
end
out[1] = tostring(refused)
if refused == 0 then
  for i = 1, n do
    local h, z = KEYS[2 * i - 1], KEYS[2 * i]
    redis.call('ZADD', z, now + ttl, member)
    redis.call('HINCRBYFLOAT', h, 'reserved', amount)
    redis.call('PEXPIRE', z, ttl + 1000)
  end
end
for i = 1, n do redis.call('PEXPIRE', KEYS[2 * i - 1], idle) end
return out
"#;

/// ARGV: member, amount, actual cost. KEYS as for [`RESERVE`]. Releases the reservation (if
/// still held) and adds the cost to each scope that exists.
const SETTLE: &str = r#"
local amount = tonumber(ARGV[2])
local actual = tonumber(ARGV[3])
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('ZREM', z, ARGV[1]) == 1 then
    if redis.call('ZCARD', z) == 0 then
      redis.call('HSET', h, 'reserved', '0')
    else
      redis.call('HINCRBYFLOAT', h, 'reserved', -amount)
    end
  end
  if actual > 0 and redis.call('EXISTS', h) == 1 then
    redis.call('HINCRBYFLOAT', h, 'spend', actual)
  end
end
return 1
"#;

fn reserve_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(RESERVE))
}

fn settle_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(SETTLE))
}

/// The Redis keys of a scope: its hash and its reservation set.
fn keys_of(k: &ScopeKey, out: &mut Vec<Vec<u8>>) {
    let h = format!("{{switchboard:budgets}}:{}:{}", k.kind(), k.id());
    out.push(format!("{h}:r").into_bytes());
    out.insert(out.len() - 1, h.into_bytes());
}

/// Budgets over one Redis (per config generation; the settle queue is per process).
pub struct SharedBudgets {
    state: SharedState,
    ttl_ms: u64,
}

/// A reservation made in Redis: settled once (the actual cost), or released when dropped.
pub struct SharedReservation {
    keys: Vec<Vec<u8>>,
    member: String,
    amount: String,
    done: AtomicBool,
}

impl SharedReservation {
    /// Swaps the reservation for `actual` on every scope, in the background. Once.
    pub fn settle(&self, actual: f64) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.send(if actual.is_finite() && actual > 0.0 {
                actual
            } else {
                0.0
            });
        }
    }

    /// Redis refused it: nothing to release.
    pub fn forget(&self) {
        self.done.store(true, Ordering::Release);
    }

    fn send(&self, actual: f64) {
        let Some(tx) = SETTLE_QUEUE.get() else { return };
        let call = Call {
            script: settle_script(),
            keys: self.keys.clone(),
            args: vec![
                self.member.clone().into_bytes(),
                self.amount.clone().into_bytes(),
                format!("{actual}").into_bytes(),
            ],
        };
        if tx.try_send(call).is_err() {
            SETTLES_DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for SharedReservation {
    fn drop(&mut self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.send(0.0);
        }
    }
}

static SETTLE_QUEUE: OnceLock<mpsc::Sender<Call>> = OnceLock::new();

/// What Redis said about a reservation.
pub enum Verdict {
    /// Reserved; per scope, the fleet's spend and in-flight reservations before this one.
    Reserved(Vec<(f64, f64)>),
    Refused(Refusal),
}

impl SharedBudgets {
    /// Budgets on `settings` (call inside the runtime); `None` (logged) when unusable.
    pub fn new(
        settings: &RedisSettings,
        timeout: Duration,
        policy: FailurePolicy,
        reservation_ttl: Duration,
    ) -> Option<SharedBudgets> {
        let state = match SharedState::new(settings, timeout, policy) {
            Ok(s) => s,
            Err(e) => {
                log::error!("budgets: Redis unusable, budgets stay per instance: {e}");
                return None;
            }
        };
        start_settler(settings.clone(), policy);
        Some(SharedBudgets {
            state,
            ttl_ms: reservation_ttl.as_millis().max(1) as u64,
        })
    }

    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// The reservation script for `claims` (seeds: each claim's spend as known here; windows:
    /// the scopes' current ends), and the reservation it makes (released if dropped).
    pub fn prepare(&self, claims: &[Claim], amount: f64) -> (Call, SharedReservation) {
        let id = next_id();
        let amount_s = format!("{amount}");
        let member = format!("{id}:{amount_s}");
        let mut keys = Vec::with_capacity(claims.len() * 2);
        let mut args = Vec::with_capacity(4 + claims.len() * 3);
        args.push(member.clone().into_bytes());
        args.push(amount_s.clone().into_bytes());
        args.push(self.ttl_ms.to_string().into_bytes());
        args.push(IDLE_MS.to_string().into_bytes());
        for c in claims {
            keys_of(&c.scope.key, &mut keys);
            let view = c.scope.view();
            args.push(
                c.limits
                    .max_budget
                    .map(|m| format!("{m}"))
                    .unwrap_or_default()
                    .into_bytes(),
            );
            args.push(format!("{}", c.observed.unwrap_or(view.spend).max(0.0)).into_bytes());
            args.push(
                view.reset_at_ms
                    .unwrap_or(0)
                    .max(0)
                    .to_string()
                    .into_bytes(),
            );
        }
        let reservation = SharedReservation {
            keys: keys.clone(),
            member,
            amount: amount_s,
            done: AtomicBool::new(false),
        };
        (
            Call {
                script: reserve_script(),
                keys,
                args,
            },
            reservation,
        )
    }

    /// Reads the script's reply; `None` when malformed.
    pub fn verdict(reply: &Value, claims: &[Claim], amount: f64) -> Option<Verdict> {
        let parts: Vec<String> = redis::from_redis_value(reply.clone()).ok()?;
        if parts.len() != 1 + claims.len() * 2 {
            return None;
        }
        let refused: usize = parts[0].parse().ok()?;
        let mut fleet = Vec::with_capacity(claims.len());
        for i in 0..claims.len() {
            let spend: f64 = parts[1 + 2 * i].parse().ok()?;
            let reserved: f64 = parts[2 + 2 * i].parse().ok()?;
            fleet.push((spend, reserved));
        }
        if refused == 0 {
            return Some(Verdict::Reserved(fleet));
        }
        let c = claims.get(refused - 1)?;
        let (spend, reserved) = fleet[refused - 1];
        Some(Verdict::Refused(Refusal {
            key: c.scope.key.clone(),
            spend,
            reserved,
            max_budget: c.limits.max_budget.unwrap_or(0.0),
            requested: amount,
        }))
    }
}

/// A reservation id unique across instances: a per-process random prefix and a counter.
fn next_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    });
    format!("{prefix:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Starts the settle writer (once per process) on a runtime of its own.
fn start_settler(settings: RedisSettings, policy: FailurePolicy) {
    let (tx, mut rx) = mpsc::channel::<Call>(QUEUE);
    if SETTLE_QUEUE.set(tx).is_err() {
        return;
    }
    // Off the request path: a generous bound per call.
    crate::shared_state::run_in_background(
        "switchboard-budget-settle",
        "budget settles",
        "reservations will expire instead",
        settings,
        policy,
        Duration::from_secs(2),
        move |state| async move {
            let mut calls: Vec<Call> = Vec::with_capacity(SETTLE_BATCH);
            while rx.recv_many(&mut calls, SETTLE_BATCH).await > 0 {
                let refs: Vec<&Call> = calls.iter().collect();
                // A failure loses these settles: their reservations expire, their cost stays
                // out of the fleet's spend until the scope is seeded again.
                if state.eval_many(&refs).await.is_err() {
                    SETTLES_DROPPED.fetch_add(calls.len() as u64, Ordering::Relaxed);
                }
                calls.clear();
            }
        },
    );
}
