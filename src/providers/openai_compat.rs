//! OpenAI and every provider that speaks its wire format: the rows of [`super::catalog`]
//! (Azure, vLLM, Groq, xAI, Mistral, DeepSeek, Cerebras, NVIDIA NIM, GitHub Models, Z.ai, …, any
//! `openai_like` server), one implementation driven by each row's base URL, key variables and
//! quirks. Requests go through nearly untouched: the model name is replaced and,
//! for streams, `stream_options.include_usage` is asked for so usage is always known; the usage
//! chunk is stripped again when the client did not ask for it. Responses are forwarded byte for
//! byte; they are only scanned for usage and errors ([`crate::openai::scan`]), never parsed
//! whole: a stream chunk goes on as one [`StreamEvent::RawOpenAiChunk`], a whole body as the
//! same `Bytes` it arrived in.

use super::catalog::{self, Auth, Compat, Paths};
use super::framed::{EventTranslator, Framed};
use super::{
    Operation, Provider, RequestContext, StreamTranslator, TranslatedResponse, UpstreamRequest,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent};
use crate::openai::request::write_json_string;
use crate::openai::{scan, ChunkWriter, RequestBody, Usage};
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderName;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::fmt::Write;
use std::sync::Arc;

/// The prefixes served here, for the provider registry: every row of the catalog.
pub const PREFIXES: &[&str] = catalog::OPENAI_COMPATIBLE_PREFIXES;

/// Azure's default `api-version` when neither the config nor `AZURE_API_VERSION` gives one.
const AZURE_DEFAULT_API_VERSION: &str = "2024-10-21";

pub struct OpenAiCompat {
    spec: &'static Compat,
    /// `scheme://host[:port]`
    origin: String,
    /// Path prefix from the base URL (`/v1`), no trailing slash.
    base_path: String,
    /// Headers carrying the key (`Authorization`, Azure's `api-key`, Sarvam's second one).
    auth: Vec<(HeaderName, String)>,
    organization: Option<String>,
    /// Azure: the `api-version` (the deployment name is the model).
    azure_api_version: Option<String>,
    /// Where a native Responses API request goes (OpenAI and Azure only): the path with its
    /// query, as [`responses_path`] builds it.
    responses_path: Option<String>,
    /// Put before the model name: the deployment's prefix when the provider was inferred from
    /// `api_base` (`meta-llama/` of `meta-llama/Llama-3.3-70B-Instruct`).
    model_prefix: Option<String>,
}

/// The first of `vars` set to a non-empty value.
fn first_env(vars: &[&str]) -> Option<String> {
    vars.iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}

/// Cloudflare Workers AI: LiteLLM's native base (`…/accounts/<id>/ai/run/`) becomes the
/// account's OpenAI-compatible base (`…/accounts/<id>/ai/v1`); without a base, the account id
/// comes from `CLOUDFLARE_ACCOUNT_ID`.
fn cloudflare_base(configured: Option<String>) -> Option<String> {
    match configured {
        Some(base) => {
            let trimmed = base.trim_end_matches('/');
            Some(match trimmed.strip_suffix("/ai/run") {
                Some(account) => format!("{account}/ai/v1"),
                None => trimmed.to_string(),
            })
        }
        None => first_env(&["CLOUDFLARE_ACCOUNT_ID"])
            .map(|id| format!("https://api.cloudflare.com/client/v4/accounts/{id}/ai/v1")),
    }
}

/// Builds the provider if `dep.provider` is an OpenAI-compatible prefix.
pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn super::Provider>>, ConfigError> {
    match catalog::compat(&dep.provider) {
        Some(spec) => build_for(spec, dep, None).map(Some),
        None => Ok(None),
    }
}

/// Builds the provider LiteLLM infers from the deployment's `api_base` when its prefix is no
/// provider ([`catalog::infer_from_api_base`]): the prefix stays part of the model name.
pub fn build_inferred(
    dep: &DeploymentConfig,
) -> Result<Option<Arc<dyn super::Provider>>, ConfigError> {
    let Some(spec) = dep
        .params
        .api_base
        .as_deref()
        .and_then(catalog::infer_from_api_base)
    else {
        return Ok(None);
    };
    build_for(spec, dep, Some(format!("{}/", dep.provider))).map(Some)
}

fn build_for(
    spec: &'static Compat,
    dep: &DeploymentConfig,
    model_prefix: Option<String>,
) -> Result<Arc<dyn super::Provider>, ConfigError> {
    let path = |key: &str| format!("model_list[{}].litellm_params.{key}", dep.index);
    let configured = dep
        .params
        .api_base
        .clone()
        .or_else(|| first_env(spec.base_env));
    let custom_base = configured.is_some();
    let base = match spec.paths {
        Paths::Cloudflare => cloudflare_base(configured),
        _ => configured.or(spec.default_base.map(str::to_string)),
    };
    let base = base.ok_or_else(|| {
        let hint = match (spec.paths, spec.base_env.first()) {
            (Paths::Cloudflare, _) => {
                " or CLOUDFLARE_ACCOUNT_ID (https://api.cloudflare.com/client/v4/accounts/<id>/ai/v1)"
                    .to_string()
            }
            (_, Some(var)) => format!(" or the {var} variable"),
            (_, None) => String::new(),
        };
        ConfigError::new(
            path("api_base"),
            format!(
                "required for {} deployments (the server's base URL, e.g. http://host:8000/v1){hint}",
                spec.prefix
            ),
        )
    })?;
    let base = base.trim_end_matches('/');
    let (origin, base_path) = split_origin(base).ok_or_else(|| {
        ConfigError::new(
            path("api_base"),
            format!("\"{base}\" must be an http:// or https:// URL"),
        )
    })?;
    let mut base_path = base_path.to_string();
    if let Paths::SuffixOnCustomBase(suffix) = spec.paths {
        if custom_base && !base_path.ends_with(suffix) {
            base_path.push_str(suffix);
        }
    }
    let api_key = dep
        .params
        .api_key
        .clone()
        .or_else(|| first_env(spec.key_env))
        .filter(|k| !k.is_empty());
    let mut auth = Vec::new();
    if let Some(k) = api_key {
        match spec.auth {
            Auth::AzureApiKey => auth.push((HeaderName::from_static("api-key"), k)),
            Auth::Bearer => auth.push((http::header::AUTHORIZATION, format!("Bearer {k}"))),
            Auth::BearerAnd(extra) => {
                auth.push((http::header::AUTHORIZATION, format!("Bearer {k}")));
                auth.push((HeaderName::from_static(extra), k));
            }
        }
    }
    for (_, v) in &auth {
        http::HeaderValue::from_str(v).map_err(|_| {
            ConfigError::new(
                path("api_key"),
                "contains characters not allowed in an HTTP header",
            )
        })?;
    }
    let azure_api_version = (spec.paths == Paths::AzureDeployment).then(|| {
        dep.params
            .api_version
            .clone()
            .or_else(|| std::env::var("AZURE_API_VERSION").ok())
            .unwrap_or_else(|| AZURE_DEFAULT_API_VERSION.to_string())
    });
    if azure_api_version.is_some() {
        // The deployment is a path segment; requests encode theirs (a wildcard's is the client's).
        super::url::check_segment(&dep.model).map_err(|e| ConfigError::new(path("model"), e))?;
    }
    let responses_path = responses_path(spec, &base_path, dep.params.api_version.as_deref());
    Ok(Arc::new(OpenAiCompat {
        spec,
        responses_path,
        origin: origin.to_string(),
        base_path,
        auth,
        organization: dep.params.organization.clone(),
        azure_api_version,
        model_prefix,
    }))
}

/// Azure's Responses `api-version` when the deployment sets none (LiteLLM's
/// `AZURE_DEFAULT_RESPONSES_API_VERSION`).
const AZURE_RESPONSES_API_VERSION: &str = "preview";

/// The Responses API path of the providers that have it, as LiteLLM sends there: OpenAI's
/// `{base}/responses`; Azure's `{base}/openai/responses?api-version=…` (the deployment is the
/// body's `model`), or `{base}/openai/v1/responses?api-version=preview|latest` for the v1 API.
fn responses_path(spec: &Compat, base_path: &str, api_version: Option<&str>) -> Option<String> {
    match (spec.prefix, spec.paths) {
        ("openai", _) => Some(format!("{base_path}/responses")),
        ("azure", Paths::AzureDeployment) => {
            let version = api_version
                .map(str::to_string)
                .or_else(|| std::env::var("AZURE_API_VERSION").ok())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| AZURE_RESPONSES_API_VERSION.to_string());
            let v1 = if matches!(version.as_str(), "preview" | "latest") {
                "/v1"
            } else {
                ""
            };
            let mut query = String::new();
            super::url::push_segment(&mut query, &version).ok()?;
            Some(format!(
                "{base_path}/openai{v1}/responses?api-version={query}"
            ))
        }
        _ => None,
    }
}

/// `https://host:port/path` → (`https://host:port`, `/path`).
pub fn split_origin(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")? + 3;
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return None;
    }
    match url[scheme_end..].find('/') {
        Some(i) => Some((&url[..scheme_end + i], &url[scheme_end + i..])),
        None => Some((url, "")),
    }
}

#[async_trait]
impl Provider for OpenAiCompat {
    fn name(&self) -> &'static str {
        self.spec.prefix
    }

    fn native_n(&self) -> bool {
        true
    }

    fn base_url(&self) -> &str {
        &self.origin
    }

    fn supports(&self, _op: Operation) -> bool {
        true
    }

    async fn build_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        _client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        let op_path = match cx.op {
            Operation::Chat => "chat/completions",
            Operation::Embeddings => "embeddings",
        };
        let path = match &self.azure_api_version {
            Some(version) => {
                // The deployment (the model) is exactly one path segment, whatever it holds.
                let mut path = format!("{}/openai/deployments/", self.base_path);
                super::url::push_segment(&mut path, cx.model)
                    .map_err(|e| GatewayError::invalid_param("model", format!("model: {e}")))?;
                let _ = write!(path, "/{op_path}?api-version={version}");
                path
            }
            None => format!("{}/{op_path}", self.base_path),
        };
        let out = self.body_with_model(body, cx, cx.stream && self.spec.stream_options);
        self.authorized(UpstreamRequest::post_json(path, out), cx.stream)
    }

    fn responses_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        let path = self.responses_path.as_ref()?;
        let request =
            UpstreamRequest::post_json(path.clone(), self.body_with_model(body, cx, false));
        Some(self.authorized(request, cx.stream))
    }

    fn responses_resource_request(
        &self,
        method: http::Method,
        rest: &str,
        query: Option<&str>,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        let full = self.responses_path.as_ref()?;
        // Azure's api-version stays in the query, after the id.
        let (base, version) = full.split_once('?').unwrap_or((full, ""));
        let mut path = format!("{base}/{rest}");
        let query = [query.unwrap_or(""), version];
        let mut joined = query.iter().filter(|q| !q.is_empty());
        if let Some(first) = joined.next() {
            let _ = write!(path, "?{first}");
            for q in joined {
                let _ = write!(path, "&{q}");
            }
        }
        let request = UpstreamRequest {
            method,
            path,
            headers: Vec::new(),
            body: Bytes::new(),
        };
        Some(self.authorized(request, false))
    }

    fn has_responses_api(&self) -> bool {
        self.responses_path.is_some()
    }

    fn parse_response(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        self.parse_response_owned(Bytes::copy_from_slice(body), cx)
    }

    fn parse_response_owned(
        &self,
        body: Bytes,
        _cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        let usage = whole_body_usage(self.spec.prefix, &body)?;
        Ok(TranslatedResponse { body, usage })
    }

    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        passthrough(self.spec.prefix, cx.include_usage)
    }
}

impl OpenAiCompat {
    /// The client's body with the deployment's model (and, asked for, usage in the stream).
    fn body_with_model(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        stream_usage: bool,
    ) -> Vec<u8> {
        let mut model_json = Vec::with_capacity(cx.model.len() + 2);
        match &self.model_prefix {
            Some(prefix) => write_json_string(&mut model_json, &format!("{prefix}{}", cx.model)),
            None => write_json_string(&mut model_json, cx.model),
        }
        let model_json = std::str::from_utf8(&model_json).unwrap_or("\"\"");
        let mut out = Vec::with_capacity(body_len_hint(body) + 64);
        if stream_usage {
            body.write_with(
                &[
                    ("model", model_json),
                    ("stream_options", "{\"include_usage\":true}"),
                ],
                crate::openai::request::GATEWAY_FIELDS,
                &mut out,
            );
        } else {
            let gateway_only = crate::openai::request::GATEWAY_FIELDS;
            body.write_with(&[("model", model_json)], gateway_only, &mut out);
        }
        out
    }

    /// `req` with the deployment's credentials.
    fn authorized(&self, mut req: UpstreamRequest, stream: bool) -> GatewayResult<UpstreamRequest> {
        for (name, value) in &self.auth {
            req.header(name.clone(), value)?;
        }
        if let Some(org) = &self.organization {
            req.header(HeaderName::from_static("openai-organization"), org)?;
        }
        if stream {
            req.header(http::header::ACCEPT, "text/event-stream")?;
        }
        Ok(req)
    }
}

/// Forwards an OpenAI-shaped stream (`data:` chunks with `choices` and `usage`, ending in
/// `[DONE]`: chat, or legacy completions) as it is, reading its usage; the usage-only chunk
/// asked for on the client's behalf goes out only when `include_usage`.
pub fn passthrough(provider: &'static str, include_usage: bool) -> Box<dyn StreamTranslator> {
    Box::new(Framed::<SseDecoder, _>::new(
        PassThroughStream {
            provider,
            usage: None,
            done: false,
        },
        ChunkWriter::passthrough(include_usage),
    ))
}

fn body_len_hint(body: &RequestBody<'_>) -> usize {
    body.fields()
        .map(|(k, v)| k.len() + v.get().len() + 4)
        .sum()
}

/// The top-level usage of a whole pass-through body, by a scan from its end; the body is
/// parsed only when that scan cannot tell (a `usage` key it cannot read).
fn whole_body_usage(provider: &str, body: &[u8]) -> GatewayResult<Option<Usage>> {
    let not_json = |detail: &dyn std::fmt::Display| {
        GatewayError::bad_gateway(format!(
            "{provider}: the upstream answered 2xx with a body that is not JSON ({detail})."
        ))
    };
    if !scan::looks_like_object(body) {
        return Err(not_json(&"it is not one JSON object"));
    }
    match scan::top_level_usage(body) {
        Ok(usage) => Ok(usage),
        Err(()) => {
            #[derive(Deserialize)]
            struct Peek {
                #[serde(default)]
                usage: Option<Usage>,
            }
            let peek: Peek = serde_json::from_slice(body).map_err(|e| not_json(&e))?;
            Ok(peek.usage)
        }
    }
}

/// Forwards OpenAI SSE events as they are ([`StreamEvent::RawOpenAiChunk`]), noting usage and
/// marking the usage-only chunk the gateway asked for on the client's behalf (the OpenAI sink
/// drops it unless the client asked too). Chunks are scanned for `usage`/`error` keys, and
/// parsed only when one is there: once or twice a stream.
struct PassThroughStream {
    provider: &'static str,
    usage: Option<Usage>,
    done: bool,
}

/// What a chunk with a `usage` or `error` key holds.
#[derive(Deserialize)]
struct ChunkPeek {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

impl EventTranslator<SseDecoder> for PassThroughStream {
    fn on_event(&mut self, ev: SseEvent<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        if self.done {
            return Ok(());
        }
        let json = ev.data;
        if json.trim() == "[DONE]" {
            self.done = true;
            sink.event(StreamEvent::Done);
            return Ok(());
        }
        let not_json = |detail: &dyn std::fmt::Display| {
            GatewayError::bad_gateway(format!(
                "{}: the upstream sent a stream event that is not JSON ({detail}).",
                self.provider
            ))
        };
        let bytes = json.as_bytes();
        if !scan::looks_like_object(bytes) {
            return Err(not_json(&"it is not one JSON object"));
        }
        let (mut usage_only, mut error) = (false, false);
        if scan::may_have_usage(bytes) || scan::may_have_error(bytes) {
            let peek: ChunkPeek = serde_json::from_str(json).map_err(|e| not_json(&e))?;
            if let Some(u) = peek.usage {
                self.usage = Some(u);
                sink.event(StreamEvent::Usage(u));
                usage_only = peek.choices.as_ref().is_some_and(|c| c.is_empty());
            }
            error = peek.error.is_some();
        }
        sink.event(StreamEvent::RawOpenAiChunk { json, usage_only });
        if error {
            // OpenAI's mid-stream error event ends the stream.
            self.done = true;
            sink.event(StreamEvent::Done);
        }
        Ok(())
    }

    fn on_end(&mut self, _sink: &mut dyn EventSink) -> GatewayResult<()> {
        if !self.done {
            return Err(GatewayError::bad_gateway(format!(
                "{}: the upstream ended the stream before [DONE].",
                self.provider
            )));
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventLog, RecordedEvent};
    use bytes::BytesMut;

    fn provider() -> Arc<dyn Provider> {
        let dep = DeploymentConfig {
            index: 0,
            model_name: "m".into(),
            id: "d0".into(),
            derived_id: false,
            provider: "openai".into(),
            model: "gpt-4o".into(),
            params: crate::config::LitellmParams {
                api_base: Some("http://127.0.0.1:9/v1".into()),
                api_key: Some("k".into()),
                ..Default::default()
            },
            model_info: Default::default(),
        };
        build(&dep).unwrap().unwrap()
    }

    fn cx(include_usage: bool) -> RequestContext<'static> {
        RequestContext {
            op: Operation::Chat,
            model: "m",
            stream: true,
            include_usage,
            response_id: "chatcmpl-gw",
            created: 1,
            drop_params: false,
            embeddings_base64: false,
        }
    }

    const TEXT: &str = r#"{"id":"u1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"say \"usage\": 1"},"finish_reason":null}],"usage":null}"#;
    const LAST: &str = r#"{"id":"u1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}"#;
    const USAGE: &str = r#"{"id":"u1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":{"cached_tokens":1}}}"#;

    fn stream() -> String {
        format!(
            ": keep-alive\n\ndata: {TEXT}\r\n\r\ndata: {LAST}\n\ndata: {USAGE}\n\ndata: [DONE]\n\n"
        )
    }

    fn openai_out(input: &[u8], split: usize, include_usage: bool) -> (Vec<u8>, Option<Usage>) {
        let mut t = provider().stream_translator(&cx(include_usage));
        let mut out = BytesMut::new();
        t.feed(&input[..split], &mut out).unwrap();
        t.feed(&input[split..], &mut out).unwrap();
        t.finish(&mut out).unwrap();
        (out.to_vec(), t.usage())
    }

    #[test]
    fn passthrough_emits_raw_chunks_and_announces_usage() {
        use RecordedEvent as E;
        let mut t = provider().stream_translator(&cx(false));
        let mut log = EventLog::default();
        t.feed_events(stream().as_bytes(), &mut log).unwrap();
        t.finish_events(&mut log).unwrap();
        let usage = Usage::new(3, 2).with_cached(1);
        assert_eq!(
            log.events,
            vec![
                // A `"usage"` inside content and `usage: null` cost no parse and no event.
                E::RawOpenAiChunk {
                    json: TEXT.into(),
                    usage_only: false
                },
                E::RawOpenAiChunk {
                    json: LAST.into(),
                    usage_only: false
                },
                E::Usage(usage),
                E::RawOpenAiChunk {
                    json: USAGE.into(),
                    usage_only: true
                },
                E::Done,
            ]
        );
        assert_eq!(t.usage(), Some(usage));
    }

    #[test]
    fn passthrough_forwards_bytes_unchanged_at_every_split() {
        let input = stream();
        let input = input.as_bytes();
        let with = format!("data: {TEXT}\n\ndata: {LAST}\n\ndata: {USAGE}\n\ndata: [DONE]\n\n");
        let without = format!("data: {TEXT}\n\ndata: {LAST}\n\ndata: [DONE]\n\n");
        for i in 0..=input.len() {
            let (out, usage) = openai_out(input, i, true);
            assert_eq!(String::from_utf8(out).unwrap(), with, "split at {i}");
            assert_eq!(usage, Some(Usage::new(3, 2).with_cached(1)));
            let (out, _) = openai_out(input, i, false);
            assert_eq!(String::from_utf8(out).unwrap(), without, "split at {i}");
        }
    }

    #[test]
    fn passthrough_error_chunk_ends_the_stream_and_garbage_is_refused() {
        let input = format!(
            "data: {TEXT}\n\ndata: {{\"error\":{{\"message\":\"overloaded\"}}}}\n\ndata: {LAST}\n\n"
        );
        let (out, _) = openai_out(input.as_bytes(), 0, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "data: {TEXT}\n\ndata: {{\"error\":{{\"message\":\"overloaded\"}}}}\n\ndata: [DONE]\n\n"
            )
        );
        for bad in ["data: <html>\n\n", "data: {\"id\":\n\n"] {
            let mut t = provider().stream_translator(&cx(false));
            let err = t.feed(bad.as_bytes(), &mut BytesMut::new()).unwrap_err();
            assert_eq!(err.status, 502, "{bad}");
            assert!(err.message.contains("not JSON"), "{}", err.message);
        }
        let mut t = provider().stream_translator(&cx(false));
        let mut out = BytesMut::new();
        t.feed(format!("data: {TEXT}\n\n").as_bytes(), &mut out)
            .unwrap();
        assert_eq!(t.finish(&mut out).unwrap_err().status, 502);
    }

    #[test]
    fn whole_body_is_handed_on_without_a_copy() {
        let p = provider();
        let body = Bytes::from_static(
            br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"\"usage\":{\"prompt_tokens\":99}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10},"system_fingerprint":null}"#,
        );
        let r = p.parse_response_owned(body.clone(), &cx(false)).unwrap();
        assert_eq!(r.usage, Some(Usage::new(9, 1)));
        assert_eq!(
            r.body.as_ptr(),
            body.as_ptr(),
            "the same buffer, not a copy"
        );
        let r = p.parse_response(&body, &cx(false)).unwrap();
        assert_eq!((r.body, r.usage), (body, Some(Usage::new(9, 1))));
        let none = p
            .parse_response_owned(Bytes::from_static(b"{\"id\":\"c\"}"), &cx(false))
            .unwrap();
        assert_eq!(none.usage, None);
        for bad in [
            &b"<html>502</html>"[..],
            b"{\"id\":",
            b"",
            b"{\"usage\":\"x\"}",
        ] {
            let Err(err) = p.parse_response_owned(Bytes::copy_from_slice(bad), &cx(false)) else {
                panic!("accepted {bad:?}");
            };
            assert_eq!(err.status, 502);
            assert!(err.message.contains("not JSON"), "{}", err.message);
        }
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    fn dep(provider: &str, api_base: Option<&str>) -> DeploymentConfig {
        DeploymentConfig {
            index: 3,
            model_name: "m".into(),
            id: "d".into(),
            derived_id: false,
            provider: provider.into(),
            model: "some/model".into(),
            params: crate::config::LitellmParams {
                api_base: api_base.map(str::to_string),
                api_key: Some("k".into()),
                ..Default::default()
            },
            model_info: Default::default(),
        }
    }

    async fn chat_path(p: &dyn Provider) -> String {
        let body = crate::openai::RequestBody::parse(br#"{"model":"m","messages":[]}"#).unwrap();
        let cx = RequestContext {
            op: Operation::Chat,
            model: "some/model",
            stream: false,
            include_usage: false,
            response_id: "r",
            created: 1,
            drop_params: false,
            embeddings_base64: false,
        };
        let client = UpstreamClient::new(1);
        p.build_request(&body, &cx, &client).await.unwrap().path
    }

    /// OpenAI and Azure have the Responses API where LiteLLM sends it (Azure: the v1 path for
    /// `preview`/`latest`, the default); other OpenAI-compatible servers are translated.
    #[test]
    fn responses_api_paths() {
        let path = |provider: &str, version: Option<&str>| {
            let mut d = dep(provider, Some("https://h.example/base"));
            d.params.api_version = version.map(str::to_string);
            let p = build(&d).unwrap().unwrap();
            let get = p.responses_resource_request(
                http::Method::GET,
                "resp_1/input_items",
                Some("limit=2"),
            );
            (
                p.has_responses_api(),
                p.responses_request(
                    &crate::openai::RequestBody::parse(br#"{"model":"m","input":"x"}"#).unwrap(),
                    &RequestContext {
                        op: Operation::Chat,
                        model: "dep",
                        stream: false,
                        include_usage: false,
                        response_id: "r",
                        created: 1,
                        drop_params: false,
                        embeddings_base64: false,
                    },
                )
                .map(|r| r.unwrap().path),
                get.map(|r| r.unwrap().path),
            )
        };
        assert_eq!(
            path("openai", None),
            (
                true,
                Some("/base/responses".into()),
                Some("/base/responses/resp_1/input_items?limit=2".into())
            )
        );
        assert_eq!(
            path("azure", None),
            (
                true,
                Some("/base/openai/v1/responses?api-version=preview".into()),
                Some(
                    "/base/openai/v1/responses/resp_1/input_items?limit=2&api-version=preview"
                        .into()
                )
            )
        );
        assert_eq!(
            path("azure", Some("2025-03-01-preview")).1,
            Some("/base/openai/responses?api-version=2025-03-01-preview".into())
        );
        assert_eq!(path("hosted_vllm", None), (false, None, None));
    }

    /// LiteLLM's default base URLs become an origin and a path prefix, and a call goes to the
    /// provider's chat route below it.
    #[tokio::test]
    async fn default_bases_split_into_origin_and_route() {
        for (prefix, origin, path) in [
            ("zai", "https://api.z.ai", "/api/paas/v4/chat/completions"),
            (
                "github",
                "https://models.inference.ai.azure.com",
                "/chat/completions",
            ),
            (
                "dashscope",
                "https://dashscope-intl.aliyuncs.com",
                "/compatible-mode/v1/chat/completions",
            ),
            (
                "novita",
                "https://api.novita.ai",
                "/v3/openai/chat/completions",
            ),
            (
                "deepseek",
                "https://api.deepseek.com",
                "/beta/chat/completions",
            ),
            (
                "nscale",
                "https://inference.api.nscale.com",
                "/v1/chat/completions",
            ),
        ] {
            let p = build(&dep(prefix, None)).unwrap().unwrap();
            assert_eq!((p.name(), p.base_url()), (prefix, origin));
            assert_eq!(chat_path(p.as_ref()).await, path, "{prefix}");
        }
    }

    /// Self-hosted servers and Cloudflare (whose URL holds the account) need a base: the error
    /// names the key path and the variable that would do. A LiteLLM-style Cloudflare base is
    /// moved to the account's OpenAI-compatible routes.
    #[tokio::test]
    async fn bases_that_must_be_given_and_cloudflare_rewrite() {
        if std::env::var_os("LLAMAFILE_API_BASE").is_none() {
            let err = build(&dep("llamafile", None)).err().unwrap();
            assert_eq!(err.path, "model_list[3].litellm_params.api_base");
            assert!(
                err.message.contains("LLAMAFILE_API_BASE"),
                "{}",
                err.message
            );
        }
        let base = "https://api.cloudflare.com/client/v4/accounts/abc/ai/run/";
        let p = build(&dep("cloudflare", Some(base))).unwrap().unwrap();
        assert_eq!(
            chat_path(p.as_ref()).await,
            "/client/v4/accounts/abc/ai/v1/chat/completions"
        );
        assert_eq!(
            cloudflare_base(Some("https://gw.example/v1/".into())).as_deref(),
            Some("https://gw.example/v1")
        );
        // Suffixes on configured bases only: agents and Heroku apps as LiteLLM calls them.
        for (prefix, base, path) in [
            (
                "gradient_ai",
                Some("https://agent-x.ondigitalocean.app"),
                "/api/v1/chat/completions",
            ),
            ("gradient_ai", None, "/v1/chat/completions"),
            (
                "heroku",
                Some("https://us.inference.heroku.com"),
                "/v1/chat/completions",
            ),
            (
                "huggingface",
                Some("https://tgi.internal/v1"),
                "/v1/chat/completions",
            ),
            (
                "huggingface",
                Some("https://tgi.internal"),
                "/v1/chat/completions",
            ),
        ] {
            if base.is_none() && std::env::var_os("GRADIENT_AI_AGENT_ENDPOINT").is_some() {
                continue;
            }
            let p = build(&dep(prefix, base)).unwrap().unwrap();
            assert_eq!(chat_path(p.as_ref()).await, path, "{prefix} {base:?}");
        }
    }
}

#[cfg(test)]
mod inferred_tests {
    use super::*;

    /// As LiteLLM's `get_llm_provider`: a prefix that is no provider, with a known endpoint as
    /// `api_base`, goes to that provider with the whole model string; an unknown endpoint
    /// builds nothing here.
    #[tokio::test]
    async fn provider_inferred_from_api_base_keeps_the_prefix_in_the_model() {
        let mut dep = DeploymentConfig {
            index: 0,
            model_name: "llama".into(),
            id: "d".into(),
            derived_id: false,
            provider: "meta-llama".into(),
            model: "Llama-3.3-70B-Instruct".into(),
            params: crate::config::LitellmParams {
                api_base: Some("https://api.deepinfra.com/v1/openai".into()),
                api_key: Some("k".into()),
                ..Default::default()
            },
            model_info: Default::default(),
        };
        assert!(build(&dep).unwrap().is_none());
        let p = build_inferred(&dep).unwrap().unwrap();
        assert_eq!(
            (p.name(), p.base_url()),
            ("deepinfra", "https://api.deepinfra.com")
        );
        let body =
            crate::openai::RequestBody::parse(br#"{"model":"llama","messages":[]}"#).unwrap();
        let cx = RequestContext {
            op: Operation::Chat,
            model: &dep.model,
            stream: false,
            include_usage: false,
            response_id: "r",
            created: 1,
            drop_params: false,
            embeddings_base64: false,
        };
        let req = p
            .build_request(&body, &cx, &UpstreamClient::new(1))
            .await
            .unwrap();
        assert_eq!(req.path, "/v1/openai/chat/completions");
        let sent: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(sent["model"], "meta-llama/Llama-3.3-70B-Instruct");

        dep.params.api_base = Some("https://llm.internal/v1".into());
        assert!(build_inferred(&dep).unwrap().is_none());
    }
}
