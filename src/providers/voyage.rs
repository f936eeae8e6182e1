//! Voyage AI (`voyage/`): embeddings only. OpenAI embeddings requests become
//! `POST {api_base}/embeddings {input, model, input_type?, output_dimension?}` and Voyage's list
//! comes back as OpenAI's (floats, or base64 when the client asked). Chat is refused by the
//! exchange through [`Provider::supports`] before anything is sent.

use super::openai_compat::split_origin;
use super::{
    Operation, Provider, RequestContext, StreamTranslator, TranslatedResponse, UpstreamRequest,
};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{GatewayError, GatewayResult};
use crate::openai::request::{check_supported, EmbeddingsRequest};
use crate::openai::response::embeddings_response;
use crate::openai::{RequestBody, Usage};
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const NAME: &str = "voyage";
const DEFAULT_BASE: &str = "https://api.voyageai.com/v1";

const EMBED_SUPPORTED: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "dimensions",
    "input_type",
    "user",
];

pub struct Voyage {
    origin: String,
    path: String,
    auth: Option<String>,
}

/// Builds the provider if `dep.provider` is `voyage`.
pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    if dep.provider != "voyage" {
        return Ok(None);
    }
    let key_path = |key: &str| format!("model_list[{}].litellm_params.{key}", dep.index);
    let base = dep.params.api_base.as_deref().unwrap_or(DEFAULT_BASE);
    let base = base.trim_end_matches('/');
    let (origin, base_path) = split_origin(base).ok_or_else(|| {
        ConfigError::new(
            key_path("api_base"),
            format!(
                "\"{base}\" must be an http:// or https:// URL (e.g. https://api.voyageai.com/v1)"
            ),
        )
    })?;
    // A full endpoint URL is accepted as well as the base.
    let base_path = base_path.strip_suffix("/embeddings").unwrap_or(base_path);
    let auth = dep
        .params
        .api_key
        .clone()
        .or_else(|| std::env::var("VOYAGE_API_KEY").ok())
        .filter(|k| !k.is_empty())
        .map(|k| format!("Bearer {k}"));
    if let Some(v) = &auth {
        http::HeaderValue::from_str(v).map_err(|_| {
            ConfigError::new(
                key_path("api_key"),
                "contains characters not allowed in an HTTP header",
            )
        })?;
    }
    Ok(Some(Arc::new(Voyage {
        origin: origin.to_string(),
        path: format!("{base_path}/embeddings"),
        auth,
    })))
}

fn embeddings_only() -> GatewayError {
    GatewayError::invalid_param(
        "model",
        "voyage models only serve embeddings (POST /v1/embeddings); they cannot answer chat completions.",
    )
}

#[async_trait]
impl Provider for Voyage {
    fn name(&self) -> &'static str {
        NAME
    }

    fn base_url(&self) -> &str {
        &self.origin
    }

    fn supports(&self, op: Operation) -> bool {
        op == Operation::Embeddings
    }

    async fn build_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        _client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        if cx.op != Operation::Embeddings {
            return Err(embeddings_only());
        }
        let mut req = self.embed_request(body, cx)?;
        if let Some(auth) = &self.auth {
            req.header(http::header::AUTHORIZATION, auth)?;
        }
        Ok(req)
    }

    fn parse_response(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        if cx.op != Operation::Embeddings {
            return Err(embeddings_only());
        }
        #[derive(Deserialize)]
        struct EmbedResponse {
            data: Vec<Item>,
            #[serde(default)]
            usage: Option<VoyageUsage>,
        }
        #[derive(Deserialize)]
        struct Item {
            embedding: Vec<f32>,
            #[serde(default)]
            index: Option<usize>,
        }
        #[derive(Deserialize)]
        struct VoyageUsage {
            #[serde(default)]
            total_tokens: u64,
        }
        let resp: EmbedResponse = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "voyage: the upstream answered 2xx with a body that is not a Voyage embeddings list ({e})."
            ))
        })?;
        let mut items = resp.data;
        // Voyage lists items in input order with their index; order by index to be sure.
        if items.iter().any(|i| i.index.is_some()) {
            items.sort_by_key(|i| i.index.unwrap_or(usize::MAX));
        }
        let vectors: Vec<Vec<f32>> = items.into_iter().map(|i| i.embedding).collect();
        let usage = Usage::new(resp.usage.map_or(0, |u| u.total_tokens), 0);
        Ok(TranslatedResponse {
            body: embeddings_response(cx.model, &vectors, cx.embeddings_base64, usage),
            usage: Some(usage),
        })
    }

    fn stream_translator(&self, _cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(NoStream)
    }
}

impl Voyage {
    fn embed_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
    ) -> GatewayResult<UpstreamRequest> {
        #[derive(Serialize)]
        struct EmbedBody<'r> {
            input: Vec<&'r str>,
            model: &'r str,
            #[serde(skip_serializing_if = "Option::is_none")]
            input_type: Option<&'r str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            output_dimension: Option<u32>,
        }
        check_supported(body, EMBED_SUPPORTED, cx.drop_params, NAME)?;
        let req = EmbeddingsRequest::from_body(body)?;
        let out = EmbedBody {
            input: req.input.texts(NAME)?,
            model: cx.model,
            input_type: req.input_type.as_deref(),
            output_dimension: req.dimensions,
        };
        let buf = serde_json::to_vec(&out)
            .map_err(|e| GatewayError::internal(format!("voyage: cannot encode request: {e}")))?;
        Ok(UpstreamRequest::post_json(self.path.clone(), buf))
    }
}

/// Voyage never streams; the exchange refuses chat before a translator could be asked for.
struct NoStream;

impl StreamTranslator for NoStream {
    fn feed(&mut self, _input: &[u8], _out: &mut BytesMut) -> GatewayResult<()> {
        Err(embeddings_only())
    }

    fn finish(&mut self, _out: &mut BytesMut) -> GatewayResult<()> {
        Err(embeddings_only())
    }

    fn feed_events(
        &mut self,
        _input: &[u8],
        _sink: &mut dyn crate::events::EventSink,
    ) -> GatewayResult<()> {
        Err(embeddings_only())
    }

    fn finish_events(&mut self, _sink: &mut dyn crate::events::EventSink) -> GatewayResult<()> {
        Err(embeddings_only())
    }

    fn usage(&self) -> Option<Usage> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(base64: bool) -> RequestContext<'static> {
        RequestContext {
            op: Operation::Embeddings,
            model: "voyage-3",
            stream: false,
            include_usage: false,
            response_id: "chatcmpl-1",
            created: 1,
            drop_params: false,
            embeddings_base64: base64,
        }
    }

    fn provider() -> Voyage {
        Voyage {
            origin: "https://api.voyageai.com".into(),
            path: "/v1/embeddings".into(),
            auth: Some("Bearer k".into()),
        }
    }

    #[test]
    fn request_maps_dimensions_and_input_type() {
        let body = RequestBody::parse(
            br#"{"model":"v","input":["a","b"],"dimensions":256,"input_type":"query"}"#,
        )
        .unwrap();
        let req = provider().embed_request(&body, &cx(false)).unwrap();
        assert_eq!(req.path, "/v1/embeddings");
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"input":["a","b"],"model":"voyage-3","input_type":"query","output_dimension":256})
        );
        let body = RequestBody::parse(br#"{"model":"v","input":"a"}"#).unwrap();
        let req = provider().embed_request(&body, &cx(false)).unwrap();
        assert_eq!(
            std::str::from_utf8(&req.body).unwrap(),
            r#"{"input":["a"],"model":"voyage-3"}"#
        );
    }

    #[test]
    fn unknown_params_and_token_input_are_400s() {
        let body = RequestBody::parse(br#"{"model":"v","input":"a","truncate":true}"#).unwrap();
        let err = provider().embed_request(&body, &cx(false)).err().unwrap();
        assert_eq!((err.status, err.param.as_deref()), (400, Some("truncate")));
        let body = RequestBody::parse(br#"{"model":"v","input":[1,2]}"#).unwrap();
        assert_eq!(
            provider()
                .embed_request(&body, &cx(false))
                .err()
                .unwrap()
                .status,
            400
        );
    }

    #[test]
    fn response_ordered_by_index_and_base64_honoured() {
        let body = br#"{"object":"list","data":[{"object":"embedding","embedding":[2.0],"index":1},{"object":"embedding","embedding":[1.0],"index":0}],"model":"voyage-3","usage":{"total_tokens":9}}"#;
        let out = provider().parse_response(body, &cx(false)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["data"][0]["embedding"], serde_json::json!([1.0]));
        assert_eq!(v["data"][1]["embedding"], serde_json::json!([2.0]));
        assert_eq!(v["usage"]["prompt_tokens"], 9);
        let out = provider().parse_response(body, &cx(true)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["data"][0]["embedding"], "AACAPw==");
        assert_eq!(
            provider()
                .parse_response(b"<html>", &cx(false))
                .err()
                .unwrap()
                .status,
            502
        );
    }

    #[test]
    fn serves_embeddings_only() {
        let p = provider();
        assert!(p.supports(Operation::Embeddings));
        assert!(!p.supports(Operation::Chat));
    }
}
