//! `GET /model/info` and `/v1/model/info`: every configured deployment in LiteLLM's shape,
//! `{"data": [{"model_name", "litellm_params", "model_info"}]}`, filtered to one deployment by
//! `?litellm_model_id=`. Credentials never appear: `litellm_params` is built from an allow-list
//! of non-secret settings (never `api_key`, AWS keys, `vertex_credentials` or configured
//! headers), userinfo and query strings are cut from `api_base`, and the whole answer is run
//! through the configured-secret redactor as a last guard.

use crate::config::DeploymentConfig;
use crate::error::{ErrorKind, GatewayError};
use crate::router::Snapshot;
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// Provider parameters that are settings, not credentials.
const PUBLIC_PROVIDER_PARAMS: &[&str] = &[
    "vertex_project",
    "vertex_location",
    "aws_region_name",
    "region_name",
    "aws_bedrock_runtime_endpoint",
];

/// The answer for `query` (the request's query string, if any).
pub fn response(snapshot: &Snapshot, query: Option<&str>) -> Result<Bytes, GatewayError> {
    let wanted = query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "litellm_model_id")
            .map(|(_, v)| v)
    });
    let data: Vec<Value> = snapshot
        .config
        .deployments
        .iter()
        .filter(|d| wanted.is_none_or(|id| d.id == id))
        .map(deployment_info)
        .collect();
    if let (Some(id), true) = (wanted, data.is_empty()) {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("No deployment has litellm_model_id \"{id}\". GET /model/info lists them all."),
        )
        .with_param("litellm_model_id")
        .with_code("not_found"));
    }
    let text = json!({ "data": data }).to_string();
    Ok(Bytes::from(snapshot.secrets.redact(&text).into_owned()))
}

fn deployment_info(d: &DeploymentConfig) -> Value {
    json!({
        "model_name": d.model_name,
        "litellm_params": litellm_params(d),
        "model_info": model_info(d),
    })
}

/// The deployment's settings without its credentials.
fn litellm_params(d: &DeploymentConfig) -> Value {
    let p = &d.params;
    let mut out = Map::new();
    out.insert("model".into(), format!("{}/{}", d.provider, d.model).into());
    let mut put = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.insert(key.into(), v);
        }
    };
    put(
        "api_base",
        p.api_base.as_deref().map(|b| public_url(b).into()),
    );
    put("api_version", p.api_version.clone().map(Value::from));
    put("rpm", p.rpm.map(Value::from));
    put("tpm", p.tpm.map(Value::from));
    put("weight", p.weight.map(Value::from));
    put("order", p.order.map(Value::from));
    put("timeout", p.timeout.map(|t| t.as_secs_f64().into()));
    put(
        "stream_timeout",
        p.stream_timeout.map(|t| t.as_secs_f64().into()),
    );
    put(
        "max_parallel_requests",
        p.max_parallel_requests.map(Value::from),
    );
    put("num_retries", p.num_retries.map(Value::from));
    put("drop_params", p.drop_params.map(Value::from));
    put(
        "input_cost_per_token",
        p.input_cost_per_token.map(Value::from),
    );
    put(
        "output_cost_per_token",
        p.output_cost_per_token.map(Value::from),
    );
    put("mock_response", p.mock_response.clone().map(Value::from));
    if !p.call_defaults.drop.is_empty() {
        put(
            "additional_drop_params",
            Some(p.call_defaults.drop.clone().into()),
        );
    }
    for key in PUBLIC_PROVIDER_PARAMS {
        put(key, p.extra.get(*key).cloned());
    }
    for f in &p.call_defaults.fields {
        if let Ok(v) = serde_json::from_str::<Value>(f.value.get()) {
            put(&f.name, Some(v));
        }
    }
    Value::Object(out)
}

/// LiteLLM's model_info keys: the id, what the config says, else what the price table says
/// for the model (as LiteLLM merges them), nulls for what neither knows.
fn model_info(d: &DeploymentConfig) -> Value {
    let mi = &d.model_info;
    let table = crate::cost::Price::for_deployment(d);
    let rates = table.as_ref().map(|p| &p.rates);
    let mut out = Map::new();
    out.insert("id".into(), d.id.clone().into());
    out.insert("db_model".into(), false.into());
    out.insert("key".into(), d.model.clone().into());
    out.insert("litellm_provider".into(), d.provider.clone().into());
    out.insert(
        "mode".into(),
        mi.mode.clone().unwrap_or_else(|| "chat".into()).into(),
    );
    out.insert("base_model".into(), mi.base_model.clone().into());
    out.insert("max_tokens".into(), mi.max_tokens.into());
    out.insert(
        "max_input_tokens".into(),
        mi.max_input_tokens
            .or_else(|| rates.and_then(|r| r.max_input_tokens))
            .into(),
    );
    out.insert(
        "max_output_tokens".into(),
        mi.max_output_tokens
            .or_else(|| rates.and_then(|r| r.max_output_tokens))
            .into(),
    );
    out.insert(
        "input_cost_per_token".into(),
        rates.and_then(|r| r.input).into(),
    );
    out.insert(
        "output_cost_per_token".into(),
        rates.and_then(|r| r.output).into(),
    );
    for (k, v) in &mi.metadata {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

/// `api_base` without `user:password@` or a query string (where some keep a key).
pub(crate) fn public_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_loses_userinfo_and_query() {
        assert_eq!(
            public_url("https://u:pw@host:8443/v1?key=abc"),
            "https://host:8443/v1"
        );
        assert_eq!(public_url("http://h/v1"), "http://h/v1");
    }
}
