//! Writing responses to the client: JSON bodies with an exact Content-Length, OpenAI error
//! objects, and the SSE response head. Every response carries `x-request-id` and the gateway's
//! own overhead (`x-litellm-overhead-duration-ms`), plus which deployment answered.

use super::RequestLog;
use crate::error::GatewayError;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// The response head every answer starts from.
pub fn head(status: u16, ctx: &RequestLog, content_type: &str) -> ResponseHeader {
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
    h
}

/// Writes a complete JSON response. A client that went away is recorded, not an error.
pub async fn json(session: &mut Session, ctx: &mut RequestLog, status: u16, body: Bytes) {
    let mut h = head(status, ctx, "application/json");
    let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    write_whole(session, ctx, h, body).await;
}

/// Writes a complete response with a caller-built head (which sets Content-Length).
pub async fn whole(session: &mut Session, ctx: &mut RequestLog, h: ResponseHeader, body: Bytes) {
    write_whole(session, ctx, h, body).await;
}

/// Writes an OpenAI error object with the error's status (and Retry-After when set).
pub async fn error(session: &mut Session, ctx: &mut RequestLog, err: &GatewayError) {
    ctx.error = Some(err.message.clone());
    let body = err.body();
    let mut h = head(err.status, ctx, "application/json");
    let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
    if let Some(secs) = err.retry_after {
        let _ = h.insert_header(http::header::RETRY_AFTER, secs.to_string());
    }
    write_whole(session, ctx, h, body).await;
}

async fn write_whole(session: &mut Session, ctx: &mut RequestLog, h: ResponseHeader, body: Bytes) {
    ctx.status = h.status.as_u16();
    let head_only = session.req_header().method == http::Method::HEAD;
    if session
        .write_response_header(Box::new(h), false)
        .await
        .is_err()
    {
        ctx.client_disconnected = true;
        return;
    }
    let body = if head_only { Bytes::new() } else { body };
    if session.write_response_body(Some(body), true).await.is_err() {
        ctx.client_disconnected = true;
    }
}

/// Starts an SSE response: no Content-Length; chunked on HTTP/1.1, close-delimited on HTTP/1.0
/// (which has no chunked encoding: the connection's end is the stream's end).
pub async fn sse_head(session: &mut Session, ctx: &mut RequestLog) -> bool {
    let mut h = head(200, ctx, "text/event-stream");
    let _ = h.insert_header(http::header::CACHE_CONTROL, "no-cache");
    if !session.is_http2() {
        if session.req_header().version == http::Version::HTTP_10 {
            session.set_keepalive(None);
        } else {
            let _ = h.insert_header(http::header::TRANSFER_ENCODING, "chunked");
        }
    }
    ctx.status = 200;
    if session
        .write_response_header(Box::new(h), false)
        .await
        .is_err()
    {
        ctx.client_disconnected = true;
        return false;
    }
    true
}
