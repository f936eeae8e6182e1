//! Process-wide state shared by every request: the current routing snapshot and what outlives it
//! across reloads (the upstream connection pool, per-deployment state, metrics, drain state).
//! `gateway`, `reload`, `lifecycle` and `server` read it; it imports none of them (the last
//! reload's outcome is defined here, `reload` fills it in).

use crate::metrics::Metrics;
use crate::pipeline::Stages;
use crate::router::{Snapshot, StateRegistry};
use crate::upstream::UpstreamClient;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::atomic::{AtomicBool, AtomicU64};
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
    pub in_flight: AtomicU64,
    /// The virtual-key store (with a master key set); outlives reloads.
    pub keys: Option<Arc<crate::keys::Keys>>,
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
            in_flight: AtomicU64::new(0),
        }
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
