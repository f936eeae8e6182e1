//! Prometheus metrics for `GET /metrics`. Names and label sets follow LiteLLM's Prometheus
//! integration (`litellm_*`), so its Grafana dashboards work unchanged; Switchboard's own series
//! are `switchboard_*`.
//!
//! Recording happens once per request, in Pingora's `logging` phase, from the finished
//! [`Context`](crate::context::Context): the hot path only fills that struct. Gauges that mirror live state (in-flight
//! requests, deployment state, config generation, upstream connection reuse) are read at scrape
//! time.
//!
//! Label cardinality is bounded: every label value comes from the config or a small fixed set,
//! never from a client. Model groups, deployment ids, api bases and provider names are
//! configured; a model served by a wildcard group is recorded under the group's pattern
//! (`openai/*`, in `requested_model`, `model` and `litellm_model_name` alike), and one served by
//! nothing as [`UNKNOWN_MODEL`]; statuses and exception classes come from small fixed sets.
//! LiteLLM's per-key/team/user labels are kept (so dashboard queries match) but are always
//! empty: there are no virtual keys yet.
//!
//! The common case, an answered request on its own group's deployment, costs atomics only: each
//! deployment's handles ([`DeploymentSeries`]) are resolved on its first request and kept with
//! its [`MetricLabels`] (shared across reloads that keep the labels, and by the deployments a
//! wildcard derives). Everything else (errors, aliases, fallbacks) looks its series up by label.

use crate::context::Context;
use crate::router::{Deployment, MetricLabels, Snapshot};
use crate::upstream::UpstreamClient;
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The `requested_model` value for a model name that is not a configured group.
pub const UNKNOWN_MODEL: &str = "__unknown__";

/// LiteLLM's latency buckets, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 120.0, 180.0,
    240.0, 300.0,
];

// LiteLLM's label sets (litellm/types/integrations/prometheus.py).
const PROXY_REQUEST_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "status_code",
];
const PROXY_FAILED_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "exception_status",
    "exception_class",
];
const TOTAL_LATENCY_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "model",
];
const API_LATENCY_LABELS: &[&str] = &[
    "model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "requested_model",
    "end_user",
    "user",
];
const OVERHEAD_LABELS: &[&str] = &[
    "model_group",
    "api_provider",
    "api_base",
    "litellm_model_name",
    "hashed_api_key",
    "api_key_alias",
];
const PER_TOKEN_LABELS: &[&str] = &[
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
];
const TOKEN_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
    "requested_model",
];
const SPEND_LABELS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
];
const DEPLOYMENT_LABELS: &[&str] = &["litellm_model_name", "model_id", "api_base", "api_provider"];
const COOLDOWN_LABELS: &[&str] = &[
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "exception_status",
];
const DEPLOYMENT_RESPONSE_LABELS: &[&str] = &[
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "requested_model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
];
const DEPLOYMENT_FAILURE_LABELS: &[&str] = &[
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "exception_status",
    "exception_class",
    "requested_model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
];
const FALLBACK_LABELS: &[&str] = &[
    "requested_model",
    "fallback_model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "exception_status",
    "exception_class",
];

/// Every series `/metrics` exposes.
pub struct Metrics {
    registry: Registry,
    // LiteLLM-compatible.
    pub proxy_requests: IntCounterVec,
    pub proxy_failed_requests: IntCounterVec,
    pub total_latency: HistogramVec,
    pub api_latency: HistogramVec,
    pub time_to_first_token: HistogramVec,
    pub overhead_latency: HistogramVec,
    pub latency_per_output_token: HistogramVec,
    pub input_tokens: IntCounterVec,
    pub output_tokens: IntCounterVec,
    pub total_tokens: IntCounterVec,
    /// Registered for dashboards; recorded once costs exist.
    pub spend: prometheus::CounterVec,
    pub deployment_state: IntGaugeVec,
    /// Recorded when the router puts a deployment into cooldown.
    pub deployment_cooled_down: IntCounterVec,
    pub deployment_success: IntCounterVec,
    pub deployment_failure: IntCounterVec,
    pub deployment_total: IntCounterVec,
    pub fallbacks_ok: IntCounterVec,
    pub fallbacks_failed: IntCounterVec,
    // Switchboard's own.
    pub in_flight: IntGauge,
    pub deployment_in_flight: IntGaugeVec,
    pub retries: IntCounterVec,
    pub reloads: IntCounterVec,
    pub config_generation: IntGauge,
    pub upstream_connections: IntCounterVec,
    pub access_log_dropped: IntCounter,
    /// Streams cut for an upstream event over `max_stream_event_bytes`, by framing.
    pub stream_event_too_large: IntCounterVec,
    /// Response cache events by cache type and call type (chat, embeddings): hit, miss, store;
    /// eviction, error, dropped (write queue full) with an empty call type; mirrored from
    /// `cache::stats` at scrape.
    pub cache_events: IntCounterVec,
    /// Bytes of answers written to the response cache (local or Redis) by call type.
    pub cache_stored_bytes: IntCounterVec,
    /// Bytes held by the local response cache.
    pub cache_bytes: IntGaugeVec,
    /// Serialises scrape-time updates of the mirrored counters.
    scrape: Mutex<()>,
    /// Tells this instance's pre-resolved handles from another's (tests build several).
    id: u64,
}

/// One deployment's series for requests to its own group (`requested_model` = the group),
/// resolved once: recording into them is an atomic add, no label hashing, no lock.
pub struct DeploymentSeries {
    /// The [`Metrics`] instance these belong to.
    owner: u64,
    proxy_ok: IntCounter,
    total_latency: Histogram,
    api_latency: Histogram,
    time_to_first_token: Histogram,
    overhead_latency: Histogram,
    latency_per_output_token: Histogram,
    input_tokens: IntCounter,
    output_tokens: IntCounter,
    total_tokens: IntCounter,
    spend: Counter,
    retries: IntCounter,
    deployment_total: IntCounter,
    deployment_success: IntCounter,
}

/// Gives each [`Metrics`] instance its id.
static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(1);

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let spend = prometheus::CounterVec::new(
            Opts::new("litellm_spend_metric_total", "Spend on LLM requests (USD)"),
            SPEND_LABELS,
        )
        .expect("valid metric");
        r.register(Box::new(spend.clone())).expect("unique metric");
        let in_flight = IntGauge::new(
            "switchboard_in_flight_requests",
            "Requests being served right now",
        )
        .expect("valid metric");
        r.register(Box::new(in_flight.clone()))
            .expect("unique metric");
        let config_generation = IntGauge::new(
            "switchboard_config_generation",
            "Generation of the config being served (1 at start, +1 per successful reload)",
        )
        .expect("valid metric");
        r.register(Box::new(config_generation.clone()))
            .expect("unique metric");
        let access_log_dropped = IntCounter::new(
            "switchboard_access_log_dropped_total",
            "Access-log lines dropped because stdout could not keep up",
        )
        .expect("valid metric");
        r.register(Box::new(access_log_dropped.clone()))
            .expect("unique metric");
        Metrics {
            proxy_requests: counter(
                &r,
                "litellm_proxy_total_requests_metric_total",
                "Total LLM API requests made to the proxy",
                PROXY_REQUEST_LABELS,
            ),
            proxy_failed_requests: counter(
                &r,
                "litellm_proxy_failed_requests_metric_total",
                "LLM API requests that failed (error status or mid-stream error)",
                PROXY_FAILED_LABELS,
            ),
            total_latency: histogram(
                &r,
                "litellm_request_total_latency_metric",
                "Total latency of a request through the proxy (seconds)",
                TOTAL_LATENCY_LABELS,
            ),
            api_latency: histogram(
                &r,
                "litellm_llm_api_latency_metric",
                "Time spent waiting on the upstream LLM API (seconds)",
                API_LATENCY_LABELS,
            ),
            time_to_first_token: histogram(
                &r,
                "litellm_llm_api_time_to_first_token_metric",
                "Time to the first streamed token (seconds; streaming requests only)",
                API_LATENCY_LABELS,
            ),
            overhead_latency: histogram(
                &r,
                "litellm_overhead_latency_metric",
                "Latency added by the proxy itself (seconds)",
                OVERHEAD_LABELS,
            ),
            latency_per_output_token: histogram(
                &r,
                "litellm_deployment_latency_per_output_token",
                "Upstream latency per output token (seconds)",
                PER_TOKEN_LABELS,
            ),
            input_tokens: counter(
                &r,
                "litellm_input_tokens_total",
                "Input (prompt) tokens",
                TOKEN_LABELS,
            ),
            output_tokens: counter(
                &r,
                "litellm_output_tokens_total",
                "Output (completion) tokens",
                TOKEN_LABELS,
            ),
            total_tokens: counter(
                &r,
                "litellm_total_tokens_total",
                "Input + output tokens",
                TOKEN_LABELS,
            ),
            spend,
            deployment_state: gauge_vec(
                &r,
                "litellm_deployment_state",
                "Deployment state: 0 healthy, 1 partial outage, 2 complete outage (cooling down)",
                DEPLOYMENT_LABELS,
            ),
            deployment_cooled_down: counter(
                &r,
                "litellm_deployment_cooled_down_total",
                "Times a deployment was put into cooldown",
                COOLDOWN_LABELS,
            ),
            deployment_success: counter(
                &r,
                "litellm_deployment_success_responses_total",
                "Successful responses by deployment",
                DEPLOYMENT_RESPONSE_LABELS,
            ),
            deployment_failure: counter(
                &r,
                "litellm_deployment_failure_responses_total",
                "Failed responses by deployment",
                DEPLOYMENT_FAILURE_LABELS,
            ),
            deployment_total: counter(
                &r,
                "litellm_deployment_total_requests_total",
                "Requests by deployment",
                DEPLOYMENT_RESPONSE_LABELS,
            ),
            fallbacks_ok: counter(
                &r,
                "litellm_deployment_successful_fallbacks_total",
                "Requests answered by a fallback model group",
                FALLBACK_LABELS,
            ),
            fallbacks_failed: counter(
                &r,
                "litellm_deployment_failed_fallbacks_total",
                "Fallbacks that failed too",
                FALLBACK_LABELS,
            ),
            in_flight,
            deployment_in_flight: gauge_vec(
                &r,
                "switchboard_deployment_in_flight_requests",
                "Requests in flight per deployment",
                &["model_group", "model_id"],
            ),
            retries: counter(
                &r,
                "switchboard_retries_total",
                "Upstream attempts beyond the first",
                &["model_group"],
            ),
            reloads: counter(
                &r,
                "switchboard_config_reloads_total",
                "Config reloads (SIGHUP) by result",
                &["result"],
            ),
            config_generation,
            upstream_connections: counter(
                &r,
                "switchboard_upstream_connections_total",
                "Upstream connections used, by whether a pooled one was reused",
                &["reused"],
            ),
            access_log_dropped,
            stream_event_too_large: counter(
                &r,
                "switchboard_stream_event_too_large_total",
                "Upstream streams cut because one event exceeded max_stream_event_bytes",
                &["framing"],
            ),
            cache_events: counter(
                &r,
                "switchboard_cache_events_total",
                "Response cache hits, misses, stores (per call type), evictions, backend errors and dropped writes",
                &["type", "call_type", "event"],
            ),
            cache_stored_bytes: counter(
                &r,
                "switchboard_cache_stored_bytes_total",
                "Bytes of answers written to the response cache (local or Redis)",
                &["type", "call_type"],
            ),
            cache_bytes: gauge_vec(
                &r,
                "switchboard_cache_bytes",
                "Bytes of answers held by the local response cache",
                &["type"],
            ),
            scrape: Mutex::new(()),
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            registry: r,
        }
    }

    /// `d`'s pre-resolved series, resolving them on its first request.
    fn series<'d>(&self, d: &'d Deployment) -> Option<&'d DeploymentSeries> {
        let series = d
            .labels
            .handles
            .get_or_init(|| Box::new(self.resolve_series(d)))
            .downcast_ref::<DeploymentSeries>()?;
        (series.owner == self.id).then_some(series)
    }

    fn resolve_series(&self, d: &Deployment) -> DeploymentSeries {
        let MetricLabels {
            group,
            model,
            litellm_model_name: litellm_model,
            ..
        } = &*d.labels;
        let (group, model, litellm_model) =
            (group.as_str(), model.as_str(), litellm_model.as_str());
        let (api_base, provider, id) = (d.api_base(), d.config.provider.as_str(), d.id());
        let api = [model, "", "", "", "", group, "", ""];
        let tokens = ["", "", "", model, "", "", "", group];
        let deployment = [litellm_model, id, api_base, provider, group, "", "", "", ""];
        DeploymentSeries {
            owner: self.id,
            proxy_ok: self
                .proxy_requests
                .with_label_values(&["", "", "", group, "", "", "", "200"]),
            total_latency: self
                .total_latency
                .with_label_values(&["", "", "", group, "", "", "", model]),
            api_latency: self.api_latency.with_label_values(&api),
            time_to_first_token: self.time_to_first_token.with_label_values(&api),
            overhead_latency: self.overhead_latency.with_label_values(&[
                group,
                provider,
                api_base,
                litellm_model,
                "",
                "",
            ]),
            latency_per_output_token: self.latency_per_output_token.with_label_values(&[
                litellm_model,
                id,
                api_base,
                provider,
                "",
                "",
                "",
                "",
            ]),
            input_tokens: self.input_tokens.with_label_values(&tokens),
            output_tokens: self.output_tokens.with_label_values(&tokens),
            total_tokens: self.total_tokens.with_label_values(&tokens),
            spend: self
                .spend
                .with_label_values(&["", "", "", model, "", "", ""]),
            retries: self.retries.with_label_values(&[group]),
            deployment_total: self.deployment_total.with_label_values(&deployment),
            deployment_success: self.deployment_success.with_label_values(&deployment),
        }
    }

    /// Records one finished request. Only LLM calls (chat, embeddings) count, as in LiteLLM.
    pub fn observe(&self, ctx: &Context, snapshot: &Snapshot) {
        if ctx.route != "chat" && ctx.route != "embeddings" {
            return;
        }
        let failed = ctx.status >= 400 || ctx.error.is_some();
        let total = ctx.start.elapsed();
        let d = ctx.deployment.as_deref();
        let requested = match (ctx.model.as_deref(), d) {
            // The common case, found without a lookup: the client named the deployment's group.
            (Some(m), Some(d)) if m == d.config.model_name => d.labels.group.as_str(),
            (Some(m), _) => snapshot.metric_label(m).unwrap_or(UNKNOWN_MODEL),
            (None, _) => UNKNOWN_MODEL,
        };
        if let Some(d) = d {
            let own_group = ctx.fallback.is_none() && requested == d.labels.group;
            if !failed && ctx.status == 200 && own_group {
                if let Some(series) = self.series(d) {
                    series.proxy_ok.inc();
                    series.total_latency.observe(total.as_secs_f64());
                    self.observe_deployment(ctx, series, total);
                    return;
                }
            }
        }
        let status = status_label(ctx.status);
        let model = d.map(|d| d.labels.model.as_str()).unwrap_or("");
        self.proxy_requests
            .with_label_values(&["", "", "", requested, "", "", "", status])
            .inc();
        let class = exception_class(ctx.status, ctx.error.is_some());
        if failed {
            self.proxy_failed_requests
                .with_label_values(&["", "", "", requested, "", "", "", status, class])
                .inc();
        }
        self.total_latency
            .with_label_values(&["", "", "", requested, "", "", "", model])
            .observe(total.as_secs_f64());
        let Some(d) = d else {
            return;
        };
        if let Some(fallback) = ctx.fallback.as_deref() {
            // The group that answered (or failed last) was a fallback of the requested one.
            self.fallback(requested, fallback, !failed, ctx.status);
        }
        if requested == d.labels.group {
            if let Some(series) = self.series(d) {
                return self.observe_deployment(ctx, series, total);
            }
        }
        // Requested under another name (an alias, or the group a fallback came from).
        let group = d.labels.group.as_str();
        let litellm_model = d.labels.litellm_model_name.as_str();
        let (api_base, provider, id) = (d.api_base(), d.config.provider.as_str(), d.id());
        let upstream = ctx.upstream_time.as_secs_f64();
        self.api_latency
            .with_label_values(&[model, "", "", "", "", requested, "", ""])
            .observe(upstream);
        if let (Some(t), true) = (ctx.ttft, ctx.stream) {
            self.time_to_first_token
                .with_label_values(&[model, "", "", "", "", requested, "", ""])
                .observe(t.as_secs_f64());
        }
        self.overhead_latency
            .with_label_values(&[group, provider, api_base, litellm_model, "", ""])
            .observe(total.saturating_sub(ctx.upstream_time).as_secs_f64());
        if ctx.attempts > 1 {
            self.retries
                .with_label_values(&[group])
                .inc_by(u64::from(ctx.attempts - 1));
        }
        if let Some(u) = &ctx.usage {
            let labels = ["", "", "", model, "", "", "", requested];
            self.input_tokens
                .with_label_values(&labels)
                .inc_by(u.prompt_tokens);
            self.output_tokens
                .with_label_values(&labels)
                .inc_by(u.completion_tokens);
            self.total_tokens
                .with_label_values(&labels)
                .inc_by(u.total_tokens);
            if let Some(cost) = spent(ctx) {
                self.spend
                    .with_label_values(&["", "", "", model, "", "", ""])
                    .inc_by(cost);
            }
            if u.completion_tokens > 0 && !failed {
                self.latency_per_output_token
                    .with_label_values(&[litellm_model, id, api_base, provider, "", "", "", ""])
                    .observe(upstream / u.completion_tokens as f64);
            }
        }
    }

    /// The per-deployment part of [`Metrics::observe`] through pre-resolved handles.
    fn observe_deployment(
        &self,
        ctx: &Context,
        series: &DeploymentSeries,
        total: std::time::Duration,
    ) {
        let upstream = ctx.upstream_time.as_secs_f64();
        series.api_latency.observe(upstream);
        if let (Some(t), true) = (ctx.ttft, ctx.stream) {
            series.time_to_first_token.observe(t.as_secs_f64());
        }
        series
            .overhead_latency
            .observe(total.saturating_sub(ctx.upstream_time).as_secs_f64());
        if ctx.attempts > 1 {
            series.retries.inc_by(u64::from(ctx.attempts - 1));
        }
        if let Some(u) = &ctx.usage {
            series.input_tokens.inc_by(u.prompt_tokens);
            series.output_tokens.inc_by(u.completion_tokens);
            series.total_tokens.inc_by(u.total_tokens);
            if let Some(cost) = spent(ctx) {
                series.spend.inc_by(cost);
            }
            let answered = ctx.status < 400 && ctx.error.is_none();
            if u.completion_tokens > 0 && answered {
                series
                    .latency_per_output_token
                    .observe(upstream / u.completion_tokens as f64);
            }
        }
    }

    /// Records one attempt on a deployment (every attempt, retries and fallbacks included):
    /// `requested` is the requested-model label ([`Snapshot::metric_label`]), `failed` the
    /// failing status, `None` for an answered attempt.
    pub fn deployment_attempt(&self, d: &Deployment, requested: &str, failed: Option<u16>) {
        if failed.is_none() && requested == d.labels.group {
            if let Some(series) = self.series(d) {
                series.deployment_total.inc();
                series.deployment_success.inc();
                return;
            }
        }
        let litellm_model = d.labels.litellm_model_name.as_str();
        let (api_base, provider, id) = (d.api_base(), d.config.provider.as_str(), d.id());
        let labels = [
            litellm_model,
            id,
            api_base,
            provider,
            requested,
            "",
            "",
            "",
            "",
        ];
        self.deployment_total.with_label_values(&labels).inc();
        match failed {
            None => self.deployment_success.with_label_values(&labels).inc(),
            Some(status) => self
                .deployment_failure
                .with_label_values(&[
                    litellm_model,
                    id,
                    api_base,
                    provider,
                    status_label(status),
                    exception_class(status, false),
                    requested,
                    "",
                    "",
                    "",
                    "",
                ])
                .inc(),
        }
    }

    /// Records a deployment entering cooldown (`status`: the failure that caused it). For the
    /// router to call where it starts a cooldown.
    pub fn cooled_down(&self, d: &Deployment, status: u16) {
        self.deployment_cooled_down
            .with_label_values(&[
                &d.labels.litellm_model_name,
                d.id(),
                d.api_base(),
                &d.config.provider,
                status_label(status),
            ])
            .inc();
    }

    /// Records a fallback from model group `requested` to `fallback`, answered or not, after
    /// the original group failed with `status`.
    pub fn fallback(&self, requested: &str, fallback: &str, ok: bool, status: u16) {
        let labels = [
            requested,
            fallback,
            "",
            "",
            "",
            "",
            status_label(status),
            exception_class(status, false),
        ];
        if ok {
            self.fallbacks_ok.with_label_values(&labels).inc();
        } else {
            self.fallbacks_failed.with_label_values(&labels).inc();
        }
    }

    /// Records a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// The Prometheus text exposition, with live gauges refreshed from the current snapshot,
    /// the requests in flight and the upstream client.
    pub fn render(&self, snapshot: &Snapshot, in_flight: u64, client: &UpstreamClient) -> String {
        {
            let _guard = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
            self.in_flight.set(in_flight as i64);
            self.config_generation.set(snapshot.generation as i64);
            // Per-deployment gauges describe the current snapshot only.
            self.deployment_state.reset();
            self.deployment_in_flight.reset();
            for name in &snapshot.group_names {
                let Some(group) = snapshot.group(name) else {
                    continue;
                };
                for d in &group.deployments {
                    let litellm_model = d.labels.litellm_model_name.as_str();
                    self.deployment_state
                        .with_label_values(&[
                            litellm_model,
                            d.id(),
                            d.api_base(),
                            &d.config.provider,
                        ])
                        .set(deployment_state(d));
                    self.deployment_in_flight
                        .with_label_values(&[name, d.id()])
                        .set(d.state.in_flight.load(Ordering::Relaxed) as i64);
                }
            }
            mirror(
                &self.upstream_connections.with_label_values(&["true"]),
                client.connections_reused.load(Ordering::Relaxed),
            );
            mirror(
                &self.upstream_connections.with_label_values(&["false"]),
                client.connections_new.load(Ordering::Relaxed),
            );
            mirror(&self.access_log_dropped, crate::logging::dropped_lines());
            let kind = crate::cache::type_label();
            if !kind.is_empty() {
                let st = crate::cache::stats();
                for (call_type, event, n) in st.events() {
                    // Per call type only once it happened: a chat-only cache shows no
                    // embeddings series.
                    if n > 0 || call_type.is_empty() {
                        mirror(
                            &self
                                .cache_events
                                .with_label_values(&[kind, call_type, event]),
                            n,
                        );
                    }
                }
                for call in crate::cache::CallType::ALL {
                    let n = st.of(call).stored_bytes.load(Ordering::Relaxed);
                    if n > 0 {
                        mirror(
                            &self
                                .cache_stored_bytes
                                .with_label_values(&[kind, call.as_str()]),
                            n,
                        );
                    }
                }
                self.cache_bytes
                    .with_label_values(&[kind])
                    .set(st.bytes.load(Ordering::Relaxed) as i64);
            }
            for framing in crate::codec::limits::Framing::ALL {
                mirror(
                    &self
                        .stream_event_too_large
                        .with_label_values(&[framing.as_str()]),
                    crate::codec::limits::too_large_count(framing),
                );
            }
        }
        let mut out = Vec::with_capacity(16 * 1024);
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What the request cost (priced from its usage by the `cost` module), when it cost anything.
fn spent(ctx: &Context) -> Option<f64> {
    ctx.cost.filter(|c| c.is_finite() && *c > 0.0)
}

/// LiteLLM's deployment state: 0 healthy, 1 partial outage (failures this minute), 2 complete
/// outage (cooling down, or failing its active health check).
fn deployment_state(d: &Deployment) -> i64 {
    let now = std::time::Instant::now();
    if d.state.is_cooling_down(now) || !d.state.is_healthy() {
        2
    } else if d.state.failures_this_minute(now) > 0 {
        1
    } else {
        0
    }
}

/// Brings a counter up to a monotonic value kept elsewhere.
fn mirror(c: &IntCounter, value: u64) {
    let have = c.get();
    if value > have {
        c.inc_by(value - have);
    }
}

/// The status as a label from a fixed set (anything unusual collapses to its class).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        0 => "0",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// LiteLLM's exception class names by status.
fn exception_class(status: u16, mid_stream_error: bool) -> &'static str {
    match status {
        400 | 413 | 422 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        408 | 504 => "Timeout",
        429 => "RateLimitError",
        502 => "APIConnectionError",
        503 => "ServiceUnavailableError",
        500..=599 => "InternalServerError",
        _ if mid_stream_error => "MidStreamError",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(status_label(200), "200");
        assert_eq!(status_label(299), "2xx");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(exception_class(429, false), "RateLimitError");
        assert_eq!(exception_class(200, true), "MidStreamError");
        assert_eq!(exception_class(599, false), "InternalServerError");
    }

    /// Every series the Grafana dashboard queries is one this module exposes.
    #[test]
    fn dashboard_queries_exposed_metrics() {
        use prometheus::core::Collector;
        let m = Metrics::new();
        let collectors: Vec<&dyn Collector> = vec![
            &m.proxy_requests,
            &m.proxy_failed_requests,
            &m.total_latency,
            &m.api_latency,
            &m.time_to_first_token,
            &m.overhead_latency,
            &m.latency_per_output_token,
            &m.input_tokens,
            &m.output_tokens,
            &m.total_tokens,
            &m.spend,
            &m.deployment_state,
            &m.deployment_cooled_down,
            &m.deployment_success,
            &m.deployment_failure,
            &m.deployment_total,
            &m.fallbacks_ok,
            &m.fallbacks_failed,
            &m.in_flight,
            &m.deployment_in_flight,
            &m.retries,
            &m.reloads,
            &m.config_generation,
            &m.upstream_connections,
            &m.access_log_dropped,
        ];
        let names: Vec<String> = collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect();
        let dashboard = include_str!("../conf/grafana-dashboard.json");
        let mut queried = 0;
        for (i, _) in dashboard
            .match_indices("litellm_")
            .chain(dashboard.match_indices("switchboard_"))
        {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            if name == "switchboard_gateway" || name.ends_with('_') {
                continue; // the dashboard uid, prose
            }
            queried += 1;
            assert!(
                names.iter().any(|n| n == base),
                "dashboard queries unknown {name}"
            );
        }
        assert!(queried > 20);
    }

    fn text(m: &Metrics) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// An answered request on its group's deployment records through handles resolved once and
    /// kept with the deployment's labels (shared by the names a wildcard derives), into the
    /// same series a label lookup finds; other instances of `Metrics` do not use them.
    #[test]
    fn answered_requests_record_through_pre_resolved_handles() {
        use crate::router::{Snapshot, StateRegistry};
        use crate::upstream::UpstreamClient;
        use std::sync::Arc;
        let config = crate::config::litellm::parse(
            "model_list:\n  - {model_name: g, litellm_params: {model: openai/m, mock_response: hi}, model_info: {id: d1}}\n  - {model_name: \"openai/*\", litellm_params: {model: \"openai/*\", mock_response: hi}, model_info: {id: w}}\n",
        )
        .unwrap();
        let client = Arc::new(UpstreamClient::new(1));
        let s = Snapshot::build(config, 1, &client, &StateRegistry::default()).unwrap();
        let m = Metrics::new();
        let log = |model: &str| {
            let d = s.resolve(model).unwrap().deployments[0].clone();
            Context {
                route: "chat",
                model: Some(model.to_string()),
                deployment: Some(d),
                status: 200,
                attempts: 1,
                usage: Some(crate::openai::Usage::new(3, 4)),
                ..Context::default()
            }
        };
        let g = s.group("g").unwrap().deployments[0].clone();
        assert!(g.labels.handles.get().is_none());
        m.observe(&log("g"), &s);
        m.deployment_attempt(&g, "g", None);
        assert!(g.labels.handles.get().is_some());
        m.observe(&log("g"), &s);
        m.deployment_attempt(&g, "g", None);
        for i in 0..50 {
            m.observe(&log(&format!("openai/x{i}")), &s);
        }
        let requests = |requested: &str| {
            m.proxy_requests
                .with_label_values(&["", "", "", requested, "", "", "", "200"])
                .get()
        };
        assert_eq!((requests("g"), requests("openai/*")), (2, 50));
        let total = m
            .deployment_total
            .with_label_values(&["openai/m", "d1", "mock", "openai", "g", "", "", "", ""])
            .get();
        assert_eq!(total, 2);
        let tokens = text(&m);
        assert!(tokens.contains("litellm_output_tokens_total{api_key_alias=\"\",end_user=\"\",hashed_api_key=\"\",model=\"*\",requested_model=\"openai/*\",team=\"\",team_alias=\"\",user=\"\"} 200"), "{tokens}");
        assert!(!tokens.contains("x1"), "{tokens}");
        // A reload builds new deployments (and labels): they count into the same series.
        let s2 = Snapshot::build(s.config.clone(), 2, &client, &StateRegistry::default()).unwrap();
        let reloaded = s2.group("g").unwrap().deployments[0].clone();
        assert!(!Arc::ptr_eq(&reloaded, &g));
        let ctx = Context {
            deployment: Some(reloaded),
            ..log("g")
        };
        m.observe(&ctx, &s2);
        assert_eq!(requests("g"), 3);
        // Another instance records into its own registry, not through these handles.
        let other = Metrics::new();
        other.observe(&log("g"), &s);
        assert_eq!(
            other
                .proxy_requests
                .with_label_values(&["", "", "", "g", "", "", "", "200"])
                .get(),
            1
        );
        assert_eq!(requests("g"), 3);
    }

    #[test]
    fn exposes_litellm_names() {
        let m = Metrics::new();
        m.reload(true);
        m.fallback("a", "b", true, 429);
        m.proxy_requests
            .with_label_values(&["", "", "", "g", "", "", "", "200"])
            .inc();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("litellm_proxy_total_requests_metric_total{api_key_alias=\"\",end_user=\"\",hashed_api_key=\"\",requested_model=\"g\",status_code=\"200\",team=\"\",team_alias=\"\",user=\"\"} 1"), "{text}");
        assert!(text.contains("switchboard_config_reloads_total{result=\"ok\"} 1"));
        assert!(text.contains("litellm_deployment_successful_fallbacks_total{api_key_alias=\"\",exception_class=\"RateLimitError\",exception_status=\"429\",fallback_model=\"b\",hashed_api_key=\"\",requested_model=\"a\",team=\"\",team_alias=\"\"} 1"), "{text}");
    }
}
