//! The semantic cache's lookup from the gateway's side: the prompt is embedded with the
//! configured embedding model group through the gateway's own routing (an internal
//! `/v1/embeddings` call through [`exchange::handle_on_behalf`]: the same router, retries, fallbacks,
//! cooldowns and provider translation as a client's, answered into a [`BufferSink`]), then
//! handed to the cache stage (see [`crate::cache::semantic`]). The call is bounded by
//! [`EMBED_TIMEOUT`]: a slow or failed embedding is a miss, never an error. The prompt goes
//! only where the client's own request may go: the embedding call is routed under the
//! client's [`RouteFilter`] (tags and `allowed_model_region`), so an embedding group with no
//! deployment the client may use is a miss, never a prompt sent out of the client's region.

use super::exchange;
use super::sink::ResponseSink;
use crate::app::{App, Live};
use crate::cache::semantic::{self, EMBED_TIMEOUT};
use crate::context::{CacheStatus, Context};
use crate::openai::RequestBody;
use crate::providers::Operation;
use crate::router::filter::RouteFilter;
use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use std::future::Future;
use std::pin::Pin;

/// The most an internal embeddings answer may hold (bytes).
const MAX_EMBEDDING_ANSWER: usize = 4 * 1024 * 1024;

/// A response kept in memory (an internal call's answer), bounded in size.
#[derive(Default)]
pub struct BufferSink {
    pub status: u16,
    pub body: BytesMut,
    overflow: bool,
}

impl ResponseSink for BufferSink {
    async fn head(&mut self, head: ResponseHeader) -> bool {
        self.status = head.status.as_u16();
        true
    }

    async fn body(&mut self, bytes: Bytes, _end: bool) -> bool {
        if self.body.len() + bytes.len() > MAX_EMBEDDING_ANSWER {
            self.overflow = true;
            return false;
        }
        self.body.extend_from_slice(&bytes);
        true
    }

    fn hung_up(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// After an exact miss on a chat request: a semantically close cached answer, if the semantic
/// cache is configured and finds one.
pub async fn lookup(
    app: &App,
    live: &Live,
    ctx: &mut Context,
    body: &RequestBody<'_>,
    group: &str,
    filter: &RouteFilter,
) -> Option<Bytes> {
    let model = live.stages.semantic_model()?;
    if ctx.cache != CacheStatus::Miss || ctx.route != "chat" {
        return None;
    }
    let prompt = semantic::prompt(body)?;
    let vector = embed(app, live, model, &prompt, filter).await?;
    live.stages.semantic_lookup(ctx, body, group, vector).await
}

/// The prompt's embedding, through the gateway's own routing; `None` on any failure or after
/// [`EMBED_TIMEOUT`]. Boxed as a `Send` future: the chat call's exchange runs this embeddings
/// exchange inside it, and the declared type ends the cycle.
fn embed<'a>(
    app: &'a App,
    live: &'a Live,
    model: &'a str,
    prompt: &'a str,
    filter: &'a RouteFilter,
) -> Pin<Box<dyn Future<Output = Option<Vec<f32>>> + Send + 'a>> {
    Box::pin(async move {
        // The gateway's own call, not the client's: the key's model list, limits and budget
        // do not apply to it (as LiteLLM calls `litellm.embedding` directly). Its tags and
        // region do: the prompt must not leave them.
        let mut ctx = Context {
            route: "embeddings",
            start: std::time::Instant::now(),
            ..Context::default()
        };
        let mut sink = BufferSink::default();
        let request = semantic::embedding_request(model, prompt);
        let call = exchange::handle_on_behalf(
            app,
            live,
            &mut sink,
            &mut ctx,
            Operation::Embeddings,
            request,
            filter,
        );
        let vector = match tokio::time::timeout(EMBED_TIMEOUT, call).await {
            Ok(Ok(())) if sink.status == 200 && !sink.overflow => semantic::vector_of(&sink.body),
            Ok(Err(e)) => {
                log::warn!("semantic cache: embedding the prompt with {model} failed: {e}");
                None
            }
            Ok(Ok(())) => {
                log::warn!(
                    "semantic cache: embedding the prompt with {model} answered {}",
                    sink.status
                );
                None
            }
            Err(_) => {
                log::warn!(
                    "semantic cache: embedding the prompt with {model} took over {EMBED_TIMEOUT:?}; a miss"
                );
                None
            }
        };
        // The embedding call is spend-logged and settled like any other.
        live.stages.settle(&ctx);
        vector
    })
}
