//! Request framing the gateway refuses before anything else: a request carrying both
//! `Content-Length` and `Transfer-Encoding`. Pingora drops the `Content-Length` and reads the
//! body as chunked (RFC 9112 §6.3 allows that), but a proxy in front of us that framed the same
//! bytes by `Content-Length` would disagree about where the next request starts: the classic
//! request-smuggling setup. RFC 9112 also lets a server reject such a message, and we do: 400 and
//! the connection closed, the body never read or forwarded. (Conflicting `Content-Length`s, a
//! final encoding other than `chunked`, and obs-folded header lines Pingora itself rejects with
//! 400 and a closed connection.)

use super::body::ClientRequest;
use crate::error::{ErrorKind, GatewayError};

/// `Err` when the request's framing is ambiguous.
pub fn check(request: &impl ClientRequest) -> Result<(), GatewayError> {
    // Cheap test first: Pingora keeps Transfer-Encoding, so only such requests need a look at
    // the raw head (where the Content-Length Pingora removed is still visible).
    if !request
        .req_header()
        .headers
        .contains_key(http::header::TRANSFER_ENCODING)
    {
        return Ok(());
    }
    match request.raw_head() {
        Some(head) if has_content_length(&head) => Err(GatewayError::new(
            ErrorKind::BadRequest,
            "The request has both Content-Length and Transfer-Encoding; send exactly one of them.",
        )
        .with_code("ambiguous_framing")),
        _ => Ok(()),
    }
}

/// Whether a raw HTTP/1 request head has a `Content-Length` header line.
fn has_content_length(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        line.iter()
            .position(|&b| b == b':')
            .is_some_and(|colon| line[..colon].eq_ignore_ascii_case(b"content-length"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_content_length_in_any_case_but_not_in_the_request_line_or_values() {
        let head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncOnTeNt-LeNgTh: 5\r\n\r\n";
        assert!(has_content_length(head));
        assert!(!has_content_length(
            b"POST /content-length: HTTP/1.1\r\nHost: x\r\nX-Note: content-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!has_content_length(
            b"POST / HTTP/1.1\r\nContent-Lengthy: 5\r\n\r\n"
        ));
    }
}
