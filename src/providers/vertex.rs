//! Anthropic Claude models on Vertex AI (`vertex_ai/claude-*`). The wire format is Anthropic's
//! Messages API, so the translation is [`super::anthropic`]'s; what differs is where it goes
//! and how it is authenticated: `…/publishers/anthropic/models/{model}:rawPredict` (or
//! `:streamRawPredict`), the body without `model` and with
//! `"anthropic_version": "vertex-2023-10-16"`, and a Vertex service-account bearer token.
//! Gemini models on Vertex are [`super::gemini`].

use super::anthropic::{
    map_anthropic_error, messages_body, parse_messages_response, MessagesStream, DEFAULT_MAX_TOKENS,
};
use super::gemini::{vertex_target, ModelPath, VertexTarget};
use super::google_auth::TokenSource;
use super::{Provider, RequestContext, StreamTranslator, TranslatedResponse, UpstreamRequest};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{GatewayError, GatewayResult};
use crate::openai::request::ChatRequest;
use crate::openai::RequestBody;
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use pingora_http::ResponseHeader;
use std::sync::Arc;

const PROVIDER: &str = "vertex_ai";
/// The `anthropic_version` Vertex requires in the body.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

pub struct VertexClaude {
    origin: String,
    model_path: ModelPath,
    tokens: Arc<TokenSource>,
    default_max_tokens: u64,
}

/// Builds the provider for a `vertex_ai/claude-*` deployment.
pub fn build_claude(dep: &DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let target = vertex_target(dep)?;
    Ok(Some(Arc::new(claude_on(dep, &target)?)))
}

/// Claude on an already-resolved Vertex target, sharing its token source (a `vertex_ai/*`
/// wildcard deployment serves Gemini and Claude models with one key).
pub(crate) fn claude_on(
    dep: &DeploymentConfig,
    target: &VertexTarget,
) -> Result<VertexClaude, ConfigError> {
    // `max_tokens` is required by the Messages API: as for `anthropic/`, the deployment's
    // `max_tokens` or model_info's output limit, else Anthropic's default.
    let default_max_tokens = match dep.params.extra.get("max_tokens") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("model_list[{}].litellm_params.max_tokens", dep.index),
                        "must be a positive integer",
                    )
                })?,
        ),
    }
    .or(dep.model_info.max_output_tokens)
    .or(dep.model_info.max_tokens)
    .unwrap_or(DEFAULT_MAX_TOKENS);
    Ok(VertexClaude {
        origin: target.origin.clone(),
        model_path: target.model_path("anthropic"),
        tokens: target.tokens.clone(),
        default_max_tokens,
    })
}

#[async_trait]
impl Provider for VertexClaude {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn base_url(&self) -> &str {
        &self.origin
    }

    async fn build_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        let req = ChatRequest::from_body(body)?;
        let out = messages_body(
            &req,
            body,
            None,
            Some(VERTEX_ANTHROPIC_VERSION),
            self.default_max_tokens,
            cx.drop_params,
        )?;
        let method = if cx.stream {
            "streamRawPredict"
        } else {
            "rawPredict"
        };
        let path = self.model_path.method(cx.model, method)?;
        let mut up = UpstreamRequest::post_json(path, out);
        if cx.stream {
            up.header(http::header::ACCEPT, "text/event-stream")?;
        }
        let bearer = self.tokens.authorization(client).await?;
        up.headers.push((http::header::AUTHORIZATION, bearer));
        Ok(up)
    }

    fn parse_response(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        parse_messages_response(PROVIDER, body, cx, cx.model)
    }

    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(MessagesStream::new(PROVIDER, cx, cx.model))
    }

    /// The client's body without `model` (the URL names it), with Vertex's `anthropic_version`
    /// unless the client set one, and the client's `anthropic-beta` flags as the body's
    /// `anthropic_beta` array (as Vertex takes them). `count_tokens` is not passed through (it
    /// is estimated).
    async fn messages_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        endpoint: super::MessagesEndpoint,
        headers: &super::MessagesHeaders,
        client: &UpstreamClient,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        if endpoint != super::MessagesEndpoint::Create {
            return None;
        }
        let build = async {
            let version = format!("\"{VERTEX_ANTHROPIC_VERSION}\"");
            let beta = headers.beta_body_field();
            let mut set: Vec<(&str, &str)> = Vec::with_capacity(2);
            if !body.has("anthropic_version") {
                set.push(("anthropic_version", version.as_str()));
            }
            if let Some(beta) = &beta {
                set.push(("anthropic_beta", beta));
            }
            let mut out = Vec::with_capacity(
                body.fields()
                    .map(|(k, v)| k.len() + v.get().len() + 4)
                    .sum::<usize>()
                    + 48,
            );
            body.write_with(&set, &["model", "cache", "tags"], &mut out);
            let method = if cx.stream {
                "streamRawPredict"
            } else {
                "rawPredict"
            };
            let path = self.model_path.method(cx.model, method)?;
            let mut up = UpstreamRequest::post_json(path, out);
            if cx.stream {
                up.header(http::header::ACCEPT, "text/event-stream")?;
            }
            let bearer = self.tokens.authorization(client).await?;
            up.headers.push((http::header::AUTHORIZATION, bearer));
            Ok(up)
        };
        Some(build.await)
    }

    /// Vertex answers in Anthropic's error shape from the model, and in Google's
    /// (`{"error":{"code","status"}}`) from its own front end (auth, quota, routing).
    fn map_error(&self, status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
        if is_google_error(body) {
            super::gemini::map_gemini_error(
                PROVIDER,
                status,
                super::retry_after_secs(headers),
                body,
            )
        } else {
            map_anthropic_error(PROVIDER, status, headers, body)
        }
    }
}

/// Google's error envelope carries a `status` name (`RESOURCE_EXHAUSTED`, …); Anthropic's has
/// `"type": "error"`.
fn is_google_error(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        status: String,
    }
    let envelope = match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => Some(e),
        Err(_) => serde_json::from_slice::<Vec<Envelope>>(body)
            .ok()
            .and_then(|mut v| v.pop()),
    };
    envelope.is_some_and(|e| !e.error.status.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_and_anthropic_error_shapes_are_told_apart() {
        assert!(is_google_error(
            br#"{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}"#
        ));
        assert!(is_google_error(
            br#"[{"error":{"code":401,"message":"x","status":"UNAUTHENTICATED"}}]"#
        ));
        assert!(!is_google_error(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
        ));
        assert!(!is_google_error(b"<html>"));
    }
}
