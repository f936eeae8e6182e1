//! The client's request as the body reader and the framing check see it: a head, the raw
//! HTTP/1 head bytes, body chunks, and a way to stop reusing the connection. [`ClientRequest`]
//! is that much of Pingora's `Session` (which implements it), so an ingress format or a test
//! can drive [`read_body`] and [`super::framing::check`] without a socket.

use crate::error::{ErrorKind, GatewayError, GatewayResult};
use bytes::{Bytes, BytesMut};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use std::future::Future;
use std::time::Duration;

/// What the gateway reads from a client request before answering it.
pub trait ClientRequest: Send {
    fn req_header(&self) -> &RequestHeader;

    /// The request head exactly as received, for requests that came over HTTP/1 (`None`
    /// otherwise): it still shows headers Pingora normalised away.
    fn raw_head(&self) -> Option<Bytes>;

    /// The next body chunk, `None` at the end; `Err` names what went wrong reading it.
    fn next_body_chunk(
        &mut self,
    ) -> impl Future<Output = Result<Option<Bytes>, &'static str>> + Send;

    /// The connection's framing can no longer be trusted (an unread or half-read body): close
    /// it after this response instead of reusing it.
    fn close_after_response(&mut self);
}

impl ClientRequest for Session {
    fn req_header(&self) -> &RequestHeader {
        // The server session's own method (through Deref), not this trait's.
        let server: &pingora_core::protocols::http::ServerSession = self;
        server.req_header()
    }

    fn raw_head(&self) -> Option<Bytes> {
        self.as_http1().map(|h1| h1.get_headers_raw_bytes())
    }

    async fn next_body_chunk(&mut self) -> Result<Option<Bytes>, &'static str> {
        self.read_request_body()
            .await
            .map_err(|e| e.etype().as_str())
    }

    fn close_after_response(&mut self) {
        self.set_keepalive(None);
    }
}

/// Reads the whole request body within `timeout` (408 after it), refusing more than `limit`
/// bytes (413) before reading it when Content-Length says so, and as soon as the count passes
/// the limit otherwise. The buffer grows with the bytes that arrive, never with what a
/// Content-Length merely declares.
pub async fn read_body(
    request: &mut impl ClientRequest,
    limit: usize,
    timeout: Duration,
) -> GatewayResult<Bytes> {
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
    let declared = request
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        // The body stays unread: this connection cannot be reused.
        request.close_after_response();
        return Err(too_large());
    }
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, request.next_body_chunk()).await {
            Ok(Ok(c)) => c,
            Ok(Err(cause)) => {
                request.close_after_response();
                return Err(GatewayError::bad_request(format!(
                    "Could not read the request body ({cause})."
                )));
            }
            Err(_) => {
                request.close_after_response();
                return Err(GatewayError::new(
                    ErrorKind::RequestTimeout,
                    format!(
                        "The request body did not arrive within {:.1}s (switchboard.request_body_timeout_seconds).",
                        timeout.as_secs_f64()
                    ),
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
            request.close_after_response();
            return Err(too_large());
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A client request driven by the test: scripted body chunks, then (optionally) silence.
    struct Scripted {
        head: RequestHeader,
        raw: Option<Bytes>,
        chunks: VecDeque<Result<Option<Bytes>, &'static str>>,
        reads: usize,
        closed: bool,
    }

    impl Scripted {
        fn new(headers: &[(&str, &str)], chunks: &[&'static [u8]]) -> Self {
            let mut head = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
            for (k, v) in headers {
                head.insert_header(k.to_string(), v.to_string()).unwrap();
            }
            let mut scripted: VecDeque<_> = chunks
                .iter()
                .map(|c| Ok(Some(Bytes::from_static(c))))
                .collect();
            scripted.push_back(Ok(None));
            Scripted {
                head,
                raw: None,
                chunks: scripted,
                reads: 0,
                closed: false,
            }
        }
    }

    impl ClientRequest for Scripted {
        fn req_header(&self) -> &RequestHeader {
            &self.head
        }

        fn raw_head(&self) -> Option<Bytes> {
            self.raw.clone()
        }

        async fn next_body_chunk(&mut self) -> Result<Option<Bytes>, &'static str> {
            self.reads += 1;
            match self.chunks.pop_front() {
                Some(next) => next,
                // The client went silent.
                None => std::future::pending().await,
            }
        }

        fn close_after_response(&mut self) {
            self.closed = true;
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_body_in_one_chunk_is_shared_and_pieces_are_joined() {
        static ONE: &[u8] = br#"{"model":"m"}"#;
        let mut req = Scripted::new(&[], &[ONE]);
        let body = read_body(&mut req, 1024, SECOND).await.unwrap();
        assert_eq!(
            body.as_ptr(),
            ONE.as_ptr(),
            "one chunk is handed on, not copied"
        );
        assert!(!req.closed);

        let mut req = Scripted::new(&[], &[b"{\"mo", b"del\":", b"\"m\"}"]);
        let body = read_body(&mut req, 1024, SECOND).await.unwrap();
        assert_eq!(&body[..], br#"{"model":"m"}"#);
    }

    #[tokio::test]
    async fn too_large_is_refused_before_reading_when_declared_and_as_soon_as_it_shows() {
        let mut req = Scripted::new(&[("content-length", "2048")], &[b"x"]);
        let e = read_body(&mut req, 1024, SECOND).await.unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (413, Some("request_too_large"))
        );
        assert!(e.message.contains("general_settings.max_request_size_mb"));
        assert_eq!(req.reads, 0, "a declared oversize body is not read");
        assert!(req.closed, "the unread body makes the connection unusable");

        // Undeclared (chunked): refused at the chunk that passes the limit, the rest unread.
        let mut req = Scripted::new(&[], &[&[b'a'; 600], &[b'b'; 600], &[b'c'; 600]]);
        let e = read_body(&mut req, 1024, SECOND).await.unwrap_err();
        assert_eq!(e.status, 413);
        assert_eq!(req.reads, 2);
        assert!(req.closed);
    }

    #[tokio::test]
    async fn a_stalled_body_is_a_408_and_a_broken_one_a_400() {
        let mut req = Scripted::new(&[], &[b"{\"model\""]);
        req.chunks.pop_back(); // no end: the client stops sending
        let e = read_body(&mut req, 1024, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.status, 408);
        assert!(e
            .message
            .contains("switchboard.request_body_timeout_seconds"));
        assert!(req.closed);

        let mut req = Scripted::new(&[], &[]);
        req.chunks = VecDeque::from([Err("ConnectionClosed")]);
        let e = read_body(&mut req, 1024, SECOND).await.unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("ConnectionClosed"), "{}", e.message);
        assert!(req.closed);
    }

    #[test]
    fn framing_refuses_content_length_beside_transfer_encoding() {
        let mut req = Scripted::new(&[("transfer-encoding", "chunked")], &[]);
        req.raw = Some(Bytes::from_static(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        ));
        let e = super::super::framing::check(&req).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("ambiguous_framing"))
        );

        req.raw = Some(Bytes::from_static(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ));
        assert!(super::super::framing::check(&req).is_ok());
        // Not HTTP/1 (no raw head): nothing to disagree about.
        req.raw = None;
        assert!(super::super::framing::check(&req).is_ok());
        assert!(super::super::framing::check(&Scripted::new(&[], &[])).is_ok());
    }
}
