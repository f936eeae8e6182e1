//! A streaming translator is two things: a framing decoder that finds events in the upstream's
//! bytes (SSE, NDJSON, AWS eventstream), and the provider's per-event translation into
//! provider-neutral [`StreamEvent`](crate::events::StreamEvent)s emitted into an [`EventSink`].
//! [`Framed`] joins them into a [`StreamTranslator`], so a provider writes only the second part
//! ([`EventTranslator`]) and no provider repeats the decoder plumbing. `Framed` also holds the
//! OpenAI [`ChunkWriter`], so `feed`/`finish` stay bytes in, OpenAI SSE bytes out.

use super::StreamTranslator;
use crate::codec::eventstream::{EventStreamDecoder, Message};
use crate::codec::ndjson::NdjsonDecoder;
use crate::codec::sse::{SseDecoder, SseEvent};
use crate::error::GatewayResult;
use crate::events::{EventSink, OpenAiSink};
use crate::openai::{ChunkWriter, Usage};
use bytes::BytesMut;

/// An incremental decoder of one upstream stream framing.
pub trait Framing: Default + Send + 'static {
    /// One decoded event, borrowed from the decoder's buffer.
    type Event<'a>;

    /// Decodes `input` (any split), calling `on_event` for each complete event.
    fn decode(
        &mut self,
        input: &[u8],
        on_event: &mut dyn FnMut(Self::Event<'_>) -> GatewayResult<()>,
    ) -> GatewayResult<()>;

    /// The body ended: flushes a last event without a terminator, or fails on a partial one.
    fn end(
        &mut self,
        on_event: &mut dyn FnMut(Self::Event<'_>) -> GatewayResult<()>,
    ) -> GatewayResult<()>;
}

/// A provider's translation of decoded upstream events into stream events.
pub trait EventTranslator<F: Framing>: Send {
    fn on_event(&mut self, event: F::Event<'_>, sink: &mut dyn EventSink) -> GatewayResult<()>;

    /// The upstream body ended cleanly after every event was seen: check the stream was
    /// complete, then emit the closing events (finish, usage) and `Done`.
    fn on_end(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()>;

    fn usage(&self) -> Option<Usage>;
}

/// A decoder and a translator, driven together as a [`StreamTranslator`]; `writer` is the
/// state of the OpenAI output used by `feed`/`finish`.
pub struct Framed<F, T> {
    framing: F,
    translator: T,
    writer: ChunkWriter,
}

impl<F: Framing, T: EventTranslator<F>> Framed<F, T> {
    pub fn new(translator: T, writer: ChunkWriter) -> Self {
        Framed {
            framing: F::default(),
            translator,
            writer,
        }
    }
}

impl<F: Framing, T: EventTranslator<F>> StreamTranslator for Framed<F, T> {
    fn feed(&mut self, input: &[u8], out: &mut BytesMut) -> GatewayResult<()> {
        let translator = &mut self.translator;
        let mut sink = OpenAiSink {
            writer: &mut self.writer,
            out,
        };
        self.framing
            .decode(input, &mut |ev| translator.on_event(ev, &mut sink))
    }

    fn finish(&mut self, out: &mut BytesMut) -> GatewayResult<()> {
        let translator = &mut self.translator;
        let mut sink = OpenAiSink {
            writer: &mut self.writer,
            out,
        };
        self.framing
            .end(&mut |ev| translator.on_event(ev, &mut sink))?;
        translator.on_end(&mut sink)
    }

    fn feed_events(&mut self, input: &[u8], sink: &mut dyn EventSink) -> GatewayResult<()> {
        let translator = &mut self.translator;
        self.framing
            .decode(input, &mut |ev| translator.on_event(ev, sink))
    }

    fn finish_events(&mut self, sink: &mut dyn EventSink) -> GatewayResult<()> {
        let translator = &mut self.translator;
        self.framing.end(&mut |ev| translator.on_event(ev, sink))?;
        self.translator.on_end(sink)
    }

    fn usage(&self) -> Option<Usage> {
        self.translator.usage()
    }
}

impl Framing for SseDecoder {
    type Event<'a> = SseEvent<'a>;

    fn decode(
        &mut self,
        input: &[u8],
        on_event: &mut dyn FnMut(SseEvent<'_>) -> GatewayResult<()>,
    ) -> GatewayResult<()> {
        self.feed(input, on_event)
    }

    fn end(
        &mut self,
        on_event: &mut dyn FnMut(SseEvent<'_>) -> GatewayResult<()>,
    ) -> GatewayResult<()> {
        self.finish(on_event)
    }
}

impl Framing for NdjsonDecoder {
    type Event<'a> = &'a [u8];

    fn decode(
        &mut self,
        input: &[u8],
        on_line: &mut dyn FnMut(&[u8]) -> GatewayResult<()>,
    ) -> GatewayResult<()> {
        self.feed(input, on_line)
    }

    fn end(&mut self, on_line: &mut dyn FnMut(&[u8]) -> GatewayResult<()>) -> GatewayResult<()> {
        self.finish(on_line)
    }
}

impl Framing for EventStreamDecoder {
    type Event<'a> = Message<'a>;

    fn decode(
        &mut self,
        input: &[u8],
        on_message: &mut dyn FnMut(Message<'_>) -> GatewayResult<()>,
    ) -> GatewayResult<()> {
        self.feed(input, on_message)
    }

    fn end(
        &mut self,
        _on_message: &mut dyn FnMut(Message<'_>) -> GatewayResult<()>,
    ) -> GatewayResult<()> {
        // Every eventstream message is length-prefixed: nothing can be pending but a partial one.
        Ok(self.finish()?)
    }
}
