//! Providers: one module per upstream API behind the [`Provider`] trait. A provider turns the
//! client's OpenAI request into its native HTTP request, and its native response (whole, or as a
//! stream of bytes) back into OpenAI's. The exchange loop (`gateway::exchange`) drives the HTTP;
//! providers never do I/O on the request path except to fetch credentials.
//!
//! Adding a provider: write `providers/<name>.rs` implementing [`Provider`], with an
//! [`framed::EventTranslator`] over the provider's stream framing (SSE, NDJSON, eventstream),
//! emitting [`crate::events::StreamEvent`]s, wrapped in [`framed::Framed`] for streaming, then
//! add its prefixes and constructor to the registry table (`REGISTRY`, read by
//! [`build_provider`] and [`known_prefixes`]). A provider that carries state from building a
//! request to reading its answer returns a [`ProviderCall`] from [`Provider::start`]; one with
//! no upstream at all (`mock_response`, [`mock`]) opens its calls with an in-process answer
//! ([`Outbound::Answered`]), which the exchange reads like an upstream's.

pub mod anthropic;
pub mod aws_credentials;
pub mod bedrock;
pub mod catalog;
pub mod cohere;
pub mod framed;
pub mod gemini;
pub mod google_auth;
pub mod mock;
pub mod ollama;
pub mod openai_compat;
pub mod sigv4;
pub mod text_completion;
pub mod unserved;
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

/// Which Anthropic Messages API endpoint a pass-through request (`/v1/messages` ingress) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagesEndpoint {
    /// `/v1/messages`
    Create,
    /// `/v1/messages/count_tokens`
    CountTokens,
}

/// The Anthropic client headers a Messages pass-through forwards (`anthropic-version`,
/// `anthropic-beta`), as the client sent them.
#[derive(Debug, Default, Clone)]
pub struct MessagesHeaders {
    pub version: Option<http::HeaderValue>,
    pub beta: Option<http::HeaderValue>,
}

impl MessagesHeaders {
    /// `anthropic-beta` as the JSON array of flags the cloud endpoints take in the body
    /// (`anthropic_beta` on Bedrock InvokeModel and Vertex rawPredict); `None` without flags.
    pub fn beta_body_field(&self) -> Option<String> {
        let flags: Vec<&str> = self
            .beta
            .as_ref()
            .and_then(|v| v.to_str().ok())?
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        (!flags.is_empty()).then(|| serde_json::to_string(&flags).unwrap_or_default())
    }
}

/// How an Anthropic-family deployment frames a passed-through Messages stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessagesFraming {
    /// Anthropic's own SSE (Anthropic, Vertex AI).
    Sse,
    /// AWS eventstream `chunk` events, each one Messages event's JSON in base64 (Bedrock's
    /// InvokeModelWithResponseStream).
    BedrockChunks,
}

/// A translated whole response.
pub struct TranslatedResponse {
    /// The OpenAI JSON body.
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// What opening a call produced: the request to send upstream, or the answer itself, made
/// in-process by a provider with no upstream (`mock_response`). An in-process answer is the
/// provider's native 2xx body in chunks, read back through the call's `parse_response` /
/// `stream_translator` as an upstream body would be.
pub enum Outbound {
    Send(UpstreamRequest),
    Answered(Vec<Bytes>),
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

    /// Whether the upstream answers `n` > 1 choices itself; the rest get one call per choice
    /// (`gateway::exchange::fanout`).
    fn native_n(&self) -> bool {
        false
    }

    /// Whether this provider answers in-process and has no upstream endpoint (`mock_response`);
    /// its calls then open with [`Outbound::Answered`].
    fn answers_in_process(&self) -> bool {
        false
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

    /// Anthropic-family providers: the upstream request for a client's own Anthropic Messages
    /// body (`/v1/messages` ingress), changed as little as possible (the model, what the
    /// platform needs), so `cache_control`, thinking signatures and new fields survive; the
    /// answer goes back to the client unchanged. `None`: this provider does not speak the
    /// Messages API for this endpoint, and the gateway translates instead.
    async fn messages_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        endpoint: MessagesEndpoint,
        headers: &MessagesHeaders,
        client: &UpstreamClient,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        let _ = (body, cx, endpoint, headers, client);
        None
    }

    /// OpenAI and Azure OpenAI: the upstream request for a client's own Responses API body
    /// (`/v1/responses` ingress), with only `model` replaced, to the upstream's `responses`
    /// endpoint; the answer goes back unchanged. `None`: no native Responses API here, and
    /// the gateway translates onto chat instead.
    fn responses_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        let _ = (body, cx);
        None
    }

    /// The upstream request for a stored response (the Responses API's `GET`/`DELETE
    /// responses/{id}`, `GET …/input_items`, `POST …/cancel`): `rest` is the path after
    /// `responses/`, `query` the client's query string. `None`: no Responses API here.
    fn responses_resource_request(
        &self,
        method: http::Method,
        rest: &str,
        query: Option<&str>,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        let _ = (method, rest, query);
        None
    }

    /// `text-completion-openai`: the upstream request for a client's own legacy completions
    /// body (`/v1/completions` ingress) with only `model` replaced (and usage asked for in a
    /// stream); the answer goes back as it came. `None`: translated instead.
    async fn completions_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        let _ = (body, cx, client);
        None
    }

    /// Whether [`Provider::completions_request`] builds requests.
    fn has_completions_api(&self) -> bool {
        false
    }

    /// Whether [`Provider::responses_request`] builds requests (the upstream has the
    /// Responses API).
    fn has_responses_api(&self) -> bool {
        false
    }

    /// How this provider frames the Messages streams [`Provider::messages_request`] asks for.
    fn messages_framing(&self) -> MessagesFraming {
        MessagesFraming::Sse
    }

    /// Starts one request's call. Providers whose calls carry state between building the
    /// request and reading the answer (Bedrock Titan's per-input embeddings, per-request
    /// credentials) return their own [`ProviderCall`]; the rest keep the default, which costs
    /// nothing: the call is the provider itself.
    fn start(&self, cx: &RequestContext<'_>) -> Option<Box<dyn ProviderCall + '_>> {
        let _ = cx;
        None
    }
}

/// One request's dealings with a provider, owning whatever that request needs to carry from
/// building the upstream request to translating its answer. Dropped with the attempt.
#[async_trait]
pub trait ProviderCall: Send {
    /// Opens the call: the upstream request to send, or an answer made in-process. The default
    /// builds the upstream request; only a call with no upstream (the mock) overrides it.
    async fn open(
        &mut self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<Outbound> {
        self.build_request(body, cx, client)
            .await
            .map(Outbound::Send)
    }

    async fn build_request(
        &mut self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest>;

    fn parse_response(
        &mut self,
        body: Bytes,
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse>;

    fn stream_translator(&mut self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator>;
}

/// The call an attempt drives: the provider itself, or the call object it started.
pub enum Call<'p> {
    Stateless(&'p dyn Provider),
    Owned(&'p dyn Provider, Box<dyn ProviderCall + 'p>),
}

impl<'p> Call<'p> {
    /// Starts a call on `provider` (no allocation unless the provider keeps per-call state).
    pub fn start(provider: &'p dyn Provider, cx: &RequestContext<'_>) -> Call<'p> {
        match provider.start(cx) {
            Some(call) => Call::Owned(provider, call),
            None => Call::Stateless(provider),
        }
    }

    pub fn provider(&self) -> &'p dyn Provider {
        match self {
            Call::Stateless(p) | Call::Owned(p, _) => *p,
        }
    }

    /// Opens the call: builds the upstream request, or has the call answer in-process.
    pub async fn open(
        &mut self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<Outbound> {
        match self {
            Call::Stateless(p) => p.build_request(body, cx, client).await.map(Outbound::Send),
            Call::Owned(_, c) => c.open(body, cx, client).await,
        }
    }

    pub fn parse_response(
        &mut self,
        body: Bytes,
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        match self {
            Call::Stateless(p) => p.parse_response_owned(body, cx),
            Call::Owned(_, c) => c.parse_response(body, cx),
        }
    }

    pub fn stream_translator(&mut self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        match self {
            Call::Stateless(p) => p.stream_translator(cx),
            Call::Owned(_, c) => c.stream_translator(cx),
        }
    }

    pub fn map_error(&self, status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
        self.provider().map_error(status, headers, body)
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

    /// Whether the output is OpenAI chat chunks, whose usage chunk the gateway stamps with
    /// the cost. `false` for a native pass-through in another API (its bytes stay the
    /// upstream's) and an ingress format's rewrite.
    fn writes_chat_chunks(&self) -> bool {
        true
    }

    /// Writes a mid-stream failure as the stream's own error event(s) into `out`. `false`:
    /// the translator has none, and the exchange writes the client API's.
    fn write_error(&mut self, err: &GatewayError, out: &mut BytesMut) -> bool {
        let _ = (err, out);
        false
    }
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

/// A provider module's constructor: `Ok(None)` when the deployment's prefix is not its own.
type Constructor = fn(&DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError>;

/// Every provider, once: the `litellm_params.model` prefixes it serves and its constructor.
/// `build_provider`, error messages and `--check` all read this table.
const REGISTRY: &[(&[&str], Constructor)] = &[
    (openai_compat::PREFIXES, openai_compat::build),
    (&["anthropic"], anthropic::build),
    (&["gemini", "vertex_ai"], gemini::build),
    (&["cohere_chat", "cohere"], cohere::build),
    (&["ollama_chat", "ollama"], ollama::build),
    (&["voyage"], voyage::build),
    (&["bedrock"], |dep| bedrock::build(dep).map(Some)),
    (&[text_completion::PREFIX], text_completion::build),
];

/// Every prefix a config may use, in the registry's order.
pub fn known_prefixes() -> impl Iterator<Item = &'static str> {
    REGISTRY
        .iter()
        .flat_map(|(prefixes, _)| prefixes.iter().copied())
}

/// Whether a registered provider module claims this prefix (else the deployment loads as
/// [`unserved`]: a warning at load, a 400 when called).
pub fn is_served(prefix: &str) -> bool {
    REGISTRY
        .iter()
        .any(|(prefixes, _)| prefixes.contains(&prefix))
}

/// Builds the provider for a deployment from its `litellm_params.model` prefix. A prefix no
/// module claims (or no model after the prefix) builds an [`unserved::Unserved`] stand-in, as LiteLLM loads such deployments
/// and fails them when called ([`unserved::load_warnings`] reports them).
pub fn build_provider(
    dep: &DeploymentConfig,
    cx: &BuildContext,
) -> Result<Arc<dyn Provider>, ConfigError> {
    let _ = cx;
    // `mock_response` makes any deployment the mock's, whatever its prefix (as in LiteLLM).
    if let Some(mock) = mock::build(dep)? {
        return Ok(mock);
    }
    if dep.model.is_empty() {
        return Ok(unserved::build(dep));
    }
    let registered = REGISTRY
        .iter()
        .find(|(prefixes, _)| prefixes.contains(&dep.provider.as_str()));
    if let Some((_, build)) = registered {
        if let Some(provider) = build(dep)? {
            return Ok(provider);
        }
    }
    if let Some(provider) = openai_compat::build_inferred(dep)? {
        return Ok(provider);
    }
    Ok(unserved::build(dep))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered prefix reaches its constructor (with enough config to pass
    /// validation), and an unknown one loads as the unserved stand-in.
    #[test]
    fn every_registered_prefix_builds_its_provider() {
        let prefixes: Vec<&str> = known_prefixes().collect();
        assert_eq!(prefixes.len(), openai_compat::PREFIXES.len() + 10);
        let mut yaml = String::from("model_list:\n");
        for p in &prefixes {
            let model = match *p {
                "bedrock" => "bedrock/m".to_string(),
                "vertex_ai" => "vertex_ai/gemini-2.5-pro".to_string(),
                _ => format!("{p}/m"),
            };
            yaml.push_str(&format!(
                "  - model_name: {p}\n    litellm_params: {{model: {model}, api_base: http://127.0.0.1:9, api_key: k, api_version: v, aws_region_name: us-east-1, vertex_project: p, vertex_location: us-central1}}\n"
            ));
        }
        let config = crate::config::litellm::parse(&yaml).expect("valid yaml");
        let client = Arc::new(UpstreamClient::new(1));
        let cx = BuildContext { client };
        for dep in &config.deployments {
            match build_provider(dep, &cx) {
                // The provider answers to a name of its own registry row (aliases share one).
                Ok(p) => assert!(
                    REGISTRY.iter().any(|(names, _)| {
                        names.contains(&dep.provider.as_str()) && names.contains(&p.name())
                    }),
                    "{} built {}",
                    dep.provider,
                    p.name()
                ),
                // Credentials some providers read only from their own settings.
                Err(e) => assert!(
                    !e.message.contains("unknown provider"),
                    "{}: {e}",
                    dep.provider
                ),
            }
        }
        let mut dep = config.deployments[0].clone();
        dep.provider = "opnai".into();
        assert!(!is_served("opnai"));
        assert_eq!(build_provider(&dep, &cx).unwrap().name(), "unserved");
    }
}
