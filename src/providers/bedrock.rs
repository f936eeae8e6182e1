//! AWS Bedrock (`bedrock/` prefix): chat through the Converse API (`/model/{id}/converse`) and
//! ConverseStream (`/converse-stream`, AWS event-stream framing), embeddings through InvokeModel
//! (`/model/{id}/invoke`) for Amazon Titan and Cohere embedding models. Requests are signed with
//! SigV4 (service `bedrock`) per request, over the exact body bytes sent; with `api_key` set the
//! key is sent as a Bearer token instead, as LiteLLM does. This module owns the OpenAI <-> Bedrock
//! translation both ways and the mapping of Bedrock's error types.
//!
//! Converse has no JSON mode: `response_format` json_object/json_schema becomes a tool named
//! `json_tool_call` (LiteLLM's convention) whose call is returned as the message content. It has
//! no `seed`, penalties or `n > 1` either; those go through `check_supported` / `drop_params`.
//!
//! Titan embedding models take one text per request. For several inputs (at most
//! `MAX_TITAN_INPUTS`) the extra texts are embedded first from `build_request`,
//! `TITAN_CONCURRENCY` at a time (under the attempt's deadline, which the exchange puts on
//! `build_request`, and each bounded by the deployment timeout); their vectors wait in the
//! request's own call object ([`TitanCall`], from `Provider::start`) until `parse_response` joins
//! them with the vector of the first text, which the exchange sends as usual (the client's
//! `encoding_format` arrives in `RequestContext::embeddings_base64`). They go away with the
//! request, whatever becomes of it.

use super::aws_credentials::{AwsAuth, AwsAuthParams};
use super::framed::{EventTranslator, Framed};
use super::sigv4::{self, Credentials, SignableRequest};
use super::{
    Operation, Provider, ProviderCall, RequestContext, StreamTranslator, TranslatedResponse,
    UpstreamRequest,
};
use crate::codec::eventstream::{EventStreamDecoder, Message};
use crate::codec::limits::MAX_STREAM_TOOL_CALLS;
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent as Emit};
use crate::openai::request::{
    check_supported, ChatMessage, ContentPart, EmbeddingsRequest, ImageSource, MessageContent,
    ResponseFormat, ToolChoice,
};
use crate::openai::response::{embeddings_response, ChatCompletion, ToolCallOut};
use crate::openai::{ChatRequest, ChunkWriter, FinishReason, RequestBody, Usage};
use crate::upstream::{Endpoint, PeerSettings, UpstreamClient};
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderName;
use pingora_http::ResponseHeader;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const NAME: &str = "bedrock";
/// SigV4 service name of bedrock-runtime.
const SIGNING_SERVICE: &str = "bedrock";
/// Largest InvokeModel response read for an extra Titan input.
const MAX_EMBED_BODY: usize = 64 * 1024 * 1024;
/// Most texts in one Titan embeddings call (each is an upstream request).
const MAX_TITAN_INPUTS: usize = 128;
/// Titan requests of one embeddings call in flight at once.
const TITAN_CONCURRENCY: usize = 4;

/// Chat parameters the Converse translation handles (others: `drop_params` or a 400).
const CHAT_SUPPORTED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    // An end-user id is request metadata; Converse has no field for it, so it is not sent.
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
];
const TITAN_SUPPORTED: &[&str] = &["model", "input", "encoding_format", "dimensions", "user"];
const COHERE_SUPPORTED: &[&str] = &["model", "input", "encoding_format", "input_type", "user"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmbedModel {
    Titan,
    Cohere,
}

enum Auth {
    /// Static keys, or a source refreshed in the background (see `aws_credentials`).
    SigV4(AwsAuth),
    Bearer(String),
}

pub struct Bedrock {
    /// `scheme://host[:port]`
    origin: String,
    /// The `Host` header value the upstream client sends (signed).
    host: String,
    region: String,
    /// The endpoint URL's path (models are under `{base_path}/model/{url-encoded id}`).
    base_path: String,
    auth: Auth,
    /// The configured model's embedding family (which operations `supports` reports).
    embed: Option<EmbedModel>,
    /// A wildcard deployment (`bedrock/*`): each request's model decides chat or embeddings.
    wildcard: bool,
    /// For the extra requests of a multi-input Titan batch.
    endpoint: Arc<Endpoint>,
    timeout: Duration,
    /// `litellm_params.max_tokens`: the output cap when the request sets none.
    default_max_tokens: Option<u64>,
    /// `model_list[i] (model_name)`, for credential errors.
    deployment: String,
}

/// What an embeddings response needs besides the upstream's body: the client's encoding and
/// the vectors of a Titan batch's 2nd..nth inputs.
#[derive(Default)]
struct PendingEmbeddings {
    vectors: Vec<Vec<f32>>,
    tokens: u64,
}

/// One multi-input Titan embeddings call: it owns the vectors of the 2nd..nth inputs between
/// `build_request` and `parse_response`.
pub struct TitanCall<'p> {
    bedrock: &'p Bedrock,
    pending: PendingEmbeddings,
}

#[async_trait]
impl ProviderCall for TitanCall<'_> {
    async fn build_request(
        &mut self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        let (request, pending) = self.bedrock.build_embeddings(body, cx, client).await?;
        self.pending = pending;
        Ok(request)
    }

    fn parse_response(
        &mut self,
        body: Bytes,
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        self.bedrock
            .parse_embeddings(&body, cx, std::mem::take(&mut self.pending))
    }

    fn stream_translator(&mut self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        self.bedrock.stream_translator(cx)
    }
}

/// Builds the provider for a `bedrock/` deployment.
pub fn build(dep: &DeploymentConfig) -> Result<Arc<dyn Provider>, ConfigError> {
    Ok(Arc::new(build_bedrock(dep)?))
}

/// Where a `bedrock/` deployment's credentials come from, for `--check` (never a secret);
/// `None` for other providers or a deployment that does not build.
pub fn credentials_source(dep: &DeploymentConfig) -> Option<String> {
    if dep.provider != NAME {
        return None;
    }
    Some(match build_bedrock(dep).ok()?.auth {
        Auth::Bearer(_) => "Bedrock API key (api_key), sent as a Bearer token".to_string(),
        Auth::SigV4(auth) => auth.describe(),
    })
}

fn build_bedrock(dep: &DeploymentConfig) -> Result<Bedrock, ConfigError> {
    let key = |k: &str| format!("model_list[{}].litellm_params.{k}", dep.index);
    let extra = |k: &str| dep.params.extra_str(k).filter(|s| !s.is_empty());
    let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());

    let model = BedrockModel::parse(&dep.model).map_err(|e| ConfigError::new(key("model"), e))?;
    // LiteLLM's order (`_get_aws_region_name`): the param, the model ARN's region, the
    // environment, else us-west-2.
    let region = extra("aws_region_name")
        .or_else(|| extra("region_name"))
        .map(str::to_string)
        .or_else(|| region_of_arn(model.id))
        .or_else(|| env("AWS_REGION_NAME"))
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let explicit_endpoint = dep
        .params
        .api_base
        .clone()
        .filter(|s| !s.is_empty())
        .map(|s| (s, "api_base"))
        .or_else(|| {
            extra("aws_bedrock_runtime_endpoint")
                .map(|s| (s.to_string(), "aws_bedrock_runtime_endpoint"))
        })
        .or_else(|| env("AWS_BEDROCK_RUNTIME_ENDPOINT").map(|s| (s, "api_base")));
    let api_key = dep.params.api_key.clone().filter(|k| !k.is_empty());
    if !region
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || region.is_empty()
    {
        return Err(ConfigError::new(
            key("aws_region_name"),
            format!("\"{region}\" is not an AWS region name (lowercase letters, digits and hyphens, e.g. us-east-1)"),
        ));
    }
    let (endpoint_url, endpoint_key) = match explicit_endpoint {
        Some(e) => e,
        None => (
            format!("https://bedrock-runtime.{region}.amazonaws.com"),
            "aws_region_name",
        ),
    };
    let endpoint_url = endpoint_url.trim_end_matches('/').to_string();
    let (origin, base_path) =
        super::openai_compat::split_origin(&endpoint_url).ok_or_else(|| {
            ConfigError::new(
                key(endpoint_key),
                format!("\"{endpoint_url}\" must be an http:// or https:// URL"),
            )
        })?;
    let host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);

    let auth = match api_key {
        Some(k) => {
            http::HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                ConfigError::new(
                    key("api_key"),
                    "contains characters not allowed in an HTTP header",
                )
            })?;
            Auth::Bearer(k)
        }
        None => {
            let params = AwsAuthParams::read(|k| extra(k).map(str::to_string), |k| env(k), &region);
            if params.access_key_id.is_some() != params.secret_access_key.is_some() {
                let (set, missing) = if params.access_key_id.is_some() {
                    ("aws_access_key_id", "aws_secret_access_key")
                } else {
                    ("aws_secret_access_key", "aws_access_key_id")
                };
                return Err(ConfigError::new(
                    key(missing),
                    format!(
                        "{set} is set but {missing} is missing (set it in litellm_params or as {})",
                        missing.to_ascii_uppercase()
                    ),
                ));
            }
            if let Some(t) = &params.session_token {
                http::HeaderValue::from_str(t).map_err(|_| {
                    ConfigError::new(
                        key("aws_session_token"),
                        "contains characters not allowed in an HTTP header",
                    )
                })?;
            }
            let auth = AwsAuth::resolve(&params);
            if let AwsAuth::Ambient(source) = &auth {
                log::info!(
                    "model_list[{}] ({}): bedrock credentials from {}",
                    dep.index,
                    dep.model_name,
                    source.describe()
                );
            }
            Auth::SigV4(auth)
        }
    };
    let endpoint = Endpoint::parse(
        origin,
        PeerSettings {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        },
    )
    .map_err(|e| ConfigError::new(key(endpoint_key), e))?;
    Ok(Bedrock {
        origin: origin.to_string(),
        host: host.to_string(),
        region,
        base_path: base_path.to_string(),
        auth,
        embed: model.embed,
        wildcard: dep.model.contains('*'),
        endpoint: Arc::new(endpoint),
        timeout: dep.params.timeout.unwrap_or(Duration::from_secs(600)),
        default_max_tokens: dep.params.extra.get("max_tokens").and_then(|v| v.as_u64()),
        deployment: format!("model_list[{}] ({})", dep.index, dep.model_name),
    })
}

/// LiteLLM's region when nothing names one.
const DEFAULT_REGION: &str = "us-west-2";

/// The region of a Bedrock ARN model id (`arn:aws:bedrock:{region}:{account}:...`).
fn region_of_arn(model_id: &str) -> Option<String> {
    let region = model_id.strip_prefix("arn:")?.split(':').nth(2)?;
    (!region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    .then(|| region.to_string())
}

#[async_trait]
impl Provider for Bedrock {
    fn name(&self) -> &'static str {
        NAME
    }

    fn base_url(&self) -> &str {
        &self.origin
    }

    fn supports(&self, op: Operation) -> bool {
        match op {
            _ if self.wildcard => true,
            Operation::Chat => self.embed.is_none(),
            Operation::Embeddings => self.embed.is_some(),
        }
    }

    async fn build_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        let model =
            BedrockModel::parse(cx.model).map_err(|e| GatewayError::invalid_param("model", e))?;
        match cx.op {
            Operation::Chat => {
                if model.embed.is_some() {
                    return Err(GatewayError::invalid_param(
                        "model",
                        format!("bedrock model '{}' is an embedding model; send it to /v1/embeddings instead.", model.id),
                    ));
                }
                check_supported(body, CHAT_SUPPORTED, cx.drop_params, NAME)?;
                let req = ChatRequest::from_body(body)?;
                let json = converse_body(&req, self.default_max_tokens, cx.drop_params)?;
                let op = if cx.stream {
                    "/converse-stream"
                } else {
                    "/converse"
                };
                let accept = if cx.stream {
                    "application/vnd.amazon.eventstream"
                } else {
                    "application/json"
                };
                let creds = self.credentials().await?;
                self.signed(
                    creds.as_deref(),
                    self.model_path(model.id, op),
                    json,
                    accept,
                )
            }
            Operation::Embeddings => {
                let (request, pending) = self.build_embeddings(body, cx, client).await?;
                if !pending.vectors.is_empty() {
                    // The extra vectors would be lost: several Titan inputs need the call
                    // object from `start`, which the exchange always uses.
                    return Err(GatewayError::internal(
                        "bedrock: a multi-input Titan embeddings request must go through Provider::start.",
                    ));
                }
                Ok(request)
            }
        }
    }

    fn parse_response(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        match cx.op {
            Operation::Chat => parse_converse(body, cx, BedrockModel::id_of(cx.model)),
            Operation::Embeddings => self.parse_embeddings(body, cx, PendingEmbeddings::default()),
        }
    }

    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(ConverseStreamTranslator::new(
            cx,
            BedrockModel::id_of(cx.model),
        ))
    }

    fn map_error(&self, status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
        map_error(status, headers, body)
    }

    /// Claude models (`anthropic.*` ids, inference profiles included) take the client's
    /// Messages body on InvokeModel: without `model` and `stream` (the URL says both), with
    /// Bedrock's `anthropic_version` unless set, and `anthropic-beta` as `anthropic_beta`.
    async fn messages_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        endpoint: super::MessagesEndpoint,
        headers: &super::MessagesHeaders,
        _client: &UpstreamClient,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        if endpoint != super::MessagesEndpoint::Create {
            return None;
        }
        let model = BedrockModel::parse(cx.model).ok()?;
        if model.embed.is_some() || !model.id.contains("anthropic.") {
            return None;
        }
        let beta = headers.beta_body_field();
        let mut set: Vec<(&str, &str)> = Vec::with_capacity(2);
        if !body.has("anthropic_version") {
            set.push(("anthropic_version", "\"bedrock-2023-05-31\""));
        }
        if let Some(beta) = &beta {
            set.push(("anthropic_beta", beta));
        }
        let mut out = Vec::with_capacity(
            body.fields()
                .map(|(k, v)| k.len() + v.get().len() + 4)
                .sum::<usize>()
                + 64,
        );
        body.write_with(&set, &["model", "stream", "cache", "tags"], &mut out);
        let (op, accept) = if cx.stream {
            (
                "/invoke-with-response-stream",
                "application/vnd.amazon.eventstream",
            )
        } else {
            ("/invoke", "application/json")
        };
        Some(match self.credentials().await {
            Ok(creds) => self.signed(creds.as_deref(), self.model_path(model.id, op), out, accept),
            Err(e) => Err(e),
        })
    }

    fn messages_framing(&self) -> super::MessagesFraming {
        super::MessagesFraming::BedrockChunks
    }

    fn start(&self, cx: &RequestContext<'_>) -> Option<Box<dyn ProviderCall + '_>> {
        let titan = BedrockModel::parse(cx.model).is_ok_and(|m| m.embed == Some(EmbedModel::Titan));
        (cx.op == Operation::Embeddings && titan).then(|| {
            Box::new(TitanCall {
                bedrock: self,
                pending: PendingEmbeddings::default(),
            }) as Box<dyn ProviderCall + '_>
        })
    }
}

/// A model as Bedrock routes it, from `litellm_params.model` (or a wildcard's concrete model).
struct BedrockModel<'m> {
    /// The model id, without LiteLLM's route prefix.
    id: &'m str,
    embed: Option<EmbedModel>,
}

impl<'m> BedrockModel<'m> {
    /// LiteLLM's route prefixes: `converse/` is what this provider speaks anyway; `invoke/`
    /// (model-specific InvokeModel bodies) exists here only for the embedding models. A
    /// wildcard's pattern (`*`) passes: its concrete models are checked per request.
    fn parse(model: &'m str) -> Result<BedrockModel<'m>, String> {
        let invoke_route = model.starts_with("invoke/");
        let id = Self::id_of(model);
        let embed = if id.contains("amazon.titan-embed") {
            Some(EmbedModel::Titan)
        } else if id.contains("cohere.embed") {
            Some(EmbedModel::Cohere)
        } else {
            None
        };
        if invoke_route && embed.is_none() && !id.contains('*') {
            return Err("the bedrock/invoke/ route (model-specific InvokeModel bodies) is supported only for Titan and Cohere embedding models; use bedrock/<model id> for chat, which speaks the Converse API".into());
        }
        if id.is_empty() {
            return Err("a bedrock model needs a model id after the prefix, e.g. bedrock/anthropic.claude-3-haiku-20240307-v1:0".into());
        }
        // The id is one path segment (`uri_encode` turns `/` into `%2F`), but no encoding
        // makes `..` safe.
        super::url::check_segment(id)?;
        Ok(BedrockModel { id, embed })
    }

    /// The model id without a route prefix.
    fn id_of(model: &str) -> &str {
        model
            .strip_prefix("invoke/")
            .or_else(|| model.strip_prefix("converse/"))
            .unwrap_or(model)
    }
}

impl Bedrock {
    /// The InvokeModel request for an embeddings call, and (Titan with several inputs) the
    /// vectors of the 2nd..nth inputs, embedded now.
    async fn build_embeddings(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<(UpstreamRequest, PendingEmbeddings)> {
        let model =
            BedrockModel::parse(cx.model).map_err(|e| GatewayError::invalid_param("model", e))?;
        let kind = model.embed.ok_or_else(|| {
            GatewayError::invalid_param(
                "model",
                format!("bedrock model '{}' is not an embedding model.", model.id),
            )
        })?;
        let supported = match kind {
            EmbedModel::Titan => TITAN_SUPPORTED,
            EmbedModel::Cohere => COHERE_SUPPORTED,
        };
        check_supported(body, supported, cx.drop_params, NAME)?;
        let req = EmbeddingsRequest::from_body(body)?;
        let texts = req.input.texts(NAME)?;
        if texts.is_empty() {
            return Err(GatewayError::invalid_param(
                "input",
                "'input' must contain at least one text.",
            ));
        }
        let invoke = self.model_path(model.id, "/invoke");
        let creds = self.credentials().await?;
        let creds = creds.as_deref();
        let mut pending = PendingEmbeddings::default();
        let request = match kind {
            EmbedModel::Cohere => {
                let json = serde_json::to_vec(&CohereEmbedBody {
                    texts: &texts,
                    input_type: req.input_type.as_deref().unwrap_or("search_document"),
                })
                .map_err(serialize_error)?;
                self.signed(creds, invoke, json, "application/json")?
            }
            EmbedModel::Titan => {
                if texts.len() > MAX_TITAN_INPUTS {
                    return Err(GatewayError::invalid_param(
                        "input",
                        format!(
                            "'input' has {} texts; bedrock Titan embedding models take one text per upstream request, and the gateway sends at most {MAX_TITAN_INPUTS} per call. Split the batch.",
                            texts.len()
                        ),
                    ));
                }
                if texts.len() > 1 {
                    (pending.vectors, pending.tokens) = self
                        .embed_titan_rest(creds, &invoke, &texts[1..], req.dimensions, client)
                        .await?;
                }
                self.signed(
                    creds,
                    invoke,
                    titan_body(texts[0], req.dimensions)?,
                    "application/json",
                )?
            }
        };
        Ok((request, pending))
    }

    /// `{endpoint path}/model/{url-encoded id}{op}`.
    fn model_path(&self, model_id: &str, op: &str) -> String {
        let mut path = String::with_capacity(self.base_path.len() + model_id.len() + op.len() + 16);
        path.push_str(&self.base_path);
        path.push_str("/model/");
        sigv4::uri_encode(model_id, &mut path);
        path.push_str(op);
        path
    }

    /// The credentials to sign with now (`None` with a Bearer key): a cheap load of the
    /// current ones; only a source's very first fetch is waited for.
    async fn credentials(&self) -> GatewayResult<Option<Arc<Credentials>>> {
        match &self.auth {
            Auth::Bearer(_) => Ok(None),
            Auth::SigV4(auth) => auth.current(&self.deployment).await.map(Some),
        }
    }

    /// A POST of `json` to `path`, authorized: signed now with SigV4 and `creds`, or with the
    /// Bearer key.
    fn signed(
        &self,
        creds: Option<&Credentials>,
        path: String,
        json: Vec<u8>,
        accept: &str,
    ) -> GatewayResult<UpstreamRequest> {
        let mut req = UpstreamRequest::post_json(path, json);
        req.header(http::header::ACCEPT, accept)?;
        match (&self.auth, creds) {
            (Auth::Bearer(key), _) => {
                req.header(http::header::AUTHORIZATION, &format!("Bearer {key}"))?;
            }
            (Auth::SigV4(_), None) => {
                return Err(GatewayError::internal(
                    "bedrock: a SigV4 request was built without credentials.",
                ))
            }
            (Auth::SigV4(_), Some(creds)) => {
                let signed = sigv4::sign(
                    creds,
                    &self.region,
                    SIGNING_SERVICE,
                    &SignableRequest {
                        method: "POST",
                        path_and_query: &req.path,
                        host: &self.host,
                        content_type: Some("application/json"),
                        body: &req.body,
                    },
                    SystemTime::now(),
                );
                for (name, value) in signed {
                    req.header(HeaderName::from_static(name), &value)?;
                }
            }
        }
        Ok(req)
    }

    /// Embeds the 2nd..nth Titan inputs now, one request each, `TITAN_CONCURRENCY` at a time
    /// (vectors in input order), and keeps their vectors for `parse_response`. The first
    /// failure ends the call; dropping the future (the attempt's deadline, a client hang-up)
    /// drops the requests in flight.
    async fn embed_titan_rest(
        &self,
        creds: Option<&Credentials>,
        path: &str,
        texts: &[&str],
        dimensions: Option<u32>,
        client: &UpstreamClient,
    ) -> GatewayResult<(Vec<Vec<f32>>, u64)> {
        use futures_util::stream::{self, StreamExt, TryStreamExt};
        let requests = texts
            .iter()
            .map(|text| {
                self.signed(
                    creds,
                    path.to_string(),
                    titan_body(text, dimensions)?,
                    "application/json",
                )
            })
            .collect::<GatewayResult<Vec<_>>>()?;
        let results: Vec<(Vec<f32>, u64)> = stream::iter(requests)
            .map(|req| self.embed_titan_one(req, client))
            .buffered(TITAN_CONCURRENCY)
            .try_collect()
            .await?;
        let tokens = results.iter().map(|(_, t)| t).sum();
        Ok((results.into_iter().map(|(v, _)| v).collect(), tokens))
    }

    /// One Titan InvokeModel request: its vector and token count.
    async fn embed_titan_one(
        &self,
        req: UpstreamRequest,
        client: &UpstreamClient,
    ) -> GatewayResult<(Vec<f32>, u64)> {
        let call = async {
            let mut resp = client.send(&self.endpoint, &req, None).await?;
            let body = resp.body(MAX_EMBED_BODY).await?;
            Ok::<_, GatewayError>((resp.status, resp.header, body))
        };
        let (status, header, body) =
            tokio::time::timeout(self.timeout, call)
                .await
                .map_err(|_| {
                    GatewayError::timeout("bedrock: an embedding request did not finish in time.")
                })??;
        if !(200..300).contains(&status) {
            return Err(map_error(status, &header, &body));
        }
        parse_titan(&body)
    }

    fn parse_embeddings(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
        rest: PendingEmbeddings,
    ) -> GatewayResult<TranslatedResponse> {
        let base64 = cx.embeddings_base64;
        let model =
            BedrockModel::parse(cx.model).map_err(|e| GatewayError::invalid_param("model", e))?;
        let (vectors, usage) = match model.embed {
            Some(EmbedModel::Cohere) => {
                let parsed: CohereEmbedResponse = parse_json(body)?;
                let vectors = match parsed.embeddings {
                    CohereEmbeddings::Floats(v) => v,
                    CohereEmbeddings::ByType { float } => float,
                };
                // InvokeModel reports Cohere's token count only in a response header.
                (vectors, Usage::new(0, 0))
            }
            _ => {
                let (first, tokens) = parse_titan(body)?;
                let mut vectors = vec![first];
                vectors.extend(rest.vectors);
                (vectors, Usage::new(tokens + rest.tokens, 0))
            }
        };
        Ok(TranslatedResponse {
            body: embeddings_response(model.id, &vectors, base64, usage),
            usage: Some(usage),
        })
    }
}

fn serialize_error(e: serde_json::Error) -> GatewayError {
    GatewayError::internal(format!("bedrock: could not serialize the request ({e})."))
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> GatewayResult<T> {
    serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_gateway(format!(
            "bedrock: the upstream answered 2xx with a body that could not be understood ({e})."
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Embeddings bodies.

#[derive(Serialize)]
struct TitanEmbedBody<'a> {
    #[serde(rename = "inputText")]
    input_text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<u32>,
}

fn titan_body(text: &str, dimensions: Option<u32>) -> GatewayResult<Vec<u8>> {
    serde_json::to_vec(&TitanEmbedBody {
        input_text: text,
        dimensions,
    })
    .map_err(serialize_error)
}

#[derive(Deserialize)]
struct TitanEmbedResponse {
    embedding: Vec<f32>,
    #[serde(default, rename = "inputTextTokenCount")]
    input_text_token_count: u64,
}

fn parse_titan(body: &[u8]) -> GatewayResult<(Vec<f32>, u64)> {
    let r: TitanEmbedResponse = parse_json(body)?;
    Ok((r.embedding, r.input_text_token_count))
}

#[derive(Serialize)]
struct CohereEmbedBody<'a> {
    texts: &'a [&'a str],
    input_type: &'a str,
}

#[derive(Deserialize)]
struct CohereEmbedResponse {
    embeddings: CohereEmbeddings,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CohereEmbeddings {
    Floats(Vec<Vec<f32>>),
    ByType { float: Vec<Vec<f32>> },
}

// ---------------------------------------------------------------------------------------------
// Converse request.

#[derive(Serialize)]
struct ConverseBody<'r> {
    messages: Vec<Turn<'r>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock<'r>>,
    #[serde(
        rename = "inferenceConfig",
        skip_serializing_if = "InferenceConfig::is_empty"
    )]
    inference_config: InferenceConfig<'r>,
    #[serde(rename = "toolConfig", skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'r>>,
}

#[derive(Serialize)]
struct SystemBlock<'r> {
    text: Cow<'r, str>,
}

#[derive(Serialize)]
struct Turn<'r> {
    role: &'static str,
    content: Vec<Block<'r>>,
}

#[derive(Serialize)]
enum Block<'r> {
    #[serde(rename = "text")]
    Text(Cow<'r, str>),
    #[serde(rename = "image")]
    Image {
        format: &'static str,
        source: ImageBytes<'r>,
    },
    /// A document (PDF, Word, Excel, CSV, HTML, text, Markdown), inline; Converse wants a name
    /// unique in the request.
    #[serde(rename = "document")]
    Document {
        format: &'static str,
        name: String,
        source: ImageBytes<'r>,
    },
    #[serde(rename = "toolUse")]
    ToolUse {
        #[serde(rename = "toolUseId")]
        id: &'r str,
        name: &'r str,
        input: Box<RawValue>,
    },
    #[serde(rename = "toolResult")]
    ToolResult {
        #[serde(rename = "toolUseId")]
        id: &'r str,
        content: [TextBlock<'r>; 1],
    },
}

#[derive(Serialize)]
struct ImageBytes<'r> {
    /// Base64 text, as the JSON form of a blob.
    bytes: &'r str,
}

#[derive(Serialize)]
struct TextBlock<'r> {
    text: Cow<'r, str>,
}

#[derive(Serialize, Default)]
struct InferenceConfig<'r> {
    #[serde(rename = "maxTokens", skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(rename = "topP", skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(rename = "stopSequences", skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'r [Cow<'r, str>]>,
}

impl InferenceConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_none()
    }
}

#[derive(Serialize)]
struct ToolConfig<'r> {
    tools: Vec<ToolEntry<'r>>,
    #[serde(rename = "toolChoice", skip_serializing_if = "Option::is_none")]
    tool_choice: Option<BedrockToolChoice<'r>>,
}

#[derive(Serialize)]
struct ToolEntry<'r> {
    #[serde(rename = "toolSpec")]
    spec: ToolSpec<'r>,
}

#[derive(Serialize)]
struct ToolSpec<'r> {
    name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'r str>,
    #[serde(rename = "inputSchema")]
    input_schema: InputSchema<'r>,
}

#[derive(Serialize)]
struct InputSchema<'r> {
    json: Schema<'r>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Schema<'r> {
    Given(&'r RawValue),
    EmptyObject {
        #[serde(rename = "type")]
        kind: &'static str,
        properties: Empty,
    },
    AnyObject {
        #[serde(rename = "type")]
        kind: &'static str,
    },
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
enum BedrockToolChoice<'r> {
    #[serde(rename = "auto")]
    Auto(Empty),
    #[serde(rename = "any")]
    Any(Empty),
    #[serde(rename = "tool")]
    Tool { name: &'r str },
}

/// Builds the Converse body from the typed view of the client's request.
fn converse_body(
    req: &ChatRequest<'_>,
    default_max_tokens: Option<u64>,
    drop_params: bool,
) -> GatewayResult<Vec<u8>> {
    if req.n.is_some_and(|n| n != 1) && !drop_params {
        return Err(unsupported("n", "more than one choice (n > 1)"));
    }
    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(req.messages.len());
    let mut documents = 0;
    for (i, m) in req.messages.iter().enumerate() {
        match m.role.as_ref() {
            "system" | "developer" => {
                if let Some(content) = &m.content {
                    let text = content.joined_text();
                    if !text.is_empty() {
                        system.push(SystemBlock { text });
                    }
                }
            }
            "user" => push_turn(&mut turns, "user", user_blocks(m, i, &mut documents)?),
            "assistant" => push_turn(&mut turns, "assistant", assistant_blocks(m, i)?),
            "tool" => {
                let id = m.tool_call_id.as_deref().ok_or_else(|| {
                    GatewayError::invalid_param(
                        "messages",
                        format!("messages[{i}]: a tool message needs 'tool_call_id'."),
                    )
                })?;
                let text = m
                    .content
                    .as_ref()
                    .map(|c| c.joined_text())
                    .unwrap_or(Cow::Borrowed(""));
                push_turn(
                    &mut turns,
                    "user",
                    vec![Block::ToolResult {
                        id,
                        content: [TextBlock { text }],
                    }],
                );
            }
            other => {
                return Err(GatewayError::invalid_param(
                    "messages",
                    format!("messages[{i}]: unknown role \"{other}\" (expected system, developer, user, assistant or tool)."),
                ))
            }
        }
    }
    if turns.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            "bedrock needs at least one user or assistant message with content.",
        ));
    }
    // response_format json_object / json_schema, as LiteLLM does it: a tool whose input is the
    // answer, forced when it is the only tool; its call comes back as the message content.
    let json_tool = match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => Some(json_tool_entry(None)),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            Some(json_tool_entry(json_schema.schema))
        }
    };
    let user_tools = match (&req.tools, &req.tool_choice) {
        (Some(tools), choice) if choice != &Some(ToolChoice::None) => tools.as_slice(),
        _ => &[],
    };
    let mut entries = Vec::with_capacity(user_tools.len() + 1);
    for t in user_tools {
        if t.kind != "function" {
            return Err(GatewayError::invalid_param(
                "tools",
                format!("bedrock supports only function tools, not \"{}\".", t.kind),
            ));
        }
        entries.push(ToolEntry {
            spec: ToolSpec {
                name: &t.function.name,
                description: t.function.description.as_deref(),
                input_schema: InputSchema {
                    json: match t.function.parameters {
                        Some(p) => Schema::Given(p),
                        None => Schema::EmptyObject {
                            kind: "object",
                            properties: Empty {},
                        },
                    },
                },
            },
        });
    }
    let mut tool_choice = match &req.tool_choice {
        None | Some(ToolChoice::Auto) => Some(BedrockToolChoice::Auto(Empty {})),
        Some(ToolChoice::Required) => Some(BedrockToolChoice::Any(Empty {})),
        Some(ToolChoice::Function(name)) => Some(BedrockToolChoice::Tool { name }),
        Some(ToolChoice::None) => None,
    };
    if let Some(jt) = json_tool {
        if entries.is_empty() {
            tool_choice = Some(BedrockToolChoice::Tool { name: JSON_TOOL });
        }
        entries.push(jt);
    }
    let tool_config = (!entries.is_empty()).then_some(ToolConfig {
        tools: entries,
        tool_choice,
    });
    let body = ConverseBody {
        messages: turns,
        system,
        inference_config: InferenceConfig {
            max_tokens: req.max_output_tokens().or(default_max_tokens),
            temperature: req.temperature,
            top_p: req.top_p,
            stop_sequences: req.stop.as_deref().filter(|s| !s.is_empty()),
        },
        tool_config,
    };
    serde_json::to_vec(&body).map_err(serialize_error)
}

/// The tool that carries a `response_format` JSON answer (LiteLLM's name for it). A tool call of
/// this name in a response becomes the message content.
const JSON_TOOL: &str = "json_tool_call";

fn json_tool_entry(schema: Option<&RawValue>) -> ToolEntry<'_> {
    ToolEntry {
        spec: ToolSpec {
            name: JSON_TOOL,
            description: Some("Respond with a JSON object."),
            input_schema: InputSchema {
                json: match schema {
                    Some(s) => Schema::Given(s),
                    None => Schema::AnyObject { kind: "object" },
                },
            },
        },
    }
}

fn unsupported(param: &str, what: &str) -> GatewayError {
    GatewayError::invalid_param(
        param,
        format!(
            "bedrock does not support {what}. Remove '{param}', or set drop_params: true (litellm_settings or the deployment's litellm_params) to drop it."
        ),
    )
    .with_code("unsupported_parameter")
}

/// Appends blocks as a turn, merging into the previous turn when it has the same role
/// (Bedrock requires alternating roles; parallel tool results become one user turn).
fn push_turn<'r>(turns: &mut Vec<Turn<'r>>, role: &'static str, blocks: Vec<Block<'r>>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => last.content.extend(blocks),
        _ => turns.push(Turn {
            role,
            content: blocks,
        }),
    }
}

/// Converse's document formats, by media type.
fn document_format(media_type: &str) -> Option<&'static str> {
    Some(match media_type {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "application/msword" => "doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => "docx",
        "application/vnd.ms-excel" => "xls",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => "xlsx",
        "text/html" => "html",
        "text/plain" => "txt",
        "text/markdown" => "md",
        _ => return None,
    })
}

/// A user message's blocks; `documents` counts the request's documents so far (their names).
fn user_blocks<'r>(
    m: &'r ChatMessage<'_>,
    i: usize,
    documents: &mut usize,
) -> GatewayResult<Vec<Block<'r>>> {
    let mut blocks = Vec::new();
    match &m.content {
        None => {}
        Some(MessageContent::Text(t)) if t.is_empty() => {}
        Some(MessageContent::Text(t)) => blocks.push(Block::Text(Cow::Borrowed(t.as_ref()))),
        Some(MessageContent::Parts(parts)) => {
            for part in parts {
                match part {
                    ContentPart::Text { text } => {
                        if !text.is_empty() {
                            blocks.push(Block::Text(Cow::Borrowed(text.as_ref())));
                        }
                    }
                    ContentPart::ImageUrl { image_url } => match image_url.source()? {
                        ImageSource::Base64 { media_type, data } => {
                            // A document as a data URI (how the Messages ingress hands PDFs
                            // on): Converse's document block.
                            if let Some(format) = document_format(media_type) {
                                *documents += 1;
                                blocks.push(Block::Document {
                                    format,
                                    name: format!("Document {documents}"),
                                    source: ImageBytes { bytes: data },
                                });
                                continue;
                            }
                            let format = match media_type {
                                "image/png" => "png",
                                "image/jpeg" | "image/jpg" => "jpeg",
                                "image/gif" => "gif",
                                "image/webp" => "webp",
                                other => {
                                    return Err(GatewayError::invalid_param(
                                        "messages",
                                        format!("messages[{i}]: bedrock takes png, jpeg, gif or webp images and pdf, csv, doc(x), xls(x), html, txt or md documents, not \"{other}\"."),
                                    ))
                                }
                            };
                            blocks.push(Block::Image {
                                format,
                                source: ImageBytes { bytes: data },
                            });
                        }
                        ImageSource::Url(_) => {
                            return Err(GatewayError::invalid_param(
                                "messages",
                                format!("messages[{i}]: bedrock does not fetch image URLs; send the image inline as a data:<mime>;base64,<data> URI."),
                            ))
                        }
                    },
                    ContentPart::Unsupported => {
                        return Err(GatewayError::invalid_param(
                            "messages",
                            format!("messages[{i}]: bedrock takes text and image_url content parts only."),
                        ))
                    }
                }
            }
        }
    }
    Ok(blocks)
}

fn assistant_blocks<'r>(m: &'r ChatMessage<'_>, i: usize) -> GatewayResult<Vec<Block<'r>>> {
    let mut blocks = Vec::new();
    if let Some(content) = &m.content {
        let text = content.joined_text();
        if !text.is_empty() {
            blocks.push(Block::Text(text));
        }
    }
    for call in m.tool_calls.iter().flatten() {
        let args = call.function.arguments.trim();
        let args = if args.is_empty() { "{}" } else { args };
        let input = serde_json::from_str::<Box<RawValue>>(args)
            .ok()
            .filter(|v| v.get().starts_with('{'))
            .ok_or_else(|| {
                GatewayError::invalid_param(
                    "messages",
                    format!(
                        "messages[{i}]: tool call '{}' has arguments that are not a JSON object.",
                        call.id
                    ),
                )
            })?;
        blocks.push(Block::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input,
        });
    }
    Ok(blocks)
}

// ---------------------------------------------------------------------------------------------
// Converse response.

#[derive(Deserialize)]
struct ConverseResponse<'a> {
    #[serde(borrow)]
    output: ConverseOutput<'a>,
    #[serde(rename = "stopReason", borrow)]
    stop_reason: Cow<'a, str>,
    #[serde(default)]
    usage: Option<BedrockUsage>,
}

#[derive(Deserialize)]
struct ConverseOutput<'a> {
    #[serde(default, borrow)]
    message: Option<OutMessage<'a>>,
}

#[derive(Deserialize)]
struct OutMessage<'a> {
    #[serde(default, borrow)]
    content: Vec<OutBlock<'a>>,
}

#[derive(Deserialize)]
struct OutBlock<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, rename = "toolUse", borrow)]
    tool_use: Option<OutToolUse<'a>>,
}

#[derive(Deserialize)]
struct OutToolUse<'a> {
    #[serde(rename = "toolUseId", borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    input: &'a RawValue,
}

#[derive(Deserialize, Clone, Copy, Default)]
struct BedrockUsage {
    #[serde(default, rename = "inputTokens")]
    input: u64,
    #[serde(default, rename = "outputTokens")]
    output: u64,
    #[serde(default, rename = "cacheReadInputTokens")]
    cache_read: u64,
    #[serde(default, rename = "cacheWriteInputTokens")]
    cache_write: u64,
}

impl BedrockUsage {
    /// OpenAI counts cached prompt tokens inside `prompt_tokens`; Bedrock's `inputTokens`
    /// excludes cache reads and writes.
    fn to_openai(self) -> Usage {
        Usage::new(self.input + self.cache_read + self.cache_write, self.output)
            .with_cached(self.cache_read)
            .with_cache_creation(self.cache_write, 0)
    }
}

fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, and anything newer.
        _ => FinishReason::Stop,
    }
}

fn parse_converse(
    body: &[u8],
    cx: &RequestContext<'_>,
    model: &str,
) -> GatewayResult<TranslatedResponse> {
    let r: ConverseResponse<'_> = parse_json(body)?;
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in r.output.message.into_iter().flat_map(|m| m.content) {
        if let Some(t) = block.text {
            text.get_or_insert_with(String::new).push_str(&t);
        }
        if let Some(tu) = block.tool_use {
            if tu.name == JSON_TOOL {
                text.get_or_insert_with(String::new)
                    .push_str(tu.input.get());
                continue;
            }
            tool_calls.push(ToolCallOut::new(
                tu.id.into_owned(),
                tu.name.into_owned(),
                tu.input.get().to_string(),
            ));
        }
    }
    let usage = r.usage.unwrap_or_default().to_openai();
    let mut finish = finish_reason(&r.stop_reason);
    if finish == FinishReason::ToolCalls && tool_calls.is_empty() {
        // Only the response_format tool was called: the answer is the content.
        finish = FinishReason::Stop;
    }
    let completion = ChatCompletion::single(
        cx.response_id,
        cx.created,
        model,
        text,
        tool_calls,
        finish,
        usage,
    );
    Ok(TranslatedResponse {
        body: completion.to_bytes(),
        usage: Some(usage),
    })
}

// ---------------------------------------------------------------------------------------------
// ConverseStream.

#[derive(Deserialize)]
struct BlockStartEvent<'a> {
    #[serde(default, rename = "contentBlockIndex")]
    index: u32,
    #[serde(default, borrow)]
    start: Option<BlockStart<'a>>,
}

#[derive(Deserialize)]
struct BlockStart<'a> {
    #[serde(default, rename = "toolUse", borrow)]
    tool_use: Option<ToolUseStart<'a>>,
}

#[derive(Deserialize)]
struct ToolUseStart<'a> {
    #[serde(rename = "toolUseId", borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct BlockDeltaEvent<'a> {
    #[serde(default, rename = "contentBlockIndex")]
    index: u32,
    #[serde(default, borrow)]
    delta: Option<BlockDelta<'a>>,
}

#[derive(Deserialize)]
struct BlockDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, rename = "toolUse", borrow)]
    tool_use: Option<ToolUseDelta<'a>>,
    #[serde(default, rename = "reasoningContent", borrow)]
    reasoning: Option<ReasoningDelta<'a>>,
}

/// `reasoningContent` of a delta: thinking text (or only a signature, which carries none).
#[derive(Deserialize)]
struct ReasoningDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolUseDelta<'a> {
    #[serde(default, borrow)]
    input: Cow<'a, str>,
}

#[derive(Deserialize)]
struct BlockStopEvent {
    #[serde(default, rename = "contentBlockIndex")]
    index: u32,
}

#[derive(Deserialize)]
struct MessageStopEvent<'a> {
    #[serde(rename = "stopReason", borrow)]
    stop_reason: Cow<'a, str>,
}

#[derive(Deserialize)]
struct MetadataEvent {
    #[serde(default)]
    usage: Option<BedrockUsage>,
}

#[derive(Deserialize)]
struct ExceptionBody<'a> {
    #[serde(default, borrow, alias = "Message")]
    message: Option<Cow<'a, str>>,
}

/// Turns ConverseStream event-stream messages into stream events as they complete.
pub struct ConverseStreamTranslator {
    usage: Option<Usage>,
    /// The tool-use blocks started so far.
    tool_blocks: Vec<ToolBlock>,
    /// OpenAI tool calls started so far.
    calls: usize,
    stopped: bool,
}

struct ToolBlock {
    /// Bedrock's `contentBlockIndex`.
    block: u32,
    /// The OpenAI tool-call index; `None` for the response_format tool, streamed as content.
    call: Option<usize>,
    /// Some argument fragment was sent; a tool call without input gets `{}` at its stop.
    has_args: bool,
}

impl ConverseStreamTranslator {
    fn tool_block(&mut self, block: u32) -> Option<&mut ToolBlock> {
        self.tool_blocks.iter_mut().find(|t| t.block == block)
    }

    /// The translator with its eventstream framing, ready to drive as a [`StreamTranslator`].
    pub fn new(cx: &RequestContext<'_>, model: &str) -> Framed<EventStreamDecoder, Self> {
        Framed::new(
            ConverseStreamTranslator {
                usage: None,
                tool_blocks: Vec::new(),
                calls: 0,
                stopped: false,
            },
            ChunkWriter::new(cx.response_id, cx.created, model, cx.include_usage),
        )
    }

    fn on_message(&mut self, m: Message<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        match m.header_str(":message-type") {
            Some("event") | None => {}
            Some("exception") => {
                let kind = m.header_str(":exception-type").unwrap_or("exception");
                let message = serde_json::from_slice::<ExceptionBody<'_>>(m.payload)
                    .ok()
                    .and_then(|b| b.message.map(Cow::into_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(m.payload).into_owned());
                return Err(error_for_type(kind, &message, 502, None));
            }
            Some(_) => {
                // `:message-type: error` carries `:error-code` / `:error-message` headers.
                let kind = m.header_str(":error-code").unwrap_or("error");
                let message = m.header_str(":error-message").unwrap_or("stream error");
                return Err(error_for_type(kind, message, 502, None));
            }
        }
        let payload = m.payload;
        match m.header_str(":event-type").unwrap_or("") {
            "messageStart" => sink.event(Emit::Start),
            "contentBlockStart" => {
                let ev: BlockStartEvent<'_> = event_json(payload)?;
                if let Some(tu) = ev.start.and_then(|s| s.tool_use) {
                    if self.tool_blocks.len() >= MAX_STREAM_TOOL_CALLS {
                        return Err(GatewayError::bad_gateway(format!(
                            "bedrock: the stream started more than {MAX_STREAM_TOOL_CALLS} tool calls."
                        )));
                    }
                    let call = (tu.name != JSON_TOOL).then_some(self.calls);
                    self.tool_blocks.push(ToolBlock {
                        block: ev.index,
                        call,
                        has_args: false,
                    });
                    if let Some(index) = call {
                        self.calls += 1;
                        sink.event(Emit::ToolCallStart {
                            index,
                            id: &tu.id,
                            name: &tu.name,
                        });
                    }
                }
            }
            "contentBlockDelta" => {
                let ev: BlockDeltaEvent<'_> = event_json(payload)?;
                let Some(delta) = ev.delta else {
                    return Ok(());
                };
                if let Some(text) = delta.text {
                    sink.event(Emit::Text(&text));
                }
                if let Some(text) = delta.reasoning.and_then(|r| r.text) {
                    sink.event(Emit::Reasoning(&text));
                }
                if let Some(tu) = delta.tool_use {
                    let index = ev.index;
                    let block = self.tool_block(index).ok_or_else(|| {
                        GatewayError::bad_gateway(format!(
                            "bedrock: a toolUse delta arrived for content block {index} that never started."
                        ))
                    })?;
                    if !tu.input.is_empty() {
                        block.has_args = true;
                        match block.call {
                            Some(index) => sink.event(Emit::ToolCallArgs {
                                index,
                                fragment: &tu.input,
                            }),
                            None => sink.event(Emit::Text(&tu.input)),
                        }
                    }
                }
            }
            "contentBlockStop" => {
                let ev: BlockStopEvent = event_json(payload)?;
                if let Some(block) = self.tool_block(ev.index) {
                    if let (Some(call), false) = (block.call, block.has_args) {
                        // OpenAI clients parse `arguments` as JSON: an input-less call is `{}`.
                        block.has_args = true;
                        sink.event(Emit::ToolCallArgs {
                            index: call,
                            fragment: "{}",
                        });
                    }
                }
            }
            "messageStop" => {
                let ev: MessageStopEvent<'_> = event_json(payload)?;
                self.stopped = true;
                let mut finish = finish_reason(&ev.stop_reason);
                if finish == FinishReason::ToolCalls && self.calls == 0 {
                    // Only the response_format tool was called: the answer was the content.
                    finish = FinishReason::Stop;
                }
                sink.event(Emit::Finish(finish));
            }
            "metadata" => {
                let ev: MetadataEvent = event_json(payload)?;
                if let Some(u) = ev.usage {
                    let usage = u.to_openai();
                    self.usage = Some(usage);
                    sink.event(Emit::Usage(usage));
                }
            }
            // Event types added later carry nothing to translate.
            _ => {}
        }
        Ok(())
    }
}

fn event_json<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> GatewayResult<T> {
    serde_json::from_slice(payload).map_err(|e| {
        GatewayError::bad_gateway(format!(
            "bedrock: a ConverseStream event could not be understood ({e})."
        ))
    })
}

impl EventTranslator<EventStreamDecoder> for ConverseStreamTranslator {
    fn on_event(&mut self, event: Message<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.on_message(event, sink)
    }

    fn on_end(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
        if !self.stopped {
            return Err(GatewayError::bad_gateway(
                "bedrock: the stream ended before messageStop.",
            ));
        }
        sink.event(Emit::Done);
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Maps a non-2xx Bedrock response: the error type from `x-amzn-ErrorType` (or the body's
/// `__type`), the message from the body's `message`.
pub fn map_error(status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
    #[derive(Deserialize)]
    struct ErrorBody<'a> {
        #[serde(default, borrow, alias = "Message")]
        message: Option<Cow<'a, str>>,
        #[serde(default, borrow, rename = "__type")]
        kind: Option<Cow<'a, str>>,
    }
    let parsed: Option<ErrorBody<'_>> = serde_json::from_slice(body).ok();
    let header_type = headers
        .headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).trim().to_string());
    let body_type = parsed
        .as_ref()
        .and_then(|p| p.kind.as_deref())
        .map(|k| k.rsplit('#').next().unwrap_or(k).to_string());
    let kind = header_type.or(body_type).unwrap_or_default();
    let message = parsed
        .and_then(|p| p.message.map(Cow::into_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    error_for_type(&kind, &message, status, super::retry_after_secs(headers))
}

/// An OpenAI error for a Bedrock error type (`ThrottlingException`, or the stream's
/// `throttlingException`); unknown types keep `status`.
fn error_for_type(
    kind: &str,
    message: &str,
    status: u16,
    retry_after: Option<u64>,
) -> GatewayError {
    let lower_kind = kind.to_ascii_lowercase();
    let mapped = match lower_kind.as_str() {
        "throttlingexception" | "servicequotaexceededexception" => 429,
        "validationexception" => 400,
        "accessdeniedexception" => 403,
        "resourcenotfoundexception" => 404,
        "modelerrorexception" | "modelstreamerrorexception" => 502,
        "modeltimeoutexception" => 408,
        "serviceunavailableexception" | "modelnotreadyexception" => 503,
        "internalserverexception" => 500,
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "missingauthenticationtokenexception"
        | "incompletesignatureexception"
        | "expiredtokenexception"
        | "invalidclienttokenid" => 401,
        _ => status,
    };
    let text = if kind.is_empty() {
        format!("bedrock: {message}")
    } else {
        format!("bedrock: {kind}: {message}")
    };
    let mut err = GatewayError::from_upstream(mapped, text).with_retry_after(retry_after);
    let lower = message.to_ascii_lowercase();
    if mapped == 400
        && (super::is_context_length_message(&lower)
            || lower.contains("too many input tokens")
            || lower.contains("input too long"))
    {
        err.kind = ErrorKind::ContextLengthExceeded;
        err.code = Some("context_length_exceeded".into());
    } else if err.code.is_none() && !kind.is_empty() {
        err.code = Some(kind.to_string());
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::eventstream::{encode_event, encode_exception};
    use bytes::BytesMut;

    fn cx(stream: bool, include_usage: bool) -> RequestContext<'static> {
        RequestContext {
            op: Operation::Chat,
            model: "m",
            stream,
            include_usage,
            response_id: "chatcmpl-1",
            created: 1_700_000_000,
            drop_params: false,
            embeddings_base64: false,
        }
    }

    fn body_for(json: &str, drop_params: bool) -> GatewayResult<serde_json::Value> {
        let body = RequestBody::parse(json.as_bytes()).unwrap();
        check_supported(&body, CHAT_SUPPORTED, drop_params, NAME)?;
        let req = ChatRequest::from_body(&body)?;
        let out = converse_body(&req, None, drop_params)?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn documents_are_converse_document_blocks_with_unique_names() {
        let got = body_for(
            r#"{"model":"m","messages":[
                {"role":"user","content":[{"type":"text","text":"Compare."},
                  {"type":"image_url","image_url":{"url":"data:application/pdf;base64,JVBERi0x"}},
                  {"type":"image_url","image_url":{"url":"data:text/csv;base64,YSxi"}}]}]}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            got["messages"][0]["content"],
            serde_json::json!([
                {"text": "Compare."},
                {"document": {"format": "pdf", "name": "Document 1", "source": {"bytes": "JVBERi0x"}}},
                {"document": {"format": "csv", "name": "Document 2", "source": {"bytes": "YSxi"}}}])
        );
        let e = body_for(
            r#"{"model":"m","messages":[{"role":"user","content":[
                {"type":"image_url","image_url":{"url":"data:application/zip;base64,UEs="}}]}]}"#,
            false,
        )
        .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.contains("application/zip") && e.message.contains("pdf"),
            "{}",
            e.message
        );
    }

    #[test]
    fn golden_converse_request() {
        let got = body_for(
            r#"{"model":"m","messages":[
                {"role":"system","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Weather in Paris and Rome?"},
                  {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]},
                {"role":"assistant","content":null,"tool_calls":[
                  {"id":"t1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                  {"id":"t2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Rome\"}"}}]},
                {"role":"tool","tool_call_id":"t1","content":"18C"},
                {"role":"tool","tool_call_id":"t2","content":"24C"},
                {"role":"user","content":"Thanks"}],
              "tools":[{"type":"function","function":{"name":"weather","description":"Get weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
              "tool_choice":"required","max_tokens":100,"temperature":0.5,"top_p":0.9,"stop":["END"],"user":"u1"}"#,
            false,
        )
        .unwrap();
        let expected = serde_json::json!({
            "messages": [
                {"role": "user", "content": [
                    {"text": "Weather in Paris and Rome?"},
                    {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Paris"}}},
                    {"toolUse": {"toolUseId": "t2", "name": "weather", "input": {"city": "Rome"}}}]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "t1", "content": [{"text": "18C"}]}},
                    {"toolResult": {"toolUseId": "t2", "content": [{"text": "24C"}]}},
                    {"text": "Thanks"}]}
            ],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "weather", "description": "Get weather",
                    "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                "toolChoice": {"any": {}}
            }
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn tool_choice_variants() {
        let tools = r#""tools":[{"type":"function","function":{"name":"f"}}]"#;
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        let v = body_for(&format!(r#"{{"model":"m",{msgs},{tools}}}"#), false).unwrap();
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            serde_json::json!({"auto": {}})
        );
        assert_eq!(
            v["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
            serde_json::json!({"type": "object", "properties": {}})
        );
        let v = body_for(
            &format!(r#"{{"model":"m",{msgs},{tools},"tool_choice":{{"type":"function","function":{{"name":"f"}}}}}}"#),
            false,
        )
        .unwrap();
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            serde_json::json!({"tool": {"name": "f"}})
        );
        let v = body_for(
            &format!(r#"{{"model":"m",{msgs},{tools},"tool_choice":"none"}}"#),
            false,
        )
        .unwrap();
        assert!(v.get("toolConfig").is_none());
        assert!(v.get("inferenceConfig").is_none());
    }

    #[test]
    fn bad_inputs_are_clear_400s() {
        let url = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}"#;
        let err = body_for(url, false).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("data:"), "{}", err.message);
        let seed = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"seed":1}"#;
        let err = body_for(seed, false).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("seed"));
        assert!(body_for(seed, true).is_ok());
        let args = r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}"#;
        assert_eq!(body_for(args, false).unwrap_err().status, 400);
    }

    #[test]
    fn golden_converse_response() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[
            {"text":"Let me check."},
            {"toolUse":{"toolUseId":"tooluse_1","name":"weather","input":{"city":"Paris"}}}]}},
            "stopReason":"tool_use",
            "usage":{"inputTokens":30,"outputTokens":12,"totalTokens":42,"cacheReadInputTokens":5},
            "metrics":{"latencyMs":100}}"#;
        let r = parse_converse(body, &cx(false, false), "anthropic.claude").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], "chatcmpl-1");
        assert_eq!(v["created"], 1_700_000_000u64);
        let msg = &v["choices"][0]["message"];
        assert_eq!(msg["content"], "Let me check.");
        assert_eq!(msg["tool_calls"][0]["id"], "tooluse_1");
        assert_eq!(msg["tool_calls"][0]["function"]["name"], "weather");
        let args: serde_json::Value = serde_json::from_str(
            msg["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(args, serde_json::json!({"city": "Paris"}));
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["prompt_tokens"], 35);
        assert_eq!(v["usage"]["completion_tokens"], 12);
        assert_eq!(v["usage"]["total_tokens"], 47);
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
        let bad = parse_converse(b"<html>", &cx(false, false), "m");
        assert_eq!(bad.err().map(|e| e.status), Some(502));
        for (reason, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            assert_eq!(finish_reason(reason).as_str(), want);
        }
    }

    /// A ConverseStream with text, then a tool call whose input arrives in fragments.
    fn golden_stream() -> Vec<u8> {
        let mut out = Vec::new();
        encode_event(
            "messageStart",
            br#"{"p":"abcd","role":"assistant"}"#,
            &mut out,
        );
        encode_event(
            "contentBlockDelta",
            br#"{"contentBlockIndex":0,"delta":{"text":"Hel"},"p":"ab"}"#,
            &mut out,
        );
        encode_event(
            "contentBlockDelta",
            "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"lo \\\"wörld\\\"\"}}".as_bytes(),
            &mut out,
        );
        encode_event("contentBlockStop", br#"{"contentBlockIndex":0}"#, &mut out);
        encode_event(
            "contentBlockStart",
            br#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_A","name":"weather"}}}"#,
            &mut out,
        );
        encode_event(
            "contentBlockDelta",
            br#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}}"#,
            &mut out,
        );
        encode_event(
            "contentBlockDelta",
            br#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#,
            &mut out,
        );
        encode_event("contentBlockStop", br#"{"contentBlockIndex":1}"#, &mut out);
        encode_event("messageStop", br#"{"stopReason":"tool_use"}"#, &mut out);
        encode_event(
            "metadata",
            br#"{"usage":{"inputTokens":10,"outputTokens":7,"totalTokens":17},"metrics":{"latencyMs":5}}"#,
            &mut out,
        );
        out
    }

    fn translate(input: &[u8], splits: &[usize], include_usage: bool) -> GatewayResult<String> {
        let mut t = ConverseStreamTranslator::new(&cx(true, include_usage), "m");
        let mut out = BytesMut::new();
        let mut start = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            t.feed(&input[start..s], &mut out)?;
            start = s;
        }
        t.finish(&mut out)?;
        Ok(String::from_utf8(out.to_vec()).unwrap())
    }

    fn chunks(sse: &str) -> Vec<serde_json::Value> {
        sse.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn stream_translation_text_and_tool_use() {
        let input = golden_stream();
        let whole = translate(&input, &[], true).unwrap();
        assert!(whole.ends_with("data: [DONE]\n\n"));
        let ev = chunks(&whole);
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = ev
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello \"wörld\"");
        let start = ev
            .iter()
            .find(|e| e["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
            .unwrap();
        let call = &start["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(
            (call["index"].as_u64(), call["id"].as_str()),
            (Some(0), Some("tooluse_A"))
        );
        assert_eq!(call["function"]["name"], "weather");
        let args: String = ev
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(args, "{\"city\":\"Paris\"}");
        let finishes: Vec<_> = ev
            .iter()
            .filter_map(|e| {
                e["choices"]
                    .get(0)
                    .and_then(|c| c["finish_reason"].as_str())
            })
            .collect();
        assert_eq!(finishes, vec!["tool_calls"]);
        let last = ev.last().unwrap();
        assert_eq!(last["choices"], serde_json::json!([]));
        assert_eq!(last["usage"]["total_tokens"], 17);
        // Without include_usage: no usage chunk.
        let no_usage = translate(&input, &[], false).unwrap();
        assert!(chunks(&no_usage).iter().all(|e| e.get("usage").is_none()));
    }

    #[test]
    fn stream_translation_is_identical_at_every_split() {
        let input = golden_stream();
        let whole = translate(&input, &[], true).unwrap();
        for i in 0..=input.len() {
            assert_eq!(
                translate(&input, &[i], true).unwrap(),
                whole,
                "split at {i}"
            );
        }
        for i in (0..input.len()).step_by(13) {
            for j in (i..input.len()).step_by(3) {
                assert_eq!(
                    translate(&input, &[i, j], true).unwrap(),
                    whole,
                    "split at {i},{j}"
                );
            }
        }
        let all: Vec<usize> = (1..input.len()).collect();
        assert_eq!(translate(&input, &all, true).unwrap(), whole);
    }

    #[test]
    fn stream_exceptions_and_truncation_are_errors() {
        let mut input = Vec::new();
        encode_event("messageStart", br#"{"role":"assistant"}"#, &mut input);
        encode_exception(
            "throttlingException",
            br#"{"message":"Too many requests"}"#,
            &mut input,
        );
        let err = translate(&input, &[], false).unwrap_err();
        assert_eq!(err.status, 429);
        assert!(err.message.contains("Too many requests"));
        let mut input = Vec::new();
        encode_exception(
            "modelStreamErrorException",
            br#"{"message":"boom"}"#,
            &mut input,
        );
        assert_eq!(translate(&input, &[], false).unwrap_err().status, 502);
        let mut input = Vec::new();
        encode_exception("validationException", br#"{"message":"bad"}"#, &mut input);
        assert_eq!(translate(&input, &[], false).unwrap_err().status, 400);
        let mut input = Vec::new();
        encode_exception("internalServerException", br#"{"message":"x"}"#, &mut input);
        assert_eq!(translate(&input, &[], false).unwrap_err().status, 500);
        // No messageStop: the stream was cut.
        let golden = golden_stream();
        let cut_at = golden.len() - 200;
        let mut t = ConverseStreamTranslator::new(&cx(true, false), "m");
        let mut out = BytesMut::new();
        t.feed(&golden[..cut_at], &mut out).unwrap();
        assert_eq!(t.finish(&mut out).unwrap_err().status, 502);
    }

    fn deployment(params: &str) -> Result<Bedrock, ConfigError> {
        let yaml = format!("model_list:\n  - model_name: x\n    litellm_params:\n{params}");
        let config = crate::config::litellm::parse(&yaml).expect("valid yaml");
        build_bedrock(&config.deployments[0])
    }

    /// Each request's extra Titan vectors live in its own call object: two calls in flight with
    /// the same response id (a client-chosen id, or a retry) no longer share a slot.
    #[test]
    fn titan_calls_own_their_extra_vectors() {
        let creds = "      aws_access_key_id: AK\n      aws_secret_access_key: SK\n";
        let b = deployment(&format!(
            "      model: bedrock/amazon.titan-embed-text-v2:0\n      aws_region_name: us-east-1\n{creds}"
        ))
        .unwrap();
        let mut embed_cx = cx(false, false);
        embed_cx.op = Operation::Embeddings;
        // The exchange passes the deployment's (or a wildcard's concrete) model per request.
        embed_cx.model = "amazon.titan-embed-text-v2:0";
        assert!(
            b.start(&cx(false, false)).is_none(),
            "chat needs no call object"
        );
        let call = |rest: Vec<Vec<f32>>| TitanCall {
            bedrock: &b,
            pending: PendingEmbeddings {
                tokens: rest.len() as u64,
                vectors: rest,
            },
        };
        assert!(b.start(&embed_cx).is_some());
        let mut one = call(vec![vec![1.5], vec![1.75]]);
        let mut two = call(vec![vec![2.5]]);
        let parsed_two = two
            .parse_response(
                Bytes::from_static(br#"{"embedding":[2.0],"inputTextTokenCount":3}"#),
                &embed_cx,
            )
            .unwrap();
        let parsed_one = one
            .parse_response(
                Bytes::from_static(br#"{"embedding":[1.0],"inputTextTokenCount":4}"#),
                &embed_cx,
            )
            .unwrap();
        let vectors = |r: &TranslatedResponse| -> Vec<serde_json::Value> {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["embedding"].clone())
                .collect()
        };
        assert_eq!(
            vectors(&parsed_one),
            [
                serde_json::json!([1.0]),
                serde_json::json!([1.5]),
                serde_json::json!([1.75])
            ]
        );
        assert_eq!(
            vectors(&parsed_two),
            [serde_json::json!([2.0]), serde_json::json!([2.5])]
        );
        assert_eq!(parsed_one.usage.unwrap().prompt_tokens, 4 + 2);
        assert_eq!(parsed_two.usage.unwrap().prompt_tokens, 3 + 1);
        // Without a call object a single input still parses (no extra vectors).
        let single = b
            .parse_response(br#"{"embedding":[9.0],"inputTextTokenCount":1}"#, &embed_cx)
            .unwrap();
        assert_eq!(vectors(&single), [serde_json::json!([9.0])]);
    }

    fn env_set(keys: &[&str]) -> bool {
        keys.iter()
            .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty()))
    }

    #[test]
    fn config_endpoint_credentials_and_errors() {
        let creds = "      aws_access_key_id: AK\n      aws_secret_access_key: SK\n";
        let b = deployment(&format!(
            "      model: bedrock/converse/us.anthropic.claude-3-5-sonnet-20240620-v1:0\n      aws_region_name: eu-west-1\n{creds}"
        ))
        .unwrap();
        assert_eq!(b.origin, "https://bedrock-runtime.eu-west-1.amazonaws.com");
        assert_eq!(b.host, "bedrock-runtime.eu-west-1.amazonaws.com");
        assert_eq!(
            b.model_path("us.anthropic.claude-3-5-sonnet-20240620-v1:0", "/converse"),
            "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
        );
        assert!(b.supports(Operation::Chat) && !b.supports(Operation::Embeddings));
        let b = deployment(&format!(
            "      model: bedrock/amazon.titan-embed-text-v2:0\n      region_name: us-east-1\n      aws_bedrock_runtime_endpoint: http://127.0.0.1:9000/\n{creds}"
        ))
        .unwrap();
        assert_eq!(
            (b.origin.as_str(), b.host.as_str()),
            ("http://127.0.0.1:9000", "127.0.0.1:9000")
        );
        assert!(b.supports(Operation::Embeddings) && !b.supports(Operation::Chat));
        let err = deployment(&format!(
            "      model: bedrock/invoke/anthropic.claude-v2\n      aws_region_name: us-east-1\n{creds}"
        ))
        .err()
        .unwrap();
        assert_eq!(err.path, "model_list[0].litellm_params.model");
        if !env_set(&["AWS_REGION_NAME", "AWS_REGION", "AWS_DEFAULT_REGION"]) {
            // LiteLLM's default region, unless the model's ARN names one.
            let b = deployment(&format!("      model: bedrock/m\n{creds}")).unwrap();
            assert_eq!(b.origin, "https://bedrock-runtime.us-west-2.amazonaws.com");
            let b = deployment(&format!(
                "      model: bedrock/arn:aws:bedrock:eu-central-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0\n{creds}"
            ))
            .unwrap();
            assert_eq!(b.region, "eu-central-1");
        }
        let err = deployment(&format!(
            "      model: bedrock/m\n      aws_region_name: US East\n{creds}"
        ))
        .err()
        .unwrap();
        assert_eq!(err.path, "model_list[0].litellm_params.aws_region_name");
        if !env_set(&["AWS_SECRET_ACCESS_KEY"]) {
            let err = deployment(
                "      model: bedrock/m\n      aws_region_name: us-east-1\n      aws_access_key_id: AK\n",
            )
            .err()
            .unwrap();
            assert_eq!(
                err.path,
                "model_list[0].litellm_params.aws_secret_access_key"
            );
        }
        // A Bearer key against an explicit endpoint needs neither credentials nor a region.
        assert!(deployment(
            "      model: bedrock/m\n      api_key: k\n      api_base: https://x.example\n"
        )
        .is_ok());
    }

    #[test]
    fn response_format_rides_on_a_forced_json_tool() {
        let v = body_for(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            v["toolConfig"],
            serde_json::json!({
                "tools": [{"toolSpec": {"name": "json_tool_call", "description": "Respond with a JSON object.",
                    "inputSchema": {"json": {"type": "object"}}}}],
                "toolChoice": {"tool": {"name": "json_tool_call"}}
            })
        );
        // A json_schema's schema becomes the tool's input schema. (Built directly: the shared
        // `ResponseFormat` cannot yet deserialize a schema, see the report.)
        let schema: &RawValue =
            serde_json::from_str(r#"{"type":"object","properties":{"a":{"type":"integer"}}}"#)
                .unwrap();
        let entry = serde_json::to_value(json_tool_entry(Some(schema))).unwrap();
        assert_eq!(
            entry["toolSpec"]["inputSchema"]["json"]["properties"]["a"]["type"],
            "integer"
        );
        // Next to the user's tools it is offered, not forced.
        let v = body_for(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"},
               "tools":[{"type":"function","function":{"name":"f"}}]}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            v["toolConfig"]["tools"][1]["toolSpec"]["inputSchema"]["json"],
            serde_json::json!({"type": "object"})
        );
        assert_eq!(
            v["toolConfig"]["toolChoice"],
            serde_json::json!({"auto": {}})
        );

        let body = br#"{"output":{"message":{"role":"assistant","content":[
            {"toolUse":{"toolUseId":"t","name":"json_tool_call","input":{"a":1}}}]}},
            "stopReason":"tool_use","usage":{"inputTokens":1,"outputTokens":2}}"#;
        let r = parse_converse(body, &cx(false, false), "m").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], r#"{"a":1}"#);
        assert!(v["choices"][0]["message"].get("tool_calls").is_none());
        assert_eq!(v["choices"][0]["finish_reason"], "stop");

        let mut input = Vec::new();
        encode_event("messageStart", br#"{"role":"assistant"}"#, &mut input);
        encode_event(
            "contentBlockStart",
            br#"{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"t","name":"json_tool_call"}}}"#,
            &mut input,
        );
        encode_event(
            "contentBlockDelta",
            br#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{\"a\":"}}}"#,
            &mut input,
        );
        encode_event(
            "contentBlockDelta",
            br#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"1}"}}}"#,
            &mut input,
        );
        encode_event(
            "contentBlockStop",
            br#"{"contentBlockIndex":0}"#,
            &mut input,
        );
        encode_event("messageStop", br#"{"stopReason":"tool_use"}"#, &mut input);
        let out = translate(&input, &[], false).unwrap();
        let ev = chunks(&out);
        let text: String = ev
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, r#"{"a":1}"#);
        assert!(!out.contains("tool_calls"));
        assert_eq!(ev.last().unwrap()["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn stream_tool_call_without_input_gets_empty_object_arguments() {
        let mut input = Vec::new();
        encode_event("messageStart", br#"{"role":"assistant"}"#, &mut input);
        encode_event(
            "contentBlockStart",
            br#"{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"t","name":"now"}}}"#,
            &mut input,
        );
        encode_event(
            "contentBlockStop",
            br#"{"contentBlockIndex":0}"#,
            &mut input,
        );
        encode_event("messageStop", br#"{"stopReason":"tool_use"}"#, &mut input);
        let out = translate(&input, &[], false).unwrap();
        let args: String = chunks(&out)
            .iter()
            .filter_map(|e| {
                e["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(args, "{}");
    }

    fn header(pairs: &[(&str, &str)]) -> ResponseHeader {
        let mut h = ResponseHeader::build(400, None).unwrap();
        for (k, v) in pairs {
            h.insert_header(k.to_string(), v.to_string()).unwrap();
        }
        h
    }

    #[test]
    fn error_mapping() {
        let e = map_error(
            429,
            &header(&[
                (
                    "x-amzn-ErrorType",
                    "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                ),
                ("retry-after", "3"),
            ]),
            br#"{"message":"Too many requests, please wait before trying again."}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (429, Some("rate_limit_exceeded"))
        );
        assert_eq!(e.retry_after, Some(3));
        let e = map_error(
            400,
            &header(&[("x-amzn-ErrorType", "ValidationException")]),
            br#"{"message":"Input is too long for requested model."}"#,
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("context_length_exceeded"))
        );
        let e = map_error(
            400,
            &header(&[]),
            br#"{"__type":"com.amazon.coral.validate#ValidationException","message":"Too many input tokens. Max input tokens: 8192"}"#,
        );
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        let e = map_error(
            403,
            &header(&[("x-amzn-ErrorType", "UnrecognizedClientException")]),
            br#"{"message":"The security token included in the request is invalid."}"#,
        );
        assert_eq!(e.status, 401);
        let e = map_error(
            403,
            &header(&[("x-amzn-ErrorType", "InvalidSignatureException")]),
            b"{}",
        );
        assert_eq!(e.status, 401);
        let e = map_error(
            424,
            &header(&[("x-amzn-ErrorType", "ModelErrorException")]),
            br#"{"message":"m"}"#,
        );
        assert_eq!(e.status, 502);
        let e = map_error(
            408,
            &header(&[("x-amzn-ErrorType", "ModelTimeoutException")]),
            b"{}",
        );
        assert_eq!(e.status, 408);
        let e = map_error(
            503,
            &header(&[("x-amzn-ErrorType", "ServiceUnavailableException")]),
            b"{}",
        );
        assert_eq!(e.status, 503);
        let e = map_error(
            404,
            &header(&[("x-amzn-ErrorType", "ResourceNotFoundException")]),
            br#"{"message":"no model"}"#,
        );
        assert_eq!(e.status, 404);
        assert!(e.message.contains("no model"));
        let e = map_error(
            403,
            &header(&[("x-amzn-ErrorType", "AccessDeniedException")]),
            b"{}",
        );
        assert_eq!(e.status, 403);
    }
}
