//! Client-visible errors. Every failure a client can see is a [`GatewayError`], rendered as an
//! OpenAI error object `{"error":{"message","type","param","code"}}` with the matching HTTP status.

use bytes::Bytes;
use serde::Serialize;
use std::fmt;

/// The error classes clients and the router care about. The router uses the class to decide
/// whether to retry, fall back or cool a deployment down; clients see `type`/`code` derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400: the request is malformed or names an unsupported parameter.
    BadRequest,
    /// 400 with code `context_length_exceeded`.
    ContextLengthExceeded,
    /// 400 with code `content_policy_violation` (or a provider's content filter).
    ContentPolicy,
    /// 401
    Authentication,
    /// 403
    PermissionDenied,
    /// 404: unknown route or unknown model.
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 408 from an upstream.
    RequestTimeout,
    /// 409 from an upstream.
    Conflict,
    /// 413
    PayloadTooLarge,
    /// 422 from an upstream.
    Unprocessable,
    /// 429: upstream or local rate limit.
    RateLimited,
    /// 500 from an upstream, or a gateway bug.
    Internal,
    /// 502: upstream unreachable, or answered with something we could not understand.
    BadGateway,
    /// 503: upstream overloaded, or no deployment available.
    Unavailable,
    /// 504: the upstream did not answer within its deadline.
    Timeout,
}

impl ErrorKind {
    pub fn default_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest | ErrorKind::ContextLengthExceeded | ErrorKind::ContentPolicy => {
                400
            }
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Unprocessable => 422,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Timeout => 504,
        }
    }

    /// The OpenAI `type` field for this class.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::ContentPolicy
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Conflict
            | ErrorKind::Unprocessable => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::RequestTimeout | ErrorKind::Timeout => "timeout_error",
            ErrorKind::Internal | ErrorKind::BadGateway | ErrorKind::Unavailable => "server_error",
        }
    }

    /// Maps an upstream HTTP status to a class (used when a provider gives no better hint).
    pub fn from_status(status: u16) -> ErrorKind {
        match status {
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            405 => ErrorKind::MethodNotAllowed,
            408 => ErrorKind::RequestTimeout,
            409 => ErrorKind::Conflict,
            413 => ErrorKind::PayloadTooLarge,
            422 => ErrorKind::Unprocessable,
            429 => ErrorKind::RateLimited,
            502 => ErrorKind::BadGateway,
            503 | 529 => ErrorKind::Unavailable,
            504 => ErrorKind::Timeout,
            s if s >= 500 => ErrorKind::Internal,
            _ => ErrorKind::BadRequest,
        }
    }

    /// LiteLLM's retry rule: connect errors, timeouts, 408, 409, 429 and 5xx are retryable.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RequestTimeout
                | ErrorKind::Conflict
                | ErrorKind::RateLimited
                | ErrorKind::Internal
                | ErrorKind::BadGateway
                | ErrorKind::Unavailable
                | ErrorKind::Timeout
        )
    }
}

/// A client-visible error: status, OpenAI error fields, and an optional `Retry-After`.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub kind: ErrorKind,
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<String>,
    /// Seconds, sent as `Retry-After` (kept from the upstream on 429/503).
    pub retry_after: Option<u64>,
    /// True when the failure happened before anything reached the upstream (connect error):
    /// always safe to retry elsewhere.
    pub upstream_untouched: bool,
    /// Overrides the OpenAI `type` derived from `kind` (LiteLLM's own types such as
    /// `auth_error` or `expired_key` on key rejections).
    pub error_type: Option<&'static str>,
    /// The upstream's own status when it was not a standard one and `status` stands in for it
    /// (Anthropic's 529 overloaded is 503 for OpenAI clients): Anthropic's wire sends it back.
    pub provider_status: Option<u16>,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            kind,
            status: kind.default_status(),
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            upstream_untouched: false,
            error_type: None,
            provider_status: None,
        }
    }

    /// Sends `error_type` as the OpenAI `type` instead of the one `kind` implies.
    pub fn with_type(mut self, error_type: &'static str) -> Self {
        self.error_type = Some(error_type);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// A 400 naming the offending request field in `param`.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message).with_param(param)
    }

    pub fn missing_field(field: &str) -> Self {
        Self::invalid_param(
            field,
            format!("Missing required parameter: '{field}'. Add it to the request body."),
        )
        .with_code("missing_required_parameter")
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadGateway, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message).with_code("timeout")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_string());
        self
    }

    pub fn with_retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }

    pub fn untouched(mut self) -> Self {
        self.upstream_untouched = true;
        self
    }

    /// Builds an error from an upstream's status and message, keeping the status
    /// (429 stays 429, 401 stays 401) and filling `type`/`code` from the class.
    pub fn from_upstream(status: u16, message: impl Into<String>) -> Self {
        let kind = ErrorKind::from_status(status);
        let mut err = Self::new(kind, message);
        // Provider-specific statuses (Anthropic's 529, Cohere's 498/499) become standard ones.
        err.status = match status {
            529 => 503,
            498 => 401,
            499 => 408,
            s if (400..600).contains(&s) => s,
            _ => 502,
        };
        if err.status != status && (400..600).contains(&status) {
            err.provider_status = Some(status);
        }
        if kind == ErrorKind::RateLimited {
            err.code = Some("rate_limit_exceeded".into());
        }
        err
    }

    pub fn is_retryable(&self) -> bool {
        self.upstream_untouched || self.kind.is_retryable()
    }

    /// The JSON body: `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let code = self.code.clone().or_else(|| Some(self.status.to_string()));
        let body = Outer {
            error: Inner {
                message: &self.message,
                kind: self.error_type.unwrap_or(self.kind.openai_type()),
                param: self.param.as_deref(),
                code: code.as_deref(),
            },
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// The same error as one SSE event, for failures after a stream has started.
    pub fn sse_event(&self) -> Bytes {
        let body = self.body();
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for GatewayError {}

pub type GatewayResult<T> = Result<T, GatewayError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_error_shape() {
        let e = GatewayError::missing_field("messages");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(e.status, 400);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert!(v["error"]["message"].as_str().unwrap().contains("messages"));
    }

    #[test]
    fn upstream_statuses_keep_meaning() {
        let overloaded = GatewayError::from_upstream(529, "overloaded");
        assert_eq!(overloaded.status, 503);
        assert_eq!(overloaded.provider_status, Some(529));
        assert_eq!(
            GatewayError::from_upstream(500, "boom").provider_status,
            None
        );
        let rl = GatewayError::from_upstream(429, "slow down");
        assert_eq!(rl.status, 429);
        assert_eq!(rl.code.as_deref(), Some("rate_limit_exceeded"));
        assert!(rl.is_retryable());
        assert!(!GatewayError::from_upstream(401, "bad key").is_retryable());
    }
}
