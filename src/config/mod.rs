//! Configuration. `litellm` reads a LiteLLM proxy `config.yaml` (the file format) into the
//! validated, typed [`Config`] defined here (defaults applied, secrets resolved); nothing past
//! this module looks at YAML. Errors name the exact key path; keys we do not implement yet are
//! warnings, never failures.

pub mod cache;
pub mod call_defaults;
pub mod limits;
pub mod listeners;
pub mod litellm;
pub mod redis;
pub mod telemetry;
pub mod yaml;

pub use cache::{CacheMode, CacheScope, CacheSettings, CacheType};
pub use call_defaults::CallDefaults;

use crate::client_addr::{Cidr, ForwardedHeader};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration error at a key path, e.g.
/// `model_list[2].litellm_params.model: unknown provider "opnai"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub server: ServerSettings,
    pub general: GeneralSettings,
    pub litellm: LitellmSettings,
    pub router: RouterSettings,
    pub deployments: Vec<DeploymentConfig>,
    /// Keys accepted but not implemented, one line each.
    pub warnings: Vec<String>,
    /// OpenTelemetry / Langfuse export (`litellm_settings.callbacks`), resolved at load.
    pub telemetry: telemetry::TelemetryConfig,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, Default::default())
    }

    /// [`Config::load`], resolving `os.environ/` references in `env` before the process
    /// environment (for an environment file re-read on reload).
    pub fn load_with_env(
        path: &Path,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        let mut config = litellm::parse_with_env(&text, env)?;
        config.source = path.to_path_buf();
        Ok(config)
    }
}

/// Switchboard's own section (`switchboard:` in the same file): listener and Pingora settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// `listeners`: the endpoints when given; `None` means the one plaintext `host:port`
    /// (see [`ServerSettings::listeners`]).
    pub listeners: Option<Vec<listeners::ListenerConfig>>,
    /// Worker threads; defaults to the number of cores.
    pub threads: usize,
    /// `work_stealing`: one tokio runtime whose workers steal each other's tasks (`true`), or
    /// one runtime per thread, each connection staying on the thread that accepted it (`false`,
    /// Pingora's no-steal mode: fewer cross-thread wake-ups per request).
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    /// `state_dir`: where the embedded SQLite store lives (default `$STATE_DIRECTORY`, else
    /// `./state`).
    pub state_dir: Option<std::path::PathBuf>,
    pub error_log: Option<String>,
    /// Seconds between a SIGTERM and the listeners closing (in-flight work continues).
    pub grace_period_seconds: u64,
    /// Seconds in-flight requests and streams get to finish after the listeners close.
    pub graceful_shutdown_timeout_seconds: u64,
    /// Upstream connections kept per worker for reuse.
    pub upstream_keepalive_pool_size: usize,
    /// Idle seconds before a pooled upstream connection is closed.
    pub upstream_idle_timeout: Duration,
    /// Connect timeout for upstreams.
    pub connect_timeout: Duration,
    pub json_logs: bool,
    pub log_level: log::LevelFilter,
    /// `client_write_timeout_seconds`: a client that accepts no response bytes for this long
    /// is dropped (with its upstream request and its slot).
    pub client_write_timeout: Duration,
    /// `request_body_timeout_seconds`: the whole request body must arrive within this.
    pub request_body_timeout: Duration,
    /// `request_header_timeout_seconds`: the request head must arrive within this, counted
    /// from accept (or from its first byte on a kept-alive connection).
    pub request_header_timeout: Duration,
    /// `max_request_header_kb`, in bytes: the largest request head (request line and headers).
    pub max_request_header: usize,
    /// `max_connections`: client connections open at once; past it new ones get a 503.
    pub max_connections: usize,
    /// Largest upstream stream event (SSE event, NDJSON line, eventstream message) held before
    /// the stream is cut with a 502 or an error event.
    pub max_stream_event_bytes: usize,
    /// `trusted_proxies`: peers whose forwarding header (and PROXY protocol header) is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `forwarded_header`: the one header read for the client address from trusted proxies.
    pub forwarded_header: ForwardedHeader,
    /// `proxy_protocol`: the default listener (`host`/`port`, when there is no `listeners` list)
    /// reads PROXY protocol v1/v2 headers from trusted peers; listed listeners set their own.
    pub proxy_protocol: bool,
    /// `otel_capture_content`: prompts and completions on telemetry spans (off by default).
    pub otel_capture_content: bool,
    /// `otel_content_max_bytes`: the cap on each captured content attribute.
    pub otel_content_max_bytes: usize,
    /// `budget_exceeded_status`: the status of a `budget_exceeded` refusal (LiteLLM 1.110: 422).
    pub budget_exceeded_status: u16,
    /// `unpriced_budget_policy`: what a budgeted caller's request to a model with no price does.
    pub unpriced_budget_policy: UnpricedBudgetPolicy,
    /// `budget_default_max_tokens`: the output tokens reserved when neither the request
    /// (`max_tokens`/`max_completion_tokens`) nor the price table bounds them.
    pub budget_default_max_tokens: u64,
    /// `budget_reservation_ttl_s`: with budgets on Redis, how long an unsettled reservation
    /// (an instance killed mid-request) holds budget before it expires.
    pub budget_reservation_ttl: Duration,
    /// `redis_failure_policy`: what requests meet while shared-state Redis is down or slow.
    pub redis_failure_policy: redis::FailurePolicy,
    /// `redis_timeout_ms`: the bound on one Redis round trip on the request path.
    pub redis_timeout: Duration,
    /// `n_fanout`: a chat request with `n` > 1 to a provider that returns one choice per call
    /// makes `n` calls (on), or is a 400 naming `n` (off).
    pub n_fanout: bool,
    /// `max_n`: the most calls one request fans out to (1-128).
    pub max_n: u64,
}

/// `switchboard.unpriced_budget_policy`: a model with no price cannot be checked against a
/// budget before the call (its cost is unknown, and after the call it is billed 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnpricedBudgetPolicy {
    /// Admit it while the budget is not already spent, reserving nothing (counted in
    /// `switchboard_budget_unpriced_requests_total`; a warning at load names such models).
    #[default]
    Allow,
    /// Refuse it (`budget_exceeded`) for any caller with a budget.
    Deny,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "0.0.0.0".into(),
            port: 4000,
            listeners: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            work_stealing: true,
            pid_file: "/tmp/switchboard.pid".into(),
            upgrade_sock: "/tmp/switchboard_upgrade.sock".into(),
            state_dir: None,
            error_log: None,
            grace_period_seconds: 1,
            graceful_shutdown_timeout_seconds: 30,
            upstream_keepalive_pool_size: 256,
            upstream_idle_timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            json_logs: true,
            log_level: log::LevelFilter::Info,
            client_write_timeout: Duration::from_secs(30),
            request_body_timeout: Duration::from_secs(120),
            request_header_timeout: Duration::from_secs(10),
            max_request_header: 64 * 1024,
            max_connections: 10_000,
            max_stream_event_bytes: crate::codec::limits::DEFAULT_MAX_STREAM_EVENT_BYTES,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            proxy_protocol: false,
            otel_capture_content: false,
            otel_content_max_bytes: 16 * 1024,
            budget_exceeded_status: 422,
            unpriced_budget_policy: UnpricedBudgetPolicy::Allow,
            budget_default_max_tokens: 4096,
            budget_reservation_ttl: Duration::from_secs(600),
            redis_failure_policy: redis::FailurePolicy::Open,
            redis_timeout: redis::DEFAULT_REDIS_TIMEOUT,
            n_fanout: true,
            max_n: 8,
        }
    }
}

impl ServerSettings {
    /// The endpoints to listen on: `listeners`, or the one plaintext `host:port`.
    pub fn listeners(&self) -> Vec<listeners::ListenerConfig> {
        self.listeners.clone().unwrap_or_else(|| {
            let mut default = listeners::ListenerConfig::tcp(&self.host, self.port, "switchboard");
            default.proxy_protocol = self.proxy_protocol;
            vec![default]
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct GeneralSettings {
    pub master_key: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_request_size: usize,
    /// `database_url` (else the `DATABASE_URL` environment variable): the key/spend store;
    /// unset, an embedded SQLite file in the state directory (see [`crate::store`]).
    pub database_url: Option<String>,
    /// `proxy_batch_write_at`: how often batched spend is written (LiteLLM default 10 s).
    pub proxy_batch_write_at: Duration,
    /// `litellm_key_header_name`, lower-cased: one more header a virtual key may come in.
    pub litellm_key_header_name: Option<String>,
    /// `allowed_ips`: only these client addresses (or blocks) may call; `None`: everyone.
    pub allowed_ips: Option<Vec<Cidr>>,
    /// CORS for browser clients (`cors_allow_*`, or LiteLLM's `LITELLM_CORS_*` variables).
    pub cors: CorsSettings,
    /// `/health` model checks and alerting webhooks (see [`HealthAlertSettings`]).
    pub health: HealthAlertSettings,
}

/// `general_settings` keys for LiteLLM's `/health` model checks and its alerting.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthAlertSettings {
    /// `background_health_checks`: run the model checks every `health_check_interval`, serve
    /// the cached result on `/health`, and skip deployments the last run found failing.
    pub background_health_checks: bool,
    /// `health_check_interval` (LiteLLM default 300 s).
    pub health_check_interval: Duration,
    /// `alerting`: where alerts go (`slack`: `SLACK_WEBHOOK_URL`, `webhook`: `WEBHOOK_URL`).
    pub alerting: Vec<String>,
    /// `alerting_threshold`: a response slower than this is a `llm_too_slow` alert (LiteLLM
    /// default 300 s).
    pub alerting_threshold: Duration,
    /// `alert_types`: which alerts are sent; `None`: all of them.
    pub alert_types: Option<Vec<String>>,
    /// `SLACK_WEBHOOK_URL` (config `environment_variables` or the process environment).
    pub slack_webhook_url: Option<String>,
    /// `WEBHOOK_URL`: the generic webhook receiving LiteLLM's `WebhookEvent` JSON.
    pub webhook_url: Option<String>,
    /// `alerting_args.daily_report_frequency`: the `daily_reports` period (LiteLLM: 12 h).
    pub daily_report_frequency: Duration,
    /// `alerting_args.report_check_interval`: how often the schedule is checked (LiteLLM: 5 min).
    pub report_check_interval: Duration,
}

impl Default for HealthAlertSettings {
    fn default() -> Self {
        HealthAlertSettings {
            background_health_checks: false,
            health_check_interval: Duration::from_secs(300),
            alerting: Vec::new(),
            alerting_threshold: Duration::from_secs(300),
            alert_types: None,
            slack_webhook_url: None,
            webhook_url: None,
            daily_report_frequency: Duration::from_secs(12 * 3600),
            report_check_interval: Duration::from_secs(300),
        }
    }
}

/// CORS settings, LiteLLM's defaults: any origin, any method, any header, no credentials.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CorsSettings {
    /// `None`: any origin (`*`). An empty list turns CORS off.
    pub origins: Option<Vec<String>>,
    /// `Access-Control-Allow-Credentials: true`, only ever with listed origins (never with `*`).
    pub credentials: bool,
    /// `None`: any method.
    pub methods: Option<Vec<String>>,
    /// `None`: any request header (the preflight's list is echoed).
    pub headers: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct LitellmSettings {
    pub drop_params: bool,
    /// `drop_params` given as a list of parameter names: removed from every request (merged
    /// into each deployment's [`CallDefaults::drop`]).
    pub additional_drop_params: Vec<String>,
    /// `request_timeout`: the default per-request deadline when nothing narrower is set.
    pub request_timeout: Option<Duration>,
    /// `require_auth_for_metrics_endpoint`: `/metrics` needs the master key.
    pub require_auth_for_metrics_endpoint: bool,
    /// Telemetry callback names listed in `callbacks` / `success_callback` / `failure_callback`
    /// (see [`telemetry::TELEMETRY_CALLBACKS`]).
    pub telemetry_callbacks: Vec<String>,
    /// `turn_off_message_logging`: never put prompts or completions on spans.
    pub turn_off_message_logging: bool,
    /// `cache: true` with `cache_params`: the response cache (`None`: off).
    pub cache: Option<CacheSettings>,
    /// The Redis server of `cache_params` (`host`/`port`/`url`/`redis_startup_nodes`...), else
    /// LiteLLM's `REDIS_*` environment variables (see [`redis`]). Whether the response cache
    /// uses it is the cache's decision (`cache_params.type`).
    pub cache_redis: Option<redis::RedisSettings>,
    /// `default_key_generate_params`, `upperbound_key_generate_params` and
    /// `max_end_user_budget_id` (applied by [`crate::limits::defaults`]).
    pub limit_defaults: limits::LimitDefaults,
}

/// `router_settings` (with the routing keys LiteLLM also accepts in `litellm_settings`;
/// `router_settings` wins when both set one).
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Whole-request deadline default for deployments without their own `timeout`.
    pub timeout: Option<Duration>,
    /// Default time to first token / longest silence between chunks for streams.
    pub stream_timeout: Option<Duration>,
    pub routing_strategy: RoutingStrategy,
    /// `routing_strategy_args.lowest_latency_buffer`: latency-based routing picks at random
    /// among deployments within `(1 + buffer) ×` the fastest.
    pub lowest_latency_buffer: f64,
    /// Retries per model group after the first attempt (LiteLLM default 2).
    pub num_retries: u32,
    /// Least wait before a retry (`retry_after`, default 0).
    pub retry_after: Duration,
    /// `retry_policy`: retries per error class, overriding `num_retries` for that class.
    pub retry_policy: BTreeMap<ErrorClass, u32>,
    /// `allowed_fails`: set, it switches cooldown to LiteLLM's count rule (v1).
    pub allowed_fails: Option<u32>,
    /// `allowed_fails_policy`: per-class allowed fails (also selects the count rule).
    pub allowed_fails_policy: BTreeMap<ErrorClass, u32>,
    pub cooldown_time: Duration,
    pub disable_cooldowns: bool,
    /// `fallbacks`: group -> groups tried in order when it fails.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    pub context_window_fallbacks: BTreeMap<String, Vec<String>>,
    pub content_policy_fallbacks: BTreeMap<String, Vec<String>>,
    /// Tried for any group without its own `fallbacks` entry.
    pub default_fallbacks: Vec<String>,
    pub max_fallbacks: usize,
    /// `enable_pre_call_checks`: deployments whose context window (`model_info.max_input_tokens`,
    /// else `max_tokens`) is smaller than the prompt's estimated tokens are skipped.
    pub enable_pre_call_checks: bool,
    /// `model_group_alias`: public alias -> group name.
    pub model_group_alias: BTreeMap<String, String>,
    /// Default `max_parallel_requests` for deployments without their own.
    pub default_max_parallel_requests: Option<u64>,
    /// Switchboard extension (`cooldown_wait`): when every candidate is cooling down, wait up to
    /// this long for the first to recover instead of failing at once with 503.
    pub cooldown_wait: Option<Duration>,
    /// `enable_tag_filtering`: requests carrying tags go only to deployments with a matching
    /// `litellm_params.tags` (see `router::filter`).
    pub enable_tag_filtering: bool,
    /// `tag_filtering_match_any` (LiteLLM default true): one common tag is a match; false:
    /// the deployment must carry every tag the request does.
    pub tag_filtering_match_any: bool,
    /// Redis for state shared by gateway instances (rate limits, cooldowns, deployment usage):
    /// `redis_host`/`redis_port`/`redis_password` or `redis_url`, else `cache_params`' server,
    /// else the `REDIS_*` environment variables. `None`: everything stays in-process.
    pub redis: Option<redis::RedisSettings>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            timeout: None,
            stream_timeout: None,
            routing_strategy: RoutingStrategy::SimpleShuffle,
            lowest_latency_buffer: 0.0,
            num_retries: DEFAULT_NUM_RETRIES,
            retry_after: Duration::ZERO,
            retry_policy: BTreeMap::new(),
            allowed_fails: None,
            allowed_fails_policy: BTreeMap::new(),
            cooldown_time: DEFAULT_COOLDOWN_TIME,
            disable_cooldowns: false,
            fallbacks: BTreeMap::new(),
            context_window_fallbacks: BTreeMap::new(),
            content_policy_fallbacks: BTreeMap::new(),
            default_fallbacks: Vec::new(),
            max_fallbacks: DEFAULT_MAX_FALLBACKS,
            enable_pre_call_checks: false,
            model_group_alias: BTreeMap::new(),
            default_max_parallel_requests: None,
            cooldown_wait: None,
            enable_tag_filtering: false,
            tag_filtering_match_any: true,
            redis: None,
        }
    }
}

/// LiteLLM's `DEFAULT_MAX_RETRIES`.
pub const DEFAULT_NUM_RETRIES: u32 = 2;
/// LiteLLM's `DEFAULT_COOLDOWN_TIME_SECONDS`.
pub const DEFAULT_COOLDOWN_TIME: Duration = Duration::from_secs(5);
/// LiteLLM's `ROUTER_MAX_FALLBACKS`.
pub const DEFAULT_MAX_FALLBACKS: usize = 5;

/// `router_settings.routing_strategy`, with LiteLLM's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingStrategy {
    /// `simple-shuffle`: weighted random (weight, else rpm, else tpm).
    SimpleShuffle,
    /// `least-busy`: fewest requests in flight.
    LeastBusy,
    /// `latency-based-routing`: lowest moving-average latency (time to first token for streams).
    LatencyBased,
    /// `usage-based-routing` / `usage-based-routing-v2`: most rpm/tpm headroom this minute.
    UsageBased,
    /// `cost-based-routing`: cheapest price per token.
    CostBased,
}

impl RoutingStrategy {
    pub const NAMES: &'static [&'static str] = &[
        "simple-shuffle",
        "least-busy",
        "latency-based-routing",
        "usage-based-routing",
        "usage-based-routing-v2",
        "cost-based-routing",
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "simple-shuffle" => RoutingStrategy::SimpleShuffle,
            "least-busy" => RoutingStrategy::LeastBusy,
            "latency-based-routing" => RoutingStrategy::LatencyBased,
            "usage-based-routing" | "usage-based-routing-v2" => RoutingStrategy::UsageBased,
            "cost-based-routing" => RoutingStrategy::CostBased,
            _ => return None,
        })
    }
}

/// LiteLLM's exception classes as named in `retry_policy` / `allowed_fails_policy`
/// (`<Class>Retries`, `<Class>AllowedFails`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    BadRequest,
    Authentication,
    Timeout,
    RateLimit,
    ContentPolicyViolation,
    InternalServer,
    ServiceUnavailable,
    BadGateway,
    NotFound,
}

impl ErrorClass {
    pub const ALL: &'static [(ErrorClass, &'static str)] = &[
        (ErrorClass::BadRequest, "BadRequestError"),
        (ErrorClass::Authentication, "AuthenticationError"),
        (ErrorClass::Timeout, "TimeoutError"),
        (ErrorClass::RateLimit, "RateLimitError"),
        (
            ErrorClass::ContentPolicyViolation,
            "ContentPolicyViolationError",
        ),
        (ErrorClass::InternalServer, "InternalServerError"),
        (ErrorClass::ServiceUnavailable, "ServiceUnavailableError"),
        (ErrorClass::BadGateway, "BadGatewayError"),
        (ErrorClass::NotFound, "NotFoundError"),
    ];
}

/// Default deadline when neither the deployment nor router/litellm settings set one
/// (LiteLLM: 6000 s `request_timeout`; 10 min router timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// One `model_list` entry.
#[derive(Debug, Clone)]
pub struct DeploymentConfig {
    /// Position in `model_list`, for key paths in errors.
    pub index: usize,
    /// The public name clients send as `model` (the model group).
    pub model_name: String,
    /// `model_info.id`, or a stable id derived from the entry.
    pub id: String,
    /// The id was derived from the entry (no `model_info.id`).
    pub derived_id: bool,
    /// Provider prefix of `litellm_params.model` (`openai` when there is none).
    pub provider: String,
    /// The upstream model name (the part after the prefix).
    pub model: String,
    pub params: LitellmParams,
    pub model_info: ModelInfo,
}

/// `litellm_params`, typed. Provider-specific keys (`vertex_project`, `aws_region_name`, …) are
/// kept, resolved, in `extra` for the provider to read.
#[derive(Debug, Clone, Default)]
pub struct LitellmParams {
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    pub organization: Option<String>,
    pub timeout: Option<Duration>,
    pub stream_timeout: Option<Duration>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub weight: Option<f64>,
    pub mock_response: Option<String>,
    pub drop_params: Option<bool>,
    /// Priority tier inside the group: the lowest `order` with an available deployment wins.
    pub order: Option<u32>,
    /// Most requests in flight on this deployment at once.
    pub max_parallel_requests: Option<u64>,
    /// Retries for requests whose first pick is this deployment (overrides the router's).
    pub num_retries: Option<u32>,
    /// Prices (USD per token) for cost-based routing.
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    /// Call parameters sent with every request to this deployment unless the request sets
    /// them, extra headers, and parameters always removed.
    pub call_defaults: CallDefaults,
    /// `tags`: what tag routing matches requests' tags against (`default`: untagged requests).
    pub tags: Vec<String>,
    /// `tag_regex`: patterns tag routing matches against the request's `User-Agent: …` line
    /// (each checked at load; one that does not compile is warned about and left out).
    pub tag_regex: Vec<String>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl LitellmParams {
    /// A provider-specific string parameter.
    pub fn extra_str(&self, key: &str) -> Option<&str> {
        self.extra.get(key).and_then(|v| v.as_str())
    }
}

#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub mode: Option<String>,
    pub base_model: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    /// Every other `model_info` key (`supports_*`, `description`, prices, …) as written, for
    /// `GET /model/info`. LiteLLM's model_info takes any key.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// `model_info.health_check` (Switchboard extension; LiteLLM ignores unknown model_info
    /// keys): an active check for self-hosted pools.
    pub health_check: Option<HealthCheckConfig>,
}

/// An active health check run in the background; a failing deployment is skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// `path`: an HTTP GET that must answer 200; absent (`type: tcp`): a TCP connect.
    pub http_path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive results needed to flip the state.
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}
