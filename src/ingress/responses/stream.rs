//! The Responses stream writer: stream events into the Responses API's typed SSE events
//! (`event: <type>` + `data: {...}`, each with a rising `sequence_number`), in the order the
//! OpenAI SDK's accumulator needs: `response.created`, `response.in_progress`, then per output
//! item `output_item.added` → (`content_part.added` → `output_text.delta`… →
//! `output_text.done` → `content_part.done`) or `function_call_arguments.delta`… →
//! `function_call_arguments.done`, → `output_item.done`, and exactly one terminal event
//! (`response.completed`, `response.incomplete`, or `error` + `response.failed`).
//!
//! A text item closes when a tool call starts; tool call items stay open (their argument
//! deltas may interleave) until the answer finishes.

use super::{call_item, message_item, status_for, Meta};
use crate::error::GatewayError;
use crate::events::{EventSink, StreamEvent};
use crate::ingress::chat_stream::{finish_reason, Piece};
use crate::openai::request::write_json_string;
use crate::openai::{FinishReason, Usage};
use bytes::BytesMut;
use serde_json::{json, Value};

struct OpenCall {
    /// The chat tool call index.
    tool_index: usize,
    output_index: usize,
    item_id: String,
    call_id: String,
    name: String,
    arguments: String,
}

/// Most answer bytes a stream keeps for its `.done` events and final Response (text, tool
/// call arguments, names and ids; each call counts [`CALL_OVERHEAD`] more). An answer past it
/// fails the stream with an `error` event and `response.failed`, rather than grow without
/// bound: 16 MiB is far beyond any model's output limit.
pub const MAX_KEPT_BYTES: usize = 16 * 1024 * 1024;

/// What each tool call counts against [`MAX_KEPT_BYTES`] besides its strings (its item).
const CALL_OVERHEAD: usize = 256;

/// Writes one Responses stream. Keeps the text and arguments so far: the `.done` events and
/// the final Response carry them whole (at most [`MAX_KEPT_BYTES`]).
pub struct ResponsesWriter {
    meta: Meta,
    out: Vec<u8>,
    seq: u64,
    started: bool,
    ended: bool,
    /// Output items by `output_index`; `Null` while the item is open.
    output: Vec<Value>,
    /// The open text item: its output index and text so far.
    message: Option<(usize, String)>,
    calls: Vec<OpenCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// Bytes kept so far, against [`MAX_KEPT_BYTES`].
    kept: usize,
}

impl ResponsesWriter {
    pub fn new(meta: Meta) -> Self {
        ResponsesWriter {
            meta,
            out: Vec::with_capacity(4096),
            seq: 0,
            started: false,
            ended: false,
            output: Vec::new(),
            message: None,
            calls: Vec::new(),
            finish: None,
            usage: None,
            kept: 0,
        }
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Moves what was written so far into `out`.
    pub fn drain_into(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.out);
        self.out.clear();
    }

    /// One piece of the chat stream, as events.
    pub fn piece(&mut self, piece: Piece<'_>) {
        match piece {
            Piece::Done => self.event(StreamEvent::Done),
            Piece::Error(e) => {
                let mut err = GatewayError::bad_gateway(e.message.clone());
                err.code = e.code_str();
                err.param = e.param.clone();
                self.event(StreamEvent::Error(&err));
            }
            Piece::Chunk(chunk) => {
                for choice in chunk.choices.iter().filter(|c| c.index == 0) {
                    let d = &choice.delta;
                    if let Some(r) = d.reasoning_content.as_deref() {
                        self.event(StreamEvent::Reasoning(r));
                    }
                    if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                        self.event(StreamEvent::Text(t));
                    }
                    if let Some(t) = d.refusal.as_deref().filter(|t| !t.is_empty()) {
                        self.event(StreamEvent::Text(t));
                    }
                    for call in d.tool_calls.iter().flatten() {
                        let f = call.function.as_ref();
                        if !self.calls.iter().any(|c| c.tool_index == call.index) {
                            self.event(StreamEvent::ToolCallStart {
                                index: call.index,
                                id: call.id.as_deref().unwrap_or(""),
                                name: f.and_then(|f| f.name.as_deref()).unwrap_or(""),
                            });
                        }
                        if let Some(args) = f
                            .and_then(|f| f.arguments.as_deref())
                            .filter(|a| !a.is_empty())
                        {
                            self.event(StreamEvent::ToolCallArgs {
                                index: call.index,
                                fragment: args,
                            });
                        }
                    }
                    if let Some(r) = choice.finish_reason.as_deref() {
                        self.event(StreamEvent::Finish(finish_reason(r)));
                    }
                }
                if let Some(u) = chunk.usage {
                    self.event(StreamEvent::Usage(u));
                }
            }
        }
    }

    /// The chat stream ended: a stream cut short of `[DONE]` still gets its terminal event.
    pub fn end(&mut self) {
        if !self.ended {
            self.event(StreamEvent::Done);
        }
    }

    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let r = self
            .meta
            .response("in_progress", Vec::new(), None, None, None);
        self.emit("response.created", json!({"response": r}));
        let r = self
            .meta
            .response("in_progress", Vec::new(), None, None, None);
        self.emit("response.in_progress", json!({"response": r}));
    }

    /// Writes one event: `fields` gets `type` and `sequence_number`.
    fn emit(&mut self, kind: &str, mut fields: Value) {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.seq);
        self.seq += 1;
        self.out.extend_from_slice(b"event: ");
        self.out.extend_from_slice(kind.as_bytes());
        self.out.extend_from_slice(b"\ndata: ");
        // Writing a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, &fields);
        self.out.extend_from_slice(b"\n\n");
    }

    /// A delta event, written directly: the hot path of a stream.
    fn emit_delta(
        &mut self,
        kind: &str,
        item_id: &str,
        output_index: usize,
        text: bool,
        delta: &str,
    ) {
        use std::fmt::Write as _;
        let mut head = String::with_capacity(96);
        let _ = write!(
            head,
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":{},\"item_id\":\"{item_id}\",\"output_index\":{output_index},",
            self.seq
        );
        self.seq += 1;
        self.out.extend_from_slice(head.as_bytes());
        if text {
            self.out
                .extend_from_slice(b"\"content_index\":0,\"logprobs\":[],");
        }
        self.out.extend_from_slice(b"\"delta\":");
        write_json_string(&mut self.out, delta);
        self.out.extend_from_slice(b"}\n\n");
    }

    fn text(&mut self, text: &str) {
        if self.message.is_none() {
            let index = self.output.len();
            self.output.push(Value::Null);
            self.message = Some((index, String::new()));
            let id = self.meta.message_id(index);
            self.emit(
                "response.output_item.added",
                json!({"output_index": index, "item": {"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
            );
            self.emit(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
        }
        let Some((index, so_far)) = self.message.as_mut() else {
            return;
        };
        so_far.push_str(text);
        let index = *index;
        let id = self.meta.message_id(index);
        self.emit_delta("response.output_text.delta", &id, index, true, text);
    }

    fn close_message(&mut self) {
        let Some((index, text)) = self.message.take() else {
            return;
        };
        let id = self.meta.message_id(index);
        self.emit(
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.emit(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}}),
        );
        let item = message_item(&id, &text, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.output[index] = item;
    }

    fn call_start(&mut self, tool_index: usize, call_id: &str, name: &str) {
        self.close_message();
        let output_index = self.output.len();
        self.output.push(Value::Null);
        let item_id = self.meta.call_item_id(output_index);
        let item = call_item(&item_id, call_id, name, "", "in_progress");
        self.emit(
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        self.calls.push(OpenCall {
            tool_index,
            output_index,
            item_id,
            call_id: call_id.to_string(),
            name: name.to_string(),
            arguments: String::new(),
        });
    }

    fn call_args(&mut self, tool_index: usize, fragment: &str) {
        let Some(pos) = self.calls.iter().position(|c| c.tool_index == tool_index) else {
            // Arguments for a call that never started: start it nameless.
            self.call_start(tool_index, "", "");
            return self.call_args(tool_index, fragment);
        };
        let call = &mut self.calls[pos];
        call.arguments.push_str(fragment);
        let (item_id, output_index) = (call.item_id.clone(), call.output_index);
        self.emit_delta(
            "response.function_call_arguments.delta",
            &item_id,
            output_index,
            false,
            fragment,
        );
    }

    /// Counts `bytes` more kept; past [`MAX_KEPT_BYTES`] the stream fails instead.
    fn keep(&mut self, bytes: usize) -> bool {
        self.kept = self.kept.saturating_add(bytes);
        if self.kept <= MAX_KEPT_BYTES {
            return true;
        }
        let err = GatewayError::bad_gateway(format!(
            "The answer is longer than the {} MiB a Responses stream keeps for its final \
             events; the stream was stopped.",
            MAX_KEPT_BYTES / (1024 * 1024)
        ));
        self.event(StreamEvent::Error(&err));
        false
    }

    fn close_all(&mut self) {
        self.close_message();
        for call in std::mem::take(&mut self.calls) {
            self.emit(
                "response.function_call_arguments.done",
                json!({"item_id": call.item_id, "output_index": call.output_index, "name": call.name, "arguments": call.arguments}),
            );
            let item = call_item(
                &call.item_id,
                &call.call_id,
                &call.name,
                &call.arguments,
                "completed",
            );
            self.emit(
                "response.output_item.done",
                json!({"output_index": call.output_index, "item": item}),
            );
            self.output[call.output_index] = item;
        }
    }
}

impl EventSink for ResponsesWriter {
    fn event(&mut self, event: StreamEvent<'_>) {
        if self.ended {
            return;
        }
        self.start();
        match event {
            StreamEvent::Start | StreamEvent::Reasoning(_) | StreamEvent::RawOpenAiChunk { .. } => {
            }
            StreamEvent::Text(t) => {
                if self.keep(t.len()) {
                    self.text(t)
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.keep(id.len() + name.len() + CALL_OVERHEAD) {
                    self.call_start(index, id, name)
                }
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                if self.keep(fragment.len()) {
                    self.call_args(index, fragment)
                }
            }
            StreamEvent::Finish(reason) => self.finish = Some(reason),
            StreamEvent::Usage(u) => self.usage = Some(u),
            StreamEvent::Done => {
                self.close_all();
                self.ended = true;
                let (status, incomplete) = status_for(self.finish);
                let output = std::mem::take(&mut self.output);
                let r = self
                    .meta
                    .response(status, output, self.usage.as_ref(), incomplete, None);
                let kind = if status == "completed" {
                    "response.completed"
                } else {
                    "response.incomplete"
                };
                self.emit(kind, json!({"response": r}));
            }
            StreamEvent::Error(err) => {
                self.ended = true;
                let code = err.code.clone().unwrap_or_else(|| "server_error".into());
                self.emit(
                    "error",
                    json!({"code": code, "message": err.message, "param": err.param}),
                );
                let output: Vec<Value> = std::mem::take(&mut self.output)
                    .into_iter()
                    .filter(|v| !v.is_null())
                    .collect();
                let r = self.meta.response(
                    "failed",
                    output,
                    self.usage.as_ref(),
                    None,
                    Some(json!({"code": "server_error", "message": err.message})),
                );
                self.emit("response.failed", json!({"response": r}));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::translate;
    use super::*;
    use serde_json::Value;

    /// The Responses events of a translated chat stream, fed in two pieces split at `split`.
    fn events(chat_sse: &str, split: usize) -> Vec<Value> {
        let mut t = translate(br#"{"model":"m","input":"hi","stream":true}"#).unwrap();
        let mut out = BytesMut::new();
        t.egress.feed(&chat_sse.as_bytes()[..split], &mut out);
        t.egress.feed(&chat_sse.as_bytes()[split..], &mut out);
        t.egress.finish(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        let mut events = Vec::new();
        for block in text.split("\n\n").filter(|b| !b.is_empty()) {
            let mut lines = block.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data: Value =
                serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap())
                    .unwrap();
            assert_eq!(data["type"], name);
            assert_eq!(data["sequence_number"], events.len());
            events.push(data);
        }
        events
    }

    /// Blanks what differs between runs: minted ids and timestamps.
    fn normalize(v: &mut Value) {
        match v {
            Value::String(s) => {
                for prefix in ["resp_", "msg_", "fc_"] {
                    if s.starts_with(prefix) {
                        *s = prefix.to_string();
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(normalize),
            Value::Object(o) => {
                for (k, v) in o.iter_mut() {
                    if k == "completed_at" || k == "created_at" {
                        *v = Value::Null;
                    } else {
                        normalize(v);
                    }
                }
            }
            _ => {}
        }
    }

    const TEXT_THEN_TOOL: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Let me \\\"check\\\" é\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn text_then_tool_call_under_every_split() {
        let reference = events(TEXT_THEN_TOOL, 0);
        let kinds: Vec<&str> = reference
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        assert_eq!(reference[5]["text"], "Let me \"check\" é");
        assert_eq!(reference[11]["arguments"], "{\"city\":\"Paris\"}");
        let done = &reference[13]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(done["output"][1]["name"], "get_weather");
        assert_eq!(done["usage"]["input_tokens"], 12);
        assert_eq!(done["usage"]["total_tokens"], 17);
        for split in 1..TEXT_THEN_TOOL.len() {
            assert_eq!(
                events(TEXT_THEN_TOOL, split).len(),
                reference.len(),
                "split {split}"
            );
            let mut a = events(TEXT_THEN_TOOL, split);
            let mut b = reference.clone();
            // Ids and timestamps aside, every split yields the same events.
            for e in a.iter_mut().chain(b.iter_mut()) {
                normalize(e);
            }
            assert_eq!(a, b, "split {split}");
        }
    }

    #[test]
    fn length_is_incomplete_and_an_error_fails_the_response() {
        let cut = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let ev = events(cut, 7);
        let last = ev.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );

        let failed = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"error\":{\"message\":\"upstream reset\",\"type\":\"x\",\"param\":null,\"code\":\"502\"}}\n\n",
            "data: [DONE]\n\n"
        );
        let ev = events(failed, 3);
        let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(&kinds[kinds.len() - 2..], ["error", "response.failed"]);
        assert_eq!(ev[ev.len() - 2]["message"], "upstream reset");
    }

    #[test]
    fn an_answer_past_the_kept_bound_fails_the_stream() {
        let (_, echo) = super::super::request::to_chat(br#"{"model":"m","input":"hi"}"#).unwrap();
        let mut w = ResponsesWriter::new(Meta::new(echo));
        let mib = "x".repeat(1024 * 1024);
        let mut out = BytesMut::new();
        for _ in 0..(MAX_KEPT_BYTES / mib.len() + 3) {
            w.event(StreamEvent::Text(&mib));
            w.drain_into(&mut out);
            out.clear();
        }
        w.event(StreamEvent::Text(&mib));
        w.event(StreamEvent::Done);
        w.drain_into(&mut out);
        assert!(out.is_empty(), "nothing after the failure");
        assert!(w.kept <= MAX_KEPT_BYTES + mib.len());
        let mut w = ResponsesWriter::new(Meta::new(
            super::super::request::to_chat(br#"{"model":"m","input":"hi"}"#)
                .unwrap()
                .1,
        ));
        for _ in 0..MAX_KEPT_BYTES / mib.len() {
            w.event(StreamEvent::Text(&mib));
        }
        w.drain_into(&mut BytesMut::new());
        w.event(StreamEvent::ToolCallArgs {
            index: 0,
            fragment: "{}",
        });
        let mut tail = BytesMut::new();
        w.drain_into(&mut tail);
        let text = String::from_utf8_lossy(&tail);
        assert!(text.contains("event: error\n"), "{text}");
        assert!(text.contains("event: response.failed\n"), "{text}");
        assert!(text.contains("MiB a Responses stream keeps"), "{text}");
    }

    #[test]
    fn whole_answer_becomes_a_response_object() {
        let mut t = translate(br#"{"model":"m","input":"hi","metadata":{"k":"v"}}"#).unwrap();
        let chat = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello","tool_calls":[{"id":"call_9","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1}}}"#;
        let r: Value = serde_json::from_slice(&t.egress.whole(chat).unwrap()).unwrap();
        assert!(r["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(r["output"][1]["type"], "function_call");
        assert_eq!(r["output"][1]["call_id"], "call_9");
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 1);
        assert_eq!(r["metadata"]["k"], "v");
        assert_eq!(r["store"], false);
        assert!(t.egress.whole(b"not json").is_err());
    }
}
