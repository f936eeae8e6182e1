//! Writing responses to the client through a [`ResponseSink`]: JSON bodies with an exact
//! Content-Length, OpenAI error objects, and streams. Every response carries `x-request-id` and
//! the gateway's own overhead (`x-litellm-overhead-duration-ms`), plus which deployment
//! answered. Every byte goes out through [`send_head`] and [`send_body`], which tee what the
//! context needs (status, time to first token, the whole answer when a stage asked for it) and
//! record a client that left.

use super::sink::ResponseSink;
use crate::context::Context;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora_http::ResponseHeader;

/// The response head every answer starts from.
pub fn head(status: u16, ctx: &Context, content_type: &str) -> ResponseHeader {
    let mut h = ResponseHeader::build(status, Some(8)).expect("valid status");
    let _ = h.insert_header(http::header::CONTENT_TYPE, content_type);
    let _ = h.insert_header("x-request-id", ctx.request_id.as_str());
    let overhead = ctx.start.elapsed().saturating_sub(ctx.upstream_time);
    let _ = h.insert_header(
        "x-litellm-overhead-duration-ms",
        format!("{:.3}", overhead.as_secs_f64() * 1000.0),
    );
    if let Some(d) = &ctx.deployment {
        let _ = h.insert_header("x-litellm-model-id", d.id());
        let _ = h.insert_header("x-litellm-model-api-base", d.api_base());
        let _ = h.insert_header("x-litellm-model-group", d.config.model_name.as_str());
    }
    if let Some(cost) = ctx.cost {
        let _ = h.insert_header(
            "x-litellm-response-cost",
            crate::cost::JsonNumber(cost).to_string(),
        );
    }
    if let Some(key) = ctx.principal.key() {
        key_headers(&mut h, key, ctx.cost);
    }
    if ctx.fallbacks_attempted > 0 {
        let _ = h.insert_header(
            "x-litellm-attempted-fallbacks",
            ctx.fallbacks_attempted.to_string(),
        );
    }
    if ctx.attempts > 1 {
        let _ = h.insert_header(
            "x-litellm-attempted-retries",
            (ctx.attempts - 1).to_string(),
        );
    }
    crate::limits::headers::decorate(&mut h, &ctx.rate_limit);
    if let (Some(key), 200) = (&ctx.cache_key, status) {
        let _ = h.insert_header("x-litellm-cache-key", key.as_str());
        let state = match ctx.cache {
            crate::context::CacheStatus::Hit => "hit",
            _ => "miss",
        };
        let _ = h.insert_header("x-switchboard-cache", state);
    }
    super::cors::decorate(&mut h, ctx);
    h
}

/// Replays a cache hit, already in the asked format: SSE for a stream, else the JSON answer.
pub async fn cached(sink: &mut impl ResponseSink, ctx: &mut Context, answer: Bytes) {
    if ctx.stream {
        if sse_head(sink, ctx).await {
            send_body(sink, ctx, answer, true).await;
        }
    } else {
        json(sink, ctx, 200, answer).await;
    }
}

/// LiteLLM's key headers (`get_custom_headers`): the key's spend including this call's cost
/// when it is known before the head goes out (not on streams, whose cost comes at the end),
/// and the key's budget and limits when set.
fn key_headers(h: &mut ResponseHeader, key: &crate::tenant::KeyEntry, cost: Option<f64>) {
    let spend = key.spend() + cost.filter(|c| *c > 0.0).unwrap_or(0.0);
    let _ = h.insert_header("x-litellm-key-spend", py_float(spend));
    if let Some(max) = key.row.max_budget {
        let _ = h.insert_header("x-litellm-key-max-budget", py_float(max));
    }
    if let Some(tpm) = key.row.tpm_limit {
        let _ = h.insert_header("x-litellm-key-tpm-limit", tpm.to_string());
    }
    if let Some(rpm) = key.row.rpm_limit {
        let _ = h.insert_header("x-litellm-key-rpm-limit", rpm.to_string());
    }
}

/// A number as Python's `str(float)` writes it (`1.0`, `0.025`), as LiteLLM's headers carry it.
fn py_float(v: f64) -> String {
    let s = crate::cost::JsonNumber(v).to_string();
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{s}.0")
    } else {
        s
    }
}

/// Writes a complete JSON response. A client that went away is recorded, not an error.
pub async fn json(sink: &mut impl ResponseSink, ctx: &mut Context, status: u16, body: Bytes) {
    let mut h = head(status, ctx, "application/json");
    let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    write_whole(sink, ctx, h, body).await;
}

/// Writes a complete response with a caller-built head (which sets Content-Length).
pub async fn whole(
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    h: ResponseHeader,
    body: Bytes,
) {
    write_whole(sink, ctx, h, body).await;
}

/// Writes an error with its status (and Retry-After when set), in the client's API's shape
/// (`ctx.wire`): an OpenAI error object, or Anthropic's for `/v1/messages`.
pub async fn error(sink: &mut impl ResponseSink, ctx: &mut Context, err: &GatewayError) {
    ctx.error = Some(err.message.clone());
    let (status, body) = match ctx.wire {
        crate::context::Wire::OpenAi => (err.status, err.body()),
        crate::context::Wire::Anthropic => (
            crate::ingress::messages::error::status(err),
            crate::ingress::messages::error::body(err),
        ),
    };
    let mut h = head(status, ctx, "application/json");
    let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    if let Some(secs) = err.retry_after {
        let _ = h.insert_header(http::header::RETRY_AFTER, secs.to_string());
    }
    write_whole(sink, ctx, h, body).await;
}

async fn write_whole(
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    h: ResponseHeader,
    body: Bytes,
) {
    if send_head(sink, ctx, h).await {
        send_body(sink, ctx, body, true).await;
    }
}

/// Starts an SSE response (no Content-Length: the sink frames it as a stream).
pub async fn sse_head(sink: &mut impl ResponseSink, ctx: &mut Context) -> bool {
    let mut h = head(200, ctx, "text/event-stream");
    let _ = h.insert_header(http::header::CACHE_CONTROL, "no-cache");
    send_head(sink, ctx, h).await
}

/// Writes a response head, recording its status. `false`: the client is gone (recorded).
pub async fn send_head(sink: &mut impl ResponseSink, ctx: &mut Context, h: ResponseHeader) -> bool {
    ctx.status = h.status.as_u16();
    if !sink.head(h).await {
        ctx.client_disconnected = true;
        return false;
    }
    true
}

/// Writes body bytes, keeping them in `ctx.answer` when a stage asked for the whole answer (a
/// whole body is shared, a stream's pieces are gathered). `false`: the client is gone.
pub async fn send_body(
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    bytes: Bytes,
    end: bool,
) -> bool {
    if ctx.keep_answer {
        ctx.tee_answer(&bytes, end);
    }
    if let Some(trace) = ctx.trace.as_deref_mut() {
        crate::telemetry::finish::note(trace, &bytes);
    }
    if !sink.body(bytes, end).await {
        ctx.client_disconnected = true;
        return false;
    }
    true
}
