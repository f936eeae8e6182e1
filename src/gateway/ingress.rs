//! The ingress APIs' hook into the exchange (`/v1/responses`, `/v1/completions`): the request
//! is translated into a chat body ([`crate::ingress`]) and handed to the chat exchange, so it
//! gets the same stages, routing, retries, fallbacks, cooldowns and accounting; the answer goes
//! out through [`Reshaping`], a response sink that rewrites the 2xx chat answer into the
//! client's format on its way to the real sink (a whole body at once, a stream write by write).
//! Error answers pass through unchanged: both APIs use OpenAI's error object.

use super::exchange;
use super::sink::ResponseSink;
use crate::app::{App, Live};
use crate::context::Context;
use crate::error::{GatewayError, GatewayResult};
use crate::ingress::{Egress, Ingress};
use crate::providers::Operation;
use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;

/// Serves one ingress request. `Err`: nothing was written; answer with the error.
pub async fn handle(
    app: &App,
    live: &Live,
    sink: &mut impl ResponseSink,
    ctx: &mut Context,
    ingress: Ingress,
    body: Bytes,
) -> GatewayResult<()> {
    let translated = crate::ingress::translate(ingress, &body)?;
    drop(body);
    let mut reshaping = Reshaping {
        inner: sink,
        egress: translated.egress,
        mode: Mode::Unstarted,
        out: BytesMut::new(),
    };
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
}

/// A response sink that rewrites a chat answer into an ingress format.
pub struct Reshaping<'s, S> {
    inner: &'s mut S,
    egress: Box<dyn Egress>,
    mode: Mode,
    out: BytesMut,
}

impl<S: ResponseSink> ResponseSink for Reshaping<'_, S> {
    async fn head(&mut self, head: ResponseHeader) -> bool {
        let ok = (200..300).contains(&head.status.as_u16());
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
            Mode::Stream => {
                self.egress.feed(&bytes, &mut self.out);
                if end {
                    self.egress.finish(&mut self.out);
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
                let body = match self.egress.whole(&buf) {
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
