//! Active health checks for self-hosted pools (vLLM, TGI, Ollama): a deployment with
//! `model_info.health_check` is probed in the background with Pingora's own checks
//! (`TcpHealthCheck`, or `HttpHealthCheck` on a path that must answer 200), and selection skips
//! it while it is unhealthy. The checks run as a Pingora background service that reads the
//! current snapshot every tick, so reloads add and drop checks without restarting anything;
//! results live in the deployment's shared state, so they survive reloads too.

use super::{Deployment, Snapshot};
use crate::config::HealthCheckConfig;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::Backend;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the service looks for checks that are due.
const TICK: Duration = Duration::from_millis(50);
/// How often it looks when no deployment has a check (a reload may add one).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// A deployment's configured check, built once per snapshot.
pub struct ActiveCheck {
    pub config: HealthCheckConfig,
    checker: Box<dyn HealthCheck + Send + Sync>,
}

impl ActiveCheck {
    pub fn build(config: &HealthCheckConfig, tls: bool, authority: &str, host: &str) -> Self {
        let checker: Box<dyn HealthCheck + Send + Sync> = match &config.http_path {
            Some(path) => {
                let mut hc = HttpHealthCheck::new(authority, tls);
                if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                    let _ = req.append_header("Host", authority);
                    hc.req = req;
                }
                if tls {
                    hc.peer_template.sni = host.to_string();
                }
                hc.peer_template.options.connection_timeout = Some(config.timeout);
                hc.peer_template.options.read_timeout = Some(config.timeout);
                hc.peer_template.options.write_timeout = Some(config.timeout);
                Box::new(hc)
            }
            None => {
                let mut tcp = if tls {
                    TcpHealthCheck::new_tls(host)
                } else {
                    TcpHealthCheck::new()
                };
                tcp.peer_template.options.connection_timeout = Some(config.timeout);
                tcp
            }
        };
        ActiveCheck {
            config: config.clone(),
            checker,
        }
    }
}

/// Runs one check and records the result on the deployment.
pub async fn check_once(d: &Deployment) {
    let (Some(check), Some(endpoint)) = (&d.health, &d.endpoint) else {
        return;
    };
    let ok = match endpoint.peer().await {
        Ok(peer) => {
            let backend = Backend {
                addr: peer._address.clone(),
                weight: 1,
                ext: Default::default(),
            };
            // Pingora bounds connect and read; this bounds the whole check.
            matches!(
                tokio::time::timeout(check.config.timeout * 2, check.checker.check(&backend)).await,
                Ok(Ok(()))
            )
        }
        Err(_) => false,
    };
    let changed = d.state.record_health(
        ok,
        check.config.healthy_threshold,
        check.config.unhealthy_threshold,
    );
    if changed {
        log::warn!(
            "deployment {} ({}) is now {} (active health check)",
            d.id(),
            d.config.model_name,
            if ok { "healthy" } else { "unhealthy" }
        );
    }
}

/// The background service running every configured check at its interval.
pub struct HealthChecks<F> {
    snapshot: F,
}

impl<F> HealthChecks<F>
where
    F: Fn() -> Arc<Snapshot> + Send + Sync + 'static,
{
    pub fn new(snapshot: F) -> Self {
        HealthChecks { snapshot }
    }
}

#[async_trait]
impl<F> BackgroundService for HealthChecks<F>
where
    F: Fn() -> Arc<Snapshot> + Send + Sync + 'static,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_run: HashMap<String, Instant> = HashMap::new();
        loop {
            let snapshot = (self.snapshot)();
            let now = Instant::now();
            let mut any = false;
            for d in snapshot.deployments() {
                let Some(check) = &d.health else { continue };
                any = true;
                let due = last_run
                    .get(d.id())
                    .is_none_or(|t| now.duration_since(*t) >= check.config.interval);
                if due {
                    last_run.insert(d.id().to_string(), now);
                    let d = d.clone();
                    // Detached: each check is bounded by its own timeout.
                    tokio::spawn(async move { check_once(&d).await });
                }
            }
            drop(snapshot);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(if any { TICK } else { IDLE_TICK }) => {}
            }
            // Forget deployments that left the config.
            last_run.retain(|_, t| t.elapsed() < Duration::from_secs(2 * 86_400));
        }
    }
}
