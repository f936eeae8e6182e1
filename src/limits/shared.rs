//! The limiter over Redis: one Lua script per admission checks and takes every scope of the
//! request at once (all or nothing), on Redis' own clock (`TIME`), so instances' clocks do not
//! matter. Settling (token reconciliation, parallel-slot release) is a second script sent in
//! the background, off the request path.
//!
//! Keys share one hash tag (`{switchboard:limits}`) so a multi-scope script is legal on Redis
//! Cluster; the price is that all limit state lives on one cluster shard.
//! Rate cells are GCRA timestamps (see `local`) expiring once their bucket is full again;
//! parallel slots are sorted-set members scored by an expiry ([`SLOT_TTL_MS`]), so a slot an
//! instance never released (killed) frees itself.

use super::{Measure, Scope, ScopeResult};
use redis::Script;
use std::sync::OnceLock;

/// The longest a parallel slot is held without release (a crashed instance's slots).
pub const SLOT_TTL_MS: u64 = 600_000;

/// ARGV: slot member, slot TTL, then per key: measure (`g` rate, `p` parallel), limit, cost,
/// window ms. Returns `{refused (1-based index of the first refusing scope, 0 = admitted),
/// now_ms, then per scope: remaining, reset_ms, wait_ms}`.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local member = ARGV[1]
local slot_ttl = tonumber(ARGV[2])
local refused = 0
local out = {0, math.floor(now)}
local news = {}
for i = 1, #KEYS do
  local b = 2 + (i - 1) * 4
  local kind = ARGV[b + 1]
  local limit = tonumber(ARGV[b + 2])
  local cost = tonumber(ARGV[b + 3])
  local window = tonumber(ARGV[b + 4])
  local remaining, reset, wait = 0, 0, 0
  if kind == 'p' then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    local held = redis.call('ZCARD', KEYS[i])
    if held < limit then
      remaining = limit - held - 1
    else
      wait = 1000
      if refused == 0 then refused = i end
    end
  else
    local per = window / limit
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    if cost > limit then cost = limit end
    local new = tat + cost * per
    if new - now > window + 0.001 then
      remaining = math.floor((now + window - tat) / per + 1e-9)
      reset = tat - now
      wait = new - window - now
      if refused == 0 then refused = i end
    else
      remaining = math.floor((now + window - new) / per + 1e-9)
      reset = new - now
      news[i] = new
    end
  end
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.ceil(wait)
end
out[1] = refused
if refused == 0 then
  for i = 1, #KEYS do
    if news[i] then
      redis.call('SET', KEYS[i], string.format('%.17g', news[i]), 'PX', math.ceil(news[i] - now) + 1000)
    elseif ARGV[2 + (i - 1) * 4 + 1] == 'p' then
      redis.call('ZADD', KEYS[i], now + slot_ttl, member)
      redis.call('PEXPIRE', KEYS[i], slot_ttl)
    end
  end
end
return out
"#;

/// ARGV: slot member, then per key: measure, limit, units to give back (negative: charge
/// more), window ms. Gives parallel slots back and moves rate cells by the units.
const SETTLE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 4
  local kind = ARGV[b + 1]
  if kind == 'p' then
    redis.call('ZREM', KEYS[i], ARGV[1])
  else
    local limit = tonumber(ARGV[b + 2])
    local units = tonumber(ARGV[b + 3])
    local window = tonumber(ARGV[b + 4])
    if units > limit then units = limit end
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    local new = tat - units * window / limit
    if new > now then
      redis.call('SET', KEYS[i], string.format('%.17g', new), 'PX', math.ceil(new - now) + 1000)
    elseif tat > 0 then
      redis.call('DEL', KEYS[i])
    end
  end
end
return 1
"#;

/// ARGV per key: backlog ms, window ms. Adds an outage's local admissions (see `outage`) to
/// each rate cell: the TAT (Redis' now for an empty or full cell) moves on by the backlog,
/// capped at a full window. Returns the number of cells charged.
const CHARGE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, #KEYS do
  local backlog = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new = tat + backlog
  if new > now + window then new = now + window end
  if new > now then
    redis.call('SET', KEYS[i], string.format('%.17g', new), 'PX', math.ceil(new - now) + 1000)
  end
end
return #KEYS
"#;

pub fn charge_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(CHARGE))
}

/// The charge script's keys and arguments: `(scope, backlog ms)`.
pub fn charge_args(items: &[(Scope, f64)]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let keys = items.iter().map(|(s, _)| key(s)).collect();
    let mut args = Vec::with_capacity(items.len() * 2);
    for (s, backlog) in items {
        args.push(format!("{backlog}").into_bytes());
        args.push(format!("{}", s.window_ms).into_bytes());
    }
    (keys, args)
}

pub fn admit_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(ADMIT))
}

pub fn settle_script() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(SETTLE))
}

/// The Redis key of a scope.
pub fn key(scope: &Scope) -> Vec<u8> {
    format!(
        "{{switchboard:limits}}:{}:{}:{}",
        scope.descriptor.as_str(),
        scope.measure.as_str(),
        scope.value
    )
    .into_bytes()
}

fn code(m: Measure) -> &'static [u8] {
    match m {
        Measure::Parallel => b"p",
        _ => b"g",
    }
}

/// The admission script's keys and arguments.
pub fn admit_args(scopes: &[Scope], member: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let keys = scopes.iter().map(key).collect();
    let mut args = Vec::with_capacity(2 + scopes.len() * 4);
    args.push(member.to_string().into_bytes());
    args.push(SLOT_TTL_MS.to_string().into_bytes());
    for s in scopes {
        args.push(code(s.measure).to_vec());
        args.push(s.limit.to_string().into_bytes());
        args.push(s.cost.to_string().into_bytes());
        args.push(format!("{}", s.window_ms).into_bytes());
    }
    (keys, args)
}

/// The settle script's keys and arguments: `(scope, units to give back)`.
pub fn settle_args(items: &[(Scope, f64)], member: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let keys = items.iter().map(|(s, _)| key(s)).collect();
    let mut args = Vec::with_capacity(1 + items.len() * 4);
    args.push(member.to_string().into_bytes());
    for (s, units) in items {
        args.push(code(s.measure).to_vec());
        args.push(s.limit.to_string().into_bytes());
        args.push(format!("{units}").into_bytes());
        args.push(format!("{}", s.window_ms).into_bytes());
    }
    (keys, args)
}

/// Reads the admission script's answer into one result per scope; `None` if malformed.
pub fn parse_admit(reply: &[i64], scopes: usize, out: &mut Vec<ScopeResult>) -> Option<bool> {
    if reply.len() != 2 + scopes * 3 {
        return None;
    }
    out.clear();
    let refused = reply[0] as usize;
    for i in 0..scopes {
        let b = 2 + i * 3;
        out.push(ScopeResult {
            // Only the first refusing scope is named; the script took from none.
            admitted: i + 1 != refused,
            remaining: reply[b].max(0) as u64,
            reset_ms: reply[b + 1].max(0) as f64,
            wait_ms: reply[b + 2].max(0) as f64,
        });
    }
    Some(refused == 0)
}
