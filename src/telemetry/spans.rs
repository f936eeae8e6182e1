//! Builds a request's spans from its finished record (on the export thread, never on the
//! request path), named and attributed per the OpenTelemetry GenAI semantic conventions:
//! one SERVER span `{operation} {model}` for the client's request, and one CLIENT span per
//! upstream attempt under it (retries and fallbacks are siblings; a failed one carries
//! `error.type`). Cost is `gen_ai.usage.cost`, as LiteLLM names it; the caller appears as key
//! alias, team and end user, never as the key.

use super::otlp::{self, Kind, SpanWriter, Val};
use super::Finished;
use crate::config::telemetry::TelemetryConfig;
use crate::context::AttemptRecord;
use crate::router::Deployment;
use opentelemetry::trace::TraceState;
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
pub fn build(f: &Finished, config: &TelemetryConfig, out: &mut otlp::Batch) {
    let trace = &f.trace;
    // The client's `tracestate`, kept when it is valid (rare: only with a client's traceparent).
    let state = trace
        .tracestate
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| TraceState::from_str(s).ok())
        .map(|s| s.header())
        .unwrap_or_default();
    let op = operation_name(f.route);
    let model = f.model.as_deref().unwrap_or("");
    // The request's end: its start plus its duration, on the wall clock.
    let start = trace.wall_start;
    let end = start + f.duration;

    let mut s = out.span();
    s.ids(
        &trace.trace_id,
        &trace.span_id,
        trace.remote_parent.as_ref(),
        &state,
        otlp::span_flags(trace.sampled, trace.remote_parent.is_some()),
    )
    .name(op, model)
    .kind(Kind::Server)
    .times(start, end)
    .str("gen_ai.operation.name", op);
    if !model.is_empty() {
        s.str("gen_ai.request.model", model);
    }
    if let Some(d) = &f.deployment {
        s.str("gen_ai.provider.name", &provider_name(d.provider.name()))
            .str("gen_ai.response.model", &d.config.model);
    }
    request_params(f, &mut s);
    usage(f, &mut s);
    finish_reasons(f, &mut s);
    if let Some(id) = &trace.response_id {
        if f.status < 300 && op == "chat" {
            s.str("gen_ai.response.id", id.as_str());
        }
    }
    if let Some(k) = &f.key {
        if let Some(alias) = &k.row.key_alias {
            s.str("switchboard.key_alias", alias);
        }
        if let Some(team) = &k.row.team_id {
            s.str("switchboard.team_id", team);
        }
    }
    if let Some(u) = &f.end_user {
        s.str("gen_ai.user.id", bounded(u, 256));
    }
    if let Some(fb) = &f.fallback {
        s.str("switchboard.fallback_group", fb);
    }
    s.int("switchboard.attempts", trace.attempts.len() as i64);
    if f.stream {
        s.attr("gen_ai.request.stream", Val::Bool(true));
    }
    if let Some(ttft) = f.ttft {
        s.double("gen_ai.server.time_to_first_token", ttft.as_secs_f64());
    }
    s.int("http.response.status_code", f.status as i64);
    if config.capture_content {
        content(f, config.content_max_bytes, &mut s);
    }
    let failed = f.status >= 400 || f.client_disconnected;
    if failed {
        s.str("error.type", server_error_type(f));
    }
    s.status(match (f.status >= 500 || f.status == 0, &f.error) {
        (true, Some(e)) => Some(bounded(e, 512)),
        (true, None) => Some(""),
        _ => None,
    });
    s.finish();

    // Attempt instants on the wall clock: offsets from the request's start instant.
    let wall = |t: Instant| start + t.saturating_duration_since(trace.start);
    for (i, a) in trace.attempts.iter().enumerate() {
        let a_start = wall(a.start);
        let a_end = a
            .end
            .map(wall)
            .unwrap_or(end)
            .clamp(a_start, end.max(a_start));
        attempt_span(f, a, i, &state, op, a_start, a_end, out);
    }
}

#[allow(clippy::too_many_arguments)]
fn attempt_span(
    f: &Finished,
    a: &AttemptRecord,
    index: usize,
    state: &str,
    op: &'static str,
    start: SystemTime,
    end: SystemTime,
    out: &mut otlp::Batch,
) {
    let trace = &f.trace;
    let d: &Deployment = &a.deployment;
    let upstream_model = d.config.model.as_str();
    let last = index + 1 == trace.attempts.len();
    let mut s = out.span();
    s.ids(
        &trace.trace_id,
        &a.span_id,
        Some(&trace.span_id),
        state,
        otlp::span_flags(trace.sampled, false),
    )
    .name(op, upstream_model)
    .kind(Kind::Client)
    .times(start, end)
    .str("gen_ai.operation.name", op)
    .str("gen_ai.provider.name", &provider_name(d.provider.name()))
    .str("gen_ai.request.model", upstream_model)
    .str("switchboard.model_group", &d.config.model_name)
    .str("switchboard.deployment_id", d.id());
    if let Some(ep) = &d.endpoint {
        s.str("server.address", &ep.host)
            .int("server.port", ep.port as i64);
    }
    if index > 0 {
        s.int("switchboard.retry_of", index as i64);
    }
    request_params(f, &mut s);
    match a.error {
        Some((kind, http_status)) => {
            s.str("error.type", kind)
                .int("http.response.status_code", http_status as i64)
                .status(Some(kind));
        }
        None => {
            if last {
                s.str("gen_ai.response.model", upstream_model);
                usage(f, &mut s);
                finish_reasons(f, &mut s);
                if f.status > 0 {
                    s.int("http.response.status_code", f.status as i64);
                }
            }
            s.status(None);
        }
    }
    s.finish();
}

fn request_params(f: &Finished, s: &mut SpanWriter<'_>) {
    let p = &f.trace.params;
    if let Some(v) = p.max_tokens {
        s.int("gen_ai.request.max_tokens", v as i64);
    }
    for (k, v) in [
        ("gen_ai.request.temperature", p.temperature),
        ("gen_ai.request.top_p", p.top_p),
        ("gen_ai.request.top_k", p.top_k),
        ("gen_ai.request.frequency_penalty", p.frequency_penalty),
        ("gen_ai.request.presence_penalty", p.presence_penalty),
    ] {
        if let Some(v) = v {
            s.double(k, v);
        }
    }
    if let Some(v) = p.seed {
        s.int("gen_ai.request.seed", v);
    }
    if let Some(v) = p.choice_count.filter(|n| *n != 1) {
        s.int("gen_ai.request.choice.count", v as i64);
    }
}

fn usage(f: &Finished, s: &mut SpanWriter<'_>) {
    if let Some(u) = &f.usage {
        s.int("gen_ai.usage.input_tokens", u.prompt_tokens as i64)
            .int("gen_ai.usage.output_tokens", u.completion_tokens as i64);
        if let Some(d) = &u.prompt_tokens_details {
            if d.cached_tokens > 0 {
                s.int(
                    "gen_ai.usage.cache_read.input_tokens",
                    d.cached_tokens as i64,
                );
            }
            if d.cache_creation_tokens > 0 {
                s.int(
                    "gen_ai.usage.cache_creation.input_tokens",
                    d.cache_creation_tokens as i64,
                );
            }
        }
    }
    if let Some(c) = f.cost {
        s.double("gen_ai.usage.cost", c);
    }
}

/// `gen_ai.response.finish_reasons`: the answer's, when it carried any.
fn finish_reasons(f: &Finished, s: &mut SpanWriter<'_>) {
    let reasons = super::finish::reasons(&f.trace.finish_reasons);
    if !reasons.is_empty() {
        s.attr("gen_ai.response.finish_reasons", Val::StrArray(&reasons));
    }
}

/// Prompt and completion, only with content capture on, each cut at `cap` bytes.
fn content(f: &Finished, cap: usize, s: &mut SpanWriter<'_>) {
    if let Some(body) = &f.trace.request_body {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
            let key = if operation_name(f.route) == "embeddings" {
                "input"
            } else {
                "messages"
            };
            if let Some(m) = v.get(key) {
                s.str("gen_ai.input.messages", bounded(&m.to_string(), cap));
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
        s.str("gen_ai.output.messages", bounded(&out, cap));
    }
}

/// `s` cut to at most `cap` bytes on a character boundary.
fn bounded(s: &str, cap: usize) -> &str {
    if s.len() <= cap {
        return s;
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
