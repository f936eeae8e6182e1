//! Cohere v2 (`cohere_chat/`, `cohere/`): OpenAI chat requests become `POST /v2/chat` bodies,
//! Cohere's responses and SSE streams (`message-start` … `message-end`) become OpenAI
//! completions and chunks, and embeddings go to `POST /v2/embed`. `api_base` may be a base URL
//! (`/v2/chat` and `/v2/embed` are appended) or the full chat or embed endpoint, as LiteLLM
//! configs give it.
//!
//! Choices where Cohere has no OpenAI equivalent:
//! - `tool_choice`: Cohere only has `REQUIRED` and `NONE`. `auto` is the default (omitted); a
//!   named function is a 400 unless `drop_params` is on, in which case the call is sent with
//!   `REQUIRED` and `tools` narrowed to that one function, which forces exactly that call.
//! - `parallel_tool_calls: true` is Cohere's behaviour already; `false` cannot be expressed and
//!   is treated as an unsupported parameter.
//! - `user` is an end-user tag with no effect on the output; Cohere has no such field, so it is
//!   not forwarded. `n` must be 1.
//! - `tool_plan` (the model's reasoning before calling tools) is not part of the OpenAI message.

use super::framed::{EventTranslator, Framed};
use super::openai_compat::split_origin;
use super::{
    default_map_error, Operation, Provider, RequestContext, StreamTranslator, TranslatedResponse,
    UpstreamRequest,
};
use crate::codec::limits::MAX_STREAM_TOOL_CALLS;
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent as Emit};
use crate::openai::request::{
    check_supported, ChatMessage, ContentPart, EmbeddingsRequest, MessageContent, ResponseFormat,
    Tool, ToolChoice,
};
use crate::openai::response::{embeddings_response, ChatCompletion, ToolCallOut};
use crate::openai::{ChatRequest, ChunkWriter, FinishReason, RequestBody, Usage};
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use pingora_http::ResponseHeader;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::Arc;

const NAME: &str = "cohere";
const DEFAULT_BASE: &str = "https://api.cohere.com";

/// Chat parameters this translator sends (or deliberately ignores, see the module doc).
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
    "seed",
    "user",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
];

const EMBED_SUPPORTED: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "dimensions",
    "input_type",
    "user",
];

pub struct Cohere {
    origin: String,
    chat_path: String,
    embed_path: String,
    auth: Option<String>,
}

/// Builds the provider if `dep.provider` is `cohere` or `cohere_chat`.
pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    if dep.provider != "cohere" && dep.provider != "cohere_chat" {
        return Ok(None);
    }
    let key_path = |key: &str| format!("model_list[{}].litellm_params.{key}", dep.index);
    let base = dep
        .params
        .api_base
        .clone()
        .or_else(|| std::env::var("COHERE_API_BASE").ok())
        .unwrap_or_else(|| DEFAULT_BASE.to_string());
    let (origin, chat_path, embed_path) =
        endpoints(&base).map_err(|msg| ConfigError::new(key_path("api_base"), msg))?;
    let auth = dep
        .params
        .api_key
        .clone()
        .or_else(|| std::env::var("COHERE_API_KEY").ok())
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
    Ok(Some(Arc::new(Cohere {
        origin,
        chat_path,
        embed_path,
        auth,
    })))
}

/// `(origin, chat path, embed path)` from an `api_base` that is either a base URL or the full
/// `/v2/chat` (or `/v2/embed`) endpoint.
fn endpoints(api_base: &str) -> Result<(String, String, String), String> {
    let url = api_base.trim_end_matches('/');
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let (origin, path) = split_origin(url)
        .ok_or_else(|| format!("\"{api_base}\" must be an http:// or https:// URL"))?;
    let path = path.trim_end_matches('/');
    let prefix = if let Some(p) = path
        .strip_suffix("/v2/chat")
        .or_else(|| path.strip_suffix("/v2/embed"))
    {
        p
    } else if let Some(p) = path.strip_suffix("/v2") {
        p
    } else if path.ends_with("/v1/chat") || path.ends_with("/v1/embed") {
        return Err(format!(
            "\"{api_base}\" is a Cohere v1 endpoint; Switchboard speaks Cohere's v2 API. Use the base URL (e.g. https://api.cohere.com) or the v2 endpoint (…/v2/chat)."
        ));
    } else {
        path
    };
    Ok((
        origin.to_string(),
        format!("{prefix}/v2/chat"),
        format!("{prefix}/v2/embed"),
    ))
}

#[async_trait]
impl Provider for Cohere {
    fn name(&self) -> &'static str {
        NAME
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
        let mut req = match cx.op {
            Operation::Chat => self.chat_request(body, cx)?,
            Operation::Embeddings => self.embed_request(body, cx)?,
        };
        if let Some(auth) = &self.auth {
            req.header(http::header::AUTHORIZATION, auth)?;
        }
        if cx.stream {
            req.header(http::header::ACCEPT, "text/event-stream")?;
        }
        Ok(req)
    }

    fn parse_response(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        match cx.op {
            Operation::Chat => self.parse_chat(body, cx),
            Operation::Embeddings => self.parse_embed(body, cx),
        }
    }

    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(Framed::<SseDecoder, _>::new(
            CohereStream {
                usage: None,
                tool_indices: Vec::new(),
                response_id: cx.response_id.to_string(),
                ended: false,
            },
            ChunkWriter::new(cx.response_id, cx.created, cx.model, cx.include_usage),
        ))
    }

    fn map_error(&self, status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
        let mut err = default_map_error(NAME, status, headers, body);
        match status {
            // 498: invalid or expired token.
            498 => {
                err.kind = ErrorKind::Authentication;
                err.status = 401;
            }
            // 499: the request was cancelled on Cohere's side.
            499 => err.kind = ErrorKind::from_status(err.status),
            _ => {}
        }
        err
    }
}

// ---------------------------------------------------------------------------------------------
// Request.

#[derive(Serialize)]
struct ChatBody<'r> {
    model: &'r str,
    messages: Vec<OutMessage<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<OutTool<'r>>>,
    /// Cohere's one switch for OpenAI's per-tool `strict`: on when any tool asks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    strict_tools: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<OutResponseFormat<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<&'r [Cow<'r, str>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    stream: bool,
}

#[derive(Serialize)]
struct OutMessage<'r> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<OutContent<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<OutToolCall<'r>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'r str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutContent<'r> {
    Text(Cow<'r, str>),
    Parts(Vec<OutPart<'r>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'r> {
    Text { text: &'r str },
    ImageUrl { image_url: OutImage<'r> },
}

#[derive(Serialize)]
struct OutImage<'r> {
    url: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'r str>,
}

#[derive(Serialize)]
struct OutToolCall<'r> {
    id: &'r str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'r>,
}

#[derive(Serialize)]
struct OutFunction<'r> {
    name: &'r str,
    arguments: &'r str,
}

/// An OpenAI function tool, in the (identical) shape Cohere takes.
#[derive(Serialize)]
struct OutTool<'r> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutToolFunction<'r>,
}

#[derive(Serialize)]
struct OutToolFunction<'r> {
    name: &'r str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'r str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<&'r RawValue>,
}

fn out_tool<'r>(t: &'r Tool<'r>) -> OutTool<'r> {
    OutTool {
        kind: "function",
        function: OutToolFunction {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            parameters: t.function.parameters,
        },
    }
}

#[derive(Serialize)]
struct OutResponseFormat<'r> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    json_schema: Option<&'r RawValue>,
}

impl Cohere {
    fn chat_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
    ) -> GatewayResult<UpstreamRequest> {
        check_supported(body, CHAT_SUPPORTED, cx.drop_params, NAME)?;
        let req = ChatRequest::from_body(body)?;
        if req.n.is_some_and(|n| n != 1) && !cx.drop_params {
            return Err(unsupported("n", "only n=1 is supported"));
        }
        if req.parallel_tool_calls == Some(false) && !cx.drop_params {
            return Err(unsupported(
                "parallel_tool_calls",
                "Cohere always allows parallel tool calls; parallel_tool_calls=false cannot be honoured",
            ));
        }
        let messages = req
            .messages
            .iter()
            .enumerate()
            .map(|(i, m)| out_message(i, m))
            .collect::<GatewayResult<Vec<_>>>()?;

        let mut tools: Option<Vec<&Tool<'_>>> = req
            .tools
            .as_ref()
            .filter(|t| !t.is_empty())
            .map(|t| t.iter().collect());
        let tool_choice = match &req.tool_choice {
            None | Some(ToolChoice::Auto) => None,
            Some(ToolChoice::None) => Some("NONE"),
            Some(ToolChoice::Required) => Some("REQUIRED"),
            Some(ToolChoice::Function(name)) => {
                if !cx.drop_params {
                    return Err(unsupported(
                        "tool_choice",
                        "Cohere cannot force a named function (it only has REQUIRED and NONE). Use \"required\", or set drop_params: true to send REQUIRED with tools narrowed to that function",
                    ));
                }
                let all = tools.take().unwrap_or_default();
                let named: Vec<_> = all
                    .into_iter()
                    .filter(|t| t.function.name == *name)
                    .collect();
                if named.is_empty() {
                    return Err(GatewayError::invalid_param(
                        "tool_choice",
                        format!("tool_choice names function '{name}', which is not in 'tools'."),
                    ));
                }
                tools = Some(named);
                Some("REQUIRED")
            }
        };
        let response_format = match &req.response_format {
            None | Some(ResponseFormat::Text) => None,
            Some(ResponseFormat::JsonObject) => Some(OutResponseFormat {
                kind: "json_object",
                json_schema: None,
            }),
            Some(ResponseFormat::JsonSchema { json_schema }) => Some(OutResponseFormat {
                kind: "json_object",
                json_schema: json_schema.schema,
            }),
        };
        let strict_tools = tools
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t.function.strict == Some(true)))
            .then_some(true);
        let out = ChatBody {
            model: cx.model,
            messages,
            tools: tools.map(|t| t.into_iter().map(out_tool).collect()),
            strict_tools,
            tool_choice,
            response_format,
            max_tokens: req.max_output_tokens(),
            stop_sequences: req.stop.as_deref().filter(|s| !s.is_empty()),
            temperature: req.temperature,
            p: req.top_p,
            seed: req.seed,
            frequency_penalty: req.frequency_penalty,
            presence_penalty: req.presence_penalty,
            stream: cx.stream,
        };
        let mut buf = Vec::with_capacity(256 + body.get("messages").map_or(0, |m| m.get().len()));
        serde_json::to_writer(&mut buf, &out)
            .map_err(|e| GatewayError::internal(format!("cohere: cannot encode request: {e}")))?;
        Ok(UpstreamRequest::post_json(self.chat_path.clone(), buf))
    }

    fn embed_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
    ) -> GatewayResult<UpstreamRequest> {
        #[derive(Serialize)]
        struct EmbedBody<'r> {
            model: &'r str,
            texts: Vec<&'r str>,
            input_type: &'r str,
            embedding_types: [&'static str; 1],
            #[serde(skip_serializing_if = "Option::is_none")]
            output_dimension: Option<u32>,
        }
        check_supported(body, EMBED_SUPPORTED, cx.drop_params, NAME)?;
        let req = EmbeddingsRequest::from_body(body)?;
        let out = EmbedBody {
            model: cx.model,
            texts: req.input.texts(NAME)?,
            input_type: req.input_type.as_deref().unwrap_or("search_document"),
            embedding_types: ["float"],
            output_dimension: req.dimensions,
        };
        let buf = serde_json::to_vec(&out)
            .map_err(|e| GatewayError::internal(format!("cohere: cannot encode request: {e}")))?;
        Ok(UpstreamRequest::post_json(self.embed_path.clone(), buf))
    }
}

fn unsupported(param: &str, why: &str) -> GatewayError {
    GatewayError::invalid_param(
        param,
        format!("{NAME} does not support parameter '{param}': {why}. Remove it, or set drop_params: true to drop it."),
    )
    .with_code("unsupported_parameter")
}

fn out_message<'r>(i: usize, m: &'r ChatMessage<'r>) -> GatewayResult<OutMessage<'r>> {
    let text = |m: &'r ChatMessage<'r>| {
        m.content
            .as_ref()
            .map(|c| OutContent::Text(c.joined_text()))
    };
    let msg = match m.role.as_ref() {
        "system" | "developer" => OutMessage {
            role: "system",
            content: Some(text(m).unwrap_or(OutContent::Text(Cow::Borrowed("")))),
            tool_calls: None,
            tool_call_id: None,
        },
        "user" => OutMessage {
            role: "user",
            content: Some(match &m.content {
                None => OutContent::Text(Cow::Borrowed("")),
                Some(MessageContent::Text(t)) => OutContent::Text(Cow::Borrowed(t.as_ref())),
                Some(MessageContent::Parts(parts)) => OutContent::Parts(user_parts(i, parts)?),
            }),
            tool_calls: None,
            tool_call_id: None,
        },
        "assistant" => {
            let tool_calls = m.tool_calls.as_ref().filter(|c| !c.is_empty()).map(|calls| {
                calls
                    .iter()
                    .map(|c| OutToolCall {
                        id: &c.id,
                        kind: "function",
                        function: OutFunction {
                            name: &c.function.name,
                            arguments: if c.function.arguments.is_empty() {
                                "{}"
                            } else {
                                &c.function.arguments
                            },
                        },
                    })
                    .collect()
            });
            let content = text(m).filter(|c| !matches!(c, OutContent::Text(t) if t.is_empty()));
            OutMessage {
                role: "assistant",
                content: if content.is_none() && tool_calls.is_none() {
                    Some(OutContent::Text(Cow::Borrowed("")))
                } else {
                    content
                },
                tool_calls,
                tool_call_id: None,
            }
        }
        "tool" => OutMessage {
            role: "tool",
            content: Some(text(m).unwrap_or(OutContent::Text(Cow::Borrowed("")))),
            tool_calls: None,
            tool_call_id: Some(m.tool_call_id.as_deref().ok_or_else(|| {
                GatewayError::invalid_param(
                    "messages",
                    format!("messages[{i}]: a tool message needs 'tool_call_id'."),
                )
            })?),
        },
        other => {
            return Err(GatewayError::invalid_param(
                "messages",
                format!("messages[{i}]: role '{other}' is not supported by cohere (use system, developer, user, assistant or tool)."),
            ))
        }
    };
    Ok(msg)
}

fn user_parts<'r>(i: usize, parts: &'r [ContentPart<'r>]) -> GatewayResult<Vec<OutPart<'r>>> {
    parts
        .iter()
        .map(|p| match p {
            ContentPart::Text { text } => Ok(OutPart::Text { text }),
            ContentPart::ImageUrl { image_url } => {
                // Validates the URL (data URI or http[s]); Cohere takes both as given.
                image_url.source()?;
                Ok(OutPart::ImageUrl {
                    image_url: OutImage {
                        url: &image_url.url,
                        detail: image_url.detail.as_deref(),
                    },
                })
            }
            ContentPart::Unsupported => Err(GatewayError::invalid_param(
                "messages",
                format!("messages[{i}]: cohere accepts only text and image_url content parts."),
            )),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Response.

#[derive(Deserialize, Default, Clone, Copy)]
struct CohereUsage {
    #[serde(default)]
    tokens: Option<Units>,
    #[serde(default)]
    billed_units: Option<Units>,
    #[serde(default)]
    cached_tokens: Option<f64>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct Units {
    #[serde(default)]
    input_tokens: Option<f64>,
    #[serde(default)]
    output_tokens: Option<f64>,
}

impl CohereUsage {
    /// `tokens` (what the model saw) when present, else `billed_units`.
    fn to_usage(self) -> Usage {
        let pick = |f: fn(&Units) -> Option<f64>| {
            self.tokens
                .as_ref()
                .and_then(f)
                .or_else(|| self.billed_units.as_ref().and_then(f))
                .unwrap_or(0.0)
                .max(0.0) as u64
        };
        Usage::new(pick(|u| u.input_tokens), pick(|u| u.output_tokens))
            .with_cached(self.cached_tokens.unwrap_or(0.0).max(0.0) as u64)
    }
}

/// Cohere's finish reasons, compared case-insensitively (the API documents upper case, the SDK
/// lower case).
fn finish_reason(reason: &str, has_tool_calls: bool) -> FinishReason {
    let is = |name: &str| reason.eq_ignore_ascii_case(name);
    let mapped = if is("max_tokens") {
        FinishReason::Length
    } else if is("tool_call") {
        FinishReason::ToolCalls
    } else if is("error_toxic") || is("content_blocked") {
        FinishReason::ContentFilter
    } else {
        // complete, stop_sequence, and error/timeout/error_limit (no OpenAI equivalent).
        FinishReason::Stop
    };
    if mapped == FinishReason::Stop && has_tool_calls {
        FinishReason::ToolCalls
    } else {
        mapped
    }
}

#[derive(Deserialize)]
struct ChatResponse<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<ResponseMessage<'a>>,
    #[serde(default)]
    usage: Option<CohereUsage>,
}

#[derive(Deserialize)]
struct ResponseMessage<'a> {
    #[serde(default, borrow)]
    content: Option<ResponseContent<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ResponseToolCall<'a>>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ResponseContent<'a> {
    #[serde(borrow)]
    Text(Cow<'a, str>),
    #[serde(borrow)]
    Items(Vec<ContentItem<'a>>),
}

#[derive(Deserialize)]
struct ContentItem<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponseToolCall<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: ResponseFunction<'a>,
}

#[derive(Deserialize)]
struct ResponseFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// A stable id for a tool call the upstream gave none: derived from the response id and index.
fn synthetic_call_id(response_id: &str, index: usize) -> String {
    let tail = response_id.strip_prefix("chatcmpl-").unwrap_or(response_id);
    format!("call_{tail}_{index}")
}

impl Cohere {
    fn parse_chat(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        let resp: ChatResponse = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "cohere: the upstream answered 2xx with a body that is not a Cohere chat response ({e})."
            ))
        })?;
        let message = resp.message.ok_or_else(|| {
            GatewayError::bad_gateway("cohere: the upstream's chat response has no 'message'.")
        })?;
        let content = match message.content {
            None => None,
            Some(ResponseContent::Text(t)) => Some(t.into_owned()),
            Some(ResponseContent::Items(items)) => {
                let mut text = String::new();
                for item in &items {
                    if item.kind.as_deref().is_none_or(|k| k == "text") {
                        if let Some(t) = &item.text {
                            text.push_str(t);
                        }
                    }
                }
                (!items.is_empty()).then_some(text)
            }
        };
        let tool_calls: Vec<ToolCallOut> = message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                ToolCallOut::new(
                    c.id.map(Cow::into_owned)
                        .unwrap_or_else(|| synthetic_call_id(cx.response_id, i)),
                    c.function.name.into_owned(),
                    c.function
                        .arguments
                        .filter(|a| !a.is_empty())
                        .map_or_else(|| "{}".to_string(), Cow::into_owned),
                )
            })
            .collect();
        let finish = finish_reason(
            resp.finish_reason.as_deref().unwrap_or("COMPLETE"),
            !tool_calls.is_empty(),
        );
        let usage = resp.usage.unwrap_or_default().to_usage();
        let content = match content {
            Some(c) if c.is_empty() && !tool_calls.is_empty() => None,
            None if tool_calls.is_empty() => Some(String::new()),
            c => c,
        };
        let completion = ChatCompletion::single(
            cx.response_id,
            cx.created,
            cx.model,
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

    fn parse_embed(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        #[derive(Deserialize)]
        struct EmbedResponse {
            embeddings: Embeddings,
            #[serde(default)]
            meta: Option<Meta>,
        }
        #[derive(Deserialize)]
        struct Embeddings {
            float: Vec<Vec<f32>>,
        }
        #[derive(Deserialize)]
        struct Meta {
            #[serde(default)]
            billed_units: Option<Units>,
        }
        let resp: EmbedResponse = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "cohere: the upstream answered 2xx with a body that is not a Cohere embed response with float embeddings ({e})."
            ))
        })?;
        let prompt = resp
            .meta
            .and_then(|m| m.billed_units)
            .and_then(|u| u.input_tokens)
            .unwrap_or(0.0)
            .max(0.0) as u64;
        let usage = Usage::new(prompt, 0);
        Ok(TranslatedResponse {
            body: embeddings_response(
                cx.model,
                &resp.embeddings.float,
                cx.embeddings_base64,
                usage,
            ),
            usage: Some(usage),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming.

/// Translates Cohere's SSE events into stream events as they arrive.
struct CohereStream {
    usage: Option<Usage>,
    /// Cohere tool-call `index` → OpenAI tool-call index, in start order.
    tool_indices: Vec<u64>,
    response_id: String,
    /// `message-end` was seen.
    ended: bool,
}

#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ContentDelta<'a> {
    #[serde(borrow)]
    message: ContentDeltaMessage<'a>,
}
#[derive(Deserialize)]
struct ContentDeltaMessage<'a> {
    #[serde(borrow)]
    content: ContentDeltaText<'a>,
}
#[derive(Deserialize)]
struct ContentDeltaText<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(borrow)]
    message: ToolDeltaMessage<'a>,
}
#[derive(Deserialize)]
struct ToolDeltaMessage<'a> {
    #[serde(borrow)]
    tool_calls: ToolDeltaCall<'a>,
}
#[derive(Deserialize)]
struct ToolDeltaCall<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<ToolDeltaFunction<'a>>,
}
#[derive(Deserialize)]
struct ToolDeltaFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct EndDelta<'a> {
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: Option<CohereUsage>,
}

fn malformed(kind: &str, e: serde_json::Error) -> GatewayError {
    GatewayError::bad_gateway(format!(
        "cohere: the upstream sent a malformed '{kind}' stream event ({e})."
    ))
}

fn delta<'a, T: Deserialize<'a>>(kind: &str, raw: Option<&'a RawValue>) -> GatewayResult<T> {
    let raw = raw.ok_or_else(|| {
        GatewayError::bad_gateway(format!(
            "cohere: the upstream sent a '{kind}' stream event without 'delta'."
        ))
    })?;
    serde_json::from_str(raw.get()).map_err(|e| malformed(kind, e))
}

impl CohereStream {
    fn translate(&mut self, ev: SseEvent<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        let data = ev.data.trim();
        if data.is_empty() || data == "[DONE]" || self.ended {
            return Ok(());
        }
        let event: StreamEvent = serde_json::from_str(data).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "cohere: the upstream sent a stream event that is not JSON ({e})."
            ))
        })?;
        let kind = event.kind.as_deref().unwrap_or(ev.event);
        match kind {
            "message-start" => sink.event(Emit::Start),
            "content-start" | "content-delta" => {
                let d: ContentDelta = delta(kind, event.delta)?;
                if let Some(text) = d.message.content.text {
                    sink.event(Emit::Text(&text));
                }
            }
            "tool-call-start" => {
                let d: ToolDelta = delta(kind, event.delta)?;
                let call = d.message.tool_calls;
                let index = self.tool_indices.len();
                if index >= MAX_STREAM_TOOL_CALLS {
                    return Err(GatewayError::bad_gateway(format!(
                        "cohere: the stream started more than {MAX_STREAM_TOOL_CALLS} tool calls."
                    )));
                }
                self.tool_indices.push(event.index.unwrap_or(index as u64));
                let function = call.function.unwrap_or(ToolDeltaFunction {
                    name: None,
                    arguments: None,
                });
                let id = call
                    .id
                    .map(Cow::into_owned)
                    .unwrap_or_else(|| synthetic_call_id(&self.response_id, index));
                sink.event(Emit::ToolCallStart {
                    index,
                    id: &id,
                    name: function.name.as_deref().unwrap_or_default(),
                });
                if let Some(args) = function.arguments {
                    sink.event(Emit::ToolCallArgs {
                        index,
                        fragment: &args,
                    });
                }
            }
            "tool-call-delta" => {
                let d: ToolDelta = delta(kind, event.delta)?;
                let index = event
                    .index
                    .and_then(|i| self.tool_indices.iter().position(|&x| x == i))
                    .or_else(|| self.tool_indices.len().checked_sub(1))
                    .ok_or_else(|| {
                        GatewayError::bad_gateway(
                            "cohere: the upstream sent tool-call-delta before tool-call-start.",
                        )
                    })?;
                if let Some(args) = d.message.tool_calls.function.and_then(|f| f.arguments) {
                    sink.event(Emit::ToolCallArgs {
                        index,
                        fragment: &args,
                    });
                }
            }
            "message-end" => {
                let d: EndDelta = match event.delta {
                    Some(_) => delta(kind, event.delta)?,
                    None => EndDelta {
                        finish_reason: None,
                        usage: None,
                    },
                };
                if let Some(u) = d.usage {
                    let usage = u.to_usage();
                    self.usage = Some(usage);
                    sink.event(Emit::Usage(usage));
                }
                let reason = finish_reason(
                    d.finish_reason.as_deref().unwrap_or("COMPLETE"),
                    !self.tool_indices.is_empty(),
                );
                sink.event(Emit::Start);
                sink.event(Emit::Finish(reason));
                self.ended = true;
            }
            // content-end, tool-plan-delta, tool-call-end, citation-start/end, debug, and
            // anything newer carry nothing an OpenAI chunk has.
            _ => {}
        }
        Ok(())
    }
}

impl EventTranslator<SseDecoder> for CohereStream {
    fn on_event(&mut self, event: SseEvent<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.translate(event, sink)
    }

    fn on_end(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
        if !self.ended {
            return Err(GatewayError::bad_gateway(
                "cohere: the upstream ended the stream before message-end.",
            ));
        }
        sink.event(Emit::Done);
        Ok(())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use serde_json::{json, Value};

    fn cx(op: Operation, stream: bool, drop_params: bool) -> RequestContext<'static> {
        RequestContext {
            op,
            model: "command-r-plus",
            stream,
            include_usage: true,
            response_id: "chatcmpl-r1",
            created: 7,
            drop_params,
            embeddings_base64: false,
        }
    }

    fn provider() -> Cohere {
        let (origin, chat_path, embed_path) = endpoints("https://api.cohere.com").unwrap();
        Cohere {
            origin,
            chat_path,
            embed_path,
            auth: Some("Bearer k".into()),
        }
    }

    fn chat_body(req: &Value, drop_params: bool) -> GatewayResult<Value> {
        let raw = req.to_string();
        let body = RequestBody::parse(raw.as_bytes())?;
        let out = provider().chat_request(&body, &cx(Operation::Chat, false, drop_params))?;
        assert_eq!(out.path, "/v2/chat");
        Ok(serde_json::from_slice(&out.body).unwrap())
    }

    #[test]
    fn api_base_as_base_or_full_endpoint() {
        let e = |s: &str| endpoints(s).unwrap();
        let want = |o: &str, p: &str| {
            (
                o.to_string(),
                format!("{p}/v2/chat"),
                format!("{p}/v2/embed"),
            )
        };
        assert_eq!(
            e("https://api.cohere.com"),
            want("https://api.cohere.com", "")
        );
        assert_eq!(
            e("https://api.cohere.com/"),
            want("https://api.cohere.com", "")
        );
        assert_eq!(
            e("https://api.cohere.com/v2/chat"),
            want("https://api.cohere.com", "")
        );
        assert_eq!(
            e("https://api.cohere.com/v2/embed"),
            want("https://api.cohere.com", "")
        );
        assert_eq!(
            e("https://api.cohere.com/v2"),
            want("https://api.cohere.com", "")
        );
        assert_eq!(
            e("http://proxy:8080/cohere"),
            want("http://proxy:8080", "/cohere")
        );
        assert_eq!(
            e("http://proxy:8080/cohere/v2/chat/"),
            want("http://proxy:8080", "/cohere")
        );
        assert!(endpoints("https://api.cohere.com/v1/chat")
            .unwrap_err()
            .contains("v2"));
        assert!(endpoints("api.cohere.com").is_err());
    }

    #[test]
    fn chat_request_golden() {
        let got = chat_body(
            &json!({
                "model": "c", "stream": false,
                "messages": [
                    {"role": "developer", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {"role": "assistant", "content": "It is sunny."},
                    {"role": "user", "content": "Thanks"}
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "strict": true, "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "tool_choice": "required",
                "max_completion_tokens": 100, "stop": ["END"], "temperature": 0.3, "top_p": 0.9,
                "seed": 42, "frequency_penalty": 0.1, "presence_penalty": 0.2,
                "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
                "user": "u-1", "n": 1, "parallel_tool_calls": true
            }),
            false,
        )
        .unwrap();
        assert_eq!(
            got,
            json!({
                "model": "command-r-plus",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO", "detail": "low"}}
                    ]},
                    {"role": "assistant", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
                    {"role": "assistant", "content": "It is sunny."},
                    {"role": "user", "content": "Thanks"}
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "strict_tools": true,
                "tool_choice": "REQUIRED",
                "response_format": {"type": "json_object", "json_schema": {"type": "object"}},
                "max_tokens": 100, "stop_sequences": ["END"], "temperature": 0.3, "p": 0.9,
                "seed": 42, "frequency_penalty": 0.1, "presence_penalty": 0.2,
                "stream": false
            })
        );
    }

    #[test]
    fn tool_choice_modes() {
        let base = |choice: Value| {
            json!({"model": "c", "messages": [{"role": "user", "content": "hi"}],
                "tools": [
                    {"type": "function", "function": {"name": "a", "parameters": {}}},
                    {"type": "function", "function": {"name": "b", "parameters": {}}}
                ],
                "tool_choice": choice})
        };
        let auto = chat_body(&base(json!("auto")), false).unwrap();
        assert!(auto.get("tool_choice").is_none());
        assert!(auto.get("strict_tools").is_none());
        assert_eq!(auto["tools"].as_array().unwrap().len(), 2);
        assert_eq!(
            chat_body(&base(json!("none")), false).unwrap()["tool_choice"],
            "NONE"
        );
        let named = json!({"type": "function", "function": {"name": "b"}});
        let err = chat_body(&base(named.clone()), false).unwrap_err();
        assert_eq!(
            (err.status, err.param.as_deref()),
            (400, Some("tool_choice"))
        );
        assert!(err.message.contains("cohere"));
        // With drop_params: REQUIRED, tools narrowed to the named one, which forces it.
        let forced = chat_body(&base(named), true).unwrap();
        assert_eq!(forced["tool_choice"], "REQUIRED");
        assert_eq!(
            forced["tools"],
            json!([{"type": "function", "function": {"name": "b", "parameters": {}}}])
        );
        let missing = json!({"type": "function", "function": {"name": "zzz"}});
        assert_eq!(chat_body(&base(missing), true).unwrap_err().status, 400);
    }

    #[test]
    fn unsupported_params() {
        let req = json!({"model": "c", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 2}});
        let err = chat_body(&req, false).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("logit_bias"));
        assert!(chat_body(&req, true).unwrap().get("logit_bias").is_none());
        let req = json!({"model": "c", "messages": [{"role": "user", "content": "hi"}], "n": 2});
        assert_eq!(
            chat_body(&req, false).unwrap_err().param.as_deref(),
            Some("n")
        );
        let req = json!({"model": "c", "messages": [{"role": "wizard", "content": "hi"}]});
        assert_eq!(chat_body(&req, false).unwrap_err().status, 400);
        let req = json!({"model": "c", "messages": [{"role": "tool", "content": "x"}]});
        assert!(chat_body(&req, false)
            .unwrap_err()
            .message
            .contains("tool_call_id"));
    }

    #[test]
    fn embed_request_golden() {
        let p = provider();
        let body = RequestBody::parse(br#"{"model":"e","input":["a","b"]}"#).unwrap();
        let req = p
            .embed_request(&body, &cx(Operation::Embeddings, false, false))
            .unwrap();
        assert_eq!(req.path, "/v2/embed");
        assert_eq!(
            std::str::from_utf8(&req.body).unwrap(),
            r#"{"model":"command-r-plus","texts":["a","b"],"input_type":"search_document","embedding_types":["float"]}"#
        );
        let body = RequestBody::parse(
            br#"{"model":"e","input":"q","input_type":"search_query","dimensions":256}"#,
        )
        .unwrap();
        let req = p
            .embed_request(&body, &cx(Operation::Embeddings, false, false))
            .unwrap();
        let v: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["input_type"], "search_query");
        assert_eq!(v["output_dimension"], 256);
    }

    #[test]
    fn chat_response_golden() {
        let body = br#"{"id":"x","finish_reason":"TOOL_CALL","message":{"role":"assistant","content":[{"type":"text","text":"Let me "},{"type":"text","text":"check."}],"tool_plan":"I will call it","tool_calls":[{"id":"get_weather_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"type":"function","function":{"name":"noargs"}}]},"usage":{"billed_units":{"input_tokens":5,"output_tokens":6},"tokens":{"input_tokens":11.0,"output_tokens":7.0},"cached_tokens":4}}"#;
        let out = provider()
            .parse_chat(body, &cx(Operation::Chat, false, false))
            .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["id"], "chatcmpl-r1");
        assert_eq!(v["created"], 7);
        assert_eq!(v["object"], "chat.completion");
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([
                {"id": "get_weather_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_r1_1", "type": "function", "function": {"name": "noargs", "arguments": "{}"}}
            ])
        );
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "prompt_tokens_details": {"cached_tokens": 4}})
        );
    }

    #[test]
    fn finish_reasons_and_usage_fallback() {
        for (reason, want) in [
            ("COMPLETE", "stop"),
            ("complete", "stop"),
            ("STOP_SEQUENCE", "stop"),
            ("MAX_TOKENS", "length"),
            ("max_tokens", "length"),
            ("TOOL_CALL", "tool_calls"),
            ("ERROR_TOXIC", "content_filter"),
            ("content_blocked", "content_filter"),
            ("ERROR", "stop"),
        ] {
            let body = format!(
                r#"{{"finish_reason":"{reason}","message":{{"role":"assistant","content":[{{"type":"text","text":"x"}}]}},"usage":{{"billed_units":{{"input_tokens":3,"output_tokens":2}}}}}}"#
            );
            let out = provider()
                .parse_chat(body.as_bytes(), &cx(Operation::Chat, false, false))
                .unwrap();
            let v: Value = serde_json::from_slice(&out.body).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], want, "{reason}");
            assert_eq!(out.usage, Some(Usage::new(3, 2)));
        }
        for bad in [&b"not json"[..], b"{\"finish_reason\":\"COMPLETE\"}", b"[]"] {
            let err = provider()
                .parse_chat(bad, &cx(Operation::Chat, false, false))
                .err()
                .unwrap();
            assert_eq!(err.status, 502);
        }
    }

    #[test]
    fn embed_response_golden() {
        let body = br#"{"id":"e","embeddings":{"float":[[0.5,1.0],[1.0,0.0]]},"texts":["a","b"],"meta":{"billed_units":{"input_tokens":4}},"response_type":"embeddings_by_type"}"#;
        let mut c = cx(Operation::Embeddings, false, false);
        let out = provider().parse_embed(body, &c).unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["data"][1]["embedding"], json!([1.0, 0.0]));
        assert_eq!(v["usage"]["prompt_tokens"], 4);
        c.embeddings_base64 = true;
        let out = provider().parse_embed(body, &c).unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["data"][1]["embedding"], "AACAPwAAAAA=");
    }

    #[test]
    fn errors_mapped() {
        let p = provider();
        let h = ResponseHeader::build(498, None).unwrap();
        let e = p.map_error(498, &h, br#"{"id":"1","message":"invalid api token"}"#);
        assert_eq!((e.status, e.kind), (401, ErrorKind::Authentication));
        assert!(e.message.contains("invalid api token"));
        let mut h = ResponseHeader::build(429, None).unwrap();
        h.insert_header("retry-after", "7").unwrap();
        let e = p.map_error(429, &h, br#"{"message":"rate limited"}"#);
        assert_eq!((e.status, e.retry_after), (429, Some(7)));
        assert_eq!(e.code.as_deref(), Some("rate_limit_exceeded"));
        let h = ResponseHeader::build(400, None).unwrap();
        let e = p.map_error(
            400,
            &h,
            br#"{"message":"too many tokens: total number of tokens in the prompt cannot exceed 128000 - received 130000"}"#,
        );
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        let e = p.map_error(402, &h, br#"{"message":"please add a payment method"}"#);
        assert_eq!(e.status, 402);
    }

    // ---- streaming

    const TEXT_STREAM: &str = concat!(
        "event: message-start\n",
        "data: {\"id\":\"abc\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\",\"content\":[],\"tool_plan\":\"\",\"tool_calls\":[],\"citations\":[]}}}\n\n",
        "event: content-start\n",
        "data: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n",
        "event: content-delta\n",
        "data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Hello\"}}}}\n\n",
        "event: content-delta\n",
        "data: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\" w\u{f6}rld \\\"q\\\"\"}}}}\n\n",
        "event: citation-start\n",
        "data: {\"type\":\"citation-start\",\"index\":0,\"delta\":{\"message\":{\"citations\":{\"start\":0,\"end\":5,\"text\":\"Hello\",\"sources\":[]}}}}\n\n",
        "event: content-end\n",
        "data: {\"type\":\"content-end\",\"index\":0}\n\n",
        "event: message-end\n",
        "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"MAX_TOKENS\",\"usage\":{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":3},\"tokens\":{\"input_tokens\":12,\"output_tokens\":3}}}}\n\n",
    );

    // Data-only lines, as a server that sends no `event:` field would.
    const TOOL_STREAM: &str = concat!(
        "data: {\"id\":\"t\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n",
        "data: {\"type\":\"tool-plan-delta\",\"delta\":{\"message\":{\"tool_plan\":\"I will look it up\"}}}\n\n",
        "data: {\"type\":\"tool-call-start\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"get_weather_a1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"{\\\"loc\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-delta\",\"index\":0,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"ation\\\":\\\"Paris\\\"}\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-end\",\"index\":0}\n\n",
        "data: {\"type\":\"tool-call-start\",\"index\":1,\"delta\":{\"message\":{\"tool_calls\":{\"id\":\"get_weather_b2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"location\\\":\\\"Rome\\\"}\"}}}}}\n\n",
        "data: {\"type\":\"tool-call-end\",\"index\":1}\n\n",
        "data: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"TOOL_CALL\",\"usage\":{\"tokens\":{\"input_tokens\":20,\"output_tokens\":9}}}}\n\n",
    );

    fn translate(input: &[u8], splits: &[usize], include_usage: bool) -> GatewayResult<String> {
        let mut c = cx(Operation::Chat, true, false);
        c.include_usage = include_usage;
        let mut t = provider().stream_translator(&c);
        let mut out = BytesMut::new();
        let mut start = 0;
        for &s in splits.iter().chain(std::iter::once(&input.len())) {
            t.feed(&input[start..s], &mut out)?;
            start = s;
        }
        t.finish(&mut out)?;
        Ok(String::from_utf8(out.to_vec()).unwrap())
    }

    fn chunks(sse: &str) -> Vec<Value> {
        let data: Vec<&str> = sse
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"));
        data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    fn assert_every_split_identical(input: &str) {
        let input = input.as_bytes();
        let whole = translate(input, &[], true).unwrap();
        for i in 0..=input.len() {
            assert_eq!(translate(input, &[i], true).unwrap(), whole, "split at {i}");
        }
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(translate(input, &bytewise, true).unwrap(), whole);
    }

    #[test]
    fn text_stream_golden() {
        let out = translate(TEXT_STREAM.as_bytes(), &[], true).unwrap();
        let c = chunks(&out);
        assert_eq!(
            c[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let text: String = c
            .iter()
            .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello w\u{f6}rld \"q\"");
        let finishes: Vec<&Value> = c
            .iter()
            .filter(|c| {
                c["choices"]
                    .get(0)
                    .is_some_and(|ch| !ch["finish_reason"].is_null())
            })
            .collect();
        assert_eq!(finishes.len(), 1);
        assert_eq!(finishes[0]["choices"][0]["finish_reason"], "length");
        let last = c.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["prompt_tokens"], 12);
        assert_eq!(last["usage"]["total_tokens"], 15);
        assert!(c
            .iter()
            .all(|c| c["id"] == "chatcmpl-r1" && c["model"] == "command-r-plus"));
        // Without include_usage there is no usage chunk.
        let plain = chunks(&translate(TEXT_STREAM.as_bytes(), &[], false).unwrap());
        assert!(plain.iter().all(|c| c.get("usage").is_none()));
        assert_every_split_identical(TEXT_STREAM);
    }

    #[test]
    fn tool_stream_golden() {
        let out = translate(TOOL_STREAM.as_bytes(), &[], true).unwrap();
        let c = chunks(&out);
        let calls: Vec<&Value> = c
            .iter()
            .filter_map(|c| c["choices"].get(0)?["delta"].get("tool_calls"))
            .map(|t| &t[0])
            .collect();
        assert_eq!(
            calls,
            vec![
                &json!({"index": 0, "id": "get_weather_a1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
                &json!({"index": 0, "function": {"arguments": "{\"loc"}}),
                &json!({"index": 0, "function": {"arguments": "ation\":\"Paris\"}"}}),
                &json!({"index": 1, "id": "get_weather_b2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
                &json!({"index": 1, "function": {"arguments": "{\"location\":\"Rome\"}"}}),
            ]
        );
        // The tool plan is not content.
        assert!(!out.contains("look it up"));
        let finish: Vec<&Value> = c
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .filter(|ch| !ch["finish_reason"].is_null())
            .collect();
        assert_eq!(finish.len(), 1);
        assert_eq!(finish[0]["finish_reason"], "tool_calls");
        assert_eq!(c.last().unwrap()["usage"]["completion_tokens"], 9);
        assert_every_split_identical(TOOL_STREAM);
    }

    #[test]
    fn broken_streams_are_errors() {
        // Cut before message-end.
        let cut = &TEXT_STREAM[..TEXT_STREAM.find("event: message-end").unwrap()];
        assert_eq!(
            translate(cut.as_bytes(), &[], true).unwrap_err().status,
            502
        );
        // Not JSON.
        assert_eq!(
            translate(b"data: {oops\n\n", &[], true).unwrap_err().status,
            502
        );
        // A delta before any start.
        let orphan = b"data: {\"type\":\"tool-call-delta\",\"index\":3,\"delta\":{\"message\":{\"tool_calls\":{\"function\":{\"arguments\":\"x\"}}}}}\n\n";
        assert_eq!(translate(orphan, &[], true).unwrap_err().status, 502);
    }
}
