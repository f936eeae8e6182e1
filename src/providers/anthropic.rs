//! Anthropic Messages API (`anthropic/` deployments): the OpenAI Chat Completions request
//! translated into a `POST /v1/messages` body, the Messages response and its `event:`-named SSE
//! stream translated back, and Anthropic's error bodies mapped to OpenAI errors.
//!
//! The translation is usable without an [`Anthropic`] instance, so Claude on Vertex AI
//! (`rawPredict` / `streamRawPredict`, same body and response formats) can reuse it:
//! - [`messages_body`]: the request body. `model: None` leaves the `model` field out (Vertex
//!   names the model in the URL); `anthropic_version_in_body: Some("vertex-2023-10-16")` adds
//!   the `anthropic_version` field Vertex wants instead of the header.
//! - [`parse_messages_response`]: a whole Messages response into an OpenAI `chat.completion`.
//! - [`MessagesStream`]: a [`StreamTranslator`] from the Messages SSE stream to OpenAI chunks.
//! - [`map_anthropic_error`]: a non-2xx status and `{"type":"error","error":{…}}` body into a
//!   [`GatewayError`] (529 → 503, "prompt is too long" → 400 `context_length_exceeded`, …).
//!
//! `response_format` (`json_object`, `json_schema`): the Messages API has no JSON mode, so we do
//! what LiteLLM does: a tool named [`JSON_TOOL_NAME`] whose `input_schema` is the requested
//! schema is added and forced, and its `tool_use` input comes back as the message content (with
//! finish_reason `stop`), streamed as content deltas. The name is reserved: a client tool with
//! that name is a 400. `response_format` together with client `tools` cannot be expressed
//! (forcing the JSON tool would disable the client's tools), so it is a 400, or dropped under
//! `drop_params`.

use super::framed::{EventTranslator, Framed};
use super::openai_compat::split_origin;
use super::{
    retry_after_secs, Provider, RequestContext, StreamTranslator, TranslatedResponse,
    UpstreamRequest,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent as Emit};
use crate::openai::request::{
    check_supported, ChatMessage, ContentPart, ImageSource, MessageContent, ResponseFormat,
    ToolChoice,
};
use crate::openai::response::{ChatCompletion, ToolCallOut};
use crate::openai::{ChatRequest, ChunkWriter, FinishReason, RequestBody, Usage};
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use http::HeaderName;
use pingora_http::ResponseHeader;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

const PROVIDER: &str = "anthropic";
const DEFAULT_API_BASE: &str = "https://api.anthropic.com";
/// The `anthropic-version` header value the Messages API requires.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// `max_tokens` when neither the request, `litellm_params.max_tokens` nor `model_info` gives one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The forced tool that carries `response_format` output (LiteLLM's name for it).
pub const JSON_TOOL_NAME: &str = "json_tool_call";
/// The JSON tool's schema for `json_object` (and `json_schema` without a schema): any object.
const ANY_OBJECT_SCHEMA: &str = r#"{"type":"object","additionalProperties":true,"properties":{}}"#;

/// The OpenAI fields the Messages API can take. `n` is last: it is accepted only as 1, so a
/// request with another `n` is checked against the list without it.
const SUPPORTED: &[&str] = &[
    "model",
    "messages",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "thinking",
    "reasoning_effort",
    "n",
];

/// One `anthropic/` deployment.
pub struct Anthropic {
    /// `scheme://host[:port]`
    origin: String,
    /// `/v1/messages` under the base URL's path.
    path: String,
    api_key: Option<String>,
    default_max_tokens: u64,
}

/// Builds the provider if `dep.provider` is `anthropic`.
pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    if dep.provider != PROVIDER {
        return Ok(None);
    }
    let key_path = |key: &str| format!("model_list[{}].litellm_params.{key}", dep.index);
    let base = dep
        .params
        .api_base
        .clone()
        .or_else(|| std::env::var("ANTHROPIC_API_BASE").ok())
        .or_else(|| std::env::var("ANTHROPIC_BASE_URL").ok())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| DEFAULT_API_BASE.to_string());
    let base = base.trim_end_matches('/');
    let (origin, base_path) = split_origin(base).ok_or_else(|| {
        ConfigError::new(
            key_path("api_base"),
            format!("\"{base}\" must be an http:// or https:// URL"),
        )
    })?;
    let api_key = dep
        .params
        .api_key
        .clone()
        .or_else(|| std::env::var("ANTHROPIC_API_KEY").ok())
        .filter(|k| !k.is_empty());
    if let Some(k) = &api_key {
        http::HeaderValue::from_str(k).map_err(|_| {
            ConfigError::new(
                key_path("api_key"),
                "contains characters not allowed in an HTTP header",
            )
        })?;
    }
    let default_max_tokens = match dep.params.extra.get("max_tokens") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ConfigError::new(key_path("max_tokens"), "must be a positive integer")
                })?,
        ),
    }
    .or(dep.model_info.max_output_tokens)
    .or(dep.model_info.max_tokens)
    .unwrap_or(DEFAULT_MAX_TOKENS);
    Ok(Some(Arc::new(Anthropic {
        origin: origin.to_string(),
        path: messages_path(base_path),
        api_key,
        default_max_tokens,
    })))
}

/// The Messages route under a base path: LiteLLM's api_base has no `/v1`, but one that already
/// ends in `/v1` (or names the full route) is not doubled.
fn messages_path(base_path: &str) -> String {
    if base_path.ends_with("/v1/messages") {
        base_path.to_string()
    } else if base_path.ends_with("/v1") {
        format!("{base_path}/messages")
    } else {
        format!("{base_path}/v1/messages")
    }
}

#[async_trait]
impl Provider for Anthropic {
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
        _client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        let req = ChatRequest::from_body(body)?;
        let out = messages_body(
            &req,
            body,
            Some(cx.model),
            None,
            self.default_max_tokens,
            cx.drop_params,
        )?;
        let mut up = UpstreamRequest::post_json(self.path.clone(), out);
        if let Some(key) = &self.api_key {
            up.header(HeaderName::from_static("x-api-key"), key)?;
        }
        up.header(
            HeaderName::from_static("anthropic-version"),
            ANTHROPIC_VERSION,
        )?;
        if cx.stream {
            up.header(http::header::ACCEPT, "text/event-stream")?;
        }
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

    fn map_error(&self, status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
        map_anthropic_error(PROVIDER, status, headers, body)
    }

    /// The client's body with the deployment's model; its `anthropic-version` (else ours) and
    /// `anthropic-beta` forwarded.
    async fn messages_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        endpoint: super::MessagesEndpoint,
        headers: &super::MessagesHeaders,
        _client: &UpstreamClient,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        Some((|| {
            let mut model = Vec::with_capacity(cx.model.len() + 2);
            crate::openai::request::write_json_string(&mut model, cx.model);
            let model = std::str::from_utf8(&model).unwrap_or("\"\"");
            let mut out = Vec::with_capacity(
                body.fields()
                    .map(|(k, v)| k.len() + v.get().len() + 4)
                    .sum::<usize>()
                    + 16,
            );
            let gateway_only = crate::openai::request::GATEWAY_FIELDS;
            body.write_with(&[("model", model)], gateway_only, &mut out);
            let path = match endpoint {
                super::MessagesEndpoint::Create => self.path.clone(),
                super::MessagesEndpoint::CountTokens => format!("{}/count_tokens", self.path),
            };
            let mut up = UpstreamRequest::post_json(path, out);
            if let Some(key) = &self.api_key {
                up.header(HeaderName::from_static("x-api-key"), key)?;
            }
            let version = headers
                .version
                .clone()
                .unwrap_or(http::HeaderValue::from_static(ANTHROPIC_VERSION));
            up.headers
                .push((HeaderName::from_static("anthropic-version"), version));
            if let Some(beta) = &headers.beta {
                up.headers
                    .push((HeaderName::from_static("anthropic-beta"), beta.clone()));
            }
            if cx.stream {
                up.header(http::header::ACCEPT, "text/event-stream")?;
            }
            Ok(up)
        })())
    }
}

// ---------------------------------------------------------------------------------------------
// Request.

#[derive(Serialize)]
struct MessagesRequest<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    anthropic_version: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<&'r str>,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<TextBlock<'r>>,
    messages: Vec<Turn<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'r str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'r>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDef<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoiceOut<'r>>,
    /// Extended thinking: the request's `thinking` as given (Anthropic's own shape, as LiteLLM
    /// passes it), else mapped from `reasoning_effort`.
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'r RawValue>,
}

#[derive(Serialize)]
struct TextBlock<'r> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'r str,
}

#[derive(Serialize)]
struct Turn<'r> {
    role: &'static str,
    content: Vec<Block<'r>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'r> {
    Text {
        text: &'r str,
    },
    Image {
        source: ImageSourceOut<'r>,
    },
    ToolUse {
        id: &'r str,
        name: &'r str,
        input: &'r RawValue,
    },
    ToolResult {
        tool_use_id: &'r str,
        content: ToolResultContent<'r>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSourceOut<'r> {
    Base64 { media_type: &'r str, data: &'r str },
    Url { url: &'r str },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolResultContent<'r> {
    Text(&'r str),
    Blocks(Vec<Block<'r>>),
}

#[derive(Serialize)]
struct Metadata<'r> {
    user_id: &'r str,
}

#[derive(Serialize)]
struct ToolDef<'r> {
    name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'r str>,
    input_schema: &'r RawValue,
}

#[derive(Serialize)]
struct ToolChoiceOut<'r> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'r str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

fn static_raw(json: &'static str) -> &'static RawValue {
    // Only called with literal, valid JSON objects.
    serde_json::from_str(json).expect("static JSON literal")
}

fn empty_object() -> &'static RawValue {
    static_raw("{}")
}

fn bad_message(index: usize, what: impl std::fmt::Display) -> GatewayError {
    GatewayError::invalid_param("messages", format!("messages[{index}]: {what}"))
}

/// Builds the Messages API body for `req` (parsed from `body`). Unsupported OpenAI parameters
/// are dropped under `drop_params`, otherwise a 400 naming them. `model: None` omits the model
/// (Vertex); `anthropic_version_in_body` adds `anthropic_version` (Vertex:
/// `vertex-2023-10-16`). `default_max_tokens` is sent when the request gives no
/// `max_completion_tokens` / `max_tokens` (the API requires it).
pub fn messages_body(
    req: &ChatRequest<'_>,
    body: &RequestBody<'_>,
    model: Option<&str>,
    anthropic_version_in_body: Option<&str>,
    default_max_tokens: u64,
    drop_params: bool,
) -> GatewayResult<Vec<u8>> {
    let supported = if req.n.is_none_or(|n| n == 1) {
        SUPPORTED
    } else {
        &SUPPORTED[..SUPPORTED.len() - 1]
    };
    check_supported(body, supported, drop_params, PROVIDER)?;
    let top_k: Option<u64> = body.typed("top_k")?;

    let mut system = Vec::new();
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(req.messages.len());
    for (i, msg) in req.messages.iter().enumerate() {
        let (role, blocks) = match msg.role.as_ref() {
            "system" | "developer" => {
                push_system(&mut system, msg);
                continue;
            }
            "user" => ("user", user_blocks(i, msg)?),
            "assistant" => ("assistant", assistant_blocks(i, msg)?),
            "tool" => ("user", vec![tool_result_block(i, msg)?]),
            other => {
                return Err(bad_message(
                    i,
                    format!(
                        "role \"{other}\" is not supported by {PROVIDER}; use system, developer, user, assistant or tool."
                    ),
                ))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            // The API wants alternating roles: consecutive same-role turns (parallel tool
            // results, a tool result followed by user text) become one turn.
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    if turns.is_empty() {
        return Err(GatewayError::invalid_param(
            "messages",
            format!("{PROVIDER} needs at least one non-empty user or assistant message besides system messages."),
        ));
    }

    let client_tools = req.tools.as_deref().unwrap_or_default();
    let mut tools = Vec::with_capacity(client_tools.len() + 1);
    for (i, tool) in client_tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(GatewayError::invalid_param(
                "tools",
                format!(
                    "tools[{i}]: type \"{}\" is not supported by {PROVIDER}; only \"function\" tools are.",
                    tool.kind
                ),
            ));
        }
        if tool.function.name == JSON_TOOL_NAME {
            return Err(GatewayError::invalid_param(
                "tools",
                format!("tools[{i}]: the tool name \"{JSON_TOOL_NAME}\" is reserved by the gateway for response_format; rename the tool."),
            ));
        }
        tools.push(ToolDef {
            name: &tool.function.name,
            description: tool.function.description.as_deref(),
            input_schema: tool
                .function
                .parameters
                .filter(|p| p.get() != "null")
                .unwrap_or_else(|| static_raw(r#"{"type":"object","properties":{}}"#)),
        });
    }

    let json_schema = match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(_) if !tools.is_empty() => {
            if !drop_params {
                return Err(GatewayError::invalid_param(
                    "response_format",
                    format!("{PROVIDER} has no native JSON mode; the gateway emulates response_format with a forced tool, which cannot be combined with 'tools'. Remove one of them, or set drop_params: true to drop response_format."),
                )
                .with_code("unsupported_parameter"));
            }
            None
        }
        Some(ResponseFormat::JsonObject) => Some(static_raw(ANY_OBJECT_SCHEMA)),
        Some(ResponseFormat::JsonSchema { json_schema }) => Some(
            json_schema
                .schema
                .filter(|s| s.get() != "null")
                .unwrap_or_else(|| static_raw(ANY_OBJECT_SCHEMA)),
        ),
    };

    let disable_parallel = req.parallel_tool_calls == Some(false);
    let tool_choice = if let Some(schema) = json_schema {
        tools.push(ToolDef {
            name: JSON_TOOL_NAME,
            description: Some("Respond with the requested JSON object."),
            input_schema: schema,
        });
        Some(ToolChoiceOut {
            kind: "tool",
            name: Some(JSON_TOOL_NAME),
            disable_parallel_tool_use: false,
        })
    } else if tools.is_empty() {
        None
    } else {
        match &req.tool_choice {
            None if !disable_parallel => None,
            None | Some(ToolChoice::Auto) => Some(("auto", None)),
            Some(ToolChoice::None) => Some(("none", None)),
            Some(ToolChoice::Required) => Some(("any", None)),
            Some(ToolChoice::Function(name)) => Some(("tool", Some(name.as_ref()))),
        }
        .map(|(kind, name)| ToolChoiceOut {
            kind,
            name,
            disable_parallel_tool_use: disable_parallel && kind != "none",
        })
    };

    let (thinking, budget) = thinking(body)?;
    let request = MessagesRequest {
        anthropic_version: anthropic_version_in_body,
        model,
        // The API wants max_tokens above the thinking budget: without a requested maximum,
        // the default is counted on top of the budget.
        max_tokens: req
            .max_output_tokens()
            .unwrap_or(default_max_tokens + budget),
        thinking,
        system,
        messages: turns,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k,
        // The API rejects whitespace-only stop sequences; LiteLLM drops them too.
        stop_sequences: req
            .stop
            .iter()
            .flatten()
            .map(|s| s.as_ref())
            .filter(|s| !s.trim().is_empty())
            .collect(),
        stream: req.stream,
        metadata: req.user.as_deref().map(|user_id| Metadata { user_id }),
        tools,
        tool_choice,
    };
    serde_json::to_vec(&request).map_err(|e| {
        GatewayError::internal(format!("{PROVIDER}: could not encode the request ({e})."))
    })
}

/// `thinking` passed through, else `reasoning_effort` mapped to a thinking budget as LiteLLM
/// maps it (low 1024, medium 2048, high 4096 tokens; `minimal` gets Anthropic's least budget,
/// 1024; `none` no thinking), with the budget.
fn thinking<'r>(body: &RequestBody<'r>) -> GatewayResult<(Option<&'r RawValue>, u64)> {
    #[derive(Deserialize)]
    struct Thinking {
        #[serde(default)]
        budget_tokens: u64,
    }
    if let Some(raw) = body.get("thinking") {
        let budget = serde_json::from_str::<Thinking>(raw.get())
            .map(|t| t.budget_tokens)
            .map_err(|e| {
                GatewayError::invalid_param(
                    "thinking",
                    format!("Invalid value for 'thinking' ({e}); send {{\"type\": \"enabled\", \"budget_tokens\": 1024}}."),
                )
            })?;
        return Ok((Some(raw), budget));
    }
    let Some(effort) = body.typed::<Cow<'_, str>>("reasoning_effort")? else {
        return Ok((None, 0));
    };
    let (json, budget) = match effort.as_ref() {
        "none" => return Ok((None, 0)),
        "minimal" | "low" => (r#"{"type":"enabled","budget_tokens":1024}"#, 1024),
        "medium" => (r#"{"type":"enabled","budget_tokens":2048}"#, 2048),
        "high" => (r#"{"type":"enabled","budget_tokens":4096}"#, 4096),
        other => {
            return Err(GatewayError::invalid_param(
                "reasoning_effort",
                format!("Invalid value for 'reasoning_effort': \"{other}\" (none, minimal, low, medium or high)."),
            ))
        }
    };
    Ok((Some(static_raw(json)), budget))
}

fn push_system<'r>(system: &mut Vec<TextBlock<'r>>, msg: &'r ChatMessage<'_>) {
    match &msg.content {
        Some(MessageContent::Text(t)) if !t.is_empty() => system.push(TextBlock {
            kind: "text",
            text: t,
        }),
        Some(MessageContent::Parts(parts)) => {
            for part in parts {
                if let ContentPart::Text { text } = part {
                    if !text.is_empty() {
                        system.push(TextBlock { kind: "text", text });
                    }
                }
            }
        }
        _ => {}
    }
}

fn image_block<'r>(
    i: usize,
    image_url: &'r crate::openai::request::ImageUrl<'_>,
) -> GatewayResult<Block<'r>> {
    let source = match image_url.source().map_err(|e| bad_message(i, e.message))? {
        ImageSource::Base64 { media_type, data } => ImageSourceOut::Base64 { media_type, data },
        ImageSource::Url(url) => ImageSourceOut::Url { url },
    };
    Ok(Block::Image { source })
}

/// Text and image parts as blocks; empty text is skipped (the API rejects empty text blocks).
fn content_blocks<'r>(
    i: usize,
    content: &'r Option<MessageContent<'_>>,
    images: bool,
) -> GatewayResult<Vec<Block<'r>>> {
    let mut blocks = Vec::new();
    match content {
        Some(MessageContent::Text(t)) if !t.is_empty() => blocks.push(Block::Text { text: t }),
        None | Some(MessageContent::Text(_)) => {}
        Some(MessageContent::Parts(parts)) => {
            for part in parts {
                match part {
                    ContentPart::Text { text } if text.is_empty() => {}
                    ContentPart::Text { text } => blocks.push(Block::Text { text }),
                    ContentPart::ImageUrl { image_url } if images => {
                        blocks.push(image_block(i, image_url)?)
                    }
                    ContentPart::ImageUrl { .. } => {
                        return Err(bad_message(
                            i,
                            format!("{PROVIDER} takes images only in user and tool messages."),
                        ))
                    }
                    ContentPart::Unsupported => {
                        return Err(bad_message(
                            i,
                            format!(
                            "{PROVIDER} supports only \"text\" and \"image_url\" content parts."
                        ),
                        ))
                    }
                }
            }
        }
    }
    Ok(blocks)
}

fn user_blocks<'r>(i: usize, msg: &'r ChatMessage<'_>) -> GatewayResult<Vec<Block<'r>>> {
    content_blocks(i, &msg.content, true)
}

fn assistant_blocks<'r>(i: usize, msg: &'r ChatMessage<'_>) -> GatewayResult<Vec<Block<'r>>> {
    let mut blocks = content_blocks(i, &msg.content, false)?;
    for call in msg.tool_calls.as_deref().unwrap_or_default() {
        let args = call.function.arguments.as_ref();
        let input: &RawValue = if args.trim().is_empty() {
            empty_object()
        } else {
            match serde_json::from_str::<&RawValue>(args) {
                Ok(raw) if raw.get().starts_with('{') => raw,
                Ok(_) => {
                    return Err(bad_message(
                        i,
                        format!("tool call \"{}\" arguments must be a JSON object.", call.id),
                    ))
                }
                Err(e) => {
                    return Err(bad_message(
                        i,
                        format!(
                            "tool call \"{}\" arguments are not valid JSON ({e}).",
                            call.id
                        ),
                    ))
                }
            }
        };
        blocks.push(Block::ToolUse {
            id: &call.id,
            name: &call.function.name,
            input,
        });
    }
    Ok(blocks)
}

fn tool_result_block<'r>(i: usize, msg: &'r ChatMessage<'_>) -> GatewayResult<Block<'r>> {
    let tool_use_id = msg
        .tool_call_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| bad_message(i, "a tool message needs tool_call_id."))?;
    let content = match &msg.content {
        None => ToolResultContent::Text(""),
        Some(MessageContent::Text(t)) => ToolResultContent::Text(t),
        Some(MessageContent::Parts(_)) => {
            ToolResultContent::Blocks(content_blocks(i, &msg.content, true)?)
        }
    };
    Ok(Block::ToolResult {
        tool_use_id,
        content,
    })
}

// ---------------------------------------------------------------------------------------------
// Response.

#[derive(Deserialize)]
struct MessagesResponse<'a> {
    #[serde(borrow)]
    content: Vec<ResponseBlock<'a>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: AnthropicUsage,
}

/// A response content block, flat (an internally tagged enum cannot hold a borrowed
/// `RawValue`): `text` for text blocks, `id`/`name`/`input` for `tool_use`; thinking and server
/// tool blocks are skipped.
#[derive(Deserialize)]
struct ResponseBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    input: Option<&'a RawValue>,
}

/// Anthropic's token counts. Input tokens exclude cache writes and reads, so OpenAI's
/// prompt_tokens is their sum.
#[derive(Deserialize, Default, Clone, Copy)]
pub struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    /// The cache writes split by lifetime (`ephemeral_1h_input_tokens` are priced higher).
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_1h_input_tokens: u64,
}

impl AnthropicUsage {
    /// Later counts (message_delta is cumulative) replace earlier ones field by field.
    pub fn update(&mut self, newer: &AnthropicUsage) {
        self.input_tokens = newer.input_tokens.or(self.input_tokens);
        self.output_tokens = newer.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = newer
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = newer
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation = newer.cache_creation.or(self.cache_creation);
    }

    pub fn to_openai(self) -> Usage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let prompt =
            self.input_tokens.unwrap_or(0) + self.cache_creation_input_tokens.unwrap_or(0) + cached;
        Usage::new(prompt, self.output_tokens.unwrap_or(0))
            .with_cached(cached)
            .with_cache_creation(
                self.cache_creation_input_tokens.unwrap_or(0),
                self.cache_creation
                    .map_or(0, |c| c.ephemeral_1h_input_tokens),
            )
    }
}

/// Anthropic `stop_reason` → OpenAI `finish_reason` (reference table).
fn finish_reason(stop_reason: Option<&str>) -> FinishReason {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn, unknown future values
        _ => FinishReason::Stop,
    }
}

/// Translates a whole Messages response into an OpenAI `chat.completion` with `cx`'s id and
/// `created`, naming `model`. The [`JSON_TOOL_NAME`] tool's input becomes the content.
/// A body that is not a Messages response is a 502.
pub fn parse_messages_response(
    provider: &str,
    body: &[u8],
    cx: &RequestContext<'_>,
    model: &str,
) -> GatewayResult<TranslatedResponse> {
    let parsed: MessagesResponse<'_> = serde_json::from_slice(body).map_err(|e| {
        // Some proxies answer 200 with an Anthropic error object: report that error.
        match serde_json::from_slice::<ErrorBody<'_>>(body) {
            Ok(b) => error_from_type(
                provider,
                b.error.kind.as_deref(),
                None,
                b.error.message.as_deref().unwrap_or("(no message)"),
            ),
            Err(_) => GatewayError::bad_gateway(format!(
                "{provider}: the upstream answered 2xx with a body that is not a Messages response ({e})."
            )),
        }
    })?;
    let mut text = String::new();
    let mut json_content: Option<&str> = None;
    let mut tool_calls = Vec::new();
    for block in &parsed.content {
        match block.kind.as_ref() {
            "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
            "tool_use" => {
                let input = block.input.map_or("{}", RawValue::get);
                let name = block.name.as_deref().unwrap_or_default();
                if name == JSON_TOOL_NAME {
                    json_content = Some(input);
                } else {
                    tool_calls.push(ToolCallOut::new(
                        block.id.as_deref().unwrap_or_default().to_string(),
                        name.to_string(),
                        input.to_string(),
                    ));
                }
            }
            _ => {}
        }
    }
    let mut finish = finish_reason(parsed.stop_reason.as_deref());
    let content = if let Some(json) = json_content {
        if finish == FinishReason::ToolCalls && tool_calls.is_empty() {
            finish = FinishReason::Stop;
        }
        Some(json.to_string())
    } else if text.is_empty() && !tool_calls.is_empty() {
        None
    } else {
        Some(text)
    };
    let usage = parsed.usage.to_openai();
    let completion = ChatCompletion::single(
        cx.response_id,
        cx.created,
        model,
        content,
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
// Streaming.

/// One stream event's `data`, with every field any event type carries (flat, so strings borrow
/// from the event instead of being buffered by an internally tagged enum).
#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    message: Option<StartMessage>,
    #[serde(default, borrow)]
    content_block: Option<StartBlock<'a>>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default, borrow)]
    error: Option<ErrorDetail<'a>>,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct StartBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

/// `{"type":"error","error":{"type","message"}}`, as an HTTP error body.
#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow)]
    error: ErrorDetail<'a>,
}

/// The `error` object of an error body or a stream `error` event.
#[derive(Deserialize)]
struct ErrorDetail<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// What the currently open content block turns into.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    None,
    Text,
    /// A tool call at this OpenAI index; `bool`: argument bytes were sent.
    Tool(usize, bool),
    /// The response_format tool: its input streams as content.
    Json,
    /// A thinking block: its text streams as reasoning.
    Thinking,
    /// Other blocks (redacted thinking, server tools): ignored.
    Ignored,
}

/// Translates the Messages SSE stream (`message_start`, `content_block_*`, `message_delta`,
/// `message_stop`, `ping`, `error`) into stream events as they arrive. Tool calls are
/// numbered by counting `tool_use` blocks, not by Anthropic's block index (text and thinking
/// blocks take indices too). An `error` event ends the stream with that error.
pub struct MessagesStream {
    provider: &'static str,
    block: OpenBlock,
    tool_calls: usize,
    stop_reason: Option<String>,
    usage: AnthropicUsage,
    started: bool,
    done: bool,
}

impl MessagesStream {
    /// The translator with its SSE framing, ready to drive as a [`StreamTranslator`].
    pub fn new(
        provider: &'static str,
        cx: &RequestContext<'_>,
        model: &str,
    ) -> Framed<SseDecoder, MessagesStream> {
        Framed::new(
            MessagesStream {
                provider,
                block: OpenBlock::None,
                tool_calls: 0,
                stop_reason: None,
                usage: AnthropicUsage::default(),
                started: false,
                done: false,
            },
            ChunkWriter::new(cx.response_id, cx.created, model, cx.include_usage),
        )
    }

    fn translate(&mut self, ev: SseEvent<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        if self.done {
            return Ok(());
        }
        let event: StreamEvent<'_> = serde_json::from_str(ev.data).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "{}: the upstream sent a stream event that is not valid JSON ({e}).",
                self.provider
            ))
        })?;
        match event.kind.as_ref() {
            "message_start" => {
                self.started = true;
                sink.event(Emit::Start);
                if let Some(u) = event.message.as_ref().and_then(|m| m.usage.as_ref()) {
                    // The prompt's count, early: sinks that announce it up front can.
                    self.usage.update(u);
                    sink.event(Emit::Usage(self.usage.to_openai()));
                }
            }
            "content_block_start" => {
                self.block = OpenBlock::Ignored;
                if let Some(block) = event.content_block {
                    match block.kind.as_ref() {
                        "text" => {
                            self.block = OpenBlock::Text;
                            if let Some(t) = block.text.as_deref() {
                                sink.event(Emit::Text(t));
                            }
                        }
                        "tool_use" if block.name.as_deref() == Some(JSON_TOOL_NAME) => {
                            self.block = OpenBlock::Json;
                        }
                        "tool_use" => {
                            let index = self.tool_calls;
                            self.tool_calls += 1;
                            sink.event(Emit::ToolCallStart {
                                index,
                                id: block.id.as_deref().unwrap_or_default(),
                                name: block.name.as_deref().unwrap_or_default(),
                            });
                            self.block = OpenBlock::Tool(index, false);
                        }
                        "thinking" => self.block = OpenBlock::Thinking,
                        _ => {}
                    }
                }
            }
            "content_block_delta" => {
                let Some(delta) = event.delta else {
                    return Ok(());
                };
                match (self.block, delta.kind.as_deref()) {
                    (OpenBlock::Text, Some("text_delta")) => {
                        sink.event(Emit::Text(delta.text.as_deref().unwrap_or("")))
                    }
                    (OpenBlock::Tool(index, sent), Some("input_json_delta")) => {
                        let fragment = delta.partial_json.as_deref().unwrap_or("");
                        sink.event(Emit::ToolCallArgs { index, fragment });
                        self.block = OpenBlock::Tool(index, sent || !fragment.is_empty());
                    }
                    (OpenBlock::Json, Some("input_json_delta")) => {
                        sink.event(Emit::Text(delta.partial_json.as_deref().unwrap_or("")))
                    }
                    (OpenBlock::Thinking, Some("thinking_delta")) => {
                        sink.event(Emit::Reasoning(delta.thinking.as_deref().unwrap_or("")))
                    }
                    // signature_delta, citations_delta, …
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let OpenBlock::Tool(index, false) = self.block {
                    // A call without arguments: OpenAI clients parse the arguments string.
                    sink.event(Emit::ToolCallArgs {
                        index,
                        fragment: "{}",
                    });
                }
                self.block = OpenBlock::None;
            }
            "message_delta" => {
                if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason.into_owned());
                }
                if let Some(u) = &event.usage {
                    self.usage.update(u);
                }
            }
            "message_stop" => {
                let mut finish = finish_reason(self.stop_reason.as_deref());
                if finish == FinishReason::ToolCalls && self.tool_calls == 0 {
                    // Only the response_format tool was used: its input was the content.
                    finish = FinishReason::Stop;
                }
                sink.event(Emit::Start);
                sink.event(Emit::Finish(finish));
                sink.event(Emit::Usage(self.usage.to_openai()));
                sink.event(Emit::Done);
                self.done = true;
            }
            "error" => {
                let detail = event.error;
                let kind = detail.as_ref().and_then(|d| d.kind.as_deref());
                let message = detail
                    .as_ref()
                    .and_then(|d| d.message.as_deref())
                    .unwrap_or("the upstream reported an error mid-stream");
                return Err(error_from_type(self.provider, kind, None, message));
            }
            // ping, and event types added later
            _ => {}
        }
        Ok(())
    }
}

impl EventTranslator<SseDecoder> for MessagesStream {
    fn on_event(&mut self, event: SseEvent<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.translate(event, sink)
    }

    fn on_end(&mut self, _sink: &mut dyn EventSink) -> GatewayResult<()> {
        if !self.done {
            return Err(GatewayError::bad_gateway(format!(
                "{}: the upstream ended the stream before message_stop.",
                self.provider
            )));
        }
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.started.then(|| self.usage.to_openai())
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// Maps an Anthropic error (`{"type":"error","error":{"type","message"}}`) to an OpenAI error:
/// the status is kept (529 → 503), 429 keeps `Retry-After`, 413 is `request_too_large`, and
/// "prompt is too long" is 400 `context_length_exceeded`. Bodies of another shape (a proxy's
/// HTML page) fall back to the status and a snippet of the body.
pub fn map_anthropic_error(
    provider: &str,
    status: u16,
    headers: &ResponseHeader,
    body: &[u8],
) -> GatewayError {
    let parsed: Option<ErrorBody<'_>> = serde_json::from_slice(body).ok();
    let snippet;
    let (kind, message) = match &parsed {
        Some(b) => (
            b.error.kind.as_deref(),
            b.error.message.as_deref().unwrap_or("(no message)"),
        ),
        None => {
            snippet = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            (None, snippet.as_str())
        }
    };
    error_from_type(provider, kind, Some(status), message)
        .with_retry_after(retry_after_secs(headers))
}

/// Builds the error from Anthropic's error `type` and, for HTTP errors, the status (mid-stream
/// `error` events have only the type).
fn error_from_type(
    provider: &str,
    kind: Option<&str>,
    status: Option<u16>,
    message: &str,
) -> GatewayError {
    let status = status.unwrap_or(match kind {
        Some("invalid_request_error") => 400,
        Some("authentication_error") => 401,
        Some("permission_error") => 403,
        Some("not_found_error") => 404,
        Some("request_too_large") => 413,
        Some("rate_limit_error") => 429,
        Some("api_error") => 500,
        Some("overloaded_error") => 529,
        _ => 502,
    });
    let status = if kind == Some("overloaded_error") {
        529
    } else {
        status
    };
    let mut err = GatewayError::from_upstream(status, format!("{provider}: {message}"));
    if status == 400 && super::is_context_length_message(&message.to_ascii_lowercase()) {
        err.kind = ErrorKind::ContextLengthExceeded;
        err.code = Some("context_length_exceeded".into());
    } else if status == 413 {
        err.code = Some("request_too_large".into());
    } else if err.code.is_none() {
        err.code = kind.map(str::to_string);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventLog, RecordedEvent};
    use bytes::BytesMut;
    use serde_json::{json, Value};

    fn cx(stream: bool, include_usage: bool) -> RequestContext<'static> {
        RequestContext {
            op: super::super::Operation::Chat,
            model: "claude-sonnet-4-5",
            stream,
            include_usage,
            response_id: "chatcmpl-test",
            created: 1700000000,
            drop_params: false,
            embeddings_base64: false,
        }
    }

    fn build(body: &Value, drop_params: bool) -> GatewayResult<Value> {
        let bytes = serde_json::to_vec(body).unwrap();
        let parsed = RequestBody::parse(&bytes)?;
        let req = ChatRequest::from_body(&parsed)?;
        let out = messages_body(
            &req,
            &parsed,
            Some("claude-sonnet-4-5"),
            None,
            1000,
            drop_params,
        )?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn thinking_and_reasoning_effort() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let out = build(
            &json!({"model": "c", "messages": msgs, "thinking": {"type": "enabled", "budget_tokens": 2000}}),
            false,
        )
        .unwrap();
        assert_eq!(
            out["thinking"],
            json!({"type": "enabled", "budget_tokens": 2000})
        );
        assert_eq!(
            out["max_tokens"], 3000,
            "the default counts on top of the budget"
        );
        let out = build(
            &json!({"model": "c", "messages": msgs, "reasoning_effort": "high", "max_tokens": 9000}),
            false,
        )
        .unwrap();
        assert_eq!(
            out["thinking"],
            json!({"type": "enabled", "budget_tokens": 4096})
        );
        assert_eq!(out["max_tokens"], 9000);
        let out = build(
            &json!({"model": "c", "messages": msgs, "reasoning_effort": "none"}),
            false,
        )
        .unwrap();
        assert!(out.get("thinking").is_none());
        assert_eq!(out["max_tokens"], 1000);
        let err = build(
            &json!({"model": "c", "messages": msgs, "reasoning_effort": "max"}),
            false,
        )
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("reasoning_effort"));
    }

    #[test]
    fn rich_request_golden() {
        let body = json!({
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "user", "content": [
                    {"type": "text", "text": "Also this:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_01", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_02", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_01", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_02", "content": [{"type": "text", "text": "21C"}]},
                {"role": "user", "content": "Thanks"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Get weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "max_completion_tokens": 300,
            "max_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["END", " \n"],
            "user": "u-42",
            "stream": true,
            "stream_options": {"include_usage": true},
            "n": 1
        });
        let got = build(&body, false).unwrap();
        let expected = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use metric units."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris and Rome?"},
                    {"type": "text", "text": "Also this:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_02", "name": "weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "text", "text": "21C"}]},
                    {"type": "text", "text": "Thanks"}
                ]}
            ],
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "stream": true,
            "metadata": {"user_id": "u-42"},
            "tools": [{"name": "weather", "description": "Get weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn tool_choice_variants() {
        let with = |choice: Value| {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "f"}}]});
            if !choice.is_null() {
                body["tool_choice"] = choice;
            }
            build(&body, false).unwrap()
        };
        assert!(with(Value::Null).get("tool_choice").is_none());
        assert_eq!(with(json!("auto"))["tool_choice"], json!({"type": "auto"}));
        assert_eq!(with(json!("none"))["tool_choice"], json!({"type": "none"}));
        assert_eq!(
            with(json!("required"))["tool_choice"],
            json!({"type": "any"})
        );
        assert_eq!(
            with(json!({"type": "function", "function": {"name": "f"}}))["tool_choice"],
            json!({"type": "tool", "name": "f"})
        );
        // A tool without parameters still gets an object schema.
        assert_eq!(
            with(Value::Null)["tools"][0],
            json!({"name": "f", "input_schema": {"type": "object", "properties": {}}})
        );
    }

    #[test]
    fn defaults_and_vertex_shape() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let bytes = serde_json::to_vec(&body).unwrap();
        let parsed = RequestBody::parse(&bytes).unwrap();
        let req = ChatRequest::from_body(&parsed).unwrap();
        let out =
            messages_body(&req, &parsed, None, Some("vertex-2023-10-16"), 4096, false).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"anthropic_version":"vertex-2023-10-16","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#
        );
        // max_tokens alone is honoured.
        let got = build(
            &json!({"model": "m", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}]}),
            false,
        )
        .unwrap();
        assert_eq!(got["max_tokens"], 7);
    }

    #[test]
    fn response_format_becomes_a_forced_tool() {
        // `ChatRequest::from_body` cannot parse a json_schema response_format yet (a borrowed
        // RawValue inside its internally tagged enum, in openai/request.rs), so the typed field
        // is set directly here.
        let bytes = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let parsed = RequestBody::parse(bytes).unwrap();
        let mut req = ChatRequest::from_body(&parsed).unwrap();
        let schema: &RawValue =
            serde_json::from_str(r#"{"type":"object","properties":{"a":{"type":"integer"}}}"#)
                .unwrap();
        req.response_format = Some(ResponseFormat::JsonSchema {
            json_schema: crate::openai::request::JsonSchemaFormat {
                name: "x".into(),
                schema: Some(schema),
                strict: None,
            },
        });
        let out = messages_body(&req, &parsed, Some("m"), None, 10, false).unwrap();
        let got: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(got["tools"][0]["name"], JSON_TOOL_NAME);
        assert_eq!(
            got["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {"a": {"type": "integer"}}})
        );
        assert_eq!(
            got["tool_choice"],
            json!({"type": "tool", "name": JSON_TOOL_NAME})
        );
        let got = build(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_object"}}),
            false,
        )
        .unwrap();
        assert_eq!(got["tools"][0]["input_schema"]["type"], "object");
        // With client tools: 400, or dropped under drop_params.
        let both = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "response_format": {"type": "json_object"}});
        let err = build(&both, false).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("response_format"));
        let got = build(&both, true).unwrap();
        assert_eq!(got["tools"].as_array().unwrap().len(), 1);
        assert!(got.get("tool_choice").is_none());
        // The reserved name is refused.
        let err = build(
            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": JSON_TOOL_NAME}}]}),
            false,
        )
        .unwrap_err();
        assert_eq!(err.param.as_deref(), Some("tools"));
    }

    #[test]
    fn bad_input_is_a_400_naming_the_field() {
        let msgs = |m: Value| json!({"model": "m", "messages": m});
        let bad_args = msgs(json!([{"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]));
        let err = build(&bad_args, false).unwrap_err();
        assert_eq!((err.status, err.param.as_deref()), (400, Some("messages")));
        assert!(err.message.contains("messages[1]"), "{}", err.message);
        let array_args = msgs(
            json!([{"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]),
        );
        assert_eq!(build(&array_args, false).unwrap_err().status, 400);
        let no_id = msgs(json!([{"role": "tool", "content": "x"}]));
        assert_eq!(
            build(&no_id, false).unwrap_err().param.as_deref(),
            Some("messages")
        );
        let only_system = msgs(json!([{"role": "system", "content": "x"}]));
        assert_eq!(build(&only_system, false).unwrap_err().status, 400);
        let bad_image = msgs(
            json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]),
        );
        assert_eq!(build(&bad_image, false).unwrap_err().status, 400);
        // Unsupported parameters: 400 naming them, or dropped.
        for (param, value) in [
            ("seed", json!(1)),
            ("n", json!(2)),
            ("logit_bias", json!({})),
            ("presence_penalty", json!(0.1)),
            ("logprobs", json!(true)),
        ] {
            let mut body = msgs(json!([{"role": "user", "content": "hi"}]));
            body[param] = value;
            let err = build(&body, false).unwrap_err();
            assert_eq!(err.param.as_deref(), Some(param));
            assert!(err.message.contains("anthropic"));
            let got = build(&body, true).unwrap();
            assert!(got.get(param).is_none());
        }
    }

    #[test]
    fn response_with_tool_use_and_cache_usage() {
        let body = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me check. "},
                {"type": "text", "text": "One moment."},
                {"type": "tool_use", "id": "toolu_01A", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "time", "input": {}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 100}
        });
        let out = parse_messages_response(
            PROVIDER,
            body.to_string().as_bytes(),
            &cx(false, false),
            "claude-sonnet-4-5",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "chatcmpl-test", "object": "chat.completion", "created": 1700000000,
                "model": "claude-sonnet-4-5",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Let me check. One moment.",
                    "tool_calls": [
                        {"id": "toolu_01A", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "toolu_01B", "type": "function", "function": {"name": "time", "arguments": "{}"}}
                    ], "refusal": null}, "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": 113, "completion_tokens": 20, "total_tokens": 133,
                    "prompt_tokens_details": {"cached_tokens": 100, "cache_creation_tokens": 3}}
            })
        );
        assert_eq!(out.usage.unwrap().prompt_tokens, 113);
    }

    #[test]
    fn response_finish_reasons_and_json_mode() {
        let parse = |content: Value, stop: &str| -> Value {
            let body = json!({"content": content, "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 2}});
            let out = parse_messages_response(
                PROVIDER,
                body.to_string().as_bytes(),
                &cx(false, false),
                "m",
            )
            .unwrap();
            serde_json::from_slice(&out.body).unwrap()
        };
        let text = json!([{"type": "text", "text": "x"}]);
        for (stop, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("refusal", "content_filter"),
            ("pause_turn", "stop"),
        ] {
            assert_eq!(
                parse(text.clone(), stop)["choices"][0]["finish_reason"],
                want
            );
        }
        let only_tool = parse(
            json!([{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]),
            "tool_use",
        );
        assert!(only_tool["choices"][0]["message"]["content"].is_null());
        let json_mode = parse(
            json!([{"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL_NAME, "input": {"a": 1}}]),
            "tool_use",
        );
        assert_eq!(json_mode["choices"][0]["message"]["content"], "{\"a\":1}");
        assert_eq!(json_mode["choices"][0]["finish_reason"], "stop");
        assert!(json_mode["choices"][0]["message"]
            .get("tool_calls")
            .is_none());
        let err = parse_messages_response(
            PROVIDER,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            &cx(false, false),
            "m",
        )
        .err()
        .unwrap();
        assert_eq!(err.status, 503);
        for bad in [&b"not json"[..], b"{\"type\":\"message\"}", b""] {
            let err = parse_messages_response(PROVIDER, bad, &cx(false, false), "m")
                .err()
                .unwrap();
            assert_eq!(err.status, 502);
        }
    }

    pub(crate) const TEXT_STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":5}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"abc\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\", w\\u00f6rld \\\"\u{1F600}\\\"\\n\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    pub(crate) const TOOL_STREAM: &str = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":400,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking both.\"}}\r\n\r\n\
event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_A\",\"name\":\"weather\",\"input\":{}}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Pa\"}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ris\\\"}\"}}\r\n\r\n\
event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":1}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_B\",\"name\":\"clock\",\"input\":{}}}\r\n\r\n\
event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":2}\r\n\r\n\
event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\r\n\r\n\
event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";

    fn translate(input: &[u8], splits: &[usize], include_usage: bool) -> GatewayResult<Vec<u8>> {
        let mut t = MessagesStream::new(PROVIDER, &cx(true, include_usage), "claude-sonnet-4-5");
        let mut out = BytesMut::new();
        let mut start = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            t.feed(&input[start..s], &mut out)?;
            start = s;
        }
        t.finish(&mut out)?;
        Ok(out.to_vec())
    }

    fn chunks(out: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    fn assert_split_invariant(input: &str, include_usage: bool) -> Vec<u8> {
        let input = input.as_bytes();
        let whole = translate(input, &[], include_usage).unwrap();
        for i in 0..=input.len() {
            assert_eq!(
                translate(input, &[i], include_usage).unwrap(),
                whole,
                "split at {i}"
            );
        }
        let every: Vec<usize> = (1..input.len()).collect();
        assert_eq!(translate(input, &every, include_usage).unwrap(), whole);
        whole
    }

    #[test]
    fn text_stream_golden_at_every_split() {
        let out = assert_split_invariant(TEXT_STREAM, true);
        let ev = chunks(&out);
        let deltas: Vec<Value> = ev
            .iter()
            .map(|c| {
                c["choices"]
                    .get(0)
                    .map(|ch| ch["delta"].clone())
                    .unwrap_or(Value::Null)
            })
            .collect();
        assert_eq!(deltas[0], json!({"role": "assistant", "content": ""}));
        assert_eq!(deltas[1], json!({"content": "Hello"}));
        assert_eq!(deltas[2], json!({"content": ", wörld \"\u{1F600}\"\n"}));
        assert_eq!(ev[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(ev.len(), 5);
        assert_eq!(ev[4]["choices"], json!([]));
        assert_eq!(
            ev[4]["usage"],
            json!({"prompt_tokens": 30, "completion_tokens": 15, "total_tokens": 45,
                "prompt_tokens_details": {"cached_tokens": 5}})
        );
        assert!(ev
            .iter()
            .all(|c| c["id"] == "chatcmpl-test" && c["model"] == "claude-sonnet-4-5"));
        // Without include_usage: no usage chunk, but usage is still known for logs.
        let out = translate(TEXT_STREAM.as_bytes(), &[], false).unwrap();
        assert_eq!(chunks(&out).len(), 4);
    }

    #[test]
    fn tool_stream_golden_at_every_split() {
        let out = assert_split_invariant(TOOL_STREAM, false);
        let ev = chunks(&out);
        let deltas: Vec<Value> = ev
            .iter()
            .map(|c| c["choices"][0]["delta"].clone())
            .collect();
        assert_eq!(deltas[0], json!({"role": "assistant", "content": ""}));
        assert_eq!(deltas[1], json!({"content": "Checking both."}));
        assert_eq!(
            deltas[2],
            json!({"tool_calls": [{"index": 0, "id": "toolu_A", "type": "function",
                "function": {"name": "weather", "arguments": ""}}]})
        );
        assert_eq!(
            deltas[3],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": \"Pa"}}]})
        );
        assert_eq!(
            deltas[4],
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ris\"}"}}]})
        );
        // The second call is index 1 (Anthropic's block index 2), and gets "{}" arguments.
        assert_eq!(deltas[5]["tool_calls"][0]["index"], 1);
        assert_eq!(deltas[5]["tool_calls"][0]["id"], "toolu_B");
        assert_eq!(
            deltas[6],
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]})
        );
        assert_eq!(ev[7]["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ev.len(), 8);
        let finishes = ev
            .iter()
            .filter(|c| !c["choices"][0]["finish_reason"].is_null())
            .count();
        assert_eq!(finishes, 1);
    }

    #[test]
    fn stream_usage_known_without_include_usage() {
        let mut t = MessagesStream::new(PROVIDER, &cx(true, false), "m");
        let mut out = BytesMut::new();
        t.feed(TOOL_STREAM.as_bytes(), &mut out).unwrap();
        t.finish(&mut out).unwrap();
        assert_eq!(t.usage(), Some(Usage::new(400, 42)));
    }

    #[test]
    fn json_mode_stream_is_content() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_J\",\"name\":\"json_tool_call\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":5}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let ev = chunks(&translate(input.as_bytes(), &[], false).unwrap());
        let text: String = ev
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "{\"a\":1}");
        assert!(ev
            .iter()
            .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
        assert_eq!(ev.last().unwrap()["choices"][0]["finish_reason"], "stop");
    }

    #[test]
    fn stream_errors() {
        // An error event mid-stream: overloaded → 503.
        let input = format!(
            "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
            &TEXT_STREAM[..TEXT_STREAM.find("event: content_block_stop").unwrap()]
        );
        let err = translate(input.as_bytes(), &[], false).unwrap_err();
        assert_eq!(err.status, 503);
        assert!(err.message.contains("Overloaded"));
        // Cut before message_stop → 502.
        let cut = &TEXT_STREAM[..TEXT_STREAM.find("event: message_stop").unwrap()];
        assert_eq!(
            translate(cut.as_bytes(), &[], false).unwrap_err().status,
            502
        );
        // Not JSON → 502.
        let garbage = "event: message_start\ndata: {oops\n\n";
        assert_eq!(
            translate(garbage.as_bytes(), &[], false)
                .unwrap_err()
                .status,
            502
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).unwrap();
        for (k, v) in pairs {
            h.insert_header(k.to_string(), v.to_string()).unwrap();
        }
        h
    }

    fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn error_mapping() {
        let e = map_anthropic_error(
            PROVIDER,
            529,
            &headers(&[]),
            &anthropic_error("overloaded_error", "Overloaded"),
        );
        assert_eq!((e.status, e.kind), (503, ErrorKind::Unavailable));
        assert!(e.is_retryable());
        let e = map_anthropic_error(
            PROVIDER,
            429,
            &headers(&[("retry-after", "17")]),
            &anthropic_error("rate_limit_error", "slow down"),
        );
        assert_eq!(e.status, 429);
        assert_eq!(e.retry_after, Some(17));
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        let e = map_anthropic_error(
            PROVIDER,
            400,
            &headers(&[]),
            &anthropic_error(
                "invalid_request_error",
                "prompt is too long: 210000 tokens > 200000 maximum",
            ),
        );
        assert_eq!(e.status, 400);
        assert_eq!(e.kind, ErrorKind::ContextLengthExceeded);
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        let e = map_anthropic_error(
            PROVIDER,
            413,
            &headers(&[]),
            &anthropic_error(
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
            ),
        );
        assert_eq!(
            (e.status, e.code.as_deref()),
            (413, Some("request_too_large"))
        );
        let e = map_anthropic_error(
            PROVIDER,
            401,
            &headers(&[]),
            &anthropic_error("authentication_error", "invalid x-api-key"),
        );
        assert_eq!((e.status, e.kind), (401, ErrorKind::Authentication));
        assert!(e.message.contains("invalid x-api-key"));
        let e = map_anthropic_error(PROVIDER, 502, &headers(&[]), b"<html>bad gateway</html>");
        assert_eq!(e.status, 502);
        assert!(e.message.contains("bad gateway"));
    }

    #[test]
    fn messages_path_does_not_double_v1() {
        assert_eq!(messages_path(""), "/v1/messages");
        assert_eq!(messages_path("/v1"), "/v1/messages");
        assert_eq!(
            messages_path("/proxy/anthropic"),
            "/proxy/anthropic/v1/messages"
        );
        assert_eq!(messages_path("/x/v1/messages"), "/x/v1/messages");
    }
    /// The stream's events, recorded through the sink seam, fed `input` split at `splits`.
    fn recorded(input: &[u8], splits: &[usize]) -> GatewayResult<Vec<RecordedEvent>> {
        let mut t = MessagesStream::new(PROVIDER, &cx(true, false), "claude-sonnet-4-5");
        let mut log = EventLog::default();
        let mut start = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            t.feed_events(&input[start..s], &mut log)?;
            start = s;
        }
        t.finish_events(&mut log)?;
        Ok(log.events)
    }

    #[test]
    fn stream_emits_provider_neutral_events() {
        use RecordedEvent as E;
        let text = recorded(TEXT_STREAM.as_bytes(), &[]).unwrap();
        assert_eq!(
            text,
            vec![
                E::Start,
                E::Usage(Usage::new(30, 1).with_cached(5)),
                E::Reasoning("Hmm".into()),
                E::Text(String::new()),
                E::Text("Hello".into()),
                E::Text(", wörld \"\u{1F600}\"\n".into()),
                E::Start,
                E::Finish(FinishReason::Stop),
                // Prompt = input + cache reads, with the cached count kept for other formats.
                E::Usage(Usage::new(30, 15).with_cached(5)),
                E::Done,
            ]
        );
        let tools = recorded(TOOL_STREAM.as_bytes(), &[]).unwrap();
        assert_eq!(
            tools,
            vec![
                E::Start,
                E::Usage(Usage::new(400, 1)),
                E::Text(String::new()),
                E::Text("Checking both.".into()),
                E::ToolCallStart {
                    index: 0,
                    id: "toolu_A".into(),
                    name: "weather".into()
                },
                E::ToolCallArgs {
                    index: 0,
                    fragment: String::new()
                },
                E::ToolCallArgs {
                    index: 0,
                    fragment: "{\"city\": \"Pa".into()
                },
                E::ToolCallArgs {
                    index: 0,
                    fragment: "ris\"}".into()
                },
                E::ToolCallStart {
                    index: 1,
                    id: "toolu_B".into(),
                    name: "clock".into()
                },
                // An input-less call gets `{}` so every format's arguments parse.
                E::ToolCallArgs {
                    index: 1,
                    fragment: "{}".into()
                },
                E::Start,
                E::Finish(FinishReason::ToolCalls),
                E::Usage(Usage::new(400, 42)),
                E::Done,
            ]
        );
        // The events do not depend on how the bytes arrived.
        for input in [TEXT_STREAM, TOOL_STREAM] {
            let input = input.as_bytes();
            let whole = recorded(input, &[]).unwrap();
            for i in 0..=input.len() {
                assert_eq!(recorded(input, &[i]).unwrap(), whole, "split at {i}");
            }
        }
        // A stream cut before message_stop is the translator's error, not an event.
        let cut = &TEXT_STREAM.as_bytes()[..TEXT_STREAM.len() - 50];
        assert_eq!(recorded(cut, &[]).unwrap_err().status, 502);
    }
}
