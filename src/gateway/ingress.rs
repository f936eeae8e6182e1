//! The ingress APIs' hook into the exchange (`/v1/responses`, `/v1/completions`): the request
//! is translated into a chat body ([`crate::ingress`]) and handed to the chat exchange, so it
//! gets the same stages, routing, retries, fallbacks, cooldowns and accounting; the answer goes
//! out through [`Reshaping`], a response sink that rewrites the 2xx chat answer into the
//! client's format on its way to the real sink (a whole body at once, a stream write by write).
//! Error answers pass through unchanged: both APIs use OpenAI's error object.
//!
//! A Responses call whose model group has a deployment with the Responses API (OpenAI, Azure
//! OpenAI) also carries the client's own body ([`exchange::ResponsesIngress`]): such a
//! deployment gets it with only `model` replaced, and its answer reaches the client unchanged
//! (the sink is told, and notes the response id so a `previous_response_id` goes back to that
//! deployment). A body only the Responses API can serve (built-in tools, stored state) is then
//! refused, naming the field, by the deployments without it. Such groups skip the response
//! cache, which holds chat answers.

use super::exchange::{self, ResponsesIngress};
use super::sink::ResponseSink;
use crate::app::{App, Live};
use crate::context::Context;
use crate::error::{GatewayError, GatewayResult};
use crate::ingress::{Egress, Ingress};
use crate::openai::RequestBody;
use crate::providers::Operation;
use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use std::sync::atomic::{AtomicBool, Ordering};

/// Serves one ingress request. `Err`: nothing was written; answer with the error.
pub async fn handle(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    ingress: Ingress,
    body: Bytes,
) -> GatewayResult<()> {
    if ingress == Ingress::Responses {
        let raw = RequestBody::parse(&body)?;
        if has_native_deployment(live, ctx, &raw) {
            return native_capable(app, live, sink, ctx, &raw, &body).await;
        }
    }
    let translated = crate::ingress::translate(ingress, &body)?;
    drop(body);
    let mut reshaping = Reshaping::new(sink, Some(translated.egress), None);
    exchange::handle(
        app,
        live,
        &mut reshaping,
        ctx,
        Operation::Chat,
        translated.chat,
    )
    .await
}

/// Whether the group the request names has a deployment with the Responses API.
fn has_native_deployment(live: &Live, ctx: &Context, raw: &RequestBody<'_>) -> bool {
    let Ok(mut model) = raw.required_str("model") else {
        return false;
    };
    if let Some(key) = ctx.principal.key() {
        match crate::keys::auth::resolve_model(key, model) {
            Ok(m) => model = m,
            Err(_) => return false,
        }
    }
    live.routing.resolve(&model).is_some_and(|group| {
        group
            .deployments
            .iter()
            .any(|d| d.provider.has_responses_api())
    })
}

/// A Responses call that may be passed through (see the module doc).
async fn native_capable(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    raw: &RequestBody<'_>,
    body: &Bytes,
) -> GatewayResult<()> {
    let (chat, egress, refusal) = match crate::ingress::translate(Ingress::Responses, body) {
        Ok(t) => (t.chat, Some(t.egress), None),
        Err(e) => (stand_in(raw)?, None, Some(e)),
    };
    let parsed = RequestBody::parse(&chat)?;
    let pinned = raw
        .typed::<std::borrow::Cow<'_, str>>("previous_response_id")
        .ok()
        .flatten()
        .and_then(|id| app.response_origins.get(&id));
    let ingress = ResponsesIngress {
        raw,
        refusal,
        pinned,
        answered_natively: AtomicBool::new(false),
    };
    let mut reshaping = Reshaping::new(sink, egress, Some(&ingress.answered_natively));
    let result =
        exchange::run_responses(app, live, &mut reshaping, ctx, &parsed, body, &ingress).await;
    if let (Some(id), Some(deployment)) = (reshaping.native_id.as_deref(), &ctx.deployment) {
        app.response_origins.record(id, deployment.id());
    }
    result
}

/// The chat body admission, routing and accounting read for a Responses body that cannot be
/// translated (only a native deployment can serve it): its model, stream flag and user.
fn stand_in(raw: &RequestBody<'_>) -> GatewayResult<Bytes> {
    let model = raw
        .get("model")
        .ok_or_else(|| GatewayError::missing_field("model"))?;
    raw.required_str("model")?;
    let stream = raw.bool_field("stream")?;
    let mut chat = format!(
        r#"{{"model":{},"messages":[],"stream":{stream}"#,
        model.get()
    );
    if let Some(user) = raw.get("user") {
        chat.push_str(r#","user":"#);
        chat.push_str(user.get());
    }
    chat.push('}');
    Ok(Bytes::from(chat))
}

/// On the stack for one request; boxing the held head would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
enum Mode {
    Unstarted,
    /// A 2xx whole body: the head waits for the body (its Content-Length changes).
    Whole(ResponseHeader, Vec<u8>),
    /// A 2xx stream, rewritten as it goes.
    Stream,
    /// An error answer: passed through.
    Through,
    /// A native Responses answer: passed through, its response id noted.
    Native,
}

/// Most bytes of a native answer searched for its response id (it comes first).
const ID_SCAN_LIMIT: usize = 16 * 1024;

/// A response sink that rewrites a chat answer into an ingress format.
pub struct Reshaping<'s, S> {
    inner: &'s mut S,
    /// `None` when no attempt can be translated (only native answers reach the sink).
    egress: Option<Box<dyn Egress>>,
    /// Set by the exchange when a native Responses attempt answers.
    natively: Option<&'s AtomicBool>,
    mode: Mode,
    out: BytesMut,
    /// The start of a native answer, while its response id is looked for.
    id_scan: Vec<u8>,
    /// The native answer's response id, once seen.
    native_id: Option<String>,
}

impl<'s, S> Reshaping<'s, S> {
    fn new(
        inner: &'s mut S,
        egress: Option<Box<dyn Egress>>,
        natively: Option<&'s AtomicBool>,
    ) -> Self {
        Reshaping {
            inner,
            egress,
            natively,
            mode: Mode::Unstarted,
            out: BytesMut::new(),
            id_scan: Vec::new(),
            native_id: None,
        }
    }

    /// Looks for the response id in the first bytes of a native answer.
    fn scan_id(&mut self, bytes: &[u8]) {
        if self.native_id.is_some() || self.id_scan.len() >= ID_SCAN_LIMIT {
            return;
        }
        let take = bytes.len().min(ID_SCAN_LIMIT - self.id_scan.len());
        self.id_scan.extend_from_slice(&bytes[..take]);
        if let Some(id) = crate::ingress::responses::native::response_id_in(&self.id_scan) {
            // Complete only once its closing quote arrived (`response_id_in` waits for it).
            self.native_id = Some(id.to_string());
            self.id_scan = Vec::new();
        }
    }
}

impl<S: ResponseSink> ResponseSink for Reshaping<'_, S> {
    async fn head(&mut self, head: ResponseHeader) -> bool {
        let ok = (200..300).contains(&head.status.as_u16());
        let native = self.natively.is_some_and(|n| n.load(Ordering::Relaxed));
        if (ok && native) || self.egress.is_none() {
            self.mode = if ok { Mode::Native } else { Mode::Through };
            return self.inner.head(head).await;
        }
        let sse = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        match (ok, sse) {
            (true, false) => {
                self.mode = Mode::Whole(head, Vec::new());
                true
            }
            (true, true) => {
                self.mode = Mode::Stream;
                self.inner.head(head).await
            }
            (false, _) => {
                self.mode = Mode::Through;
                self.inner.head(head).await
            }
        }
    }

    async fn body(&mut self, bytes: Bytes, end: bool) -> bool {
        match &mut self.mode {
            Mode::Unstarted | Mode::Through => self.inner.body(bytes, end).await,
            Mode::Native => {
                self.scan_id(&bytes);
                self.inner.body(bytes, end).await
            }
            Mode::Stream => {
                let Some(egress) = self.egress.as_mut() else {
                    return self.inner.body(bytes, end).await;
                };
                egress.feed(&bytes, &mut self.out);
                if end {
                    egress.finish(&mut self.out);
                }
                if self.out.is_empty() && !end {
                    return true;
                }
                let out = self.out.split().freeze();
                self.inner.body(out, end).await
            }
            Mode::Whole(_, buf) => {
                buf.extend_from_slice(&bytes);
                if !end {
                    return true;
                }
                let Mode::Whole(mut head, buf) = std::mem::replace(&mut self.mode, Mode::Through)
                else {
                    return true;
                };
                let rewritten = match self.egress.as_mut() {
                    Some(egress) => egress.whole(&buf),
                    None => Ok(Bytes::from(buf)),
                };
                let body = match rewritten {
                    Ok(body) => body,
                    Err(e) => {
                        head = error_head(&e, head);
                        e.body()
                    }
                };
                let _ = head.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
                self.inner.head(head).await && self.inner.body(body, true).await
            }
        }
    }

    async fn hung_up(&mut self) {
        self.inner.hung_up().await
    }
}

/// The head of an answer that could not be rewritten: the error's status, same headers.
fn error_head(e: &GatewayError, head: ResponseHeader) -> ResponseHeader {
    let mut h = head;
    let _ = h.set_status(e.status);
    h
}
