//! Google Gemini, both ways: Google AI Studio (`gemini/`, API key) and Vertex AI (`vertex_ai/`,
//! OAuth2 bearer token from a service account, see [`super::google_auth`]). Both speak the same
//! `generateContent` format; this module owns the OpenAI <-> Gemini translation (request,
//! whole response, `alt=sse` stream, errors) and the two embeddings flavours (AI Studio
//! `batchEmbedContents`, Vertex `predict`).
//!
//! Tool schemas are sent as `parameters` (Gemini's OpenAPI-subset schema), cleaned of the JSON
//! Schema keywords Gemini rejects (`$schema`, `additionalProperties`, `strict`, `$defs`, …) with
//! local `$ref`s inlined, rather than as `parametersJsonSchema`: `parameters` works on every
//! Gemini model on both AI Studio and Vertex v1, which is what LiteLLM users' configs rely on.
//!
//! `user` and `parallel_tool_calls` are accepted and not forwarded (Gemini has neither); `n`
//! above 1 is refused (or ignored under `drop_params`): one candidate is returned.

use super::framed::{EventTranslator, Framed};
use super::google_auth::{ServiceAccount, TokenSource, CLOUD_PLATFORM_SCOPE};
use super::openai_compat::split_origin;
use super::{
    Operation, Provider, RequestContext, StreamTranslator, TranslatedResponse, UpstreamRequest,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent as Emit};
use crate::openai::request::{
    check_supported, ChatRequest, ContentPart, EmbeddingsRequest, ImageSource, MessageContent,
    ResponseFormat, ToolChoice,
};
use crate::openai::response::{embeddings_response, ChatCompletion, FinishReason, ToolCallOut};
use crate::openai::stream::ChunkWriter;
use crate::openai::{RequestBody, Usage};
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use http::{HeaderName, HeaderValue};
use pingora_http::ResponseHeader;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

const AI_STUDIO_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";
const VERTEX_DEFAULT_LOCATION: &str = "us-central1";
/// Embeddings fields the Gemini APIs can take (`user` is accepted and not forwarded).
const EMBEDDINGS_FIELDS: &[&str] = &["model", "input", "dimensions", "encoding_format", "user"];

/// How requests are authenticated.
enum Auth {
    /// AI Studio: `x-goog-api-key`.
    ApiKey(HeaderValue),
    /// Vertex: `Authorization: Bearer` from a service account.
    Google(Arc<TokenSource>),
}

pub struct Gemini {
    name: &'static str,
    vertex: bool,
    /// `scheme://host[:port]`
    origin: String,
    /// Where a model's methods are (`…/models/{model}:generateContent` etc.).
    model_path: ModelPath,
    auth: Auth,
    /// A Vertex wildcard deployment (`vertex_ai/*`): Claude models speak Anthropic's format on
    /// Vertex, so they go through this, built once with the same token source.
    claude: Option<super::vertex::VertexClaude>,
}

/// Where a model's methods live: `{path}:{method}`.
pub(crate) enum ModelPath {
    /// The model's name appended to a resource prefix (`…/models/`).
    Prefix(String),
    /// One URL path whatever the model (an `api_base` naming the model's URL).
    Fixed(String),
}

impl ModelPath {
    /// `{model's path}:{method}`; `method` may carry a query (`streamGenerateContent?alt=sse`).
    /// The model goes in as exactly one percent-encoded path segment (see [`super::url`]); one
    /// that cannot (`..`) is the client's 400.
    pub(crate) fn method(&self, model: &str, method: &str) -> GatewayResult<String> {
        let mut path = match self {
            ModelPath::Prefix(p) => {
                let mut path = String::with_capacity(p.len() + model.len() + method.len() + 8);
                path.push_str(p);
                super::url::push_segment(&mut path, model)
                    .map_err(|e| GatewayError::invalid_param("model", format!("model: {e}")))?;
                path
            }
            ModelPath::Fixed(p) => String::with_capacity(p.len() + method.len() + 1) + p,
        };
        path.push(':');
        path.push_str(method);
        Ok(path)
    }
}

/// The model name Gemini's URLs and bodies want (`models/x` and `x` are the same model).
fn bare_model(model: &str) -> &str {
    model.trim_start_matches("models/")
}

/// Builds the provider for `gemini/` and `vertex_ai/` deployments.
pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    let path = |key: &str| format!("model_list[{}].litellm_params.{key}", dep.index);
    let model = bare_model(&dep.model);
    // Requests put their model in the path as one percent-encoded segment; this one must be one.
    super::url::check_segment(model).map_err(|e| ConfigError::new(path("model"), e))?;
    let provider = match dep.provider.as_str() {
        "gemini" => {
            let base = dep
                .params
                .api_base
                .clone()
                .unwrap_or_else(|| AI_STUDIO_BASE.to_string());
            let base = base.trim_end_matches('/');
            let (origin, base_path) = split_origin(base).ok_or_else(|| {
                ConfigError::new(
                    path("api_base"),
                    format!("\"{base}\" must be an http:// or https:// URL"),
                )
            })?;
            let key = dep
                .params
                .api_key
                .clone()
                .or_else(|| std::env::var("GEMINI_API_KEY").ok())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    ConfigError::new(
                        path("api_key"),
                        "required for gemini/ deployments (an AI Studio API key), or set GEMINI_API_KEY",
                    )
                })?;
            let mut key = HeaderValue::from_str(&key).map_err(|_| {
                ConfigError::new(
                    path("api_key"),
                    "contains characters not allowed in an HTTP header",
                )
            })?;
            key.set_sensitive(true);
            Gemini {
                name: "gemini",
                vertex: false,
                origin: origin.to_string(),
                model_path: ModelPath::Prefix(format!("{base_path}/models/")),
                auth: Auth::ApiKey(key),
                claude: None,
            }
        }
        "vertex_ai" => {
            if model.starts_with("claude") {
                return super::vertex::build_claude(dep);
            }
            let target = vertex_target(dep)?;
            // A wildcard may match Claude models too: they share this key's token source.
            let claude = match model.contains('*') {
                true => Some(super::vertex::claude_on(dep, &target)?),
                false => None,
            };
            Gemini {
                name: "vertex_ai",
                vertex: true,
                model_path: target.model_path("google"),
                origin: target.origin,
                auth: Auth::Google(target.tokens),
                claude,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Arc::new(provider)))
}

/// Where and how a Vertex AI deployment is reached.
pub(crate) struct VertexTarget {
    /// `scheme://host[:port]`
    pub origin: String,
    /// `/v1/projects/{project}/locations/{location}/publishers/`, or (`Err`) the path of an
    /// `api_base` that has one, which is the model's URL whatever the publisher.
    publishers: Result<String, String>,
    pub tokens: Arc<TokenSource>,
}

impl VertexTarget {
    /// Where a `publisher`'s models are: `…/publishers/{publisher}/models/{model}`.
    pub(crate) fn model_path(&self, publisher: &str) -> ModelPath {
        match &self.publishers {
            Ok(prefix) => ModelPath::Prefix(format!("{prefix}{publisher}/models/")),
            Err(fixed) => ModelPath::Fixed(fixed.clone()),
        }
    }
}

/// Reads a `vertex_ai/` deployment's credentials (`vertex_credentials`, else
/// `GOOGLE_APPLICATION_CREDENTIALS`), project (`vertex_project`, `VERTEXAI_PROJECT`, the key's
/// `project_id`), location (`vertex_location`, `VERTEXAI_LOCATION`, `us-central1`) and base URL.
/// An `api_base` with a path is the model's URL itself (LiteLLM's custom-proxy rule:
/// `{api_base}:{method}`); a bare host gets Vertex's resource path.
pub(crate) fn vertex_target(dep: &DeploymentConfig) -> Result<VertexTarget, ConfigError> {
    let path = |key: &str| format!("model_list[{}].litellm_params.{key}", dep.index);
    let account = ServiceAccount::from_config(dep.params.extra.get("vertex_credentials"))
        .map_err(|e| ConfigError::new(path("vertex_credentials"), e))?
        .ok_or_else(|| {
            ConfigError::new(
                path("vertex_credentials"),
                "required for vertex_ai/ deployments: a service-account key (file path, JSON string or mapping), or set GOOGLE_APPLICATION_CREDENTIALS",
            )
        })?;
    let project = dep
        .params
        .extra_str("vertex_project")
        .map(str::to_string)
        .or_else(|| std::env::var("VERTEXAI_PROJECT").ok())
        .or_else(|| account.project_id.clone())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ConfigError::new(
                path("vertex_project"),
                "required for vertex_ai/ deployments (or set VERTEXAI_PROJECT, or use a key with project_id)",
            )
        })?;
    let location = dep
        .params
        .extra_str("vertex_location")
        .map(str::to_string)
        .or_else(|| std::env::var("VERTEXAI_LOCATION").ok())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| VERTEX_DEFAULT_LOCATION.to_string());
    let base = dep.params.api_base.clone().unwrap_or_else(|| {
        if location == "global" {
            "https://aiplatform.googleapis.com".to_string()
        } else {
            format!("https://{location}-aiplatform.googleapis.com")
        }
    });
    let base = base.trim_end_matches('/');
    let (origin, base_path) = split_origin(base).ok_or_else(|| {
        ConfigError::new(
            path("api_base"),
            format!("\"{base}\" must be an http:// or https:// URL"),
        )
    })?;
    let publishers = if base_path.is_empty() {
        Ok(format!(
            "/v1/projects/{project}/locations/{location}/publishers/"
        ))
    } else {
        Err(base_path.to_string())
    };
    let tokens = TokenSource::new(account, CLOUD_PLATFORM_SCOPE)
        .map_err(|e| ConfigError::new(path("vertex_credentials"), e))?;
    Ok(VertexTarget {
        origin: origin.to_string(),
        publishers,
        tokens: Arc::new(tokens),
    })
}

impl Gemini {
    /// The Claude route of a Vertex wildcard deployment, when `model` is a Claude model.
    fn claude_for(&self, model: &str) -> Option<&super::vertex::VertexClaude> {
        self.claude
            .as_ref()
            .filter(|_| bare_model(model).starts_with("claude"))
    }
}

#[async_trait]
impl Provider for Gemini {
    fn name(&self) -> &'static str {
        self.name
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
        client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        if let Some(claude) = self.claude_for(cx.model) {
            if cx.op == Operation::Embeddings {
                return Err(GatewayError::invalid_param(
                    "model",
                    format!("The model '{}' is served by vertex_ai (Anthropic on Vertex), which does not do embeddings; send it to /v1/chat/completions instead.", cx.model),
                ));
            }
            return claude.build_request(body, cx, client).await;
        }
        let model = bare_model(cx.model);
        let mut req = match cx.op {
            Operation::Chat => {
                check_supported(body, GEMINI_CHAT_FIELDS, cx.drop_params, self.name)?;
                let chat = ChatRequest::from_body(body)?;
                let extras = Extras::from_body(body)?;
                if chat.n.is_some_and(|n| n > 1) && !cx.drop_params {
                    return Err(GatewayError::invalid_param(
                        "n",
                        format!("{} returns one choice per request; n must be 1 (or set drop_params: true).", self.name),
                    )
                    .with_code("unsupported_parameter"));
                }
                let out = chat_request_body(&chat, &extras)?;
                let method = if cx.stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                };
                let path = self.model_path.method(model, method)?;
                let mut req = UpstreamRequest::post_json(path, out);
                if cx.stream {
                    req.header(http::header::ACCEPT, "text/event-stream")?;
                }
                req
            }
            Operation::Embeddings => {
                check_supported(body, EMBEDDINGS_FIELDS, cx.drop_params, self.name)?;
                let emb = EmbeddingsRequest::from_body(body)?;
                let texts = emb.input.texts(self.name)?;
                let (path, out) = if self.vertex {
                    (
                        self.model_path.method(model, "predict")?,
                        vertex_embeddings_body(&texts, emb.dimensions),
                    )
                } else {
                    (
                        self.model_path.method(model, "batchEmbedContents")?,
                        batch_embeddings_body(&format!("models/{model}"), &texts, emb.dimensions),
                    )
                };
                UpstreamRequest::post_json(path, out)
            }
        };
        match &self.auth {
            Auth::ApiKey(key) => req
                .headers
                .push((HeaderName::from_static("x-goog-api-key"), key.clone())),
            Auth::Google(tokens) => {
                let bearer = tokens.authorization(client).await?;
                req.headers.push((http::header::AUTHORIZATION, bearer));
            }
        }
        Ok(req)
    }

    fn parse_response(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        if let Some(claude) = self.claude_for(cx.model) {
            return claude.parse_response(body, cx);
        }
        let model = bare_model(cx.model);
        match cx.op {
            Operation::Chat => parse_chat_response(self.name, model, body, cx),
            Operation::Embeddings => {
                let (vectors, usage) = if self.vertex {
                    parse_vertex_embeddings(self.name, body)?
                } else {
                    parse_batch_embeddings(self.name, body)?
                };
                Ok(TranslatedResponse {
                    body: embeddings_response(model, &vectors, cx.embeddings_base64, usage),
                    usage: Some(usage),
                })
            }
        }
    }

    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        if let Some(claude) = self.claude_for(cx.model) {
            return claude.stream_translator(cx);
        }
        Box::new(GeminiStream::new(self.name, bare_model(cx.model), cx))
    }

    fn map_error(&self, status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
        if let Some(claude) = &self.claude {
            // Either shape can come back; Claude-on-Vertex's mapping tells them apart.
            return claude.map_error(status, headers, body);
        }
        map_gemini_error(self.name, status, super::retry_after_secs(headers), body)
    }
}

// ---------------------------------------------------------------------------------------------
// Request: OpenAI chat -> GenerateContentRequest.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest<'r> {
    contents: Vec<Content<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<[FunctionDeclarations<'r>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig<'r>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'r>,
}

#[derive(Serialize)]
struct Content<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    parts: Vec<Part<'r>>,
}

/// One part; serde's external tagging gives Gemini's `{"text": …}`, `{"inlineData": {…}}`, ….
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Part<'r> {
    Text(Cow<'r, str>),
    InlineData(MediaData<'r>),
    FileData(MediaFile<'r>),
    FunctionCall(FunctionCallPart<'r>),
    FunctionResponse(FunctionResponsePart<'r>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaData<'r> {
    mime_type: &'r str,
    data: &'r str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaFile<'r> {
    mime_type: &'static str,
    file_uri: &'r str,
}

#[derive(Serialize)]
struct FunctionCallPart<'r> {
    name: &'r str,
    args: &'r RawValue,
}

#[derive(Serialize)]
struct FunctionResponsePart<'r> {
    name: &'r str,
    response: ToolResult<'r>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolResult<'r> {
    /// The tool returned a JSON object: sent as is.
    Object(&'r RawValue),
    OwnedObject(Box<RawValue>),
    /// Anything else is wrapped, as LiteLLM does.
    Wrapped {
        content: Cow<'r, str>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionDeclarations<'r> {
    function_declarations: Vec<FunctionDeclaration<'r>>,
}

#[derive(Serialize)]
struct FunctionDeclaration<'r> {
    name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig<'r> {
    function_calling_config: FunctionCallingConfig<'r>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig<'r> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'r str; 1]>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking_config: Option<&'r ThinkingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'r [Cow<'r, str>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_schema: Option<Value>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.thinking_config.is_none()
            && self.stop_sequences.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_schema.is_none()
    }
}

/// Which kind of turn a `contents[]` entry is; consecutive turns of one kind are merged (all
/// results of one round of tool calls must come back in one turn).
#[derive(PartialEq, Eq, Clone, Copy)]
enum Turn {
    User,
    Model,
    ToolResults,
}

/// The chat fields Gemini takes: the common ones, `top_k` (`topK`) and `reasoning_effort`
/// (`thinkingConfig`).
const GEMINI_CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "n",
    "stop",
    "seed",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "reasoning_effort",
];

/// Gemini-only settings read beside [`ChatRequest`].
#[derive(Default)]
struct Extras {
    top_k: Option<u64>,
    thinking: Option<ThinkingConfig>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThinkingConfig {
    thinking_budget: u64,
    include_thoughts: bool,
}

impl Extras {
    /// `reasoning_effort` as a thinking budget (LiteLLM's: `low` 1024, `medium` 2048, `high`
    /// 4096 tokens; `minimal` 128; `none` 0, which turns thinking off), thoughts included so
    /// they come back as reasoning.
    fn from_body(body: &RequestBody<'_>) -> GatewayResult<Extras> {
        let thinking = match body.typed::<Cow<'_, str>>("reasoning_effort")? {
            None => None,
            Some(effort) => {
                let budget = match effort.as_ref() {
                    "none" => 0,
                    "minimal" => 128,
                    "low" => 1024,
                    "medium" => 2048,
                    "high" => 4096,
                    other => {
                        return Err(GatewayError::invalid_param(
                            "reasoning_effort",
                            format!("Invalid value for 'reasoning_effort': \"{other}\" (none, minimal, low, medium or high)."),
                        ))
                    }
                };
                Some(ThinkingConfig {
                    thinking_budget: budget,
                    include_thoughts: budget > 0,
                })
            }
        };
        Ok(Extras {
            top_k: body.typed("top_k")?,
            thinking,
        })
    }
}

/// Builds the `generateContent` body. Every `contents[]` entry carries a role (Vertex requires it).
fn chat_request_body(req: &ChatRequest<'_>, extras: &Extras) -> GatewayResult<Vec<u8>> {
    let mut system: Vec<Part<'_>> = Vec::new();
    let mut contents_out: Vec<Content<'_>> = Vec::with_capacity(req.messages.len());
    let mut turns: Vec<Turn> = Vec::with_capacity(req.messages.len());
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m.role.as_ref() {
            "system" | "developer" => {
                if let Some(c) = &m.content {
                    let text = c.joined_text();
                    if !text.is_empty() {
                        system.push(Part::Text(text));
                    }
                }
            }
            "user" => {
                let parts = user_parts(m.content.as_ref(), i)?;
                push_turn(&mut contents_out, &mut turns, Turn::User, "user", parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                if let Some(c) = &m.content {
                    let text = c.joined_text();
                    if !text.is_empty() {
                        parts.push(Part::Text(text));
                    }
                }
                for tc in m.tool_calls.iter().flatten() {
                    call_names.insert(tc.id.as_ref(), tc.function.name.as_ref());
                    parts.push(Part::FunctionCall(FunctionCallPart {
                        name: tc.function.name.as_ref(),
                        args: arguments_object(&tc.function.arguments, i)?,
                    }));
                }
                push_turn(&mut contents_out, &mut turns, Turn::Model, "model", parts);
            }
            "tool" | "function" => {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id).copied())
                    .or(m.name.as_deref())
                    .ok_or_else(|| {
                        GatewayError::invalid_param(
                            "messages",
                            format!(
                                "messages[{i}]: tool_call_id {:?} does not match a tool call of an earlier assistant message.",
                                m.tool_call_id.as_deref().unwrap_or("")
                            ),
                        )
                    })?;
                let text = m
                    .content
                    .as_ref()
                    .map(|c| c.joined_text())
                    .unwrap_or(Cow::Borrowed(""));
                let response = tool_result(text);
                push_turn(
                    &mut contents_out,
                    &mut turns,
                    Turn::ToolResults,
                    "user",
                    vec![Part::FunctionResponse(FunctionResponsePart {
                        name,
                        response,
                    })],
                );
            }
            other => {
                return Err(GatewayError::invalid_param(
                    "messages",
                    format!("messages[{i}]: unknown role \"{other}\" (use system, developer, user, assistant or tool)."),
                ))
            }
        }
    }
    let mut system_instruction = (!system.is_empty()).then_some(Content {
        role: None,
        parts: system,
    });
    if contents_out.is_empty() {
        // Gemini needs at least one turn: a system-only prompt becomes the user turn.
        match system_instruction.take() {
            Some(mut s) => {
                s.role = Some("user");
                contents_out.push(s);
            }
            None => {
                return Err(GatewayError::invalid_param(
                    "messages",
                    "'messages' has no content to send.",
                ))
            }
        }
    }

    let tools = match &req.tools {
        Some(tools) if !tools.is_empty() => {
            let mut decls = Vec::with_capacity(tools.len());
            for t in tools {
                if t.kind != "function" {
                    return Err(GatewayError::invalid_param(
                        "tools",
                        format!(
                            "Tool type \"{}\" is not supported; use \"function\".",
                            t.kind
                        ),
                    ));
                }
                let parameters = match t.function.parameters {
                    Some(raw) => clean_tool_schema(raw, "tools")?,
                    None => None,
                };
                decls.push(FunctionDeclaration {
                    name: t.function.name.as_ref(),
                    description: t.function.description.as_deref(),
                    parameters,
                });
            }
            Some([FunctionDeclarations {
                function_declarations: decls,
            }])
        }
        _ => None,
    };
    let tool_config = req.tool_choice.as_ref().map(|c| ToolConfig {
        function_calling_config: match c {
            ToolChoice::Auto => FunctionCallingConfig {
                mode: "AUTO",
                allowed_function_names: None,
            },
            ToolChoice::None => FunctionCallingConfig {
                mode: "NONE",
                allowed_function_names: None,
            },
            ToolChoice::Required => FunctionCallingConfig {
                mode: "ANY",
                allowed_function_names: None,
            },
            ToolChoice::Function(name) => FunctionCallingConfig {
                mode: "ANY",
                allowed_function_names: Some([name.as_ref()]),
            },
        },
    });
    let (response_mime_type, response_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema { json_schema }) => (
            Some("application/json"),
            match json_schema.schema {
                Some(raw) => clean_schema_root(raw, "response_format")?,
                None => None,
            },
        ),
    };
    let generation_config = GenerationConfig {
        max_output_tokens: req.max_output_tokens(),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: extras.top_k,
        thinking_config: extras.thinking.as_ref(),
        stop_sequences: req.stop.as_deref().filter(|s| !s.is_empty()),
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        response_mime_type,
        response_schema,
    };
    let body = GenerateContentRequest {
        contents: contents_out,
        system_instruction,
        tools,
        tool_config,
        generation_config,
    };
    serde_json::to_vec(&body)
        .map_err(|e| GatewayError::internal(format!("Serializing the Gemini request failed: {e}")))
}

/// Appends a turn, merging it into the previous one when both are of the same kind.
fn push_turn<'r>(
    contents: &mut Vec<Content<'r>>,
    turns: &mut Vec<Turn>,
    turn: Turn,
    role: &'static str,
    parts: Vec<Part<'r>>,
) {
    if parts.is_empty() {
        return;
    }
    if turns.last() == Some(&turn) {
        if let Some(last) = contents.last_mut() {
            last.parts.extend(parts);
            return;
        }
    }
    turns.push(turn);
    contents.push(Content {
        role: Some(role),
        parts,
    });
}

fn user_parts<'r>(
    content: Option<&'r MessageContent<'r>>,
    i: usize,
) -> GatewayResult<Vec<Part<'r>>> {
    let Some(content) = content else {
        return Ok(Vec::new());
    };
    match content {
        MessageContent::Text(t) => Ok(vec![Part::Text(Cow::Borrowed(t.as_ref()))]),
        MessageContent::Parts(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    ContentPart::Text { text } => out.push(Part::Text(Cow::Borrowed(text.as_ref()))),
                    ContentPart::ImageUrl { image_url } => match image_url.source()? {
                        ImageSource::Base64 { media_type, data } => {
                            out.push(Part::InlineData(MediaData {
                                mime_type: media_type,
                                data,
                            }))
                        }
                        ImageSource::Url(url) => out.push(Part::FileData(MediaFile {
                            mime_type: guess_mime(url).ok_or_else(|| {
                                GatewayError::invalid_param(
                                    "messages",
                                    format!("messages[{i}]: cannot tell the media type of image URL {url:?} from its extension (Gemini needs one); use a .png/.jpg/.webp/.gif/.heic/.pdf URL or a data: URI."),
                                )
                            })?,
                            file_uri: url,
                        })),
                    },
                    ContentPart::Unsupported => {
                        return Err(GatewayError::invalid_param(
                            "messages",
                            format!("messages[{i}]: only text and image_url content parts are supported by Gemini."),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

/// The media type Gemini needs for a `fileData` URL, from the path's extension.
fn guess_mime(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

/// An assistant tool call's `arguments` (a JSON string) as the object Gemini wants.
fn arguments_object(arguments: &str, i: usize) -> GatewayResult<&RawValue> {
    let trimmed = arguments.trim();
    if trimmed.is_empty() {
        return serde_json::from_str::<&RawValue>("{}")
            .map_err(|_| GatewayError::internal("unreachable"));
    }
    match serde_json::from_str::<&RawValue>(trimmed) {
        Ok(raw) if raw.get().starts_with('{') => Ok(raw),
        _ => Err(GatewayError::invalid_param(
            "messages",
            format!("messages[{i}]: tool_calls[].function.arguments must be a JSON object encoded as a string."),
        )),
    }
}

/// A tool message's content as a `functionResponse.response` object: a JSON object is sent as
/// is, anything else wrapped as `{"content": …}`.
fn tool_result(text: Cow<'_, str>) -> ToolResult<'_> {
    if !text.trim_start().starts_with('{') {
        return ToolResult::Wrapped { content: text };
    }
    match text {
        Cow::Borrowed(s) => match serde_json::from_str::<&RawValue>(s) {
            Ok(raw) => ToolResult::Object(raw),
            Err(_) => ToolResult::Wrapped {
                content: Cow::Borrowed(s),
            },
        },
        Cow::Owned(s) => match serde_json::from_str::<Box<RawValue>>(&s) {
            Ok(raw) => ToolResult::OwnedObject(raw),
            Err(_) => ToolResult::Wrapped {
                content: Cow::Owned(s),
            },
        },
    }
}

/// Cleans a tool's parameters schema; an object schema with no properties is left out
/// (Gemini rejects `{"type":"object","properties":{}}`).
fn clean_tool_schema(raw: &RawValue, param: &str) -> GatewayResult<Option<Value>> {
    let cleaned = clean_schema_root(raw, param)?;
    Ok(cleaned.filter(|v| {
        !(v.get("type").and_then(Value::as_str) == Some("object")
            && v.get("properties")
                .and_then(Value::as_object)
                .is_none_or(|p| p.is_empty()))
    }))
}

/// Parses a JSON schema and reduces it to the OpenAPI subset Gemini's `Schema` takes.
fn clean_schema_root(raw: &RawValue, param: &str) -> GatewayResult<Option<Value>> {
    let schema: Value = serde_json::from_str(raw.get()).map_err(|e| {
        GatewayError::invalid_param(param, format!("Invalid JSON schema in '{param}': {e}."))
    })?;
    let empty = Map::new();
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    clean_schema(&schema, defs, 0, param).map(Some)
}

/// Keywords Gemini's `Schema` understands; everything else is dropped.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "items",
    "minItems",
    "maxItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "anyOf",
    "propertyOrdering",
    "default",
    "example",
];

fn clean_schema(
    v: &Value,
    defs: &Map<String, Value>,
    depth: usize,
    param: &str,
) -> GatewayResult<Value> {
    if depth > 32 {
        return Err(GatewayError::invalid_param(
            param,
            format!("The JSON schema in '{param}' nests too deeply or is recursive; Gemini needs a finite schema."),
        ));
    }
    let Some(obj) = v.as_object() else {
        return Ok(v.clone());
    };
    if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
        let name = target
            .strip_prefix("#/$defs/")
            .or_else(|| target.strip_prefix("#/definitions/"));
        let resolved = name.and_then(|n| defs.get(n)).ok_or_else(|| {
            GatewayError::invalid_param(
                param,
                format!("The JSON schema in '{param}' has a $ref {target:?} that is not a local #/$defs entry."),
            )
        })?;
        return clean_schema(resolved, defs, depth + 1, param);
    }
    let mut out = Map::new();
    for (k, val) in obj {
        match k.as_str() {
            "type" => match val {
                Value::Array(types) => {
                    let mut nullable = false;
                    let mut first = None;
                    for t in types {
                        match t.as_str() {
                            Some("null") => nullable = true,
                            Some(t) if first.is_none() => first = Some(t),
                            _ => {}
                        }
                    }
                    if let Some(t) = first {
                        out.insert("type".into(), Value::String(t.into()));
                    }
                    if nullable {
                        out.insert("nullable".into(), Value::Bool(true));
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "properties" => {
                let mut props = Map::new();
                if let Some(p) = val.as_object() {
                    for (name, s) in p {
                        props.insert(name.clone(), clean_schema(s, defs, depth + 1, param)?);
                    }
                }
                out.insert("properties".into(), Value::Object(props));
            }
            "items" => {
                out.insert("items".into(), clean_schema(val, defs, depth + 1, param)?);
            }
            "anyOf" | "oneOf" => {
                let mut alts = Vec::new();
                for s in val.as_array().into_iter().flatten() {
                    if s.get("type").and_then(Value::as_str) == Some("null") {
                        out.insert("nullable".into(), Value::Bool(true));
                        continue;
                    }
                    alts.push(clean_schema(s, defs, depth + 1, param)?);
                }
                if alts.len() == 1 {
                    if let Some(Value::Object(only)) = alts.pop() {
                        out.extend(only);
                    }
                } else if !alts.is_empty() {
                    out.insert("anyOf".into(), Value::Array(alts));
                }
            }
            "const" => {
                out.insert("enum".into(), Value::Array(vec![val.clone()]));
            }
            k if SCHEMA_KEYS.contains(&k) => {
                out.insert(k.to_string(), val.clone());
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Responses: GenerateContentResponse -> chat.completion.

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    #[serde(default, borrow)]
    candidates: Vec<Candidate<'a>>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default, borrow)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(default, borrow)]
    content: Option<CandidateContent<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct CandidateContent<'a> {
    #[serde(default, borrow)]
    parts: Vec<PartIn<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartIn<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default, borrow)]
    function_call: Option<FunctionCallIn<'a>>,
}

#[derive(Deserialize)]
struct FunctionCallIn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(default, borrow)]
    block_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
}

impl UsageMetadata {
    fn to_openai(self) -> Usage {
        Usage::new(
            self.prompt_token_count,
            self.candidates_token_count + self.thoughts_token_count,
        )
        .with_cached(self.cached_content_token_count)
        .with_reasoning(self.thoughts_token_count)
    }
}

/// Gemini's `finishReason` as OpenAI's (reference table): STOP with a function call is
/// `tool_calls`; the safety family is `content_filter`.
fn map_finish(reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match reason {
        Some("MAX_TOKENS") => FinishReason::Length,
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => FinishReason::ContentFilter,
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Tool-call ids: Gemini has none, so they are derived from the response id and the call's
/// position, unique per response and the same whether streamed or not.
fn tool_call_id(response_id: &str, index: usize) -> String {
    let stem = response_id.strip_prefix("chatcmpl-").unwrap_or(response_id);
    format!("call_{stem}_{index}")
}

/// A function call's `args` as the JSON-string `arguments` OpenAI clients expect.
fn arguments_text(args: Option<&RawValue>) -> &str {
    args.map(RawValue::get).unwrap_or("{}")
}

fn not_json(provider: &str, what: &str, e: serde_json::Error) -> GatewayError {
    GatewayError::bad_gateway(format!(
        "{provider}: the upstream sent {what} that is not a GenerateContentResponse ({e})."
    ))
}

fn parse_chat_response(
    provider: &'static str,
    model: &str,
    body: &[u8],
    cx: &RequestContext<'_>,
) -> GatewayResult<TranslatedResponse> {
    let resp: GenerateContentResponse<'_> =
        serde_json::from_slice(body).map_err(|e| not_json(provider, "a 2xx body", e))?;
    if let Some(err) = resp.error {
        return Err(map_gemini_error(provider, 500, None, err.get().as_bytes()));
    }
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    let mut finish = None;
    if let Some(c) = resp.candidates.first() {
        for part in c.content.iter().flat_map(|c| &c.parts) {
            if let Some(call) = &part.function_call {
                tool_calls.push(ToolCallOut::new(
                    tool_call_id(cx.response_id, tool_calls.len()),
                    call.name.to_string(),
                    arguments_text(call.args).to_string(),
                ));
            } else if let Some(t) = &part.text {
                if part.thought != Some(true) {
                    text.get_or_insert_with(String::new).push_str(t);
                }
            }
        }
        finish = Some(map_finish(
            c.finish_reason.as_deref(),
            !tool_calls.is_empty(),
        ));
    }
    let blocked = resp
        .prompt_feedback
        .as_ref()
        .is_some_and(|f| f.block_reason.is_some());
    let finish = match finish {
        Some(f) => f,
        None if blocked => FinishReason::ContentFilter,
        None => {
            return Err(GatewayError::bad_gateway(format!(
                "{provider}: the upstream answered without any candidate."
            )))
        }
    };
    if text.is_none() && tool_calls.is_empty() {
        text = Some(String::new());
    }
    let usage = resp.usage_metadata.unwrap_or_default().to_openai();
    let body = ChatCompletion::single(
        cx.response_id,
        cx.created,
        model,
        text,
        tool_calls,
        finish,
        usage,
    )
    .to_bytes();
    Ok(TranslatedResponse {
        body,
        usage: Some(usage),
    })
}

// ---------------------------------------------------------------------------------------------
// Streaming: `alt=sse` partial GenerateContentResponses -> chat.completion.chunk.

struct GeminiStream {
    provider: &'static str,
    response_id: String,
    tool_calls: usize,
    finish_reason: Option<String>,
    blocked: bool,
    usage: Option<Usage>,
    events: usize,
}

impl GeminiStream {
    fn new(
        provider: &'static str,
        model: &str,
        cx: &RequestContext<'_>,
    ) -> Framed<SseDecoder, GeminiStream> {
        Framed::new(
            GeminiStream {
                provider,
                response_id: cx.response_id.to_string(),
                tool_calls: 0,
                finish_reason: None,
                blocked: false,
                usage: None,
                events: 0,
            },
            ChunkWriter::new(cx.response_id, cx.created, model, cx.include_usage),
        )
    }

    fn translate(&mut self, ev: SseEvent<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        self.events += 1;
        let resp: GenerateContentResponse<'_> =
            serde_json::from_str(data).map_err(|e| not_json(self.provider, "a stream event", e))?;
        if let Some(err) = resp.error {
            return Err(map_gemini_error(
                self.provider,
                500,
                None,
                err.get().as_bytes(),
            ));
        }
        if let Some(c) = resp.candidates.first() {
            for part in c.content.iter().flat_map(|c| &c.parts) {
                if let Some(call) = &part.function_call {
                    let index = self.tool_calls;
                    self.tool_calls += 1;
                    let id = tool_call_id(&self.response_id, index);
                    sink.event(Emit::ToolCallStart {
                        index,
                        id: &id,
                        name: &call.name,
                    });
                    sink.event(Emit::ToolCallArgs {
                        index,
                        fragment: arguments_text(call.args),
                    });
                } else if let Some(t) = &part.text {
                    if part.thought == Some(true) {
                        sink.event(Emit::Reasoning(t));
                    } else {
                        sink.event(Emit::Text(t));
                    }
                }
            }
            if let Some(r) = &c.finish_reason {
                self.finish_reason = Some(r.to_string());
            }
        }
        if resp
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some())
        {
            self.blocked = true;
        }
        if let Some(u) = resp.usage_metadata {
            self.usage = Some(u.to_openai());
        }
        Ok(())
    }
}

impl EventTranslator<SseDecoder> for GeminiStream {
    fn on_event(&mut self, event: SseEvent<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.translate(event, sink)
    }

    fn on_end(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
        let reason = match (&self.finish_reason, self.blocked) {
            (Some(r), _) => map_finish(Some(r), self.tool_calls > 0),
            (None, true) => FinishReason::ContentFilter,
            (None, false) => {
                return Err(GatewayError::bad_gateway(format!(
                    "{}: the upstream stream ended before a finishReason{}.",
                    self.provider,
                    if self.events == 0 {
                        " (it was empty)"
                    } else {
                        ""
                    }
                )))
            }
        };
        if let Some(u) = self.usage {
            sink.event(Emit::Usage(u));
        }
        sink.event(Emit::Finish(reason));
        sink.event(Emit::Done);
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

// ---------------------------------------------------------------------------------------------
// Embeddings.

fn batch_embeddings_body(resource: &str, texts: &[&str], dimensions: Option<u32>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'r> {
        requests: Vec<EmbedRequest<'r>>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct EmbedRequest<'r> {
        model: &'r str,
        content: TextContent<'r>,
        #[serde(skip_serializing_if = "Option::is_none")]
        output_dimensionality: Option<u32>,
    }
    #[derive(Serialize)]
    struct TextContent<'r> {
        parts: [TextPart<'r>; 1],
    }
    #[derive(Serialize)]
    struct TextPart<'r> {
        text: &'r str,
    }
    let body = Body {
        requests: texts
            .iter()
            .map(|t| EmbedRequest {
                model: resource,
                content: TextContent {
                    parts: [TextPart { text: t }],
                },
                output_dimensionality: dimensions,
            })
            .collect(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

fn vertex_embeddings_body(texts: &[&str], dimensions: Option<u32>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'r> {
        instances: Vec<Instance<'r>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        parameters: Option<Parameters>,
    }
    #[derive(Serialize)]
    struct Instance<'r> {
        content: &'r str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Parameters {
        output_dimensionality: u32,
    }
    let body = Body {
        instances: texts.iter().map(|t| Instance { content: t }).collect(),
        parameters: dimensions.map(|d| Parameters {
            output_dimensionality: d,
        }),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Deserialize)]
struct EmbeddingValues {
    values: Vec<f32>,
}

fn parse_batch_embeddings(provider: &str, body: &[u8]) -> GatewayResult<(Vec<Vec<f32>>, Usage)> {
    #[derive(Deserialize)]
    struct Resp {
        embeddings: Vec<EmbeddingValues>,
    }
    let resp: Resp = serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_gateway(format!(
            "{provider}: the upstream answered batchEmbedContents with an unexpected body ({e})."
        ))
    })?;
    Ok((
        resp.embeddings.into_iter().map(|e| e.values).collect(),
        Usage::new(0, 0),
    ))
}

fn parse_vertex_embeddings(provider: &str, body: &[u8]) -> GatewayResult<(Vec<Vec<f32>>, Usage)> {
    #[derive(Deserialize)]
    struct Resp {
        predictions: Vec<Prediction>,
    }
    #[derive(Deserialize)]
    struct Prediction {
        embeddings: VertexEmbedding,
    }
    #[derive(Deserialize)]
    struct VertexEmbedding {
        values: Vec<f32>,
        #[serde(default)]
        statistics: Option<Statistics>,
    }
    #[derive(Deserialize)]
    struct Statistics {
        #[serde(default)]
        token_count: f64,
    }
    let resp: Resp = serde_json::from_slice(body).map_err(|e| {
        GatewayError::bad_gateway(format!(
            "{provider}: the upstream answered predict with an unexpected body ({e})."
        ))
    })?;
    let mut tokens = 0u64;
    let vectors = resp
        .predictions
        .into_iter()
        .map(|p| {
            tokens += p
                .embeddings
                .statistics
                .map(|s| s.token_count.max(0.0) as u64)
                .unwrap_or(0);
            p.embeddings.values
        })
        .collect();
    Ok((vectors, Usage::new(tokens, 0)))
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Maps a Google API error (`{"error":{"code","message","status","details"}}`, possibly inside a
/// one-element array) to an OpenAI error: RESOURCE_EXHAUSTED is a 429 keeping the retry delay,
/// an invalid API key is a 401 even though Google says 400, token-limit messages are
/// `context_length_exceeded`.
pub fn map_gemini_error(
    provider: &str,
    http_status: u16,
    retry_after: Option<u64>,
    body: &[u8],
) -> GatewayError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let parsed = match parsed {
        Some(Value::Array(mut a)) if !a.is_empty() => Some(a.swap_remove(0)),
        other => other,
    };
    let err = parsed
        .as_ref()
        .map(|v| v.get("error").unwrap_or(v))
        .filter(|e| e.is_object());
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned());
    let status_name = err
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let code = err
        .and_then(|e| e.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c));
    let details = err.and_then(|e| e.get("details")).and_then(Value::as_array);
    let reason_is = |r: &str| {
        details.is_some_and(|d| {
            d.iter()
                .any(|x| x.get("reason").and_then(Value::as_str) == Some(r))
        })
    };
    let retry_delay = details.and_then(|d| {
        d.iter().find_map(|x| {
            x.get("retryDelay")
                .and_then(Value::as_str)
                .and_then(|s| s.strip_suffix('s'))
                .and_then(|s| s.parse::<f64>().ok())
                .and_then(super::clamp_retry_secs)
        })
    });
    let status = match status_name {
        "RESOURCE_EXHAUSTED" => 429,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        _ => code.unwrap_or(http_status),
    };
    let text = format!("{provider}: {message}");
    let lower = message.to_ascii_lowercase();
    let mut out =
        if status == 400 && (reason_is("API_KEY_INVALID") || lower.contains("api key not valid")) {
            GatewayError::new(ErrorKind::Authentication, text).with_code("invalid_api_key")
        } else {
            GatewayError::from_upstream(status, text)
        };
    if status == 400
        && (super::is_context_length_message(&lower)
            || lower.contains("input token count")
            || lower.contains("maximum number of tokens")
            || lower.contains("exceeds the maximum"))
    {
        out.kind = ErrorKind::ContextLengthExceeded;
        out.code = Some("context_length_exceeded".into());
    } else if out.code.is_none() && !status_name.is_empty() {
        out.code = Some(status_name.to_ascii_lowercase());
    }
    if matches!(status, 429 | 503) {
        out.retry_after = retry_after.or(retry_delay);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use serde_json::json;

    fn cx(op: Operation, stream: bool, include_usage: bool) -> RequestContext<'static> {
        RequestContext {
            op,
            model: "gemini-2.0-flash",
            stream,
            include_usage,
            response_id: "chatcmpl-abc",
            created: 1_700_000_000,
            drop_params: false,
            embeddings_base64: false,
        }
    }

    fn request_json(body: Value) -> Value {
        let bytes = body.to_string();
        let parsed = RequestBody::parse(bytes.as_bytes()).unwrap();
        let req = ChatRequest::from_body(&parsed).unwrap();
        let extras = Extras::from_body(&parsed).unwrap();
        serde_json::from_slice(&chat_request_body(&req, &extras).unwrap()).unwrap()
    }

    #[test]
    fn top_k_and_reasoning_effort_become_top_k_and_thinking_config() {
        let out = request_json(
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}],
            "top_k": 40, "reasoning_effort": "medium"}),
        );
        assert_eq!(out["generationConfig"]["topK"], 40, "{out}");
        assert_eq!(
            out["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 2048, "includeThoughts": true})
        );
        let out = request_json(
            json!({"model": "g", "messages": [{"role": "user", "content": "hi"}],
            "reasoning_effort": "none"}),
        );
        assert_eq!(
            out["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 0, "includeThoughts": false})
        );
    }

    #[test]
    fn request_golden() {
        let got = request_json(json!({
            "model": "g",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image, and the weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.JPG?s=1"}}
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "t2", "type": "function", "function": {"name": "time", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "t1", "content": "{\"temp\":21}"},
                {"role": "tool", "tool_call_id": "t2", "content": "noon"},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
                "parameters": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                    "additionalProperties": false, "strict": true,
                    "properties": {"city": {"type": ["string", "null"], "description": "City"},
                                   "unit": {"$ref": "#/$defs/unit"}},
                    "required": ["city"], "$defs": {"unit": {"enum": ["c", "f"], "type": "string"}}}}},
                {"type": "function", "function": {"name": "time", "parameters": {"type": "object", "properties": {}}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "max_completion_tokens": 100, "max_tokens": 5, "temperature": 0.5, "top_p": 0.9,
            "stop": ["END"], "seed": 7, "user": "u1",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema":
                {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false}}}
        }));
        let want = json!({
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in this image, and the weather?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                    {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://x.test/cat.JPG?s=1"}}
                ]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "time", "response": {"content": "noon"}}}
                ]},
                {"role": "user", "parts": [{"text": "Thanks"}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use tools."}]},
            "tools": [{"functionDeclarations": [
                {"name": "weather", "description": "Weather", "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "nullable": true, "description": "City"},
                                   "unit": {"enum": ["c", "f"], "type": "string"}},
                    "required": ["city"]}},
                {"name": "time"}
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}},
            "generationConfig": {"maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9,
                "stopSequences": ["END"], "seed": 7, "responseMimeType": "application/json",
                "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}}}
        });
        assert_eq!(got, want);
    }

    #[test]
    fn tool_choice_modes_and_json_object() {
        for (choice, mode) in [("auto", "AUTO"), ("none", "NONE"), ("required", "ANY")] {
            let got = request_json(
                json!({"model": "g", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice,
                "response_format": {"type": "json_object"}}),
            );
            assert_eq!(
                got["toolConfig"]["functionCallingConfig"],
                json!({"mode": mode})
            );
            assert_eq!(
                got["generationConfig"],
                json!({"responseMimeType": "application/json"})
            );
        }
        // A system-only prompt still has a turn.
        let got =
            request_json(json!({"model": "g", "messages": [{"role": "system", "content": "x"}]}));
        assert_eq!(
            got["contents"],
            json!([{"role": "user", "parts": [{"text": "x"}]}])
        );
        assert!(got.get("generationConfig").is_none());
    }

    #[test]
    fn bad_requests_are_400s() {
        let cases = [
            json!({"model": "g", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
            json!({"model": "g", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/image"}}]}]}),
            json!({"model": "g", "messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}),
            json!({"model": "g", "messages": [{"role": "wizard", "content": "x"}]}),
            json!({"model": "g", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
        ];
        for body in cases {
            let bytes = body.to_string();
            let parsed = RequestBody::parse(bytes.as_bytes()).unwrap();
            let req = ChatRequest::from_body(&parsed).unwrap();
            let err = chat_request_body(&req, &Extras::default()).expect_err("must be refused");
            assert_eq!(err.status, 400, "{body}");
            assert_eq!(err.param.as_deref(), Some("messages"));
        }
    }

    const RESPONSE: &str = r#"{"candidates":[{"content":{"role":"model","parts":[
        {"text":"thinking...","thought":true},{"text":"Let me "},{"text":"check."},
        {"functionCall":{"name":"weather","args":{"city":"Paris"}}},
        {"functionCall":{"name":"time","args":{}}}]},"finishReason":"STOP","index":0}],
        "usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":7,"thoughtsTokenCount":3,
        "cachedContentTokenCount":4,"totalTokenCount":21},"modelVersion":"gemini-2.5","responseId":"r1"}"#;

    #[test]
    fn response_golden() {
        let out = parse_chat_response(
            "gemini",
            "gemini-2.5",
            RESPONSE.as_bytes(),
            &cx(Operation::Chat, false, false),
        )
        .unwrap();
        let got: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            got,
            json!({"id": "chatcmpl-abc", "object": "chat.completion", "created": 1_700_000_000u64,
                "model": "gemini-2.5", "choices": [{"index": 0, "message": {"role": "assistant",
                "content": "Let me check.", "tool_calls": [
                    {"id": "call_abc_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_abc_1", "type": "function", "function": {"name": "time", "arguments": "{}"}}],
                "refusal": null}, "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 10, "total_tokens": 21,
                    "prompt_tokens_details": {"cached_tokens": 4},
                    "completion_tokens_details": {"reasoning_tokens": 3}}})
        );
    }

    #[test]
    fn finish_reasons_and_blocks() {
        assert_eq!(map_finish(Some("STOP"), false), FinishReason::Stop);
        assert_eq!(map_finish(Some("MAX_TOKENS"), true), FinishReason::Length);
        assert_eq!(
            map_finish(Some("SAFETY"), false),
            FinishReason::ContentFilter
        );
        assert_eq!(
            map_finish(Some("PROHIBITED_CONTENT"), false),
            FinishReason::ContentFilter
        );
        assert_eq!(map_finish(Some("OTHER"), false), FinishReason::Stop);
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#;
        let out = parse_chat_response("gemini", "m", blocked, &cx(Operation::Chat, false, false))
            .unwrap();
        let got: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(got["choices"][0]["finish_reason"], "content_filter");
        for bad in [&b"not json"[..], b"{}", b"[]"] {
            let err = parse_chat_response("gemini", "m", bad, &cx(Operation::Chat, false, false))
                .err()
                .unwrap();
            assert_eq!(err.status, 502);
        }
    }

    const STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hel\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"totalTokenCount\": 9}}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"lo \\u00e9\\n\"}],\"role\": \"model\"},\"index\": 0}]}\r\n\r\n\
data: {\"candidates\": [{\"content\": {\"parts\": [{\"functionCall\": {\"name\": \"weather\",\"args\": {\"city\": \"Paris\"}}}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 5,\"totalTokenCount\": 14}}\r\n\r\n";

    fn run_stream(
        input: &[u8],
        splits: &[usize],
        include_usage: bool,
    ) -> GatewayResult<(String, Option<Usage>)> {
        let c = cx(Operation::Chat, true, include_usage);
        let mut t = GeminiStream::new("gemini", "gemini-2.5", &c);
        let mut out = BytesMut::new();
        let mut start = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            t.feed(&input[start..s], &mut out)?;
            start = s;
        }
        t.finish(&mut out)?;
        Ok((String::from_utf8(out.to_vec()).unwrap(), t.usage()))
    }

    fn chunks(out: &str) -> Vec<Value> {
        assert!(out.ends_with("data: [DONE]\n\n"), "{out}");
        out.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn stream_golden_and_identical_at_every_split() {
        let (whole, usage) = run_stream(STREAM.as_bytes(), &[], true).unwrap();
        assert_eq!(usage, Some(Usage::new(9, 5)));
        let ev = chunks(&whole);
        let deltas: Vec<&Value> = ev.iter().map(|e| &e["choices"][0]["delta"]).collect();
        assert_eq!(deltas[0], &json!({"role": "assistant", "content": "Hel"}));
        assert_eq!(deltas[1], &json!({"content": "lo é\n"}));
        assert_eq!(
            deltas[2],
            &json!({"tool_calls": [{"index": 0, "id": "call_abc_0", "type": "function",
                "function": {"name": "weather", "arguments": ""}}]})
        );
        assert_eq!(
            deltas[3],
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Paris\"}"}}]})
        );
        assert_eq!(ev[4]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev[5]["choices"], json!([]));
        assert_eq!(ev[5]["usage"]["total_tokens"], 14);
        assert_eq!(ev.len(), 6);
        for i in 0..=STREAM.len() {
            let (split, _) = run_stream(STREAM.as_bytes(), &[i], true).unwrap();
            assert_eq!(split, whole, "split at {i}");
        }
        let bytes: Vec<usize> = (1..STREAM.len()).collect();
        assert_eq!(
            run_stream(STREAM.as_bytes(), &bytes, true).unwrap().0,
            whole
        );
        // Without include_usage: no usage chunk.
        let (plain, _) = run_stream(STREAM.as_bytes(), &[], false).unwrap();
        assert_eq!(chunks(&plain).len(), 5);
    }

    #[test]
    fn stream_failures() {
        // Ends without finishReason: truncated.
        let cut = &STREAM[..STREAM.rfind("data:").unwrap()];
        assert_eq!(
            run_stream(cut.as_bytes(), &[], false).unwrap_err().status,
            502
        );
        assert_eq!(run_stream(b"", &[], false).unwrap_err().status, 502);
        // An error event mid-stream ends it with the mapped error.
        let err = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}]}\n\ndata: {\"error\":{\"code\":429,\"message\":\"Quota\",\"status\":\"RESOURCE_EXHAUSTED\"}}\n\n";
        assert_eq!(
            run_stream(err.as_bytes(), &[], false).unwrap_err().status,
            429
        );
        // The last event may end with the body, without a blank line.
        let last = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"finishReason\":\"MAX_TOKENS\"}]}";
        let (out, _) = run_stream(last.as_bytes(), &[], false).unwrap();
        assert_eq!(chunks(&out)[1]["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn errors_map_to_openai() {
        let e = map_gemini_error("gemini", 429, None, br#"{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"33.5s"}]}}"#);
        assert_eq!(
            (e.status, e.code.as_deref(), e.retry_after),
            (429, Some("rate_limit_exceeded"), Some(34))
        );
        let e = map_gemini_error(
            "gemini",
            429,
            Some(5),
            br#"{"error":{"code":429,"message":"q","status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(e.retry_after, Some(5));
        // A hostile retryDelay is clamped (an hour at most) or ignored, never overflows.
        for (delay, want) in [
            ("1e30s", Some(super::super::MAX_RETRY_AFTER_SECS)),
            ("infs", Some(super::super::MAX_RETRY_AFTER_SECS)),
            ("-5s", None),
            ("NaNs", None),
        ] {
            let body = format!(
                r#"{{"error":{{"code":429,"message":"q","status":"RESOURCE_EXHAUSTED","details":[{{"retryDelay":"{delay}"}}]}}}}"#
            );
            let e = map_gemini_error("gemini", 429, None, body.as_bytes());
            assert_eq!(e.retry_after, want, "{delay}");
        }
        let e = map_gemini_error("gemini", 400, None, br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#);
        assert_eq!((e.status, e.kind), (401, ErrorKind::Authentication));
        let e = map_gemini_error("gemini", 400, None, br#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#);
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("context_length_exceeded"))
        );
        let e = map_gemini_error("vertex_ai", 401, None, br#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#);
        assert_eq!(e.status, 401);
        let e = map_gemini_error("gemini", 503, None, br#"[{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}]"#);
        assert_eq!(e.status, 503);
        assert!(e.message.contains("overloaded"));
        let e = map_gemini_error("gemini", 504, None, b"<html>gateway</html>");
        assert_eq!(e.status, 504);
        let e = map_gemini_error("gemini", 400, None, br#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#);
        assert_eq!(
            (e.status, e.code.as_deref()),
            (400, Some("invalid_argument"))
        );
    }

    #[test]
    fn embeddings_both_flavours() {
        let body = batch_embeddings_body("models/text-embedding-004", &["a", "b"], Some(8));
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"requests": [
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}]})
        );
        let body = vertex_embeddings_body(&["a"], None);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap(),
            json!({"instances": [{"content": "a"}]})
        );
        let body = vertex_embeddings_body(&["a"], Some(4));
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["parameters"],
            json!({"outputDimensionality": 4})
        );
        let (v, u) = parse_batch_embeddings(
            "gemini",
            br#"{"embeddings":[{"values":[0.5,1]},{"values":[2]}]}"#,
        )
        .unwrap();
        assert_eq!((v, u.prompt_tokens), (vec![vec![0.5, 1.0], vec![2.0]], 0));
        let (v, u) = parse_vertex_embeddings("vertex_ai", br#"{"predictions":[{"embeddings":{"values":[0.25],"statistics":{"token_count":3,"truncated":false}}},{"embeddings":{"values":[1],"statistics":{"token_count":2.0}}}]}"#).unwrap();
        assert_eq!((v, u.prompt_tokens), (vec![vec![0.25], vec![1.0]], 5));
        assert_eq!(
            parse_batch_embeddings("gemini", b"{}").unwrap_err().status,
            502
        );
    }

    #[test]
    fn mime_guesses() {
        assert_eq!(guess_mime("https://a/b.webp#x"), Some("image/webp"));
        assert_eq!(guess_mime("https://a/b.pdf"), Some("application/pdf"));
        assert_eq!(guess_mime("https://a/b"), None);
        assert_eq!(guess_mime("https://a/b.exe"), None);
    }

    #[test]
    fn recursive_schema_is_refused() {
        let raw: Box<RawValue> = serde_json::from_str(r##"{"type":"object","properties":{"n":{"$ref":"#/$defs/node"}},"$defs":{"node":{"type":"object","properties":{"next":{"$ref":"#/$defs/node"}}}}}"##).unwrap();
        assert_eq!(clean_tool_schema(&raw, "tools").unwrap_err().status, 400);
    }

    fn build_yaml(params: &str) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
        let yaml = format!("model_list:\n  - model_name: m\n    litellm_params:\n{params}");
        let config = crate::config::litellm::parse(&yaml).expect("valid YAML config");
        build(&config.deployments[0])
    }

    fn key_json(project: Option<&str>) -> String {
        let mut v: Value = serde_json::json!({
            "type": "service_account",
            "private_key_id": "k",
            "private_key": include_str!("../../tests/fixtures/vertex_test_key.pem"),
            "client_email": "a@b.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        if let Some(p) = project {
            v["project_id"] = p.into();
        }
        v.to_string()
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |params: String| build_yaml(&params).err().expect("must be refused").path;
        assert_eq!(
            err("      model: vertex_ai/gemini-2.5-pro\n      vertex_project: p\n      vertex_credentials: '{not json'\n".into()),
            "model_list[0].litellm_params.vertex_credentials"
        );
        let bad_key = key_json(Some("p")).replace("MII", "XXX");
        assert_eq!(
            err(format!(
                "      model: vertex_ai/gemini-2.5-pro\n      vertex_credentials: {bad_key}\n"
            )),
            "model_list[0].litellm_params.vertex_credentials"
        );
        if std::env::var_os("VERTEXAI_PROJECT").is_none() {
            assert_eq!(
                err(format!(
                    "      model: vertex_ai/gemini-2.5-pro\n      vertex_credentials: {}\n",
                    key_json(None)
                )),
                "model_list[0].litellm_params.vertex_project"
            );
        }
        if std::env::var_os("GEMINI_API_KEY").is_none() {
            assert_eq!(
                err("      model: gemini/gemini-2.0-flash\n".into()),
                "model_list[0].litellm_params.api_key"
            );
        }
        assert_eq!(
            err(
                "      model: gemini/gemini-2.0-flash\n      api_key: k\n      api_base: ftp://x\n"
                    .into()
            ),
            "model_list[0].litellm_params.api_base"
        );
    }

    #[test]
    fn vertex_hosts_follow_the_location() {
        let sa = key_json(Some("proj"));
        let p = build_yaml(&format!(
            "      model: vertex_ai/gemini-2.5-pro\n      vertex_credentials: {sa}\n"
        ))
        .unwrap()
        .unwrap();
        if std::env::var_os("VERTEXAI_LOCATION").is_none() {
            assert_eq!(
                p.base_url(),
                "https://us-central1-aiplatform.googleapis.com"
            );
        }
        let p = build_yaml(&format!("      model: vertex_ai/gemini-2.5-pro\n      vertex_location: global\n      vertex_credentials: {sa}\n"))
            .unwrap()
            .unwrap();
        assert_eq!(p.base_url(), "https://aiplatform.googleapis.com");
        assert!(p.supports(Operation::Embeddings));
        let claude = build_yaml(&format!("      model: vertex_ai/claude-sonnet-4-5\n      vertex_location: us-east5\n      vertex_credentials: {sa}\n"))
            .unwrap()
            .unwrap();
        assert_eq!(
            claude.base_url(),
            "https://us-east5-aiplatform.googleapis.com"
        );
        assert!(!claude.supports(Operation::Embeddings));
    }

    #[test]
    fn vertex_api_base_with_a_path_is_the_model_url() {
        let sa = key_json(Some("proj"));
        let yaml = |api_base: &str| {
            format!("model_list:\n  - model_name: m\n    litellm_params:\n      model: vertex_ai/gemini-2.5-pro\n      vertex_location: europe-west4\n      api_base: {api_base}\n      vertex_credentials: {sa}\n")
        };
        let config = crate::config::litellm::parse(&yaml("https://proxy.test/")).unwrap();
        let t = vertex_target(&config.deployments[0]).unwrap();
        assert_eq!(t.origin, "https://proxy.test");
        assert_eq!(
            t.model_path("google")
                .method("gemini-2.5-pro", "generateContent")
                .unwrap(),
            "/v1/projects/proj/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
        );
        let config =
            crate::config::litellm::parse(&yaml("https://proxy.test/vertex/models/pro")).unwrap();
        let t = vertex_target(&config.deployments[0]).unwrap();
        assert_eq!(
            t.model_path("anthropic")
                .method("claude-x", "rawPredict")
                .unwrap(),
            "/vertex/models/pro:rawPredict"
        );
    }
    #[test]
    fn stream_events_carry_reasoning_tool_ids_and_cached_usage() {
        use crate::events::{EventLog, RecordedEvent as E};
        let input = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"plan\",\"thought\":true},{\"text\":\"Hi\"}]}}]}\n\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{}}}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":9,\"candidatesTokenCount\":2,\"cachedContentTokenCount\":4}}\n\n";
        let c = cx(Operation::Chat, true, false);
        let mut t = GeminiStream::new("gemini", "gemini-2.5", &c);
        let mut log = EventLog::default();
        t.feed_events(input.as_bytes(), &mut log).unwrap();
        t.finish_events(&mut log).unwrap();
        assert_eq!(
            log.events,
            vec![
                E::Reasoning("plan".into()),
                E::Text("Hi".into()),
                E::ToolCallStart {
                    index: 0,
                    id: "call_abc_0".into(),
                    name: "f".into()
                },
                E::ToolCallArgs {
                    index: 0,
                    fragment: "{}".into()
                },
                E::Usage(Usage::new(9, 2).with_cached(4)),
                E::Finish(FinishReason::ToolCalls),
                E::Done,
            ]
        );
    }
}
