//! Deployment `rpm`/`tpm` usage counted across every instance on one Redis, so `rpm: 10` on
//! three instances admits about 10 a minute, not 30.
//!
//! Sync in the background, not leases: each deployment's [`FleetUsage`] counts what this
//! instance admitted and used since the last push (`pending`); every [`SYNC_EVERY`] a task on
//! its own runtime sends one `EVALSHA` that adds every deployment's pending counts to the
//! current minute's hash (`HINCRBY`, the minute and its end on Redis' clock, expiring after two
//! minutes) and reads the fleet totals back. Deployment selection never waits on Redis: it
//! compares `fleet total + counts not yet pushed` with the limit, all atomics in memory.
//! Leases were the alternative (each instance takes a slice of the minute's budget); they are
//! exact but strand unused slices on idle instances, so a limit could refuse traffic the
//! fleet has room for; a sync is simple, and the overshoot is bounded:
//!
//! **Bound**: another instance's admissions become visible here within one sync interval plus
//! a round trip, so across `N` instances a minute admits at most
//! `limit + (N - 1) × (requests each instance admits in SYNC_EVERY + RTT)`; under a steady load
//! of `r` requests a second over the fleet, about `r × 0.2 s` more than the limit. Sequential
//! traffic spaced by more than the interval is exact.
//!
//! Redis failing: the totals read last stop counting when their minute ends, and each instance
//! falls back to its own counts (the limit per instance, as without Redis); pending counts are
//! kept and pushed once Redis answers. At a minute's edge, counts taken in the old minute and
//! pushed after it are added to the new one (a few hundred ms of traffic, on the safe side).

use super::SharedState;
use crate::config::redis::{FailurePolicy, RedisSettings};
use redis::Script;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often each instance pushes its counts and reads the fleet's.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);
/// Key prefix; the minute index follows. One hash tag: one Cluster slot for the script.
const KEY: &[u8] = b"{switchboard:fleet}:usage";

static ACTIVE: AtomicBool = AtomicBool::new(false);
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Sync rounds that reached Redis (tests and `/metrics` can watch the sync progress).
static SYNCS: AtomicU64 = AtomicU64::new(0);

/// Whether deployment usage is shared (the sync task runs).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Sync rounds answered by Redis since start.
pub fn syncs() -> u64 {
    SYNCS.load(Ordering::Relaxed)
}

fn nanos(t: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(t.saturating_duration_since(epoch).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// One deployment's fleet-wide minute usage as this instance knows it.
#[derive(Default, Debug)]
pub struct FleetUsage {
    /// Fleet totals of the Redis minute last read (this instance's pushed counts included).
    requests: AtomicU64,
    tokens: AtomicU64,
    /// When that minute ends ([`nanos`]); 0 = never read. Past it the totals count as 0.
    minute_ends: AtomicU64,
    /// Counted here and not yet pushed.
    pending_requests: AtomicU64,
    pending_tokens: AtomicU64,
    /// Taken by the push in flight (still counted until its totals are read).
    pushing_requests: AtomicU64,
    pushing_tokens: AtomicU64,
}

impl FleetUsage {
    /// `(requests, tokens)` this minute across the fleet: the totals last read (while their
    /// minute lasts) plus what this instance counted since.
    pub fn usage(&self, now: Instant) -> (u64, u64) {
        let current = self.minute_ends.load(Ordering::Acquire) > nanos(now);
        let (r, t) = if current {
            (
                self.requests.load(Ordering::Relaxed),
                self.tokens.load(Ordering::Relaxed),
            )
        } else {
            (0, 0)
        };
        (
            r + self.pending_requests.load(Ordering::Relaxed)
                + self.pushing_requests.load(Ordering::Relaxed),
            t + self.pending_tokens.load(Ordering::Relaxed)
                + self.pushing_tokens.load(Ordering::Relaxed),
        )
    }

    /// Time left in the fleet minute last read, if it is still running.
    pub fn minute_left(&self, now: Instant) -> Option<Duration> {
        let ends = self.minute_ends.load(Ordering::Acquire);
        let now = nanos(now);
        (ends > now).then(|| Duration::from_nanos(ends - now))
    }

    /// Counts a request admitted here (no-op unless usage is shared).
    pub fn add_request(&self) {
        if active() {
            self.pending_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts tokens used here (no-op unless usage is shared).
    pub fn add_tokens(&self, tokens: u64) {
        if active() && tokens > 0 {
            self.pending_tokens.fetch_add(tokens, Ordering::Relaxed);
        }
    }

    /// Moves the pending counts to the push about to be sent.
    fn take_pending(&self) -> (u64, u64) {
        let r = self.pending_requests.swap(0, Ordering::AcqRel);
        let t = self.pending_tokens.swap(0, Ordering::AcqRel);
        self.pushing_requests.fetch_add(r, Ordering::AcqRel);
        self.pushing_tokens.fetch_add(t, Ordering::AcqRel);
        (r, t)
    }

    /// The push of `pushed` failed: its counts are pending again.
    fn push_failed(&self, pushed: (u64, u64)) {
        self.pending_requests.fetch_add(pushed.0, Ordering::AcqRel);
        self.pending_tokens.fetch_add(pushed.1, Ordering::AcqRel);
        self.pushing_requests.fetch_sub(pushed.0, Ordering::AcqRel);
        self.pushing_tokens.fetch_sub(pushed.1, Ordering::AcqRel);
    }

    /// The fleet totals after the push of `pushed` (included in them), minute ending at `ends`.
    fn apply(&self, totals: (u64, u64), ends: Instant, pushed: (u64, u64)) {
        // Totals first, then the pushed counts out: a reader may count them twice for an
        // instant (refusing on the safe side), never zero times.
        self.requests.store(totals.0, Ordering::Relaxed);
        self.tokens.store(totals.1, Ordering::Relaxed);
        self.minute_ends.store(nanos(ends), Ordering::Release);
        self.pushing_requests.fetch_sub(pushed.0, Ordering::AcqRel);
        self.pushing_tokens.fetch_sub(pushed.1, Ordering::AcqRel);
    }
}

/// ARGV: per deployment: id, requests to add, tokens to add. Returns `{ms left in the
/// minute, then per deployment: requests, tokens}` (the minute's totals after the adds).
const SYNC: &str = r#"
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(ms / 60000)
local key = KEYS[1] .. ':' .. minute
local out = {60000 - (ms % 60000)}
for i = 1, #ARGV, 3 do
  local r = tonumber(ARGV[i + 1])
  local tk = tonumber(ARGV[i + 2])
  if r > 0 then redis.call('HINCRBY', key, ARGV[i] .. ':r', r) end
  if tk > 0 then redis.call('HINCRBY', key, ARGV[i] .. ':t', tk) end
  local got = redis.call('HMGET', key, ARGV[i] .. ':r', ARGV[i] .. ':t')
  out[#out + 1] = tonumber(got[1] or '0')
  out[#out + 1] = tonumber(got[2] or '0')
end
redis.call('PEXPIRE', key, 120000)
return out
"#;

/// Lists this instance's deployments with an `rpm` or `tpm` limit: calls `visit(id, usage)`
/// for each.
pub type Deployments = Arc<dyn Fn(&mut dyn FnMut(&str, &Arc<FleetUsage>)) + Send + Sync>;

/// Starts the sync task (once per process) on a runtime of its own.
pub fn start(settings: RedisSettings, policy: FailurePolicy, deployments: Deployments) {
    if ACTIVE.swap(true, Ordering::AcqRel) {
        return;
    }
    // Off the request path: a generous bound per call.
    super::run_in_background(
        "switchboard-usage",
        "shared deployment usage",
        "usage stays local",
        settings,
        policy,
        Duration::from_secs(1),
        move |state| async move {
            let script = Script::new(SYNC);
            let mut tick = tokio::time::interval(SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut batch: Vec<(String, Arc<FleetUsage>, (u64, u64))> = Vec::new();
            loop {
                tick.tick().await;
                sync_once(&state, &script, &deployments, &mut batch).await;
            }
        },
    );
}

async fn sync_once(
    state: &SharedState,
    script: &Script,
    deployments: &Deployments,
    batch: &mut Vec<(String, Arc<FleetUsage>, (u64, u64))>,
) {
    batch.clear();
    deployments(&mut |id, usage| {
        if !batch.iter().any(|(seen, _, _)| seen == id) {
            batch.push((id.to_string(), usage.clone(), (0, 0)));
        }
    });
    if batch.is_empty() {
        return;
    }
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(batch.len() * 3);
    for (id, usage, pushed) in batch.iter_mut() {
        *pushed = usage.take_pending();
        args.push(id.clone().into_bytes());
        args.push(pushed.0.to_string().into_bytes());
        args.push(pushed.1.to_string().into_bytes());
    }
    let sent = Instant::now();
    let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    match state.eval::<Vec<i64>>(script, &[KEY], &argv).await {
        Ok(reply) if reply.len() == 1 + batch.len() * 2 => {
            SYNCS.fetch_add(1, Ordering::Relaxed);
            // The minute's end as seen when the request was sent: on the early side.
            let ends = sent + Duration::from_millis(reply[0].max(0) as u64);
            for (i, (_, usage, pushed)) in batch.iter().enumerate() {
                let totals = (
                    reply[1 + 2 * i].max(0) as u64,
                    reply[2 + 2 * i].max(0) as u64,
                );
                usage.apply(totals, ends, *pushed);
            }
        }
        _ => {
            for (_, usage, pushed) in batch.iter() {
                usage.push_failed(*pushed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_fleet_totals_plus_counts_not_yet_read_back() {
        let u = FleetUsage::default();
        let now = Instant::now();
        // Not active in unit tests: counting goes through the internal fields directly.
        u.pending_requests.store(2, Ordering::Relaxed);
        assert_eq!(u.usage(now), (2, 0));
        let pushed = u.take_pending();
        assert_eq!(pushed, (2, 0));
        assert_eq!(u.usage(now), (2, 0), "counted while the push is in flight");
        u.pending_requests.store(1, Ordering::Relaxed);
        // Another instance added 5: the fleet total is 7 with ours.
        let ends = now + Duration::from_secs(30);
        u.apply((7, 100), ends, pushed);
        assert_eq!(u.usage(now), (8, 100));
        assert_eq!(u.minute_left(now), Some(Duration::from_secs(30)));
        // The minute ended: only what was counted since stays.
        assert_eq!(u.usage(ends + Duration::from_millis(1)), (1, 0));
        assert_eq!(u.minute_left(ends), None);
        // A failed push gives its counts back to pending.
        let pushed = u.take_pending();
        u.push_failed(pushed);
        assert_eq!(u.usage(ends), (1, 0));
        assert_eq!(u.pending_requests.load(Ordering::Relaxed), 1);
    }
}
