//! Telemetry settings (issue 15): which OpenTelemetry exporters LiteLLM's callback names ask for
//! (`otel`, `langfuse`, `langfuse_otel` in `litellm_settings.callbacks` / `success_callback` /
//! `failure_callback`), resolved against the standard OTel environment, LiteLLM's own names
//! (`OTEL_EXPORTER`, `OTEL_ENDPOINT`, `OTEL_HEADERS`) and Langfuse's (`LANGFUSE_HOST`,
//! `LANGFUSE_OTEL_HOST`, `LANGFUSE_PUBLIC_KEY`, `LANGFUSE_SECRET_KEY`). Variables are read through
//! the config's environment (its `environment_variables` first, then the process), once, at load.
//! A callback whose credentials are missing is turned off with a warning naming the variable.

use std::time::Duration;

/// Callback names the telemetry module implements.
pub const TELEMETRY_CALLBACKS: &[&str] = &["otel", "langfuse", "langfuse_otel"];

/// What to export and where; `targets` empty means telemetry is off.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetryConfig {
    pub targets: Vec<ExportTarget>,
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler: Sampler,
    /// `switchboard.otel_capture_content` (off unless set; LiteLLM's
    /// `turn_off_message_logging: true` keeps it off): prompts and completions on spans.
    pub capture_content: bool,
    /// `switchboard.otel_content_max_bytes`: the cap on each captured content attribute.
    pub content_max_bytes: usize,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: requests waiting for export; past it they are dropped and
    /// counted.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`: spans per export call.
    pub max_batch: usize,
    /// `OTEL_BSP_SCHEDULE_DELAY` (ms): the longest a finished span waits before export.
    pub schedule_delay: Duration,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (ms): one export call's bound.
    pub export_timeout: Duration,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (ms).
    pub metric_interval: Duration,
    /// `OTEL_SERVICE_NAME`: the resource's `service.name` (`switchboard` when unset).
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES` (`k1=v1,k2=v2`, values percent-decoded): resource attributes.
    pub resource_attributes: Vec<(String, String)>,
}

impl TelemetryConfig {
    pub fn enabled(&self) -> bool {
        !self.targets.is_empty()
    }
}

/// One OTLP destination.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportTarget {
    /// The callback name that asked for it (`otel`, `langfuse_otel`).
    pub name: &'static str,
    pub protocol: OtlpProtocol,
    /// Where spans go: the full URL they are POSTed to (…/v1/traces) over HTTP, the
    /// collector's address (`http://host:4317`) over gRPC.
    pub traces_endpoint: String,
    /// Where metrics go, likewise; `None` for Langfuse (traces only).
    pub metrics_endpoint: Option<String>,
    /// Sent with every export to this target, and nothing else: another target's headers
    /// (or `OTEL_EXPORTER_OTLP_HEADERS`, for Langfuse) never are.
    pub headers: Vec<(String, String)>,
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default).
    HttpProtobuf,
    /// `grpc` (LiteLLM: `OTEL_EXPORTER=otlp_grpc`).
    Grpc,
}

/// `OTEL_TRACES_SAMPLER`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Keeps this fraction of traces, by trace id.
    Ratio(f64),
    /// The client's sampled flag when it sent a `traceparent`, else the inner decision.
    ParentBased(ParentlessSampler),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentlessSampler {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::ParentBased(ParentlessSampler::AlwaysOn)
    }
}

/// Default OTLP/HTTP endpoint (the OTel SDKs' default).
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";
/// Default OTLP/gRPC endpoint.
const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
const LANGFUSE_DEFAULT_HOST: &str = "https://cloud.langfuse.com";
const LANGFUSE_OTEL_PATH: &str = "/api/public/otel/v1/traces";

/// What the config file says; the environment fills in the rest in [`resolve`].
pub struct TelemetryRequest<'a> {
    /// Every callback name listed, in any of the callback keys.
    pub callbacks: &'a [String],
    pub capture_content: bool,
    pub turn_off_message_logging: bool,
    pub content_max_bytes: usize,
}

/// Resolves the exporters the callbacks ask for. Problems are warnings (the callback is off),
/// never load errors: telemetry must not stop a gateway from serving.
pub fn resolve(
    req: &TelemetryRequest<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> TelemetryConfig {
    let env = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let wants = |name: &str| req.callbacks.iter().any(|c| c == name);
    let mut out = TelemetryConfig {
        targets: Vec::new(),
        sampler: sampler(&env, warnings),
        capture_content: req.capture_content && !req.turn_off_message_logging,
        content_max_bytes: req.content_max_bytes,
        max_queue: env_number(&env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1 << 20, warnings),
        max_batch: env_number(
            &env,
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            512,
            1,
            1 << 16,
            warnings,
        ),
        schedule_delay: Duration::from_millis(env_number(
            &env,
            "OTEL_BSP_SCHEDULE_DELAY",
            5000,
            1,
            600_000,
            warnings,
        ) as u64),
        export_timeout: Duration::from_millis(env_number(
            &env,
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            10_000,
            1,
            600_000,
            warnings,
        ) as u64),
        metric_interval: Duration::from_millis(env_number(
            &env,
            "OTEL_METRIC_EXPORT_INTERVAL",
            60_000,
            1,
            3_600_000,
            warnings,
        ) as u64),
        service_name: env("OTEL_SERVICE_NAME"),
        resource_attributes: env("OTEL_RESOURCE_ATTRIBUTES")
            .map(|a| parse_resource_attributes(&a))
            .unwrap_or_default(),
    };
    if wants("otel") {
        if let Some(t) = otel_target(&env, warnings) {
            out.targets.push(t);
        }
    }
    if wants("langfuse") || wants("langfuse_otel") {
        if let Some(t) = langfuse_target(&env, warnings) {
            out.targets.push(t);
        }
    }
    out
}

fn otel_target(
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<ExportTarget> {
    // LiteLLM reads OTEL_EXPORTER when OTEL_EXPORTER_OTLP_PROTOCOL is unset.
    let protocol = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER"))
        .unwrap_or_else(|| "http/protobuf".into());
    let protocol = match protocol.as_str() {
        "http/protobuf" | "otlp_http" | "otlp" | "console" => OtlpProtocol::HttpProtobuf,
        "grpc" | "otlp_grpc" => OtlpProtocol::Grpc,
        other => {
            warnings.push(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL: {other:?} is not supported (Switchboard exports \
                 OTLP over http/protobuf or grpc); the otel callback is off"
            ));
            return None;
        }
    };
    let grpc = protocol == OtlpProtocol::Grpc;
    let base = env("OTEL_EXPORTER_OTLP_ENDPOINT")
        .or_else(|| env("OTEL_ENDPOINT"))
        .unwrap_or_else(|| {
            if grpc {
                DEFAULT_GRPC_ENDPOINT
            } else {
                DEFAULT_ENDPOINT
            }
            .into()
        });
    let traces = match env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(e) => e,
        // gRPC: the collector's address, every signal alike.
        None if grpc => base.clone(),
        // LiteLLM's OTEL_ENDPOINT is the whole traces URL (…/v1/traces) already.
        None if base.ends_with("/v1/traces") => base.clone(),
        None => signal_url(&base, "traces"),
    };
    let metrics = match env("OTEL_METRICS_EXPORTER").as_deref() {
        Some("none") => None,
        _ => Some(
            env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT").unwrap_or_else(|| {
                if grpc {
                    return base.clone();
                }
                match base.strip_suffix("/v1/traces") {
                    Some(root) => signal_url(root, "metrics"),
                    None => signal_url(&base, "metrics"),
                }
            }),
        ),
    };
    for (name, url) in [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", Some(&traces)),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", metrics.as_ref()),
    ] {
        if let Some(url) = url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                warnings.push(format!(
                    "{name}: {url:?} is not an http:// or https:// URL; the otel callback is off"
                ));
                return None;
            }
        }
    }
    let headers = env("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|| env("OTEL_EXPORTER_OTLP_HEADERS"))
        .or_else(|| env("OTEL_HEADERS"))
        .map(|h| parse_headers(&h))
        .unwrap_or_default();
    Some(ExportTarget {
        name: "otel",
        protocol,
        traces_endpoint: traces,
        metrics_endpoint: metrics,
        headers,
    })
}

fn langfuse_target(
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<ExportTarget> {
    let (Some(pk), Some(sk)) = (env("LANGFUSE_PUBLIC_KEY"), env("LANGFUSE_SECRET_KEY")) else {
        let missing: Vec<&str> = ["LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"]
            .into_iter()
            .filter(|v| env(v).is_none())
            .collect();
        warnings.push(format!(
            "litellm_settings.callbacks: langfuse needs {} set; the langfuse callback is off",
            missing.join(" and ")
        ));
        return None;
    };
    let host = env("LANGFUSE_OTEL_HOST")
        .or_else(|| env("LANGFUSE_HOST"))
        .unwrap_or_else(|| LANGFUSE_DEFAULT_HOST.into());
    let host = if host.starts_with("http://") || host.starts_with("https://") {
        host
    } else {
        format!("https://{host}")
    };
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{pk}:{sk}"));
    // Langfuse takes OTLP over HTTP only, whatever OTEL_EXPORTER_OTLP_PROTOCOL says.
    Some(ExportTarget {
        name: "langfuse_otel",
        protocol: OtlpProtocol::HttpProtobuf,
        traces_endpoint: format!("{}{LANGFUSE_OTEL_PATH}", host.trim_end_matches('/')),
        metrics_endpoint: None,
        headers: vec![("authorization".into(), format!("Basic {auth}"))],
    })
}

/// `{base}/v1/{signal}`, as the OTLP/HTTP spec builds per-signal URLs from the base endpoint.
fn signal_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

/// `k1=v1,k2=v2` (values may be percent-encoded, per the OTLP exporter spec).
pub fn parse_headers(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_ascii_lowercase(), percent_decode(v.trim())))
        })
        .collect()
}

/// `OTEL_RESOURCE_ATTRIBUTES`: `k1=v1,k2=v2`, keys as written, values percent-decoded; pairs
/// without a key or `=` are skipped, as the SDKs skip them.
pub fn parse_resource_attributes(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sampler(env: &dyn Fn(&str) -> Option<String>, warnings: &mut Vec<String>) -> Sampler {
    let mut arg = || -> f64 {
        match env("OTEL_TRACES_SAMPLER_ARG") {
            None => 1.0,
            Some(a) => match a.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    warnings.push(format!(
                        "OTEL_TRACES_SAMPLER_ARG: {a:?} is not a ratio between 0 and 1; using 1"
                    ));
                    1.0
                }
            },
        }
    };
    match env("OTEL_TRACES_SAMPLER").as_deref() {
        None | Some("parentbased_always_on") => Sampler::ParentBased(ParentlessSampler::AlwaysOn),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::Ratio(arg()),
        Some("parentbased_always_off") => Sampler::ParentBased(ParentlessSampler::AlwaysOff),
        Some("parentbased_traceidratio") => Sampler::ParentBased(ParentlessSampler::Ratio(arg())),
        Some(other) => {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER: {other:?} is not supported (always_on, always_off, \
                 traceidratio, parentbased_always_on, parentbased_always_off, \
                 parentbased_traceidratio); using parentbased_always_on"
            ));
            Sampler::default()
        }
    }
}

fn env_number(
    env: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: usize,
    min: usize,
    max: usize,
    warnings: &mut Vec<String>,
) -> usize {
    match env(name) {
        None => default,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                warnings.push(format!(
                    "{name}: {v:?} is not a number in {min}..={max}; using {default}"
                ));
                default
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(callbacks: &[&str], vars: &[(&str, &str)]) -> (TelemetryConfig, Vec<String>) {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let callbacks: Vec<String> = callbacks.iter().map(|s| s.to_string()).collect();
        let mut warnings = Vec::new();
        let c = resolve(
            &TelemetryRequest {
                callbacks: &callbacks,
                capture_content: false,
                turn_off_message_logging: false,
                content_max_bytes: 4096,
            },
            &|k| vars.get(k).cloned(),
            &mut warnings,
        );
        (c, warnings)
    }

    #[test]
    fn service_name_and_resource_attributes_from_the_environment() {
        let (c, _) = run(
            &["otel"],
            &[
                ("OTEL_SERVICE_NAME", "gw"),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod, Team=ml%20ops,=x,novalue",
                ),
            ],
        );
        assert_eq!(c.service_name.as_deref(), Some("gw"));
        assert_eq!(
            c.resource_attributes,
            [
                ("deployment.environment".to_string(), "prod".to_string()),
                ("Team".to_string(), "ml ops".to_string())
            ]
        );
    }

    #[test]
    fn otel_endpoints_from_the_standard_and_litellm_names() {
        let (c, w) = run(&["otel"], &[]);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            c.targets[0].traces_endpoint,
            "http://localhost:4318/v1/traces"
        );
        let (c, _) = run(
            &["otel"],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "x-honeycomb-team=abc%3D,Foo = bar",
                ),
            ],
        );
        let t = &c.targets[0];
        assert_eq!(t.traces_endpoint, "http://c:4318/v1/traces");
        assert_eq!(
            t.metrics_endpoint.as_deref(),
            Some("http://c:4318/v1/metrics")
        );
        assert_eq!(
            t.headers,
            vec![
                ("x-honeycomb-team".to_string(), "abc=".to_string()),
                ("foo".to_string(), "bar".to_string())
            ]
        );
        // LiteLLM's OTEL_ENDPOINT names the traces URL itself.
        let (c, _) = run(
            &["otel"],
            &[
                ("OTEL_ENDPOINT", "https://api.honeycomb.io/v1/traces"),
                ("OTEL_EXPORTER", "otlp_http"),
                ("OTEL_HEADERS", "x-honeycomb-team=k"),
            ],
        );
        assert_eq!(
            c.targets[0].traces_endpoint,
            "https://api.honeycomb.io/v1/traces"
        );
        assert_eq!(
            c.targets[0].metrics_endpoint.as_deref(),
            Some("https://api.honeycomb.io/v1/metrics")
        );
        let (c, w) = run(&["otel"], &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        assert!(!c.enabled());
        assert!(w[0].starts_with("OTEL_EXPORTER_OTLP_PROTOCOL"), "{w:?}");
    }

    #[test]
    fn grpc_from_the_standard_and_litellm_names_and_langfuse_stays_on_http() {
        let (c, w) = run(&["otel"], &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert!(w.is_empty(), "{w:?}");
        let t = &c.targets[0];
        assert_eq!(t.protocol, OtlpProtocol::Grpc);
        assert_eq!(t.traces_endpoint, "http://localhost:4317");
        assert_eq!(t.metrics_endpoint.as_deref(), Some("http://localhost:4317"));
        let (c, _) = run(
            &["otel", "langfuse"],
            &[
                ("OTEL_EXPORTER", "otlp_grpc"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-secret=1"),
                ("LANGFUSE_PUBLIC_KEY", "pk"),
                ("LANGFUSE_SECRET_KEY", "sk"),
            ],
        );
        assert_eq!(c.targets[0].protocol, OtlpProtocol::Grpc);
        assert_eq!(c.targets[0].traces_endpoint, "https://collector:4317");
        assert_eq!(c.targets[0].headers[0].0, "x-secret");
        let langfuse = &c.targets[1];
        assert_eq!(langfuse.protocol, OtlpProtocol::HttpProtobuf);
        assert!(langfuse.headers.iter().all(|(k, _)| k == "authorization"));
    }

    #[test]
    fn langfuse_preset_and_missing_credentials() {
        let (c, w) = run(&["langfuse"], &[("LANGFUSE_PUBLIC_KEY", "pk-lf-1")]);
        assert!(!c.enabled());
        assert!(
            w[0].contains("LANGFUSE_SECRET_KEY") && !w[0].contains("PUBLIC"),
            "{w:?}"
        );
        let (c, w) = run(
            &["langfuse_otel"],
            &[
                ("LANGFUSE_PUBLIC_KEY", "pk-lf-1"),
                ("LANGFUSE_SECRET_KEY", "sk-lf-2"),
                ("LANGFUSE_HOST", "http://127.0.0.1:3000/"),
            ],
        );
        assert!(w.is_empty());
        let t = &c.targets[0];
        assert_eq!(
            t.traces_endpoint,
            "http://127.0.0.1:3000/api/public/otel/v1/traces"
        );
        assert_eq!(t.metrics_endpoint, None);
        // base64("pk-lf-1:sk-lf-2")
        assert_eq!(t.headers[0].1, "Basic cGstbGYtMTpzay1sZi0y");
    }

    #[test]
    fn sampler_and_bounds() {
        let (c, w) = run(
            &["otel"],
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ],
        );
        assert_eq!(
            c.sampler,
            Sampler::ParentBased(ParentlessSampler::Ratio(0.25))
        );
        assert_eq!(c.max_queue, 2048);
        assert!(w[0].starts_with("OTEL_BSP_MAX_QUEUE_SIZE"), "{w:?}");
    }
}
