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
    let general = read_general(top.section("general_settings")?, &mut warnings)?;
    let (litellm, json_logs) =
        read_litellm_settings(top.section("litellm_settings")?, &mut warnings)?;
    let own_json_logs = root
        .get("switchboard")
        .and_then(|s| s.get("json_logs"))
        .is_some();
    if let (Some(v), false) = (json_logs, own_json_logs) {
        server.json_logs = v;
    }
    let router = read_router_settings(top.section("router_settings")?, &mut warnings)?;

    let mut deployments = Vec::new();
    for (i, (path, value)) in sequence("model_list", top.value("model_list"))?
        .into_iter()
        .enumerate()
    {
        deployments.push(read_deployment(i, path, value, &env, &mut warnings)?);
    }
    disambiguate_derived_ids(&mut deployments);
    check_unique_ids(&deployments)?;

    for key in IGNORED_TOP_LEVEL {
        if top.value(key).is_some() {
            warnings.push(format!(
                "{key}: not implemented by Switchboard yet; ignored"
            ));
        }
    }
    top.finish(&mut warnings);

    Ok(Config {
        source: PathBuf::new(),
        server,
        general,
        litellm,
        router,
        deployments,
        warnings,
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
    if let Some(v) = s.u64("threads")? {
        if v == 0 || v > 1024 {
            return Err(ConfigError::new(
                s.key_path("threads"),
                format!("{v} is out of range (1-1024)"),
            ));
        }
        out.threads = v as usize;
    }
    if let Some(v) = s.string("pid_file")? {
        out.pid_file = v;
    }
    if let Some(v) = s.string("upgrade_sock")? {
        out.upgrade_sock = v;
    }
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
    if let Some(v) = s.string("log_level")? {
        out.log_level = v.parse().map_err(|_| {
            ConfigError::new(
                s.key_path("log_level"),
                format!("unknown level \"{v}\" (error, warn, info, debug, trace)"),
            )
        })?;
    }
    let section = std::mem::replace(s, Section::new("", None, s.env())?);
    section.finish(warnings);
    Ok(out)
}

fn read_general(
    mut s: Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<GeneralSettings, ConfigError> {
    let master_key = s.string("master_key")?.filter(|k| !k.is_empty());
    let mb = s
        .f64_in("max_request_size_mb", 0.000001, 100_000.0)?
        .unwrap_or(100.0);
    s.finish(warnings);
    Ok(GeneralSettings {
        master_key,
        max_request_size: (mb * 1024.0 * 1024.0) as usize,
    })
}

/// Also returns `json_logs`, which sets the diagnostic log format unless `switchboard.json_logs`
/// does.
fn read_litellm_settings(
    mut s: Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<(LitellmSettings, Option<bool>), ConfigError> {
    let out = LitellmSettings {
        drop_params: s.bool("drop_params")?.unwrap_or(false),
        request_timeout: seconds(&mut s, "request_timeout")?,
        require_auth_for_metrics_endpoint: s
            .bool("require_auth_for_metrics_endpoint")?
            .unwrap_or(false),
    };
    let json_logs = s.bool("json_logs")?;
    s.accept(&["set_verbose"]);
    s.finish(warnings);
    Ok((out, json_logs))
}

fn read_router_settings(
    mut s: Section<'_>,
    warnings: &mut Vec<String>,
) -> Result<RouterSettings, ConfigError> {
    let out = RouterSettings {
        timeout: seconds(&mut s, "timeout")?,
        stream_timeout: seconds(&mut s, "stream_timeout")?,
    };
    s.finish(warnings);
    Ok(out)
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

    let mut params = LitellmParams {
        api_base: lp
            .string("api_base")?
            .map(|s| s.trim_end_matches('/').to_string()),
        api_key: lp.string("api_key")?,
        api_version: lp.string("api_version")?,
        organization: lp.string("organization")?,
        timeout: seconds(&mut lp, "timeout")?,
        stream_timeout: seconds(&mut lp, "stream_timeout")?,
        rpm: lp.u64("rpm")?,
        tpm: lp.u64("tpm")?,
        weight: lp.f64_in("weight", 0.0, 1e9)?,
        mock_response: lp.string("mock_response")?,
        drop_params: lp.bool("drop_params")?,
        extra: Default::default(),
    };
    // LiteLLM sets this itself; the router owns retries.
    lp.accept(&["max_retries"]);
    for key in lp.keys() {
        if PROVIDER_PARAMS.contains(&key) {
            if let Some(v) = lp.json(key)? {
                params.extra.insert(key.to_string(), v);
            }
        }
    }
    lp.finish(warnings);

    let mut mi = entry.section("model_info")?;
    let id = mi.string("id")?;
    let model_info = ModelInfo {
        mode: mi.string("mode")?,
        base_model: mi.string("base_model")?,
        max_tokens: mi.u64("max_tokens")?,
        max_input_tokens: mi.u64("max_input_tokens")?,
        max_output_tokens: mi.u64("max_output_tokens")?,
    };
    if let Some(mode) = &model_info.mode {
        const MODES: &[&str] = &[
            "chat",
            "embedding",
            "completion",
            "image_generation",
            "audio_transcription",
            "audio_speech",
            "rerank",
            "moderation",
            "moderations",
            "responses",
        ];
        if !MODES.contains(&mode.as_str()) {
            return Err(ConfigError::new(
                mi.key_path("mode"),
                format!(
                    "unknown mode \"{mode}\" (expected one of {})",
                    MODES.join(", ")
                ),
            ));
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
}
