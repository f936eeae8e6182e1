//! One LLM call, end to end: read and parse the client body once, pick a deployment, have its
//! provider build the native request, drive it through the pooled connector, and answer the
//! client, whole (exact Content-Length) or as a stream translated event by event. Deadlines are
//! enforced here: `timeout` bounds the whole exchange, `stream_timeout` bounds the wait for the
//! first byte and every silence between chunks. A client that hangs up mid-stream is noticed
//! while waiting on the upstream, and the upstream request is dropped at once.

use super::{respond, unix_now, App, RequestLog};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::openai::request::EmbeddingsRequest;
use crate::openai::RequestBody;
use crate::providers::{Operation, RequestContext};
use crate::router::{Deployment, Snapshot, Target};
use bytes::{Bytes, BytesMut};
use pingora_proxy::Session;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest upstream (non-streaming) response body read into memory.
const MAX_RESPONSE_BODY: usize = 256 * 1024 * 1024;
/// Largest upstream error body read (the rest is not needed to explain the error).
const MAX_ERROR_BODY: usize = 1024 * 1024;

pub fn model_not_found(model: &str) -> GatewayError {
    GatewayError::new(
        ErrorKind::NotFound,
        format!("The model '{model}' does not exist on this gateway. GET /v1/models lists the model names it serves."),
    )
    .with_param("model")
    .with_code("model_not_found")
}

/// Handles a chat or embeddings call. `Err` means nothing was written yet and the caller should
/// answer with the error; once a response has started, errors are written here.
pub async fn handle(
    app: &App,
    snapshot: &Arc<Snapshot>,
    session: &mut Session,
    ctx: &mut RequestLog,
    op: Operation,
) -> GatewayResult<()> {
    let body = read_body(session, snapshot.config.general.max_request_size).await?;
    let parsed = RequestBody::parse(&body)?;
    let model = parsed.required_str("model")?;
    ctx.model = Some(model.to_string());
    match op {
        Operation::Chat if !parsed.has("messages") => {
            return Err(GatewayError::missing_field("messages"))
        }
        Operation::Embeddings if !parsed.has("input") => {
            return Err(GatewayError::missing_field("input"))
        }
        _ => {}
    }
    let stream = op == Operation::Chat && parsed.bool_field("stream")?;
    let include_usage = stream && parsed.include_usage()?;
    ctx.stream = stream;

    let group = snapshot
        .group(&model)
        .ok_or_else(|| model_not_found(&model))?;
    let deployment = group.pick().clone();
    ctx.deployment = Some(deployment.clone());
    ctx.attempts = 1;

    let response_id = format!("chatcmpl-{}", super::new_id());
    let cx = RequestContext {
        op,
        stream,
        include_usage,
        response_id: &response_id,
        created: unix_now(),
        drop_params: deployment.drop_params,
        embeddings_base64: op == Operation::Embeddings
            && parsed.get("encoding_format").map(|v| v.get()) == Some("\"base64\""),
    };

    let _in_flight = InFlight::enter(&deployment);
    match &deployment.target {
        Target::Mock(mock) => {
            if let Some(err) = mock.error() {
                return Err(err);
            }
            answer_mock(mock, &parsed, &cx, body.len(), session, ctx).await
        }
        Target::Upstream { provider, endpoint } => {
            if !provider.supports(op) {
                return Err(GatewayError::invalid_param(
                    "model",
                    format!(
                        "The model '{model}' ({}) does not support {}.",
                        provider.name(),
                        op.as_str()
                    ),
                ));
            }
            let deadline = Instant::now() + deployment.timeout;
            let request = provider.build_request(&parsed, &cx, &app.client).await?;
            // Until the first byte: `stream_timeout` for streams, the whole deadline otherwise.
            let first_byte = if stream {
                deployment.stream_timeout
            } else {
                deployment.timeout
            };
            let upstream_start = Instant::now();
            let sent =
                tokio::time::timeout(first_byte, app.client.send(endpoint, &request, None)).await;
            ctx.upstream_time += upstream_start.elapsed();
            let mut response = match sent {
                Ok(r) => r?,
                Err(_) => {
                    return Err(GatewayError::timeout(format!(
                        "{} did not start answering within {:.1}s.",
                        provider.name(),
                        first_byte.as_secs_f64()
                    )))
                }
            };
            if !(200..300).contains(&response.status) {
                let err_body = within(deadline, response.body(MAX_ERROR_BODY))
                    .await
                    .unwrap_or_default();
                let err = provider.map_error(response.status, &response.header, &err_body);
                deployment.state.failures.fetch_add(1, Ordering::Relaxed);
                return Err(err);
            }
            if stream {
                let mut translator = provider.stream_translator(&cx);
                stream_to_client(
                    &mut response,
                    translator.as_mut(),
                    &deployment,
                    deadline,
                    session,
                    ctx,
                )
                .await;
                ctx.usage = translator.usage();
                Ok(())
            } else {
                let upstream_start = Instant::now();
                let whole = within(deadline, response.body(MAX_RESPONSE_BODY)).await;
                ctx.upstream_time += upstream_start.elapsed();
                let translated = provider.parse_response(&whole?, &cx)?;
                ctx.usage = translated.usage;
                respond::json(session, ctx, 200, translated.body).await;
                Ok(())
            }
        }
    }
}

/// Awaits `fut` until `deadline`, as a 504 after it.
async fn within<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = GatewayResult<T>>,
) -> GatewayResult<T> {
    match tokio::time::timeout_at(deadline.into(), fut).await {
        Ok(r) => r,
        Err(_) => Err(GatewayError::timeout(
            "The upstream did not finish within the request timeout.",
        )),
    }
}

/// Counts a request in flight on a deployment for as long as it lives (least-busy routing,
/// limits), including when the client hangs up and the future is dropped.
struct InFlight(Arc<Deployment>);

impl InFlight {
    fn enter(d: &Arc<Deployment>) -> Self {
        d.state.in_flight.fetch_add(1, Ordering::Relaxed);
        d.state.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(d.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pipes a 2xx upstream stream to the client through the translator. Waits on the upstream and
/// on the client at once, so a client hang-up drops the upstream request immediately.
async fn stream_to_client(
    response: &mut crate::upstream::UpstreamResponse<'_>,
    translator: &mut dyn crate::providers::StreamTranslator,
    deployment: &Deployment,
    deadline: Instant,
    session: &mut Session,
    ctx: &mut RequestLog,
) {
    if !respond::sse_head(session, ctx).await {
        return;
    }
    let mut out = BytesMut::with_capacity(4096);
    loop {
        let gap = deployment
            .stream_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let next = tokio::select! {
            biased;
            r = tokio::time::timeout(gap, response.chunk()) => r,
            _ = session.read_body_or_idle(true) => {
                ctx.client_disconnected = true;
                return;
            }
        };
        let result = match next {
            Err(_) => Err(GatewayError::timeout(format!(
                "The upstream stream went silent for more than {:.1}s.",
                gap.as_secs_f64()
            ))),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => translator.finish(&mut out).map(|_| true),
            Ok(Ok(Some(chunk))) => translator.feed(&chunk, &mut out).map(|_| false),
        };
        let ended = match result {
            Ok(ended) => ended,
            Err(e) => {
                // Mid-stream failure: end the stream with an OpenAI error event.
                ctx.error = Some(e.message.clone());
                out.extend_from_slice(&e.sse_event());
                out.extend_from_slice(b"data: [DONE]\n\n");
                true
            }
        };
        if !out.is_empty() {
            if ctx.ttft.is_none() {
                ctx.ttft = Some(ctx.start.elapsed());
            }
            if session
                .write_response_body(Some(out.split().freeze()), ended)
                .await
                .is_err()
            {
                ctx.client_disconnected = true;
                return;
            }
        } else if ended {
            let _ = session.write_response_body(None, true).await;
        }
        if ended {
            return;
        }
    }
}

async fn answer_mock(
    mock: &crate::providers::mock::MockResponder,
    parsed: &RequestBody<'_>,
    cx: &RequestContext<'_>,
    prompt_bytes: usize,
    session: &mut Session,
    ctx: &mut RequestLog,
) -> GatewayResult<()> {
    match cx.op {
        Operation::Embeddings => {
            let req = EmbeddingsRequest::from_body(parsed)?;
            let inputs = match &req.input {
                crate::openai::request::EmbeddingInput::Many(v) => v.len(),
                crate::openai::request::EmbeddingInput::TokenBatches(v) => v.len(),
                _ => 1,
            };
            let (body, usage) = mock.embeddings(inputs, req.base64, prompt_bytes);
            ctx.usage = Some(usage);
            respond::json(session, ctx, 200, body).await;
        }
        Operation::Chat if cx.stream => {
            let (events, usage) =
                mock.stream_events(cx.response_id, cx.created, cx.include_usage, prompt_bytes);
            ctx.usage = Some(usage);
            if !respond::sse_head(session, ctx).await {
                return Ok(());
            }
            let last = events.len().saturating_sub(1);
            for (i, ev) in events.into_iter().enumerate() {
                if ctx.ttft.is_none() {
                    ctx.ttft = Some(ctx.start.elapsed());
                }
                if session
                    .write_response_body(Some(ev), i == last)
                    .await
                    .is_err()
                {
                    ctx.client_disconnected = true;
                    break;
                }
            }
        }
        Operation::Chat => {
            let (body, usage) = mock.completion(cx.response_id, cx.created, prompt_bytes);
            ctx.usage = Some(usage);
            respond::json(session, ctx, 200, body).await;
        }
    }
    Ok(())
}

/// Reads the whole request body, refusing more than `limit` bytes (413) before reading it when
/// Content-Length says so, and as soon as the count passes the limit otherwise.
async fn read_body(session: &mut Session, limit: usize) -> GatewayResult<Bytes> {
    let too_large = || {
        GatewayError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "The request body is larger than the gateway's limit of {:.2} MB (general_settings.max_request_size_mb).",
                limit as f64 / (1024.0 * 1024.0)
            ),
        )
        .with_code("request_too_large")
    };
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        // The body stays unread: this connection cannot be reused.
        session.set_keepalive(None);
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    if let Some(n) = declared {
        buf.reserve(n);
    }
    let read_timeout = Duration::from_secs(60);
    loop {
        let chunk = match tokio::time::timeout(read_timeout, session.read_request_body()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                session.set_keepalive(None);
                return Err(GatewayError::bad_request(format!(
                    "Could not read the request body ({}).",
                    e.etype().as_str()
                )));
            }
            Err(_) => {
                session.set_keepalive(None);
                return Err(GatewayError::new(
                    ErrorKind::RequestTimeout,
                    "Timed out reading the request body.",
                )
                .with_status(408));
            }
        };
        let Some(chunk) = chunk else { break };
        if first.is_none() && buf.is_empty() {
            first = Some(chunk);
        } else {
            if let Some(f) = first.take() {
                buf.extend_from_slice(&f);
            }
            buf.extend_from_slice(&chunk);
        }
        let len = first.as_ref().map(|f| f.len()).unwrap_or(0) + buf.len();
        if len > limit {
            session.set_keepalive(None);
            return Err(too_large());
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}
