//! Errors in Anthropic's shape, `{"type":"error","error":{"type","message"}}`, for every error a
//! `/v1/messages` client sees (the gateway's own, its stages', and upstreams'), with
//! Anthropic's status → type mapping, and Anthropic's statuses (an upstream's 529 overloaded
//! stays 529 here, where the SDK raises `OverloadedError` on it).

use crate::error::GatewayError;
use bytes::Bytes;
use serde::Serialize;

/// The status a Messages client gets: the upstream's own 529 where an OpenAI client gets 503.
pub fn status(err: &GatewayError) -> u16 {
    match err.provider_status {
        Some(529) => 529,
        _ => err.status,
    }
}

/// Anthropic's `error.type` for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

#[derive(Serialize)]
struct Inner<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct Outer<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    error: Inner<'a>,
}

/// The `error.type` a Messages client gets: a spent budget is Anthropic's `billing_error`
/// (the status stays the gateway's, 422 unless `budget_exceeded_status` says otherwise),
/// anything else the type of its status.
pub fn kind(err: &GatewayError) -> &'static str {
    match err.error_type {
        Some("budget_exceeded") => "billing_error",
        _ => error_type(status(err)),
    }
}

/// The error body.
pub fn body(err: &GatewayError) -> Bytes {
    let body = Outer {
        kind: "error",
        error: Inner {
            kind: kind(err),
            message: &err.message,
        },
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The error as an SSE `error` event, for failures after a stream has started.
pub fn sse_event(err: &GatewayError) -> Bytes {
    let body = body(err);
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(b"event: error\ndata: ");
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn shape_and_status_mapping() {
        let e = GatewayError::new(ErrorKind::Authentication, "Missing API key.");
        let v: serde_json::Value = serde_json::from_slice(&body(&e)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "error", "error": {"type": "authentication_error", "message": "Missing API key."}})
        );
        for (status, kind) in [
            (400, "invalid_request_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (529, "overloaded_error"),
        ] {
            assert_eq!(error_type(status), kind);
        }
        let spent = GatewayError::new(ErrorKind::Unprocessable, "Budget has been exceeded!")
            .with_type("budget_exceeded");
        assert_eq!((kind(&spent), status(&spent)), ("billing_error", 422));
        let overloaded = GatewayError::from_upstream(529, "Overloaded");
        assert_eq!((status(&overloaded), overloaded.status), (529, 503));
        let ev = sse_event(&overloaded);
        assert!(ev.starts_with(b"event: error\ndata: {\"type\":\"error\""));
        assert!(ev.ends_with(b"\n\n"));
    }
}
