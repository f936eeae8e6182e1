//! The native Responses pass-through (`/v1/responses` to OpenAI and Azure OpenAI, which have
//! the API): the client's body goes upstream with only `model` replaced
//! (`Provider::responses_request`), and the answer comes back byte for byte. What the gateway
//! needs from it is read by cheap scans, never a re-encoding: the usage (spend, limits,
//! telemetry) from the whole body's top-level `usage` or the stream's terminal event, and the
//! response id, so a later `previous_response_id` goes back to the deployment that holds the
//! response ([`Origins`]).

use crate::codec::sse::SseDecoder;
use crate::error::{GatewayError, GatewayResult};
use crate::events::EventSink;
use crate::openai::response::{CompletionTokensDetails, PromptTokensDetails};
use crate::openai::{scan, Usage};
use crate::providers::StreamTranslator;
use bytes::BytesMut;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// A Response object's `usage`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
pub struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl ResponsesUsage {
    /// In the chat shape the gateway accounts in.
    pub fn to_chat(self) -> Usage {
        let cached = self.input_tokens_details.map_or(0, |d| d.cached_tokens);
        let reasoning = self.output_tokens_details.map_or(0, |d| d.reasoning_tokens);
        Usage {
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            total_tokens: if self.total_tokens > 0 {
                self.total_tokens
            } else {
                self.input_tokens + self.output_tokens
            },
            prompt_tokens_details: (cached > 0).then_some(PromptTokensDetails {
                cached_tokens: cached,
                ..Default::default()
            }),
            completion_tokens_details: (reasoning > 0).then_some(CompletionTokensDetails {
                reasoning_tokens: reasoning,
            }),
        }
    }
}

/// The usage of a whole Response object, by a scan from its end (see
/// [`scan::top_level_usage_as`]); parsed whole only when that scan cannot tell.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    let usage = match scan::top_level_usage_as::<ResponsesUsage>(body) {
        Ok(usage) => usage,
        Err(()) => {
            #[derive(Deserialize)]
            struct Peek {
                #[serde(default)]
                usage: Option<ResponsesUsage>,
            }
            serde_json::from_slice::<Peek>(body).ok()?.usage
        }
    };
    usage.map(ResponsesUsage::to_chat)
}

/// Longest response id taken from an answer (OpenAI's are `resp_` and ~50 hex digits).
const MAX_ID_LEN: usize = 200;

/// The first response id (`"resp_…"`) in `bytes`: the top-level `id` of a Response object,
/// and of the `response` in a stream's first event. Item ids (`msg_`, `fc_`, `rs_`, …) never
/// start this way; a quote inside a string value is escaped, so text cannot fake one.
pub fn response_id_in(bytes: &[u8]) -> Option<&str> {
    for at in memchr::memmem::find_iter(bytes, b"\"resp_") {
        if at > 0 && bytes[at - 1] == b'\\' {
            continue;
        }
        let rest = &bytes[at + 1..];
        let len = rest.iter().take(MAX_ID_LEN + 1).position(|&b| b == b'"')?;
        let id = &rest[..len];
        if id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        {
            return std::str::from_utf8(id).ok();
        }
    }
    None
}

/// Which deployment made each recent native response, so `previous_response_id` (and
/// `GET`/`DELETE /v1/responses/{id}`) reach the one that stored it. In memory, at most
/// [`Origins::CAPACITY`] ids (the oldest forgotten first); an id it does not know routes as
/// any request does. Per instance: behind a load balancer, pin a conversation's instance or
/// use one OpenAI/Azure deployment per group.
#[derive(Default)]
pub struct Origins {
    inner: Mutex<OriginsInner>,
}

#[derive(Default)]
struct OriginsInner {
    by_id: HashMap<Box<str>, Arc<str>>,
    order: VecDeque<Box<str>>,
}

impl Origins {
    /// Most response ids remembered (~20 MB at most).
    pub const CAPACITY: usize = 100_000;

    /// Remembers that `deployment` made response `id`.
    pub fn record(&self, id: &str, deployment: &str) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.by_id.contains_key(id) {
            return;
        }
        if inner.order.len() >= Self::CAPACITY {
            if let Some(old) = inner.order.pop_front() {
                inner.by_id.remove(&old);
            }
        }
        inner.by_id.insert(id.into(), deployment.into());
        inner.order.push_back(id.into());
    }

    /// The id of the deployment that made response `id`, when remembered.
    pub fn get(&self, id: &str) -> Option<Arc<str>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.by_id.get(id).cloned()
    }
}

/// A native Responses stream, forwarded as it arrives. The SSE is decoded alongside only to
/// see the terminal event (`response.completed`, `response.incomplete`, `response.failed`,
/// `error`), whose `response.usage` is read (once per stream); a stream cut before one fails.
#[derive(Default)]
pub struct PassThrough {
    decoder: SseDecoder,
    usage: Option<Usage>,
    ended: bool,
}

#[derive(Deserialize)]
struct TerminalEvent {
    #[serde(default)]
    response: Option<UsageHolder>,
}

#[derive(Deserialize)]
struct UsageHolder {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
}

impl PassThrough {
    fn on_event(&mut self, event: &str, data: &str) {
        // OpenAI names each event in `event:`; its `type` says the same.
        let kind = if event.is_empty() || event == "message" {
            type_of(data)
        } else {
            event
        };
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.ended = true;
                if let Ok(TerminalEvent {
                    response: Some(UsageHolder { usage: Some(u) }),
                }) = serde_json::from_str(data)
                {
                    self.usage = Some(u.to_chat());
                }
            }
            "error" => self.ended = true,
            _ => {}
        }
    }

    fn decode(&mut self, input: &[u8], end: bool) -> GatewayResult<()> {
        let mut decoder = std::mem::take(&mut self.decoder);
        let mut on = |ev: crate::codec::sse::SseEvent<'_>| -> GatewayResult<()> {
            self.on_event(ev.event, ev.data);
            Ok(())
        };
        let r = if end {
            decoder.finish(&mut on)
        } else {
            decoder.feed(input, &mut on)
        };
        self.decoder = decoder;
        r
    }
}

/// An event's `type` member, by a scan (it comes first in OpenAI's events).
fn type_of(data: &str) -> &str {
    let Some(at) = data.find("\"type\"") else {
        return "";
    };
    let rest = data[at + 6..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else {
        return "";
    };
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix('"') else {
        return "";
    };
    rest.split('"').next().unwrap_or("")
}

impl StreamTranslator for PassThrough {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> GatewayResult<()> {
        out.extend_from_slice(input);
        self.decode(input, false)
    }

    fn finish(&mut self, _out: &mut BytesMut) -> GatewayResult<()> {
        self.decode(&[], true)?;
        if !self.ended {
            return Err(GatewayError::bad_gateway(
                "The upstream ended the Responses stream before its terminal event (response.completed).",
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
        self.usage
    }

    fn verbatim(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_abc123\",\"object\":\"response\",\"status\":\"in_progress\",\"output\":[],\"usage\":null}}\n\n\
event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi \\\"resp_fake\\\"\"}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_abc123\",\"status\":\"completed\",\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":2},\"total_tokens\":19}}}\n\n";

    #[test]
    fn stream_is_forwarded_unchanged_at_every_split_and_usage_read() {
        for split in 1..STREAM.len() {
            let mut t = PassThrough::default();
            let mut out = BytesMut::new();
            t.feed(&STREAM.as_bytes()[..split], &mut out).unwrap();
            t.feed(&STREAM.as_bytes()[split..], &mut out).unwrap();
            t.finish(&mut out).unwrap();
            assert_eq!(&out[..], STREAM.as_bytes(), "split {split}");
            let u = t.usage().expect("usage");
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens, u.total_tokens),
                (12, 7, 19)
            );
            assert_eq!((u.cached_tokens(), u.reasoning_tokens()), (4, 2));
        }
    }

    #[test]
    fn a_stream_cut_before_its_terminal_event_fails() {
        let cut = &STREAM[..STREAM.find("event: response.completed").unwrap()];
        let mut t = PassThrough::default();
        t.feed(cut.as_bytes(), &mut BytesMut::new()).unwrap();
        assert_eq!(t.finish(&mut BytesMut::new()).unwrap_err().status, 502);
    }

    #[test]
    fn whole_body_usage_and_id_by_scan() {
        let body = br#"{"id":"resp_9f","object":"response","output":[{"id":"msg_1","type":"message","content":[{"type":"output_text","text":"see \"resp_x\" and usage"}]}],"previous_response_id":"resp_0","usage":{"input_tokens":3,"output_tokens":5,"total_tokens":8}}"#;
        let u = usage_of(body).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (3, 5, 8)
        );
        assert_eq!(response_id_in(body), Some("resp_9f"));
        assert_eq!(response_id_in(STREAM.as_bytes()), Some("resp_abc123"));
        assert_eq!(response_id_in(br#"{"text":"\"resp_x\""}"#), None);
    }

    #[test]
    fn origins_forget_the_oldest_past_capacity() {
        let o = Origins::default();
        o.record("resp_a", "dep-1");
        assert_eq!(o.get("resp_a").as_deref(), Some("dep-1"));
        for i in 0..Origins::CAPACITY {
            o.record(&format!("resp_{i}"), "dep-2");
        }
        assert_eq!(o.get("resp_a"), None);
        assert_eq!(o.get("resp_7").as_deref(), Some("dep-2"));
        assert_eq!(o.inner.lock().unwrap().by_id.len(), Origins::CAPACITY);
    }
}
