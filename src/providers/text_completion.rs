//! `text-completion-openai/<model>`: OpenAI's legacy completions endpoint (`POST
//! <base>/completions`, `gpt-3.5-turbo-instruct`, `davinci-002`, and any server with that
//! endpoint). As in LiteLLM, a chat call becomes a completions call: the messages' text is the
//! prompt (one message's text exactly, several joined by blank lines), and the answer comes back
//! as a chat completion. A `/v1/completions` request (one user message after the ingress
//! translation) thus reaches the upstream with its prompt verbatim.
//!
//! Base URL, key and organization are read as for `openai/` deployments (`api_base`,
//! `OPENAI_BASE_URL`/`OPENAI_API_BASE`, `OPENAI_API_KEY`): the request is built by the OpenAI
//! provider and sent to `completions` instead of `chat/completions`. Tools, `tool_choice` and
//! `response_format` have no completions counterpart: a 400, or dropped with `drop_params`.

use super::framed::{EventTranslator, Framed};
use super::{
    openai_compat, Operation, Provider, RequestContext, StreamTranslator, TranslatedResponse,
    UpstreamRequest,
};
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::config::{ConfigError, DeploymentConfig};
use crate::error::{GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent};
use crate::openai::request::{write_json_string, ChatMessage};
use crate::openai::{ChunkWriter, FinishReason, RequestBody, Usage};
use crate::upstream::UpstreamClient;
use async_trait::async_trait;
use serde::Deserialize;
use std::borrow::Cow;
use std::sync::Arc;

pub const PREFIX: &str = "text-completion-openai";

/// Chat fields with no completions counterpart, refused (or dropped with `drop_params`).
const UNSENDABLE: &[&str] = &[
    "tools",
    "tool_choice",
    "response_format",
    "functions",
    "function_call",
];
/// Chat fields not forwarded: rewritten here, or meaningless for completions.
const NOT_FORWARDED: &[&str] = &[
    "model",
    "messages",
    "max_completion_tokens",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "reasoning_effort",
];

pub struct TextCompletion {
    /// The OpenAI provider for the same deployment: base URL, key headers, organization.
    openai: Arc<dyn Provider>,
}

pub fn build(dep: &DeploymentConfig) -> Result<Option<Arc<dyn Provider>>, ConfigError> {
    if dep.provider != PREFIX {
        return Ok(None);
    }
    let mut as_openai = dep.clone();
    as_openai.provider = "openai".into();
    let openai = openai_compat::build(&as_openai)?.ok_or_else(|| {
        ConfigError::new(
            format!("model_list[{}].litellm_params.model", dep.index),
            "the openai provider is missing",
        )
    })?;
    Ok(Some(Arc::new(TextCompletion { openai })))
}

impl TextCompletion {
    /// The OpenAI provider's chat request, sent to `completions` instead.
    fn to_completions(
        &self,
        req: GatewayResult<UpstreamRequest>,
    ) -> GatewayResult<UpstreamRequest> {
        let mut req = req?;
        match req.path.strip_suffix("chat/completions") {
            Some(base) => req.path = format!("{base}completions"),
            None => {
                return Err(GatewayError::internal(
                    "text-completion-openai: unexpected OpenAI request path",
                ))
            }
        }
        Ok(req)
    }

    /// The completions body for a chat body (without `model`, which the OpenAI provider sets).
    fn completions_body(body: &RequestBody<'_>, cx: &RequestContext<'_>) -> GatewayResult<Vec<u8>> {
        let messages: Vec<ChatMessage<'_>> = body
            .typed("messages")?
            .ok_or_else(|| GatewayError::missing_field("messages"))?;
        let texts: Vec<Cow<'_, str>> = messages
            .iter()
            .filter_map(|m| m.content.as_ref().map(|c| c.joined_text()))
            .collect();
        let prompt = texts.join("\n\n");
        let mut out = Vec::with_capacity(prompt.len() + 256);
        out.extend_from_slice(b"{\"prompt\":");
        write_json_string(&mut out, &prompt);
        if let Some(max) = body
            .get("max_completion_tokens")
            .filter(|_| !body.has("max_tokens"))
        {
            out.extend_from_slice(b",\"max_tokens\":");
            out.extend_from_slice(max.get().as_bytes());
        }
        for (key, value) in body.fields() {
            if NOT_FORWARDED.contains(&key) {
                continue;
            }
            if UNSENDABLE.contains(&key) {
                if cx.drop_params || value.get() == "null" {
                    continue;
                }
                return Err(GatewayError::invalid_param(
                    key,
                    format!(
                        "'{key}' cannot be sent to a text-completion-openai model: the completions API takes a prompt only. Remove it, or set drop_params."
                    ),
                ));
            }
            out.push(b',');
            write_json_string(&mut out, key);
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        Ok(out)
    }
}

#[async_trait]
impl Provider for TextCompletion {
    fn name(&self) -> &'static str {
        PREFIX
    }

    fn native_n(&self) -> bool {
        true
    }

    fn base_url(&self) -> &str {
        self.openai.base_url()
    }

    fn supports(&self, op: Operation) -> bool {
        op == Operation::Chat
    }

    async fn build_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> GatewayResult<UpstreamRequest> {
        let completions = Self::completions_body(body, cx)?;
        let parsed = RequestBody::parse(&completions)?;
        self.to_completions(self.openai.build_request(&parsed, cx, client).await)
    }

    async fn completions_request(
        &self,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        Some(self.to_completions(self.openai.build_request(body, cx, client).await))
    }

    fn has_completions_api(&self) -> bool {
        true
    }

    fn parse_response(
        &self,
        body: &[u8],
        cx: &RequestContext<'_>,
    ) -> GatewayResult<TranslatedResponse> {
        let c: TextCompletionBody<'_> = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "{PREFIX}: the upstream's answer is not a text completion ({e})."
            ))
        })?;
        let choices: Vec<serde_json::Value> = c
            .choices
            .iter()
            .map(|ch| {
                serde_json::json!({
                    "index": ch.index,
                    "message": {"role": "assistant", "content": ch.text},
                    "logprobs": null,
                    "finish_reason": ch.finish_reason.as_deref().unwrap_or("stop"),
                })
            })
            .collect();
        let usage = c.usage.unwrap_or_default();
        let out = serde_json::json!({
            "id": cx.response_id,
            "object": "chat.completion",
            "created": c.created.unwrap_or(cx.created),
            "model": c.model.as_deref().unwrap_or(cx.model),
            "choices": choices,
            "usage": usage,
        });
        Ok(TranslatedResponse {
            body: bytes::Bytes::from(out.to_string()),
            usage: c.usage,
        })
    }

    fn stream_translator(&self, cx: &RequestContext<'_>) -> Box<dyn StreamTranslator> {
        Box::new(Framed::<SseDecoder, _>::new(
            TextStream::default(),
            ChunkWriter::new(cx.response_id, cx.created, cx.model, cx.include_usage),
        ))
    }
}

#[derive(Deserialize)]
struct TextCompletionBody<'a> {
    #[serde(default)]
    created: Option<u64>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Vec<TextChoice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct TextChoice<'a> {
    #[serde(default)]
    index: usize,
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

/// Completions SSE (`text_completion` chunks, `[DONE]`) into stream events. Only the first
/// choice streams (chat events carry one choice).
#[derive(Default)]
struct TextStream {
    usage: Option<Usage>,
    done: bool,
}

impl EventTranslator<SseDecoder> for TextStream {
    fn on_event(&mut self, ev: SseEvent<'_>, sink: &mut dyn EventSink) -> GatewayResult<()> {
        if self.done {
            return Ok(());
        }
        if ev.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let chunk: TextCompletionBody<'_> = serde_json::from_str(ev.data).map_err(|e| {
            GatewayError::bad_gateway(format!(
                "{PREFIX}: the upstream sent a stream event that is not a text completion chunk ({e})."
            ))
        })?;
        if chunk.error.is_some() {
            return Err(crate::providers::default_map_error(
                PREFIX,
                502,
                &pingora_http::ResponseHeader::build(502, None)
                    .map_err(|_| GatewayError::internal("header"))?,
                ev.data.as_bytes(),
            ));
        }
        sink.event(StreamEvent::Start);
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if !choice.text.is_empty() {
                sink.event(StreamEvent::Text(&choice.text));
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                sink.event(StreamEvent::Finish(match reason {
                    "length" => FinishReason::Length,
                    "content_filter" => FinishReason::ContentFilter,
                    _ => FinishReason::Stop,
                }));
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
            sink.event(StreamEvent::Usage(u));
        }
        Ok(())
    }

    fn on_end(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
        if !self.done {
            return Err(GatewayError::bad_gateway(format!(
                "{PREFIX}: the upstream ended the stream before [DONE]."
            )));
        }
        sink.event(StreamEvent::Done);
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

    fn cx(drop_params: bool) -> RequestContext<'static> {
        RequestContext {
            op: Operation::Chat,
            model: "gpt-3.5-turbo-instruct",
            stream: false,
            include_usage: false,
            response_id: "chatcmpl-1",
            created: 7,
            drop_params,
            embeddings_base64: false,
        }
    }

    #[test]
    fn chat_body_becomes_a_prompt() {
        let raw = br#"{"model":"m","messages":[{"role":"user","content":"Once upon"}],"max_completion_tokens":9,"stop":["\n"],"temperature":0,"tools":null}"#;
        let body = RequestBody::parse(raw).unwrap();
        let out: serde_json::Value =
            serde_json::from_slice(&TextCompletion::completions_body(&body, &cx(false)).unwrap())
                .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"prompt": "Once upon", "max_tokens": 9, "stop": ["\n"], "temperature": 0})
        );
        let raw = br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}"#;
        let body = RequestBody::parse(raw).unwrap();
        let e = TextCompletion::completions_body(&body, &cx(false)).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("tools")));
        assert!(TextCompletion::completions_body(&body, &cx(true)).is_ok());
    }

    #[test]
    fn stream_events_under_every_split() {
        let sse = concat!(
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":\" a time\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"model\":\"m\"}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],\"model\":\"m\"}\n\n",
            "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[],\"model\":\"m\",\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5}}\n\n",
            "data: [DONE]\n\n"
        );
        for split in 0..sse.len() {
            let mut t = Framed::<SseDecoder, _>::new(
                TextStream::default(),
                ChunkWriter::new("c", 1, "m", true),
            );
            let mut log = EventLog::default();
            t.feed_events(&sse.as_bytes()[..split], &mut log).unwrap();
            t.feed_events(&sse.as_bytes()[split..], &mut log).unwrap();
            t.finish_events(&mut log).unwrap();
            let texts: String = log
                .events
                .iter()
                .filter_map(|e| match e {
                    RecordedEvent::Text(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(texts, " a time", "split {split}");
            assert!(log
                .events
                .contains(&RecordedEvent::Finish(FinishReason::Length)));
            assert_eq!(log.events.last(), Some(&RecordedEvent::Done));
            assert_eq!(t.usage().map(|u| u.total_tokens), Some(5));
        }
    }
}
