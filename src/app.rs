//! Process-wide state shared by every request: the current routing snapshot and what outlives it
//! across reloads (the upstream connection pool, per-deployment state, metrics, drain state).
//! `gateway`, `reload`, `lifecycle` and `server` read it; it imports none of them (the last
//! reload's outcome is defined here, `reload` fills it in).

use crate::metrics::Metrics;
use crate::pipeline::Stages;
use crate::router::{Snapshot, StateRegistry};
use crate::upstream::UpstreamClient;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

/// What serves requests for one config generation: the routing snapshot and the pipeline
/// stages built from the same config. Derefs to the snapshot.
pub struct Live {
    pub routing: Arc<Snapshot>,
    pub stages: Stages,
}

impl Live {
    /// The snapshot with the stages its config asks for.
    pub fn new(snapshot: Snapshot) -> Live {
        Live::with_keys(snapshot, None)
    }

    /// The same, with the virtual-key store when one is open.
    pub fn with_keys(snapshot: Snapshot, keys: Option<&Arc<crate::keys::Keys>>) -> Live {
        let stages = Stages::from_config(&snapshot.config, keys);
        Live {
            routing: Arc::new(snapshot),
            stages,
        }
    }
}

impl std::ops::Deref for Live {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.routing
    }
}

/// Process-wide state: the current routing snapshot and what outlives it across reloads (the
/// upstream connection pool, per-deployment state, metrics).
pub struct App {
    /// The routing snapshot and the stages built with it, swapped together on reload.
    pub snapshot: ArcSwap<Live>,
    pub client: Arc<UpstreamClient>,
    /// Per-deployment live state by id; every snapshot is built against it.
    pub registry: StateRegistry,
    pub metrics: Metrics,
    /// The last SIGHUP reload's result (`None` until the first).
    pub last_reload: ArcSwapOption<ReloadOutcome>,
    /// Set once shutdown begins: liveness and readiness report it.
    pub draining: AtomicBool,
    /// Set once the reload service listens for SIGHUP. A SIGHUP delivered before that is lost
    /// (tokio drops signals that arrive before a listener subscribes), so readiness says
    /// `starting` and READY=1 waits until then.
    pub reload_armed: AtomicBool,
    /// Requests being served (the drain waits for none; `/metrics` reports it).
    pub in_flight: InFlight,
    /// The virtual-key store (with a master key set); outlives reloads.
    pub keys: Option<Arc<crate::keys::Keys>>,
    /// The last background `/health` run (`general_settings.background_health_checks`).
    pub model_health: Arc<crate::health::ModelHealth>,
    /// Which deployment made each recent native Responses API answer (`previous_response_id`).
    pub response_origins: crate::ingress::responses::native::Origins,
}

impl App {
    pub fn new(snapshot: Snapshot, client: Arc<UpstreamClient>, registry: StateRegistry) -> Self {
        App::with_keys(snapshot, client, registry, None)
    }

    pub fn with_keys(
        snapshot: Snapshot,
        client: Arc<UpstreamClient>,
        registry: StateRegistry,
        keys: Option<Arc<crate::keys::Keys>>,
    ) -> Self {
        App {
            snapshot: ArcSwap::from_pointee(Live::with_keys(snapshot, keys.as_ref())),
            keys,
            client,
            registry,
            metrics: Metrics::new(),
            last_reload: ArcSwapOption::empty(),
            draining: AtomicBool::new(false),
            reload_armed: AtomicBool::new(false),
            in_flight: InFlight::default(),
            model_health: Arc::default(),
            response_origins: Default::default(),
        }
    }
}

/// A count of requests being served, kept per worker thread: entering and leaving touch a
/// counter only the current thread normally writes (its own cache line), instead of one counter
/// every worker contends on. Reading sums the shards; only the drain and `/metrics` read it.
pub struct InFlight {
    shards: Box<[Shard]>,
}

/// One thread's share of the count, alone on its cache line.
#[repr(align(128))]
#[derive(Default)]
struct Shard(AtomicI64);

/// Shards: more than worker threads on any machine we run on; threads beyond share.
const IN_FLIGHT_SHARDS: usize = 64;

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            shards: (0..IN_FLIGHT_SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl InFlight {
    /// Counts a request for as long as the returned guard lives, also when its future is
    /// dropped. The guard leaves the shard it entered, whichever thread drops it.
    pub fn enter(&self) -> Serving<'_> {
        thread_local! {
            static SHARD: usize = {
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed) % IN_FLIGHT_SHARDS
            };
        }
        let shard = &self.shards[SHARD.with(|s| *s)].0;
        shard.fetch_add(1, Ordering::Relaxed);
        Serving(shard)
    }

    /// Requests in flight now.
    pub fn count(&self) -> u64 {
        let sum: i64 = self
            .shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum();
        sum.max(0) as u64
    }
}

/// One request counted in [`InFlight`] until dropped.
pub struct Serving<'a>(&'a AtomicI64);

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the last reload did, for `/health/readiness`.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    /// Unix seconds.
    pub at: u64,
    /// The generation serving after the attempt.
    pub generation: u64,
    /// `None` when the reload succeeded.
    pub error: Option<String>,
}

impl ReloadOutcome {
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "result": if self.error.is_none() { "ok" } else { "failed" },
            "at": self.at,
            "generation": self.generation,
        });
        if let Some(e) = &self.error {
            v["error"] = e.as_str().into();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_across_threads_and_leaves_where_it_entered() {
        let count = Arc::new(InFlight::default());
        let here = count.enter();
        // Entered on other threads, dropped here (a request future that moved).
        let moved: Vec<_> = (0..4)
            .map(|_| {
                let c = count.clone();
                std::thread::spawn(move || {
                    std::mem::forget(c.enter());
                })
            })
            .collect();
        for t in moved {
            t.join().unwrap();
        }
        assert_eq!(count.count(), 5);
        drop(here);
        assert_eq!(count.count(), 4);
        std::thread::scope(|s| {
            s.spawn(|| {
                let g = count.enter();
                assert_eq!(count.count(), 5);
                // Dropped on another thread than the one it entered on.
                std::thread::scope(|s2| {
                    s2.spawn(move || drop(g));
                });
            });
        });
        assert_eq!(count.count(), 4);
    }
}
