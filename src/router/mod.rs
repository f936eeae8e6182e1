//! Routing state. A [`Snapshot`] is the immutable routing table built from one validated
//! [`Config`]: model groups, their deployments (each with its provider, endpoint and live state),
//! and the settings requests read. It is built off the hot path and swapped in whole behind an
//! `ArcSwap`; a request holds the snapshot it started with until it ends. Per-deployment live
//! state ([`DeploymentState`]) lives in a [`StateRegistry`] keyed by deployment id, so it
//! survives reloads that keep the deployment.
//!
//! Selection ([`ModelGroup::select`]) walks the group's priority tiers (`order`), keeps the
//! deployments that are not cooling down and have room under their limits, lets the routing
//! strategy rank them, and hands back an [`Admission`]: the slot on the chosen deployment,
//! released when dropped (so a cancelled request frees it at once).
//!
//! Wildcard groups (`openai/*`, `*`) serve model names the client chooses: [`Snapshot::resolve`]
//! derives a group per concrete name from the configured (template) deployments. A derived
//! deployment shares its template's provider, endpoint and metric labels (nothing is built, read
//! or looked up per name; the provider takes the model per request) and has its own live state,
//! kept in a bounded LRU so limits and cooldowns apply while the name is in use.

pub mod clock;
pub mod cooldown;
pub mod filter;
pub mod health;
pub mod limits;
pub mod rng;
pub mod state;
pub mod strategy;

pub use cooldown::CooldownPolicy;
pub use limits::{Limits, Refusal};
pub use state::{Availability, DeploymentState};

use crate::config::{Config, ConfigError, DeploymentConfig, RouterSettings, DEFAULT_TIMEOUT};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::{self, BuildContext, Provider};
use crate::upstream::{Endpoint, PeerSettings, UpstreamClient};
use lru::LruCache;
use std::any::Any;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use strategy::{Choice, WeightedTable};

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

    /// The state for `id` if it exists (no insertion).
    pub fn get(&self, id: &str) -> Option<Arc<DeploymentState>> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.get(id).cloned()
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
    /// Who answers: the provider built from `litellm_params` (the mock for `mock_response`).
    pub provider: Arc<dyn Provider>,
    /// Where the provider's requests go; `None` for one that answers in-process (the mock).
    pub endpoint: Option<Arc<Endpoint>>,
    pub state: Arc<DeploymentState>,
    /// Deadline for one attempt on this deployment (the request's own deadline still applies).
    pub timeout: Duration,
    /// Time to first byte and longest silence between stream chunks.
    pub stream_timeout: Duration,
    pub drop_params: bool,
    /// Selection weight for simple-shuffle.
    pub weight: f64,
    /// rpm / tpm / max_parallel_requests.
    pub limits: Limits,
    /// Priority tier (`order`); lower goes first, none goes last.
    pub order: u32,
    /// Active health check (`model_info.health_check`), for upstream deployments.
    pub health: Option<health::ActiveCheck>,
    /// How metrics label this deployment; a wildcard template's, for deployments derived from it.
    pub labels: Arc<MetricLabels>,
    /// Its prices, resolved when the snapshot is built; `None`: unpriced.
    pub price: Option<Arc<crate::cost::Price>>,
    /// Its tags and region, for tag and region routing ([`filter`]).
    pub placement: filter::Placement,
}

/// The label values metrics give a deployment, all from the config (never from a client), and
/// the metric handles resolved for them on first use. Shared by a wildcard template and every
/// deployment derived from it, so those count into the template's series.
pub struct MetricLabels {
    /// The configured group (`model_group`, and `requested_model` for its own requests); a
    /// wildcard group's pattern (`openai/*`).
    pub group: String,
    /// `litellm_params.model` as configured (`model`); a wildcard's keeps its `*`.
    pub model: String,
    /// `provider/model` as LiteLLM labels it (`litellm_model_name`).
    pub litellm_model_name: String,
    /// Handles the metrics module resolves once and keeps (typed there; opaque here so the
    /// router does not depend on the metrics module).
    pub handles: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Deployment {
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The context window in tokens, when known: `model_info.max_input_tokens`, else the
    /// price table's for the model (as LiteLLM's `get_router_model_info` merges them), else
    /// `model_info.max_tokens`.
    pub fn context_window(&self) -> Option<u64> {
        let mi = &self.config.model_info;
        mi.max_input_tokens
            .or_else(|| self.price.as_ref().and_then(|p| p.rates.max_input_tokens))
            .or(mi.max_tokens)
    }

    pub fn provider_name(&self) -> &str {
        self.provider.name()
    }

    pub fn api_base(&self) -> &str {
        self.provider.base_url()
    }
}

/// Deployments sharing a `model_name`.
pub struct ModelGroup {
    pub name: String,
    pub deployments: Vec<Arc<Deployment>>,
    /// Priority tiers, lowest `order` first.
    tiers: Vec<Tier>,
}

struct Tier {
    /// Indices into `deployments`.
    members: Vec<usize>,
    weighted: Option<WeightedTable>,
}

pub struct Snapshot {
    /// Increments on every successful (re)load.
    pub generation: u64,
    pub config: Config,
    groups: HashMap<String, Arc<ModelGroup>>,
    /// Group names in config order, for `/v1/models`.
    pub group_names: Vec<String>,
    /// Whole-request deadline, retries and fallbacks included.
    pub request_timeout: Duration,
    pub cooldown: CooldownPolicy,
    /// The configured credentials, redacted from upstream error text.
    pub secrets: crate::redact::Secrets,
    /// Wildcard group names (`openai/*`, `*`), longest first.
    wildcards: Vec<String>,
    /// Tag filtering is on and some deployment has `tag_regex`: requests' User-Agent is read.
    pub tag_regex_in_use: bool,
    /// Wildcard groups specialised to concrete models, by model, with their live state; the
    /// least recently used are forgotten past [`MAX_DERIVED_GROUPS`].
    derived: Mutex<LruCache<String, Arc<ModelGroup>>>,
}

/// Most wildcard specialisations kept per snapshot (clients choose the names). Past this the
/// least recently used name is forgotten, with its cooldown and limit counters.
pub const MAX_DERIVED_GROUPS: usize = 1024;

/// Longest model name whose wildcard specialisation is kept: longer ones (which only a hostile
/// client sends) are served but derived afresh per request, so the cache's memory stays
/// bounded by [`MAX_DERIVED_GROUPS`] times this.
pub const MAX_DERIVED_NAME_LEN: usize = 256;

/// Builds one deployment: provider, endpoint, deadlines, limits, health check.
fn build_deployment(
    dep: &DeploymentConfig,
    config: &Config,
    cx: &BuildContext,
    state: Arc<DeploymentState>,
) -> Result<Deployment, ConfigError> {
    let peer_settings = PeerSettings {
        connect_timeout: config.server.connect_timeout,
        idle_timeout: config.server.upstream_idle_timeout,
    };
    let provider = providers::build_provider(dep, cx)?;
    let endpoint = if provider.answers_in_process() {
        None
    } else {
        let endpoint = Endpoint::parse(provider.base_url(), peer_settings).map_err(|e| {
            ConfigError::new(
                format!("model_list[{}].litellm_params.api_base", dep.index),
                e,
            )
        })?;
        Some(Arc::new(endpoint))
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
    let health = match (&dep.model_info.health_check, &endpoint) {
        (Some(hc), Some(endpoint)) => Some(health::ActiveCheck::build(
            hc,
            endpoint.tls,
            &endpoint.authority,
            &endpoint.host,
        )),
        _ => None,
    };
    Ok(Deployment {
        config: dep.clone(),
        provider,
        endpoint,
        state,
        timeout,
        stream_timeout,
        drop_params: dep.params.drop_params.unwrap_or(config.litellm.drop_params),
        weight,
        limits: Limits {
            max_parallel: dep
                .params
                .max_parallel_requests
                .or(config.router.default_max_parallel_requests),
            rpm: dep.params.rpm,
            tpm: dep.params.tpm,
        },
        order: dep.params.order.unwrap_or(u32::MAX),
        health,
        labels: Arc::new(MetricLabels {
            group: dep.model_name.clone(),
            model: dep.model.clone(),
            litellm_model_name: format!("{}/{}", dep.provider, dep.model),
            handles: OnceLock::new(),
        }),
        price: crate::cost::Price::for_deployment(dep),
        placement: filter::Placement::of(dep),
    })
}

/// A wildcard template deployment specialised to `model` (`matched`: what the group's `*`
/// matched, which replaces the `*` of `litellm_params.model`). Shares the template's provider,
/// endpoint and metric labels; only the live state is its own. No I/O, nothing is parsed.
fn derive_deployment(template: &Deployment, model: &str, matched: &str) -> Deployment {
    let mut config = template.config.clone();
    config.model_name = model.to_string();
    config.model = config.model.replacen('*', matched, 1);
    // Priced as the concrete model it became (once per derived group, not per request).
    let price = crate::cost::Price::for_deployment(&config);
    Deployment {
        config,
        provider: template.provider.clone(),
        endpoint: template.endpoint.clone(),
        state: Arc::default(),
        timeout: template.timeout,
        stream_timeout: template.stream_timeout,
        drop_params: template.drop_params,
        weight: template.weight,
        limits: template.limits,
        order: template.order,
        // The template's endpoint is the one checked; derived names are not checked again.
        health: None,
        labels: template.labels.clone(),
        price,
        placement: template.placement.clone(),
    }
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
        let mut groups: HashMap<String, Arc<ModelGroup>> = HashMap::new();
        let mut building: HashMap<String, ModelGroup> = HashMap::new();
        let mut group_names = Vec::new();
        for dep in &config.deployments {
            let deployment = Arc::new(build_deployment(
                dep,
                &config,
                &cx,
                registry.state_for(&dep.id),
            )?);
            let group = building.entry(dep.model_name.clone()).or_insert_with(|| {
                group_names.push(dep.model_name.clone());
                ModelGroup {
                    name: dep.model_name.clone(),
                    deployments: Vec::new(),
                    tiers: Vec::new(),
                }
            });
            group.deployments.push(deployment);
        }
        for (name, mut group) in building {
            group.build_tiers();
            groups.insert(name, Arc::new(group));
        }
        // Wildcard groups, most specific (longest prefix) first.
        let mut wildcards: Vec<String> = group_names
            .iter()
            .filter(|n| n.ends_with('*'))
            .cloned()
            .collect();
        wildcards.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let ids: Vec<&str> = config.deployments.iter().map(|d| d.id.as_str()).collect();
        registry.retain(&ids);
        let request_timeout = config
            .router
            .timeout
            .or(config.litellm.request_timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let cooldown = CooldownPolicy::from_settings(&config.router);
        let secrets = crate::redact::Secrets::from_config(&config);
        let tag_regex_in_use = config.router.enable_tag_filtering
            && config
                .deployments
                .iter()
                .any(|d| !d.params.tag_regex.is_empty());
        Ok(Snapshot {
            tag_regex_in_use,
            generation,
            config,
            groups,
            group_names,
            request_timeout,
            cooldown,
            secrets,
            wildcards,
            derived: Mutex::new(LruCache::new(
                NonZeroUsize::new(MAX_DERIVED_GROUPS).expect("nonzero"),
            )),
        })
    }

    /// Every deployment, group by group.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.groups.values().flat_map(|g| g.deployments.iter())
    }

    /// The configured group a client's `model` names: a group, or a `model_group_alias` of one.
    pub fn group(&self, model: &str) -> Option<&ModelGroup> {
        self.exact(model).map(|g| &**g)
    }

    fn exact(&self, model: &str) -> Option<&Arc<ModelGroup>> {
        self.groups.get(model).or_else(|| {
            self.config
                .router
                .model_group_alias
                .get(model)
                .and_then(|g| self.groups.get(g))
        })
    }

    /// Whether some group serves `model` (exact, alias or wildcard), without building anything.
    pub fn serves(&self, model: &str) -> bool {
        self.exact(model).is_some() || self.wildcard_for(model).is_some()
    }

    /// The group serving `model`: a configured group or alias, else the most specific wildcard
    /// group (`openai/*`, `*`) whose pattern matches, specialised to the concrete model (the
    /// `*` of `litellm_params.model` becomes what the client's `*` matched, as LiteLLM does).
    /// Specialised groups are kept, with their own live state, in an LRU of
    /// [`MAX_DERIVED_GROUPS`] names per snapshot. Never does I/O.
    pub fn resolve(&self, model: &str) -> Option<Arc<ModelGroup>> {
        if let Some(g) = self.exact(model) {
            return Some(g.clone());
        }
        let pattern = self.wildcard_for(model)?;
        if let Some(g) = self.lock_derived().get(model) {
            return Some(g.clone());
        }
        let matched = &model[pattern.len() - 1..];
        let template = self.groups.get(pattern)?;
        let mut group = ModelGroup {
            name: template.name.clone(),
            deployments: template
                .deployments
                .iter()
                .map(|d| Arc::new(derive_deployment(d, model, matched)))
                .collect(),
            tiers: Vec::new(),
        };
        group.build_tiers();
        let group = Arc::new(group);
        if model.len() > MAX_DERIVED_NAME_LEN {
            return Some(group);
        }
        // Another request may have derived the same name meanwhile: all share the first one.
        let mut derived = self.lock_derived();
        Some(derived.get_or_insert(model.to_string(), || group).clone())
    }

    /// The most specific wildcard pattern matching `model`.
    fn wildcard_for(&self, model: &str) -> Option<&str> {
        self.wildcards
            .iter()
            .find(|p| model.starts_with(&p[..p.len() - 1]))
            .map(String::as_str)
    }

    fn lock_derived(&self) -> std::sync::MutexGuard<'_, LruCache<String, Arc<ModelGroup>>> {
        self.derived.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wildcard specialisations kept now (at most [`MAX_DERIVED_GROUPS`]).
    pub fn derived_count(&self) -> usize {
        self.lock_derived().len()
    }

    /// The `requested_model` label for a client's `model`: the name itself when it is a
    /// configured group or alias, the wildcard pattern that serves it (`openai/*`), else
    /// `None` (served by nothing). Never a value only a client chose.
    pub fn metric_label<'a>(&'a self, model: &'a str) -> Option<&'a str> {
        if self.exact(model).is_some() {
            return Some(model);
        }
        self.wildcard_for(model)
    }

    /// Fallback groups for `group` after an error of `kind`: context-window and content-policy
    /// errors use their own lists; other deployment-side failures use `fallbacks` (else
    /// `default_fallbacks`); a plain bad request falls back nowhere (every group would refuse
    /// it the same way). At most `max_fallbacks`.
    pub fn fallbacks_for(&self, group: &str, kind: ErrorKind) -> &[String] {
        let r = &self.config.router;
        let list: &[String] = match kind {
            ErrorKind::ContextLengthExceeded => r
                .context_window_fallbacks
                .get(group)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            ErrorKind::ContentPolicy => r
                .content_policy_fallbacks
                .get(group)
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            ErrorKind::BadRequest
            | ErrorKind::MethodNotAllowed
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Unprocessable => &[],
            _ => r
                .fallbacks
                .get(group)
                .map(Vec::as_slice)
                .unwrap_or(&r.default_fallbacks),
        };
        &list[..list.len().min(r.max_fallbacks)]
    }
}

/// A slot on a deployment for one attempt. Dropping it frees the slot (and gives up a
/// half-open probe without a verdict), so a cancelled request never leaks counters.
pub struct Admission {
    pub deployment: Arc<Deployment>,
    /// The deployment's index in its group (to avoid it on retries).
    pub index: usize,
    /// This attempt is the half-open probe after a cooldown.
    pub probe: bool,
    group_size: usize,
    verdict: bool,
}

impl Admission {
    /// The attempt succeeded: latency feeds latency-based routing, tokens the tpm window.
    pub fn succeeded(
        mut self,
        now: Instant,
        latency: Duration,
        ttft: Option<Duration>,
        tokens: u64,
    ) {
        let s = &self.deployment.state;
        s.record_success(now, latency, ttft);
        if tokens > 0 {
            s.record_tokens(now, tokens);
        }
        // Only once recorded: should recording panic, `Drop` still gives the probe up.
        self.verdict = true;
    }

    /// The attempt failed; applies the cooldown rules. Returns the cooldown entered, if any.
    pub fn failed(
        mut self,
        now: Instant,
        err: &GatewayError,
        policy: &CooldownPolicy,
    ) -> Option<Duration> {
        let cooled = policy.on_failure(
            &self.deployment.state,
            now,
            err,
            self.probe,
            self.group_size,
        );
        // Only once recorded: should recording panic, `Drop` still gives the probe up.
        self.verdict = true;
        if let Some(for_) = cooled {
            crate::shared_state::cooldowns::publish(self.deployment.id(), for_);
        }
        cooled
    }
}

impl Drop for Admission {
    /// Runs on every path, unwinding from a panic included: the slot is given back, and a
    /// probe that reached no verdict is released so the next request can probe.
    fn drop(&mut self) {
        self.deployment.state.leave();
        if self.probe && !self.verdict {
            self.deployment.state.release_probe();
        }
    }
}

/// A claimed half-open probe between the claim and its [`Admission`]: released on drop unless
/// [`ProbeClaim::hand_over`] passed it on, so no path out of selection can leak it.
struct ProbeClaim<'a>(Option<&'a DeploymentState>);

impl<'a> ProbeClaim<'a> {
    fn claim(state: &'a DeploymentState) -> Option<Self> {
        state.claim_probe().then_some(ProbeClaim(Some(state)))
    }

    /// The admission owns the probe now.
    fn hand_over(mut self) {
        self.0 = None;
    }
}

impl Drop for ProbeClaim<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0 {
            state.release_probe();
        }
    }
}

/// No deployment of a group could take the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unavailable {
    /// Earliest end of a cooldown among cooling deployments.
    pub earliest_recovery: Option<Instant>,
    /// Shortest wait for a deployment at its limits.
    pub limited_for: Option<Duration>,
}

impl Unavailable {
    /// Every deployment was cooling down (none was merely at its limits).
    pub fn all_cooling(&self) -> bool {
        self.limited_for.is_none() && self.earliest_recovery.is_some()
    }

    /// When to try again.
    pub fn retry_in(&self, now: Instant) -> Duration {
        let cool = self
            .earliest_recovery
            .map(|t| t.saturating_duration_since(now));
        match (cool, self.limited_for) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => Duration::from_secs(1),
        }
    }

    pub fn merge(&mut self, other: Unavailable) {
        self.earliest_recovery = match (self.earliest_recovery, other.earliest_recovery) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.limited_for = match (self.limited_for, other.limited_for) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The client-visible error: 503 when everything is cooling down, 429 when deployments
    /// are at their limits; Retry-After is the earliest moment one can take a request.
    pub fn to_error(&self, group: &str, now: Instant) -> GatewayError {
        let secs = self.retry_in(now).as_secs_f64().ceil().max(1.0) as u64;
        if self.all_cooling() {
            GatewayError::new(
                ErrorKind::Unavailable,
                format!(
                    "All deployments for selected model are in cooldown ('{group}' and any fallbacks failed recently); the first recovers in {secs}s."
                ),
            )
            .with_code("no_deployments_available")
            .with_retry_after(Some(secs))
        } else {
            GatewayError::new(
                ErrorKind::RateLimited,
                format!(
                    "Every deployment of '{group}' is at its rpm/tpm/max_parallel_requests limit; retry in {secs}s."
                ),
            )
            .with_code("rate_limit_exceeded")
            .with_retry_after(Some(secs))
        }
    }
}

impl ModelGroup {
    fn build_tiers(&mut self) {
        let mut orders: Vec<u32> = self.deployments.iter().map(|d| d.order).collect();
        orders.sort_unstable();
        orders.dedup();
        self.tiers = orders
            .into_iter()
            .map(|o| {
                let members: Vec<usize> = (0..self.deployments.len())
                    .filter(|&i| self.deployments[i].order == o)
                    .collect();
                let weighted = WeightedTable::build(&self.deployments, &members);
                Tier { members, weighted }
            })
            .collect();
    }

    /// Deployments (indices) whose context window is smaller than a prompt of
    /// `prompt_tokens`: `router_settings.enable_pre_call_checks` skips them, as LiteLLM's
    /// `_pre_call_checks` does (see [`Deployment::context_window`]); a deployment whose window
    /// is unknown is never skipped.
    pub fn too_small_for(&self, prompt_tokens: u64) -> Vec<usize> {
        self.deployments
            .iter()
            .enumerate()
            .filter(|(_, d)| d.context_window().is_some_and(|w| w < prompt_tokens))
            .map(|(i, _)| i)
            .collect()
    }

    /// The error when every deployment is [`ModelGroup::too_small_for`] the prompt (LiteLLM's
    /// `ContextWindowExceededError`: a 400 that `context_window_fallbacks` act on).
    pub fn context_window_exceeded(&self, prompt_tokens: u64) -> GatewayError {
        let largest = self
            .deployments
            .iter()
            .filter_map(|d| d.context_window())
            .max()
            .unwrap_or(0);
        GatewayError::new(
            ErrorKind::ContextLengthExceeded,
            format!(
                "The prompt (about {prompt_tokens} tokens) does not fit the context window of any deployment of '{}' (the largest is {largest} tokens; router_settings.enable_pre_call_checks). Shorten the messages, or use a model with a larger context window.",
                self.name
            ),
        )
        .with_param("messages")
        .with_code("context_length_exceeded")
    }

    /// Picks a deployment for one attempt and takes a slot on it. Deployments in `tried` are
    /// avoided while any other can take the request. Tiers are tried in `order`; inside a tier
    /// the routing strategy ranks the deployments that are available and under their limits.
    pub fn select(
        &self,
        now: Instant,
        stream: bool,
        tried: &[usize],
        router: &RouterSettings,
    ) -> Result<Admission, Unavailable> {
        self.select_excluding(now, stream, tried, &[], router)
    }

    /// [`ModelGroup::select`], never picking the deployments in `excluded` (those too small
    /// for the prompt).
    pub fn select_excluding(
        &self,
        now: Instant,
        stream: bool,
        tried: &[usize],
        excluded: &[usize],
        router: &RouterSettings,
    ) -> Result<Admission, Unavailable> {
        let mut unavailable = Unavailable::default();
        // On the stack for any group of up to 16 deployments in a tier.
        let mut candidates: smallvec::SmallVec<[usize; 16]> = smallvec::SmallVec::new();
        for allow_tried in [false, true] {
            if allow_tried && tried.is_empty() {
                break;
            }
            for tier in &self.tiers {
                candidates.clear();
                for &i in &tier.members {
                    if (!allow_tried && tried.contains(&i)) || excluded.contains(&i) {
                        continue;
                    }
                    let state = &self.deployments[i].state;
                    if !state.is_healthy() {
                        // Looked at again after its next check.
                        let next_check = self.deployments[i]
                            .health
                            .as_ref()
                            .map(|h| h.config.interval)
                            .unwrap_or(Duration::from_secs(1));
                        unavailable.merge(Unavailable {
                            earliest_recovery: Some(clock::later(now, next_check)),
                            limited_for: None,
                        });
                        continue;
                    }
                    match state.availability(now) {
                        Availability::Cooling(until) => unavailable.merge(Unavailable {
                            earliest_recovery: Some(until),
                            limited_for: None,
                        }),
                        _ => candidates.push(i),
                    }
                }
                let choice = Choice {
                    strategy: router.routing_strategy,
                    stream,
                    latency_buffer: router.lowest_latency_buffer,
                    weighted: tier.weighted.as_ref(),
                };
                while !candidates.is_empty() {
                    let pos = choice.pick(&self.deployments, &candidates);
                    let i = candidates.swap_remove(pos);
                    let d = &self.deployments[i];
                    let probe = match d.state.availability(now) {
                        Availability::Ready => None,
                        Availability::Probe => match ProbeClaim::claim(&d.state) {
                            Some(claim) => Some(claim),
                            None => continue,
                        },
                        Availability::Cooling(until) => {
                            unavailable.merge(Unavailable {
                                earliest_recovery: Some(until),
                                limited_for: None,
                            });
                            continue;
                        }
                    };
                    match d.state.try_admit(now, &d.limits) {
                        Ok(()) => {
                            let admission = Admission {
                                deployment: d.clone(),
                                index: i,
                                probe: probe.is_some(),
                                group_size: self.deployments.len(),
                                verdict: false,
                            };
                            if let Some(claim) = probe {
                                claim.hand_over();
                            }
                            return Ok(admission);
                        }
                        Err(refusal) => {
                            // Dropping the claim releases the probe.
                            drop(probe);
                            unavailable.merge(Unavailable {
                                earliest_recovery: None,
                                limited_for: Some(refusal.retry_in()),
                            });
                        }
                    }
                }
            }
        }
        Err(unavailable)
    }

    pub fn in_flight(&self) -> u64 {
        self.deployments.iter().map(|d| d.state.in_flight()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(yaml: &str) -> Snapshot {
        let config = crate::config::litellm::parse(yaml).unwrap();
        let client = Arc::new(UpstreamClient::new(4));
        Snapshot::build(config, 1, &client, &StateRegistry::default()).unwrap()
    }

    #[test]
    fn context_windows_from_model_info_then_the_price_table() {
        let s = snapshot(
            r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/gpt-4o, api_key: k}
  - model_name: g
    litellm_params: {model: openai/gpt-4o, api_key: k}
    model_info: {max_input_tokens: 1000, max_tokens: 5}
  - model_name: g
    litellm_params: {model: openai/my-finetune, api_key: k}
    model_info: {max_tokens: 2000}
  - model_name: g
    litellm_params: {model: openai/my-finetune, api_key: k, api_base: "http://h/v1"}
"#,
        );
        let g = s.group("g").unwrap();
        let windows: Vec<Option<u64>> = g.deployments.iter().map(|d| d.context_window()).collect();
        assert_eq!(windows, [Some(128_000), Some(1000), Some(2000), None]);
        assert_eq!(g.too_small_for(1500), [1]);
        assert_eq!(g.too_small_for(100_000), [1, 2]);
        assert!(g.too_small_for(10).is_empty());
        let e = g.context_window_exceeded(200_000);
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("context_length_exceeded"))
        );
    }

    #[test]
    fn selection_honours_tiers_cooldown_probe_and_limits() {
        let s = snapshot(
            r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/a, mock_response: a, order: 1, rpm: 1}, model_info: {id: a}}
  - {model_name: g, litellm_params: {model: openai/b, mock_response: b, order: 2}, model_info: {id: b}}
router_settings: {cooldown_time: 2}
"#,
        );
        let g = s.group("g").unwrap();
        let now = Instant::now();
        let r = &s.config.router;
        // Tier 1 first.
        let a = g.select(now, false, &[], r).unwrap();
        assert_eq!(a.deployment.id(), "a");
        let a_index = a.index;
        drop(a);
        // `a` used its rpm: tier 2 takes over.
        let b = g.select(now, false, &[], r).unwrap();
        assert_eq!(b.deployment.id(), "b");
        // `b` cools down (a 401 cools at once); `a` is at its limit: 429 with Retry-After.
        let err = GatewayError::from_upstream(401, "bad key");
        assert!(b.failed(now, &err, &s.cooldown).is_some());
        let u = g.select(now, false, &[], r).err().unwrap();
        assert!(!u.all_cooling());
        assert_eq!(u.to_error("g", now).status, 429);
        assert_eq!(
            g.deployments[1].state.cooldown_remaining(now),
            Some(Duration::from_secs(2))
        );
        // After the cooldown one request probes `b`; a second one finds nothing.
        let later = now + Duration::from_millis(2001);
        let probe = g.select(later, false, &[a_index], r).unwrap();
        assert!(probe.probe && probe.deployment.id() == "b");
        assert!(g.select(later, false, &[a_index], r).is_err());
        probe.succeeded(later, Duration::from_millis(5), None, 10);
        let again = g.select(later, false, &[a_index], r).unwrap();
        assert!(!again.probe);
        assert_eq!(g.in_flight(), 1);
        drop(again);
        assert_eq!(g.in_flight(), 0);
    }

    #[test]
    fn probes_are_released_on_every_path_and_endless_retry_after_is_bounded() {
        let s = snapshot(
            r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/a, mock_response: a}, model_info: {id: a}}
  - {model_name: g, litellm_params: {model: openai/b, mock_response: b}, model_info: {id: b}}
router_settings: {cooldown_time: 1}
"#,
        );
        let g = s.group("g").unwrap();
        let r = &s.config.router;
        let now = Instant::now();
        let b_state = &g.deployments[1].state;
        let b = g.select(now, false, &[0], r).unwrap();
        assert_eq!(b.deployment.id(), "b");
        b.failed(now, &GatewayError::from_upstream(401, "x"), &s.cooldown);
        let t = now + Duration::from_millis(1001);
        // A panic anywhere while the probe runs (unwinding drops the admission) releases it.
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let probe = g.select(t, false, &[0], r).unwrap();
            assert!(probe.probe);
            panic!("the attempt panicked");
        }));
        assert!(unwound.is_err());
        assert_eq!(b_state.availability(t), Availability::Probe);
        assert_eq!(g.in_flight(), 0);
        // The probe meets `Retry-After: inf` (u64::MAX after parsing, from any source): the
        // verdict is recorded without panicking and the cooldown is bounded.
        let probe = g.select(t, false, &[0], r).unwrap();
        assert!(probe.probe);
        let endless = GatewayError::from_upstream(429, "x").with_retry_after(Some(u64::MAX));
        assert!(probe.failed(t, &endless, &s.cooldown).is_some());
        let left = b_state.cooldown_remaining(t).unwrap();
        assert!(left <= Duration::from_secs(crate::providers::MAX_RETRY_AFTER_SECS));
        // ...and it comes back.
        let back = t + left + Duration::from_millis(1);
        let probe = g.select(back, false, &[0], r).unwrap();
        assert!(probe.probe && probe.deployment.id() == "b");
        // A probe refused by a limit is released too (see `select`), as is one dropped
        // without a verdict (a client hang-up).
        drop(probe);
        assert_eq!(b_state.availability(back), Availability::Probe);
    }

    #[test]
    fn fallbacks_by_error_kind_and_aliases() {
        let s = snapshot(
            r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/a, mock_response: a}}
  - {model_name: b, litellm_params: {model: openai/b, mock_response: b}}
  - {model_name: c, litellm_params: {model: openai/c, mock_response: c}}
router_settings:
  fallbacks: [{a: [b, c]}]
  context_window_fallbacks: [{a: [c]}]
  default_fallbacks: [c]
  max_fallbacks: 1
  model_group_alias: {alias: a}
"#,
        );
        assert_eq!(s.fallbacks_for("a", ErrorKind::RateLimited), ["b"]);
        assert_eq!(
            s.fallbacks_for("a", ErrorKind::ContextLengthExceeded),
            ["c"]
        );
        assert!(s.fallbacks_for("a", ErrorKind::ContentPolicy).is_empty());
        assert!(s.fallbacks_for("a", ErrorKind::BadRequest).is_empty());
        assert_eq!(s.fallbacks_for("b", ErrorKind::Internal), ["c"]);
        assert_eq!(s.group("alias").unwrap().name, "a");
        assert!(s.resolve("nope").is_none());
    }

    fn upstream(group: &Arc<ModelGroup>) -> (&Arc<dyn Provider>, &Arc<Endpoint>) {
        let d = &group.deployments[0];
        (
            &d.provider,
            d.endpoint.as_ref().expect("an upstream deployment"),
        )
    }

    const WILDCARD: &str = r#"
model_list:
  - {model_name: "openai/*", litellm_params: {model: "openai/*", api_base: "http://127.0.0.1:9/v1", api_key: k, rpm: 1}, model_info: {id: w}}
router_settings: {cooldown_time: 30}
"#;

    /// Many names through `openai/*` share the template's provider and endpoint (nothing is
    /// built per name) and carry their own model; their metric labels stay the template's.
    #[test]
    fn wildcard_names_share_the_templates_provider_and_endpoint() {
        let s = snapshot(WILDCARD);
        let template = s.group("openai/*").unwrap().deployments[0].clone();
        let (provider, endpoint) = (&template.provider, template.endpoint.as_ref().unwrap());
        for i in 0..200 {
            let name = format!("openai/model-{i}");
            let g = s.resolve(&name).unwrap();
            let (p, e) = upstream(&g);
            assert!(
                Arc::ptr_eq(p, provider) && Arc::ptr_eq(e, endpoint),
                "{name}"
            );
            let d = &g.deployments[0];
            assert_eq!(d.config.model, format!("model-{i}"));
            assert_eq!(d.config.model_name, name);
            assert_eq!(g.name, "openai/*");
            assert!(Arc::ptr_eq(&d.labels, &template.labels));
            assert_eq!(d.labels.litellm_model_name, "openai/*");
            assert_eq!(s.metric_label(&name), Some("openai/*"));
        }
        assert_eq!(s.derived_count(), 200);
        assert_eq!(s.metric_label("other/x"), None);
    }

    /// The derived-group cache is bounded: past the cap the least recently used name goes
    /// (and comes back with fresh state), a recently used one stays.
    #[test]
    fn derived_groups_are_an_lru_of_bounded_size() {
        let s = snapshot(WILDCARD);
        let first = s.resolve("openai/first").unwrap();
        for i in 0..MAX_DERIVED_GROUPS + 500 {
            s.resolve(&format!("openai/m{i}")).unwrap();
            if i % 100 == 0 {
                // Keeps `first` recently used.
                assert!(Arc::ptr_eq(&s.resolve("openai/first").unwrap(), &first));
            }
        }
        assert_eq!(s.derived_count(), MAX_DERIVED_GROUPS);
        assert!(Arc::ptr_eq(&s.resolve("openai/first").unwrap(), &first));
        // An absurdly long name is served, not kept.
        let long = format!("openai/{}", "x".repeat(MAX_DERIVED_NAME_LEN));
        let once = s.resolve(&long).unwrap();
        assert!(!Arc::ptr_eq(&s.resolve(&long).unwrap(), &once));
        assert!(Arc::ptr_eq(&s.resolve("openai/first").unwrap(), &first));
        let evicted = s.resolve("openai/m0").unwrap();
        assert_eq!(evicted.deployments[0].state.requests_total(), 0);
        assert_eq!(s.derived_count(), MAX_DERIVED_GROUPS);
    }

    /// A derived name keeps its live state between requests: its rpm limit and its cooldown
    /// hold for the next request of the same name, and not for another name.
    #[test]
    fn limits_and_cooldown_hold_across_requests_for_a_derived_name() {
        let s = snapshot(WILDCARD);
        let r = &s.config.router;
        let now = Instant::now();
        let a = s
            .resolve("openai/a")
            .unwrap()
            .select(now, false, &[], r)
            .unwrap();
        drop(a);
        // rpm: 1 is used up for this name...
        let u = s
            .resolve("openai/a")
            .unwrap()
            .select(now, false, &[], r)
            .err()
            .unwrap();
        assert_eq!(u.to_error("openai/*", now).status, 429);
        // ...but not for another.
        assert!(s
            .resolve("openai/b")
            .unwrap()
            .select(now, false, &[], r)
            .is_ok());

        // Cooldown (a one-deployment group never cools down, as in LiteLLM: two here).
        let s = snapshot(&WILDCARD.replace(
            "model_list:\n",
            "model_list:\n  - {model_name: \"openai/*\", litellm_params: {model: \"openai/*\", api_base: \"http://127.0.0.1:9/v1\"}, model_info: {id: w2}}\n",
        ));
        let r = &s.config.router;
        let err = GatewayError::from_upstream(401, "bad key");
        for tried in [vec![], vec![0, 1]] {
            let b = s.resolve("openai/b").unwrap();
            let a = b.select(now, false, &tried, r).unwrap();
            assert!(a.failed(now, &err, &s.cooldown).is_some());
        }
        let later = now + Duration::from_secs(1);
        let u = s
            .resolve("openai/b")
            .unwrap()
            .select(later, false, &[], r)
            .err()
            .unwrap();
        assert!(u.all_cooling(), "{u:?}");
        assert!(s
            .resolve("openai/c")
            .unwrap()
            .select(later, false, &[], r)
            .is_ok());
    }
}
