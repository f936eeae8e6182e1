//! Ollama's native API (`ollama_chat/`, `ollama/`): OpenAI chat requests become
//! `POST {api_base}/api/chat` bodies, Ollama's responses and NDJSON streams become OpenAI
//! completions and chunks, and embeddings go to `POST {api_base}/api/embed`.
//!
//! Choices where Ollama has no OpenAI equivalent:
//! - Images must be inline: data URIs are sent as raw base64 in `images`; an http(s) image URL
//!   is a 400 (Ollama does not fetch URLs).
//! - `tool_choice`: Ollama has none. `auto` is its behaviour; `none` is honoured by not sending
//!   the tools; `required` and a named function cannot be expressed (400, or ignored with
//!   `drop_params`).
//! - Tool calls carry no ids: stable ids are derived from the response id and the call's index;
//!   a `tool` result is sent with the `tool_name` of the call its `tool_call_id` refers to.
//! - `stream` is always sent (Ollama streams by default).
//! - `user` (an end-user tag with no effect on output) is not forwarded; `n` must be 1;
//!   `parallel_tool_calls: true` is Ollama's behaviour; `false` cannot be expressed (400, or
//!   ignored with `drop_params`).

use super::framed::{EventTranslator, Framed};
use super::openai_compat::split_origin;
use super::{
    default_map_error, Operation, Provider, RequestContext, StreamTranslator, TranslatedResponse,
    UpstreamRequest,
};
use crate::codec::ndjson::NdjsonDecoder;
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{ErrorKind, GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent as Emit};
use crate::openai::request::{
    check_supported, ChatMessage, ContentPart, EmbeddingsRequest, ImageSource, MessageContent,
    ResponseFormat, Tool, ToolChoice,
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

const NAME: &str = "ollama";
const DEFAULT_BASE: &str = "http://localhost:11434";

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

const EMBED_SUPPORTED: &[&str] = &["model", "input", "encoding_format", "dimensions", "user"];

pub struct Ollama {
    origin: String,
    base_path: String,
    /// The configured model, for error hints only (requests use [`RequestContext::model`]; a
    /// wildcard deployment's is its pattern).
    model: String,
    auth: Option<String>,
}

/// Builds the provider if `dep.provider` is `ollama` or `ollama_chat`.
pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    if dep.provider != "ollama" && dep.provider != "ollama_chat" {
        return Ok(None);
    }
    let key_path = |key: &str| format!("model_list[{}].litellm_params.{key}", dep.index);
    let base = dep
        .params
        .api_base
        .clone()
        .or_else(|| std::env::var("OLLAMA_API_BASE").ok())
        .unwrap_or_else(|| DEFAULT_BASE.to_string());
    let base = base.trim_end_matches('/');
    let (origin, path) = split_origin(base).ok_or_else(|| {
        ConfigError::new(
            key_path("api_base"),
            format!("\"{base}\" must be an http:// or https:// URL (e.g. http://localhost:11434)"),
        )
    })?;
    // A base copied from an endpoint (`…/api/chat`) still means the server's root.
    let base_path = path
        .strip_suffix("/api/chat")
        .or_else(|| path.strip_suffix("/api/embed"))
        .unwrap_or(path);
    let auth = dep
        .params
        .api_key
        .clone()
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
    Ok(Some(Arc::new(Ollama {
        origin: origin.to_string(),
        base_path: base_path.to_string(),
        model: dep.model.clone(),
        auth,
    })))
}

#[async_trait]
impl Provider for Ollama {
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
        Box::new(Framed::<NdjsonDecoder, _>::new(
            OllamaStream {
                usage: None,
                response_id: cx.response_id.to_string(),
                tool_calls: 0,
                done: false,
            },
            ChunkWriter::new(cx.response_id, cx.created, cx.model, cx.include_usage),
        ))
    }

    fn map_error(&self, status: u16, headers: &ResponseHeader, body: &[u8]) -> GatewayError {
        let mut err = default_map_error(NAME, status, headers, body);
        if status == 404 && self.model.contains('*') {
            err.kind = ErrorKind::NotFound;
            err.code = Some("model_not_found".into());
            err.message = format!(
                "{} (the model is not available on the Ollama server at {}{}; pull it with `ollama pull <model>`)",
                err.message, self.origin, self.base_path
            );
        } else if status == 404 {
            err.kind = ErrorKind::NotFound;
            err.code = Some("model_not_found".into());
            err.message = format!(
                "{} (the model '{}' is not available on the Ollama server at {}{}; pull it with `ollama pull {}`)",
                err.message, self.model, self.origin, self.base_path, self.model
            );
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
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tools: Option<Vec<OutTool<'r>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Format<'r>>,
    #[serde(skip_serializing_if = "Options::is_empty")]
    options: Options<'r>,
}

#[derive(Serialize, Default)]
struct Options<'r> {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    num_predict: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'r [Cow<'r, str>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
}

impl Options<'_> {
    fn is_empty(&self) -> bool {
        self.temperature.is_none()
            && self.top_p.is_none()
            && self.num_predict.is_none()
            && self.stop.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
    }
}

#[derive(Serialize)]
struct OutMessage<'r> {
    role: &'static str,
    content: Cow<'r, str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<&'r str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'r>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_name: Option<&'r str>,
}

#[derive(Serialize)]
struct OutToolCall<'r> {
    function: OutFunction<'r>,
}

#[derive(Serialize)]
struct OutFunction<'r> {
    name: &'r str,
    /// Ollama takes the arguments as a JSON object, not a string.
    arguments: &'r RawValue,
}

/// Ollama's `format`: `"json"` or a JSON schema.
#[derive(Serialize)]
#[serde(untagged)]
enum Format<'r> {
    Json(&'static str),
    Schema(&'r RawValue),
}

/// An OpenAI function tool in the shape Ollama (and OpenAI) take.
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

impl Ollama {
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
                "Ollama may return several tool calls at once; parallel_tool_calls=false cannot be honoured",
            ));
        }
        let tools = match &req.tool_choice {
            Some(ToolChoice::None) => None,
            Some(ToolChoice::Required) | Some(ToolChoice::Function(_)) if !cx.drop_params => {
                return Err(unsupported(
                    "tool_choice",
                    "Ollama cannot force a tool call (only \"auto\" and \"none\" can be honoured)",
                ))
            }
            _ => req
                .tools
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| t.iter().map(out_tool).collect()),
        };
        let messages = out_messages(&req.messages)?;
        let format = match &req.response_format {
            None | Some(ResponseFormat::Text) => None,
            Some(ResponseFormat::JsonObject) => Some(Format::Json("json")),
            Some(ResponseFormat::JsonSchema { json_schema }) => Some(
                json_schema
                    .schema
                    .map_or(Format::Json("json"), Format::Schema),
            ),
        };
        let out = ChatBody {
            model: cx.model,
            messages,
            stream: cx.stream,
            tools,
            format,
            options: Options {
                temperature: req.temperature,
                top_p: req.top_p,
                num_predict: req.max_output_tokens(),
                stop: req.stop.as_deref().filter(|s| !s.is_empty()),
                seed: req.seed,
                presence_penalty: req.presence_penalty,
                frequency_penalty: req.frequency_penalty,
            },
        };
        let mut buf = Vec::with_capacity(256 + body.get("messages").map_or(0, |m| m.get().len()));
        serde_json::to_writer(&mut buf, &out)
            .map_err(|e| GatewayError::internal(format!("ollama: cannot encode request: {e}")))?;
        Ok(UpstreamRequest::post_json(
            format!("{}/api/chat", self.base_path),
            buf,
        ))
    }

    fn embed_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
    ) -> GatewayResult<UpstreamRequest> {
        #[derive(Serialize)]
        struct EmbedBody<'r> {
            model: &'r str,
            input: Vec<&'r str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            dimensions: Option<u32>,
        }
        check_supported(body, EMBED_SUPPORTED, cx.drop_params, NAME)?;
        let req = EmbeddingsRequest::from_body(body)?;
        let out = EmbedBody {
            model: cx.model,
            input: req.input.texts(NAME)?,
            dimensions: req.dimensions,
        };
        let buf = serde_json::to_vec(&out)
            .map_err(|e| GatewayError::internal(format!("ollama: cannot encode request: {e}")))?;
        Ok(UpstreamRequest::post_json(
            format!("{}/api/embed", self.base_path),
            buf,
        ))
    }
}

fn unsupported(param: &str, why: &str) -> GatewayError {
    GatewayError::invalid_param(
        param,
        format!("{NAME} does not support parameter '{param}': {why}. Remove it, or set drop_params: true to drop it."),
    )
    .with_code("unsupported_parameter")
}

fn bad_message(i: usize, msg: impl std::fmt::Display) -> GatewayError {
    GatewayError::invalid_param("messages", format!("messages[{i}]: {msg}"))
}

fn out_messages<'r>(messages: &'r [ChatMessage<'r>]) -> GatewayResult<Vec<OutMessage<'r>>> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let mut msg = OutMessage {
            role: "user",
            content: Cow::Borrowed(""),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_name: None,
        };
        match m.role.as_ref() {
            "system" | "developer" => msg.role = "system",
            "user" => msg.role = "user",
            "assistant" => msg.role = "assistant",
            "tool" => msg.role = "tool",
            other => {
                return Err(bad_message(
                    i,
                    format!("role '{other}' is not supported by ollama (use system, developer, user, assistant or tool)."),
                ))
            }
        }
        match &m.content {
            None => {}
            Some(MessageContent::Text(t)) => msg.content = Cow::Borrowed(t.as_ref()),
            Some(MessageContent::Parts(parts)) => {
                for p in parts {
                    match p {
                        ContentPart::Text { .. } => {}
                        ContentPart::ImageUrl { image_url } => match image_url.source()? {
                            ImageSource::Base64 { data, .. } => msg.images.push(data),
                            ImageSource::Url(_) => {
                                return Err(bad_message(
                                    i,
                                    "ollama takes images inline only: send image_url.url as a data:<mime>;base64,<data> URI, not an http(s) URL.",
                                ))
                            }
                        },
                        ContentPart::Unsupported => {
                            return Err(bad_message(
                                i,
                                "ollama accepts only text and image_url content parts.",
                            ))
                        }
                    }
                }
                msg.content = m
                    .content
                    .as_ref()
                    .map(|c| c.joined_text())
                    .unwrap_or_default();
            }
        }
        if let Some(calls) = &m.tool_calls {
            for c in calls {
                let args = c.function.arguments.trim();
                let arguments: &RawValue = if args.is_empty() {
                    serde_json::from_str("{}").map_err(|e| bad_message(i, e))?
                } else {
                    serde_json::from_str(args).map_err(|e| {
                        bad_message(
                            i,
                            format!(
                                "tool call '{}' has arguments that are not JSON ({e}).",
                                c.function.name
                            ),
                        )
                    })?
                };
                msg.tool_calls.push(OutToolCall {
                    function: OutFunction {
                        name: &c.function.name,
                        arguments,
                    },
                });
            }
        }
        if msg.role == "tool" {
            // Ollama matches results to calls by function name.
            msg.tool_name = m.tool_call_id.as_deref().and_then(|id| {
                messages[..i].iter().rev().find_map(|prev| {
                    prev.tool_calls
                        .as_ref()?
                        .iter()
                        .find(|c| c.id == id)
                        .map(|c| c.function.name.as_ref())
                })
            });
        }
        out.push(msg);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Response.

#[derive(Deserialize)]
struct ChatResponse<'a> {
    #[serde(default, borrow)]
    message: Option<ResponseMessage<'a>>,
    #[serde(default)]
    done: bool,
    #[serde(default, borrow)]
    done_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ResponseMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    /// Reasoning text of thinking models (`think: true`).
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ResponseToolCall<'a>>>,
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
    arguments: Option<&'a RawValue>,
}

impl ResponseFunction<'_> {
    /// The arguments as OpenAI's JSON string: an object's text, or a string's contents.
    fn arguments_json(&self) -> String {
        match self.arguments {
            None => "{}".to_string(),
            Some(raw) if raw.get().starts_with('"') => {
                serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string())
            }
            Some(raw) => raw.get().to_string(),
        }
    }
}

fn call_id(explicit: Option<Cow<'_, str>>, response_id: &str, index: usize) -> String {
    match explicit {
        Some(id) if !id.is_empty() => id.into_owned(),
        _ => {
            let tail = response_id.strip_prefix("chatcmpl-").unwrap_or(response_id);
            format!("call_{tail}_{index}")
        }
    }
}

fn finish_reason(done_reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match done_reason {
        Some("length") => FinishReason::Length,
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn mid_error(raw: &RawValue) -> GatewayError {
    let msg = serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string());
    GatewayError::new(ErrorKind::BadGateway, format!("ollama: {msg}"))
}

impl Ollama {
    fn parse_chat(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        let resp: ChatResponse = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "ollama: the upstream answered 2xx with a body that is not an Ollama chat response ({e})."
            ))
        })?;
        if let Some(err) = resp.error {
            return Err(mid_error(err));
        }
        let message = resp.message.ok_or_else(|| {
            GatewayError::bad_gateway("ollama: the upstream's chat response has no 'message'.")
        })?;
        let tool_calls: Vec<ToolCallOut> = message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let args = c.function.arguments_json();
                ToolCallOut::new(
                    call_id(c.id, cx.response_id, i),
                    c.function.name.into_owned(),
                    args,
                )
            })
            .collect();
        let content = message.content.map(Cow::into_owned);
        let content = match content {
            Some(c) if c.is_empty() && !tool_calls.is_empty() => None,
            None if tool_calls.is_empty() => Some(String::new()),
            c => c,
        };
        let finish = finish_reason(resp.done_reason.as_deref(), !tool_calls.is_empty());
        let usage = Usage::new(
            resp.prompt_eval_count.unwrap_or(0),
            resp.eval_count.unwrap_or(0),
        );
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
            embeddings: Vec<Vec<f32>>,
            #[serde(default)]
            prompt_eval_count: Option<u64>,
        }
        let resp: EmbedResponse = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "ollama: the upstream answered 2xx with a body that is not an Ollama embed response ({e})."
            ))
        })?;
        let usage = Usage::new(resp.prompt_eval_count.unwrap_or(0), 0);
        Ok(TranslatedResponse {
            body: embeddings_response(cx.model, &resp.embeddings, cx.embeddings_base64, usage),
            usage: Some(usage),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming.

/// Translates Ollama's NDJSON objects into stream events, one line at a time.
struct OllamaStream {
    usage: Option<Usage>,
    response_id: String,
    /// Tool calls emitted so far (the next call's OpenAI index).
    tool_calls: usize,
    /// The `done: true` object was seen.
    done: bool,
}

impl OllamaStream {
    fn on_line(&mut self, line: &[u8], sink: &mut dyn EventSink) -> GatewayResult<()> {
        if self.done {
            return Ok(());
        }
        let obj: ChatResponse = serde_json::from_slice(line).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "ollama: the upstream sent a stream line that is not JSON ({e})."
            ))
        })?;
        if let Some(err) = obj.error {
            return Err(mid_error(err));
        }
        sink.event(Emit::Start);
        if let Some(message) = obj.message {
            if let Some(text) = &message.thinking {
                sink.event(Emit::Reasoning(text));
            }
            if let Some(text) = &message.content {
                sink.event(Emit::Text(text));
            }
            for call in message.tool_calls.unwrap_or_default() {
                let index = self.tool_calls;
                self.tool_calls += 1;
                let args = call.function.arguments_json();
                let id = call_id(call.id, &self.response_id, index);
                sink.event(Emit::ToolCallStart {
                    index,
                    id: &id,
                    name: &call.function.name,
                });
                sink.event(Emit::ToolCallArgs {
                    index,
                    fragment: &args,
                });
            }
        }
        if obj.done {
            self.done = true;
            let usage = Usage::new(
                obj.prompt_eval_count.unwrap_or(0),
                obj.eval_count.unwrap_or(0),
            );
            self.usage = Some(usage);
            sink.event(Emit::Usage(usage));
            sink.event(Emit::Finish(finish_reason(
                obj.done_reason.as_deref(),
                self.tool_calls > 0,
            )));
        }
        Ok(())
    }
}

impl EventTranslator<NdjsonDecoder> for OllamaStream {
    fn on_event(&mut self, event: &[u8], sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.on_line(event, sink)
    }

    fn on_end(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
        if !self.done {
            return Err(GatewayError::bad_gateway(
                "ollama: the upstream ended the stream before its final (done: true) object.",
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
            model: "llama3.1",
            stream,
            include_usage: true,
            response_id: "chatcmpl-r1",
            created: 7,
            drop_params,
            embeddings_base64: false,
        }
    }

    fn provider() -> Ollama {
        Ollama {
            origin: "http://localhost:11434".into(),
            base_path: String::new(),
            model: "llama3.1".into(),
            auth: None,
        }
    }

    fn chat_body(req: &Value, stream: bool, drop_params: bool) -> GatewayResult<Value> {
        let raw = req.to_string();
        let body = RequestBody::parse(raw.as_bytes())?;
        let out = provider().chat_request(&body, &cx(Operation::Chat, stream, drop_params))?;
        assert_eq!(out.path, "/api/chat");
        Ok(serde_json::from_slice(&out.body).unwrap())
    }

    #[test]
    fn chat_request_golden() {
        let got = chat_body(
            &json!({
                "model": "o",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}
                    ]},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
                        {"id": "call_10", "type": "function", "function": {"name": "now", "arguments": ""}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
                    {"role": "tool", "tool_call_id": "call_10", "content": "noon"},
                    {"role": "tool", "tool_call_id": "unknown", "content": "?"}
                ],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
                "tool_choice": "auto",
                "max_tokens": 50, "stop": "END", "temperature": 0.1, "top_p": 0.5, "seed": 3,
                "response_format": {"type": "json_object"}
            }),
            false,
            false,
        )
        .unwrap();
        assert_eq!(
            got,
            json!({
                "model": "llama3.1",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is this?", "images": ["iVBORw0K"]},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                        {"function": {"name": "now", "arguments": {}}}
                    ]},
                    {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
                    {"role": "tool", "content": "noon", "tool_name": "now"},
                    {"role": "tool", "content": "?"}
                ],
                "stream": false,
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
                "format": "json",
                "options": {"temperature": 0.1, "top_p": 0.5, "num_predict": 50, "stop": ["END"], "seed": 3}
            })
        );
    }

    #[test]
    fn stream_flag_schema_format_and_tool_choice() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let got = chat_body(
            &json!({"model": "o", "messages": msgs, "stream": true}),
            true,
            false,
        )
        .unwrap();
        assert_eq!(
            got,
            json!({"model": "llama3.1", "messages": [{"role": "user", "content": "hi"}], "stream": true})
        );
        let got = chat_body(
            &json!({"model": "o", "messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": ["a"]}}}}),
            false,
            false,
        )
        .unwrap();
        assert_eq!(got["format"], json!({"type": "object", "required": ["a"]}));
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let none = chat_body(
            &json!({"model": "o", "messages": msgs, "tools": tools, "tool_choice": "none"}),
            false,
            false,
        )
        .unwrap();
        assert!(
            none.get("tools").is_none(),
            "tool_choice none withholds the tools"
        );
        let req =
            json!({"model": "o", "messages": msgs, "tools": tools, "tool_choice": "required"});
        let err = chat_body(&req, false, false).unwrap_err();
        assert_eq!(
            (err.status, err.param.as_deref()),
            (400, Some("tool_choice"))
        );
        assert_eq!(
            chat_body(&req, false, true).unwrap()["tools"][0]["function"]["name"],
            "f"
        );
    }

    #[test]
    fn bad_inputs_are_400s() {
        let url_image = json!({"model": "o", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
        let err = chat_body(&url_image, false, false).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("data:"), "{}", err.message);
        let bad_args = json!({"model": "o", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]});
        assert!(chat_body(&bad_args, false, false)
            .unwrap_err()
            .message
            .contains("'f'"));
        let extra =
            json!({"model": "o", "messages": [{"role": "user", "content": "x"}], "logprobs": true});
        assert_eq!(
            chat_body(&extra, false, false)
                .unwrap_err()
                .param
                .as_deref(),
            Some("logprobs")
        );
    }

    #[test]
    fn embed_request_golden() {
        let body = RequestBody::parse(br#"{"model":"e","input":"hello","dimensions":64}"#).unwrap();
        let req = provider()
            .embed_request(&body, &cx(Operation::Embeddings, false, false))
            .unwrap();
        assert_eq!(req.path, "/api/embed");
        assert_eq!(
            std::str::from_utf8(&req.body).unwrap(),
            r#"{"model":"llama3.1","input":["hello"],"dimensions":64}"#
        );
    }

    #[test]
    fn chat_response_golden() {
        let body = br#"{"model":"llama3.1","created_at":"2024-07-22T20:33:28Z","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Paris"}}},{"function":{"name":"f","arguments":"{\"a\":1}"}}]},"done":true,"done_reason":"stop","total_duration":1,"prompt_eval_count":26,"eval_count":12}"#;
        let out = provider()
            .parse_chat(body, &cx(Operation::Chat, false, false))
            .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            v["choices"][0]["message"]["tool_calls"],
            json!([
                {"id": "call_r1_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_r1_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
            ])
        );
        assert_eq!(out.usage, Some(Usage::new(26, 12)));
        let body = br#"{"message":{"role":"assistant","content":"Hi"},"done":true,"done_reason":"length","prompt_eval_count":3,"eval_count":5}"#;
        let v: Value = serde_json::from_slice(
            &provider()
                .parse_chat(body, &cx(Operation::Chat, false, false))
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(v["usage"]["total_tokens"], 8);
        let err = provider()
            .parse_chat(b"{\"done\":true}", &cx(Operation::Chat, false, false))
            .err()
            .unwrap();
        assert_eq!(err.status, 502);
    }

    #[test]
    fn embed_response_golden() {
        let body = br#"{"model":"all-minilm","embeddings":[[0.25,-1.0],[1.0,2.0]],"total_duration":1,"prompt_eval_count":8}"#;
        let out = provider()
            .parse_embed(body, &cx(Operation::Embeddings, false, false))
            .unwrap();
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["data"][0]["embedding"], json!([0.25, -1.0]));
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["usage"]["prompt_tokens"], 8);
    }

    #[test]
    fn model_not_found_names_the_model() {
        let h = ResponseHeader::build(404, None).unwrap();
        let e = provider().map_error(
            404,
            &h,
            br#"{"error":"model \"llama3.1\" not found, try pulling it first"}"#,
        );
        assert_eq!((e.status, e.kind), (404, ErrorKind::NotFound));
        assert_eq!(e.code.as_deref(), Some("model_not_found"));
        assert!(e.message.contains("'llama3.1'") && e.message.contains("ollama pull llama3.1"));
        let h = ResponseHeader::build(500, None).unwrap();
        let e = provider().map_error(500, &h, br#"{"error":"out of memory"}"#);
        assert_eq!(e.status, 500);
        assert!(e.message.contains("out of memory"));
    }

    // ---- streaming

    const TEXT_STREAM: &str = concat!(
        "{\"model\":\"llama3.1\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}\n",
        "{\"model\":\"llama3.1\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\" sky \\\"is\\\" bl\u{e9}\"},\"done\":false}\n",
        "{\"model\":\"llama3.1\",\"created_at\":\"t\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":5,\"prompt_eval_count\":26,\"eval_count\":290}\n",
    );

    const TOOL_STREAM: &str = concat!(
        "{\"model\":\"llama3.1\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}}]},\"done\":false}\n",
        "{\"model\":\"llama3.1\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Rome\"}}}]},\"done\":false}\n",
        "{\"model\":\"llama3.1\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":10,\"eval_count\":20}\n",
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
        let c = chunks(&translate(TEXT_STREAM.as_bytes(), &[], true).unwrap());
        assert_eq!(c[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = c
            .iter()
            .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "The sky \"is\" bl\u{e9}");
        let finishes: Vec<&Value> = c
            .iter()
            .filter_map(|c| c["choices"].get(0))
            .filter(|ch| !ch["finish_reason"].is_null())
            .collect();
        assert_eq!(finishes.len(), 1);
        assert_eq!(finishes[0]["finish_reason"], "stop");
        assert_eq!(
            c.last().unwrap()["usage"],
            json!({"prompt_tokens": 26, "completion_tokens": 290, "total_tokens": 316})
        );
        assert_every_split_identical(TEXT_STREAM);
    }

    #[test]
    fn tool_stream_golden() {
        let c = chunks(&translate(TOOL_STREAM.as_bytes(), &[], false).unwrap());
        let calls: Vec<&Value> = c
            .iter()
            .filter_map(|c| c["choices"].get(0)?["delta"].get("tool_calls"))
            .map(|t| &t[0])
            .collect();
        assert_eq!(
            calls,
            vec![
                &json!({"index": 0, "id": "call_r1_0", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
                &json!({"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}),
                &json!({"index": 1, "id": "call_r1_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
                &json!({"index": 1, "function": {"arguments": "{\"city\":\"Rome\"}"}}),
            ]
        );
        assert_eq!(
            c.last().unwrap()["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert!(c.iter().all(|c| c.get("usage").is_none()));
        assert_every_split_identical(TOOL_STREAM);
    }

    #[test]
    fn broken_streams_are_errors() {
        let first_line = &TEXT_STREAM[..TEXT_STREAM.find('\n').unwrap() + 1];
        let mid_error = format!("{first_line}{{\"error\":\"an unknown error was encountered while running the model\"}}\n");
        let err = translate(mid_error.as_bytes(), &[], true).unwrap_err();
        assert!(err.message.contains("unknown error was encountered"));
        assert_eq!(
            translate(first_line.as_bytes(), &[], true)
                .unwrap_err()
                .status,
            502
        );
        assert_eq!(translate(b"<html>\n", &[], true).unwrap_err().status, 502);
    }
}
