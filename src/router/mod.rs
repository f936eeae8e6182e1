//! Routing state. A [`Snapshot`] is the immutable routing table built from one validated
//! [`Config`]: model groups, their deployments (each with its provider, endpoint and live state),
//! and the settings requests read. It is built off the hot path and swapped in whole behind an
//! `ArcSwap`; a request holds the snapshot it started with until it ends. Per-deployment live
//! state ([`DeploymentState`]) lives in a [`StateRegistry`] keyed by deployment id, so it
//! survives reloads that keep the deployment.

pub mod rng;

use crate::config::{Config, ConfigError, DeploymentConfig, DEFAULT_TIMEOUT};
use crate::providers::{self, mock::MockResponder, BuildContext, Provider};
use crate::upstream::{Endpoint, PeerSettings, UpstreamClient};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Live counters for one deployment, shared across snapshots.
#[derive(Default, Debug)]
pub struct DeploymentState {
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

/// Keeps [`DeploymentState`] by deployment id across snapshots.
#[derive(Default)]
pub struct StateRegistry {
    states: Mutex<HashMap<String, Arc<DeploymentState>>>,
}

impl StateRegistry {
    /// The state for `id`, created on first use. Called only while building a snapshot.
    pub fn state_for(&self, id: &str) -> Arc<DeploymentState> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.entry(id.to_string()).or_default().clone()
    }

    /// Forgets deployments no longer configured.
    pub fn retain(&self, ids: &[&str]) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.retain(|k, _| ids.contains(&k.as_str()));
    }
}

/// One routable deployment.
pub struct Deployment {
    pub config: DeploymentConfig,
    /// How the request is answered: by an upstream provider, or locally (`mock_response`).
    pub target: Target,
    pub state: Arc<DeploymentState>,
    /// Whole-request deadline.
    pub timeout: Duration,
    /// Time to first byte and longest silence between stream chunks.
    pub stream_timeout: Duration,
    pub drop_params: bool,
    /// Selection weight for simple-shuffle.
    pub weight: f64,
}

pub enum Target {
    Upstream {
        provider: Arc<dyn Provider>,
        endpoint: Arc<Endpoint>,
    },
    Mock(MockResponder),
}

impl Deployment {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    pub fn provider_name(&self) -> &str {
        match &self.target {
            Target::Upstream { provider, .. } => provider.name(),
            Target::Mock(_) => "mock",
        }
    }

    pub fn api_base(&self) -> &str {
        match &self.target {
            Target::Upstream { provider, .. } => provider.base_url(),
            Target::Mock(_) => "mock",
        }
    }
}

/// Deployments sharing a `model_name`.
pub struct ModelGroup {
    pub name: String,
    pub deployments: Vec<Arc<Deployment>>,
    total_weight: f64,
}

pub struct Snapshot {
    /// Increments on every successful (re)load.
    pub generation: u64,
    pub config: Config,
    groups: HashMap<String, ModelGroup>,
    /// Group names in config order, for `/v1/models`.
    pub group_names: Vec<String>,
}

impl Snapshot {
    /// Builds every deployment's provider and endpoint. Any invalid deployment fails the whole
    /// build (with its key path), so a bad reload changes nothing.
    pub fn build(
        config: Config,
        generation: u64,
        client: &Arc<UpstreamClient>,
        registry: &StateRegistry,
    ) -> Result<Snapshot, ConfigError> {
        let cx = BuildContext {
            client: client.clone(),
        };
        let peer_settings = PeerSettings {
            connect_timeout: config.server.connect_timeout,
            idle_timeout: config.server.upstream_idle_timeout,
        };
        let mut groups: HashMap<String, ModelGroup> = HashMap::new();
        let mut group_names = Vec::new();
        for dep in &config.deployments {
            let target = match &dep.params.mock_response {
                Some(text) => Target::Mock(MockResponder::new(text, &dep.model)),
                None => {
                    let provider = providers::build_provider(dep, &cx)?;
                    let endpoint =
                        Endpoint::parse(provider.base_url(), peer_settings).map_err(|e| {
                            ConfigError::new(
                                format!("model_list[{}].litellm_params.api_base", dep.index),
                                e,
                            )
                        })?;
                    Target::Upstream {
                        provider,
                        endpoint: Arc::new(endpoint),
                    }
                }
            };
            let timeout = dep
                .params
                .timeout
                .or(config.router.timeout)
                .or(config.litellm.request_timeout)
                .unwrap_or(DEFAULT_TIMEOUT);
            let stream_timeout = dep
                .params
                .stream_timeout
                .or(config.router.stream_timeout)
                .unwrap_or(timeout)
                .min(timeout);
            let weight = dep
                .params
                .weight
                .or(dep.params.rpm.map(|r| r as f64))
                .or(dep.params.tpm.map(|t| t as f64))
                .unwrap_or(1.0);
            let deployment = Arc::new(Deployment {
                config: dep.clone(),
                target,
                state: registry.state_for(&dep.id),
                timeout,
                stream_timeout,
                drop_params: dep.params.drop_params.unwrap_or(config.litellm.drop_params),
                weight,
            });
            let group = groups.entry(dep.model_name.clone()).or_insert_with(|| {
                group_names.push(dep.model_name.clone());
                ModelGroup {
                    name: dep.model_name.clone(),
                    deployments: Vec::new(),
                    total_weight: 0.0,
                }
            });
            group.total_weight += deployment.weight;
            group.deployments.push(deployment);
        }
        let ids: Vec<&str> = config.deployments.iter().map(|d| d.id.as_str()).collect();
        registry.retain(&ids);
        Ok(Snapshot {
            generation,
            config,
            groups,
            group_names,
        })
    }

    pub fn group(&self, model: &str) -> Option<&ModelGroup> {
        self.groups.get(model)
    }
}

impl ModelGroup {
    /// simple-shuffle: a weighted random pick (weight, else rpm, else tpm, else equal).
    pub fn pick(&self) -> &Arc<Deployment> {
        if self.deployments.len() == 1 || self.total_weight <= 0.0 {
            return &self.deployments[rng::below(self.deployments.len() as u64) as usize];
        }
        let mut point = rng::unit() * self.total_weight;
        for d in &self.deployments {
            if point < d.weight {
                return d;
            }
            point -= d.weight;
        }
        self.deployments.last().expect("groups are never empty")
    }

    pub fn in_flight(&self) -> u64 {
        self.deployments
            .iter()
            .map(|d| d.state.in_flight.load(Ordering::Relaxed))
            .sum()
    }
}
