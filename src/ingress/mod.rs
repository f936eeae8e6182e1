//! Client-facing APIs besides Chat Completions, served on the chat pipeline (same auth,
//! routing, retries, fallbacks, spend):
//!
//! - [`responses`]: OpenAI's Responses API (`POST /v1/responses`).
//! - [`completions`]: OpenAI's legacy text completions (`POST /v1/completions`).
//! - [`messages`]: Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`): passed
//!   through to deployments that speak it natively, else translated (pure translation here;
//!   `gateway::messages` does the I/O, errors in Anthropic's shape).
//!
//! The Responses and Completions formats turn their request into a Chat Completions body (the
//! gateway's internal form), which then takes the same path as a chat call: authentication,
//! admission, routing, retries, fallbacks, cooldowns, spend and the access log. Each attempt's
//! answer is rewritten into the client's format by an [`Egress`] inside the exchange: a whole
//! `chat.completion` body in one go, a stream from the provider's own stream events
//! ([`Rewritten`], the provider's translator driven into the format's event sink), so a
//! stream is read once, never written as chat SSE and parsed back. Errors keep OpenAI's error
//! shape, which both APIs use. The response cache serves all three routes from the client's
//! own body and answer, kept byte for byte (`cache::verbatim`), not from chat entries.

pub mod chat_stream;
pub mod completions;
pub mod messages;
pub mod responses;

use crate::error::{GatewayError, GatewayResult};
use crate::events::{EventSink, StreamEvent};
use crate::openai::RequestBody;
use crate::openai::Usage;
use crate::providers::{Provider, RequestContext, StreamTranslator, UpstreamRequest};
use crate::upstream::UpstreamClient;
use bytes::{Bytes, BytesMut};

/// Which ingress API a request came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    Responses,
    Completions,
}

impl Ingress {
    /// The route name in metrics and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Ingress::Responses => "responses",
            Ingress::Completions => "completions",
        }
    }

    /// Whether the provider's upstream has this API, so the client's body can be passed
    /// through (OpenAI/Azure for Responses, `text-completion-openai` for Completions).
    pub fn is_native(self, provider: &dyn Provider) -> bool {
        match self {
            Ingress::Responses => provider.has_responses_api(),
            Ingress::Completions => provider.has_completions_api(),
        }
    }

    /// The upstream request passing the client's `body` through, where the provider has
    /// this API (`None`: translate instead).
    pub async fn native_request(
        self,
        provider: &dyn Provider,
        body: &RequestBody<'_>,
        cx: &RequestContext<'_>,
        client: &UpstreamClient,
    ) -> Option<GatewayResult<UpstreamRequest>> {
        match self {
            Ingress::Responses => provider.responses_request(body, cx),
            Ingress::Completions => provider.completions_request(body, cx, client).await,
        }
    }
}

/// A client request in an ingress format, translated.
pub struct Translated {
    /// The Chat Completions body sent down the chat pipeline.
    pub chat: Bytes,
    /// Rewrites the chat answer into the client's format.
    pub egress: Box<dyn Egress>,
}

/// Rewrites a 2xx chat answer into an ingress format. Error answers are not given to it: both
/// ingress APIs use OpenAI's error object as chat does. Shared by a request's attempts.
pub trait Egress: Send + Sync {
    /// A whole `chat.completion` body into the client's body.
    fn whole(&self, chat: &[u8]) -> GatewayResult<Bytes>;
    /// The event sink one attempt's stream is written through.
    fn stream(&self) -> Box<dyn StreamEgress>;
    /// The prompts of a request that has several (legacy completions' prompt list), each
    /// answered by its own upstream call (`gateway::fanout`); empty for one.
    fn prompts(&self) -> &[String] {
        &[]
    }
}

/// A stream in an ingress format, written from stream events (the provider's own, or an
/// OpenAI-speaking upstream's raw chunks, each parsed once here).
pub trait StreamEgress: EventSink + Send {
    /// Moves what was written so far into `out`.
    fn drain_into(&mut self, out: &mut BytesMut);
}

/// A provider's stream translator driven into an ingress format's event sink: what the
/// exchange streams for a translated ingress call.
pub struct Rewritten {
    inner: Box<dyn StreamTranslator>,
    egress: Box<dyn StreamEgress>,
}

impl Rewritten {
    pub fn new(inner: Box<dyn StreamTranslator>, egress: Box<dyn StreamEgress>) -> Self {
        Rewritten { inner, egress }
    }
}

impl StreamTranslator for Rewritten {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> GatewayResult<()> {
        let r = self.inner.feed_events(input, self.egress.as_mut());
        self.egress.drain_into(out);
        r
    }

    fn finish(&mut self, out: &mut BytesMut) -> GatewayResult<()> {
        let r = self.inner.finish_events(self.egress.as_mut());
        if r.is_ok() {
            // Closes the client's stream if the provider's did not (an ended one ignores it).
            self.egress.event(StreamEvent::Done);
        }
        self.egress.drain_into(out);
        r
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

    fn writes_chat_chunks(&self) -> bool {
        false
    }

    fn write_error(&mut self, err: &GatewayError, out: &mut BytesMut) -> bool {
        self.egress.event(StreamEvent::Error(err));
        self.egress.drain_into(out);
        true
    }
}

/// Tests: an OpenAI chat SSE stream (as an OpenAI-speaking upstream sends it), split at
/// `split`, replayed into `egress` as the provider's pass-through would emit it.
#[cfg(test)]
pub fn replay_chat_sse(sse: &[u8], split: usize, egress: &mut dyn StreamEgress) -> BytesMut {
    let mut decoder = crate::codec::sse::SseDecoder::default();
    let mut out = BytesMut::new();
    for part in [&sse[..split], &sse[split..]] {
        let mut on = |ev: crate::codec::sse::SseEvent<'_>| {
            if ev.data.trim() == "[DONE]" {
                egress.event(StreamEvent::Done);
            } else {
                let json = ev.data;
                egress.event(StreamEvent::RawOpenAiChunk {
                    json,
                    usage_only: false,
                });
            }
            Ok::<(), crate::codec::sse::SseError>(())
        };
        decoder.feed(part, &mut on).expect("chat SSE");
        egress.drain_into(&mut out);
    }
    out
}

/// Translates an ingress request body into the chat pipeline's form.
pub fn translate(ingress: Ingress, body: &[u8]) -> GatewayResult<Translated> {
    match ingress {
        Ingress::Responses => responses::translate(body),
        Ingress::Completions => completions::translate(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::FinishReason;

    /// A provider translator with no chat SSE path at all: a rewritten stream must be driven
    /// by its events alone (nothing written as chat chunks and parsed back).
    struct EventsOnly;

    impl StreamTranslator for EventsOnly {
        fn feed(&mut self, _: &[u8], _: &mut BytesMut) -> GatewayResult<()> {
            panic!("a rewritten stream never asks for chat SSE")
        }
        fn finish(&mut self, _: &mut BytesMut) -> GatewayResult<()> {
            panic!("a rewritten stream never asks for chat SSE")
        }
        fn feed_events(&mut self, input: &[u8], sink: &mut dyn EventSink) -> GatewayResult<()> {
            sink.event(StreamEvent::Text(std::str::from_utf8(input).unwrap()));
            Ok(())
        }
        fn finish_events(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
            sink.event(StreamEvent::Finish(FinishReason::Stop));
            sink.event(StreamEvent::Usage(Usage::new(3, 2)));
            sink.event(StreamEvent::Done);
            Ok(())
        }
        fn usage(&self) -> Option<Usage> {
            Some(Usage::new(3, 2))
        }
    }

    #[test]
    fn streams_are_rewritten_from_the_providers_events() {
        let cases = [
            (
                Ingress::Responses,
                r#"{"model":"m","input":"hi","stream":true}"#,
                "\"type\":\"response.completed\"",
            ),
            (
                Ingress::Completions,
                r#"{"model":"m","prompt":"hi","stream":true}"#,
                "data: [DONE]",
            ),
        ];
        for (ingress, body, end) in cases {
            let t = translate(ingress, body.as_bytes()).unwrap();
            let mut r = Rewritten::new(Box::new(EventsOnly), t.egress.stream());
            let mut out = BytesMut::new();
            r.feed(b"Hello", &mut out).unwrap();
            r.finish(&mut out).unwrap();
            let text = std::str::from_utf8(&out).unwrap();
            assert!(text.contains("Hello"), "{text}");
            assert!(text.contains(end), "{text}");
            assert!(!text.contains("chat.completion"), "{text}");
            assert!(
                !r.writes_chat_chunks(),
                "no cost stamp in another API's usage"
            );
            assert_eq!(r.usage(), Some(Usage::new(3, 2)));

            // A failure mid-stream is the format's own error event.
            let mut r = Rewritten::new(Box::new(EventsOnly), t.egress.stream());
            let mut out = BytesMut::new();
            r.feed(b"Hel", &mut out).unwrap();
            assert!(r.write_error(&GatewayError::bad_gateway("cut"), &mut out));
            let text = std::str::from_utf8(&out).unwrap();
            match ingress {
                Ingress::Responses => assert!(text.contains("event: response.failed"), "{text}"),
                Ingress::Completions => assert!(text.ends_with("data: [DONE]\n\n"), "{text}"),
            }
        }
    }
}
