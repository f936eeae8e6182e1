//! Builds a request's spans from its finished record (on the export thread, never on the
//! request path), named and attributed per the OpenTelemetry GenAI semantic conventions:
//! one SERVER span `{operation} {model}` for the client's request, and one CLIENT span per
//! upstream attempt under it (retries and fallbacks are siblings; a failed one carries
//! `error.type`). Cost is `gen_ai.usage.cost`, as LiteLLM names it; the caller appears as key
//! alias, team and end user, never as the key.

use super::Finished;
use crate::config::telemetry::TelemetryConfig;
use crate::context::AttemptRecord;
use crate::router::Deployment;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Instant, SystemTime};

/// `gen_ai.operation.name` for a route.
pub fn operation_name(route: &str) -> &'static str {
    match route {
        "embeddings" => "embeddings",
        "completions" | "text_completion" => "text_completion",
        _ => "chat",
    }
}

/// `gen_ai.provider.name` for a LiteLLM provider prefix: the convention's well-known names, the
/// prefix itself otherwise.
pub fn provider_name(provider: &str) -> Cow<'static, str> {
    Cow::Borrowed(match provider {
        "openai" | "text-completion-openai" => "openai",
        "azure" => "azure.ai.openai",
        "azure_ai" => "azure.ai.inference",
        "anthropic" => "anthropic",
        "bedrock" | "bedrock_converse" => "aws.bedrock",
        "vertex_ai" | "vertex_ai_beta" => "gcp.vertex_ai",
        "gemini" => "gcp.gemini",
        "cohere" | "cohere_chat" => "cohere",
        "mistral" => "mistral_ai",
        "groq" => "groq",
        "deepseek" => "deepseek",
        "xai" => "x_ai",
        "perplexity" => "perplexity",
        "watsonx" => "ibm.watsonx.ai",
        other => return Cow::Owned(other.to_string()),
    })
}

/// Appends the request's spans to `out`.
pub fn build(
    f: &Finished,
    config: &TelemetryConfig,
    scope: &InstrumentationScope,
    out: &mut Vec<SpanData>,
) {
    let trace = &f.trace;
    let flags = if trace.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let state = trace
        .tracestate
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let trace_id = TraceId::from_bytes(trace.trace_id);
    let server_id = SpanId::from_bytes(trace.span_id);
    let op = operation_name(f.route);
    let model = f.model.as_deref().unwrap_or("");
    // The request's end: its start plus its duration, on the wall clock.
    let start = trace.wall_start;
    let end = start + f.duration;

    let mut attrs = Vec::with_capacity(24);
    attrs.push(KeyValue::new("gen_ai.operation.name", op));
    if !model.is_empty() {
        attrs.push(KeyValue::new("gen_ai.request.model", model.to_string()));
    }
    if let Some(d) = &f.deployment {
        attrs.push(KeyValue::new(
            "gen_ai.provider.name",
            Value::String(StringValue::from(provider_name(d.provider.name()))),
        ));
        attrs.push(KeyValue::new(
            "gen_ai.response.model",
            d.config.model.clone(),
        ));
    }
    request_params(f, &mut attrs);
    usage(f, &mut attrs);
    finish_reasons(f, &mut attrs);
    if let Some(id) = &trace.response_id {
        if f.status < 300 && op == "chat" {
            attrs.push(KeyValue::new("gen_ai.response.id", id.as_str().to_string()));
        }
    }
    if let Some(k) = &f.key {
        if let Some(alias) = &k.row.key_alias {
            attrs.push(KeyValue::new("switchboard.key_alias", alias.clone()));
        }
        if let Some(team) = &k.row.team_id {
            attrs.push(KeyValue::new("switchboard.team_id", team.clone()));
        }
    }
    if let Some(u) = &f.end_user {
        attrs.push(KeyValue::new("gen_ai.user.id", bounded(u, 256)));
    }
    if let Some(fb) = &f.fallback {
        attrs.push(KeyValue::new("switchboard.fallback_group", fb.clone()));
    }
    attrs.push(KeyValue::new(
        "switchboard.attempts",
        trace.attempts.len() as i64,
    ));
    if f.stream {
        attrs.push(KeyValue::new("gen_ai.request.stream", true));
    }
    if let Some(ttft) = f.ttft {
        attrs.push(KeyValue::new(
            "gen_ai.server.time_to_first_token",
            ttft.as_secs_f64(),
        ));
    }
    attrs.push(KeyValue::new("http.response.status_code", f.status as i64));
    if config.capture_content {
        content(f, config.content_max_bytes, &mut attrs);
    }
    let failed = f.status >= 400 || f.client_disconnected;
    if failed {
        attrs.push(KeyValue::new("error.type", server_error_type(f)));
    }
    let status = match (f.status >= 500 || f.status == 0, &f.error) {
        (true, Some(e)) => Status::Error {
            description: Cow::Owned(bounded(e, 512)),
        },
        (true, None) => Status::Error {
            description: Cow::Borrowed(""),
        },
        _ => Status::Unset,
    };
    out.push(SpanData {
        span_context: SpanContext::new(trace_id, server_id, flags, false, state.clone()),
        parent_span_id: trace
            .remote_parent
            .map(SpanId::from_bytes)
            .unwrap_or(SpanId::INVALID),
        parent_span_is_remote: trace.remote_parent.is_some(),
        span_kind: SpanKind::Server,
        name: span_name(op, model),
        start_time: start,
        end_time: end,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    });

    // Attempt instants on the wall clock: offsets from the request's start instant.
    let wall = |t: Instant| start + t.saturating_duration_since(trace.start);
    for (i, a) in trace.attempts.iter().enumerate() {
        let a_start = wall(a.start);
        let a_end = a
            .end
            .map(wall)
            .unwrap_or(end)
            .clamp(a_start, end.max(a_start));
        out.push(attempt_span(
            f, a, i, trace_id, server_id, flags, &state, op, a_start, a_end, scope,
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn attempt_span(
    f: &Finished,
    a: &AttemptRecord,
    index: usize,
    trace_id: TraceId,
    parent: SpanId,
    flags: TraceFlags,
    state: &TraceState,
    op: &'static str,
    start: SystemTime,
    end: SystemTime,
    scope: &InstrumentationScope,
) -> SpanData {
    let d: &Deployment = &a.deployment;
    let upstream_model = d.config.model.as_str();
    let last = index + 1 == f.trace.attempts.len();
    let mut attrs = Vec::with_capacity(16);
    attrs.push(KeyValue::new("gen_ai.operation.name", op));
    attrs.push(KeyValue::new(
        "gen_ai.provider.name",
        Value::String(StringValue::from(provider_name(d.provider.name()))),
    ));
    attrs.push(KeyValue::new(
        "gen_ai.request.model",
        upstream_model.to_string(),
    ));
    attrs.push(KeyValue::new(
        "switchboard.model_group",
        d.config.model_name.clone(),
    ));
    attrs.push(KeyValue::new(
        "switchboard.deployment_id",
        d.id().to_string(),
    ));
    if let Some(ep) = &d.endpoint {
        attrs.push(KeyValue::new("server.address", ep.host.clone()));
        attrs.push(KeyValue::new("server.port", ep.port as i64));
    }
    if index > 0 {
        attrs.push(KeyValue::new("switchboard.retry_of", index as i64));
    }
    request_params(f, &mut attrs);
    let status = match a.error {
        Some((kind, http_status)) => {
            attrs.push(KeyValue::new("error.type", kind));
            attrs.push(KeyValue::new(
                "http.response.status_code",
                http_status as i64,
            ));
            Status::Error {
                description: Cow::Borrowed(kind),
            }
        }
        None => {
            if last {
                attrs.push(KeyValue::new(
                    "gen_ai.response.model",
                    upstream_model.to_string(),
                ));
                usage(f, &mut attrs);
                finish_reasons(f, &mut attrs);
                if f.status > 0 {
                    attrs.push(KeyValue::new("http.response.status_code", f.status as i64));
                }
            }
            Status::Unset
        }
    };
    SpanData {
        span_context: SpanContext::new(
            trace_id,
            SpanId::from_bytes(a.span_id),
            flags,
            false,
            state.clone(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: span_name(op, upstream_model),
        start_time: start,
        end_time: end,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

fn span_name(op: &str, model: &str) -> Cow<'static, str> {
    if model.is_empty() {
        Cow::Owned(op.to_string())
    } else {
        Cow::Owned(format!("{op} {model}"))
    }
}

fn request_params(f: &Finished, attrs: &mut Vec<KeyValue>) {
    let p = &f.trace.params;
    if let Some(v) = p.max_tokens {
        attrs.push(KeyValue::new("gen_ai.request.max_tokens", v as i64));
    }
    for (k, v) in [
        ("gen_ai.request.temperature", p.temperature),
        ("gen_ai.request.top_p", p.top_p),
        ("gen_ai.request.top_k", p.top_k),
        ("gen_ai.request.frequency_penalty", p.frequency_penalty),
        ("gen_ai.request.presence_penalty", p.presence_penalty),
    ] {
        if let Some(v) = v {
            attrs.push(KeyValue::new(k, v));
        }
    }
    if let Some(v) = p.seed {
        attrs.push(KeyValue::new("gen_ai.request.seed", v));
    }
    if let Some(v) = p.choice_count.filter(|n| *n != 1) {
        attrs.push(KeyValue::new("gen_ai.request.choice.count", v as i64));
    }
}

fn usage(f: &Finished, attrs: &mut Vec<KeyValue>) {
    if let Some(u) = &f.usage {
        attrs.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            u.prompt_tokens as i64,
        ));
        attrs.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            u.completion_tokens as i64,
        ));
        if let Some(d) = &u.prompt_tokens_details {
            if d.cached_tokens > 0 {
                attrs.push(KeyValue::new(
                    "gen_ai.usage.cache_read.input_tokens",
                    d.cached_tokens as i64,
                ));
            }
            if d.cache_creation_tokens > 0 {
                attrs.push(KeyValue::new(
                    "gen_ai.usage.cache_creation.input_tokens",
                    d.cache_creation_tokens as i64,
                ));
            }
        }
    }
    if let Some(c) = f.cost {
        attrs.push(KeyValue::new("gen_ai.usage.cost", c));
    }
}

/// `gen_ai.response.finish_reasons`: the answer's, when it carried any.
fn finish_reasons(f: &Finished, attrs: &mut Vec<KeyValue>) {
    let reasons = super::finish::reasons(&f.trace.finish_reasons);
    if !reasons.is_empty() {
        attrs.push(KeyValue::new(
            "gen_ai.response.finish_reasons",
            Value::Array(Array::String(reasons)),
        ));
    }
}

/// Prompt and completion, only with content capture on, each cut at `cap` bytes.
fn content(f: &Finished, cap: usize, attrs: &mut Vec<KeyValue>) {
    if let Some(body) = &f.trace.request_body {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            let key = if operation_name(f.route) == "embeddings" {
                "input"
            } else {
                "messages"
            };
            if let Some(m) = v.get(key) {
                attrs.push(KeyValue::new(
                    "gen_ai.input.messages",
                    bounded(&m.to_string(), cap),
                ));
            }
        }
    }
    if let Some(answer) = &f.answer {
        let text = String::from_utf8_lossy(&answer[..answer.len().min(cap.saturating_mul(4))]);
        let out = match serde_json::from_slice::<serde_json::Value>(answer) {
            Ok(v) => v
                .get("choices")
                .map(|c| c.to_string())
                .unwrap_or_else(|| text.into_owned()),
            Err(_) => text.into_owned(),
        };
        attrs.push(KeyValue::new("gen_ai.output.messages", bounded(&out, cap)));
    }
}

/// `s` cut to at most `cap` bytes on a character boundary.
fn bounded(s: &str, cap: usize) -> String {
    if s.len() <= cap {
        return s.to_string();
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn server_error_type(f: &Finished) -> &'static str {
    if f.client_disconnected {
        return "client_disconnected";
    }
    if let Some((kind, _)) = f.trace.attempts.last().and_then(|a| a.error) {
        return kind;
    }
    match f.status {
        400 => "bad_request",
        401 => "authentication_error",
        403 => "permission_denied",
        404 => "not_found",
        408 => "request_timeout",
        413 => "payload_too_large",
        429 => "rate_limited",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "timeout",
        _ => "internal_error",
    }
}
