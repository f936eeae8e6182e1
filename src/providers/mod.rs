//! Providers: one module per upstream API behind the [`Provider`] trait. A provider turns the
//! client's OpenAI request into its native HTTP request, and its native response (whole, or as a
//! stream of bytes) back into OpenAI's. The exchange loop (`gateway::exchange`) drives the HTTP;
//! providers never do I/O on the request path except to fetch credentials.
//!
//! Adding a provider: write `providers/<name>.rs` implementing [`Provider`], with an
//! [`framed::EventTranslator`] over the provider's stream framing (SSE, NDJSON, eventstream),
//! emitting [`crate::events::StreamEvent`]s, wrapped in [`framed::Framed`] for streaming, then register its prefixes in [`build_provider`].

pub mod anthropic;
pub mod bedrock;
pub mod cohere;
pub mod framed;
pub mod gemini;
pub mod google_auth;
pub mod mock;
pub mod ollama;
pub mod openai_compat;
pub mod sigv4;
pub mod url;
pub mod vertex;
pub mod voyage;

use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{GatewayError, GatewayResult};
use crate::openai::{RequestBody, Usage};
use crate::upstream::UpstreamClient;
pub use crate::upstream::UpstreamRequest;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use std::sync::Arc;

/// Which OpenAI operation the client called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Embeddings,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
        }
    }
}

/// Per-request facts a provider needs besides the body.
pub struct RequestContext<'a> {
    pub op: Operation,
    /// The concrete model to call: the deployment's `litellm_params.model` without the provider
    /// prefix, a wildcard's `*` filled in. Per request, so one provider instance serves every
    /// model of a wildcard group (`openai/*`) without being rebuilt per model name.
    pub model: &'a str,
    /// The client asked for `stream: true`.
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// The id every chunk and the completion carry (`chatcmpl-…`).
    pub response_id: &'a str,
    /// Unix seconds, the `created` field.
    pub created: u64,
    /// `drop_params` in force for this deployment (deployment setting, else litellm_settings).
    pub drop_params: bool,
    /// Embeddings: the client asked for `encoding_format: base64`. Translators that build the
    /// list themselves pass it to `embeddings_response`.
    pub embeddings_base64: bool,
}

/// A translated whole response.
pub struct TranslatedResponse {
    /// The OpenAI JSON body.
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// An upstream API. One instance per configured deployment, built at config load (off the hot
/// path) with everything it needs already validated: a request-time error is the client's or
/// upstream's. The model comes with each request ([`RequestContext::model`]): the deployments a
/// wildcard group derives per model name share their template's instance.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The LiteLLM prefix this instance serves (`openai`, `azure`, `anthropic`, …).
    fn name(&self) -> &'static str;

    /// The upstream's base URL (`scheme://host[:port]`; any path is the provider's business).
    fn base_url(&self) -> &str;

    /// Whether this provider serves the operation (embeddings are not everywhere).
    fn supports(&self, op: Operation) -> bool {
        op == Operation::Chat
    }

    /// Builds the native request. Async so providers can fetch or refresh credentials (Vertex
    /// OAuth tokens) through `client`; everything else should be synchronous work.
    async fn build_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest>;

    /// Translates a whole 2xx body. A body that cannot be understood is a 502.
    fn parse_response(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse>;

    /// [`Provider::parse_response`] for a body the caller owns, which the exchange calls:
    /// a provider that forwards the body unchanged hands it on without a copy.
    fn parse_response_owned(
        &self,
        body: Bytes,
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        self.parse_response(&body, cx)
    }

    /// A translator for a streaming 2xx body.
    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator>;

    /// Maps a non-2xx response to an OpenAI error, keeping the upstream's status (mapped where
    /// the provider uses non-standard ones) and its Retry-After.
    fn map_error(&self, status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
        default_map_error(self.name(), status, headers, body)
    }
}

/// Turns a provider's byte stream into stream events, event by event: into any
/// [`EventSink`](crate::events::EventSink) (`feed_events`), or straight into OpenAI SSE bytes
/// through the translator's own OpenAI sink (`feed`). Drive one stream through one of the two.
pub trait StreamTranslator: Send {
    /// Consumes upstream bytes (any split), appending OpenAI SSE to `out`. An error ends the
    /// stream: the exchange writes it as an error event.
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> GatewayResult<()>;

    /// The upstream body ended cleanly: flush, emit the finish/usage chunks and `[DONE]`.
    fn finish(&mut self, out: &mut BytesMut) -> GatewayResult<()>;

    /// Consumes upstream bytes (any split), emitting the events they complete into `sink`.
    fn feed_events(
        &mut self,
        input: &[u8],
        sink: &mut dyn crate::events::EventSink,
    ) -> GatewayResult<()>;

    /// The upstream body ended cleanly: flush, emit the closing events and `Done`.
    fn finish_events(&mut self, sink: &mut dyn crate::events::EventSink) -> GatewayResult<()>;

    /// Usage seen so far (complete once `finish` ran).
    fn usage(&self) -> Option<Usage>;
}

/// Longest wait an upstream's retry hint is taken at, in seconds (one hour): `Retry-After`,
/// `retry-after-ms` and Gemini's `retryDelay` beyond it (`inf`, `1e30`, a date in 3026) are
/// clamped to it, so a hostile or broken upstream can neither overflow time arithmetic nor
/// cool a deployment for centuries.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// A retry hint in (possibly fractional) seconds as whole seconds: rounded up, clamped to
/// [`MAX_RETRY_AFTER_SECS`]. NaN and negative values are no hint at all.
pub fn clamp_retry_secs(secs: f64) -> Option<u64> {
    if secs.is_nan() || secs < 0.0 {
        return None;
    }
    // `as` saturates, and the value is already within 0..=MAX.
    Some(secs.ceil().min(MAX_RETRY_AFTER_SECS as f64) as u64)
}

/// Reads the upstream's retry hint from a response: `Retry-After` (delay-seconds, leniently
/// fractional, or an HTTP-date), else `retry-after-ms`; clamped by [`clamp_retry_secs`].
pub fn retry_after_secs(headers: &ResponseHeader) -> Option<u64> {
    retry_after_at(headers, std::time::SystemTime::now())
}

fn retry_after_at(headers: &ResponseHeader, now: std::time::SystemTime) -> Option<u64> {
    let value = |name: &str| {
        headers
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = value("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return clamp_retry_secs(secs);
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            // A date already past means "now".
            let wait = at.duration_since(now).unwrap_or_default();
            return clamp_retry_secs(wait.as_secs_f64());
        }
    }
    value("retry-after-ms")
        .and_then(|s| s.parse::<f64>().ok())
        .and_then(|ms| clamp_retry_secs(ms / 1000.0))
}

/// Error mapping for providers whose error bodies carry a message in one of the common shapes:
/// `{"error":{"message"}}` (OpenAI, Azure, Gemini), `{"error":"…"}` (Ollama), `{"message"}`
/// (Cohere, Bedrock). Context-length and content-filter errors get OpenAI's codes.
pub fn default_map_error(
    provider: &str,
    status: u16,
    headers: &ResponseHeader,
    body: &[u8],
) -> GatewayError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let upstream_code = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(|e| e.get("code"))
        .and_then(|c| {
            c.as_str()
                .map(str::to_string)
                .or_else(|| c.as_i64().map(|n| n.to_string()))
        });
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v.get("error")
                .and_then(|e| e.get("message").or(Some(e)))
                .and_then(|m| m.as_str())
                .or_else(|| v.get("message").and_then(|m| m.as_str()))
        })
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    let mut err = GatewayError::from_upstream(status, format!("{provider}: {message}"))
        .with_retry_after(retry_after_secs(headers));
    let lower = message.to_ascii_lowercase();
    if status == 400
        && (upstream_code.as_deref() == Some("context_length_exceeded")
            || is_context_length_message(&lower))
    {
        err.kind = crate::error::ErrorKind::ContextLengthExceeded;
        err.code = Some("context_length_exceeded".into());
    } else if upstream_code.as_deref() == Some("content_filter")
        || upstream_code.as_deref() == Some("content_policy_violation")
    {
        err.kind = crate::error::ErrorKind::ContentPolicy;
        err.code = Some("content_policy_violation".into());
    } else if err.code.is_none() {
        err.code = upstream_code;
    }
    err
}

/// Provider messages that mean the prompt does not fit the model's context.
pub fn is_context_length_message(lower: &str) -> bool {
    lower.contains("context length")
        || lower.contains("context_length")
        || lower.contains("context window")
        || lower.contains("prompt is too long")
        || lower.contains("maximum context")
        || lower.contains("too many tokens")
        || lower.contains("input is too long")
}

/// What a provider factory gets besides the deployment's config.
pub struct BuildContext {
    pub client: Arc<UpstreamClient>,
}

/// Builds the provider for a deployment from its `litellm_params.model` prefix. Unknown
/// prefixes are a config error at `model_list[i].litellm_params.model`.
pub fn build_provider(
    dep: &DeploymentConfig,
    cx: &BuildContext,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let _ = cx;
    if let Some(p) = openai_compat::build(dep)? {
        return Ok(p);
    }
    if let Some(p) = anthropic::build(dep)? {
        return Ok(p);
    }
    if let Some(p) = gemini::build(dep)? {
        return Ok(p);
    }
    if let Some(p) = cohere::build(dep)? {
        return Ok(p);
    }
    if let Some(p) = ollama::build(dep)? {
        return Ok(p);
    }
    if let Some(p) = voyage::build(dep)? {
        return Ok(p);
    }
    if dep.provider == "bedrock" {
        return bedrock::build(dep);
    }
    Err(ConfigError::new(
        format!("model_list[{}].litellm_params.model", dep.index),
        format!(
            "unknown provider \"{}\" (known: {})",
            dep.provider,
            KNOWN_PREFIXES.join(", ")
        ),
    ))
}

/// Every prefix a config may use, for error messages and `--check`.
pub const KNOWN_PREFIXES: &[&str] = &[
    "openai",
    "azure",
    "hosted_vllm",
    "vllm",
    "groq",
    "xai",
    "mistral",
    "deepseek",
    "openrouter",
    "together_ai",
    "fireworks_ai",
    "perplexity",
    "huggingface",
    "lm_studio",
    "openai_like",
    "custom_openai",
    "anthropic",
    "gemini",
    "vertex_ai",
    "cohere_chat",
    "cohere",
    "ollama_chat",
    "ollama",
    "voyage",
    "bedrock",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn hint(headers: &[(&'static str, &str)]) -> Option<u64> {
        let mut h = ResponseHeader::build(429, None).unwrap();
        for (k, v) in headers {
            h.insert_header(*k, v.to_string()).unwrap();
        }
        retry_after_secs(&h)
    }

    #[test]
    fn retry_after_is_clamped_and_nonsense_is_no_hint() {
        assert_eq!(hint(&[("retry-after", "7")]), Some(7));
        assert_eq!(hint(&[("retry-after", " 1.2 ")]), Some(2));
        assert_eq!(hint(&[("retry-after", "0")]), Some(0));
        // Values past anything `Instant` can add, or centuries away, are capped at an hour.
        for huge in [
            "inf",
            "Infinity",
            "1e30",
            "1e11",
            "18446744073709551615",
            "3601",
        ] {
            assert_eq!(
                hint(&[("retry-after", huge)]),
                Some(MAX_RETRY_AFTER_SECS),
                "{huge}"
            );
        }
        for junk in ["-5", "-inf", "NaN", "soon", ""] {
            assert_eq!(hint(&[("retry-after", junk)]), None, "{junk}");
        }
        assert_eq!(hint(&[]), None);
    }

    #[test]
    fn retry_after_ms_is_clamped_too() {
        assert_eq!(hint(&[("retry-after-ms", "1500")]), Some(2));
        assert_eq!(
            hint(&[("retry-after-ms", "1e300")]),
            Some(MAX_RETRY_AFTER_SECS)
        );
        assert_eq!(
            hint(&[("retry-after-ms", "inf")]),
            Some(MAX_RETRY_AFTER_SECS)
        );
        assert_eq!(hint(&[("retry-after-ms", "-1")]), None);
        assert_eq!(hint(&[("retry-after-ms", "NaN")]), None);
        // Retry-After wins when both are there; an unreadable one leaves the ms form.
        assert_eq!(
            hint(&[("retry-after", "3"), ("retry-after-ms", "9000")]),
            Some(3)
        );
        assert_eq!(
            hint(&[("retry-after", "later"), ("retry-after-ms", "9000")]),
            Some(9)
        );
    }

    #[test]
    fn retry_after_http_date() {
        let now = SystemTime::now();
        let at = |t: SystemTime| {
            let mut h = ResponseHeader::build(503, None).unwrap();
            h.insert_header("retry-after", httpdate::fmt_http_date(t))
                .unwrap();
            retry_after_at(&h, now)
        };
        // HTTP-dates have whole seconds: 30 s ahead reads as 29-30 s.
        let soon = at(now + Duration::from_secs(30)).unwrap();
        assert!((29..=30).contains(&soon), "{soon}");
        assert_eq!(at(now - Duration::from_secs(30)), Some(0));
        assert_eq!(
            at(now + Duration::from_secs(86_400 * 365 * 1000)),
            Some(MAX_RETRY_AFTER_SECS)
        );
    }

    #[test]
    fn clamp_retry_secs_bounds() {
        assert_eq!(clamp_retry_secs(f64::INFINITY), Some(MAX_RETRY_AFTER_SECS));
        assert_eq!(clamp_retry_secs(f64::NAN), None);
        assert_eq!(clamp_retry_secs(-0.5), None);
        assert_eq!(clamp_retry_secs(-0.0), Some(0));
        assert_eq!(clamp_retry_secs(0.1), Some(1));
    }
}
