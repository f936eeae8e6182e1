//! Streams to a `/v1/messages` client.
//!
//! - [`MessagesWriter`]: the Messages SSE event sink beside the OpenAI chunk writer: provider
//!   stream events in, `message_start`, `content_block_start/delta/stop` (`thinking_delta`
//!   from the provider's reasoning, `text_delta`, `input_json_delta`), `message_delta` (stop reason, usage), `message_stop` out. Blocks are
//!   written one after another, each closed when the next starts.
//! - [`ToMessages`]: a provider's stream translator driven into that sink, so the exchange
//!   streams a translated deployment exactly as it streams chat.
//! - [`PassThrough`]: an Anthropic-family deployment's own SSE, forwarded byte for byte while
//!   its usage is read for cost and spend.

use super::error::sse_event;
use super::response::{message_id, parse_finish, stop_reason, usage_json};
use crate::codec::eventstream::{EventStreamDecoder, Message};
use crate::codec::sse::SseDecoder;
use crate::error::{GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent};
use crate::openai::request::write_json_string;
use crate::openai::{FinishReason, Usage};
use crate::providers::anthropic::AnthropicUsage;
use crate::providers::{MessagesFraming, StreamTranslator};
use base64::Engine;
use bytes::BytesMut;
use serde::Deserialize;
use serde_json::json;
use std::borrow::Cow;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool,
}

/// The state of one Messages stream being written.
pub struct MessagesWriter {
    id: String,
    model: String,
    started: bool,
    /// The block being written and its index.
    open: Option<(Open, usize)>,
    next_block: usize,
    /// Tool call index → its block index (in start order; a handful at most).
    tools: Vec<(usize, usize)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    done: bool,
}

fn write_event(out: &mut BytesMut, name: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

fn json_string(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    write_json_string(&mut v, s);
    v
}

impl MessagesWriter {
    pub fn new(response_id: &str, model: &str) -> Self {
        MessagesWriter {
            id: message_id(response_id),
            model: model.to_string(),
            started: false,
            open: None,
            next_block: 0,
            tools: Vec::new(),
            finish: None,
            usage: None,
            done: false,
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let start = json!({"type": "message_start", "message": {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }});
        write_event(out, "message_start", start.to_string().as_bytes());
        write_event(out, "ping", br#"{"type":"ping"}"#);
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            let data = format!(r#"{{"type":"content_block_stop","index":{index}}}"#);
            write_event(out, "content_block_stop", data.as_bytes());
        }
    }

    fn text(&mut self, text: &str, out: &mut BytesMut) {
        self.delta(Open::Text, text, out);
    }

    /// Reasoning as a `thinking` block. The upstream signs nothing Anthropic could check, so
    /// its `signature` is empty (a translated deployment ignores thinking blocks sent back).
    fn thinking(&mut self, text: &str, out: &mut BytesMut) {
        self.delta(Open::Thinking, text, out);
    }

    /// Appends `text` to the open block of `kind`, opening one first when needed.
    fn delta(&mut self, kind: Open, text: &str, out: &mut BytesMut) {
        if text.is_empty() {
            return;
        }
        self.start(out);
        let (block, delta) = match kind {
            Open::Thinking => (
                r#"{"type":"thinking","thinking":"","signature":""}"#,
                r#""type":"thinking_delta","thinking":"#,
            ),
            _ => (
                r#"{"type":"text","text":""}"#,
                r#""type":"text_delta","text":"#,
            ),
        };
        let index = match self.open {
            Some((open, i)) if open == kind => i,
            _ => {
                self.close_block(out);
                let i = self.next_block;
                self.next_block += 1;
                self.open = Some((kind, i));
                let data = format!(
                    r#"{{"type":"content_block_start","index":{i},"content_block":{block}}}"#
                );
                write_event(out, "content_block_start", data.as_bytes());
                i
            }
        };
        let mut data = Vec::with_capacity(text.len() + 80);
        data.extend_from_slice(
            format!(r#"{{"type":"content_block_delta","index":{index},"delta":{{{delta}"#)
                .as_bytes(),
        );
        write_json_string(&mut data, text);
        data.extend_from_slice(b"}}");
        write_event(out, "content_block_delta", &data);
    }

    fn tool_start(&mut self, tool: usize, id: &str, name: &str, out: &mut BytesMut) {
        self.start(out);
        self.close_block(out);
        let i = self.next_block;
        self.next_block += 1;
        self.open = Some((Open::Tool, i));
        self.tools.push((tool, i));
        let mut data = Vec::with_capacity(id.len() + name.len() + 100);
        data.extend_from_slice(
            format!(r#"{{"type":"content_block_start","index":{i},"content_block":{{"type":"tool_use","id":"#).as_bytes(),
        );
        data.extend_from_slice(&json_string(id));
        data.extend_from_slice(br#","name":"#);
        data.extend_from_slice(&json_string(name));
        data.extend_from_slice(br#","input":{}}}"#);
        write_event(out, "content_block_start", &data);
    }

    fn tool_args(&mut self, tool: usize, fragment: &str, out: &mut BytesMut) {
        if fragment.is_empty() {
            return;
        }
        // Fragments of a call whose start was never seen have no block to go to.
        let Some(&(_, index)) = self.tools.iter().find(|(t, _)| *t == tool) else {
            return;
        };
        let mut data = Vec::with_capacity(fragment.len() + 96);
        data.extend_from_slice(
            format!(r#"{{"type":"content_block_delta","index":{index},"delta":{{"type":"input_json_delta","partial_json":"#).as_bytes(),
        );
        write_json_string(&mut data, fragment);
        data.extend_from_slice(b"}}");
        write_event(out, "content_block_delta", &data);
    }

    fn done(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        self.start(out);
        self.close_block(out);
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish), "stop_sequence": null},
            "usage": usage_json(self.usage),
        });
        write_event(out, "message_delta", delta.to_string().as_bytes());
        write_event(out, "message_stop", br#"{"type":"message_stop"}"#);
    }

    fn error(&mut self, err: &GatewayError, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.done = true;
        out.extend_from_slice(&sse_event(err));
    }

    /// An OpenAI chunk forwarded whole by an OpenAI-speaking upstream, read for its pieces.
    fn raw_chunk(&mut self, json: &str, out: &mut BytesMut) {
        let Ok(chunk) = serde_json::from_str::<Chunk<'_>>(json) else {
            return;
        };
        if let Some(err) = chunk.error {
            let message = err
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("The upstream stream failed.");
            self.error(&GatewayError::bad_gateway(message.to_string()), out);
            return;
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(u);
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(delta) = choice.delta {
                if let Some(reasoning) = delta.reasoning_content {
                    self.thinking(&reasoning, out);
                }
                if let Some(text) = delta.content {
                    self.text(&text, out);
                }
                for call in delta.tool_calls {
                    let function = call.function.unwrap_or_default();
                    if let Some(id) = call.id.filter(|id| !id.is_empty()) {
                        let name = function.name.as_deref().unwrap_or("");
                        self.tool_start(call.index, &id, name, out);
                    }
                    if let Some(args) = function.arguments {
                        self.tool_args(call.index, &args, out);
                    }
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = parse_finish(Some(&reason));
            }
        }
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: usize,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    /// Reasoning text, as DeepSeek, vLLM and LiteLLM name it.
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Vec<ToolDelta<'a>>,
}

#[derive(Deserialize)]
struct ToolDelta<'a> {
    #[serde(default)]
    index: usize,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize, Default)]
struct FunctionDelta<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

/// [`MessagesWriter`] writing into one output buffer.
pub struct MessagesSink<'a> {
    pub writer: &'a mut MessagesWriter,
    pub out: &'a mut BytesMut,
}

impl EventSink for MessagesSink<'_> {
    fn event(&mut self, event: StreamEvent<'_>) {
        let (w, out) = (&mut *self.writer, &mut *self.out);
        if w.done {
            return;
        }
        match event {
            StreamEvent::Start => w.start(out),
            StreamEvent::Text(text) => w.text(text, out),
            StreamEvent::Reasoning(text) => w.thinking(text, out),
            StreamEvent::ToolCallStart { index, id, name } => w.tool_start(index, id, name, out),
            StreamEvent::ToolCallArgs { index, fragment } => w.tool_args(index, fragment, out),
            StreamEvent::Finish(reason) => w.finish = Some(reason),
            StreamEvent::Usage(usage) => w.usage = Some(usage),
            StreamEvent::RawOpenAiChunk { json, .. } => w.raw_chunk(json, out),
            StreamEvent::Done => w.done(out),
            StreamEvent::Error(err) => w.error(err, out),
        }
    }
}

/// A provider's stream translator whose events are written as Messages SSE.
pub struct ToMessages {
    inner: Box<dyn StreamTranslator>,
    writer: MessagesWriter,
}

impl ToMessages {
    pub fn new(inner: Box<dyn StreamTranslator>, response_id: &str, model: &str) -> Self {
        ToMessages {
            inner,
            writer: MessagesWriter::new(response_id, model),
        }
    }
}

impl StreamTranslator for ToMessages {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> GatewayResult<()> {
        let mut sink = MessagesSink {
            writer: &mut self.writer,
            out,
        };
        self.inner.feed_events(input, &mut sink)
    }

    fn finish(&mut self, out: &mut BytesMut) -> GatewayResult<()> {
        let mut sink = MessagesSink {
            writer: &mut self.writer,
            out,
        };
        self.inner.finish_events(&mut sink)?;
        // Every translator ends with Done; one that did not still closes the message.
        self.writer.done(out);
        Ok(())
    }

    fn feed_events(&mut self, input: &[u8], sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.inner.feed_events(input, sink)
    }

    fn finish_events(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.inner.finish_events(sink)
    }

    fn usage(&self) -> Option<Usage> {
        self.inner.usage()
    }
}

/// An Anthropic-family deployment's Messages stream. Anthropic's SSE (Anthropic, Vertex) is
/// forwarded unchanged, decoded beside the copy only to read usage (`message_start`,
/// `message_delta`) and to notice a stream cut before `message_stop`; Bedrock's eventstream
/// `chunk`s are unwrapped into the same SSE, event for event.
#[derive(Default)]
pub struct PassThrough {
    decoder: SseDecoder,
    /// Bedrock: the eventstream decoder (the SSE decoder is then unused).
    bedrock: Option<EventStreamDecoder>,
    usage: Option<AnthropicUsage>,
    ended: bool,
}

#[derive(Deserialize)]
struct BedrockChunk<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

#[derive(Deserialize)]
struct EventType<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

#[derive(Deserialize)]
struct UsageEvent {
    #[serde(default)]
    message: Option<UsageHolder>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct UsageHolder {
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

impl PassThrough {
    pub fn new(framing: MessagesFraming) -> Self {
        PassThrough {
            bedrock: (framing == MessagesFraming::BedrockChunks).then(EventStreamDecoder::new),
            ..Self::default()
        }
    }

    /// One Bedrock eventstream message: a `chunk` becomes one SSE event in `out`; an exception
    /// fails the stream.
    fn bedrock_message(&mut self, m: Message<'_>, out: &mut BytesMut) -> GatewayResult<()> {
        let message_type = m.header_str(":message-type").unwrap_or("event");
        if message_type != "event" {
            let kind = m
                .header_str(":exception-type")
                .or(m.header_str(":error-code"))
                .unwrap_or("error");
            let text = String::from_utf8_lossy(&m.payload[..m.payload.len().min(512)]);
            return Err(GatewayError::bad_gateway(format!(
                "bedrock: the stream failed ({kind}): {text}"
            )));
        }
        if m.header_str(":event-type") != Some("chunk") {
            return Ok(());
        }
        let bad =
            |what: &str| GatewayError::bad_gateway(format!("bedrock: a stream chunk {what}."));
        let chunk: BedrockChunk<'_> =
            serde_json::from_slice(m.payload).map_err(|_| bad("is not {\"bytes\": …}"))?;
        let json = base64::engine::general_purpose::STANDARD
            .decode(chunk.bytes.as_bytes())
            .map_err(|_| bad("is not base64"))?;
        let json = String::from_utf8(json).map_err(|_| bad("is not UTF-8"))?;
        let kind: EventType<'_> =
            serde_json::from_str(&json).map_err(|_| bad("is not a Messages event"))?;
        let kind = kind.kind.into_owned();
        // SSE data is one line: re-serialize the rare event that is not.
        let line = if json.contains('\n') {
            serde_json::from_str::<serde_json::Value>(&json)
                .map(|v| v.to_string())
                .map_err(|_| bad("is not JSON"))?
        } else {
            json
        };
        write_event(out, &kind, line.as_bytes());
        self.on_event(&kind, &line);
        Ok(())
    }

    fn on_event(&mut self, event: &str, data: &str) {
        match event {
            "message_start" | "message_delta" => {
                if let Ok(ev) = serde_json::from_str::<UsageEvent>(data) {
                    if let Some(u) = ev.message.and_then(|m| m.usage).or(ev.usage) {
                        self.usage
                            .get_or_insert_with(AnthropicUsage::default)
                            .update(&u);
                    }
                }
            }
            "message_stop" | "error" => self.ended = true,
            _ => {}
        }
    }
}

impl StreamTranslator for PassThrough {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> GatewayResult<()> {
        if let Some(mut decoder) = self.bedrock.take() {
            let r = decoder.feed(input, &mut |m| self.bedrock_message(m, out));
            self.bedrock = Some(decoder);
            return r;
        }
        out.extend_from_slice(input);
        let mut decoder = std::mem::take(&mut self.decoder);
        let r = decoder.feed(input, &mut |ev| -> GatewayResult<()> {
            self.on_event(ev.event, ev.data);
            Ok(())
        });
        self.decoder = decoder;
        r
    }

    fn finish(&mut self, _out: &mut BytesMut) -> GatewayResult<()> {
        if let Some(decoder) = &mut self.bedrock {
            decoder.finish()?;
        } else {
            let mut decoder = std::mem::take(&mut self.decoder);
            decoder.finish(&mut |ev| -> GatewayResult<()> {
                self.on_event(ev.event, ev.data);
                Ok(())
            })?;
        }
        if !self.ended {
            return Err(GatewayError::bad_gateway(
                "The upstream ended the Messages stream before message_stop.",
            ));
        }
        Ok(())
    }

    fn feed_events(&mut self, input: &[u8], _sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.feed(input, &mut BytesMut::new())
    }

    fn finish_events(&mut self, _sink: &mut dyn EventSink) -> GatewayResult<()> {
        self.finish(&mut BytesMut::new())
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.map(AnthropicUsage::to_openai)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Anthropic SSE as (event, data) pairs.
    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_string();
                let data = data.strip_prefix("data: ").unwrap();
                (name, serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    #[test]
    fn reasoning_becomes_a_thinking_block_before_the_text() {
        let mut w = MessagesWriter::new("chatcmpl-ab", "m");
        let mut out = BytesMut::new();
        let mut sink = MessagesSink {
            writer: &mut w,
            out: &mut out,
        };
        sink.event(StreamEvent::Start);
        sink.event(StreamEvent::Reasoning("Let me "));
        sink.event(StreamEvent::Reasoning("think."));
        sink.event(StreamEvent::Text("42"));
        sink.event(StreamEvent::Done);
        let evs = events(&out);
        let blocks: Vec<&Value> = evs
            .iter()
            .filter(|(n, _)| n == "content_block_start")
            .map(|(_, d)| &d["content_block"])
            .collect();
        assert_eq!(
            blocks,
            [
                &serde_json::json!({"type": "thinking", "thinking": "", "signature": ""}),
                &serde_json::json!({"type": "text", "text": ""})
            ]
        );
        let deltas: Vec<&Value> = evs
            .iter()
            .filter(|(n, _)| n == "content_block_delta")
            .map(|(_, d)| d)
            .collect();
        assert_eq!(deltas[0]["delta"]["type"], "thinking_delta");
        assert_eq!(deltas[1]["delta"]["thinking"], "think.");
        assert_eq!(
            (deltas[1]["index"].as_u64(), deltas[2]["index"].as_u64()),
            (Some(0), Some(1))
        );
        assert_eq!(
            deltas[2]["delta"],
            serde_json::json!({"type": "text_delta", "text": "42"})
        );
    }

    #[test]
    fn events_become_messages_sse() {
        let mut w = MessagesWriter::new("chatcmpl-ab-cd", "claude-x");
        let mut out = BytesMut::new();
        let mut sink = MessagesSink {
            writer: &mut w,
            out: &mut out,
        };
        sink.event(StreamEvent::Start);
        sink.event(StreamEvent::Text("Hi"));
        sink.event(StreamEvent::Text(" there"));
        sink.event(StreamEvent::ToolCallStart {
            index: 0,
            id: "call_1",
            name: "get_weather",
        });
        sink.event(StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "{\"city\":",
        });
        sink.event(StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "\"Paris\"}",
        });
        sink.event(StreamEvent::Finish(FinishReason::ToolCalls));
        sink.event(StreamEvent::Usage(Usage::new(10, 4)));
        sink.event(StreamEvent::Done);
        let evs = events(&out);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(evs[0].1["message"]["id"], "msg_abcd");
        assert_eq!(
            evs[6].1,
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}})
        );
        assert_eq!(
            evs[7].1["delta"],
            json!({"type": "input_json_delta", "partial_json": "{\"city\":"})
        );
        assert_eq!(evs[10].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(evs[10].1["usage"]["output_tokens"], 4);
        assert_eq!(evs[10].1["usage"]["input_tokens"], 10);
    }

    /// A deployment's real provider (`litellm_params.model` = `model`).
    fn provider(model: &str) -> std::sync::Arc<dyn crate::providers::Provider> {
        use crate::providers::{build_provider, BuildContext};
        let yaml = format!(
            "model_list:\n  - model_name: m\n    litellm_params: {{model: {model}, api_base: http://127.0.0.1:9, api_key: k}}\n"
        );
        let config = crate::config::litellm::parse(&yaml).unwrap();
        let client = std::sync::Arc::new(crate::upstream::UpstreamClient::new(1));
        build_provider(&config.deployments[0], &BuildContext { client }).unwrap()
    }

    /// Feeds `input` split at `at` through the provider's translator into Messages SSE.
    fn to_messages(p: &dyn crate::providers::Provider, input: &[u8], at: usize) -> Vec<u8> {
        use crate::providers::{Operation, RequestContext};
        let cx = RequestContext {
            op: Operation::Chat,
            model: "x",
            stream: true,
            include_usage: true,
            response_id: "chatcmpl-1",
            created: 1,
            drop_params: false,
            embeddings_base64: false,
        };
        let mut t = ToMessages::new(p.stream_translator(&cx), "chatcmpl-1", "m");
        let mut out = BytesMut::new();
        t.feed(&input[..at], &mut out).unwrap();
        t.feed(&input[at..], &mut out).unwrap();
        t.finish(&mut out).unwrap();
        out.to_vec()
    }

    /// Golden: each provider's tool-call stream, split at every byte, gives the same Messages
    /// events, and the `input_json_delta`s join to exactly the arguments sent.
    #[test]
    fn tool_use_streams_are_exact_at_every_byte_split() {
        let openai = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"On it \\u00e9\"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": \\\"Pa\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ris\\\"}\"}}]}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n",
            "data: [DONE]\n\n",
        );
        let anthropic = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"On it \\u00e9\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Pa\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ris\\\"}\"}}\n\n",
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":4}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        for (model, input) in [("openai/x", openai), ("anthropic/x", anthropic)] {
            let input = input.as_bytes();
            let p = provider(model);
            let whole = to_messages(p.as_ref(), input, input.len());
            let evs = events(&whole);
            let text: String = evs
                .iter()
                .filter(|(_, d)| d["delta"]["type"] == "text_delta")
                .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(text, "On it \u{e9}", "{model}");
            let args: String = evs
                .iter()
                .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
                .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(args, "{\"city\": \"Paris\"}", "{model}");
            let tool_start = evs
                .iter()
                .find(|(_, d)| d["content_block"]["type"] == "tool_use")
                .expect("a tool_use block");
            assert_eq!(tool_start.1["index"], 1, "{model}");
            assert_eq!(tool_start.1["content_block"]["id"], "call_1", "{model}");
            let delta = &evs[evs.len() - 2].1;
            assert_eq!(delta["delta"]["stop_reason"], "tool_use", "{model}");
            assert_eq!(delta["usage"]["output_tokens"], 4, "{model}");
            assert_eq!(delta["usage"]["input_tokens"], 9, "{model}");
            for at in 0..input.len() {
                assert_eq!(
                    to_messages(p.as_ref(), input, at),
                    whole,
                    "{model} split at {at}"
                );
            }
        }
    }

    #[test]
    fn passthrough_copies_bytes_and_reads_usage_at_every_split() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":4,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        for split in 0..input.len() {
            let mut t = PassThrough::new(MessagesFraming::Sse);
            let mut out = BytesMut::new();
            t.feed(&input.as_bytes()[..split], &mut out).unwrap();
            t.feed(&input.as_bytes()[split..], &mut out).unwrap();
            t.finish(&mut out).unwrap();
            assert_eq!(&out[..], input.as_bytes());
            let u = t.usage().unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.cached_tokens()),
                (16, 9, 4)
            );
        }
        let mut cut = PassThrough::new(MessagesFraming::Sse);
        cut.feed(&input.as_bytes()[..200], &mut BytesMut::new())
            .unwrap();
        assert_eq!(cut.finish(&mut BytesMut::new()).unwrap_err().status, 502);
    }
}
