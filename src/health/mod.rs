//! LiteLLM's model health checks (`GET /health`): every deployment (or one group's, with
//! `?model=`) is called once with the smallest request of its mode (chat: a one-token
//! completion; embedding: one short input), through its own provider, so a check proves what a
//! request would: credentials, translation, the upstream answering. Checks run concurrently
//! (at most [`MAX_CONCURRENT_CHECKS`] at once), each bounded by LiteLLM's
//! `model_info.health_check_timeout` (else its deployment's timeout) and [`MAX_CHECK_TIME`],
//! and the whole run by [`RUN_DEADLINE`] however many deployments there are: a check still
//! running then is reported as timed out, one not started as not checked. LiteLLM has no
//! setting for the run as a whole, so this is a documented default, not a knob. The answer is
//! LiteLLM's shape (`healthy_endpoints`,
//! `unhealthy_endpoints`, counts) with the model, `api_base` and (redacted) error text only:
//! no credentials.
//!
//! With `general_settings.background_health_checks` the checks run every
//! `health_check_interval` in the background ([`BackgroundChecks`]); `/health` then serves the
//! last result, and routing skips the deployments it found failing, through the same
//! per-deployment verdict the active checks of `router::health` set.

use crate::config::DeploymentConfig;
use crate::error::{GatewayError, GatewayResult};
use crate::openai::RequestBody;
use crate::providers::{Operation, Outbound, RequestContext};
use crate::router::{Deployment, Snapshot};
use crate::upstream::UpstreamClient;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Checks in flight at once (one upstream connection each).
pub const MAX_CONCURRENT_CHECKS: usize = 64;
/// Longest a single check may take, whatever the deployment's timeout (LiteLLM's
/// `HEALTH_CHECK_TIMEOUT_SECONDS`).
pub const MAX_CHECK_TIME: Duration = Duration::from_secs(60);
/// Longest a whole run (every deployment, or one group's) may take: one check's bound, as
/// the checks run side by side.
pub const RUN_DEADLINE: Duration = MAX_CHECK_TIME;
/// Largest answer body a check reads.
const MAX_CHECK_BODY: usize = 1024 * 1024;

/// One deployment's check result.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub deployment_id: String,
    pub endpoint: Value,
    pub error: Option<String>,
}

/// One run over the deployments: what `/health` answers.
#[derive(Debug, Clone)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Unix seconds the run finished.
    pub checked_at: u64,
}

impl Report {
    /// LiteLLM's `/health` body; with `model`, only that group's endpoints.
    pub fn to_json(&self, model: Option<&str>) -> Value {
        let mut healthy = Vec::new();
        let mut unhealthy = Vec::new();
        for o in &self.outcomes {
            if model.is_some_and(|m| o.endpoint["model_name"] != m) {
                continue;
            }
            match &o.error {
                None => healthy.push(o.endpoint.clone()),
                Some(e) => {
                    let mut ep = o.endpoint.clone();
                    ep["error"] = Value::String(e.clone());
                    unhealthy.push(ep);
                }
            }
        }
        json!({
            "healthy_endpoints": healthy,
            "unhealthy_endpoints": unhealthy,
            "healthy_count": healthy.len(),
            "unhealthy_count": unhealthy.len(),
            "checked_at": self.checked_at,
        })
    }
}

/// The last background run, shared by the background service and `/health`.
#[derive(Default)]
pub struct ModelHealth {
    pub last: ArcSwapOption<Report>,
}

/// What `/health` shows of a deployment: where it is, never how it authenticates.
fn endpoint(d: &DeploymentConfig, provider_base: &str) -> Value {
    let api_base = match &d.params.api_base {
        Some(b) => crate::gateway::model_info::public_url(b),
        None => provider_base.to_string(),
    };
    let mut ep = json!({
        "model": format!("{}/{}", d.provider, d.model),
        "model_name": d.model_name,
        "model_id": d.id,
    });
    if !api_base.is_empty() {
        ep["api_base"] = Value::String(api_base.to_string());
    }
    ep
}

/// The mode a deployment is checked in: `model_info.mode` `embedding` checks embeddings,
/// everything else chat.
fn operation(d: &DeploymentConfig) -> Operation {
    match d.model_info.mode.as_deref() {
        Some("embedding") => Operation::Embeddings,
        _ => Operation::Chat,
    }
}

/// The model a check calls: `model_info.health_check_model` (without its provider prefix),
/// else the deployment's own (a wildcard's `*` cannot be called as such).
fn check_model(d: &DeploymentConfig) -> &str {
    match d
        .model_info
        .metadata
        .get("health_check_model")
        .and_then(Value::as_str)
    {
        Some(m) => m
            .strip_prefix(d.provider.as_str())
            .and_then(|m| m.strip_prefix('/'))
            .unwrap_or(m),
        None => &d.model,
    }
}

/// How long `d`'s check may take: LiteLLM's `model_info.health_check_timeout` (seconds),
/// else the deployment's timeout; never over [`MAX_CHECK_TIME`].
fn check_timeout(d: &Deployment) -> Duration {
    d.config
        .model_info
        .metadata
        .get("health_check_timeout")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(d.timeout, |s| {
            Duration::from_secs_f64(s.min(MAX_CHECK_TIME.as_secs_f64()))
        })
        .min(MAX_CHECK_TIME)
}

/// Calls `d` once with the smallest request of its mode, giving up at its own timeout or at
/// `run_deadline`, whichever comes first. `Err` carries what went wrong.
pub async fn check(
    d: &Deployment,
    client: &UpstreamClient,
    run_deadline: Instant,
) -> GatewayResult<()> {
    let op = operation(&d.config);
    let model = check_model(&d.config);
    let limit = check_timeout(d);
    let own_deadline = Instant::now() + limit;
    let deadline = own_deadline.min(run_deadline);
    let body = match op {
        Operation::Embeddings => json!({"model": model, "input": ["ping"]}),
        Operation::Chat => json!({
            "model": model,
            "messages": [{"role": "user", "content": "ping"}],
            "max_tokens": 1,
        }),
    }
    .to_string();
    let parsed = RequestBody::parse(body.as_bytes())?;
    let cx = RequestContext {
        op,
        model,
        stream: false,
        include_usage: false,
        response_id: "chatcmpl-health-check",
        created: crate::context::unix_now(),
        drop_params: true,
        embeddings_base64: false,
    };
    let provider = d.provider.as_ref();
    if !provider.supports(op) {
        return Err(GatewayError::invalid_param(
            "mode",
            format!("{} does not serve model_info.mode {op:?}", provider.name()),
        ));
    }
    let run = async {
        let mut call = crate::providers::Call::start(provider, &cx);
        match call.open(&parsed, &cx, client).await? {
            Outbound::Answered(_) => Ok(()),
            Outbound::Send(request) => {
                let endpoint = d.endpoint.as_ref().ok_or_else(|| {
                    GatewayError::internal("The deployment's provider has no upstream endpoint.")
                })?;
                let mut response = client.send(endpoint, &request, None).await?;
                let body = response.body(MAX_CHECK_BODY).await?;
                if !(200..300).contains(&response.status) {
                    return Err(call.map_error(response.status, &response.header, &body));
                }
                call.parse_response(body, &cx).map(|_| ())
            }
        }
    };
    match tokio::time::timeout_at(deadline.into(), run).await {
        Ok(r) => r,
        Err(_) if deadline < own_deadline => Err(GatewayError::timeout(
            "The health check did not complete before the whole run's deadline.",
        )),
        Err(_) => Err(GatewayError::timeout(format!(
            "The health check did not complete within {:.1}s.",
            limit.as_secs_f64()
        ))),
    }
}

/// Checks the deployments of `snapshot` (only group `model`'s, when given), concurrently and
/// within [`RUN_DEADLINE`]; error text is redacted of configured secrets.
pub async fn run(snapshot: &Snapshot, client: &UpstreamClient, model: Option<&str>) -> Report {
    let deadline = Instant::now() + RUN_DEADLINE;
    run_until(snapshot, client, model, deadline, MAX_CONCURRENT_CHECKS).await
}

/// [`run`] ending by `deadline`, `concurrency` checks at a time.
async fn run_until(
    snapshot: &Snapshot,
    client: &UpstreamClient,
    model: Option<&str>,
    deadline: Instant,
    concurrency: usize,
) -> Report {
    let mut deployments: Vec<Arc<Deployment>> = snapshot
        .deployments()
        .filter(|d| model.is_none_or(|m| d.config.model_name == m))
        .cloned()
        .collect();
    deployments.sort_by_key(|d| d.config.index);
    let outcomes = stream::iter(deployments)
        .map(|d: Arc<Deployment>| async move {
            let result = if Instant::now() < deadline {
                check(&d, client, deadline).await
            } else {
                Err(GatewayError::timeout(
                    "Not checked: the other checks took the whole run's deadline.",
                ))
            };
            Outcome {
                deployment_id: d.id().to_string(),
                endpoint: endpoint(&d.config, d.api_base()),
                error: result
                    .err()
                    .map(|e| snapshot.secrets.redact_error(e).message),
            }
        })
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    Report {
        outcomes,
        checked_at: crate::context::unix_now(),
    }
}

/// `GET /health[?model=group]`: the last background run when background checks are on, else
/// a run now. Master key only (or no key configured).
pub async fn answer(
    snapshot: &Snapshot,
    client: &UpstreamClient,
    health: &ModelHealth,
    principal: &crate::context::Principal,
    query: Option<&str>,
) -> GatewayResult<Value> {
    use crate::context::Principal;
    if !matches!(principal, Principal::MasterKey | Principal::Open) {
        return Err(GatewayError::new(
            crate::error::ErrorKind::Authentication,
            "Authentication Error, /health runs calls on every deployment: use the master key.",
        )
        .with_type("auth_error"));
    }
    let model = query
        .and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "model")
                .map(|(_, v)| v)
        })
        .filter(|m| !m.is_empty());
    if let Some(m) = model {
        if snapshot.group(m).is_none() {
            return Err(crate::gateway::exchange::model_not_found(m));
        }
    }
    // An alias names its group's deployments.
    let group = model
        .and_then(|m| snapshot.group(m))
        .map(|g| g.name.as_str());
    let report = if snapshot.config.general.health.background_health_checks {
        // As LiteLLM: the background result, empty until the first run ends.
        health.last.load_full().unwrap_or_else(|| {
            Arc::new(Report {
                outcomes: Vec::new(),
                checked_at: 0,
            })
        })
    } else {
        Arc::new(run(snapshot, client, group).await)
    };
    // A last guard: nothing configured as a secret leaves, whatever an upstream echoed.
    let text = report.to_json(group).to_string();
    Ok(serde_json::from_str(&snapshot.secrets.redact(&text)).unwrap_or(Value::Null))
}

/// Feeds a run's verdicts to routing: a failing deployment is skipped until a later run finds
/// it answering (the verdict the active checks of `router::health` also set).
pub fn apply(snapshot: &Snapshot, report: &Report) {
    for d in snapshot.deployments() {
        if let Some(o) = report.outcomes.iter().find(|o| o.deployment_id == d.id()) {
            let ok = o.error.is_none();
            if d.state.record_health(ok, 1, 1) {
                log::warn!(
                    "deployment {} ({}) is now {} (background health check){}",
                    d.id(),
                    d.config.model_name,
                    if ok { "healthy" } else { "unhealthy" },
                    o.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
        }
    }
}

/// `general_settings.background_health_checks`: runs the checks every
/// `health_check_interval` over the current snapshot, keeps the result for `/health`, and
/// feeds it to routing. Reads the settings every round, so a reload turns it on or off.
pub struct BackgroundChecks<F> {
    pub snapshot: F,
    pub client: Arc<UpstreamClient>,
    pub health: Arc<ModelHealth>,
}

#[async_trait]
impl<F> BackgroundService for BackgroundChecks<F>
where
    F: Fn() -> Arc<Snapshot> + Send + Sync + 'static,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut was_on = false;
        loop {
            let snapshot = (self.snapshot)();
            let settings = &snapshot.config.general.health;
            let wait = if settings.background_health_checks {
                let report = tokio::select! {
                    _ = shutdown.changed() => return,
                    r = run(&snapshot, &self.client, None) => r,
                };
                apply(&snapshot, &report);
                self.health.last.store(Some(Arc::new(report)));
                settings.health_check_interval
            } else {
                if was_on {
                    // Turned off by a reload: no verdict of ours holds a deployment out.
                    self.health.last.store(None);
                    for d in snapshot.deployments().filter(|d| d.health.is_none()) {
                        d.state.record_health(true, 1, 1);
                    }
                }
                Duration::from_secs(1)
            };
            was_on = settings.background_health_checks;
            drop(snapshot);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::StateRegistry;

    /// A run with one check at a time over three hanging deployments (1 s each) and a 1.5 s
    /// deadline: the first times out on its own bound, the second is cut by the deadline, the
    /// third is never started; the run ends at the deadline, not after three timeouts.
    #[tokio::test]
    async fn a_run_ends_by_its_deadline_however_many_checks_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let mut yaml = String::from("model_list:\n");
        for id in ["h0", "h1", "h2"] {
            yaml.push_str(&format!(
                "  - {{model_name: g, litellm_params: {{model: openai/m, api_base: \"http://{addr}/v1\", api_key: k}}, model_info: {{id: {id}, health_check_timeout: 1}}}}\n"
            ));
        }
        let config = crate::config::litellm::parse(&yaml).unwrap();
        let client = Arc::new(UpstreamClient::new(4));
        let snapshot = Snapshot::build(config, 1, &client, &StateRegistry::default()).unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(1500);
        let report = run_until(&snapshot, &client, None, deadline, 1).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_millis(2500),
            "{took:?}"
        );
        let errors: Vec<&str> = report
            .outcomes
            .iter()
            .map(|o| o.error.as_deref().unwrap_or("healthy"))
            .collect();
        assert!(errors[0].contains("within 1.0s"), "{errors:?}");
        assert!(errors[1].contains("whole run's deadline"), "{errors:?}");
        assert!(errors[2].starts_with("Not checked"), "{errors:?}");
    }
}
