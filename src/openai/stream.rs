//! [`ChunkWriter`] turns translator events (text, tool-call starts and argument fragments, a
//! finish reason, usage) into OpenAI `chat.completion.chunk` SSE events, enforcing the stream
//! contract every provider must meet: role in the first delta, exactly one finish_reason, the
//! usage chunk (`choices: []`) only when the client asked for it, then `data: [DONE]`.
//! It is the state behind [`crate::events::OpenAiSink`], the OpenAI sink of stream events.

use super::response::{FinishReason, Usage};
use crate::error::GatewayError;
use bytes::BytesMut;
use std::io::Write;

pub struct ChunkWriter {
    /// `"id":"…","object":"chat.completion.chunk","created":…,"model":"…"` prefix, built once.
    prefix: Vec<u8>,
    include_usage: bool,
    role_sent: bool,
    finished: bool,
    done: bool,
    /// The upstream's own chunks are forwarded ([`ChunkWriter::raw`]): the stream contract is
    /// theirs, so `done` adds only `[DONE]`.
    raw: bool,
    usage: Option<Usage>,
}

impl ChunkWriter {
    pub fn new(id: &str, created: u64, model: &str, include_usage: bool) -> Self {
        let mut prefix = Vec::with_capacity(96 + id.len() + model.len());
        prefix.extend_from_slice(b"data: {\"id\":");
        let _ = serde_json::to_writer(&mut prefix, id);
        let _ = write!(
            prefix,
            ",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":"
        );
        let _ = serde_json::to_writer(&mut prefix, model);
        ChunkWriter {
            prefix,
            include_usage,
            role_sent: false,
            finished: false,
            done: false,
            raw: false,
            usage: None,
        }
    }

    /// A writer for an upstream that already speaks OpenAI: it forwards the upstream's chunks
    /// ([`ChunkWriter::raw`]) and never writes its own.
    pub fn passthrough(include_usage: bool) -> Self {
        ChunkWriter {
            prefix: Vec::new(),
            include_usage,
            role_sent: true,
            finished: false,
            done: false,
            raw: true,
            usage: None,
        }
    }

    /// Forwards one upstream chunk (the JSON of an SSE event's data) unchanged. The usage-only
    /// chunk the gateway asked for on the client's behalf is dropped unless the client asked.
    pub fn raw(&mut self, json: &str, usage_only: bool, out: &mut BytesMut) {
        if self.done {
            return;
        }
        self.raw = true;
        if usage_only && !self.include_usage {
            return;
        }
        out.reserve(json.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn open_delta(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":{");
        if !self.role_sent {
            out.extend_from_slice(b"\"role\":\"assistant\",");
            self.role_sent = true;
        }
    }

    fn close_delta(out: &mut BytesMut, finish: Option<FinishReason>) {
        // Remove a trailing comma left by open_delta when the delta has no other field.
        if out.last() == Some(&b',') {
            out.truncate(out.len() - 1);
        }
        out.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(r) => {
                out.extend_from_slice(b"\"");
                out.extend_from_slice(r.as_str().as_bytes());
                out.extend_from_slice(b"\"");
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
    }

    /// Emits the role-only first delta if nothing has been sent yet.
    pub fn start(&mut self, out: &mut BytesMut) {
        if !self.role_sent {
            self.open_delta(out);
            out.extend_from_slice(b"\"content\":\"\"");
            Self::close_delta(out, None);
        }
    }

    pub fn text(&mut self, text: &str, out: &mut BytesMut) {
        if text.is_empty() || self.finished {
            return;
        }
        self.open_delta(out);
        out.extend_from_slice(b"\"content\":");
        write_json(out, text);
        Self::close_delta(out, None);
    }

    /// The first delta of a tool call: id, type and name, with empty arguments.
    pub fn tool_call_start(&mut self, index: usize, id: &str, name: &str, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.open_delta(out);
        let _ = write!(WriteBuf(out), "\"tool_calls\":[{{\"index\":{index},\"id\":");
        write_json(out, id);
        out.extend_from_slice(b",\"type\":\"function\",\"function\":{\"name\":");
        write_json(out, name);
        out.extend_from_slice(b",\"arguments\":\"\"}}]");
        Self::close_delta(out, None);
    }

    /// A fragment of a tool call's JSON arguments.
    pub fn tool_call_args(&mut self, index: usize, fragment: &str, out: &mut BytesMut) {
        if fragment.is_empty() || self.finished {
            return;
        }
        self.open_delta(out);
        let _ = write!(
            WriteBuf(out),
            "\"tool_calls\":[{{\"index\":{index},\"function\":{{\"arguments\":"
        );
        write_json(out, fragment);
        out.extend_from_slice(b"}}]");
        Self::close_delta(out, None);
    }

    /// The one finish_reason chunk; later calls are ignored.
    pub fn finish(&mut self, reason: FinishReason, out: &mut BytesMut) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.open_delta(out);
        Self::close_delta(out, Some(reason));
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    pub fn set_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Ends a stream normally: a finish_reason if none was sent (`stop`), the usage chunk when
    /// the client asked for it, then `[DONE]`. Idempotent.
    pub fn done(&mut self, out: &mut BytesMut) {
        if self.done {
            return;
        }
        if self.raw {
            out.extend_from_slice(b"data: [DONE]\n\n");
            self.done = true;
            return;
        }
        self.finish(FinishReason::Stop, out);
        if self.include_usage {
            let usage = self.usage.unwrap_or_default();
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(b",\"choices\":[],\"usage\":");
            let _ = serde_json::to_writer(WriteBuf(out), &usage);
            out.extend_from_slice(b"}\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    /// Ends a stream with an error event (OpenAI's mid-stream error shape), then `[DONE]`.
    pub fn error(&mut self, err: &GatewayError, out: &mut BytesMut) {
        if self.done {
            return;
        }
        out.extend_from_slice(&err.sse_event());
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    pub fn is_done(&self) -> bool {
        self.done
    }
}

fn write_json(out: &mut BytesMut, s: &str) {
    let _ = serde_json::to_writer(WriteBuf(out), s);
}

/// `io::Write` over a `BytesMut` without the `bytes` crate's writer wrapper.
pub struct WriteBuf<'a>(pub &'a mut BytesMut);

impl Write for WriteBuf<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &BytesMut) -> Vec<serde_json::Value> {
        std::str::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn stream_contract() {
        let mut w = ChunkWriter::new("chatcmpl-1", 7, "m", true);
        let mut out = BytesMut::new();
        w.text("Hel", &mut out);
        w.text("lo \"x\"", &mut out);
        w.tool_call_start(0, "call_1", "get", &mut out);
        w.tool_call_args(0, "{\"a\":", &mut out);
        w.finish(FinishReason::ToolCalls, &mut out);
        w.finish(FinishReason::Stop, &mut out);
        w.set_usage(Usage::new(3, 4));
        w.done(&mut out);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
        let ev = events(&out);
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[0]["choices"][0]["delta"]["content"], "Hel");
        assert!(ev[1]["choices"][0]["delta"].get("role").is_none());
        assert_eq!(ev[1]["choices"][0]["delta"]["content"], "lo \"x\"");
        assert_eq!(
            ev[2]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
            "get"
        );
        assert_eq!(
            ev[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"a\":"
        );
        let finishes: Vec<_> = ev
            .iter()
            .filter(|e| {
                e["choices"]
                    .get(0)
                    .is_some_and(|c| !c["finish_reason"].is_null())
            })
            .collect();
        assert_eq!(finishes.len(), 1);
        assert_eq!(finishes[0]["choices"][0]["finish_reason"], "tool_calls");
        let last = ev.last().unwrap();
        assert_eq!(last["choices"].as_array().unwrap().len(), 0);
        assert_eq!(last["usage"]["total_tokens"], 7);
        assert!(ev.iter().all(|e| e["id"] == "chatcmpl-1"));
    }

    #[test]
    fn no_usage_chunk_unless_asked() {
        let mut w = ChunkWriter::new("id", 1, "m", false);
        let mut out = BytesMut::new();
        w.text("x", &mut out);
        w.set_usage(Usage::new(1, 1));
        w.done(&mut out);
        let ev = events(&out);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1]["choices"][0]["finish_reason"], "stop");
    }
}
