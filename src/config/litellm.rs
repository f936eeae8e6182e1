//! The LiteLLM proxy `config.yaml` format, read into [`Config`]. Sections: `model_list`,
//! `litellm_settings`, `router_settings`, `general_settings`, `environment_variables`, plus our
//! own `switchboard:` section for listener/Pingora settings. Keys this reader does not consume are
//! reported as warnings.

use super::yaml::{sequence, type_name, Env, Section};
use super::*;
use serde_yaml::Value;
use std::collections::HashMap;

/// Top-level sections LiteLLM knows that we accept and ignore as a whole (with one warning).
const IGNORED_TOP_LEVEL: &[&str] = &[
    "callback_settings",
    "guardrails",
    "mcp_servers",
    "include",
    "search_tools",
    "guardrail_list",
    "credential_list",
];

/// `litellm_params` keys providers read from `extra` (kept silent; others are warned about).
pub const PROVIDER_PARAMS: &[&str] = &[
    "vertex_project",
    "vertex_location",
    "vertex_credentials",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
    "region_name",
    "aws_bedrock_runtime_endpoint",
    // Where Bedrock's credentials come from (`providers::aws_credentials`).
    "aws_profile_name",
    "aws_role_name",
    "aws_session_name",
    "aws_web_identity_token",
    "aws_external_id",
    "aws_sts_endpoint",
    "max_tokens",
];

pub fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_with_env(text, HashMap::new())
}

/// [`parse`], with `os.environ/` references looked up in `env` before the process environment
/// (the config's own `environment_variables` still come first).
pub fn parse_with_env(text: &str, env: HashMap<String, String>) -> Result<Config, ConfigError> {
    let root: Value = serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        ConfigError::new("", format!("the file is not valid YAML{at}: {e}"))
    })?;
    if !matches!(root, Value::Mapping(_) | Value::Null) {
        return Err(ConfigError::new(
            "",
            format!(
                "the config must be a mapping at the top level, found {}",
                type_name(&root)
            ),
        ));
    }
    let mut warnings = Vec::new();

    // environment_variables first: os.environ/ references anywhere may point at them.
    let mut overrides = env;
    overrides.extend(read_environment_variables(
        root.get("environment_variables"),
    )?);
    let env = Env {
        overrides: &overrides,
    };
    let mut top = Section::new("", Some(&root), &env)?;
    top.accept(&["environment_variables"]);

    let mut server = read_server(&mut top.section("switchboard")?, &mut warnings)?;
    let general = read_general(top.section("general_settings")?, &mut server, &mut warnings)?;
    let mut router = RouterSettings::default();
    let (mut litellm, json_logs) =
        read_litellm_settings(top.section("litellm_settings")?, &mut router, &mut warnings)?;
    let own_json_logs = root
        .get("switchboard")
        .and_then(|s| s.get("json_logs"))
        .is_some();
    if let (Some(v), false) = (json_logs, own_json_logs) {
        server.json_logs = v;
    }
    read_router_settings(top.section("router_settings")?, &mut router, &mut warnings)?;
    if litellm.cache_redis.is_none() {
        litellm.cache_redis = super::redis::from_env(&env)?;
    }
    if router.redis.is_none() {
        router.redis = litellm.cache_redis.clone();
    }
    super::redis::apply_env_ca(&env, [&mut router.redis, &mut litellm.cache_redis]);

    let mut deployments = Vec::new();
    for (i, (path, value)) in sequence("model_list", top.value("model_list"))?
        .into_iter()
        .enumerate()
    {
        deployments.push(read_deployment(i, path, value, &env, &mut warnings)?);
    }
    if !litellm.additional_drop_params.is_empty() {
        for d in &mut deployments {
            let drop = &mut d.params.call_defaults.drop;
            for name in &litellm.additional_drop_params {
                if !drop.contains(name) {
                    drop.push(name.clone());
                }
            }
        }
    }
    disambiguate_derived_ids(&mut deployments);
    check_unique_ids(&deployments)?;
    check_group_references(&router, &deployments)?;

    for key in IGNORED_TOP_LEVEL {
        if top.value(key).is_some() {
            warnings.push(format!(
                "{key}: not implemented by Switchboard yet; ignored"
            ));
        }
    }
    top.finish(&mut warnings);
    let telemetry = super::telemetry::resolve(
        &super::telemetry::TelemetryRequest {
            callbacks: &litellm.telemetry_callbacks,
            capture_content: server.otel_capture_content,
            turn_off_message_logging: litellm.turn_off_message_logging,
            content_max_bytes: server.otel_content_max_bytes,
        },
        &|var| env.lookup(var),
        &mut warnings,
    );

    Ok(Config {
        source: PathBuf::new(),
        server,
        general,
        litellm,
        router,
        deployments,
        warnings,
        telemetry,
    })
}

fn read_environment_variables(
    value: Option<&Value>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut out = HashMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let key = k.as_str().ok_or_else(|| {
                    ConfigError::new("environment_variables", "keys must be strings")
                })?;
                let val = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(ConfigError::new(
                            format!("environment_variables.{key}"),
                            format!("expected a string, found {}", type_name(other)),
                        ))
                    }
                };
                out.insert(key.to_string(), val);
            }
        }
        Some(other) => {
            return Err(ConfigError::new(
                "environment_variables",
                format!("expected a mapping, found {}", type_name(other)),
            ))
        }
    }
    Ok(out)
}

fn seconds(s: &mut Section<'_>, key: &'static str) -> Result<Option<Duration>, ConfigError> {
    Ok(s.f64_in(key, 0.001, 1e7)?.map(Duration::from_secs_f64))
}

fn read_server(
    s: &mut Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<ServerSettings, ConfigError> {
    let mut out = ServerSettings::default();
    if let Some(v) = s.string("host")? {
        out.host = v;
    }
    if let Some(v) = s.u64("port")? {
        out.port = u16::try_from(v).ok().filter(|p| *p > 0).ok_or_else(|| {
            ConfigError::new(
                s.key_path("port"),
                format!("{v} is not a valid port (1-65535)"),
            )
        })?;
    }
    out.listeners = super::listeners::read(s)?;
    out.redis_failure_policy = super::redis::read_policy(s)?;
    out.redis_timeout = super::redis::read_timeout(s)?;
    if let Some(v) = s.u64("threads")? {
        if v == 0 || v > 1024 {
            return Err(ConfigError::new(
                s.key_path("threads"),
                format!("{v} is out of range (1-1024)"),
            ));
        }
        out.threads = v as usize;
    }
    if let Some(v) = s.bool("work_stealing")? {
        out.work_stealing = v;
    }
    if let Some(v) = s.string("pid_file")? {
        out.pid_file = v;
    }
    if let Some(v) = s.string("upgrade_sock")? {
        out.upgrade_sock = v;
    }
    out.state_dir = s.string("state_dir")?.map(std::path::PathBuf::from);
    out.error_log = s.string("error_log")?;
    if let Some(v) = s.u64("grace_period_seconds")? {
        out.grace_period_seconds = v;
    }
    if let Some(v) = s.u64("graceful_shutdown_timeout_seconds")? {
        out.graceful_shutdown_timeout_seconds = v;
    }
    if let Some(v) = s.u64("upstream_keepalive_pool_size")? {
        out.upstream_keepalive_pool_size = v as usize;
    }
    if let Some(v) = seconds(s, "upstream_idle_timeout")? {
        out.upstream_idle_timeout = v;
    }
    if let Some(v) = seconds(s, "connect_timeout")? {
        out.connect_timeout = v;
    }
    if let Some(v) = s.bool("json_logs")? {
        out.json_logs = v;
    }
    if let Some(v) = s.bool("otel_capture_content")? {
        out.otel_capture_content = v;
    }
    if let Some(v) = s.u64("otel_content_max_bytes")? {
        out.otel_content_max_bytes = v.min(1 << 20) as usize;
    }
    if let Some(v) = s.string("log_level")? {
        out.log_level = v.parse().map_err(|_| {
            ConfigError::new(
                s.key_path("log_level"),
                format!("unknown level \"{v}\" (error, warn, info, debug, trace)"),
            )
        })?;
    }
    if let Some(v) = seconds(s, "client_write_timeout_seconds")? {
        out.client_write_timeout = v;
    }
    if let Some(v) = seconds(s, "request_body_timeout_seconds")? {
        out.request_body_timeout = v;
    }
    if let Some(v) = seconds(s, "request_header_timeout_seconds")? {
        out.request_header_timeout = v;
    }
    if let Some(kb) = s.f64_in("max_request_header_kb", 1.0, 1024.0)? {
        out.max_request_header = (kb * 1024.0) as usize;
    }
    if let Some(n) = s.u64("max_connections")? {
        out.max_connections = usize::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
            ConfigError::new(
                s.key_path("max_connections"),
                format!("{n} is out of range (at least 1)"),
            )
        })?;
    }
    if let Some(v) = s.u64("max_stream_event_bytes")? {
        let (min, max) = crate::codec::limits::MAX_STREAM_EVENT_BYTES_RANGE;
        out.max_stream_event_bytes = usize::try_from(v)
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ConfigError::new(
                    s.key_path("max_stream_event_bytes"),
                    format!("{v} is out of range ({min}-{max} bytes)"),
                )
            })?;
    }
    if let Some(list) = cidr_list(s, "trusted_proxies")? {
        out.trusted_proxies = list;
    }
    if let Some(name) = s.string("forwarded_header")? {
        out.forwarded_header = ForwardedHeader::from_name(&name).ok_or_else(|| {
            ConfigError::new(
                s.key_path("forwarded_header"),
                format!("unknown header \"{name}\" (x-forwarded-for or forwarded)"),
            )
        })?;
    }
    if let Some(v) = s.bool("proxy_protocol")? {
        if v && out.listeners.is_some() {
            return Err(ConfigError::new(
                s.key_path("proxy_protocol"),
                "with a listeners list, set proxy_protocol on each listener that takes it",
            ));
        }
        out.proxy_protocol = v;
    }
    if let Some(v) = s.bool("n_fanout")? {
        out.n_fanout = v;
    }
    if let Some(v) = s.u64("max_n")? {
        if !(1..=128).contains(&v) {
            return Err(ConfigError::new(
                s.key_path("max_n"),
                format!("{v} is out of range (1-128)"),
            ));
        }
        out.max_n = v;
    }
    if let Some(v) = s.u64("budget_exceeded_status")? {
        out.budget_exceeded_status = u16::try_from(v)
            .ok()
            .filter(|c| (400..=599).contains(c))
            .ok_or_else(|| {
                ConfigError::new(
                    s.key_path("budget_exceeded_status"),
                    format!("{v} is not an error status (400-599; LiteLLM sends 422)"),
                )
            })?;
    }
    if let Some(v) = s.string("unpriced_budget_policy")? {
        out.unpriced_budget_policy = match v.as_str() {
            "allow" => super::UnpricedBudgetPolicy::Allow,
            "deny" => super::UnpricedBudgetPolicy::Deny,
            _ => {
                return Err(ConfigError::new(
                    s.key_path("unpriced_budget_policy"),
                    format!("unknown policy \"{v}\" (allow or deny)"),
                ))
            }
        };
    }
    if let Some(v) = s.u64("budget_default_max_tokens")? {
        if v == 0 || v > 10_000_000 {
            return Err(ConfigError::new(
                s.key_path("budget_default_max_tokens"),
                format!("{v} is out of range (1-10000000)"),
            ));
        }
        out.budget_default_max_tokens = v;
    }
    if let Some(v) = s.f64_in("budget_reservation_ttl_s", 1.0, 86_400.0)? {
        out.budget_reservation_ttl = Duration::from_secs_f64(v);
    }
    let section = std::mem::replace(s, Section::new("", None, s.env())?);
    section.finish(warnings);
    Ok(out)
}

/// A list of addresses or CIDR blocks (a list, or one comma-separated string).
fn cidr_list(s: &mut Section<'_>, key: &'static str) -> Result<Option<Vec<Cidr>>, ConfigError> {
    let Some(items) = s.string_list(key)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for part in item.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.push(
                part.parse().map_err(|e: String| {
                    ConfigError::new(format!("{}[{i}]", s.key_path(key)), e)
                })?,
            );
        }
    }
    Ok(Some(out))
}

/// A list of strings for a CORS key: LiteLLM's environment variable (comma-separated) wins over
/// the config key (a list or a comma-separated string). `None`: neither is set.
fn cors_list(
    s: &mut Section<'_>,
    key: &'static str,
    env_vars: &[&str],
) -> Result<Option<Vec<String>>, ConfigError> {
    let from_config = s.string_list(key)?;
    let raw = match env_vars.iter().find_map(|v| s.env().lookup(v)) {
        Some(env) => vec![env],
        None => match from_config {
            Some(list) => list,
            None => return Ok(None),
        },
    };
    Ok(Some(
        raw.iter()
            .flat_map(|item| item.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
    ))
}

/// `true`/`1`/`yes` (any case) as LiteLLM reads `LITELLM_CORS_ALLOW_CREDENTIALS`.
fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

fn read_cors(s: &mut Section<'_>) -> Result<CorsSettings, ConfigError> {
    let wildcard = |list: Option<Vec<String>>| match list {
        Some(l) if l.iter().any(|x| x == "*") => None,
        other => other,
    };
    let origins = wildcard(cors_list(
        s,
        "cors_allow_origins",
        &["LITELLM_CORS_ALLOW_ORIGINS", "LITELLM_CORS_ORIGINS"],
    )?);
    let config_credentials = s.bool("cors_allow_credentials")?;
    let credentials = match s.env().lookup("LITELLM_CORS_ALLOW_CREDENTIALS") {
        Some(v) => truthy(&v),
        None => config_credentials.unwrap_or(false),
    };
    let methods = wildcard(cors_list(
        s,
        "cors_allow_methods",
        &["LITELLM_CORS_ALLOW_METHODS"],
    )?)
    .map(|l| l.into_iter().map(|m| m.to_ascii_uppercase()).collect());
    let headers = wildcard(cors_list(
        s,
        "cors_allow_headers",
        &["LITELLM_CORS_ALLOW_HEADERS"],
    )?)
    .map(|l| l.into_iter().map(|h| h.to_ascii_lowercase()).collect());
    Ok(CorsSettings {
        // Never `Access-Control-Allow-Credentials` with `*` (browsers refuse it, and echoing
        // any origin with credentials would let every site act as the user).
        credentials: credentials && origins.is_some(),
        origins,
        methods,
        headers,
    })
}

/// Also settles `server.trusted_proxies` from LiteLLM's keys and checks `proxy_protocol`
/// against it.
fn read_general(
    mut s: Section<'_>,
    server: &mut ServerSettings,
    warnings: &mut Vec<String>,
) -> Result<GeneralSettings, ConfigError> {
    let master_key = s.string("master_key")?.filter(|k| !k.is_empty());
    let mb = s
        .f64_in("max_request_size_mb", 0.000001, 100_000.0)?
        .unwrap_or(100.0);
    let database_url = s.string("database_url")?.filter(|u| !u.is_empty());
    let proxy_batch_write_at = s
        .f64_in("proxy_batch_write_at", 0.01, 3600.0)?
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(10));
    let litellm_key_header_name = s
        .string("litellm_key_header_name")?
        .filter(|h| !h.is_empty())
        .map(|h| h.to_ascii_lowercase());
    let allowed_ips = cidr_list(&mut s, "allowed_ips")?;
    let cors = read_cors(&mut s)?;
    let env = s.env();
    let health = read_health_alerting(&mut s, env, warnings)?;
    // LiteLLM's names for believing X-Forwarded-For: `use_x_forwarded_for` with the proxies in
    // `mcp_trusted_proxy_ranges`. Used when `switchboard.trusted_proxies` is not set.
    let use_xff = s.bool("use_x_forwarded_for")?.unwrap_or(false);
    let ranges = cidr_list(&mut s, "mcp_trusted_proxy_ranges")?.unwrap_or_default();
    if use_xff {
        if server.trusted_proxies.is_empty() {
            server.trusted_proxies = ranges;
        }
        if server.trusted_proxies.is_empty() {
            warnings.push(
                "general_settings.use_x_forwarded_for: X-Forwarded-For is believed only from \
                 switchboard.trusted_proxies (or general_settings.mcp_trusted_proxy_ranges); \
                 neither is set, so the header is ignored"
                    .to_string(),
            );
        }
    }
    let with_pp = server.listeners().into_iter().find(|l| l.proxy_protocol);
    if let (Some(l), true) = (with_pp, server.trusted_proxies.is_empty()) {
        let at = if server.listeners.is_some() {
            format!("{}.proxy_protocol", l.key_path)
        } else {
            "switchboard.proxy_protocol".to_string()
        };
        return Err(ConfigError::new(
            at,
            "PROXY protocol headers are accepted only from switchboard.trusted_proxies; list the \
             load balancers' addresses there (0.0.0.0/0 and ::/0 trust every peer)",
        ));
    }
    s.finish(warnings);
    Ok(GeneralSettings {
        master_key,
        max_request_size: (mb * 1024.0 * 1024.0) as usize,
        database_url,
        proxy_batch_write_at,
        litellm_key_header_name,
        allowed_ips,
        cors,
        health,
    })
}

/// LiteLLM's alert types (`AlertType` in `litellm/proxy/_types.py`).
pub const ALERT_TYPES: &[&str] = &[
    "llm_exceptions",
    "llm_too_slow",
    "llm_requests_hanging",
    "budget_alerts",
    "spend_reports",
    "failed_tracking_spend",
    "db_exceptions",
    "daily_reports",
    "cooldown_deployment",
    "new_model_added",
    "outage_alerts",
    "region_outage_alerts",
    "fallback_reports",
    "new_virtual_key_created",
    "virtual_key_updated",
    "virtual_key_deleted",
    "new_team_created",
    "team_updated",
    "team_deleted",
    "new_internal_user_created",
    "internal_user_updated",
    "internal_user_deleted",
    "soft_budget_crossed",
];

/// `background_health_checks`, `health_check_interval`, `alerting`, `alerting_threshold`,
/// `alert_types`; the webhook URLs from `SLACK_WEBHOOK_URL` / `WEBHOOK_URL`. LiteLLM's
/// settings that Switchboard accepts but that would do nothing (the `email` destination, alert
/// types it never raises) are warnings naming their key path, never failures.
fn read_health_alerting(
    s: &mut Section<'_>,
    env: &Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<HealthAlertSettings, ConfigError> {
    let mut out = HealthAlertSettings::default();
    if let Some(v) = s.bool("background_health_checks")? {
        out.background_health_checks = v;
    }
    if let Some(v) = s.f64_in("health_check_interval", 1.0, 86_400.0 * 7.0)? {
        out.health_check_interval = Duration::from_secs_f64(v);
    }
    if let Some(v) = s.f64_in("alerting_threshold", 0.001, 86_400.0)? {
        out.alerting_threshold = Duration::from_secs_f64(v);
    }
    if let Some(list) = s.string_list("alerting")? {
        for (i, name) in list.iter().enumerate() {
            if !matches!(name.as_str(), "slack" | "webhook" | "email") {
                return Err(ConfigError::new(
                    format!("{}[{i}]", s.key_path("alerting")),
                    format!("unknown alerting destination \"{name}\" (slack, webhook or email)"),
                ));
            }
            if name == "email" {
                warnings.push(format!(
                    "{}[{i}]: \"email\" alerts are not sent by Switchboard (it has no mail sender); this destination gets nothing. Use slack (SLACK_WEBHOOK_URL) or webhook (WEBHOOK_URL)",
                    s.key_path("alerting")
                ));
            }
        }
        out.alerting = list;
    }
    if let Some(list) = s.string_list("alert_types")? {
        for (i, name) in list.iter().enumerate() {
            if !ALERT_TYPES.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("{}[{i}]", s.key_path("alert_types")),
                    format!(
                        "unknown alert type \"{name}\" (LiteLLM's: {})",
                        ALERT_TYPES.join(", ")
                    ),
                ));
            }
            if !crate::alerting::RAISED_ALERT_TYPES.contains(&name.as_str()) {
                warnings.push(format!(
                    "{}[{i}]: alert type \"{name}\" is never raised by Switchboard, so it sends nothing; the types it raises are {}",
                    s.key_path("alert_types"),
                    crate::alerting::RAISED_ALERT_TYPES.join(", ")
                ));
            }
        }
        out.alert_types = Some(list);
    }
    let mut args = s.section("alerting_args")?;
    if let Some(v) = args.f64_in("daily_report_frequency", 1.0, 86_400.0 * 31.0)? {
        out.daily_report_frequency = Duration::from_secs_f64(v);
    }
    if let Some(v) = args.f64_in("report_check_interval", 0.1, 86_400.0)? {
        out.report_check_interval = Duration::from_secs_f64(v);
    }
    s.accept(&["health_check_details"]);
    out.slack_webhook_url = env.lookup("SLACK_WEBHOOK_URL").filter(|u| !u.is_empty());
    out.webhook_url = env.lookup("WEBHOOK_URL").filter(|u| !u.is_empty());
    Ok(out)
}

/// Also returns `json_logs`, which sets the diagnostic log format unless `switchboard.json_logs`
/// does.
fn read_litellm_settings(
    mut s: Section<'_>,
    router: &mut RouterSettings,
    warnings: &mut Vec<String>,
) -> Result<(LitellmSettings, Option<bool>), ConfigError> {
    let drop_list = match s.value("drop_params") {
        Some(Value::Sequence(_)) => {
            let path = s.key_path("drop_params");
            let names = s.string_list("drop_params")?.unwrap_or_default();
            call_defaults::drop_names(&path, names)?
        }
        _ => Vec::new(),
    };
    let mut out = LitellmSettings {
        drop_params: match drop_list.is_empty() {
            true => s.bool("drop_params")?.unwrap_or(false),
            false => false,
        },
        additional_drop_params: drop_list,
        request_timeout: seconds(&mut s, "request_timeout")?,
        require_auth_for_metrics_endpoint: s
            .bool("require_auth_for_metrics_endpoint")?
            .unwrap_or(false),
        telemetry_callbacks: Vec::new(),
        turn_off_message_logging: s.bool("turn_off_message_logging")?.unwrap_or(false),
        cache_redis: None,
        cache: None,
        limit_defaults: super::limits::read(&mut s, warnings)?,
    };
    let cache_on = s.bool("cache")?.unwrap_or(false);
    let mut cache_params = s.section("cache_params")?;
    out.cache_redis = super::redis::read_cache_params(&mut cache_params)?;
    out.cache = super::cache::read(cache_on, &mut cache_params, warnings)?;
    cache_params.finish(warnings);
    read_shared_routing_keys(&mut s, router)?;
    let json_logs = s.bool("json_logs")?;
    out.telemetry_callbacks = read_callbacks(&mut s, warnings)?;
    s.accept(&["set_verbose"]);
    s.finish(warnings);
    Ok((out, json_logs))
}

/// Callbacks Switchboard provides itself: `prometheus` is `/metrics`; the telemetry ones
/// ([`super::telemetry::TELEMETRY_CALLBACKS`]) export over OTLP.
const BUILT_IN_CALLBACKS: &[&str] = &["prometheus"];

/// `callbacks` / `success_callback` / `failure_callback`: `prometheus` is served by `/metrics`
/// and accepted silently; the telemetry callbacks are returned; any other callback is named in
/// one warning per key.
fn read_callbacks(
    s: &mut Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, ConfigError> {
    let mut telemetry = Vec::new();
    for key in [
        "callbacks",
        "success_callback",
        "failure_callback",
        "service_callback",
    ] {
        let path = s.key_path(key);
        let names = match s.value(key) {
            None => continue,
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{v:?}"))
                })
                .collect::<Vec<_>>(),
            Some(Value::String(one)) => vec![one.clone()],
            Some(other) => {
                return Err(ConfigError::new(
                    path,
                    format!(
                        "expected a list of callback names, found {}",
                        type_name(other)
                    ),
                ))
            }
        };
        let ignored: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !BUILT_IN_CALLBACKS.contains(n))
            .filter(|n| {
                let ours = super::telemetry::TELEMETRY_CALLBACKS.contains(n);
                if ours && !telemetry.iter().any(|t| t == n) {
                    telemetry.push(n.to_string());
                }
                !ours
            })
            .collect();
        if !ignored.is_empty() {
            warnings.push(format!(
                "{path}: not implemented by Switchboard yet; ignored: {} (prometheus is served on /metrics)",
                ignored.join(", ")
            ));
        }
    }
    Ok(telemetry)
}

/// Routing keys LiteLLM accepts in both `litellm_settings` and `router_settings`.
fn read_shared_routing_keys(
    s: &mut Section<'_>,
    out: &mut RouterSettings,
) -> Result<(), ConfigError> {
    if let Some(n) = s.u64("num_retries")? {
        out.num_retries = small_count(s, "num_retries", n)?;
    }
    if let Some(v) = seconds_or_zero(s, "retry_after")? {
        out.retry_after = v;
    }
    if let Some(n) = s.u64("allowed_fails")? {
        out.allowed_fails = Some(small_count(s, "allowed_fails", n)?);
    }
    if let Some(v) = seconds_or_zero(s, "cooldown_time")? {
        out.cooldown_time = v;
    }
    if let Some(v) = s.bool("disable_cooldowns")? {
        out.disable_cooldowns = v;
    }
    if let Some(n) = s.u64("max_fallbacks")? {
        out.max_fallbacks = small_count(s, "max_fallbacks", n)? as usize;
    }
    if let Some(v) = fallback_rules(s, "fallbacks")? {
        out.fallbacks = v;
    }
    if let Some(v) = fallback_rules(s, "context_window_fallbacks")? {
        out.context_window_fallbacks = v;
    }
    if let Some(v) = fallback_rules(s, "content_policy_fallbacks")? {
        out.content_policy_fallbacks = v;
    }
    if let Some(v) = s.string_list("default_fallbacks")? {
        out.default_fallbacks = v;
    }
    Ok(())
}

fn read_router_settings(
    mut s: Section<'_>,
    out: &mut RouterSettings,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    out.timeout = seconds(&mut s, "timeout")?;
    out.stream_timeout = seconds(&mut s, "stream_timeout")?;
    read_shared_routing_keys(&mut s, out)?;
    if let Some(name) = s.string("routing_strategy")? {
        out.routing_strategy = RoutingStrategy::from_name(name.trim()).ok_or_else(|| {
            ConfigError::new(
                s.key_path("routing_strategy"),
                format!(
                    "unknown routing strategy \"{name}\" (expected one of {})",
                    RoutingStrategy::NAMES.join(", ")
                ),
            )
        })?;
    }
    let mut args = s.section("routing_strategy_args")?;
    if let Some(b) = args.f64_in("lowest_latency_buffer", 0.0, 1e6)? {
        out.lowest_latency_buffer = b;
    }
    // The latency window is a moving average here; its TTL and list size have no meaning.
    args.accept(&["ttl", "max_latency_list_size"]);
    args.finish(warnings);
    out.retry_policy = class_policy(&mut s, "retry_policy", "Retries", warnings)?;
    out.allowed_fails_policy =
        class_policy(&mut s, "allowed_fails_policy", "AllowedFails", warnings)?;
    if let Some(v) = s.bool("enable_pre_call_checks")? {
        out.enable_pre_call_checks = v;
    }
    out.model_group_alias = group_aliases(&mut s)?;
    out.default_max_parallel_requests = s.u64("default_max_parallel_requests")?;
    out.cooldown_wait = seconds(&mut s, "cooldown_wait")?;
    if let Some(v) = s.bool("enable_tag_filtering")? {
        out.enable_tag_filtering = v;
    }
    if let Some(v) = s.bool("tag_filtering_match_any")? {
        out.tag_filtering_match_any = v;
    }
    out.redis = super::redis::read_router(&mut s)?;
    s.finish(warnings);
    Ok(())
}

fn seconds_or_zero(
    s: &mut Section<'_>,
    key: &'static str,
) -> Result<Option<Duration>, ConfigError> {
    Ok(s.f64_in(key, 0.0, 1e7)?.map(Duration::from_secs_f64))
}

fn small_count(s: &Section<'_>, key: &str, n: u64) -> Result<u32, ConfigError> {
    u32::try_from(n)
        .ok()
        .filter(|n| *n <= 1000)
        .ok_or_else(|| ConfigError::new(s.key_path(key), format!("{n} is out of range (0-1000)")))
}

/// `[{"group": ["fallback1", "fallback2"]}, ...]` (a single mapping is accepted too).
fn fallback_rules(
    s: &mut Section<'_>,
    key: &'static str,
) -> Result<Option<BTreeMap<String, Vec<String>>>, ConfigError> {
    let path = s.key_path(key);
    let Some(value) = s.value(key) else {
        return Ok(None);
    };
    let items: Vec<(String, &Value)> = match value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{path}[{i}]"), v))
            .collect(),
        Value::Mapping(_) => vec![(path.clone(), value)],
        other => {
            return Err(ConfigError::new(
                path,
                format!(
                    "expected a list of {{group: [fallback groups]}}, found {}",
                    type_name(other)
                ),
            ))
        }
    };
    let mut out = BTreeMap::new();
    for (item_path, item) in items {
        let Value::Mapping(m) = item else {
            return Err(ConfigError::new(
                item_path,
                format!(
                    "expected a mapping {{group: [fallback groups]}}, found {}",
                    type_name(item)
                ),
            ));
        };
        for (k, v) in m {
            let group = k
                .as_str()
                .ok_or_else(|| ConfigError::new(&item_path, "group names must be strings"))?;
            let target_path = format!("{item_path}.{group}");
            let targets = match v {
                Value::String(t) => vec![t.clone()],
                Value::Sequence(ts) => ts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        t.as_str().map(str::to_string).ok_or_else(|| {
                            ConfigError::new(
                                format!("{target_path}[{i}]"),
                                format!("expected a group name, found {}", type_name(t)),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => {
                    return Err(ConfigError::new(
                        target_path,
                        format!("expected a list of group names, found {}", type_name(other)),
                    ))
                }
            };
            out.insert(group.to_string(), targets);
        }
    }
    Ok(Some(out))
}

/// `retry_policy` / `allowed_fails_policy`: `{<Class><suffix>: n}`.
fn class_policy(
    s: &mut Section<'_>,
    key: &'static str,
    suffix: &str,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<ErrorClass, u32>, ConfigError> {
    let mut section = s.section(key)?;
    let mut out = BTreeMap::new();
    for name in section.keys() {
        let class = name
            .strip_suffix(suffix)
            .and_then(|c| ErrorClass::ALL.iter().find(|(_, n)| *n == c))
            .map(|(c, _)| *c);
        let Some(class) = class else {
            // LiteLLM's RetryPolicy / AllowedFailsPolicy models drop unknown keys: so do we,
            // loudly (a misspelled class silently keeps the default count).
            let known: Vec<String> = ErrorClass::ALL
                .iter()
                .map(|(_, n)| format!("{n}{suffix}"))
                .collect();
            warnings.push(format!(
                "{}: unknown error class, ignored (expected one of {})",
                section.key_path(name),
                known.join(", ")
            ));
            section.accept(&[name]);
            continue;
        };
        if let Some(n) = section.u64(name)? {
            out.insert(class, small_count(&section, name, n)?);
        }
    }
    Ok(out)
}

/// `model_group_alias: {alias: group}` or `{alias: {model: group, hidden: bool}}`.
fn group_aliases(s: &mut Section<'_>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut section = s.section("model_group_alias")?;
    let mut out = BTreeMap::new();
    for alias in section.keys() {
        let path = section.key_path(alias);
        let target = match section.value(alias) {
            Some(Value::String(t)) => t.clone(),
            Some(Value::Mapping(m)) => m
                .get("model")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    ConfigError::new(format!("{path}.model"), "required: the group name")
                })?,
            Some(other) => {
                return Err(ConfigError::new(
                    path,
                    format!("expected a group name, found {}", type_name(other)),
                ))
            }
            None => continue,
        };
        out.insert(alias.to_string(), target);
    }
    Ok(out)
}

/// Fallbacks and aliases must name groups that exist (a typo would otherwise surface only when
/// the primary group fails, which is the worst moment to learn about it).
fn check_group_references(
    router: &RouterSettings,
    deployments: &[DeploymentConfig],
) -> Result<(), ConfigError> {
    let known = |name: &str| {
        deployments.iter().any(|d| d.model_name == name)
            || router.model_group_alias.contains_key(name)
    };
    let unknown = |path: String, name: &str| {
        ConfigError::new(
            path,
            format!("\"{name}\" is not a model_name in model_list (nor a model_group_alias)"),
        )
    };
    for (alias, target) in &router.model_group_alias {
        if !deployments.iter().any(|d| &d.model_name == target) {
            return Err(unknown(
                format!("router_settings.model_group_alias.{alias}"),
                target,
            ));
        }
    }
    for (key, rules) in [
        ("fallbacks", &router.fallbacks),
        ("context_window_fallbacks", &router.context_window_fallbacks),
        ("content_policy_fallbacks", &router.content_policy_fallbacks),
    ] {
        for (group, targets) in rules {
            for (i, t) in targets.iter().enumerate() {
                if !known(t) {
                    return Err(unknown(format!("router_settings.{key}.{group}[{i}]"), t));
                }
            }
        }
    }
    for (i, t) in router.default_fallbacks.iter().enumerate() {
        if !known(t) {
            return Err(unknown(
                format!("router_settings.default_fallbacks[{i}]"),
                t,
            ));
        }
    }
    Ok(())
}

/// The largest compiled program a `tag_regex` pattern may have (the regex crate's own bound).
pub const TAG_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `litellm_params.tag_regex`: LiteLLM's patterns are Python's; one Rust's `regex` does not
/// take (lookaround, backreferences) or that is too large is warned about, naming it, and left
/// out, as LiteLLM leaves out a pattern it cannot compile.
fn tag_regex(lp: &mut Section<'_>, warnings: &mut Vec<String>) -> Result<Vec<String>, ConfigError> {
    let path = lp.key_path("tag_regex");
    let patterns = lp.string_list("tag_regex")?.unwrap_or_default();
    Ok(patterns
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| match compile_tag_regex(&p) {
            Ok(_) => Some(p),
            Err(e) => {
                warnings.push(format!(
                    "{path}[{i}]: {p:?} is not a pattern this gateway can use ({e}); it is left out of tag routing"
                ));
                None
            }
        })
        .collect())
}

/// Compiles a `tag_regex` pattern within [`TAG_REGEX_SIZE_LIMIT`].
pub fn compile_tag_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(TAG_REGEX_SIZE_LIMIT)
        .build()
}

fn read_deployment(
    index: usize,
    path: String,
    value: &Value,
    env: &Env<'_>,
    warnings: &mut Vec<String>,
) -> Result<DeploymentConfig, ConfigError> {
    let mut entry = Section::new(path.clone(), Some(value), env)?;
    let model_name = entry
        .string("model_name")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                format!("{path}.model_name"),
                "required: the public model name clients send",
            )
        })?;

    let mut lp = entry.section("litellm_params")?;
    let model_path = lp.key_path("model");
    let full_model = lp
        .string("model")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                &model_path,
                "required: \"<provider>/<model>\", e.g. openai/gpt-4o",
            )
        })?;
    let custom_provider = lp.string("custom_llm_provider")?;
    let (provider, model) = match (custom_provider, full_model.split_once('/')) {
        (Some(p), _) => {
            let m = full_model
                .strip_prefix(&format!("{p}/"))
                .unwrap_or(&full_model)
                .to_string();
            (p, m)
        }
        (None, Some((p, m))) => (p.to_string(), m.to_string()),
        // LiteLLM treats a bare model name as OpenAI's.
        (None, None) => ("openai".to_string(), full_model.clone()),
    };

    // LiteLLM also reads rpm/tpm written beside litellm_params (litellm_params wins).
    let entry_rpm = entry.u64("rpm")?;
    let entry_tpm = entry.u64("tpm")?;
    let mut params = LitellmParams {
        api_base: lp
            .string("api_base")?
            .map(|s| s.trim_end_matches('/').to_string()),
        api_key: lp.string("api_key")?,
        api_version: lp.string("api_version")?,
        organization: lp.string("organization")?,
        timeout: seconds(&mut lp, "timeout")?,
        stream_timeout: seconds(&mut lp, "stream_timeout")?,
        rpm: lp.u64("rpm")?.or(entry_rpm),
        tpm: lp.u64("tpm")?.or(entry_tpm),
        weight: lp.f64_in("weight", 0.0, 1e9)?,
        mock_response: lp.string("mock_response")?,
        drop_params: match lp.value("drop_params") {
            // A list of names is LiteLLM's `additional_drop_params` (read below).
            Some(Value::Sequence(_)) => None,
            _ => lp.bool("drop_params")?,
        },
        order: lp
            .u64("order")?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        max_parallel_requests: lp.u64("max_parallel_requests")?,
        num_retries: match lp.u64("num_retries")? {
            Some(n) => Some(small_count(&lp, "num_retries", n)?),
            None => None,
        },
        input_cost_per_token: lp.f64_in("input_cost_per_token", 0.0, 1e6)?,
        output_cost_per_token: lp.f64_in("output_cost_per_token", 0.0, 1e6)?,
        call_defaults: CallDefaults::read(&mut lp)?,
        tags: lp.string_list("tags")?.unwrap_or_default(),
        tag_regex: tag_regex(&mut lp, warnings)?,
        extra: Default::default(),
    };
    if let Some(Value::Sequence(_)) = lp.value("drop_params") {
        let path = lp.key_path("drop_params");
        let names = lp.string_list("drop_params")?.unwrap_or_default();
        params
            .call_defaults
            .drop
            .extend(call_defaults::drop_names(&path, names)?);
    }
    // LiteLLM sets this itself; the router owns retries.
    lp.accept(&["max_retries"]);
    for key in lp.keys() {
        if PROVIDER_PARAMS.contains(&key) {
            if let Some(v) = lp.json(key)? {
                params.extra.insert(key.to_string(), v);
            }
        }
    }
    // Providers read the default `max_tokens` from `extra`: give them the checked number
    // (`4_096`, an environment value) the body default carries.
    if let Some(f) = params.call_defaults.field("max_tokens") {
        if let Ok(v) = serde_json::from_str(f.get()) {
            params.extra.insert("max_tokens".into(), v);
        }
    }
    lp.finish(warnings);

    let mut mi = entry.section("model_info")?;
    let id = mi.string("id")?;
    // LiteLLM also takes prices from model_info.
    if params.input_cost_per_token.is_none() {
        params.input_cost_per_token = mi.f64_in("input_cost_per_token", 0.0, 1e6)?;
    }
    if params.output_cost_per_token.is_none() {
        params.output_cost_per_token = mi.f64_in("output_cost_per_token", 0.0, 1e6)?;
    }
    let mut model_info = ModelInfo {
        mode: mi.string("mode")?,
        base_model: mi.string("base_model")?,
        max_tokens: mi.u64("max_tokens")?,
        max_input_tokens: mi.u64("max_input_tokens")?,
        max_output_tokens: mi.u64("max_output_tokens")?,
        metadata: Default::default(),
        health_check: read_health_check(&mut mi)?,
    };
    if let Some(mode) = &model_info.mode {
        if let Some(warning) = mode_warning(mode) {
            warnings.push(format!("{}: {warning}", mi.key_path("mode")));
        }
    }
    // LiteLLM's model_info takes any key (`supports_*`, `description`, prices, …): kept as
    // written for GET /model/info, never warned about.
    for key in mi.keys() {
        if matches!(
            key,
            "id" | "mode"
                | "base_model"
                | "max_tokens"
                | "max_input_tokens"
                | "max_output_tokens"
                | "health_check"
        ) {
            continue;
        }
        if let Some(v) = mi.json(key)? {
            model_info.metadata.insert(key.to_string(), v);
        }
    }
    mi.finish(warnings);
    entry.finish(warnings);

    let derived_id = id.is_none();
    let id = id
        .unwrap_or_else(|| stable_id(&model_name, &full_model, params.api_base.as_deref(), index));
    Ok(DeploymentConfig {
        derived_id,
        index,
        model_name,
        id,
        provider,
        model,
        params,
        model_info,
    })
}

/// Model modes Switchboard serves (`completion` deployments are called through chat).
const SERVED_MODES: &[&str] = &["chat", "completion", "embedding"];

/// Modes LiteLLM names (its `model_prices_and_context_window.json` and health checks).
const LITELLM_MODES: &[&str] = &[
    "chat",
    "completion",
    "embedding",
    "image_generation",
    "image_edit",
    "audio_transcription",
    "audio_speech",
    "video_generation",
    "rerank",
    "moderation",
    "moderations",
    "responses",
    "realtime",
    "batch",
    "ocr",
    "search",
];

/// LiteLLM accepts any `model_info.mode` (it only steers its health checks): a mode
/// Switchboard cannot serve loads with a warning instead of failing the whole config.
fn mode_warning(mode: &str) -> Option<String> {
    if SERVED_MODES.contains(&mode) {
        return None;
    }
    Some(if LITELLM_MODES.contains(&mode) {
        format!(
            "mode \"{mode}\" is not served by Switchboard yet (it serves {}); the deployment loads, and only chat or embeddings requests reach it",
            SERVED_MODES.join(", ")
        )
    } else {
        format!(
            "unknown mode \"{mode}\" (LiteLLM's modes: {}); the deployment loads, and only chat or embeddings requests reach it",
            LITELLM_MODES.join(", ")
        )
    })
}

fn read_health_check(mi: &mut Section<'_>) -> Result<Option<HealthCheckConfig>, ConfigError> {
    if mi.value("health_check").is_none() {
        return Ok(None);
    }
    let mut hc = mi.section("health_check")?;
    let kind = hc.string("type")?;
    let path = hc.string("path")?;
    let http_path = match (kind.as_deref(), path) {
        (Some("tcp"), None) => None,
        (Some("tcp"), Some(_)) => {
            return Err(ConfigError::new(
                hc.key_path("path"),
                "a tcp check has no path (use type: http)",
            ))
        }
        (None | Some("http"), p) => {
            let p = p.unwrap_or_else(|| "/health".to_string());
            if !p.starts_with('/') {
                return Err(ConfigError::new(hc.key_path("path"), "must start with /"));
            }
            Some(p)
        }
        (Some(other), _) => {
            return Err(ConfigError::new(
                hc.key_path("type"),
                format!("unknown check type \"{other}\" (tcp or http)"),
            ))
        }
    };
    let threshold = |hc: &mut Section<'_>, key: &'static str| -> Result<u32, ConfigError> {
        Ok(hc.u64(key)?.unwrap_or(1).clamp(1, 100) as u32)
    };
    let out = HealthCheckConfig {
        http_path,
        interval: hc
            .f64_in("interval", 0.01, 86_400.0)?
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(5)),
        timeout: hc
            .f64_in("timeout", 0.01, 600.0)?
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(1)),
        healthy_threshold: threshold(&mut hc, "healthy_threshold")?,
        unhealthy_threshold: threshold(&mut hc, "unhealthy_threshold")?,
    };
    let mut ignored = Vec::new();
    hc.finish(&mut ignored);
    if let Some(w) = ignored.first() {
        return Err(ConfigError::new(
            w.split(':').next().unwrap_or(""),
            "unknown health_check key (type, path, interval, timeout, healthy_threshold, unhealthy_threshold)",
        ));
    }
    Ok(Some(out))
}

/// LiteLLM derives an id from the entry when `model_info.id` is absent; ours is a stable hash of
/// what identifies the deployment, so it survives reloads that do not change the entry.
fn stable_id(model_name: &str, model: &str, api_base: Option<&str>, index: usize) -> String {
    // FNV-1a: stable across builds and platforms (unlike std's RandomState).
    let mut h: u64 = 0xcbf29ce484222325;
    for part in [model_name, model, api_base.unwrap_or("")] {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    let _ = index;
    format!("{h:016x}")
}

/// Identical entries (same group, model and api_base) are legitimate: they get `-2`, `-3`, …
/// in file order, which stays stable across reloads that keep the order.
fn disambiguate_derived_ids(deps: &mut [DeploymentConfig]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for d in deps.iter_mut().filter(|d| d.derived_id) {
        let n = seen.entry(d.id.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            d.id = format!("{}-{}", d.id, n);
        }
    }
}

fn check_unique_ids(deps: &[DeploymentConfig]) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for d in deps {
        if let Some(first) = seen.insert(&d.id, d.index) {
            return Err(ConfigError::new(
                format!("model_list[{}].model_info.id", d.index),
                format!(
                    "deployment id \"{}\" is also used by model_list[{first}]; give each deployment a distinct model_info.id",
                    d.id
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_litellm_config() {
        std::env::set_var("SB_TEST_KEY", "sk-test");
        let cfg = parse(
            r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/my-deploy
      api_base: https://x.openai.azure.com/
      api_key: os.environ/SB_TEST_KEY
      api_version: "2024-06-01"
      timeout: "30"
      rpm: 600
      fancy_new_param: 1
  - model_name: local
    litellm_params: {model: gpt-4o-mini, mock_response: "hi"}
    model_info: {id: local-1, mode: chat}
general_settings: {master_key: os.environ/MASTER, max_request_size_mb: 2}
environment_variables: {MASTER: sk-master}
litellm_settings: {drop_params: true, callbacks: [x]}
router_settings: {timeout: 12}
"#,
        )
        .unwrap();
        let d = &cfg.deployments[0];
        assert_eq!(
            (d.provider.as_str(), d.model.as_str()),
            ("azure", "my-deploy")
        );
        assert_eq!(d.params.api_key.as_deref(), Some("sk-test"));
        assert_eq!(
            d.params.api_base.as_deref(),
            Some("https://x.openai.azure.com")
        );
        assert_eq!(d.params.timeout, Some(Duration::from_secs(30)));
        assert_eq!(cfg.deployments[1].provider, "openai");
        assert_eq!(cfg.deployments[1].id, "local-1");
        assert_eq!(cfg.general.master_key.as_deref(), Some("sk-master"));
        assert_eq!(cfg.general.max_request_size, 2 * 1024 * 1024);
        assert!(cfg.litellm.drop_params);
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.starts_with("model_list[0].litellm_params.fancy_new_param")));
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.starts_with("litellm_settings.callbacks")));
    }

    #[test]
    fn n_fanout_and_max_n() {
        let c = parse("switchboard: {n_fanout: false, max_n: 16}\n").unwrap();
        assert!(!c.server.n_fanout);
        assert_eq!(c.server.max_n, 16);
        let d = parse("model_list: []\n").unwrap();
        assert!(d.server.n_fanout);
        assert_eq!(d.server.max_n, 8);
        for bad in ["switchboard: {max_n: 0}\n", "switchboard: {max_n: 129}\n"] {
            assert_eq!(parse(bad).unwrap_err().path, "switchboard.max_n", "{bad}");
        }
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let c = parse("switchboard: {client_write_timeout_seconds: 5, request_body_timeout_seconds: 7.5, request_header_timeout_seconds: 2, max_request_header_kb: 16, max_connections: 300}\n").unwrap();
        assert_eq!(c.server.client_write_timeout, Duration::from_secs(5));
        assert_eq!(c.server.request_body_timeout, Duration::from_millis(7500));
        assert_eq!(c.server.request_header_timeout, Duration::from_secs(2));
        assert_eq!(c.server.max_request_header, 16 * 1024);
        assert_eq!(c.server.max_connections, 300);
        for (yaml, path) in [
            (
                "switchboard: {client_write_timeout_seconds: 0}\n",
                "switchboard.client_write_timeout_seconds",
            ),
            (
                "switchboard: {request_body_timeout_seconds: -1}\n",
                "switchboard.request_body_timeout_seconds",
            ),
            (
                "switchboard: {request_header_timeout_seconds: x}\n",
                "switchboard.request_header_timeout_seconds",
            ),
            (
                "switchboard: {max_request_header_kb: 4096}\n",
                "switchboard.max_request_header_kb",
            ),
            (
                "switchboard: {max_connections: 0}\n",
                "switchboard.max_connections",
            ),
        ] {
            assert_eq!(parse(yaml).unwrap_err().path, path, "{yaml}");
        }
    }

    #[test]
    fn errors_name_the_key_path() {
        let err = parse(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, rpm: -3}\n",
        )
        .unwrap_err();
        assert_eq!(err.path, "model_list[0].litellm_params.rpm");
        let err = parse("model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, api_key: os.environ/SB_NOPE_NOT_SET}\n").unwrap_err();
        assert_eq!(err.path, "model_list[0].litellm_params.api_key");
        assert!(err.message.contains("SB_NOPE_NOT_SET"));
        let err = parse("model_list:\n  - litellm_params: {model: openai/x}\n").unwrap_err();
        assert_eq!(err.path, "model_list[0].model_name");
        let err = parse("general_settings: {max_request_size_mb: lots}\n").unwrap_err();
        assert_eq!(err.path, "general_settings.max_request_size_mb");
        let err = parse("model_list: {a: 1}\n").unwrap_err();
        assert_eq!(err.path, "model_list");
        let err = parse("switchboard: {port: 70000}\n").unwrap_err();
        assert_eq!(err.path, "switchboard.port");
    }

    #[test]
    fn reads_router_settings_and_routing_keys() {
        let cfg = parse(
            r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x, order: 1, max_parallel_requests: 4, num_retries: 1, input_cost_per_token: 0.000001}
  - model_name: b
    litellm_params: {model: openai/y}
    model_info: {output_cost_per_token: 0.000002}
litellm_settings: {num_retries: 7, default_fallbacks: [b], cooldown_time: 9}
router_settings:
  routing_strategy: usage-based-routing-v2
  routing_strategy_args: {ttl: 60, lowest_latency_buffer: 0.5}
  num_retries: 4
  retry_after: 0.5
  retry_policy: {RateLimitErrorRetries: 0, TimeoutErrorRetries: 2}
  allowed_fails_policy: {InternalServerErrorAllowedFails: 5}
  fallbacks: [{a: [b]}]
  context_window_fallbacks: [{a: b}]
  max_fallbacks: 2
  model_group_alias: {alias-a: a, hidden: {model: b, hidden: true}}
  default_max_parallel_requests: 10
  disable_cooldowns: true
"#,
        )
        .unwrap();
        let r = &cfg.router;
        assert_eq!(r.routing_strategy, RoutingStrategy::UsageBased);
        assert_eq!(r.lowest_latency_buffer, 0.5);
        assert_eq!(
            r.num_retries, 4,
            "router_settings wins over litellm_settings"
        );
        assert_eq!(r.cooldown_time, Duration::from_secs(9));
        assert_eq!(r.retry_after, Duration::from_millis(500));
        assert_eq!(r.retry_policy.get(&ErrorClass::RateLimit), Some(&0));
        assert_eq!(r.retry_policy.get(&ErrorClass::Timeout), Some(&2));
        assert_eq!(
            r.allowed_fails_policy.get(&ErrorClass::InternalServer),
            Some(&5)
        );
        assert_eq!(r.fallbacks["a"], ["b"]);
        assert_eq!(r.context_window_fallbacks["a"], ["b"]);
        assert_eq!(r.default_fallbacks, ["b"]);
        assert_eq!(r.max_fallbacks, 2);
        assert_eq!(r.model_group_alias["hidden"], "b");
        assert_eq!(r.default_max_parallel_requests, Some(10));
        assert!(r.disable_cooldowns);
        let p = &cfg.deployments[0].params;
        assert_eq!(
            (p.order, p.max_parallel_requests, p.num_retries),
            (Some(1), Some(4), Some(1))
        );
        assert_eq!(p.input_cost_per_token, Some(0.000001));
        assert_eq!(
            cfg.deployments[1].params.output_cost_per_token,
            Some(0.000002)
        );
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn routing_errors_name_the_key_path() {
        let base = "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n";
        let err = parse(&format!(
            "{base}router_settings: {{routing_strategy: fastest}}\n"
        ))
        .unwrap_err();
        assert_eq!(err.path, "router_settings.routing_strategy");
        assert!(err.message.contains("least-busy"));
        let err = parse(&format!(
            "{base}router_settings: {{fallbacks: [{{a: [nope]}}]}}\n"
        ))
        .unwrap_err();
        assert_eq!(err.path, "router_settings.fallbacks.a[0]");
        let err = parse(&format!(
            "{base}router_settings: {{model_group_alias: {{x: zz}}}}\n"
        ))
        .unwrap_err();
        assert_eq!(err.path, "router_settings.model_group_alias.x");
        // Keys not implemented still warn.
        let cfg = parse(&format!(
            "{base}router_settings: {{redis_host: r, enable_pre_call_checks: true, optional_pre_call_checks: []}}\n"
        ))
        .unwrap();
        assert!(cfg
            .warnings
            .iter()
            .any(|w| w.starts_with("router_settings.optional_pre_call_checks")));
        assert_eq!(cfg.router.redis.unwrap().nodes, ["redis://r:6379"]);
    }

    #[test]
    fn ops_settings() {
        let c = parse("model_list: []\nlitellm_settings: {json_logs: false, require_auth_for_metrics_endpoint: true}\n").unwrap();
        assert!(!c.server.json_logs);
        assert!(c.litellm.require_auth_for_metrics_endpoint);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // The switchboard section wins over litellm_settings.
        let c = parse("litellm_settings: {json_logs: false}\nswitchboard: {json_logs: true}\n")
            .unwrap();
        assert!(c.server.json_logs);
        assert!(!c.litellm.require_auth_for_metrics_endpoint);
    }

    #[test]
    fn max_stream_event_bytes() {
        let c = parse("model_list: []\n").unwrap();
        assert_eq!(c.server.max_stream_event_bytes, 16 * 1024 * 1024);
        let c = parse("switchboard: {max_stream_event_bytes: 65536}\n").unwrap();
        assert_eq!(c.server.max_stream_event_bytes, 65536);
        for bad in ["0", "100", "-1", "1e12", "big"] {
            let err =
                parse(&format!("switchboard: {{max_stream_event_bytes: {bad}}}\n")).unwrap_err();
            assert_eq!(err.path, "switchboard.max_stream_event_bytes", "{bad}");
        }
    }

    const BASE: &str = "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n";

    #[test]
    fn yaml11_numbers_with_underscores() {
        let c = parse(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, tpm: 20_000, rpm: 1_000, weight: 1_000.5}\n",
        )
        .unwrap();
        let p = &c.deployments[0].params;
        assert_eq!(
            (p.tpm, p.rpm, p.weight),
            (Some(20_000), Some(1_000), Some(1000.5))
        );
        let c = parse(
            "general_settings: {max_request_size_mb: 1_0}\nrouter_settings: {timeout: 1_200}\n",
        )
        .unwrap();
        assert_eq!(c.general.max_request_size, 10 * 1024 * 1024);
        assert_eq!(c.router.timeout, Some(Duration::from_secs(1200)));
        // Underscores only between digits, as in PyYAML and Python's int().
        for bad in ["_20", "20_", "2__0", "1_.5", "x_1"] {
            let err = parse(&format!(
                "model_list:\n  - model_name: a\n    litellm_params: {{model: openai/x, tpm: {bad}}}\n"
            ))
            .unwrap_err();
            assert_eq!(err.path, "model_list[0].litellm_params.tpm", "{bad}");
        }
    }

    #[test]
    fn tag_regex_patterns_that_do_not_compile_are_left_out_with_a_warning() {
        let c = parse(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, tag_regex: [\"^User-Agent: claude-cli/\", \"^(?=lookahead)\", \"x{1000}{1000}\"]}\n",
        )
        .unwrap();
        assert_eq!(
            c.deployments[0].params.tag_regex,
            ["^User-Agent: claude-cli/"]
        );
        for i in [1, 2] {
            let path = format!("model_list[0].litellm_params.tag_regex[{i}]: ");
            assert!(
                c.warnings.iter().any(|w| w.starts_with(&path)),
                "{path}: {:?}",
                c.warnings
            );
        }
        // A known key: no unknown-key warning.
        assert!(
            !c.warnings
                .iter()
                .any(|w| w.contains("tag_regex:") && w.contains("not")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn unknown_modes_load_with_a_warning() {
        for (mode, warns) in [
            ("chat", false),
            ("embedding", false),
            ("completion", false),
            ("tts", true),
            ("embeddings", true),
            ("audio_transcription", true),
            ("image_generation", true),
            ("rerank", true),
        ] {
            let c = parse(&format!(
                "model_list:\n  - model_name: a\n    litellm_params: {{model: openai/x}}\n    model_info: {{mode: {mode}}}\n"
            ))
            .unwrap();
            assert_eq!(c.deployments[0].model_info.mode.as_deref(), Some(mode));
            let warned = c
                .warnings
                .iter()
                .any(|w| w.starts_with("model_list[0].model_info.mode: ") && w.contains(mode));
            assert_eq!(warned, warns, "{mode}: {:?}", c.warnings);
        }
    }

    #[test]
    fn misspelled_retry_policy_keys_are_dropped_with_a_warning() {
        let c = parse(&format!(
            "{BASE}router_settings:\n  retry_policy: {{RateLimitRetries: 1, TimeoutErrorRetries: 3}}\n  allowed_fails_policy: {{TimeoutAllowedFails: 2}}\n"
        ))
        .unwrap();
        assert_eq!(c.router.retry_policy.len(), 1);
        assert_eq!(c.router.retry_policy[&ErrorClass::Timeout], 3);
        assert!(c.router.allowed_fails_policy.is_empty());
        assert!(c.warnings.iter().any(
            |w| w.starts_with("router_settings.retry_policy.RateLimitRetries: unknown error class")
        ));
        assert!(c.warnings.iter().any(|w| w.starts_with(
            "router_settings.allowed_fails_policy.TimeoutAllowedFails: unknown error class"
        )));
        // Not also reported as "not implemented".
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    }

    #[test]
    fn drop_params_as_a_list() {
        let c = parse(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, drop_params: [temperature, logit_bias]}\n  - model_name: b\n    litellm_params: {model: openai/y, drop_params: true, additional_drop_params: [seed]}\nlitellm_settings: {drop_params: [user]}\n",
        )
        .unwrap();
        let a = &c.deployments[0].params;
        assert_eq!(a.drop_params, None);
        assert_eq!(a.call_defaults.drop, ["temperature", "logit_bias", "user"]);
        let b = &c.deployments[1].params;
        assert_eq!(b.drop_params, Some(true));
        assert_eq!(b.call_defaults.drop, ["seed", "user"]);
        assert!(!c.litellm.drop_params);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let err = parse(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x, drop_params: [messages]}\n",
        )
        .unwrap_err();
        assert_eq!(err.path, "model_list[0].litellm_params.drop_params[0]");
    }

    #[test]
    fn rpm_and_tpm_beside_litellm_params() {
        let c = parse(
            "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n    rpm: 60\n    tpm: 90_000\n  - model_name: b\n    litellm_params: {model: openai/y, rpm: 5}\n    rpm: 60\n",
        )
        .unwrap();
        let a = &c.deployments[0].params;
        assert_eq!((a.rpm, a.tpm), (Some(60), Some(90_000)));
        assert_eq!(c.deployments[1].params.rpm, Some(5), "litellm_params wins");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let err = parse("model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n    rpm: lots\n").unwrap_err();
        assert_eq!(err.path, "model_list[0].rpm");
    }

    #[test]
    fn prometheus_callback_is_recognised() {
        let c = parse(&format!(
            "{BASE}litellm_settings: {{callbacks: [prometheus], success_callback: [\"prometheus\"], failure_callback: prometheus}}\n"
        ))
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = parse(&format!(
            "{BASE}litellm_settings: {{callbacks: [prometheus, datadog]}}\n"
        ))
        .unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("litellm_settings.callbacks: "));
        assert!(
            c.warnings[0].contains("datadog") && !c.warnings[0].contains("ignored: prometheus")
        );
    }

    #[test]
    fn model_info_metadata_is_kept_without_warnings() {
        let c = parse(
            r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/x}
    model_info:
      id: a-1
      mode: chat
      description: "Fast model"
      supports_vision: true
      supports_function_calling: true
      input_cost_per_token: 0.000_001
      max_input_tokens: 128_000
      tier: paid
"#,
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let mi = &c.deployments[0].model_info;
        assert_eq!(mi.max_input_tokens, Some(128_000));
        assert_eq!(mi.metadata["description"], "Fast model");
        assert_eq!(mi.metadata["supports_vision"], true);
        assert_eq!(mi.metadata["tier"], "paid");
        assert!(!mi.metadata.contains_key("id"));
        assert_eq!(c.deployments[0].params.input_cost_per_token, Some(0.000001));
    }

    #[test]
    fn enable_pre_call_checks() {
        let c = parse(&format!(
            "{BASE}router_settings: {{enable_pre_call_checks: true}}\n"
        ))
        .unwrap();
        assert!(c.router.enable_pre_call_checks);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(!parse(BASE).unwrap().router.enable_pre_call_checks);
    }

    #[test]
    fn default_call_params() {
        std::env::set_var("SB_TEST_TEMP", "0.25");
        let c = parse(
            r#"
model_list:
  - model_name: a
    litellm_params:
      model: hosted_vllm/x
      temperature: os.environ/SB_TEST_TEMP
      max_tokens: 4_096
      stop: ["<END>"]
      thinking: {type: enabled, budget_tokens: 1024}
      extra_body: {chat_template_kwargs: {enable_thinking: false}, temperature: 0.9, top_k: 20}
      extra_headers: {X-Tenant: acme, X-Num: 7}
"#,
        )
        .unwrap();
        let d = &c.deployments[0].params.call_defaults;
        let fields: Vec<(&str, &str, bool)> = d
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.value.get(), f.chat_only))
            .collect();
        assert_eq!(
            fields,
            [
                ("temperature", "0.25", true),
                ("max_tokens", "4096", true),
                ("stop", r#"["<END>"]"#, true),
                (
                    "thinking",
                    r#"{"budget_tokens":1024,"type":"enabled"}"#,
                    true
                ),
                (
                    "chat_template_kwargs",
                    r#"{"enable_thinking":false}"#,
                    false
                ),
                ("top_k", "20", false),
            ]
        );
        let headers: Vec<(&str, &str)> = d
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(headers, [("x-num", "7"), ("x-tenant", "acme")]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        for (yaml, path) in [
            (
                "temperature: warm",
                "model_list[0].litellm_params.temperature",
            ),
            ("max_tokens: 1.5", "model_list[0].litellm_params.max_tokens"),
            ("extra_body: [1]", "model_list[0].litellm_params.extra_body"),
            (
                "extra_body: {messages: []}",
                "model_list[0].litellm_params.extra_body.messages",
            ),
            (
                "extra_headers: {Content-Length: 3}",
                "model_list[0].litellm_params.extra_headers.Content-Length",
            ),
            (
                "extra_headers: {\"a b\": x}",
                "model_list[0].litellm_params.extra_headers.a b",
            ),
            (
                "extra_headers: {X-A: \"a\\nb\"}",
                "model_list[0].litellm_params.extra_headers.X-A",
            ),
        ] {
            let err = parse(&format!(
                "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/x\n      {yaml}\n"
            ))
            .unwrap_err();
            assert_eq!(err.path, path, "{yaml}");
        }
    }

    #[test]
    fn client_address_settings() {
        let c = parse(
            "switchboard: {trusted_proxies: [\"10.0.0.0/8\", \"::1\"], proxy_protocol: true, forwarded_header: Forwarded}\ngeneral_settings: {allowed_ips: \"192.168.1.1, 172.16.0.0/12\"}\n",
        )
        .unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert!(c.server.proxy_protocol);
        assert_eq!(c.server.forwarded_header, ForwardedHeader::Forwarded);
        assert_eq!(c.general.allowed_ips.as_ref().map(Vec::len), Some(2));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        for (yaml, path) in [
            (
                "switchboard: {trusted_proxies: [\"10.0.0.0/8\", \"10.0.0.0/40\"]}\n",
                "switchboard.trusted_proxies[1]",
            ),
            (
                "general_settings: {allowed_ips: [\"localhost\"]}\n",
                "general_settings.allowed_ips[0]",
            ),
            (
                "switchboard: {forwarded_header: x-real-ip}\n",
                "switchboard.forwarded_header",
            ),
            (
                "switchboard: {proxy_protocol: true}\n",
                "switchboard.proxy_protocol",
            ),
            (
                "switchboard: {listeners: [\"127.0.0.1:4000\", {address: \"127.0.0.1:4001\", proxy_protocol: true}]}\n",
                "switchboard.listeners[1].proxy_protocol",
            ),
            (
                "switchboard: {trusted_proxies: [\"10.0.0.0/8\"], proxy_protocol: true, listeners: [\"127.0.0.1:4000\"]}\n",
                "switchboard.proxy_protocol",
            ),
        ] {
            assert_eq!(parse(yaml).unwrap_err().path, path, "{yaml}");
        }

        // LiteLLM's names: use_x_forwarded_for with mcp_trusted_proxy_ranges.
        let c = parse("general_settings: {use_x_forwarded_for: true, mcp_trusted_proxy_ranges: [\"10.0.0.0/8\"]}\n").unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 1);
        let c = parse("general_settings: {use_x_forwarded_for: true}\n").unwrap();
        assert!(c.server.trusted_proxies.is_empty());
        assert!(c.warnings.iter().any(|w| w.contains("use_x_forwarded_for")));
    }

    #[test]
    fn cors_settings() {
        let c = parse("").unwrap();
        assert_eq!(c.general.cors, CorsSettings::default());
        // Credentials never go with a wildcard.
        let c = parse(
            "general_settings: {cors_allow_origins: [\"*\"], cors_allow_credentials: true}\n",
        )
        .unwrap();
        assert_eq!(c.general.cors.origins, None);
        assert!(!c.general.cors.credentials);
        let c = parse(
            "general_settings: {cors_allow_origins: \"https://a.example, https://b.example\", cors_allow_credentials: true, cors_allow_methods: [get, POST], cors_allow_headers: [Authorization]}\n",
        )
        .unwrap();
        assert_eq!(
            c.general.cors.origins,
            Some(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert!(c.general.cors.credentials);
        assert_eq!(
            c.general.cors.methods,
            Some(vec!["GET".into(), "POST".into()])
        );
        assert_eq!(c.general.cors.headers, Some(vec!["authorization".into()]));
        // LiteLLM's environment variables win over the config.
        let env: HashMap<String, String> = [
            ("LITELLM_CORS_ALLOW_ORIGINS", "https://env.example"),
            ("LITELLM_CORS_ALLOW_CREDENTIALS", "no"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = parse_with_env(
            "general_settings: {cors_allow_origins: [\"https://a.example\"], cors_allow_credentials: true}\n",
            env,
        )
        .unwrap();
        assert_eq!(
            c.general.cors.origins,
            Some(vec!["https://env.example".into()])
        );
        assert!(!c.general.cors.credentials);
        // An empty list turns CORS off.
        let c = parse("general_settings: {cors_allow_origins: []}\n").unwrap();
        assert_eq!(c.general.cors.origins, Some(vec![]));
    }

    #[test]
    fn tag_routing_health_checks_and_alerting_settings() {
        let c = parse(
            "model_list:\n  - {model_name: g, litellm_params: {model: openai/a, tags: [free, default]}}\nrouter_settings: {enable_tag_filtering: true, tag_filtering_match_any: false}\ngeneral_settings:\n  background_health_checks: true\n  health_check_interval: 30\n  alerting: [slack, webhook]\n  alerting_threshold: 10\n  alert_types: [llm_exceptions, cooldown_deployment]\nenvironment_variables: {SLACK_WEBHOOK_URL: \"http://127.0.0.1:1/s\"}\n",
        )
        .unwrap();
        assert_eq!(c.deployments[0].params.tags, ["free", "default"]);
        assert!(c.router.enable_tag_filtering && !c.router.tag_filtering_match_any);
        let h = &c.general.health;
        assert!(h.background_health_checks);
        assert_eq!(h.health_check_interval, Duration::from_secs(30));
        assert_eq!(h.alerting, ["slack", "webhook"]);
        assert_eq!(h.alerting_threshold, Duration::from_secs(10));
        assert_eq!(h.slack_webhook_url.as_deref(), Some("http://127.0.0.1:1/s"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let e = parse("general_settings: {alert_types: [llm_exceptions, llm_slow]}\n").unwrap_err();
        assert_eq!(e.path, "general_settings.alert_types[1]");
        let e = parse("general_settings: {alerting: [pagerduty]}\n").unwrap_err();
        assert_eq!(e.path, "general_settings.alerting[0]");
    }
}
