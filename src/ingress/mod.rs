//! Client-facing APIs besides Chat Completions, served on the chat pipeline (same auth,
//! routing, retries, fallbacks, spend):
//!
//! - [`responses`]: OpenAI's Responses API (`POST /v1/responses`).
//! - [`completions`]: OpenAI's legacy text completions (`POST /v1/completions`).
//! - [`messages`]: Anthropic Messages (`/v1/messages`, `/v1/messages/count_tokens`): passed
//!   through to deployments that speak it natively, else translated (pure translation here;
//!   `gateway::messages` does the I/O, errors in Anthropic's shape).
//!
//! The Responses and Completions formats turns its request into a Chat Completions body (the gateway's internal
//! form), which then takes the same path as a chat call: authentication, admission, cache,
//! routing, retries, fallbacks, cooldowns, spend and the access log. The chat answer comes back
//! through an [`Egress`], which rewrites it into the client's format: a whole body in one go, a
//! stream chunk by chunk as it arrives (never buffered). `gateway::ingress` wires the two ends
//! to the exchange. Errors keep OpenAI's error shape, which both APIs use.

pub mod chat_stream;
pub mod completions;
pub mod messages;
pub mod responses;

use crate::error::GatewayResult;
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
}

/// A client request in an ingress format, translated.
pub struct Translated {
    /// The Chat Completions body sent down the chat pipeline.
    pub chat: Bytes,
    /// Rewrites the chat answer into the client's format.
    pub egress: Box<dyn Egress>,
}

/// Rewrites a 2xx chat answer into an ingress format. Error answers are not given to it: both
/// ingress APIs use OpenAI's error object as chat does.
pub trait Egress: Send {
    /// A whole `chat.completion` body into the client's body.
    fn whole(&mut self, chat: &[u8]) -> GatewayResult<Bytes>;
    /// Chat SSE bytes (`chat.completion.chunk` events, any split) into the client's stream
    /// bytes, appended to `out`.
    fn feed(&mut self, sse: &[u8], out: &mut BytesMut);
    /// The chat stream ended: flush and close the client's stream.
    fn finish(&mut self, out: &mut BytesMut);
}

/// Translates an ingress request body into the chat pipeline's form.
pub fn translate(ingress: Ingress, body: &[u8]) -> GatewayResult<Translated> {
    match ingress {
        Ingress::Responses => responses::translate(body),
        Ingress::Completions => completions::translate(body),
    }
}
