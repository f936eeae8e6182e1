//! The response sink: the client side of an exchange. The exchange and `respond` write the
//! answer through [`ResponseSink`] (head, body bytes, end) and watch the client connection
//! through it for hang-ups; only [`SessionSink`] knows Pingora's `Session`. What accounting and
//! a cache need (status, the whole answer) is teed in `respond` as the bytes go out, never read
//! back in a second pass.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::future::Future;

/// Where a response goes. `false` from a write means the client is gone.
pub trait ResponseSink: Send {
    /// Writes the response head. A head without Content-Length is a stream: the sink frames it
    /// (chunked on HTTP/1.1, close-delimited on HTTP/1.0).
    fn head(&mut self, head: ResponseHeader) -> impl Future<Output = bool> + Send;

    /// Writes body bytes; `end` closes the response (`bytes` may then be empty).
    fn body(&mut self, bytes: Bytes, end: bool) -> impl Future<Output = bool> + Send;

    /// Resolves when the client hangs up (or sends what it must not mid-response): the client
    /// connection watch that cancels upstream work. Cancel-safe; pending while the client waits.
    fn hung_up(&mut self) -> impl Future<Output = ()> + Send;
}

/// The real client: a Pingora server session. HEAD requests get the head only.
pub struct SessionSink<'s> {
    session: &'s mut Session,
    head_only: bool,
}

impl<'s> SessionSink<'s> {
    pub fn new(session: &'s mut Session) -> Self {
        let head_only = session.req_header().method == http::Method::HEAD;
        SessionSink { session, head_only }
    }

    /// The session, for what happens before the answer (reading the request body).
    pub fn session(&mut self) -> &mut Session {
        self.session
    }
}

impl ResponseSink for SessionSink<'_> {
    async fn head(&mut self, mut head: ResponseHeader) -> bool {
        let bodiless = matches!(head.status.as_u16(), 204 | 304);
        if !self.session.is_http2()
            && !bodiless
            && !head.headers.contains_key(http::header::CONTENT_LENGTH)
        {
            if self.session.req_header().version == http::Version::HTTP_10 {
                // HTTP/1.0 has no chunked encoding: the connection's end is the stream's end.
                self.session.set_keepalive(None);
            } else {
                // Never close-delimited on HTTP/1.1.
                let _ = head.insert_header(http::header::TRANSFER_ENCODING, "chunked");
            }
        }
        self.session
            .write_response_header(Box::new(head), false)
            .await
            .is_ok()
    }

    async fn body(&mut self, bytes: Bytes, end: bool) -> bool {
        let bytes = if self.head_only { Bytes::new() } else { bytes };
        self.session
            .write_response_body(Some(bytes), end)
            .await
            .is_ok()
    }

    async fn hung_up(&mut self) {
        let _ = self.session.read_body_or_idle(true).await;
    }
}

/// A sink that records what it is given, for tests of the exchange and the stages.
#[derive(Default)]
pub struct RecordingSink {
    pub head: Option<ResponseHeader>,
    pub body: Vec<u8>,
    /// Body writes, one entry per call.
    pub writes: usize,
    pub ended: bool,
    /// Refuse writes after this many body bytes (a client that leaves mid-answer).
    pub hang_up_after: Option<usize>,
}

impl RecordingSink {
    pub fn status(&self) -> Option<u16> {
        self.head.as_ref().map(|h| h.status.as_u16())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head
            .as_ref()?
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
    }
}

impl ResponseSink for RecordingSink {
    async fn head(&mut self, head: ResponseHeader) -> bool {
        self.head = Some(head);
        true
    }

    async fn body(&mut self, bytes: Bytes, end: bool) -> bool {
        if self.hang_up_after.is_some_and(|n| self.body.len() >= n) {
            return false;
        }
        self.body.extend_from_slice(&bytes);
        self.writes += 1;
        self.ended |= end;
        true
    }

    async fn hung_up(&mut self) {
        std::future::pending::<()>().await
    }
}
