//! LiteLLM's default limits in `litellm_settings`: `default_key_generate_params` and
//! `upperbound_key_generate_params` (what `/key/generate` fills in and caps) and
//! `max_end_user_budget_id` (the budget row whose limits hold for an end user without a
//! budget of its own). Read and type-checked here; applied by [`crate::limits::defaults`].

use super::yaml::{type_name, Section};
use super::ConfigError;
use serde_json::{Map, Value};

/// Fields LiteLLM fills from `default_key_generate_params` when a body leaves them out.
pub const DEFAULTED: &[&str] = &[
    "max_budget",
    "user_id",
    "team_id",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "budget_duration",
    "models",
    "metadata",
];
/// Numbers `upperbound_key_generate_params` caps.
pub const CAPPED_NUMBERS: &[&str] = &[
    "max_budget",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
];
/// Durations it caps.
pub const CAPPED_DURATIONS: &[&str] = &["budget_duration", "duration"];

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitDefaults {
    /// `default_key_generate_params`, only the [`DEFAULTED`] fields.
    pub key_generate: Map<String, Value>,
    /// `upperbound_key_generate_params`, only the capped fields.
    pub key_upperbound: Map<String, Value>,
    /// `max_end_user_budget_id`.
    pub end_user_budget_id: Option<String>,
}

pub fn read(s: &mut Section<'_>, warnings: &mut Vec<String>) -> Result<LimitDefaults, ConfigError> {
    let key_generate = fields(s, "default_key_generate_params", DEFAULTED, warnings)?;
    let capped: Vec<&str> = [CAPPED_NUMBERS, CAPPED_DURATIONS].concat();
    let key_upperbound = fields(s, "upperbound_key_generate_params", &capped, warnings)?;
    Ok(LimitDefaults {
        key_generate,
        key_upperbound,
        end_user_budget_id: s.string("max_end_user_budget_id")?,
    })
}

/// The mapping at `key` as JSON, keeping the `known` fields (type-checked) and warning about
/// the others.
fn fields(
    s: &mut Section<'_>,
    key: &'static str,
    known: &[&str],
    warnings: &mut Vec<String>,
) -> Result<Map<String, Value>, ConfigError> {
    let path = s.key_path(key);
    let Some(v) = s.value(key) else {
        return Ok(Map::new());
    };
    let json = serde_json::to_value(v).map_err(|e| ConfigError::new(&path, e.to_string()))?;
    let Value::Object(map) = json else {
        return Err(ConfigError::new(
            &path,
            format!("expected a mapping, found {}", type_name(v)),
        ));
    };
    let mut out = Map::new();
    let mut ignored = Vec::new();
    for (name, value) in map {
        if value.is_null() {
            continue;
        }
        if !known.contains(&name.as_str()) {
            ignored.push(name);
            continue;
        }
        let ok = match name.as_str() {
            "user_id" | "team_id" | "budget_duration" | "duration" => value.is_string(),
            "models" => value
                .as_array()
                .is_some_and(|m| m.iter().all(Value::is_string)),
            "metadata" => value.is_object(),
            _ => value.as_f64().is_some_and(|n| n >= 0.0),
        };
        if !ok {
            let expected = match name.as_str() {
                "user_id" | "team_id" => "a string",
                "budget_duration" | "duration" => "a duration such as \"30d\"",
                "models" => "a list of model names",
                "metadata" => "a mapping",
                _ => "a number ≥ 0",
            };
            return Err(ConfigError::new(
                format!("{path}.{name}"),
                format!("expected {expected}"),
            ));
        }
        out.insert(name, value);
    }
    if !ignored.is_empty() {
        warnings.push(format!(
            "{path}: not applied by Switchboard (LiteLLM applies only {}); ignored: {}",
            known.join(", "),
            ignored.join(", ")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::litellm::parse;

    #[test]
    fn reads_and_checks_the_default_limits() {
        let c = parse(
            "litellm_settings:\n  default_key_generate_params: {rpm_limit: 10, models: [gpt-4o], key_alias: x}\n  upperbound_key_generate_params: {tpm_limit: 1000, duration: 30d}\n  max_end_user_budget_id: eu-default\n",
        )
        .unwrap();
        let d = &c.litellm.limit_defaults;
        assert_eq!(d.key_generate["rpm_limit"], 10);
        assert_eq!(d.key_generate["models"], serde_json::json!(["gpt-4o"]));
        assert!(!d.key_generate.contains_key("key_alias"));
        assert_eq!(d.key_upperbound["tpm_limit"], 1000);
        assert_eq!(d.key_upperbound["duration"], "30d");
        assert_eq!(d.end_user_budget_id.as_deref(), Some("eu-default"));
        assert!(c.warnings.iter().any(|w| w
            .starts_with("litellm_settings.default_key_generate_params: not applied")
            && w.ends_with("ignored: key_alias")));
        let e = parse("litellm_settings:\n  upperbound_key_generate_params: {rpm_limit: lots}\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("litellm_settings.upperbound_key_generate_params.rpm_limit"),
            "{e}"
        );
    }
}
