//! Per-request cache controls: LiteLLM's body `cache` object (`no-cache`, `no-store`, `ttl`,
//! `s-maxage`, `namespace`, `use-cache`) and `metadata.redis_namespace`. Read from the
//! already-parsed body's raw `cache` slice (a few bytes); wrong types are the client's 400.

use crate::config::cache::MAX_TTL;
use crate::error::GatewayError;
use crate::openai::RequestBody;
use serde::Deserialize;
use std::time::Duration;

/// Longest namespace a request may set (it becomes part of every key it stores).
pub const MAX_NAMESPACE_LEN: usize = 256;

/// What one request asked of the cache.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Controls {
    /// `no-cache`: do not look up (the answer is still stored unless `no-store`).
    pub no_cache: bool,
    /// `no-store`: do not store this answer.
    pub no_store: bool,
    /// `ttl`: keep this answer this long instead of the configured default.
    pub ttl: Option<Duration>,
    /// `s-maxage`: accept only an entry younger than this.
    pub max_age: Option<Duration>,
    /// `namespace` (or `metadata.redis_namespace`).
    pub namespace: Option<String>,
    /// `use-cache`: opt in under `mode: default_off`.
    pub use_cache: bool,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "no-cache", default)]
    no_cache: Option<bool>,
    #[serde(rename = "no-store", default)]
    no_store: Option<bool>,
    #[serde(default)]
    ttl: Option<f64>,
    #[serde(rename = "s-maxage", default)]
    s_maxage: Option<f64>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(rename = "use-cache", default)]
    use_cache: Option<bool>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    redis_namespace: Option<String>,
}

fn invalid(what: &str) -> GatewayError {
    GatewayError::bad_request(format!(
        "Invalid cache controls: {what}. Send e.g. \"cache\": {{\"no-cache\": true, \"ttl\": 600, \"s-maxage\": 60, \"namespace\": \"team-a\"}}."
    ))
    .with_param("cache")
}

fn seconds(v: Option<f64>, name: &str) -> Result<Option<Duration>, GatewayError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => {
            Ok(Some(Duration::from_secs_f64(s.min(MAX_TTL.as_secs_f64()))))
        }
        Some(s) => Err(invalid(&format!(
            "`{name}` must be a number of seconds ≥ 0, got {s}"
        ))),
    }
}

/// Reads the request's controls. A `cache` that is not an object of the documented types is a
/// 400 naming `cache`.
pub fn read(body: &RequestBody<'_>) -> Result<Controls, GatewayError> {
    let mut out = Controls::default();
    if let Some(raw) = body.get("cache") {
        if raw.get() != "null" {
            let r: Raw = serde_json::from_str(raw.get()).map_err(|e| invalid(&e.to_string()))?;
            out.no_cache = r.no_cache.unwrap_or(false);
            out.no_store = r.no_store.unwrap_or(false);
            out.ttl = seconds(r.ttl, "ttl")?;
            out.max_age = seconds(r.s_maxage, "s-maxage")?;
            out.use_cache = r.use_cache.unwrap_or(false);
            out.namespace = r.namespace;
        }
    }
    if out.namespace.is_none() {
        if let Some(raw) = body.get("metadata") {
            // Not ours to refuse: metadata of another shape simply names no namespace.
            if let Ok(m) = serde_json::from_str::<Metadata>(raw.get()) {
                out.namespace = m.redis_namespace;
            }
        }
    }
    if let Some(ns) = &out.namespace {
        if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN || ns.chars().any(char::is_control) {
            return Err(invalid(&format!(
                "`namespace` must be 1 to {MAX_NAMESPACE_LEN} printable characters"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controls(body: &str) -> Result<Controls, GatewayError> {
        read(&RequestBody::parse(body.as_bytes()).unwrap())
    }

    #[test]
    fn litellm_controls_are_read_and_bad_ones_refused() {
        let c = controls(r#"{"cache":{"no-cache":true,"no-store":true,"ttl":5,"s-maxage":1.5,"namespace":"a","use-cache":true}}"#).unwrap();
        assert!(c.no_cache && c.no_store && c.use_cache);
        assert_eq!(c.ttl, Some(Duration::from_secs(5)));
        assert_eq!(c.max_age, Some(Duration::from_millis(1500)));
        assert_eq!(c.namespace.as_deref(), Some("a"));
        assert_eq!(controls(r#"{}"#).unwrap(), Controls::default());
        let c = controls(r#"{"metadata":{"redis_namespace":"r"}}"#).unwrap();
        assert_eq!(c.namespace.as_deref(), Some("r"));
        for bad in [
            r#"{"cache":{"ttl":"x"}}"#,
            r#"{"cache":{"ttl":-1}}"#,
            r#"{"cache":true}"#,
            r#"{"cache":{"namespace":""}}"#,
        ] {
            let e = controls(bad).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some("cache")),
                "{bad}"
            );
        }
    }
}
