//! Provider-neutral streaming events and the sinks that write them in a client's format.
//!
//! A provider's stream translator decodes its upstream framing and emits [`StreamEvent`]s into an
//! [`EventSink`]; it never writes a client wire format itself. [`OpenAiSink`] writes OpenAI
//! `chat.completion.chunk` SSE through [`ChunkWriter`]; sibling sinks (an Anthropic Messages SSE
//! writer, a Responses writer) can produce their formats from the same events, so each event
//! carries what those need: tool-call indices, ids and names, the finish reason, usage with
//! cached tokens. [`EventLog`] records events, for tests and for anything that wants the answer
//! as data (a cache write).
//!
//! Upstreams that already speak OpenAI (the pass-through) emit [`StreamEvent::RawOpenAiChunk`]
//! instead of parsing each chunk into events: the OpenAI sink copies it through unchanged, other
//! sinks parse it when they need to. Errors that end a stream are the translator's `Err`
//! (the exchange decides between retrying and writing them); a driver hands them to the sink as
//! [`StreamEvent::Error`].

use crate::error::GatewayError;
use crate::openai::{ChunkWriter, FinishReason, Usage};
use bytes::BytesMut;

/// One thing that happened in an assistant's streamed answer. Borrowed from the decoder's
/// buffer: a sink that keeps it copies what it needs.
#[derive(Debug, Clone, Copy)]
pub enum StreamEvent<'a> {
    /// The assistant's message began (OpenAI: the role delta; Anthropic: `message_start`).
    Start,
    /// A fragment of the answer's text.
    Text(&'a str),
    /// A fragment of the model's reasoning ("thinking") text; OpenAI's chat format has no place
    /// for it and drops it.
    Reasoning(&'a str),
    /// A tool call begins. `index` counts tool calls from 0 in the order they started.
    ToolCallStart {
        index: usize,
        id: &'a str,
        name: &'a str,
    },
    /// A fragment of tool call `index`'s JSON arguments.
    ToolCallArgs { index: usize, fragment: &'a str },
    /// Why the answer ended. Sent once, after the content.
    Finish(FinishReason),
    /// Token usage so far (the last one sent is the total), cached prompt tokens included.
    Usage(Usage),
    /// One `chat.completion.chunk` exactly as an OpenAI-speaking upstream sent it (the JSON of
    /// one SSE event's data). `usage_only` marks the usage chunk (`choices: []`) the gateway
    /// asked for on the client's behalf; the usage it carries was already sent as
    /// [`StreamEvent::Usage`], which is where sinks should take usage from.
    RawOpenAiChunk { json: &'a str, usage_only: bool },
    /// The stream ended normally.
    Done,
    /// The stream ended with this error.
    Error(&'a GatewayError),
}

/// Receives a stream's events in order. Infallible: a sink writes into memory; the I/O (and its
/// failure) happens after, in the exchange.
pub trait EventSink {
    fn event(&mut self, event: StreamEvent<'_>);
}

/// The OpenAI chat-completions sink: events into `chat.completion.chunk` SSE bytes in `out`.
/// Short-lived (one per `feed`); the stream's state lives in the [`ChunkWriter`].
pub struct OpenAiSink<'a> {
    pub writer: &'a mut ChunkWriter,
    pub out: &'a mut BytesMut,
}

impl EventSink for OpenAiSink<'_> {
    #[inline]
    fn event(&mut self, event: StreamEvent<'_>) {
        let (w, out) = (&mut *self.writer, &mut *self.out);
        match event {
            StreamEvent::Start => w.start(out),
            StreamEvent::Text(text) => w.text(text, out),
            StreamEvent::Reasoning(_) => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                w.tool_call_start(index, id, name, out)
            }
            StreamEvent::ToolCallArgs { index, fragment } => w.tool_call_args(index, fragment, out),
            StreamEvent::Finish(reason) => w.finish(reason, out),
            StreamEvent::Usage(usage) => w.set_usage(usage),
            StreamEvent::RawOpenAiChunk { json, usage_only } => w.raw(json, usage_only, out),
            StreamEvent::Done => w.done(out),
            StreamEvent::Error(err) => w.error(err, out),
        }
    }
}

/// One recorded event, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordedEvent {
    Start,
    Text(String),
    Reasoning(String),
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolCallArgs {
        index: usize,
        fragment: String,
    },
    Finish(FinishReason),
    Usage(Usage),
    RawOpenAiChunk {
        json: String,
        usage_only: bool,
    },
    Done,
    Error(String),
}

/// A sink that records every event, owned, in order.
#[derive(Debug, Default)]
pub struct EventLog {
    pub events: Vec<RecordedEvent>,
}

impl EventSink for EventLog {
    fn event(&mut self, event: StreamEvent<'_>) {
        self.events.push(match event {
            StreamEvent::Start => RecordedEvent::Start,
            StreamEvent::Text(t) => RecordedEvent::Text(t.to_string()),
            StreamEvent::Reasoning(t) => RecordedEvent::Reasoning(t.to_string()),
            StreamEvent::ToolCallStart { index, id, name } => RecordedEvent::ToolCallStart {
                index,
                id: id.to_string(),
                name: name.to_string(),
            },
            StreamEvent::ToolCallArgs { index, fragment } => RecordedEvent::ToolCallArgs {
                index,
                fragment: fragment.to_string(),
            },
            StreamEvent::Finish(r) => RecordedEvent::Finish(r),
            StreamEvent::Usage(u) => RecordedEvent::Usage(u),
            StreamEvent::RawOpenAiChunk { json, usage_only } => RecordedEvent::RawOpenAiChunk {
                json: json.to_string(),
                usage_only,
            },
            StreamEvent::Done => RecordedEvent::Done,
            StreamEvent::Error(e) => RecordedEvent::Error(e.message.clone()),
        });
    }
}
