//! The Redis client shared by everything that keeps state across gateway instances (rate
//! limits, cooldowns and deployment usage in `limits`/`router`, the response cache).
//!
//! One [`SharedState`] per configured Redis, cheap to clone. It is built without waiting on the
//! network: a single server is a redis-rs `ConnectionManager` (one multiplexed connection that
//! pipelines concurrent commands and reconnects by itself); a cluster connects in the
//! background. Every call is bounded by the configured timeout (`switchboard.redis_timeout_ms`,
//! default 50 ms). A failed or timed-out call opens a short circuit: for [`RETRY_AFTER_FAILURE`]
//! calls fail at once instead of each paying the timeout, then one call probes and closes it on
//! success. Failures are counted (`failures()`, exported as a metric) and logged at most once
//! per [`LOG_EVERY`]. Callers decide what a failure means (`FailurePolicy`).

pub mod batch;
pub mod cooldowns;
pub mod deployment_usage;

use crate::config::redis::{redact_url, FailurePolicy, RedisSettings};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisFuture, Script, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use crate::config::redis::RedisSettings as Settings;

/// `switchboard_admission_redis_round_trips_total` and, with shared deployment usage,
/// `switchboard_fleet_usage_syncs_total`.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "# HELP switchboard_admission_redis_round_trips_total Redis round trips made by admission (rate limits and budgets share one per request).\n\
         # TYPE switchboard_admission_redis_round_trips_total counter\n\
         switchboard_admission_redis_round_trips_total {}\n",
        batch::round_trips()
    );
    if deployment_usage::active() {
        let _ = write!(
            out,
            "# HELP switchboard_fleet_usage_syncs_total Deployment rpm/tpm usage syncs answered by Redis (pushes of this instance's counts and reads of the fleet's).\n\
             # TYPE switchboard_fleet_usage_syncs_total counter\n\
             switchboard_fleet_usage_syncs_total {}\n",
            deployment_usage::syncs()
        );
    }
}

/// Runs `task` with its own client of `settings` (bounded by `timeout` per call) on a thread
/// and current-thread runtime of its own: background state sync that must never take a
/// request worker's time. `what` names the work in the error logged (with what it means:
/// `fallback`) when it cannot start.
pub fn run_in_background<F, Fut>(
    thread: &str,
    what: &'static str,
    fallback: &'static str,
    settings: RedisSettings,
    policy: FailurePolicy,
    timeout: Duration,
    task: F,
) where
    F: FnOnce(SharedState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let spawned = std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                log::error!("{what}: cannot start a runtime; {fallback}");
                return;
            };
            rt.block_on(async move {
                match SharedState::new(&settings, timeout, policy) {
                    Ok(state) => task(state).await,
                    Err(e) => log::error!("{what}: Redis unusable, {fallback}: {e}"),
                }
            });
        });
    if let Err(e) = spawned {
        log::error!("{what}: cannot start a thread ({e}); {fallback}");
    }
}

/// How long calls fail fast after a failure before one probes Redis again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);
/// At most one log line per this interval about Redis being unreachable.
pub const LOG_EVERY: Duration = Duration::from_secs(10);
/// Bound on establishing one connection (reconnects run in the background of calls, which are
/// bounded by the per-call timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a call did not return a value.
#[derive(Debug)]
pub enum CallError {
    /// No answer within the timeout.
    Timeout,
    /// Redis was failing a moment ago; not tried (see the module doc).
    Unavailable,
    /// Connection or protocol error, or an error reply (`ERR ...` from a script).
    Redis(redis::RedisError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => write!(f, "no answer within the timeout"),
            CallError::Unavailable => write!(f, "unavailable (recent failures)"),
            CallError::Redis(e) => write!(f, "{e}"),
        }
    }
}

/// A connection to one server or a cluster; both pipeline concurrent callers on shared sockets.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

struct Inner {
    conn: OnceLock<Conn>,
    timeout: Duration,
    policy: FailurePolicy,
    /// Redacted, for logs: `redis://host:port`.
    describe: String,
    /// Process start of the circuit's clock.
    epoch: Instant,
    /// Milliseconds since `epoch` before which calls fail fast; 0 when closed.
    open_until_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last log line (+1; 0 = never).
    logged_ms: AtomicU64,
    failures: AtomicU64,
}

/// A handle on the shared Redis (see the module doc). Clones share the connection.
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedState({})", self.inner.describe)
    }
}

impl SharedState {
    /// A client for `settings`, without touching the network (call it inside a Tokio runtime:
    /// a cluster connects from a spawned task). Errors are bad URLs or TLS setups.
    pub fn new(
        settings: &RedisSettings,
        timeout: Duration,
        policy: FailurePolicy,
    ) -> Result<SharedState, String> {
        let describe = settings
            .nodes
            .iter()
            .map(|n| redact_url(n))
            .collect::<Vec<_>>()
            .join(",");
        let bad = |e: redis::RedisError| format!("{}: {e}", settings.origin);
        let mut infos = Vec::with_capacity(settings.nodes.len());
        for node in &settings.nodes {
            let mut info = node.as_str().into_connection_info().map_err(bad)?;
            let mut redis = info.redis_settings().clone();
            if let Some(u) = &settings.username {
                redis = redis.set_username(u);
            }
            if let Some(p) = &settings.password {
                redis = redis.set_password(p);
            }
            info = info.set_redis_settings(redis);
            infos.push(info);
        }
        let inner = Arc::new(Inner {
            conn: OnceLock::new(),
            timeout,
            policy,
            describe,
            epoch: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            logged_ms: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        // A private CA (`ssl_ca_certs` / `REDIS_SSL_CA_CERTS`) replaces the system roots.
        let certs = match &settings.ca_certs {
            None => None,
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|e| {
                    format!("{}: cannot read the CA file {path}: {e}", settings.origin)
                })?),
            }),
        };
        if settings.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(infos)
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(timeout.max(Duration::from_millis(1)));
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let client = builder.build().map_err(bad)?;
            let weak = Arc::downgrade(&inner);
            let rt = tokio::runtime::Handle::try_current()
                .map_err(|_| "a Redis Cluster client must be made inside a Tokio runtime")?;
            rt.spawn(async move {
                let mut backoff = Duration::from_millis(100);
                loop {
                    let Some(inner) = weak.upgrade() else { return };
                    match client.get_async_connection().await {
                        Ok(c) => {
                            let _ = inner.conn.set(Conn::Cluster(c));
                            return;
                        }
                        Err(e) => inner.failed(&CallError::Redis(e)),
                    }
                    drop(inner);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            });
        } else {
            let info = infos.pop().ok_or("no Redis node configured")?;
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(info, certs),
                None => redis::Client::open(info),
            }
            .map_err(bad)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(timeout.max(Duration::from_millis(1))))
                .set_max_delay(Duration::from_secs(2));
            let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(bad)?;
            let _ = inner.conn.set(Conn::Single(manager));
        }
        Ok(SharedState { inner })
    }

    /// What requests meet while Redis fails (`switchboard.redis_failure_policy`).
    pub fn policy(&self) -> FailurePolicy {
        self.inner.policy
    }

    /// The per-call bound.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Calls that failed or timed out since start (a counter for `/metrics`).
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Whether calls are failing fast now (Redis failed within [`RETRY_AFTER_FAILURE`]).
    pub fn is_failing(&self) -> bool {
        self.inner.open_until_ms.load(Ordering::Relaxed) != 0
    }

    /// One command.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, CallError> {
        let v = self
            .call(|mut c| async move { c.req_packed_command(cmd).await })
            .await?;
        redis::from_redis_value(v).map_err(|e| CallError::Redis(e.into()))
    }

    /// Several commands in one round trip; one value per command (`ignore`d ones excluded).
    pub async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, CallError> {
        self.call(|mut c| async move { pipe.query_async::<T>(&mut c).await })
            .await
    }

    /// A Lua script by `EVALSHA` (loaded on the first `NOSCRIPT`, then cached by Redis).
    pub async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<T, CallError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(*a);
        }
        self.call(|mut c| async move { inv.invoke_async::<T>(&mut c).await })
            .await
    }

    /// Runs `f` on the connection under the timeout and the circuit (see the module doc).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, CallError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let inner = &self.inner;
        let open_until = inner.open_until_ms.load(Ordering::Relaxed);
        if open_until != 0 {
            let now = inner.now_ms();
            // Closed for everyone until the deadline; then exactly one caller probes (the one
            // that moves the deadline on) while the rest keep failing fast.
            if now < open_until
                || inner
                    .open_until_ms
                    .compare_exchange(
                        open_until,
                        now + RETRY_AFTER_FAILURE.as_millis() as u64,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                return Err(CallError::Unavailable);
            }
        }
        let Some(conn) = inner.conn.get().cloned() else {
            let e = CallError::Unavailable;
            inner.failed(&e);
            return Err(e);
        };
        let outcome = match tokio::time::timeout(inner.timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            // An error reply from the server (a script's `error_reply`) is an answer: Redis is up.
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) =>
            {
                Err(CallError::Redis(e))
            }
            Ok(Err(e)) => {
                let e = CallError::Redis(e);
                inner.failed(&e);
                return Err(e);
            }
            Err(_) => {
                inner.failed(&CallError::Timeout);
                return Err(CallError::Timeout);
            }
        };
        if inner.open_until_ms.swap(0, Ordering::AcqRel) != 0 {
            log::warn!("shared state: Redis {} answers again", inner.describe);
        }
        outcome
    }
}

impl Inner {
    fn now_ms(&self) -> u64 {
        // +1: 0 means "closed".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn failed(&self, e: &CallError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        self.open_until_ms.store(
            now + RETRY_AFTER_FAILURE.as_millis() as u64,
            Ordering::Release,
        );
        let last = self.logged_ms.load(Ordering::Relaxed);
        if (last == 0 || now >= last + LOG_EVERY.as_millis() as u64)
            && self
                .logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::error!(
                "shared state: Redis {} failed: {e} (policy: fail {}; {} failures so far; next \
                 report in {}s at most)",
                self.describe,
                match self.policy {
                    FailurePolicy::Open => "open",
                    FailurePolicy::Closed => "closed",
                },
                self.failures.load(Ordering::Relaxed),
                LOG_EVERY.as_secs()
            );
        }
    }
}
