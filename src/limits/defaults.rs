//! LiteLLM's default limits, applied where LiteLLM applies them (settings:
//! [`crate::config::limits`]):
//! - `/key/generate`: `default_key_generate_params` fills the fields a body leaves out (absent
//!   or null; `models` also when `[]`, `metadata` also when `{}`); then
//!   `upperbound_key_generate_params` fills what is still unset and refuses a value above its
//!   cap with LiteLLM's 400 (`rpm_limit is over max limit set in config - user_value=…;
//!   max_value=…`). Other key routes are left alone, as in LiteLLM.
//! - At request time: `max_end_user_budget_id` names the budget row whose rpm / tpm /
//!   parallel limits hold for an end user without a budget of its own (see [`super`]).

use crate::config::limits::{LimitDefaults, CAPPED_DURATIONS, CAPPED_NUMBERS};
use crate::error::GatewayError;
use serde_json::{Map, Value};

/// Applies the defaults and upper bounds to a `/key/generate` body, before it is read.
pub fn apply_to_key_generate(
    d: &LimitDefaults,
    body: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
    for (name, default) in &d.key_generate {
        let unset = match body.get(name) {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => name == "models" && a.is_empty(),
            Some(Value::Object(o)) => name == "metadata" && o.is_empty(),
            Some(_) => false,
        };
        if unset {
            body.insert(name.clone(), default.clone());
        }
    }
    for (name, cap) in &d.key_upperbound {
        let value = match body.get(name) {
            None | Some(Value::Null) => {
                body.insert(name.clone(), cap.clone());
                continue;
            }
            Some(v) => v,
        };
        let over = if CAPPED_NUMBERS.contains(&name.as_str()) {
            // A non-number is left for the field's own check to refuse.
            matches!((value.as_f64(), cap.as_f64()), (Some(v), Some(c)) if v > c)
        } else if CAPPED_DURATIONS.contains(&name.as_str()) {
            let ms = |v: &Value| {
                v.as_str()
                    .and_then(crate::budgets::duration::Duration::parse)
                    .map(|d| d.as_ms())
            };
            match (ms(value), ms(cap)) {
                (Some(v), Some(c)) => v > c,
                (_, None) => {
                    log::warn!("litellm_settings.upperbound_key_generate_params.{name}: {cap} is not a duration; not enforced");
                    false
                }
                (None, _) => false,
            }
        } else {
            false
        };
        if over {
            let shown = |v: &Value| match v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            return Err(GatewayError::invalid_param(
                name,
                format!(
                    "{name} is over max limit set in config - user_value={}; max_value={}",
                    shown(value),
                    shown(cap)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults(generate: Value, upper: Value) -> LimitDefaults {
        LimitDefaults {
            key_generate: generate.as_object().unwrap().clone(),
            key_upperbound: upper.as_object().unwrap().clone(),
            end_user_budget_id: None,
        }
    }

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_fill_only_what_is_unset() {
        let d = defaults(
            json!({"rpm_limit": 10, "tpm_limit": 500, "models": ["gpt-4o"], "metadata": {"tier": "free"}}),
            json!({}),
        );
        let mut b = body(json!({"rpm_limit": 3, "tpm_limit": null, "models": []}));
        apply_to_key_generate(&d, &mut b).unwrap();
        assert_eq!(
            Value::Object(b),
            json!({"rpm_limit": 3, "tpm_limit": 500, "models": ["gpt-4o"], "metadata": {"tier": "free"}})
        );
    }

    #[test]
    fn upper_bounds_fill_and_refuse_with_litellms_text() {
        let d = defaults(
            json!({}),
            json!({"rpm_limit": 100, "max_budget": 10.0, "duration": "30d"}),
        );
        let mut b = body(json!({"rpm_limit": 50}));
        apply_to_key_generate(&d, &mut b).unwrap();
        assert_eq!(b["rpm_limit"], 50);
        assert_eq!(b["max_budget"], 10.0);
        assert_eq!(b["duration"], "30d");
        for (field, value, text) in [
            (
                "rpm_limit",
                json!(101),
                "rpm_limit is over max limit set in config - user_value=101; max_value=100",
            ),
            (
                "max_budget",
                json!(10.5),
                "max_budget is over max limit set in config - user_value=10.5; max_value=10.0",
            ),
            (
                "duration",
                json!("31d"),
                "duration is over max limit set in config - user_value=31d; max_value=30d",
            ),
        ] {
            let mut b = body(json!({ field: value }));
            let e = apply_to_key_generate(&d, &mut b).unwrap_err();
            assert_eq!(e.status, 400);
            assert_eq!(e.message, text);
        }
    }
}
