//! Deployment cooldowns shared by every instance on one Redis: a deployment that cools down on
//! one instance cools down on all.
//!
//! The router reports each cooldown it enters ([`publish`]: a non-blocking send into a bounded
//! queue; dropped when full). A background task on its own runtime writes them to one Redis
//! hash (`deployment id -> end`, on Redis' clock) and every [`SYNC_EVERY`] reads the hash back
//! and applies the cooldowns still running to this instance's deployments. Deployment
//! selection never waits on Redis: it reads the local state, which lags another instance's
//! cooldown by at most `SYNC_EVERY` plus a round trip (the bound). With Redis down, each
//! instance keeps cooling down on its own.

use crate::config::redis::{FailurePolicy, RedisSettings};
use redis::Script;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often each instance reads the shared cooldowns.
pub const SYNC_EVERY: Duration = Duration::from_millis(200);
/// Cooldowns waiting to be written; more are dropped.
const QUEUE: usize = 1024;
const KEY: &[u8] = b"{switchboard:fleet}:cooldowns";

static PUBLISH: OnceLock<mpsc::Sender<(String, u64)>> = OnceLock::new();

/// Reports a cooldown this instance entered (no-op without shared cooldowns).
pub fn publish(deployment_id: &str, for_: Duration) {
    if let Some(tx) = PUBLISH.get() {
        let _ = tx.try_send((deployment_id.to_string(), for_.as_millis() as u64));
    }
}

/// ARGV: id, ms. Keeps the later end.
const WRITE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if untl > cur then redis.call('HSET', KEYS[1], ARGV[1], untl) end
return 1
"#;

/// Returns `{id, ms left, ...}` for running cooldowns; drops ended ones.
const READ: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local left = tonumber(all[i + 1]) - now
  if left > 0 then
    out[#out + 1] = all[i]
    out[#out + 1] = tostring(left)
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
return out
"#;

/// Cools this instance's deployment `id` for the time left.
pub type ApplyCooldown = Arc<dyn Fn(&str, Duration) + Send + Sync>;

/// Starts the sync task (once per process) on a runtime of its own. `apply(id, left)` cools
/// this instance's deployment `id` for `left` (it must never shorten a running cooldown).
pub fn start(settings: RedisSettings, policy: FailurePolicy, apply: ApplyCooldown) {
    let (tx, mut rx) = mpsc::channel::<(String, u64)>(QUEUE);
    if PUBLISH.set(tx).is_err() {
        return;
    }
    // Off the request path: a generous bound per call.
    super::run_in_background(
        "switchboard-fleet",
        "shared cooldowns",
        "cooldowns stay local",
        settings,
        policy,
        Duration::from_secs(1),
        move |state| async move {
            let write = Script::new(WRITE);
            let read = Script::new(READ);
            let mut tick = tokio::time::interval(SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    msg = rx.recv() => {
                        let Some((id, ms)) = msg else { return };
                        let ms = ms.to_string();
                        let _: Result<i64, _> = state
                            .eval(&write, &[KEY], &[id.as_bytes(), ms.as_bytes()])
                            .await;
                    }
                    _ = tick.tick() => {
                        let Ok(pairs) = state.eval::<Vec<String>>(&read, &[KEY], &[]).await
                        else {
                            continue;
                        };
                        for pair in pairs.chunks_exact(2) {
                            if let Ok(ms) = pair[1].parse::<u64>() {
                                apply(&pair[0], Duration::from_millis(ms));
                            }
                        }
                    }
                }
            }
        },
    );
}
